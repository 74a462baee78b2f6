"""A whole crawl (``python -m bingcrawl crawl`` in a child process) against a hostile internet.

One search returns, in one result list: every fault of the emulator's image host (gzip bomb,
1 GiB chunked body, 50,000 x 50,000 PNG, truncated bodies and images, random bytes, HTML and
SVG served as ``image/jpeg``, slow drip, slow headers, redirect loop, ...), the heavy ones
several times so that they are in flight together; 20 loopback addresses written every way a
URL can write them, all pointing at a canary on 127.0.0.2; and redirects to that canary (up to
the fifth hop). Only ``127.0.0.1/32`` is allowed. A clean crawl of the same size is the
baseline of the memory measurement.

Only loopback forms are used here, so a regression in the guard would still stay on this
machine; the other refused ranges (metadata, private, CGNAT, ULA, ...) are proven without any
connection in ``tests/fetch/test_netpolicy.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.corpus import FAULT_KINDS, CorpusConfig
from bingcrawl.emulator.imagehost import HUGE_BYTES, ImageHostConfig
from bingcrawl.store.recovery import IMAGE_NAME
from tests.support.crawls import EXPECTED_ERROR
from tests.support.emulator import Emulators
from tests.support.hostile import (
    CliRun,
    ScriptedApi,
    db_rows,
    files_under,
    image_item,
    run_cli,
    serve,
)
from tests.support.net import CANARY_HOST, RawServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

MiB = 1024 * 1024
CONCURRENCY = 8
MAX_BYTES = 8 * MiB
#: Allowance over the clean crawl's peak for what the hostile inputs legitimately cost: every
#: worker may hold up to --max-bytes of body (bodies are buffered, never inflated or decoded
#: past --max-pixels), plus slack for allocator noise and the extra error-path objects.
MEMORY_SLACK = 32 * MiB
MEMORY_BOUND_OVER_CLEAN = CONCURRENCY * MAX_BYTES + MEMORY_SLACK

#: Faults that must be in flight together: the memory stress.
HEAVY = ("huge_chunked", "gzip_bomb", "bomb", "oversize_chunked", "oversize")
#: Faults that stall: each holds a worker until the deadline.
SLOW = ("slow_headers", "slow_drip")
#: Faults a correct client survives (the picture is stored).
SURVIVABLE = frozenset({"transient_503", "redirect", "wrong_content_type"})

#: 127.0.0.2 (and other loopback spellings) written every way; {p} is the canary's port.
#: Only forms that stay on this machine if connected: no 6to4 / NAT64 / IPv4-compatible.
BLOCKED_LOOPBACK = (
    "http://127.0.0.2:{p}/",
    "HTTP://127.0.0.2:{p}/",
    "https://127.0.0.2:{p}/",
    "http://2130706434:{p}/",
    "http://0177.0.0.2:{p}/",
    "http://0177.0000.0000.0002:{p}/",
    "http://0x7f.0.0.2:{p}/",
    "http://0X7F.0x0.0x0.0x2:{p}/",
    "http://0x7f000002:{p}/",
    "http://017700000002:{p}/",
    "http://127.2:{p}/",
    "http://127.0.2:{p}/",
    "http://0x7f.2:{p}/",
    "http://127.0.0.2.:{p}/",
    "http://[::ffff:127.0.0.2]:{p}/",
    "http://[::ffff:7f00:2]:{p}/",
    "http://[0:0:0:0:0:ffff:127.0.0.2]:{p}/",
    "http://[::1]:{p}/",
    "http://0.0.0.0:{p}/",
    "http://0:{p}/",
)

#: Redirects served by the scripted API's origin (allowed), to refused targets.
REDIRECTS = {
    "plain": ("http://127.0.0.2:{p}/latest/meta-data/", "blocked_address"),
    "mapped": ("http://[::ffff:127.0.0.2]:{p}/", "blocked_address"),
    "decimal": ("http://2130706434:{p}/", "blocked_address"),
    "scheme-relative": ("//127.0.0.2:{p}/x", "blocked_address"),
    "file": ("file:///etc/passwd", "bad_url"),
}
#: /chain/4 redirects four times on the allowed origin, then to the canary (the 5th hop).
CHAIN_HOPS = 4


@dataclass(frozen=True)
class Expect:
    """What one result URL must end as."""

    what: str  # the fault kind or attack, for messages
    error_classes: frozenset[str]  # empty: must be stored (or a duplicate)


@dataclass(frozen=True)
class Crawled:
    """Everything a test needs once both crawls are over (servers closed)."""

    hostile: CliRun
    clean: CliRun
    hostile_out: Path
    clean_out: Path
    expect: dict[str, Expect]
    rows: dict[str, sqlite3.Row]
    canary_connections: int
    image_bytes_sent: int


def _fault_keys(server: EmulatorServer) -> list[tuple[str, str]]:
    """(kind, URL key) pairs: heavy faults four times (interleaved, first), slow ones once (each
    holds a worker for the whole deadline), the others twice."""
    corpus = server.corpus
    ext = {kind: key.rsplit(".", 1)[1] for kind, key in corpus.fault_url_keys().items()}
    heavy = [(k, f"f/{k}/{i:04d}.{ext[k]}") for i in range(4) for k in HEAVY]
    light = [
        (k, f"f/{k}/{i:04d}.{ext[k]}")
        for k in FAULT_KINDS
        if k not in HEAVY
        for i in ((0,) if k in SLOW else (0, 1))
    ]
    pairs = heavy + light
    assert all(corpus.spec(key) is not None for _, key in pairs)
    return pairs


async def _warm(server: EmulatorServer, urls: list[str]) -> None:
    """Render every picture and build both bombs before the crawl: on a busy machine, the
    emulator's first-request work must not eat into the crawler's deadlines."""
    specs = [server.corpus.spec(u.split("/img/", 1)[1]) for u in urls if "/img/" in u]
    pictures = [s for s in specs if s is not None and s.fault != "bomb"]
    await asyncio.to_thread(lambda: [server.corpus.image_bytes(s) for s in pictures])
    async with aiohttp.ClientSession() as session:
        for kind in ("gzip_bomb", "bomb"):  # HEAD builds the body without sending it
            key = server.corpus.fault_url_keys()[kind]
            async with session.head(f"{server.base_url}img/{key}") as resp:
                assert resp.status == 200


def _redirect_routes(canary_port: int) -> list[web.RouteDef]:
    async def redirect(request: web.Request) -> web.Response:
        target = REDIRECTS[request.match_info["name"]][0].format(p=canary_port)
        return web.Response(status=302, headers={"Location": target})

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        target = f"/chain/{n - 1}" if n else f"http://{CANARY_HOST}:{canary_port}/chain-end"
        return web.Response(status=307, headers={"Location": target})

    return [web.get("/redir/{name}", redirect), web.get("/chain/{n}", chain)]


def _crawl_args(api_url: str, out: Path) -> list[str]:
    return [
        "crawl", "hostile internet", "--out", str(out), "--key", "k", "--endpoint", api_url,
        "--allow-network", "127.0.0.1/32", "--no-progress", "--log-level", "WARNING",
        "--hash-workers", "0",  # decoding in this process: its peak RSS is the whole story
        "--concurrency", str(CONCURRENCY), "--per-host", str(CONCURRENCY),
        "--max-bytes", str(MAX_BYTES), "--timeout", "2", "--retries", "1",
        "--count", "50", "--limit", "1000", "--qps", "50",
    ]  # fmt: skip


async def crawl_side_by_side(
    base: Path, hostile_args: tuple[str, ...] = (), timeout: float = 90.0
) -> Crawled:
    """Run the hostile crawl and a clean crawl of the same size, side by side.

    ``hostile_args`` are appended to the hostile crawl's options (for experiments that switch
    a defence off, e.g. ``--max-bytes 2000000000``).
    """
    canary = RawServer(CANARY_HOST)
    await canary.start()
    config = EmulatorConfig(
        qps=None,
        corpus=CorpusConfig(results_per_query=200, fault_rate=0.0),
        images=ImageHostConfig(slow_seconds=20.0, transient_failures=1, retry_after=0.1),
    )
    try:
        async with Emulators() as emulators:  # (a module's fixture: not start_emulator)
            server = await emulators.start(config)
            hostile_api, clean_api = ScriptedApi(), ScriptedApi()
            hostile_api.routes = _redirect_routes(canary.port)
            expect: dict[str, Expect] = {}
            async with serve(hostile_api.app()) as hostile_url, serve(clean_api.app()) as clean_url:
                for kind, key in _fault_keys(server):
                    errors = frozenset() if kind in SURVIVABLE else frozenset(EXPECTED_ERROR[kind])
                    expect[f"{server.base_url}img/{key}"] = Expect(kind, errors)
                for i, form in enumerate(BLOCKED_LOOPBACK):
                    url = form.format(p=canary.port) + f"b{i}.jpg"
                    expect[url] = Expect(f"literal {form}", frozenset({"blocked_address"}))
                for name, (_, error) in REDIRECTS.items():
                    expect[f"{hostile_url}/redir/{name}"] = Expect(
                        f"redirect {name}", frozenset({error})
                    )
                expect[f"{hostile_url}/chain/{CHAIN_HOPS}"] = Expect(
                    "redirect at the 5th hop", frozenset({"blocked_address"})
                )
                clean = [s for s in server.corpus.query_results("clean pictures") if not s.fault]
                for spec in clean[:20]:
                    expect[f"{server.base_url}img/{spec.key}"] = Expect("clean", frozenset())
                hostile_api.results = [image_item(u, n) for n, u in enumerate(expect)]
                baseline = [s for s in server.corpus.query_results("baseline") if not s.fault]
                assert len(baseline) >= len(expect)
                clean_api.results = [
                    image_item(f"{server.base_url}img/{s.key}", n)
                    for n, s in enumerate(baseline[: len(expect)])
                ]
                await _warm(server, [*expect, *(r["contentUrl"] for r in clean_api.results)])
                hostile_args = (*_crawl_args(hostile_url, base / "hostile"), *hostile_args)
                hostile_run, clean_run = await asyncio.gather(
                    run_cli(hostile_args, logs=base / "logs", timeout=timeout),
                    run_cli(_crawl_args(clean_url, base / "clean"), logs=base / "logs"),
                )
            sent = server.image_host.bytes_sent
    finally:
        await canary.close()
    rows = {
        r["url"]: r
        for r in db_rows(base / "hostile" / "checkpoint.sqlite", "SELECT * FROM candidates")
    }
    return Crawled(
        hostile=hostile_run,
        clean=clean_run,
        hostile_out=base / "hostile",
        clean_out=base / "clean",
        expect=expect,
        rows=rows,
        canary_connections=canary.connections,
        image_bytes_sent=sent,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def crawled(tmp_path_factory: pytest.TempPathFactory) -> Crawled:
    """Both crawls, run once for the module's tests."""
    return await crawl_side_by_side(tmp_path_factory.mktemp("hostile"))


async def test_both_crawls_finish_cleanly(crawled: Crawled) -> None:
    assert crawled.hostile.code == 0, crawled.hostile.describe()
    assert crawled.clean.code == 0, crawled.clean.describe()
    assert set(crawled.rows) == set(crawled.expect), "every result became exactly one candidate"
    assert "Traceback" not in crawled.hostile.stderr


async def test_every_hostile_input_ends_with_its_failure(crawled: Crawled) -> None:
    wrong = {}
    for url, expect in crawled.expect.items():
        row = crawled.rows[url]
        if expect.error_classes:
            ok = row["status"] == "failed" and row["error_class"] in expect.error_classes
        else:
            ok = row["status"] in ("stored", "duplicate")
        if not ok:
            wrong[expect.what] = (url, row["status"], row["error_class"], row["detail"])
    assert not wrong
    kinds = {e.what for e in crawled.expect.values()}
    assert kinds >= set(FAULT_KINDS), "the crawl met every fault kind"


async def test_no_connection_ever_reaches_a_refused_address(crawled: Crawled) -> None:
    assert crawled.canary_connections == 0
    blocked = [u for u, e in crawled.expect.items() if "blocked_address" in e.error_classes]
    assert len(blocked) >= 25


async def test_nothing_is_stored_for_a_failure(crawled: Crawled) -> None:
    out = crawled.hostile_out
    stored = {r["path"] for r in crawled.rows.values() if r["status"] == "stored"}
    failed = [r for r in crawled.rows.values() if r["status"] == "failed"]
    assert failed
    assert all(r["path"] is None and r["sha256"] is None for r in failed)
    images = {p.relative_to(out).as_posix() for p in files_under(out / "images")}
    assert images == stored  # no file but the stored ones, no temp file left behind
    assert all(IMAGE_NAME.match(Path(p).name) for p in images)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {m["path"] for m in manifest} == stored
    failed_urls = {r["url"] for r in failed}
    assert not failed_urls & {m["content_url"] for m in manifest}
    for m in manifest:
        assert hashlib.sha256((out / m["path"]).read_bytes()).hexdigest() == m["sha256"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["candidates"]["by_status"]["failed"] == len(failed)


async def test_unbounded_bodies_are_cut_off_early(crawled: Crawled) -> None:
    # Four 1 GiB streams, four 25 MiB ones, four gzip bombs (1 GiB inflated): if any had been
    # read to the end, the host would have sent at least a gibibyte.
    assert crawled.image_bytes_sent < HUGE_BYTES // 4


async def test_peak_memory_stays_within_the_bound(crawled: Crawled) -> None:
    hostile, clean = crawled.hostile.max_rss, crawled.clean.max_rss
    assert hostile is not None
    assert clean is not None
    report = f"hostile peak {hostile / MiB:.0f} MiB, clean peak {clean / MiB:.0f} MiB"
    assert hostile <= clean + MEMORY_BOUND_OVER_CLEAN, report
    # Sanity of the measurement itself: a Python process with Pillow and aiohttp loaded.
    assert 30 * MiB < clean < 400 * MiB, report
