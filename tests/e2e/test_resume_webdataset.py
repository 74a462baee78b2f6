"""Crash-safe resume with webdataset output: kill -9 at named points and random moments,
restart until done; every tar shard is then cut back to exactly its committed members and the
dataset is an uninterrupted run's. (See ``test_resume.py`` for the method.)"""

from __future__ import annotations

import random
from pathlib import Path

from tests.support.emulator import StartEmulator
from tests.support.resume import (
    Dataset,
    check_bounded_work,
    check_integrity,
    check_same_dataset,
    crash_loop,
    emulator_config,
    reference_run,
)


async def test_crash_loop_webdataset(start_emulator: StartEmulator, tmp_path: Path) -> None:
    """Kills with webdataset output (small shards, so runs rotate shards): every shard is cut
    back to its committed members, and the dataset is the uninterrupted run's."""
    rng = random.Random(77)
    config = emulator_config(results_per_query=50)
    extra = ("--output-format", "webdataset", "--shard-size", "15")
    want = await reference_run(tmp_path, config, *extra)
    schedule = ["file_written", "outcomes", "outcome_recorded", "pages", "downloaded"]
    server = await start_emulator(config)
    out = tmp_path / "resumed"
    ledger = await crash_loop(server, out, schedule, rng, *extra)
    assert ledger.kills == len(schedule), ledger.rounds
    check_integrity(out)
    got = Dataset.read(out, server)
    assert not (out / "images").exists() or not any((out / "images").iterdir())
    check_same_dataset(got, want, same_paths=False)
    check_bounded_work(got, want, ledger)
