"""The small form of the harness, end to end: every scenario kind at tiny sizes.

One run (``--quick``, bingcrawl and the two baselines) is shared by the tests of this module;
they check the shape of the result and that every figure is sane - present, positive,
consistent with the others - never a timing threshold. The peers (img2dataset, icrawler) have
their own run below: it is the slow part (each imports pandas, OpenCV and albumentations in
several processes), and on a machine without the ``bench-peers`` extra it checks that they
show up as skipped rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import SCENARIOS, Options, run_benchmarks
from benchmarks.report import TARGETS, render_table
from benchmarks.tools import PEER_MODULES, peer_available

REPO = Path(__file__).resolve().parents[2]


OWN = ("bingcrawl", "webdataset", "search", "bare", "seed")
PEERS = ("img2dataset", "icrawler")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_benchmarks(Options.quick(tools=OWN), workdir=tmp_path_factory.mktemp("bench"))


def rows(result: dict[str, Any], **match: object) -> list[dict[str, Any]]:
    return [r for r in result["rows"] if all(r[k] == v for k, v in match.items())]


def test_every_scenario_and_tool_has_rows(result: dict[str, Any]) -> None:
    assert {r["scenario"] for r in result["rows"]} == set(SCENARIOS)
    tools = {r["tool"] for r in rows(result, scenario="main")}
    assert tools == {
        "bingcrawl", "bingcrawl (webdataset)", "bingcrawl (search API)", "bare aiohttp loop",
        "seed blog loop",
    }  # fmt: skip
    json.dumps(result)  # the --json payload


def test_every_run_succeeds(result: dict[str, Any]) -> None:
    for r in result["rows"]:
        assert r["status"] == "ok", (r["tool"], r["extra"].get("stderr_tail"))


def test_peers_run_on_the_same_urls_or_are_skipped(tmp_path: Path) -> None:
    result = run_benchmarks(Options.quick(scenarios=("main",), tools=PEERS), workdir=tmp_path)
    got = {r["tool"]: r for r in result["rows"]}
    assert set(got) == {"img2dataset", "img2dataset (no reencode)", "icrawler"}
    for tool, r in got.items():
        kind = tool.split()[0]
        if not peer_available(sys.executable, kind):
            assert r["status"] == f"skipped: {PEER_MODULES[kind]} not installed (bench-peers extra)"
            continue
        assert r["status"] == "ok", (tool, r["extra"].get("stderr_tail"))
        assert r["stored"] == r["urls"] == Options.quick().results_per_query
        assert r["images_per_s"] > 0
        assert r["cpu_s_per_image"] > 0
        assert r["peak_rss_mb"] > 10
        assert r["loop_lag_p99_ms"] is None  # thread pools: no event loop to measure
    if got["img2dataset"]["status"] == "ok":
        assert got["img2dataset"]["children_peak_rss_mb"] > 10  # its worker processes
        assert got["img2dataset (no reencode)"]["extra"]["disable_all_reencoding"] is True


def test_figures_are_sane(result: dict[str, Any]) -> None:
    for r in result["rows"]:
        if r["status"] != "ok":
            continue
        where = (r["scenario"], r["point"], r["tool"])
        if r["scenario"] == "memory":
            # Pool pictures repeat across queries: some candidates are duplicates.
            assert 0 < r["stored"] <= r["urls"], where
        elif r["scenario"] == "network":
            # Hosts that fail, hang or drip: not every URL gives an image.
            assert 0 < r["stored"] <= r["urls"], where
            assert 0 < r["t99_s"] <= r["wall_s"], where
            assert r["tail_s"] == pytest.approx(r["wall_s"] - r["t99_s"], abs=0.01), where
            # The rate of the whole run, tail included; the steady one is kept beside it.
            assert r["images_per_s"] == r["wall_images_per_s"], where
            assert r["extra"]["steady_images_per_s"] is None or (
                r["extra"]["steady_images_per_s"] > 0
            ), where
        else:
            assert r["stored"] == r["urls"], where  # no faults, no duplicates: all stored
        assert r["images_per_s"] > 0, where
        assert r["wall_images_per_s"] > 0, where
        assert r["cpu_s_per_image"] > 0, where
        assert r["emulator_cpu_s_per_image"] >= 0, where
        assert r["peak_rss_mb"] > 10, where
        assert r["time_to_first_image_s"] > 0, where
        assert r["time_to_first_image_s"] < r["wall_s"], where
        if r["tool"].startswith("bingcrawl") or r["tool"] == "bare aiohttp loop":
            assert r["loop_lag_p99_ms"] is not None, where
            assert r["loop_lag_p99_ms"] >= 0, where
        if r["tool"].startswith("bingcrawl"):
            assert r["children_peak_rss_mb"] > 10, where  # the hash pool's workers
            assert r["tree_peak_rss_mb"] >= r["peak_rss_mb"], where
        if r["tool"] == "bingcrawl (search API)":
            assert r["api_calls"] >= 1, where
            assert r["api_calls_per_s"] > 0, where
            assert r["qps"] > 0, where
        elif r["tool"] in ("bingcrawl", "bingcrawl (webdataset)"):
            assert r["api_calls"] is None, where  # --urls: no API call at all


def test_the_network_scenario_spreads_its_urls_over_many_host_names(
    result: dict[str, Any],
) -> None:
    options = Options.quick()
    tools = {r["tool"] for r in rows(result, scenario="network", point="target")}
    assert tools == {"bingcrawl", "bingcrawl (webdataset)", "bare aiohttp loop"}
    [bc] = rows(result, scenario="network", tool="bingcrawl")
    assert bc["settings"] == f"c={options.network_concurrency}, per host 8"
    assert bc["urls"] == options.network_queries * options.results_per_query


def test_seed_loop_runs_on_a_sample(result: dict[str, Any]) -> None:
    [seed] = rows(result, tool="seed blog loop")
    options = Options.quick()
    assert seed["urls"] == seed["stored"] == options.seed_sample
    assert seed["extra"]["pages"] >= 1


def test_identical_curve_points_reuse_one_run(result: dict[str, Any]) -> None:
    [main] = rows(result, scenario="main", tool="bingcrawl")
    [size30] = rows(result, scenario="size", point="30k", tool="bingcrawl")
    assert size30["extra"].get("reused") is True
    assert size30["images_per_s"] == main["images_per_s"]


def test_summary_ratios_and_targets(result: dict[str, Any]) -> None:
    summary = result["summary"]
    entries = summary["entries"]
    bare = [e for e in entries if e["tool"] == "bare aiohttp loop" and e["images_per_s"]]
    assert bare
    assert all(e["x_bare"] == 1.0 for e in bare)
    [bc] = [e for e in entries if e["scenario"] == "main" and e["tool"] == "bingcrawl"]
    assert bc["x_bare"] == pytest.approx(bc["images_per_s"] / bare[0]["images_per_s"])
    assert [t["target"] for t in summary["targets"]] == [t[0] for t in TARGETS]
    assert len(summary["memory"]["points"]) == 2
    assert "peak_rss_growth" in summary["memory"]
    assert result["options"]["is_quick"] is True


def test_table_lists_every_entry(result: dict[str, Any]) -> None:
    table = render_table(result)
    for e in result["summary"]["entries"]:
        assert any(e["tool"] in line and e["scenario"] in line for line in table.splitlines())
    assert "targets (--quick: tiny sizes, not a measurement):" in table


def test_command_line_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--scenarios", "main",
         "--tools", "bare,seed", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:3] == ["scenario", "point", "tool"]
    assert "bare aiohttp loop" in proc.stdout
    assert "seed blog loop" in proc.stdout
    data = json.loads(out.read_text())
    assert {r["tool"] for r in data["rows"]} == {"bare aiohttp loop", "seed blog loop"}
    assert data["command"].startswith("python -m benchmarks --quick")
