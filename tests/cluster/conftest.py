"""Fixtures for the Ray engine's crawls against the emulator over real loopback HTTP."""

from __future__ import annotations

import pytest

from tests.support.crawls import crawl_emulator_config
from tests.support.emulator import ConfigDefaults


@pytest.fixture
def emulator_defaults() -> ConfigDefaults:
    """``start_emulator(**fields)`` here: an emulator for a test crawl."""
    return crawl_emulator_config
