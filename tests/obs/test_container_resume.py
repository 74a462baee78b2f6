"""The crawler container restarted on the same volume: after a SIGTERM and a SIGKILL, compose's
restart runs the crawl to the end, with the dataset a clean run would have stored.

One crawler volume through three container starts (the ``scenario`` fixture,
tests/support/container_runs.py); the emulator's request log is the ground truth of what
each run asked for.
"""

from __future__ import annotations

import sys

import pytest

from tests.support.container_runs import Scenario
from tests.support.crawls import key_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def test_restarted_crawl_completes_a_clean_runs_dataset(scenario: Scenario) -> None:
    completed = scenario.completed
    assert completed.code == 0, completed.stderr[-5:]
    assert "stored" in completed.stdout  # the summary
    view = scenario.final
    assert view.integrity == "ok"
    assert view.temp_files == []
    assert view.bad_files == []
    assert view.statuses["inflight"] == view.statuses["pending"] == 0
    assert {(r["label"], r["sha256"]) for r in view.manifest} == scenario.truth
    assert len(view.manifest) == len(scenario.truth)
    assert sorted(r["path"] for r in view.manifest) == sorted(r["path"] for r in view.stored)
    assert completed.report["killed"] == []


def test_resumed_runs_repeat_no_page_and_no_stored_download(scenario: Scenario) -> None:
    before = scenario.pages_before_stop
    assert before
    assert len(before) == len(set(before)), "a page was requested twice"
    # (a page the SIGKILLed run fetched may legitimately be fetched again: not checked)
    assert set(scenario.pages[len(before) :]).isdisjoint(before)
    for row in scenario.after_stop.stored:
        key = key_of(row["url"])
        assert scenario.fetched[key] == scenario.fetched_before_stop[key], row["url"]
