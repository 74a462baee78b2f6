"""Every provider resumes after ``kill -9`` without asking a page twice: the crawl runs as a
real process, kills itself right after its second page is committed (a crash point), and a
second run finishes the same command."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crawls import EmulatorFactory, key_of, read_manifest
from tests.support.emulator import clean_corpus
from tests.support.resume import child_env, crawl_argv

#: provider -> (the emulator endpoint it is logged under, the request parameter of its page)
PAGING = {
    "openverse": ("openverse", "page"),
    "wikimedia": ("wikimedia", "gsroffset"),
    "brave": ("brave", "q"),  # one page a query
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
    provider: str, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    server = await emulator_factory(corpus=clean_corpus(results_per_query=60))
    queries = ["heron", "otter", "lynx"]
    argv = crawl_argv(
        server.base_url, tmp_path, "--provider", provider, "--count", "20", queries=queries
    )
    assert await run(argv, crash_at="page_committed:2") == -signal.SIGKILL
    assert await run(argv) == 0
    endpoint, page = PAGING[provider]
    answered = [
        (r.params.get("q") or r.params.get("gsrsearch"), r.params[page])
        for r in server.state.requests(endpoint=endpoint)
        if r.status == 200 and r.outcome == "ok"
    ]
    assert Counter(answered).most_common(1)[0][1] == 1, answered  # no page asked twice
    # Brave's one page a query holds --count results; the others page to the end.
    depth = 20 if provider == "brave" else None
    want = {s.key for q in queries for s in server.corpus.query_results(q)[:depth]}
    got = read_manifest(tmp_path)
    assert {key_of(m["content_url"]) for m in got} == want
    assert len(got) == len(want)  # and none stored twice
