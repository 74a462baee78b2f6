"""The harness's plan: which jobs each scenario expands into, and the command line."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import build_parser, options_from
from benchmarks.harness import SCENARIOS, TOOLS, Options, plan
from bingcrawl.errors import ConfigError


def test_quick_plan_covers_every_scenario_and_tool() -> None:
    jobs = plan(Options.quick())
    assert {j.scenario for j in jobs} == set(SCENARIOS)
    main = [j for j in jobs if j.scenario == "main"]
    names = {j.tool.name for j in main}
    assert names == {
        "bingcrawl",
        "bingcrawl (webdataset)",
        "bingcrawl (search API)",
        "bingcrawl (asyncio loop)",
        "bingcrawl (whole dedup)",
        "bingcrawl (no etiquette)",
        "bare aiohttp loop",
        "img2dataset",
        "img2dataset (no reencode)",
        "icrawler",
        "seed blog loop",
    }
    # Every tool of the main scenario reads the same URLs from the same emulator: JPEGs only,
    # as the targets assume.
    assert len({(j.emulator, j.queries) for j in main}) == 1
    assert {j.emulator.format_mix for j in jobs} == {"jpeg"}
    asyncio_run = next(j for j in main if j.tool.event_loop == "asyncio")
    assert asyncio_run.tool.kind == "bingcrawl"
    whole_run = next(j for j in main if j.tool.near_dup_method == "whole")
    assert whole_run.tool.kind == "bingcrawl"
    assert {j.point for j in jobs if j.scenario == "latency"} == {"0 ms", "50 ms"}
    assert {j.point for j in jobs if j.scenario == "size"} == {"30k", "200k"}
    memory = [j for j in jobs if j.scenario == "memory"]
    assert [j.queries for j in memory] == [1, 2]
    assert all(j.tool.source == "search" and j.emulator.unique_share < 1 for j in memory)


def test_the_network_plan_tunes_img2dataset_and_runs_bingcrawl_politely() -> None:
    options = Options(scenarios=("network",))
    jobs = plan(options)
    assert {j.scenario for j in jobs} == {"network"}
    assert {j.hosts for j in jobs} == {options.network_hosts}
    assert len({(j.emulator, j.queries) for j in jobs}) == 1  # the same URLs for every tool
    [emulator] = {j.emulator for j in jobs}
    assert (emulator.network, emulator.image_size, emulator.image_latency) == ("web", "web", 0.0)
    tuning = [j for j in jobs if j.tune]
    assert [j.tool.concurrency for j in tuning] == list(options.network_img2dataset_threads)
    assert {(j.tool.kind, j.tool.variant, j.tool.timeout) for j in tuning} == {
        ("img2dataset", "noreencode", options.network_img2dataset_timeout)
    }
    targets = [j for j in jobs if not j.tune]
    assert {j.repeat for j in targets} == {0, 1, 2}
    bingcrawl = [j.tool for j in targets if j.tool.kind == "bingcrawl"]
    assert {(t.per_host, t.retries, t.concurrency) for t in bingcrawl} == {
        (8, None, options.network_concurrency)
    }
    assert {t.variant for t in bingcrawl} == {"", "webdataset"}


def test_full_plan_tunes_peers_then_repeats_the_target() -> None:
    options = Options(scenarios=("main",))
    jobs = plan(options)
    tuning = [j for j in jobs if j.tune]
    assert sorted({j.tool.concurrency for j in tuning if j.tool.kind == "img2dataset"}) == list(
        options.img2dataset_threads
    )
    assert {j.tool.concurrency for j in tuning if j.tool.kind == "icrawler"} == set(
        options.icrawler_threads
    )
    # Tuning comes first: the repeats use the best thread count it found.
    assert jobs.index(tuning[-1]) < min(jobs.index(j) for j in jobs if not j.tune)
    assert {j.repeat for j in jobs if not j.tune} == {0, 1, 2}
    assert all(len(j.emulator.args()) > 0 for j in jobs)


def test_curve_points_equal_to_another_run_are_reused() -> None:
    jobs = plan(Options())
    keys = [j.reuse_key() for j in jobs if j.scenario != "main"]
    # c=128 (concurrency), 50 ms (latency) and 30k (size) are the same bingcrawl run.
    bingcrawl_keys = [k for k in keys if k is not None and k[-1].kind == "bingcrawl"]
    assert len(bingcrawl_keys) - len(set(bingcrawl_keys)) == 2
    assert all(j.reuse_key() is None for j in jobs if j.scenario == "main" and j.repeat > 0)


def test_only_the_selected_tools_and_scenarios() -> None:
    jobs = plan(Options.quick(scenarios=("main", "memory"), tools=("bare", "seed")))
    assert {j.tool.kind for j in jobs} == {"bare", "seed"}
    assert {j.scenario for j in jobs} == {"main"}  # memory needs bingcrawl


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenarios"):
        Options(scenarios=("main", "speed"))
    with pytest.raises(ValueError, match="unknown tools"):
        Options(tools=("wget",))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--scenarios", "main,speed"])
    with pytest.raises(ConfigError) as info:
        Options(format_mix="tiff=1")
    assert info.value.option == "--format-mix"


def test_command_line_to_options() -> None:
    args = build_parser().parse_args(
        ["--quick", "--scenarios", "main,size", "--tools", "bingcrawl,bare", "--urls", "100",
         "--img2dataset-threads", "8,16", "--repeats", "2", "--format-mix", "jpeg=0.9,png=0.1"]
    )  # fmt: skip
    options = options_from(args)
    assert options.is_quick
    assert options.scenarios == ("main", "size")
    assert options.tools == ("bingcrawl", "bare")
    assert options.main_queries * options.results_per_query >= 100
    assert options.img2dataset_threads == (8, 16)
    assert options.repeats == 2
    assert {j.emulator.format_mix for j in plan(options)} == {"jpeg=0.9,png=0.1"}
    assert set(TOOLS) >= set(Options().tools)
