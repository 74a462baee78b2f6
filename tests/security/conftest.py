"""Fixtures for the hostile-input tests: a canary that must see nothing, emulators with a
request-header log, and a place for child-process logs outside OUT."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from tests.support.hostile import HeaderLog
from tests.support.net import CANARY_HOST, RawServer

__all__ = ["CANARY_HOST", "EmulatorStarter"]

EmulatorStarter = Callable[[EmulatorConfig], Awaitable[tuple[EmulatorServer, HeaderLog]]]


@pytest.fixture
async def canary() -> AsyncIterator[RawServer]:
    """A listener on 127.0.0.2 (refused by a policy that allows only 127.0.0.1/32)."""
    server = RawServer(CANARY_HOST)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def logged_emulator() -> AsyncIterator[EmulatorStarter]:
    """Start emulators whose every request (headers included) is logged; all stop at the end."""
    servers: list[EmulatorServer] = []

    async def start(config: EmulatorConfig) -> tuple[EmulatorServer, HeaderLog]:
        server = EmulatorServer(config)
        log = HeaderLog()
        log.attach(server.app)  # before start: an app's signals freeze when it starts
        await server.start()
        servers.append(server)
        return server, log

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
def sentinel() -> str:
    """A subscription key unique to the test, with characters that percent-encode."""
    return f"Sntl{uuid.uuid4().hex}+/="


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Where child processes write stdout and stderr (outside every OUT)."""
    return tmp_path / "logs"
