"""Every provider resumes after ``kill -9`` without asking a committed page again: the crawl
runs as a real process, kills itself right after its second page is committed (a crash
point), and a second run finishes the same command. (A page answered but not yet committed
when the process died is asked again: the checkpoint, not the log, is the truth.)"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crawls import key_of, read_manifest
from tests.support.emulator import StartEmulator, clean_corpus
from tests.support.resume import child_env, committed_pages, crawl_argv

#: provider -> the emulator endpoint it is logged under, and the result offset of a request
PAGING = {
    "openverse": ("openverse", lambda p: (int(p["page"]) - 1) * int(p["page_size"])),
    "wikimedia": ("wikimedia", lambda p: int(p["gsroffset"])),
    "brave": ("brave", lambda p: 0),  # one page a query
    "serpapi": ("serpapi", lambda p: int(p["first"]) - 1),
}


async def run(argv: list[str], crash_at: str | None = None) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=child_env(crash_at), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    return proc.returncode


@pytest.mark.parametrize("provider", sorted(PAGING))
async def test_a_killed_crawl_resumes_without_asking_a_page_twice(
    provider: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(results_per_query=60))
    queries = ["heron", "otter", "lynx"]
    argv = crawl_argv(
        server.base_url, tmp_path, "--provider", provider, "--count", "20", queries=queries
    )
    endpoint, offset_of = PAGING[provider]

    def answered() -> list[tuple[str, int]]:
        return [
            (r.params.get("q") or r.params["gsrsearch"].removeprefix("filetype:bitmap "),
             offset_of(r.params))
            for r in server.state.requests(endpoint=endpoint)
            if r.status == 200 and r.outcome == "ok"
        ]  # fmt: skip

    assert await run(argv, crash_at="page_committed:2") == -signal.SIGKILL
    committed = committed_pages(tmp_path)
    assert len(committed) >= 2  # (pages of parallel queries can share the writer's batch)
    before = len(answered())
    assert await run(argv) == 0
    again = set(answered()[before:]) & committed
    assert again == set(), again  # no committed page asked again
    assert max(Counter(answered()).values()) <= 2  # at most once more: answered, not kept
    # Brave's one page a query holds --count results; the others page to the end.
    depth = 20 if provider == "brave" else None
    want = {s.key for q in queries for s in server.corpus.query_results(q)[:depth]}
    got = read_manifest(tmp_path)
    assert {key_of(m["content_url"]) for m in got} == want
    assert len(got) == len(want)  # and none stored twice
