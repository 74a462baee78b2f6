"""Shared fixtures for the whole suite (the helpers behind them live in tests/support)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bingcrawl.emulator import EmulatorConfig
from tests.support.emulator import ConfigDefaults, Emulators, StartEmulator


@pytest.fixture
def emulator_defaults() -> ConfigDefaults:
    """How ``start_emulator(**fields)`` builds its config: the emulator's own defaults here;
    a directory's conftest.py overrides this fixture to give its tests theirs."""
    return EmulatorConfig


@pytest.fixture
async def start_emulator(emulator_defaults: ConfigDefaults) -> AsyncIterator[StartEmulator]:
    """``server = await start_emulator(config)`` (or ``(**EmulatorConfig fields)``, with
    ``clock=``, ``wall_clock=``, ``attach=``): an in-process emulator on a free loopback port,
    stopped when the test ends (see :class:`tests.support.emulator.Emulators`)."""
    async with Emulators(emulator_defaults) as emulators:
        yield emulators.start
