"""The harness deletes finished runs' outputs at its end, not between runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import tools
from benchmarks.tools import Context


def _run_dir(ctx: Context) -> Path:
    run = ctx.next_dir("main-bingcrawl")
    (run / "out").mkdir()
    (run / "out" / "a.jpg").write_bytes(b"x")
    return run


def test_finished_runs_stay_until_cleanup(tmp_path: Path) -> None:
    ctx = Context(workdir=tmp_path)
    first, second = _run_dir(ctx), _run_dir(ctx)
    ctx.discard(first)
    ctx.discard(second)
    assert [first.exists(), second.exists()] == [True, True]  # no mass deletion between runs
    ctx.cleanup()
    assert [first.exists(), second.exists()] == [False, False]
    assert ctx.finished == []


def test_keep_never_deletes(tmp_path: Path) -> None:
    ctx = Context(workdir=tmp_path, keep=True)
    run = _run_dir(ctx)
    ctx.discard(run)
    ctx.cleanup()
    assert (run / "out" / "a.jpg").exists()


def test_low_disk_deletes_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "_LOW_DISK", 2**62)  # more than any disk has free
    ctx = Context(workdir=tmp_path)
    run = _run_dir(ctx)
    ctx.discard(run)
    assert not run.exists()
