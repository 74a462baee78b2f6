"""The crawler container stopped and killed: ``docker compose stop`` (SIGTERM to PID 1) and an
OOM kill (SIGKILL), and what each leaves on the volume and in the process table.

The image's entry point runs under a stand-in for tini (tests/support/container_process.py)
through one crawler volume's three container starts (the ``scenario`` fixture,
tests/support/container_runs.py): an emulator middleware holds the images, so the signals
land mid-crawl at a known point, not after a sleep.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tests.support.container import compose_file
from tests.support.container_runs import DOCKER_STOP_TIMEOUT, RELEASED_AFTER_SIGNAL, Scenario

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def test_sigterm_exits_143_within_dockers_stop_timeout(scenario: Scenario) -> None:
    stopped = scenario.stopped
    assert stopped.code == 143, stopped.stderr[-5:]
    # 143 returned by the crawler after its checkpoint, not a death by the signal itself
    assert stopped.report["status"] == 143
    assert scenario.stop_seconds < DOCKER_STOP_TIMEOUT, scenario.stop_seconds


def test_checkpoint_is_consistent_after_sigterm(scenario: Scenario) -> None:
    view = scenario.after_stop
    assert view.integrity == "ok"
    assert view.statuses["inflight"] == 0
    assert view.temp_files == []
    assert view.bad_files == []
    # the manifest is rewritten at the end of every run, interrupted ones included
    assert sorted(r["path"] for r in view.manifest) == sorted(r["path"] for r in view.stored)
    assert 0 < len(view.stored) < len(scenario.truth), "the SIGTERM did not land mid-crawl"
    # every picture served, before the signal or while stopping, was checkpointed
    assert set(scenario.fetched_before_stop) <= view.settled_keys
    after_signal = set(scenario.fetched_before_stop) - set(scenario.fetched_at_signal)
    assert len(after_signal) == RELEASED_AFTER_SIGNAL


def test_hash_pool_leaves_no_orphans_or_zombies(scenario: Scenario) -> None:
    pool = scenario.pool  # every process below the crawler while it ran
    helpers = {pid for pid, cmd in pool.items() if "resource_tracker" in cmd or "forkserver" in cmd}
    workers = {pid for pid, cmd in pool.items() if "multiprocessing" in cmd} - helpers
    assert workers, pool  # the hash pool (default --hash-workers: the CPU count)
    report = scenario.stopped.report
    orphans = {int(pid) for pid in report["orphans"]}
    # The crawler shut its hash pool down and reaped the workers itself; only
    # multiprocessing's helper processes (they exit when their parent's pipe closes)
    # outlive it, briefly, for PID 1 to reap.
    assert not workers & orphans, report
    assert orphans <= helpers, report
    assert report["killed"] == [], "orphans did not exit on their own"
    assert all(not Path(f"/proc/{pid}").exists() for pid in pool)


def test_sigkilled_crawler_exits_so_that_compose_restarts_it(scenario: Scenario) -> None:
    policy, _, retries = compose_file()["services"]["crawler"]["restart"].partition(":")
    assert policy == "on-failure"
    assert int(retries or 1) >= 1
    killed = scenario.killed
    assert killed.report["status"] == -signal.SIGKILL
    assert killed.code == 137  # non-zero: `restart: on-failure` starts it again
