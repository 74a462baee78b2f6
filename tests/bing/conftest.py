"""Fixtures for the Bing client tests (their helpers are in tests/support/bing.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aioresponses import aioresponses

from tests.support.bing import MockApi, load_fixture


@pytest.fixture
def fixture_json() -> Callable[[str], Any]:
    """Load an example response by file name."""
    return load_fixture


@pytest.fixture
def mock_api() -> Iterator[MockApi]:
    """Patch aiohttp so requests to the test endpoint get queued answers."""
    with aioresponses() as mocked:
        yield MockApi(mocked)
