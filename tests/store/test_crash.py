"""kill -9 in the middle of writing: the checkpoint stays intact and every committed page is
whole, across two crash/resume rounds."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from bingcrawl.store import CHECKPOINT_NAME, Checkpoint

from .crash_child import PAGE, page_urls

CHILD = Path(__file__).with_name("crash_child.py")


async def _run_and_kill(out: Path, log: Path, pages: int) -> list[int]:
    """Run the child until it reported ``pages`` committed pages, SIGKILL it, return the
    offsets it reported as committed (including any it printed just before dying)."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(CHILD), str(out), stdout=asyncio.subprocess.PIPE, stderr=err
        )
        assert proc.stdout is not None
        reported: list[int] = []
        killed = False
        try:
            while len(reported) < pages:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
                if not line:
                    await proc.wait()
                    pytest.fail(f"child exited early ({proc.returncode}): {log.read_text()}")
                reported.append(int(line))
            proc.send_signal(signal.SIGKILL)
            killed = True
            reported += [int(x) for x in (await proc.stdout.read()).split()]
        finally:
            # A second kill() after the SIGKILL would poll (and reap) the child behind
            # asyncio's back, which then reports exit status 255.
            if not killed and proc.returncode is None:
                proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return reported


def _check_invariants(out: Path, reported: list[int]) -> int:
    """Integrity, and every committed page whole; returns the number of pages."""
    conn = sqlite3.connect(out / CHECKPOINT_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        offsets = [o for (o,) in conn.execute('SELECT "offset" FROM pages ORDER BY "offset"')]
        assert set(reported) <= set(offsets), "a page reported as committed was lost"
        assert offsets == list(range(0, len(offsets) * PAGE, PAGE)), "pages with gaps"
        for offset in offsets:
            expected = page_urls(offset)
            marks = ", ".join("?" * len(expected))
            found = conn.execute(
                f"SELECT count(*) FROM candidates WHERE url IN ({marks})", expected
            ).fetchone()[0]
            assert found == PAGE, f"page {offset} is incomplete"
        n_cands = conn.execute("SELECT count(*) FROM candidates").fetchone()[0]
        assert n_cands == len(offsets) * PAGE, "candidates without their page"
        next_offset, pages, results = conn.execute(
            "SELECT next_offset, pages, results FROM queries"
        ).fetchone()
        assert (next_offset, pages, results) == (
            len(offsets) * PAGE,
            len(offsets),
            len(offsets) * PAGE,
        )
        return len(offsets)
    finally:
        conn.close()


@pytest.mark.timeout(120)
async def test_sigkill_while_writing_loses_no_committed_page(tmp_path: Path) -> None:
    out = tmp_path / "out"
    log = tmp_path / "child-stderr.txt"
    first = await _run_and_kill(out, log, pages=20)
    pages_1 = _check_invariants(out, first)
    assert pages_1 >= 20

    # Resume on the same OUT (the lock died with the process) and crash again.
    second = await _run_and_kill(out, log, pages=20)
    assert min(second) == pages_1 * PAGE, "the resumed child did not continue where it was"
    pages_2 = _check_invariants(out, first + second)
    assert pages_2 >= pages_1 + 20

    async with await Checkpoint.open(out) as cp:
        report = await cp.recover()
        pending = [c async for c in cp.iter_pending()]
        summary = await cp.status_summary()
    assert report.inflight_reset + len(pending) > 0
    # Every candidate is either failed (its outcome committed) or pending again.
    failed = summary.totals.get("failed", 0)
    assert failed + len(pending) == pages_2 * PAGE
    assert summary.totals.get("inflight", 0) == 0
    # An API call is committed with the next page at the latest: a kill loses at most one.
    assert summary.api_calls_total >= len(first) + len(second) - 2
