"""Stopping a crawl from outside: SIGTERM ends it cleanly within the grace period and the
resumed run repeats nothing; SIGKILL leaves no process of the crawl behind."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
from pathlib import Path

from bingcrawl.emulator.corpus import Corpus
from bingcrawl.emulator.imagehost import ImageHostConfig
from tests.support.crawls import read_manifest
from tests.support.emulator import StartEmulator
from tests.support.resume import (
    Dataset,
    Ledger,
    check_integrity,
    check_same_dataset,
    crash_round,
    crawl_argv,
    db_count,
    db_query,
    emulator_config,
    reference_run,
    run_crawl,
)

# -- SIGTERM -------------------------------------------------------------------------------


async def test_sigterm_stops_within_grace_and_the_resumed_run_repeats_nothing(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """SIGTERM with downloads stuck for a minute: exit 143 after the grace period, a clean
    checkpoint, and a resumed run that ends with the uninterrupted run's dataset."""
    config = dataclasses.replace(
        emulator_config(results_per_query=60),
        images=ImageHostConfig(slow_seconds=60.0),
    )
    config = dataclasses.replace(
        config,
        corpus=dataclasses.replace(
            config.corpus,
            fault_rate=0.15,
            fault_kinds=("http_404", "truncated_body", "html_as_jpeg", "slow_headers"),
        ),
    )
    queries = ("alpha one", "beta two")
    # The tests' 2 s download timeout ends the slow URLs quickly; the first run below waits a
    # minute for them, so at the SIGTERM they are stuck.
    want = await reference_run(tmp_path, config, "--retries", "0", queries=queries)
    slow = {
        s.key for q in queries for s in Corpus(config.corpus).query_results(q)
        if s.fault == "slow_headers"
    }  # fmt: skip
    assert slow, "no slow URL: the test proves nothing"
    server = await start_emulator(config)
    out = tmp_path / "resumed"
    ledger = Ledger()
    settled = "SELECT count(*) FROM candidates WHERE status IN ('stored', 'failed')"
    signalled: list[float] = []

    async def stuck(pid: int) -> bool:
        in_flight = any(server.image_host.requests[key] for key in slow)
        if in_flight and await db_count(out, settled) >= 10:
            signalled.append(asyncio.get_running_loop().time())
            return True
        return False

    argv = crawl_argv(
        server.base_url, out, "--retries", "0", "--timeout", "60", "--grace", "1",
        queries=queries,
    )  # fmt: skip
    first = await crash_round(
        server, argv, out, ledger, name="sigterm", kill_when=stuck, sig=signal.SIGTERM
    )
    assert first.returncode == 128 + signal.SIGTERM, first.stderr()
    assert "re-run to resume" in first.stderr()
    # The grace period is 1 s: the stuck downloads (60 s) were abandoned, not awaited.
    assert asyncio.get_running_loop().time() - signalled[0] < 30
    check_integrity(out, finished=False)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["run"]["stopped_by_signal"] == signal.SIGTERM
    stored = db_query(out, "SELECT sha256 FROM candidates WHERE status = 'stored'")
    assert sorted(r["sha256"] for r in read_manifest(out)) == sorted(s for (s,) in stored)
    assert db_query(out, "SELECT count(*) FROM candidates WHERE status = 'pending'")[0][0]
    listed = (out / "manifest.jsonl").read_bytes()

    argv = crawl_argv(server.base_url, out, "--retries", "0", queries=queries)
    final = await crash_round(server, argv, out, ledger, name="resume")
    assert final.returncode == 0, final.stderr()
    check_integrity(out)
    # the resumed run appended to the manifest: what the first run listed is untouched
    assert (out / "manifest.jsonl").read_bytes().startswith(listed)
    got = Dataset.read(out, server)
    check_same_dataset(got, want)
    assert ledger.repeats == []


# -- processes -----------------------------------------------------------------------------


async def survivors(pgid: int, *, within: float) -> bool:
    """True if a process of group ``pgid`` is still alive after ``within`` seconds."""
    for _ in range(int(within / 0.1)):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        await asyncio.sleep(0.1)  # polling the kernel: nothing to wait on
    return True


async def test_hash_workers_do_not_outlive_a_killed_crawl(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """A kill -9 of the crawl takes its hash worker processes (and multiprocessing's resource
    tracker) with it: a crash loop must not leak a pool of processes per crash."""
    server = await start_emulator(emulator_config(results_per_query=30))
    out = tmp_path / "out"
    argv = crawl_argv(server.base_url, out, "--hash-workers", "1", queries=["alpha one"])
    stored = "SELECT count(*) FROM candidates WHERE status = 'stored'"

    async def hashing(pid: int) -> bool:
        return await db_count(out, stored) >= 3

    run = await run_crawl(argv, tmp_path / "run.log", kill_when=hashing)
    assert run.killed, run.stderr()
    try:
        assert not await survivors(run.pid, within=3.0), "processes outlived the crawl"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # the group of the crawl this test started
