"""The crawler container while it runs: metrics scraped, health probed, logs as JSON.

The image's entry point runs with the environment compose sets, as the container runs it but
without Docker (tests/support/container_process.py), through one crawler volume's three
container starts (the ``scenario`` fixture, tests/support/container_runs.py); these tests
check what an operator sees of it: /metrics, /healthz and the image's HEALTHCHECK while it
crawls, and its stderr, which a log collector reads.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.support.container_process import json_record
from tests.support.container_runs import METRIC_FAMILIES, Scenario, parse_metrics

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def test_metrics_scraped_during_the_crawl_parse_and_grow(scenario: Scenario) -> None:
    first, second = (parse_metrics(text) for text in scenario.scrapes)
    families, samples = second
    for name, kind in METRIC_FAMILIES.items():
        assert families.get(name) == kind, name
    assert samples[("bingcrawl_up", "")] == 1
    stored = ("bingcrawl_downloads_total", "outcome=stored")
    nbytes = ("bingcrawl_bytes_downloaded_total", "")
    assert first[1][stored] == 0
    assert second[1][stored] > 0
    assert second[1][nbytes] > first[1][nbytes]
    assert samples[("bingcrawl_api_calls_total", "endpoint=search,status=200")] >= 1
    assert samples[("bingcrawl_queries", "state=active")] >= 1
    assert samples[("bingcrawl_in_flight_requests", "")] >= 1  # held at the gate


def test_health_endpoint_and_image_healthcheck_pass_while_crawling(scenario: Scenario) -> None:
    status, body = scenario.healthz
    assert status == 200, body
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["state"] in ("starting", "running")
    code, out = scenario.healthcheck
    assert code == 0, out
    assert out.startswith("healthy: http://127.0.0.1:")


def test_progress_is_logged_periodically_without_a_tty(scenario: Scenario) -> None:
    records = [r for r in map(json_record, scenario.stopped.stderr) if r is not None]
    progress = [r for r in records if r.get("logger") == "bingcrawl.progress"]
    # the first line comes 5 s after the crawl started, before the 5 s --grace of the stop
    assert progress, "no progress line while the crawler ran without a TTY"
    assert all("stored" in r["msg"] for r in progress)


def test_json_logs_carry_context_and_never_the_key(scenario: Scenario) -> None:
    key = scenario.env["BING_SEARCH_V7_SUBSCRIPTION_KEY"]
    run_ids = []
    for run in (scenario.stopped, scenario.completed):
        records = [r for r in map(json_record, run.stderr) if r is not None]
        assert records
        for record in records:
            assert {"ts", "level", "logger", "msg"} <= record.keys(), record
        ids = {r["run_id"] for r in records if r["logger"] == "bingcrawl.progress"}
        run_ids.append(ids)
        assert key not in "\n".join([*run.stderr, run.stdout])
    assert all(len(ids) <= 1 for ids in run_ids)


def test_every_stderr_line_is_a_json_record_with_the_run_id(scenario: Scenario) -> None:
    for run in (scenario.stopped, scenario.completed):
        ids = set()
        for line in filter(None, run.stderr):
            record = json_record(line)
            assert record is not None, f"not a JSON log line: {line!r}"
            assert record.get("run_id"), f"no run_id: {line!r}"
            ids.add(record["run_id"])
        assert len(ids) == 1
