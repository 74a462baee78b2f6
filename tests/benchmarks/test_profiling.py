"""Profile summaries: py-spy's collapsed stacks split by process and ranked by self time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.measure import run_measured
from benchmarks.profiling import available, profiled, render, summarize

RAW = """\
process 10:"python -m benchmarks.crawlrun --result r.json -- crawl";run (crawler.py:200);_process (crawler.py:380);fetch (download.py:300) 30
process 10:"python -m benchmarks.crawlrun --result r.json -- crawl";run (crawler.py:200);_record (crawler.py:340);record_outcome (checkpoint.py:90) 10
process 10:"python -m benchmarks.crawlrun --result r.json -- crawl";process 11:"python -c from multiprocessing.spawn import spawn_main";hash_image (/x/bingcrawl/imaging/hashing.py:120);phash (/v/site-packages/imagehash/__init__.py:260) 45
process 10:"python -m benchmarks.crawlrun --result r.json -- crawl";process 12:"python -c from multiprocessing.spawn import spawn_main";hash_image (/x/bingcrawl/imaging/hashing.py:120);decode (/x/bingcrawl/imaging/hashing.py:90) 15
"""  # noqa: E501


def test_samples_split_by_process_and_ranked(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text(RAW)
    summary = summarize(path)
    assert summary["samples"] == {"main": 40, "children": 60}
    assert summary["main"]["self"][0] == ("fetch (download.py)", 0.75)
    assert ("run (crawler.py)", 1.0) in summary["main"]["total"]
    children = dict(summary["children"]["self"])
    assert children["phash (imagehash/__init__.py)"] == 0.75
    assert dict(summary["children"]["total"])["hash_image (imaging/hashing.py)"] == 1.0
    text = render(summary, title="t")
    assert "main process (40 samples)" in text
    assert "75.0%  fetch (download.py)" in text


@pytest.mark.skipif(available() is None, reason="py-spy is not installed")
def test_profiled_command_records_a_real_child(tmp_path: Path) -> None:
    output = tmp_path / "spy.txt"
    burn = "x = 0\nfor i in range(4_000_000): x += i\n"
    run = run_measured(profiled([sys.executable, "-c", burn], output, rate=200))
    if run.returncode != 0 and "Permission" in run.stderr_tail:
        pytest.skip("ptrace is not permitted here")
    assert run.returncode == 0
    summary = summarize(output)
    assert summary["samples"]["main"] > 0
    assert summary["main"]["self"][0][0].startswith("<module>")
