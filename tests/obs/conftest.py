"""Fixtures for the observability and container tests: the container runs, each run once."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.support.container_runs import (
    EmulatorRun,
    Scenario,
    run_emulator_service,
    run_scenario,
)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """One crawler volume through three container starts, run once: the container tests each
    check one part of it."""
    return await run_scenario(tmp_path_factory.mktemp("container"))


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def emulator_run(tmp_path_factory: pytest.TempPathFactory) -> EmulatorRun:
    """The compose ``emulator`` service's container, started, probed and stopped once."""
    return await run_emulator_service(tmp_path_factory.mktemp("emulator"))
