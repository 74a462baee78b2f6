"""Summaries, ratios, targets and the table, from hand-made rows (no processes)."""

from __future__ import annotations

import json

import pytest

from benchmarks.report import TARGETS, render_markdown, render_table, summarize
from benchmarks.tools import Row


def row(tool: str, rate: float | None, *, scenario: str = "main", point: str = "target",
        settings: str = "c=128", repeat: int = 0, **kw: object) -> Row:  # fmt: skip
    r = Row(scenario, point, tool, settings, urls=1000, repeat=repeat, stored=1000)
    r.images_per_s = rate
    for key, value in kw.items():
        setattr(r, key, value)
    return r


def entry(summary: dict[str, object], tool: str, point: str = "target") -> dict[str, object]:
    entries = summary["entries"]
    assert isinstance(entries, list)
    [found] = [e for e in entries if e["tool"] == tool and e["point"] == point]
    return found  # type: ignore[no-any-return]


def test_medians_over_repeats_and_ratios_to_each_reference() -> None:
    rows = [
        row("bingcrawl", r, repeat=i, loop_lag_p99_ms=lag, peak_rss_mb=200.0)
        for i, (r, lag) in enumerate([(900.0, 10.0), (700.0, 30.0), (800.0, 20.0)])
    ]
    rows += [row("img2dataset", 250.0, settings="2 proc x 64 thr")]
    # A slower img2dataset setting in the same group: the best one is the reference.
    rows += [row("img2dataset", 100.0, settings="2 proc x 16 thr")]
    rows += [row("img2dataset (no reencode)", 400.0), row("bare aiohttp loop", 1000.0)]
    rows += [row("seed blog loop", 16.0, settings="sequential, sample 100")]
    summary = summarize(rows)
    bc = entry(summary, "bingcrawl")
    assert bc["runs"] == 3
    assert bc["images_per_s"] == 800.0
    assert bc["images_per_s_all"] == [900.0, 700.0, 800.0]
    assert bc["loop_lag_p99_ms"] == 20.0
    assert bc["x_img2dataset"] == pytest.approx(800 / 250)
    assert bc["x_img2dataset_noreencode"] == pytest.approx(2.0)
    assert bc["x_bare"] == pytest.approx(0.8)
    assert bc["x_seed"] == pytest.approx(50.0)
    assert entry(summary, "bare aiohttp loop")["x_bare"] == 1.0
    targets = {t["target"]: t for t in summary["targets"]}
    assert len(targets) == len(TARGETS)
    assert targets["images/s vs img2dataset (resize_mode=no)"]["met"] is True
    assert targets["images/s vs bare aiohttp loop"]["met"] is True
    assert targets["images/s vs seed blog loop"]["met"] is True
    assert targets["event-loop lag p99 ms"]["met"] is True
    # Nothing measured these: they say so instead of passing or failing.
    assert targets["images/s with webdataset output"]["met"] is None
    assert targets["RSS growth 10k -> 100k candidates"]["met"] is None
    json.dumps(summary)  # JSON-ready


def test_ratios_stay_within_their_group() -> None:
    rows = [
        row("bingcrawl", 500.0, scenario="latency", point="0 ms"),
        row("bare aiohttp loop", 1000.0, scenario="latency", point="0 ms"),
        row("bingcrawl", 300.0, scenario="latency", point="200 ms"),
        row("bare aiohttp loop", 400.0, scenario="latency", point="200 ms"),
    ]
    summary = summarize(rows)
    assert entry(summary, "bingcrawl", "0 ms")["x_bare"] == pytest.approx(0.5)
    assert entry(summary, "bingcrawl", "200 ms")["x_bare"] == pytest.approx(0.75)
    assert entry(summary, "bingcrawl", "0 ms")["x_img2dataset"] is None


def test_failed_and_skipped_runs_are_not_figures() -> None:
    failed = row("bingcrawl", 900.0, repeat=1)
    failed.status = "failed: exit 1"
    skipped = row("icrawler", None)
    skipped.status = "skipped: icrawler not installed (bench-peers extra)"
    summary = summarize([row("bingcrawl", 600.0), failed, skipped])
    assert entry(summary, "bingcrawl")["images_per_s"] == 600.0
    assert entry(summary, "bingcrawl")["runs"] == 1
    icrawler = entry(summary, "icrawler")
    assert icrawler["runs"] == 0
    assert str(icrawler["status"]).startswith("skipped")
    table = render_table({"summary": summary, "options": {}})
    assert "skipped: icrawler not installed" in table


def test_memory_growth_and_rss_target() -> None:
    rows = [
        row("bingcrawl (search API)", 500.0, scenario="memory", point="10k",
            peak_rss_mb=200.0, rss_end_mb=180.0),
        row("bingcrawl (search API)", 500.0, scenario="memory", point="100k",
            peak_rss_mb=230.0, rss_end_mb=189.0),
        row("bingcrawl", 900.0, scenario="concurrency", point="c=256", peak_rss_mb=310.0),
    ]  # fmt: skip
    rows[0].urls, rows[1].urls = 10_000, 100_000
    summary = summarize(rows)
    memory = summary["memory"]
    assert memory["peak_rss_growth"] == pytest.approx(0.15)
    assert memory["end_rss_growth"] == pytest.approx(0.05)
    assert [p["urls"] for p in memory["points"]] == [10_000, 100_000]
    targets = {t["target"]: t for t in summary["targets"]}
    assert targets["RSS growth 10k -> 100k candidates"]["met"] is False
    assert targets["peak RSS MB at concurrency 256"]["value"] == 310.0
    assert targets["peak RSS MB at concurrency 256"]["met"] is False


def test_table_has_a_line_per_entry_and_every_target() -> None:
    rows = [row("bingcrawl", 800.0, peak_rss_mb=150.0, children_peak_rss_mb=80.0,
                cpu_s_per_image=0.0021), row("bare aiohttp loop", 1000.0)]  # fmt: skip
    result = {"summary": summarize(rows), "options": {"is_quick": True}}
    table = render_table(result)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["scenario", "point", "tool"]
    assert any("bingcrawl" in line and "0.80x" in line and "150 (+80)" in line for line in lines)
    assert any("2.10" in line for line in lines if "bingcrawl" in line)  # CPU ms per image
    assert "not a measurement" in table
    for name, *_ in TARGETS:
        assert name in table


def test_markdown_has_the_main_table_curves_memory_and_targets() -> None:
    rows = [
        row(
            "bingcrawl", 800.0, peak_rss_mb=150.0, children_peak_rss_mb=80.0, cpu_s_per_image=0.002
        ),
        row("img2dataset", 250.0, settings="2 proc x 64 thr"),
    ]
    rows += [
        row("bingcrawl", rate, scenario="concurrency", point=f"c={c}")
        for c, rate in ((64, 400.0), (8, 100.0), (512, 700.0))
    ]
    rows += [row("bingcrawl (search API)", 100.0, scenario="memory", point=p, peak_rss_mb=mb,
                 rss_end_mb=mb) for p, mb in (("10k", 100.0), ("100k", 105.0))]  # fmt: skip
    rows[-2].urls, rows[-1].urls = 10_000, 100_000
    text = render_markdown({"summary": summarize(rows), "command": "python -m benchmarks"})
    assert text.startswith("`python -m benchmarks`")
    assert "| bingcrawl | c=128 | 800 | 3.20x |" in text
    assert "| concurrency | c=8 | c=64 | c=512 |" in text  # points in numeric order
    assert "| bingcrawl images/s | 100 | 400 | 700 |" in text
    assert "| 100,000 |" in text
    assert "| RSS growth 10k -> 100k candidates | 0.05 | <= 0.1 | yes |" in text


def test_the_network_scenario_counts_the_tail_and_compares_to_the_best_peer_mode() -> None:
    net = {"scenario": "network"}
    rows = [
        row("bingcrawl", 300.0, t99_s=20.0, tail_s=16.0, loop_lag_p99_ms=12.0, **net),
        row("img2dataset (no reencode)", 100.0, t99_s=40.0, tail_s=80.0, **net),
        row("img2dataset", 120.0, **net),
        # a tuning run is not the reference, however fast
        row("img2dataset (no reencode)", 900.0, point="tuning", **net),
    ]
    summary = summarize(rows)
    bc = entry(summary, "bingcrawl")
    assert bc["x_img2dataset_best"] == pytest.approx(300 / 120)
    assert (bc["t99_s"], bc["tail_s"]) == (20.0, 16.0)
    targets = {t["target"]: t for t in summary["targets"]}
    assert targets["network: images/s vs img2dataset (best)"]["met"] is True
    assert targets["network: seconds after 99 % of images"]["value"] == 16.0
    assert targets["network: seconds after 99 % of images"]["met"] is True
    table = render_markdown({"summary": summary})
    assert "| bingcrawl | c=128 | 1,000 / 1,000 | 300 | 2.50x | 20.0 | 16.0 |" in table
    assert "900" not in table  # tuning rows stay out of the tables
