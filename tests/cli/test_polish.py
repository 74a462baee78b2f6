"""Regressions of issue 13 at the command line: a bad --out, export's streams, help, errors,
the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bingcrawl.cli import build_parser, main
from bingcrawl.emulator import EmulatorConfig
from bingcrawl.emulator.corpus import CorpusConfig
from tests.support import tmpfs
from tests.support.emulator import Emulators, StartEmulator

FAST = [
    "--allow-network", "127.0.0.1/32", "--no-progress", "--hash-workers", "0",
    "--timeout", "2", "--retries", "1", "--log-level", "WARNING",
]  # fmt: skip


def run_main(argv: list[str]) -> int:
    """The CLI in a context of its own: the run id it binds must not leak into later tests."""
    return contextvars.copy_context().run(main, argv, env={})


# -- 10. a bad --out: exit 2, one line naming --out, before any request ------------------------


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only filesystem"])
async def test_a_bad_out_is_one_line_naming_it(
    start_emulator: StartEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    config = EmulatorConfig(qps=None, corpus=CorpusConfig(results_per_query=5))
    server = await start_emulator(config)
    with contextlib.ExitStack() as stack:
        afile = tmp_path / "afile"
        afile.write_text("not a directory")
        out = {
            "a file": afile,
            "under a file": afile / "sub",
            "read-only filesystem": stack.enter_context(tmpfs(tmp_path / "ro", "ro,size=1m")) / "o",
        }[case]
        argv = ["crawl", "cats", "--out", str(out), "--key", "k", "--endpoint", server.base_url]
        code = await asyncio.to_thread(run_main, argv + FAST)
        assert server.state.requests() == []
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    assert err[0].startswith("bingcrawl: error: --out: "), err


# -- 15. errors are one line, argparse errors show the usage ----------------------------------


def test_a_config_error_is_one_plain_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["crawl", "cats", "--out", "/tmp/never-made", "--key", "k", "--qps", "0"]
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert err == "bingcrawl: error: --qps: must be a positive number, got 0.0\n"


def test_a_usage_error_shows_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["crawl", "cats"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bingcrawl crawl ")
    assert err.rstrip().endswith(
        "bingcrawl crawl: error: the following arguments are required: --out"
    )
    assert "bingcrawl: bingcrawl" not in err


def _actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for path, inner in _actions(sub):
                    yield f"{name} {path}", inner
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield (action.option_strings or [action.dest])[0], action


def test_every_option_has_help_and_shows_its_default() -> None:
    parser = build_parser()
    missing = [name for name, action in _actions(parser) if not action.help]
    assert missing == []
    for name in ("crawl", "status", "export", "demo"):
        sub = parser._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
        text = sub.format_help()
        for action in sub._actions:
            default = action.default
            if action.option_strings and default not in (None, False, [], argparse.SUPPRESS):
                flag = action.option_strings[0]
                # the option's own entry (not the usage): from its line to the next option's
                shown = text.split(f"\n  {flag}", 1)[1].split("\n  -", 1)[0]
                assert "default" in shown, f"{name} {flag}: default {default!r} not shown"


def test_each_filter_lists_the_values_it_accepts() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["crawl"].format_help()  # type: ignore[union-attr]
    flat = " ".join(text.split())
    for values in ("Any, Public, Share", "Photo", "Off, Moderate, Strict", "Square, Wide, Tall"):
        assert values in flat


# -- 13. export: data on stdout, talk on stderr, never the crawl's own manifest ----------------


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crawled") / "out"

    async def crawl() -> int:
        corpus = CorpusConfig(results_per_query=20, fault_rate=0.0)
        # a module's fixture, in an event loop of its own: not the start_emulator fixture
        async with Emulators() as emulators:
            server = await emulators.start(EmulatorConfig(qps=None, corpus=corpus))
            argv = ["crawl", "cats", "--out", str(out), "--key", "k", "--limit", "6"]
            argv += ["--endpoint", server.base_url, *FAST]
            return await asyncio.to_thread(run_main, argv)

    assert asyncio.run(crawl()) == 0
    return out


def export(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bingcrawl", "export", *args], capture_output=True, check=False
    )


def test_export_to_stdout_is_data_only(crawled: Path) -> None:
    done = export(str(crawled), "--format", "csv", "-o", "-")
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("path,label,")
    assert len(lines) == 1 + 6
    assert done.stderr.decode() == "6 rows -> stdout\n"
    assert not (Path.cwd() / "-").exists()

    done = export(str(crawled), "--format", "jsonl", "-o", "-")
    assert [json.loads(line)["label"] for line in done.stdout.splitlines()] == ["cats"] * 6


def test_export_never_overwrites_the_crawl_manifest(crawled: Path) -> None:
    manifest = crawled / "manifest.jsonl"
    before = manifest.read_bytes()
    done = export(str(crawled))
    assert done.returncode == 0
    assert done.stdout == b""
    assert done.stderr.decode() == f"6 rows -> {crawled / 'export' / 'manifest.jsonl'}\n"
    assert manifest.read_bytes() == before
    done = export(str(crawled), "-o", str(manifest))
    assert done.returncode == 2
    assert done.stderr.decode().startswith("bingcrawl: error: --output: ")
    assert manifest.read_bytes() == before


def test_parquet_to_stdout_is_refused(crawled: Path) -> None:
    pytest.importorskip("pyarrow")
    done = export(str(crawled), "--format", "parquet", "-o", "-")
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"--output" in done.stderr


# -- 15. the demo says what it is, and writes webdataset too ----------------------------------


def test_demo_webdataset_says_its_faults_are_injected(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "bingcrawl", "demo", "--out", str(out), "--limit", "5",
         "--output-format", "webdataset", "--no-progress", "--log-level", "ERROR"],
        capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert "synthetic" in err
    assert "injected faults" in err
    assert f"shards:   {out / 'shards'}" in done.stdout.decode()
    assert len(list((out / "shards").glob("*.tar"))) == 3
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 15
