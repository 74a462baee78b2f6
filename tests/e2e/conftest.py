"""Fixtures for end-to-end crawls against the emulator over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.imagehost import ImageHostConfig
from tests.support.crawls import EmulatorFactory, small_corpus


@pytest.fixture
async def emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """Start emulators with the given config; all are stopped at the end of the test."""
    servers: list[EmulatorServer] = []

    async def start(config: EmulatorConfig | None = None, **kw: Any) -> EmulatorServer:
        if config is None:
            kw.setdefault("corpus", small_corpus())
            kw.setdefault("qps", None)
            kw.setdefault(
                "images", ImageHostConfig(slow_seconds=20.0, oversize_bytes=3 * 1024 * 1024)
            )
            config = EmulatorConfig(**kw)
        server = EmulatorServer(config)
        await server.__aenter__()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.__aexit__(None, None, None)
