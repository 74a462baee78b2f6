"""The scale benchmark end to end at a tiny size: 2,000 synthetic candidates, 200 new images.

One run of the whole scenario (build, emulator, crawl, status, export, SIGTERM) is shared by
the tests of this module; they check behaviour only - every figure reported, the crawl
resumed the synthetic checkpoint instead of refusing it, SIGTERM gave 143, the export has
a line per stored image, the build is reused and restored - never a timing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scale_bench import (
    BUILDER_VERSION,
    CRAWL_DIR,
    LIMIT,
    MARKER,
    PRISTINE,
    Settings,
    crawl_config,
    ensure_built,
    main,
    render_table,
    restore,
    run_scale,
    size_dir,
    summarize,
)
from bingcrawl.store import CHECKPOINT_NAME, Checkpoint

N = 2000
SETTINGS = Settings(new_images=200, sigterm_queries=8, sigterm_after=0.2, timeout=120.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale")


@pytest.fixture(scope="module")
def result(root: Path) -> dict[str, Any]:
    return run_scale([N], root, SETTINGS)


@pytest.fixture(scope="module")
def row(result: dict[str, Any]) -> dict[str, Any]:
    [only] = result["rows"]
    assert isinstance(only, dict)
    return only


def test_build_matches_the_pattern_and_the_crawls_fingerprint(
    root: Path, row: dict[str, Any]
) -> None:
    marker = json.loads((size_dir(root, N) / MARKER).read_text())
    assert marker["builder_version"] == BUILDER_VERSION
    assert marker["schema_version"] >= 8
    assert marker["bingcrawl"]  # the commit the rows were written by
    built = marker["build"]
    assert built["candidates"] == N
    assert built["queries"] == 20
    assert (built["stored"], built["duplicates"], built["failed"], built["pending"]) == (
        N // 2, N * 15 // 100, N * 20 // 100, N * 15 // 100,
    )  # fmt: skip
    assert built["files"] == built["manifest_lines"] == built["stored"]
    assert built["rows_per_s"] > 0
    out = size_dir(root, N) / CRAWL_DIR

    async def stored_fingerprint() -> dict[str, object] | None:
        async with await Checkpoint.open(out, read_only=True) as cp:
            return await cp.fingerprint()

    expected = json.loads(json.dumps(crawl_config(out).fingerprint()))
    assert asyncio.run(stored_fingerprint()) == expected
    assert "near_dup_method" in expected  # what a fresh crawl resolves to, stored


def test_every_figure_is_reported(result: dict[str, Any], row: dict[str, Any]) -> None:
    for key in ("build_s", "build_rows_per_s", "db_bytes", "db_bytes_per_candidate",
                "manifest_bytes_per_stored", "dedup_bytes_per_image", "dedup_rebuild_s",
                "dedup_lookup_us", "status_s", "export_s", "export_bytes", "sigterm_s",
                "sigterm_first_image_s"):  # fmt: skip
        assert row[key] is not None, key
        assert row[key] > 0, key
    crawl = row["crawl"]
    for key in ("startup_s", "images_per_s", "peak_rss_mb", "wall_s"):
        assert crawl[key] is not None, key
        assert crawl[key] > 0, key
    assert crawl["startup_s"] < crawl["wall_s"]
    tables = row["dbstat_bytes_per_candidate"]
    assert {"candidates", "sqlite_autoindex_candidates_1", "idx_candidates_stored_hash"} <= set(
        tables
    )
    assert sum(tables.values()) == pytest.approx(row["db_bytes_per_candidate"], rel=0.01)
    json.dumps(result)  # the --json payload
    assert result["summary"] == {"ratios": {}, "flags": [], "failed_checks": []}


def test_the_crawl_resumed_the_synthetic_checkpoint(row: dict[str, Any]) -> None:
    crawl = row["crawl"]
    assert crawl["exit"] == 0, crawl["stderr_tail"]
    assert crawl["stored_before"] == row["stored_built"] == N // 2
    assert crawl["new_stored"] == crawl["run"]["stored"]
    assert crawl["run"]["stored"] + crawl["run"]["duplicates"] == SETTINGS.new_queries * LIMIT
    # The synthetic queries already hold their limit: what they left pending is skipped.
    assert row["status_skipped"] == row["pending_built"] == N * 15 // 100
    assert crawl["run"]["api_calls"] == SETTINGS.new_queries
    assert all(row["checks"].values()), row["checks"]


def test_status_and_export_count_every_stored_image(row: dict[str, Any]) -> None:
    stored = row["stored_built"] + row["crawl"]["new_stored"]
    assert row["status_exit"] == row["export_exit"] == 0
    assert row["status_stored"] == stored
    assert row["export_lines"] == stored


def test_sigterm_exits_143_after_storing(row: dict[str, Any]) -> None:
    assert row["sigterm_exit"] == 143
    assert row["sigterm_stored_before_signal"] > 0


def test_build_is_reused_and_the_crawl_folder_restored(root: Path, row: dict[str, Any]) -> None:
    where = size_dir(root, N)
    marker = json.loads((where / MARKER).read_text())
    assert ensure_built(root, N) == marker  # reused, not built again
    out = where / CRAWL_DIR
    assert any(p.name.startswith("bench_") for p in (out / "images").iterdir())
    restore(where, marker)
    assert (out / CHECKPOINT_NAME).read_bytes() == (where / PRISTINE).read_bytes()
    assert (out / "manifest.jsonl").stat().st_size == marker["manifest_bytes"]
    assert not any(p.name.startswith("bench_") for p in (out / "images").iterdir())
    # Another builder version's build is not reused.
    (where / MARKER).write_text(json.dumps(marker | {"builder_version": -1}))
    rebuilt = ensure_built(root, N)
    assert rebuilt["builder_version"] == BUILDER_VERSION
    assert rebuilt["build"]["candidates"] == N


def test_table_lists_the_size_and_the_breakdown(result: dict[str, Any]) -> None:
    table = render_table(result)
    assert table.splitlines()[0].split()[:2] == ["candidates", "build"]
    assert "2,000" in table
    assert "idx_candidates_stored_hash" in table


def _fake(
    n: int, images_per_s: float, startup_s: float, status_s: float, dedup_us: float = 50.0
) -> dict[str, Any]:
    return {
        "n": n, "db_bytes": n * 1000, "db_bytes_per_candidate": 1000.0, "build_s": n / 1e4,
        "status_s": status_s, "export_s": n / 1e5, "dedup_rebuild_s": n / 1e6,
        "sigterm_s": 0.5, "sigterm_exit": 143, "sigterm_first_image_s": startup_s / 2,
        "dedup_lookup_us": dedup_us, "checks": {"sigterm_143": True},
        "crawl": {"images_per_s": images_per_s, "startup_s": startup_s, "peak_rss_mb": 100.0},
    }  # fmt: skip


def test_summary_flags_slower_crawls_and_superlinear_growth() -> None:
    flat = summarize([_fake(100_000, 500, 2.0, 1.0), _fake(1_000_000, 490, 15.0, 8.0)])
    assert flat["flags"] == []
    assert flat["ratios"]["images/s (ratio)"] == {"100k->1M": 0.98}
    assert flat["ratios"]["status s (per candidate)"] == {"100k->1M": 0.8}
    bad = summarize([_fake(100_000, 500, 2.0, 1.0), _fake(1_000_000, 300, 60.0, 8.0)])
    assert any(f.startswith("images/s 100k->1M") for f in bad["flags"])
    assert any(f.startswith("start-up s grows faster than linearly") for f in bad["flags"])
    slow_dedup = summarize([_fake(100_000, 500, 2.0, 1.0), _fake(10**7, 500, 60.0, 8.0, 300.0)])
    assert any(f.startswith("deciding one picture costs 50 -> 300 us") for f in slow_dedup["flags"])
    # Seconds below the floor are not judged: fixed costs and noise, not growth.
    tiny = summarize([_fake(1000, 500, 0.2, 0.01), _fake(2000, 500, 0.3, 0.1)])
    assert tiny["flags"] == []
    three = summarize([_fake(n, 500, n / 1e5, n / 1e5) for n in (100_000, 1_000_000, 10**7)])
    assert list(three["ratios"]["start-up s (per candidate)"]) == [
        "100k->1M", "1M->10M", "100k->10M",
    ]  # fmt: skip


def test_command_line_builds_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--build-only", "--sizes", "500", "--dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == printed["candidates"] == 500
    assert (tmp_path / "500" / MARKER).exists()
