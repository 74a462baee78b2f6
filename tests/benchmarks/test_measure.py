"""Measuring a child process tree and an output directory, on real processes and files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks.measure import file_timeline, peak_rss_kb, process_cpu, run_measured
from benchmarks.tools import Row, settle_rate

# A child that spawns a grandchild; the grandchild holds ~60 MB and burns CPU, then both exit
# (the child reaps the grandchild, so wait4 bills the grandchild's CPU to the child).
_TREE = """
import subprocess, sys
code = "b = bytearray(60 * 1024 * 1024)\\nfor i in range(0, len(b), 4096): b[i] = 1\\n"
code += "x = 0\\nfor i in range(3_000_000): x += i\\n"
subprocess.run([sys.executable, "-c", code], check=True)
"""


def test_cpu_includes_reaped_descendants_and_memory_is_split(tmp_path: Path) -> None:
    run = run_measured([sys.executable, "-c", _TREE], stderr_path=tmp_path / "err.txt")
    assert run.returncode == 0
    assert not run.timed_out
    assert run.cpu_s > 0.05  # the grandchild's loop, billed through wait4
    assert run.children_peak_rss_mb >= 55  # the grandchild's 60 MB
    assert run.peak_rss_mb < run.children_peak_rss_mb  # the child itself stays small
    assert run.tree_peak_rss_mb >= run.children_peak_rss_mb
    assert run.samples >= 1
    assert run.wall_s > 0
    assert 1 <= len(run.rss_series) <= 61
    assert all(0 < mb <= run.peak_rss_mb + 1 for _, mb in run.rss_series)
    assert [t for t, _ in run.rss_series] == sorted(t for t, _ in run.rss_series)


def test_exit_status_and_stderr_tail(tmp_path: Path) -> None:
    code = "import sys; print('boom: bad flag', file=sys.stderr); sys.exit(3)"
    run = run_measured([sys.executable, "-c", code], stderr_path=tmp_path / "err.txt")
    assert run.returncode == 3
    assert "boom: bad flag" in run.stderr_tail


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    sleeper = "import time; time.sleep(60)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {sleeper!r}])"
    run = run_measured([sys.executable, "-c", code], timeout=1.0)
    assert run.timed_out
    assert run.returncode != 0
    assert run.wall_s < 30


def test_process_cpu_of_self_and_of_nothing() -> None:
    assert process_cpu(os.getpid()) > 0
    assert process_cpu(2**22 + 12345) == 0.0


def test_file_timeline_counts_images_only(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    names = ["a/1.jpg", "a/2.PNG", "3.webp", "4.gif", "note.json", "a/.5.jpg.tmp", ".6.jpg"]
    for i, name in enumerate(names):
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, ns=(1_000_000_000 * (100 + i),) * 2)
    timeline = file_timeline(tmp_path)
    assert timeline.count == 4
    assert (timeline.first, timeline.last) == (100.0, 103.0)
    assert timeline.steady_rate() == 1.0  # 3 intervals in 3 s
    assert file_timeline(tmp_path / "missing").count == 0
    assert file_timeline(tmp_path / "a").steady_rate() == 1.0
    # When a share of them had landed: 99 % of 4 images is the 4th, half is the 2nd.
    assert (timeline.at_share(0.99), timeline.at_share(0.5)) == (103.0, 101.0)
    assert file_timeline(tmp_path / "missing").at_share(0.99) is None


# A parent that peaks at ~150 MB, frees it, then measures a small child: the child's figure
# must be its own, not the parent's peak that Linux carries into the child's ru_maxrss.
_BIG_PARENT = """
import json, sys
from benchmarks.measure import peak_rss_kb, run_measured
b = bytearray(150 * 1024 * 1024)
for i in range(0, len(b), 4096): b[i] = 1
del b
run = run_measured([sys.executable, "-c", "import time; time.sleep(0.5)"])
print(json.dumps({"parent_peak_kb": peak_rss_kb(), "child_peak_mb": run.peak_rss_mb}))
"""


def test_child_peak_excludes_the_spawners_peak(tmp_path: Path) -> None:
    import json
    import subprocess

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", _BIG_PARENT], env=env, capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    assert found["parent_peak_kb"] > 140 * 1024
    assert 0 < found["child_peak_mb"] < 60  # a sleeping interpreter: ~10 MB


def test_peak_rss_kb_of_self_and_of_nothing() -> None:
    assert peak_rss_kb() >= peak_rss_kb(os.getpid()) > 1024
    assert peak_rss_kb(2**22 + 12345) == 0


def test_images_stamped_in_one_clock_tick_fall_back_to_the_wall_rate(tmp_path: Path) -> None:
    # A coarse file-time clock (CI's filesystem) can stamp a small run's images alike.
    for i in range(8):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(b"x")
        os.utime(path, ns=(5_000_000_000,) * 2)
    timeline = file_timeline(tmp_path)
    assert timeline.count == 8
    assert timeline.steady_rate() is None
    row = Row("size", "200k", "bingcrawl", "", urls=8, stored=8, wall_images_per_s=4.0)
    row.images_per_s = timeline.steady_rate()
    settle_rate(row)
    assert row.images_per_s == 4.0
    assert row.extra["rate_basis"].startswith("wall")
    steady = Row("main", "", "bingcrawl", "", urls=8, images_per_s=9.0, wall_images_per_s=4.0)
    settle_rate(steady)
    assert steady.images_per_s == 9.0
    assert "rate_basis" not in steady.extra
