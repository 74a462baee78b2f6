"""Fixtures for the store tests (their builders are in tests/support/store.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bingcrawl.store import Checkpoint


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output directory that does not exist yet."""
    return tmp_path / "out"


@pytest.fixture
async def cp(out: Path) -> AsyncIterator[Checkpoint]:
    """An open checkpoint with a short batch interval; closed after the test."""
    checkpoint = await Checkpoint.open(out, batch_interval=0.01)
    try:
        yield checkpoint
    finally:
        await checkpoint.close()
