"""Fixtures for the emulator tests: a real loopback emulator and a raw aiohttp session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bingcrawl.emulator import EmulatorServer
from tests.support.emulator import ConfigDefaults, StartEmulator, quick_emulator_config


@pytest.fixture
def emulator_defaults() -> ConfigDefaults:
    """``start_emulator(**fields)`` here: a small corpus, no QPS limit unless a test asks."""
    return quick_emulator_config


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> EmulatorServer:
    """An emulator with the small default configuration."""
    return await start_emulator()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session (no key header: tests add it per request)."""
    async with aiohttp.ClientSession() as session:
        yield session
