"""The compose ``emulator`` service's container: its command on loopback, probed by its own
health check, used, stopped with SIGTERM and probed again (the ``emulator_run`` fixture,
tests/support/container_runs.py).
"""

from __future__ import annotations

import sys

import pytest

from tests.support.container_process import json_record
from tests.support.container_runs import EmulatorRun

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def test_emulator_service_passes_its_healthcheck_and_stops_on_sigterm(
    emulator_run: EmulatorRun,
) -> None:
    code, out = emulator_run.healthy
    assert code == 0, out
    assert out.startswith("healthy")
    assert emulator_run.thumbnail == 200
    assert emulator_run.stopped.code == 0, emulator_run.stopped.stderr
    assert emulator_run.stopped.report["orphans"] == {}
    assert emulator_run.stop_seconds < emulator_run.stop_grace_period
    code, out = emulator_run.unhealthy
    assert code == 1
    assert out.startswith("unhealthy")


def test_emulator_service_logs_json_as_the_image_sets(emulator_run: EmulatorRun) -> None:
    lines = [line for line in emulator_run.stopped.stderr if line]
    assert lines
    for line in lines:
        record = json_record(line)
        assert record is not None, f"not a JSON log line: {line!r}"
        assert record["logger"].startswith("bingcrawl")
