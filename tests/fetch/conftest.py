"""Fixtures for the download worker and network policy tests (prefixed ``dl_``).

Everything listens on loopback only. The canary is a raw TCP listener on 127.0.0.2 that must
never see a connection when the policy allows only 127.0.0.1/32: it proves a blocked address
was refused before ``connect()``, not after.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from PIL import Image

from bingcrawl.fetch.netpolicy import NetworkPolicy
from tests.support.net import CANARY_HOST, RawServer


@pytest.fixture
def dl_policy() -> NetworkPolicy:
    """The tests' policy: only 127.0.0.1 is allowed beyond the public internet."""
    return NetworkPolicy.from_cidrs(["127.0.0.1/32"])


@pytest.fixture
async def dl_canary() -> AsyncIterator[RawServer]:
    """A listener on 127.0.0.2 that must receive no connection."""
    server = RawServer(CANARY_HOST)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def dl_raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[RawServer]]]:
    """Factory: ``await dl_raw_server(reply)`` starts a 127.0.0.1 server scripted with reply."""
    servers: list[RawServer] = []

    async def start(reply: bytes) -> RawServer:
        server = RawServer("127.0.0.1", reply)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture(scope="session")
def dl_png() -> bytes:
    """A small, valid PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()
