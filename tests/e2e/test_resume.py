"""Crash-safe resume, proven on the whole crawl.

The crawl runs as a real process (``python -m bingcrawl crawl ...``) against an in-process
emulator, is killed with SIGKILL - at the named crash points of
:mod:`bingcrawl.engine.crashpoints` and at random moments chosen by a seeded RNG - and is
restarted until it exits 0. The result is then compared with an uninterrupted run of the same
command (another OUT, another emulator with the same configuration, so the same ground truth):

* the checkpoint passes ``PRAGMA integrity_check`` and holds no duplicate rows;
* the stored images, the manifest (order-insensitive) and the per-URL outcomes are the
  uninterrupted run's; there are no duplicate files, no orphan files and no temp files;
* no page committed before a kill is requested again, no URL whose outcome was committed
  before a kill is downloaded again, and no URL is downloaded more than (kills + 1) times
  as often as in the uninterrupted run.

``test_crash_loop`` is the bounded form CI runs (10 kills). ``test_crash_loop_soak`` is marked
``slow``; CI runs it small, a real soak sets these variables of the *test* run:

* ``BINGCRAWL_SOAK_KILLS`` - how many kills (default 4), e.g. ``BINGCRAWL_SOAK_KILLS=200``;
* ``BINGCRAWL_SOAK_SEED`` - the RNG seed of the kill schedule (default 2024); a failing soak
  prints its seed so that the same schedule can be replayed.

The same method covers webdataset output (``test_resume_webdataset.py``); SIGTERM and the
processes a killed crawl leaves are in ``test_resume_signals.py``, and re-runs with changed
options, ``--max-api-calls``, ``--durable``, ``status`` and ``export`` in
``test_resume_options.py``. Their shared helpers are in ``tests/support/resume.py``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bingcrawl.engine.crashpoints import POINTS
from tests.support.emulator import StartEmulator
from tests.support.resume import (
    RANDOM_KINDS,
    Dataset,
    check_bounded_work,
    check_integrity,
    check_same_dataset,
    crash_loop,
    emulator_config,
    reference_run,
)


async def test_crash_loop(start_emulator: StartEmulator, tmp_path: Path) -> None:
    """10 kills: each named point once, each random kind at least once; then compare."""
    rng = random.Random(20240611)
    config = emulator_config()
    want = await reference_run(tmp_path, config)
    schedule = [*POINTS, *RANDOM_KINDS, "outcomes"]
    rng.shuffle(schedule)
    server = await start_emulator(config)
    out = tmp_path / "resumed"
    ledger = await crash_loop(server, out, schedule, rng)
    assert ledger.kills == len(schedule), ledger.rounds
    check_integrity(out)
    got = Dataset.read(out, server)
    check_same_dataset(got, want)
    check_bounded_work(got, want, ledger)


#: The soak's size and schedule (see the module docstring); read once, at collection.
SOAK_KILLS = int(os.environ.get("BINGCRAWL_SOAK_KILLS", "4"))
SOAK_SEED = int(os.environ.get("BINGCRAWL_SOAK_SEED", "2024"))


@pytest.mark.slow
@pytest.mark.timeout(120 + 10 * SOAK_KILLS)
async def test_crash_loop_soak(start_emulator: StartEmulator, tmp_path: Path) -> None:
    """Many kills at random points and moments (``BINGCRAWL_SOAK_KILLS``), with near-duplicate
    dedup (the Hamming index is rebuilt from the checkpoint at every start) and ``--durable``."""
    kills, seed = SOAK_KILLS, SOAK_SEED
    try:
        await soak(start_emulator, tmp_path, kills, seed)
    except AssertionError as exc:
        exc.add_note(
            f"replay this soak with BINGCRAWL_SOAK_KILLS={kills} BINGCRAWL_SOAK_SEED={seed}"
        )
        raise


async def soak(start_emulator: StartEmulator, tmp_path: Path, kills: int, seed: int) -> None:
    """The soak of :func:`test_crash_loop_soak`."""
    rng = random.Random(seed)
    # Enough work that every kill finds the crawl still running.
    config = emulator_config(results_per_query=max(60, 12 * kills), seed=seed % 1000)
    extra = ("--durable", "--near-dup-distance", "8")
    want = await reference_run(tmp_path, config, *extra)
    schedule = [rng.choice((*POINTS, *RANDOM_KINDS)) for _ in range(kills)]
    server = await start_emulator(config)
    out = tmp_path / "resumed"
    ledger = await crash_loop(server, out, schedule, rng, *extra)
    assert ledger.kills >= kills * 0.9, ledger.rounds
    check_integrity(out)
    got = Dataset.read(out, server)
    corpus = server.corpus

    def picture(key: str) -> object:
        spec = corpus.spec(key)
        assert spec is not None, key
        return spec.base

    assert any(row["distance"] for row in got.candidates.values()), "no near duplicate seen"
    check_same_dataset(got, want, picture=picture)
    check_bounded_work(got, want, ledger)
