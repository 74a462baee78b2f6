"""Sources after a crash: the crawl process SIGKILLs itself at a crash point, then resumes.

The crawl runs as ``python -m bingcrawl crawl ...`` (the crash point kills the process) against
an in-process emulator; the re-run of the same command must continue exactly where the
checkpoint says, neither losing nor repeating work.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from bingcrawl.emulator import EmulatorServer
from bingcrawl.sources.base import norm_query
from bingcrawl.sources.urls import BATCH
from tests.support.crawls import db, key_of, read_manifest
from tests.support.emulator import StartEmulator, clean_corpus
from tests.support.emulator_api import first_page_suggestions

FAST = [
    "--allow-network", "127.0.0.1/32", "--no-progress", "--hash-workers", "0",
    "--timeout", "5", "--retries", "1", "--log-level", "WARNING", "--qps", "50",
]  # fmt: skip


async def run_cli(args: list[str], log: Path, crash_at: str | None = None) -> int:
    """Run ``bingcrawl crawl`` in a process; its return code (-9 when it killed itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINGCRAWL_", "BING_"))}
    if crash_at is not None:
        env["BINGCRAWL_CRASH_AT"] = crash_at
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bingcrawl", "crawl", *args, *FAST,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
    async with asyncio.timeout(90):
        return await proc.wait()


async def test_url_list_resumes_after_the_last_committed_batch(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server: EmulatorServer = await start_emulator(corpus=clean_corpus())
    specs = server.corpus.query_results("crash list")[:25]
    # 2.5 batches of records, one usable URL in a hundred: three batches, 25 images
    lines = [f"invalid record {i}" for i in range(BATCH * 5 // 2)]
    for i, spec in enumerate(specs):
        lines[i * 100] = f"{server.base_url}img/{spec.key}"
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    log = tmp_path / "crawl.log"
    args = ["--urls", str(listing), "--out", str(out)]  # no key: a URL list needs none

    assert await run_cli(args, log, crash_at="page_committed:2") == -signal.SIGKILL
    row = db(out, "SELECT * FROM queries")[0]
    assert row["pages"] == 2  # two batches committed before the kill
    first_two = row["next_offset"]
    assert 0 < first_two < listing.stat().st_size

    assert await run_cli(args, log) == 0, log.read_text()
    row = db(out, "SELECT * FROM queries")[0]
    # one more batch: the file was not read again from the start
    assert (row["pages"], row["state"], row["next_offset"]) == (
        3,
        "exhausted",
        listing.stat().st_size,
    )
    offsets = [r["offset"] for r in db(out, 'SELECT "offset" FROM pages ORDER BY "offset"')]
    assert offsets[-1] == first_two
    urls = [r["url"] for r in db(out, "SELECT url FROM candidates")]
    assert sorted(key_of(u) for u in urls) == sorted(s.key for s in specs)
    assert sorted(key_of(m["content_url"]) for m in read_manifest(out)) == sorted(
        s.key for s in specs
    )
    assert server.state.requests() == []


async def test_expansions_survive_a_crash_before_their_page_is_recorded(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server: EmulatorServer = await start_emulator(corpus=clean_corpus())
    suggested = {norm_query(t) for t in await first_page_suggestions(server, "red panda")}
    server.state.log.clear()
    out = tmp_path / "out"
    log = tmp_path / "crawl.log"
    args = [
        "red panda", "--out", str(out), "--key", "k", "--endpoint", server.base_url,
        "--expand", "1", "--limit", "1", "--count", "5", "--max-active-queries", "1",
    ]  # fmt: skip

    # killed right after the root's first page arrived (its suggestions are registered,
    # the page itself is not recorded)
    assert await run_cli(args, log, crash_at="api_response:1") == -signal.SIGKILL
    assert db(out, "SELECT count(*) AS n FROM candidates")[0]["n"] == 0
    assert await run_cli(args, log) == 0, log.read_text()

    rows = db(out, "SELECT * FROM queries")
    expanded = [r for r in rows if r["source"] == "expand"]
    assert {r["norm"] for r in expanded} == suggested - {"red panda"}
    assert all(r["pages"] >= 1 for r in rows)
    pages = Counter(
        (r.params["q"], r.params["offset"]) for r in server.state.requests(endpoint="search")
    )
    assert pages[("red panda", "0")] == 2  # asked again: it was never recorded
    assert {n for key, n in pages.items() if key[0] != "red panda"} == {1}
    labels = {m["label"] for m in read_manifest(out)}
    assert labels == {"red_panda"}
