"""Re-running a crawl: which option changes resume, which are refused, budgets, status/export.

These crawls run in-process through :func:`bingcrawl.cli.main` (no kill is needed, and a
process start costs more than the crawl); the one that must be killed runs as a process.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import os
import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bingcrawl.cli import main
from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.corpus import CorpusConfig
from bingcrawl.store import Checkpoint, meta
from bingcrawl.store.output import MANIFEST_FIELDS
from tests.support.crawls import key_of, read_manifest
from tests.support.emulator import StartEmulator
from tests.support.resume import (
    check_integrity,
    child_env,
    committed_pages,
    crawl_args,
    crawl_argv,
    db_query,
    emulator_config,
    page_requests,
    run_crawl,
)


async def cli(*argv: str) -> int:
    """Run the command line in a thread (its ``asyncio.run`` needs a loop of its own)."""
    return await asyncio.to_thread(main, list(argv), {})


async def rerun(server: EmulatorServer, out: Path, *argv: str) -> int:
    """Run a crawl on an existing OUT; it must not request a page committed before it."""
    committed = committed_pages(out)
    seen = len(server.state.requests(endpoint="search", status=200))
    code = await cli(*argv)
    repeated = committed.intersection(page_requests(server, seen))
    assert not repeated, f"committed pages requested again: {sorted(repeated)}"
    return code


@pytest.fixture
async def server(start_emulator: StartEmulator) -> EmulatorServer:
    """An emulator with faults, mirrors and near duplicates (see ``emulator_config``)."""
    return await start_emulator(emulator_config(results_per_query=40))


@pytest.fixture
async def slow_api(start_emulator: StartEmulator) -> EmulatorServer:
    """API answers take 0.2 s, so that two queries' requests are always in flight together."""
    config = dataclasses.replace(emulator_config(results_per_query=40), api_latency=0.2)
    return await start_emulator(config)


@pytest.fixture
async def clean_server(start_emulator: StartEmulator) -> EmulatorServer:
    """An emulator whose every image is distinct and fetchable: counts are exact."""
    corpus = CorpusConfig(
        seed=3,
        results_per_query=60,
        fault_rate=0.0,
        exact_dup_rate=0.0,
        near_dup_rate=0.0,
        cross_query_rate=0.0,
    )
    return await start_emulator(EmulatorConfig(qps=None, corpus=corpus))


def api_total(out: Path) -> int:
    """API calls the checkpoint has accounted for (what the next run's budget starts from)."""
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    try:
        return meta.api_total(conn)
    finally:
        conn.close()


def statuses(out: Path) -> dict[str, str]:
    """URL key -> candidate status."""
    return {key_of(url): s for url, s in db_query(out, "SELECT url, status FROM candidates")}


def searches(server: EmulatorServer) -> int:
    """Every search request the emulator saw, whatever it answered."""
    return len(server.state.requests(endpoint="search"))


# -- --max-api-calls -----------------------------------------------------------------------


async def test_max_api_calls_stops_searching_and_a_larger_budget_completes(
    slow_api: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = slow_api
    out = tmp_path / "out"
    queries = ("alpha one", "beta two")
    args = crawl_args(server.base_url, out, queries=queries)

    assert await cli(*args, "--max-api-calls", "3") == 4
    assert "--max-api-calls" in capsys.readouterr().err
    assert searches(server) == 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["run"]["quota_exhausted"] is True
    # the queued downloads were finished and the dataset was written
    assert len(read_manifest(out)) > 0
    check_integrity(out, finished=False)

    # A larger budget goes on (still exit 4: it is spent before the results are) ...
    assert await rerun(server, out, *args, "--max-api-calls", "6") == 4
    assert 3 < searches(server) < 3 + 6

    # ... and without one the crawl completes.
    assert await rerun(server, out, *args) == 0
    expected = {s.key for q in queries for s in server.corpus.query_results(q)}
    assert set(statuses(out)) == expected
    check_integrity(out)


async def test_max_api_calls_is_exact_across_resumes(
    slow_api: EmulatorServer, tmp_path: Path
) -> None:
    server = slow_api
    out = tmp_path / "out"
    args = crawl_args(server.base_url, out, queries=("alpha one", "beta two"))
    assert await cli(*args, "--max-api-calls", "3") == 4
    # Every request the API billed is accounted for, and every page paid for is kept.
    assert searches(server) == api_total(out) == 3
    assert db_query(out, "SELECT count(*) FROM pages") == [(3,)]
    # The budget is spent: the same command sends nothing.
    assert await cli(*args, "--max-api-calls", "3") == 4
    assert searches(server) == api_total(out) == 3
    # A larger budget allows exactly the difference.
    assert await cli(*args, "--max-api-calls", "7") == 4
    assert searches(server) == api_total(out) == 7


async def test_max_api_calls_holds_across_a_kill(slow_api: EmulatorServer, tmp_path: Path) -> None:
    server = slow_api
    out = tmp_path / "out"
    argv = crawl_argv(server.base_url, out, "--max-api-calls", "3", queries=["alpha one"])
    killed = await run_crawl(argv, tmp_path / "1.log", env=child_env("api_response:2"))
    assert killed.killed, killed.stderr()
    assert searches(server) == 2
    # The API answered 2 calls; the checkpoint must know of both.
    assert api_total(out) >= 2
    resumed = await run_crawl(argv, tmp_path / "2.log")
    assert resumed.returncode == 4, resumed.stderr()
    assert searches(server) <= 3


async def test_api_calls_counted_before_sending_are_committed_at_once(tmp_path: Path) -> None:
    """The store's half of a budget that survives kill -9 (``count_api_call_sent``)."""
    async with await Checkpoint.open(tmp_path, batch_interval=30.0) as cp:
        await cp.check_fingerprint({"filters": {}})
        cp.record_api_call("search", 200)  # an answer: a batched row
        assert await cp.count_api_call_sent("search") == 2
        assert api_total(tmp_path) == 2  # committed already: another connection sees it
        cp.record_api_call("search", 200)  # the answer to the call counted as sent
        assert cp.api_calls_total == 2
    async with await Checkpoint.open(tmp_path) as cp:
        assert cp.api_calls_total == 2
        await cp.check_fingerprint({"filters": {"mkt": "en-GB"}}, fresh=True)
        assert cp.api_calls_total == 0
    assert api_total(tmp_path) == 0


# -- the options fingerprint ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        (["--license", "Public"], ["--license", "Share"], "license"),
        (["--mkt", "en-US"], ["--mkt", "en-GB"], "mkt"),
        (["--image-type", "Photo"], [], "imageType"),
        ([], ["--near-dup-distance", "6"], "near_dup_distance"),
        ([], ["--max-bytes", "1000000"], "max_bytes"),
    ],
)
async def test_options_that_change_the_result_set_are_refused_unless_fresh(
    server: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    first: list[str],
    second: list[str],
    named: str,
) -> None:
    out = tmp_path / "out"
    args = crawl_args(server.base_url, out, "--limit", "3", "--count", "5", queries=["alpha one"])
    assert await cli(*args, *first) == 0
    before = (searches(server), sum(server.image_host.requests.values()))
    manifest = (out / "manifest.jsonl").read_bytes()
    capsys.readouterr()

    assert await cli(*args, *second) == 2
    err = capsys.readouterr().err
    assert named in err
    assert "--fresh" in err
    # refused before any request, and OUT is as the first run left it
    assert (searches(server), sum(server.image_host.requests.values())) == before
    assert (out / "manifest.jsonl").read_bytes() == manifest

    assert await cli(*args, *second, "--fresh") == 0
    assert searches(server) > before[0]
    replaced = list(out.glob("replaced-*"))
    assert len(replaced) == 1
    assert (replaced[0] / "manifest.jsonl").read_bytes() == manifest
    assert len(read_manifest(out)) == 3
    check_integrity(out)
    # and the new options hold from now on: running the second command again resumes
    assert await rerun(server, out, *args, *second) == 0


async def test_a_changed_label_is_refused_unless_fresh(
    server: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = crawl_args(server.base_url, out, "--limit", "3", "--count", "5", queries=["red panda"])
    assert await cli(*args, "--label", "pandas") == 0
    n = searches(server)
    capsys.readouterr()

    assert await cli(*args, "--label", "bears") == 2
    err = capsys.readouterr().err
    assert "label" in err
    assert "--fresh" in err
    assert searches(server) == n

    # The same query written differently is the same query: it resumes.
    respelled = crawl_args(
        server.base_url, out, "--limit", "3", "--count", "5", queries=["Red  Panda"]
    )
    assert await rerun(server, out, *respelled, "--label", "pandas") == 0
    assert searches(server) == n

    assert await cli(*args, "--label", "bears", "--fresh") == 0
    assert {row["label"] for row in read_manifest(out)} == {"bears"}
    check_integrity(out)


async def test_raised_limit_continues_and_requeues_skipped(
    clean_server: EmulatorServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    queries = ("alpha one", "beta two")
    args = crawl_args(clean_server.base_url, out, "--count", "10", queries=queries)
    assert await cli(*args, "--limit", "5") == 0
    first = statuses(out)
    skipped = {key for key, status in first.items() if status == "skipped"}
    assert skipped, "no candidate was skipped: the test proves nothing"
    assert Counter(r["label"] for r in read_manifest(out)) == {"alpha_one": 5, "beta_two": 5}
    pages_first = set(page_requests(clean_server))

    # A higher limit, and options that do not change the result set, are all accepted.
    harmless = ["--concurrency", "3", "--qps", "20", "--max-active-queries", "1", "--per-host", "2"]
    harmless += ["--timeout", "5", "--retries", "1", "--grace", "2", "--api-retries", "3"]
    assert await rerun(clean_server, out, *args, "--limit", "30", *harmless) == 0
    assert Counter(r["label"] for r in read_manifest(out)) == {"alpha_one": 30, "beta_two": 30}
    second = statuses(out)
    assert {second[key] for key in skipped} == {"stored"}, "skipped candidates not re-queued"
    pages = page_requests(clean_server)
    assert len(pages) == len(set(pages)), "a page was requested twice"
    assert pages_first <= set(pages)
    check_integrity(out)


# -- --durable ------------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count ``os.fsync`` calls by what was synced: ``file`` or ``dir``."""
    real = os.fsync
    seen: Counter[str] = Counter()

    def counting(fd: int) -> None:
        seen["dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"] += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return seen


async def test_durable_fsyncs_every_file_and_directory(
    clean_server: EmulatorServer, tmp_path: Path, fsyncs: Counter[str]
) -> None:
    plain = crawl_args(clean_server.base_url, tmp_path / "plain", "--limit", "6", queries=["one"])
    assert await cli(*plain) == 0
    assert fsyncs == Counter(), "fsync without --durable"

    out = tmp_path / "durable"
    args = crawl_args(clean_server.base_url, out, "--limit", "6", "--durable", queries=["one"])
    assert await cli(*args) == 0
    stored = len(read_manifest(out))
    assert stored == 6
    # each image file and its directory; then the manifest and stats.json and OUT
    assert fsyncs["file"] >= stored + 2
    assert fsyncs["dir"] >= stored + 2
    check_integrity(out)
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    # --durable does not change the result set: a run without it resumes the same OUT
    plain_again = crawl_args(clean_server.base_url, out, "--limit", "6", queries=["one"])
    assert await rerun(clean_server, out, *plain_again) == 0


# -- status and export after a crash and a resume -------------------------------------------


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


async def test_status_and_export_after_a_killed_and_resumed_crawl(
    server: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    queries = ("alpha one", "beta two")
    argv = crawl_argv(server.base_url, out, queries=queries)
    killed = await run_crawl(argv, tmp_path / "1.log", env=child_env("file_written:8"))
    assert killed.killed, killed.stderr()

    # status reads an interrupted crawl: work is left, and nothing is counted twice
    capsys.readouterr()
    assert await cli("status", str(out), "--json") == 0
    mid = json.loads(capsys.readouterr().out)
    assert {q["text"] for q in mid["queries"]} == set(queries)
    total = db_query(out, "SELECT count(*) FROM candidates")[0][0]
    assert sum(sum(q["candidates"].values()) for q in mid["queries"]) == total
    assert any(q["state"] == "active" for q in mid["queries"])

    resumed = await run_crawl(argv, tmp_path / "2.log")
    assert resumed.returncode == 0, resumed.stderr()
    check_integrity(out)
    manifest = read_manifest(out)

    assert await cli("status", str(out), "--json") == 0
    done = json.loads(capsys.readouterr().out)
    per_label = Counter(row["label"] for row in manifest)
    assert {q["label"]: q["candidates"].get("stored", 0) for q in done["queries"]} == per_label
    assert {q["state"] for q in done["queries"]} <= {"exhausted", "done"}
    assert await cli("status", str(out)) == 0
    table = capsys.readouterr().out
    for label in per_label:
        assert label in table

    exported = tmp_path / "export"
    for fmt in ("jsonl", "csv", "parquet"):
        assert await cli("export", str(out), "--format", fmt, "-o", str(exported / f"m.{fmt}")) == 0
    jsonl = [json.loads(line) for line in (exported / "m.jsonl").read_text().splitlines()]
    key = lambda row: row["sha256"]  # noqa: E731
    assert sorted(jsonl, key=key) == sorted(manifest, key=key)
    rows = _csv_rows(exported / "m.csv")
    assert sorted(r["sha256"] for r in rows) == sorted(r["sha256"] for r in manifest)
    assert set(rows[0]) >= set(MANIFEST_FIELDS)
    fields = ("path", "label", "sha256", "phash", "bytes", "width", "height", "content_url")
    parquet = pq.read_table(exported / "m.parquet").to_pylist()
    assert sorted(tuple(r[f] for f in fields) for r in parquet) == sorted(
        tuple(r[f] for f in fields) for r in manifest
    )

    assert (
        await cli("export", str(out), "--all", "--format", "csv", "-o", str(exported / "a.csv"))
        == 0
    )
    everything = {key_of(r["content_url"]): r["status"] for r in _csv_rows(exported / "a.csv")}
    assert everything == statuses(out)
    assert "pending" not in everything.values()


# -- a kill, then another --limit ------------------------------------------------------------


async def test_killed_then_resumed_with_a_lower_then_a_higher_limit(
    clean_server: EmulatorServer, tmp_path: Path
) -> None:
    """Images written but not recorded before a kill are not adopted by a resumed run that
    skips their candidates (the limit is reached): no orphan file is left."""
    out = tmp_path / "out"
    argv = crawl_argv(clean_server.base_url, out, "--limit", "50", queries=["alpha one"])
    killed = await run_crawl(argv, tmp_path / "1.log", env=child_env("file_written:30"))
    assert killed.killed, killed.stderr()
    written = {p.name for p in (out / "images").rglob("*.*")}
    recorded = {
        Path(path).name
        for (path,) in db_query(out, "SELECT path FROM candidates WHERE status = 'stored'")
    }
    assert written - recorded, "every written file was recorded: the test proves nothing"

    # A limit already reached: the candidates of the unrecorded files are skipped.
    limit = max(1, len(recorded))
    lower = crawl_args(clean_server.base_url, out, "--limit", str(limit), queries=["alpha one"])
    assert await rerun(clean_server, out, *lower) == 0
    check_integrity(out)  # the unrecorded files are gone, the recorded ones kept
    assert {p["path"] for p in read_manifest(out)} == {
        path for (path,) in db_query(out, "SELECT path FROM candidates WHERE status = 'stored'")
    }
    assert len(read_manifest(out)) == limit
    assert db_query(out, "SELECT count(*) FROM candidates WHERE status = 'skipped'")[0][0] > 0

    higher = crawl_args(clean_server.base_url, out, "--limit", "45", queries=["alpha one"])
    assert await rerun(clean_server, out, *higher) == 0
    check_integrity(out)
    assert len(read_manifest(out)) == 45
