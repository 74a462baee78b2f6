"""The command line: options, exit codes, signals, status and export."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest

from bingcrawl.cli import main
from bingcrawl.config import QuerySpec, parse_queries_file, safe_label
from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.corpus import CorpusConfig
from bingcrawl.emulator.imagehost import ImageHostConfig
from bingcrawl.errors import ConfigError
from tests.support.emulator import StartEmulator

FAST = [
    "--allow-network", "127.0.0.1/32", "--no-progress", "--hash-workers", "0",
    "--timeout", "2", "--retries", "1", "--log-level", "WARNING",
]  # fmt: skip


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> EmulatorServer:
    return await start_emulator(
        EmulatorConfig(qps=None, corpus=CorpusConfig(results_per_query=40, fault_rate=0.0))
    )


def run_main(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run the CLI in a thread (its asyncio.run needs a loop of its own)."""
    return main(argv, env=env or {})


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--qps", "0"], "--qps"),
        (["--limit", "0"], "--limit"),
        (["--count", "151"], "--count"),
        (["--image-type", "Bogus"], "--image-type"),
        (["--license", "free"], "--license"),
        (["--safe-search", "none"], "--safe-search"),
        (["--mkt", "xx-YY"], "--mkt"),
        (["--min-width", "-5"], "--min-width"),
        (["--freshness", "2020-13-01..2021-01-01"], "--freshness"),
        (["--allow-network", "not-a-cidr"], "--allow-network"),
        (["--concurrency", "0"], "--concurrency"),
        (["--near-dup-distance", "99"], "--near-dup-distance"),
        (["--max-bytes", "0"], "--max-bytes"),
        (["--event-loop", "trio"], "--event-loop"),
    ],
)
async def test_bad_option_exits_2_naming_it_before_any_request(
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    option: str,
) -> None:
    args = [
        "crawl",
        "cats",
        "--out",
        str(tmp_path / "out"),
        "--key",
        "k",
        "--endpoint",
        emulator.base_url,
    ]
    code = await asyncio.to_thread(run_main, args + FAST + argv)
    assert code == 2
    assert option in capsys.readouterr().err
    assert emulator.state.requests() == []
    assert not (tmp_path / "out").exists()


async def test_missing_key_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(run_main, ["crawl", "cats", "--out", str(tmp_path / "o"), *FAST])
    assert code == 2
    assert "--key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


async def test_crawl_status_export_round_trip(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    queries = tmp_path / "queries.txt"
    queries.write_text("# birds\nParrots\tred parrot\n\nblue whale\n", encoding="utf-8")
    env = {
        "BING_SEARCH_V7_SUBSCRIPTION_KEY": "env-key",
        "BING_SEARCH_V7_ENDPOINT": emulator.base_url,
    }
    code = await asyncio.to_thread(
        run_main,
        ["crawl", "--queries-file", str(queries), "--out", str(out), "--limit", "5", *FAST],
        env,
    )
    assert code == 0
    assert {r.key for r in emulator.state.requests()} == {"env-key"}
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert Counter(r["label"] for r in manifest) == {"Parrots": 5, "blue_whale": 5}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["candidates"]["by_status"]["stored"] == 10
    capsys.readouterr()

    assert await asyncio.to_thread(run_main, ["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {q["label"] for q in status["queries"]} == {"Parrots", "blue_whale"}

    dest = tmp_path / "all.csv"
    assert (
        await asyncio.to_thread(
            run_main, ["export", str(out), "--all", "--format", "csv", "-o", str(dest)]
        )
        == 0
    )
    lines = dest.read_text().splitlines()
    assert len(lines) - 1 == len(
        sqlite3.connect(out / "checkpoint.sqlite").execute("SELECT id FROM candidates").fetchall()
    )


async def test_sigterm_exits_143_and_resume_repeats_no_page(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    config = EmulatorConfig(
        qps=None,
        corpus=CorpusConfig(
            results_per_query=80,
            fault_rate=0.0,
            exact_dup_rate=0.0,
            near_dup_rate=0.0,
            cross_query_rate=0.0,
        ),
        images=ImageHostConfig(latency=0.05),
    )
    server = await start_emulator(config)
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "bingcrawl", "crawl", "slow one", "slow two", "--out", str(out),
        "--key", "k", "--endpoint", server.base_url, "--count", "10", "--limit", "80",
        "--concurrency", "4", "--grace", "2", *FAST,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    db = out / "checkpoint.sqlite"
    for _ in range(600):  # wait (bounded) until the crawl has stored something
        if db.exists() and await asyncio.to_thread(_stored, db) >= 5:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the crawl stored nothing")
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 143, err.decode()
    integrity = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0]
    assert integrity == "ok"
    first_run = {
        (r.params.get("q"), r.params.get("offset")) for r in server.state.requests(status=200)
    }
    n_first = len(server.state.requests(status=200))

    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    pages = [(r.params.get("q"), r.params.get("offset")) for r in server.state.requests(status=200)]
    assert len(pages) == len(set(pages)), "a page was requested twice"
    assert pages[n_first:], "the first run left no page to resume: the test proves nothing"
    assert set(pages[n_first:]).isdisjoint(first_run)
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 160
    assert max(server.image_host.requests.values()) <= 2


def _stored(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=5)
    try:
        return int(
            conn.execute("SELECT count(*) FROM candidates WHERE status='stored'").fetchone()[0]
        )
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_queries_file_parsing() -> None:
    specs = parse_queries_file(
        ["# comment", "", "cats", "Big Cats\tlions and tigers", "  \t", "x/y"]
    )
    assert specs == [
        QuerySpec("cats", "cats"),
        QuerySpec("lions and tigers", "Big_Cats"),
        QuerySpec("x/y", "x_y"),
    ]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Aston Martin", "aston_martin"),
        ("../../etc/passwd", "etc_passwd"),
        ("日本 の 猫", "日本_の_猫"),
        ("con", "con_"),
        ("a\x00b", "a_b"),
        ("..", None),
        ("C:\\Windows", "c_windows"),
    ],
)
def test_safe_label(text: str, label: str | None) -> None:
    result = safe_label(text)
    if label is not None:
        assert result == label
    assert "/" not in result
    assert "\\" not in result
    assert "\x00" not in result
    assert result not in ("", ".", "..")


def test_query_with_unsafe_label_is_refused() -> None:
    with pytest.raises(ConfigError, match="label"):
        QuerySpec("cats", "../cats")


def test_module_entry_point_prints_version() -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "bingcrawl", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    assert out.stdout.startswith("bingcrawl ")
