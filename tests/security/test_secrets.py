"""Key hygiene: a sentinel subscription key, passed every supported way, is sent to the API host
only and appears in no file under OUT (checkpoint, its WAL, manifest, stats, exports), no
stdout and no stderr, whatever path the run takes: success with throttling and 5xx, 401, 403,
quota, a persistent 500, a redirecting API, an API that echoes the key, a crash and its
resume, ``status`` and ``export``, text and JSON logs at DEBUG.

Every crawl runs as ``python -m bingcrawl`` in a child process, so stdout and stderr are what
a user or a log collector would see, tracebacks and all. ``status`` and ``export``, which never
receive the key, run in this process (their output captured at the file-descriptor level).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from bingcrawl.emulator import EmulatorConfig
from bingcrawl.emulator.corpus import CorpusConfig
from tests.support.emulator import StartEmulator
from tests.support.hostile import (
    KEY_HEADER,
    CliRun,
    HeaderLog,
    ScriptedApi,
    api_error,
    child_env,
    db_rows,
    files_under,
    image_item,
    leaks,
    needle_forms,
    raw_answer,
    run_cli,
    run_main,
    serve,
)

COMMON = [
    "--allow-network", "127.0.0.1/32", "--no-progress", "--hash-workers", "0",
    "--timeout", "3", "--retries", "1", "--limit", "12", "--qps", "20",
    "--api-retries", "3", "--log-level", "DEBUG",
]  # fmt: skip


#: Faults that end fast (no slow host): failures are logged at DEBUG with their URL.
QUICK_FAULTS = (
    "http_404", "http_500", "truncated_image", "html_as_jpeg", "random_bytes", "bomb",
    "gzip_bomb", "redirect", "wrong_content_type",
)  # fmt: skip


def corpus() -> CorpusConfig:
    """Small, with quick faulty image URLs so the download error paths log too."""
    return CorpusConfig(results_per_query=40, fault_rate=0.15, fault_kinds=QUICK_FAULTS)


def assert_no_leak(secret: str, outs: list[Path], runs: list[CliRun]) -> None:
    """The secret is in no file under the OUTs and in no output of the runs."""
    files = [f for out in outs for f in files_under(out)]
    for out in outs:
        assert (out / "checkpoint.sqlite").is_file(), f"{out} was never written: nothing to grep"
    texts = {}
    for i, run in enumerate(runs):
        texts[f"run {i} {run.argv[1:4]} stdout"] = run.stdout
        texts[f"run {i} {run.argv[1:4]} stderr"] = run.stderr
    found = leaks(secret, files, texts)
    assert not found, f"the key leaked into {found}"


def key_args(source: str, secret: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """CLI arguments and environment that hand ``secret`` over by ``source``."""
    if source == "flag":
        return ["--key", secret], {}
    if source == "env":
        return [], {"BING_SEARCH_V7_SUBSCRIPTION_KEY": secret}
    path = tmp / "key.txt"
    path.write_text(secret + "\n", encoding="utf-8")
    return ["--key-file", str(path)], {}


async def test_key_goes_to_the_api_only_and_is_never_written(
    start_emulator: StartEmulator,
    sentinel: str,
    tmp_path: Path,
    logs: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Images live on their own host, so "the key goes to the API host only" is observable.
    image_log = HeaderLog()
    images = await start_emulator(EmulatorConfig(corpus=corpus()), attach=image_log.attach)
    # The first crawl's API answers with a 500, a 429 and an empty 200, each on a different
    # page, then pages normally: every retry path runs and logs.
    flaky = ScriptedApi(
        results=[
            image_item(f"{images.base_url}img/{spec.key}", n)
            for n, spec in enumerate(images.corpus.query_results("flaky"))
        ],
        script=[
            api_error(500, "ServerError"),
            None,
            api_error(429, "RateLimitExceeded", **{"Retry-After": "1"}),
            None,
            raw_answer(200, b"<html>busy</html>", "text/html"),
        ],
    )
    plain_log = HeaderLog()
    plain = await start_emulator(
        EmulatorConfig(corpus=corpus(), qps=None, image_base_url=images.base_url),
        attach=plain_log.attach,
    )
    async with serve(flaky.app()) as flaky_url:
        runs, outs = await _crawl_three_ways(
            flaky_url + "/", plain.base_url, sentinel, tmp_path, logs
        )
    # status and export (every format, every candidate, the duplicate clusters), in this
    # process: they never get the key, so what matters is what they read and print.
    capfd.readouterr()
    for argv in (
        ["status", str(outs[0])],
        ["status", str(outs[0]), "--json"],
        ["export", str(outs[0]), "--all", "--format", "jsonl"],
        ["export", str(outs[0]), "--all", "--format", "csv"],
        ["export", str(outs[0]), "--all", "--format", "parquet"],
        ["export", str(outs[0]), "--duplicates"],
    ):
        assert await asyncio.to_thread(run_main, argv) == 0, argv
    printed = capfd.readouterr()
    assert '"queries"' in printed.out
    assert "flag query" in printed.out
    exports = {"candidates.jsonl", "candidates.csv", "candidates.parquet", "duplicates.jsonl"}
    assert {p.name for p in (outs[0] / "export").iterdir()} >= exports
    more = [CliRun(("status/export",), 0, printed.out, printed.err, 0)]

    assert not flaky.script, "the scripted failures were not all met"
    assert {r.key for r in plain.state.requests()} == {sentinel}
    assert all('"level": "DEBUG"' in r.stderr for r in (runs[0], runs[2]))
    assert " DEBUG " in runs[1].stderr
    assert_no_leak(sentinel, outs, [*runs, *more])

    image_requests = image_log.matching(lambda r: r.path_qs.startswith("/img/"))
    assert len(image_requests) >= 3 * 12
    # the image host saw nothing else but its origin's robots.txt and tdmrep.json, asked
    # once per run (etiquette), with no key either
    origin_files = ("/robots.txt", "/.well-known/tdmrep.json")
    others = [r.path_qs for r in image_log.requests if not r.path_qs.startswith("/img/")]
    assert sorted(others) == sorted(origin_files * len(runs))
    needles = [n.decode("latin-1") for n in needle_forms(sentinel)]
    for seen in image_log.requests:
        assert KEY_HEADER not in seen.headers
        everything = seen.path_qs + "".join(f"{k}:{v}" for k, v in seen.headers.items())
        assert not any(n in everything for n in needles)
    # the API hosts got API requests only, each with the key exactly once
    api_requests = flaky.log.requests + plain_log.requests
    assert all(r.path_qs.startswith("/v7.0/images/search?") for r in api_requests)
    assert all(r.headers.getall(KEY_HEADER) == [sentinel] for r in api_requests)


async def _crawl_three_ways(
    flaky_url: str, plain_url: str, secret: str, tmp: Path, logs: Path
) -> tuple[list[CliRun], list[Path]]:
    """Crawl with the key by flag (JSON logs, flaky API), environment (text) and file (JSON)."""
    crawls = []
    for source, fmt, endpoint in (
        ("flag", "json", flaky_url), ("env", "text", plain_url), ("file", "json", plain_url)
    ):  # fmt: skip
        out = tmp / f"out-{source}"
        args, env = key_args(source, secret, tmp)
        argv = [
            "crawl", f"{source} query", "--out", str(out), "--endpoint", endpoint,
            "--log-format", fmt, "--count", "5", *args, *COMMON,
        ]  # fmt: skip
        crawls.append((out, run_cli(argv, logs=logs, env=child_env(env))))
    runs = list(await asyncio.gather(*(c for _, c in crawls)))
    for run in runs:
        assert run.code == 0, run.describe()
    return runs, [out for out, _ in crawls]


def _echoing_error(status: int, code: str) -> Any:
    """An API that answers every call with ``status`` and puts the key it got, raw and
    percent-encoded, in every field of its ErrorResponse."""

    def answer(request: web.Request) -> web.StreamResponse:
        key = request.headers.get(KEY_HEADER, "")
        error = {
            "code": code,
            "message": f"key {key} (that is, {quote(key, safe='')}) is not welcome here",
            "moreDetails": f"you sent {quote(key)}",
            "parameter": f"Ocp-Apim-Subscription-Key={quote(key)}",
            "value": key,
        }
        body = {"_type": "ErrorResponse", "errors": [error]}
        return web.json_response(body, status=status)

    return answer


async def test_api_error_paths_do_not_leak_the_key(
    start_emulator: StartEmulator, canary_app_log: HeaderLog, canary_url: str,
    sentinel: str, tmp_path: Path, logs: Path,
) -> None:  # fmt: skip
    disabled = await start_emulator(
        EmulatorConfig(corpus=corpus(), disabled_keys=frozenset({sentinel}))
    )
    quota = await start_emulator(EmulatorConfig(corpus=corpus(), monthly_quota=0))
    redirecting = ScriptedApi(
        answer=lambda r: web.Response(status=307, headers={"Location": canary_url + r.path_qs})
    )
    echo_401 = ScriptedApi(answer=_echoing_error(401, "InvalidAuthorization"))
    echo_500 = ScriptedApi(answer=_echoing_error(500, "ServerError"))
    async with (
        serve(redirecting.app()) as redirect_url,
        serve(echo_401.app()) as echo_401_url,
        serve(echo_500.app()) as echo_500_url,
    ):
        cases = {  # name: (endpoint, exit status)
            "401-echo": (echo_401_url + "/", 3),
            "403-disabled": (disabled.base_url, 3),
            "403-quota": (quota.base_url, 4),
            # the query stops, the run completes the rest and says it is incomplete (exit 6)
            "500-echo-forever": (echo_500_url + "/", 6),
            "307-elsewhere": (redirect_url + "/", 1),
        }
        pending = []
        for i, (name, (endpoint, _)) in enumerate(cases.items()):
            argv = [
                "crawl", f"case {name}", "--out", str(tmp_path / name), "--key", sentinel,
                "--endpoint", endpoint, "--log-format", ("json", "text")[i % 2], *COMMON,
                "--api-retries", "1",
            ]  # fmt: skip
            pending.append(run_cli(argv, logs=logs))
        runs = dict(zip(cases, await asyncio.gather(*pending), strict=True))
    for name, (_, code) in cases.items():
        assert runs[name].code == code, f"{name}: {runs[name].describe()}"
    assert_no_leak(sentinel, [tmp_path / name for name in cases], list(runs.values()))
    assert len(echo_401.log.requests) == 1
    assert len(echo_500.log.requests) == 2  # one retry, then the query fails
    assert "***" in runs["401-echo"].stderr
    # The redirect was not followed: the other host never saw a request, let alone the key.
    assert canary_app_log.requests == []
    assert len(redirecting.log.requests) == 1
    assert "not followed" in runs["307-elsewhere"].stderr
    # The failed query keeps its (redacted) error in the checkpoint.
    errors = db_rows(
        tmp_path / "500-echo-forever" / "checkpoint.sqlite", "SELECT error FROM queries"
    )
    assert len(errors) == 1
    assert "***" in errors[0]["error"]


@pytest.fixture
async def canary_app_log() -> HeaderLog:
    """The log of an HTTP server on 127.0.0.2 that the key must never reach."""
    return HeaderLog()


@pytest.fixture
async def canary_url(canary_app_log: HeaderLog) -> Any:
    """``http://127.0.0.2:PORT`` of an app logging into ``canary_app_log``."""
    app = web.Application()

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"_type": "Images", "value": []})

    app.router.add_route("*", "/{tail:.*}", anything)
    canary_app_log.attach(app)
    async with serve(app, host="127.0.0.2") as url:
        yield url


async def test_crash_and_resume_leave_no_key_behind(
    start_emulator: StartEmulator, sentinel: str, tmp_path: Path, logs: Path
) -> None:
    server = await start_emulator(EmulatorConfig(corpus=corpus(), qps=None))
    out = tmp_path / "out"
    args, env = key_args("file", sentinel, tmp_path)
    argv = ["crawl", "crash me", "--out", str(out), "--endpoint", server.base_url, *args, *COMMON]
    crashed = await run_cli(
        argv, logs=logs, env=child_env({**env, "BINGCRAWL_CRASH_AT": "downloaded:4"})
    )
    assert crashed.code == -9, crashed.describe()
    assert (out / "checkpoint.sqlite-wal").exists()  # the crash left the WAL to grep too
    assert_no_leak(sentinel, [out], [crashed])
    resumed = await run_cli(argv, logs=logs, env=child_env(env))
    assert resumed.code == 0, resumed.describe()
    assert_no_leak(sentinel, [out], [resumed])


async def test_a_misplaced_key_flag_is_not_echoed(
    sentinel: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(run_main, ["status", str(tmp_path), f"--key={sentinel}"])
    printed = capfd.readouterr()
    assert code == 2
    assert not leaks(sentinel, [], {"stdout": printed.out, "stderr": printed.err})


def test_control_the_grep_finds_a_planted_key(sentinel: str, tmp_path: Path) -> None:
    """Control: the detector used above does find the key where a leak would put it."""
    import sqlite3

    import pyarrow as pa
    import pyarrow.parquet as pq

    db = tmp_path / "leaky.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (error TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (f"HTTP 401 for {sentinel}",))
    conn.commit()
    pq.write_table(pa.table({"x": [f"k={quote(sentinel, safe='')}"] * 100}), tmp_path / "l.parquet")
    lowered = quote(sentinel).replace("%2B", "%2b").replace("%3D", "%3d")
    try:
        found = leaks(
            sentinel,
            [db, Path(f"{db}-wal"), tmp_path / "l.parquet"],
            {"stderr": f"GET /?key={lowered}", "clean": "nothing"},
        )
    finally:
        conn.close()
    assert set(found) == {f"{db}-wal", str(tmp_path / "l.parquet"), "stderr"}
