"""The Python API (issue 14): one call, the CLI's validation, the report on early stops, and
the README's examples, run as they are written."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import bingcrawl
from bingcrawl.cli import main
from bingcrawl.emulator import EmulatorConfig
from bingcrawl.emulator.corpus import CorpusConfig
from bingcrawl.emulator.server import emulator_process
from tests.support.emulator import StartEmulator

ROOT = Path(__file__).resolve().parents[2]


def readme_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return [str(block) for block in re.findall(r"```python\n(.*?)```", section, re.S)]


@pytest.mark.parametrize("number", [0, 1, 2])
def test_the_readme_examples_run(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write to ./data
    code = readme_examples()[number]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"README:python-api-{number}", "exec"), {"__name__": "__main__"})
    last = printed.getvalue().splitlines()[-1].split()
    assert last[0] == "completed"
    manifest = (tmp_path / "data" / "manifest.jsonl").read_text().splitlines()
    if number == 0:
        stored, in_dataset, exit_code = (int(n) for n in last[1:])
        assert stored == in_dataset == len(manifest) > 0
        assert exit_code == 0
        assert {Path(json.loads(m)["path"]).suffix for m in manifest} == {".jpg"}
        assert "Status.STORED" in printed.getvalue() or "stored" in printed.getvalue()
    elif number == 1:
        assert int(last[1]) == 5
        assert int(last[2]) >= 5  # every candidate's outcome, stored or not
    else:
        stored = int(last[1])
        printed_paths = [line.split()[0] for line in printed.getvalue().splitlines()[:-1]]
        assert 0 < stored == len(printed_paths) == len(manifest) <= 8
        assert all(p.startswith("images/owls/") for p in printed_paths)
        assert all((tmp_path / "data" / p).is_file() for p in printed_paths)


def corpus() -> CorpusConfig:
    return CorpusConfig(results_per_query=30, fault_rate=0.0)


OPTIONS: dict[str, Any] = {
    "key": "k", "allow_network": ["127.0.0.1/32"], "limit": 8, "license": "public",
    "hash_workers": 0, "per_host": 4, "near_dup_distance": 4, "convert_to": "png",
}  # fmt: skip


def flags(options: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for name, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            argv += [f"--{name.replace('_', '-')}", str(item)]
    return argv


async def test_python_and_the_command_line_give_the_same_dataset(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(EmulatorConfig(qps=None, corpus=corpus()))
    queries = ["red panda", "owl"]
    report = await asyncio.to_thread(
        bingcrawl.crawl, queries, tmp_path / "py", endpoint=server.base_url, **OPTIONS
    )
    argv = ["crawl", *queries, "--out", str(tmp_path / "cli"), "--endpoint", server.base_url]
    argv += [*flags(OPTIONS), "--no-progress", "--log-level", "ERROR"]
    assert await asyncio.to_thread(main, argv, {}) == 0
    assert (report.reason, report.exit_code) == ("completed", 0)
    assert report.stored > 0

    def dataset(out: Path) -> list[tuple[str, str, str]]:
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        return sorted((r["label"], r["sha256"], r["path"]) for r in rows)

    assert dataset(tmp_path / "py") == dataset(tmp_path / "cli")
    assert len(dataset(tmp_path / "py")) == report.stored
    fingerprints = []
    for d in ("py", "cli"):  # the options that shape the result set, as each run stored them
        conn = sqlite3.connect(tmp_path / d / "checkpoint.sqlite")
        sql = "SELECT value FROM meta WHERE key = 'fingerprint'"
        fingerprints.append(conn.execute(sql).fetchone())
        conn.close()
    assert fingerprints[0] == fingerprints[1] is not None


def test_bad_options_fail_when_the_config_is_built(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(bingcrawl.ConfigError, match="--license: invalid value 'Bogus'"):
        bingcrawl.make_config(["cats"], out, key="k", license="Bogus")
    with pytest.raises(bingcrawl.ConfigError, match="did you mean license"):
        bingcrawl.make_config(["cats"], out, key="k", lisence="Public")
    with pytest.raises(bingcrawl.ConfigError, match="--qps"):
        bingcrawl.make_config(["cats"], out, key="k", qps="fast")
    with pytest.raises(bingcrawl.ConfigError, match="--convert-to"):
        bingcrawl.make_config(["cats"], out, key="k", convert_to="tiff")
    with pytest.raises(bingcrawl.ConfigError, match="--key"):
        bingcrawl.make_config(["cats"], out, env={})
    assert not out.exists()  # nothing created for a refused config
    config = bingcrawl.make_config(["cats"], out / "deep" / "er", key="k")
    assert config.out == out / "deep" / "er"
    assert not out.exists()  # nor for a good one: the crawl creates it when it opens
    (tmp_path / "afile").write_text("x")
    with pytest.raises(bingcrawl.ConfigError, match=r"--out: cannot create .* is not a directory"):
        bingcrawl.make_config(["cats"], tmp_path / "afile" / "sub", key="k")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    crop = bingcrawl.make_config(out=out, seed_images=seeds, crop=(0, 0, 0.5, 0.5), key="k").crop
    assert crop == (0.0, 0.0, 0.5, 0.5)  # a tuple from Python, as the CLI's "0,0,0.5,0.5"
    with pytest.raises(bingcrawl.ConfigError, match="--crop"):
        bingcrawl.make_config(out=out, seed_images=seeds, crop=(0, 0, 0.5), key="k")
    # The dataclass itself validates too: a bad filter never reaches run().
    with pytest.raises(bingcrawl.ConfigError, match="--license"):
        bingcrawl.CrawlConfig(out=out, filters=(("license", "Bogus"),))


async def test_an_early_stop_is_a_report_with_its_reason(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(EmulatorConfig(qps=None, corpus=corpus()))
    seen: list[bingcrawl.Outcome] = []
    report = await asyncio.to_thread(
        bingcrawl.crawl, ["one", "two"], tmp_path, endpoint=server.base_url,
        max_api_calls=1, on_outcome=seen.append, count=10,
        **{**OPTIONS, "limit": 100},
    )  # fmt: skip
    assert report.reason == "quota"
    assert report.quota_exhausted
    assert isinstance(report.error, bingcrawl.QuotaExceededError)
    assert report.exit_code == 4
    assert report.api_calls == 1
    assert report.stored == sum(o.status.value == "stored" for o in seen) > 0


async def test_crawl_refuses_to_run_inside_an_event_loop(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Crawler"):
        bingcrawl.crawl(["cats"], tmp_path, key="k")


def test_the_root_exports_the_api() -> None:
    for name in ("crawl", "make_config", "Crawler", "CrawlConfig", "QuerySpec", "CrawlReport"):
        assert name in bingcrawl.__all__
        assert getattr(bingcrawl, name) is not None
    assert issubclass(bingcrawl.StorageError, bingcrawl.BingCrawlError)
    with pytest.raises(AttributeError):
        bingcrawl.nothing_here  # noqa: B018


def test_emulator_process_is_usable_from_plain_code() -> None:
    with emulator_process(["--results-per-query", "5"]) as endpoint:
        assert endpoint.startswith("http://127.0.0.1:")
