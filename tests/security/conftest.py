"""Fixtures for the hostile-input tests: a canary that must see nothing, a sentinel key, and a
place for child-process logs outside OUT."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.net import CANARY_HOST, RawServer


@pytest.fixture
async def canary() -> AsyncIterator[RawServer]:
    """A listener on 127.0.0.2 (refused by a policy that allows only 127.0.0.1/32)."""
    server = RawServer(CANARY_HOST)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def sentinel() -> str:
    """A subscription key unique to the test, with characters that percent-encode."""
    return f"Sntl{uuid.uuid4().hex}+/="


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Where child processes write stdout and stderr (outside every OUT)."""
    return tmp_path / "logs"
