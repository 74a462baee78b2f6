"""``--engine ray`` on a real two-node Ray cluster on this machine (``ray.cluster_utils``).

The emulator runs in the test's process (its ground truth says which URLs are copies of one
picture); the crawl's driver runs there too and its workers are Ray actors spread over the two
nodes, fetching from the emulator over loopback. The local engine's results on the same input
are the reference.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.config import CrawlConfig
from bingcrawl.emulator.corpus import CorpusConfig
from bingcrawl.emulator.imagehost import ImageHostConfig
from bingcrawl.engine.crawler import Crawler
from bingcrawl.events import Event, FileWritten
from tests.support.crawls import crawl_config, read_manifest
from tests.support.dedup import (
    ECHO,
    QUERIES,
    D,
    base_of,
    candidates,
    check_collapsed,
    corpus_config,
    echo_results,
    kinds_of_duplicates,
    serve_echoes,
)
from tests.support.emulator import StartEmulator
from tests.support.resume import (
    Dataset,
    check_integrity,
    child_env,
    crawl_argv,
    db_count,
    run_crawl,
)

ray = pytest.importorskip("ray", reason="the Ray engine's tests need the [ray] extra")

pytestmark = [
    # Ray's own modules warn on import and at shutdown (deprecations, unclosed sockets of
    # its gRPC clients): not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.timeout(240),
]

QPS = 20.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node and a worker node, 2 CPUs each, for the whole module."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 2, "object_store_memory": 80 * 2**20}
    c = Cluster(initialize_head=True, head_node_args=node)
    c.add_node(**node)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def on_ray(config: CrawlConfig, cluster: Any, out: Path, **kw: Any) -> CrawlConfig:
    kw.setdefault("workers", 2)
    return replace(config, out=out, engine="ray", ray_address=cluster.address, **kw)


async def test_ray_stores_what_the_local_engine_stores(
    start_emulator: StartEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cluster: Any,
) -> None:
    # Strict QPS on the emulator (it answers 429 to a 21st call in any 1-second window),
    # faults, exact and near copies within and across queries.
    server = await start_emulator(corpus=corpus_config(), qps=QPS)
    serve_echoes(monkeypatch, server, echo_results(server.corpus, QUERIES, own=12))
    local = crawl_config(
        server, tmp_path / "local", (*QUERIES, ECHO), limit=1000, count=25,
        near_dup_distance=D, retries=2, qps=QPS,
    )  # fmt: skip
    async with Crawler(local) as crawler:
        await crawler.run()
    api_local = len(server.state.requests(endpoint="search"))

    config = on_ray(local, cluster, tmp_path / "ray")
    async with Crawler(config) as crawler:
        assert type(crawler).__name__ == "RayCrawler"
        report = await crawler.run()
    assert report.completed

    rows = {name: candidates(tmp_path / name) for name in ("local", "ray")}
    by_sha = check_collapsed(server, rows["ray"])  # one stored image per picture, none lost
    check_collapsed(server, rows["local"])
    stored = {
        name: {base_of(server, r) for r in found if r["status"] == "stored"}
        for name, found in rows.items()
    }
    assert stored["ray"] == stored["local"]
    kinds = kinds_of_duplicates(rows["ray"], by_sha)
    assert {"exact within", "near within", "exact across", "near across"} <= set(kinds), kinds
    # Every outcome a URL can have, the same as the local engine's.
    status = {name: {r["url"].rsplit("/img/", 1)[1]: r["status"] for r in found}
              for name, found in rows.items()}  # fmt: skip
    failed = {name: {k for k, s in st.items() if s == "failed"} for name, st in status.items()}
    assert failed["ray"] == failed["local"]
    # One QPS limit: the emulator never had to refuse a call.
    assert server.state.requests(endpoint="search", status=429) == []
    assert len(server.state.requests(endpoint="search")) == 2 * api_local
    # The dataset is whole: files match their rows, the manifest lists exactly them.
    check_integrity(tmp_path / "ray")
    manifest = read_manifest(tmp_path / "ray")
    assert sorted(m["sha256"] for m in manifest) == sorted(by_sha)
    stats = Dataset.read(tmp_path / "ray", server).stats
    assert stats["run"]["engine"] == {"name": "ray", "workers": 2, "workers_lost": 0}


async def test_two_crawls_with_one_key_share_its_qps_limit(
    start_emulator: StartEmulator, tmp_path: Path, cluster: Any
) -> None:
    # Each crawl alone may call at --qps 10; the emulator allows 10 calls in any second for
    # the key. Run together, they must share the limit (one limiter actor per key), or the
    # emulator answers 429.
    server = await start_emulator(
        corpus=CorpusConfig(results_per_query=60, fault_rate=0.0), qps=10.0
    )
    crawls = [
        on_ray(
            crawl_config(server, tmp_path / name, queries, limit=1000, count=6, qps=10.0),
            cluster,
            tmp_path / name,
            workers=1,
        )
        for name, queries in (("a", ("red fox", "blue jay")), ("b", ("green frog", "grey owl")))
    ]

    async def run(config: CrawlConfig) -> Any:
        async with Crawler(config) as crawler:
            return await crawler.run()

    reports = await asyncio.gather(*(run(c) for c in crawls))
    assert all(r.completed for r in reports)
    calls = server.state.requests(endpoint="search")
    assert len(calls) >= 40  # (10 pages per query: enough to exceed 10 QPS if unshared)
    assert server.state.requests(endpoint="search", status=429) == []


async def test_shards_of_each_worker_have_their_own_names(
    start_emulator: StartEmulator, tmp_path: Path, cluster: Any
) -> None:
    server = await start_emulator(corpus=CorpusConfig(results_per_query=60, fault_rate=0.0))
    config = on_ray(
        crawl_config(server, tmp_path, QUERIES, limit=1000, count=30),
        cluster,
        tmp_path,
        output_format="webdataset",
        shard_size=10,
        shard_by="all",
    )
    async with Crawler(config) as crawler:
        await crawler.run()
    manifest = read_manifest(tmp_path)
    shards = sorted(p.name for p in (tmp_path / "shards").iterdir())
    # Both workers wrote (their own series), and every image is a member where its row says.
    assert {name.split("-")[1] for name in shards} == {"w0", "w1"}, shards
    members: dict[str, set[str]] = {}
    for name in shards:
        with tarfile.open(tmp_path / "shards" / name) as tar:
            members[f"shards/{name}"] = set(tar.getnames())
    assert len(manifest) == sum(len(m) for m in members.values()) // 2
    for row in manifest:
        assert f"{row['sha256'][:16]}.json" in members[row["path"]]
    check_integrity(tmp_path)


async def test_a_worker_killed_mid_crawl_loses_nothing(
    start_emulator: StartEmulator, tmp_path: Path, cluster: Any
) -> None:
    # Slow image answers keep downloads in flight on both workers when one is killed.
    server = await start_emulator(
        corpus=CorpusConfig(
            results_per_query=80, fault_rate=0.05, fault_kinds=("http_404", "transient_503"),
            exact_dup_rate=0.1, near_dup_rate=0.2, cross_query_rate=0.1,
        ),
        images=ImageHostConfig(latency=0.05, retry_after=0.0),
    )  # fmt: skip
    config = on_ray(
        crawl_config(
            server, tmp_path, QUERIES, limit=1000, count=40, near_dup_distance=D, retries=2
        ),
        cluster,
        tmp_path,
    )
    killed: list[int] = []
    written = 0
    crawler = Crawler(config)

    def kill_one(event: Event) -> None:
        nonlocal written
        if isinstance(event, FileWritten):
            written += 1
            if written == 15 and not killed:
                pid = crawler.pool.pids()[0]  # type: ignore[attr-defined]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    crawler.events.subscribe(kill_one)
    async with crawler:
        report = await crawler.run()
    assert killed
    assert report.completed
    stats = report.stats["run"]["engine"]
    assert stats["workers_lost"] >= 1
    rows = candidates(tmp_path)
    assert not [r for r in rows if r["error_class"] == "worker_lost"]
    check_collapsed(server, rows)  # nothing stored twice, every picture seen is stored
    check_integrity(tmp_path)  # no orphan file, nothing left pending


async def test_sigterm_then_kill_9_then_resume(
    start_emulator: StartEmulator, tmp_path: Path, cluster: Any
) -> None:
    """The driver as a real process: SIGTERM -> 143 after draining; kill -9 -> resumable."""
    server = await start_emulator(
        corpus=CorpusConfig(
            results_per_query=80, fault_rate=0.05, fault_kinds=("http_404",),
            exact_dup_rate=0.1, near_dup_rate=0.1,
        ),
        images=ImageHostConfig(latency=0.02, retry_after=0.0),
    )  # fmt: skip
    out = tmp_path / "out"
    argv = crawl_argv(
        server.base_url, out, "--engine", "ray", "--ray-address", cluster.address,
        "--workers", "2", "--near-dup-distance", str(D),
    )  # fmt: skip
    stored_sql = "SELECT count(*) FROM candidates WHERE status = 'stored'"

    async def stored_at_least(n: int) -> Any:
        async def check(pid: int) -> bool:
            return await db_count(out, stored_sql) >= n

        return check

    term = await run_crawl(
        argv, tmp_path / "term.log", kill_when=await stored_at_least(20), sig=signal.SIGTERM
    )
    assert term.returncode == 143, term.stderr()[-3000:]
    check_integrity(out, finished=False)
    first = await db_count(out, stored_sql)

    more = await stored_at_least(first + 20)
    killed = await run_crawl(argv, tmp_path / "kill.log", kill_when=more)
    assert killed.killed, killed.stderr()[-3000:]
    # (a file written just before the kill, without its row, is removed by the next start)

    last = await run_crawl(argv, tmp_path / "last.log", env=child_env())
    assert last.returncode == 0, last.stderr()[-3000:]
    check_integrity(out)
    rows = candidates(out)
    check_collapsed(server, [r for r in rows if r["status"] != "skipped"])
    assert await db_count(out, stored_sql) == len(read_manifest(out))


def test_without_ray_the_engine_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from bingcrawl.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    # An endpoint nothing listens on: any request would fail differently (exit 6).
    code = main(
        ["crawl", "cats", "--out", str(tmp_path / "out"), "--key", "k", "--engine", "ray",
         "--endpoint", "http://127.0.0.1:9/"],
        env={},
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--engine" in err
    assert "bingcrawl[ray]" in err
    assert not (tmp_path / "out").exists()


def test_ray_options_need_the_ray_engine(tmp_path: Path) -> None:
    from bingcrawl.errors import ConfigError

    with pytest.raises(ConfigError, match="--workers"):
        CrawlConfig(out=tmp_path, workers=2)
    with pytest.raises(ConfigError, match="--ray-address"):
        CrawlConfig(out=tmp_path, ray_address="auto")
    with pytest.raises(ConfigError, match="--workers"):
        CrawlConfig(out=tmp_path, engine="ray", workers=0)
    with pytest.raises(ConfigError, match="--engine"):
        CrawlConfig(out=tmp_path, engine="spark")
    with pytest.raises(ConfigError, match="--ray-address"):
        CrawlConfig(out=tmp_path, engine="ray", ray_address="head-without-port")


def test_an_unreachable_cluster_is_named_at_once(tmp_path: Path) -> None:
    # (Ray alone retries an unreachable head for minutes, deaf to Ctrl-C.)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # a port nothing listens on once the socket closes
    done = subprocess.run(
        [sys.executable, "-m", "bingcrawl", "crawl", "cats", "--out", str(tmp_path / "out"),
         "--key", "k", "--endpoint", "http://127.0.0.1:9/", "--engine", "ray",
         "--ray-address", f"127.0.0.1:{port}", "--no-progress"],
        env=child_env(), capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert f"cannot join the Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
