"""Fixtures for the emulator tests: a real loopback emulator and a raw aiohttp session."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from bingcrawl.emulator import CorpusConfig, EmulatorConfig, EmulatorServer

KEY = "emulator-test-key"
HEADERS = {"Ocp-Apim-Subscription-Key": KEY}

StartEmulator = Callable[..., Awaitable[EmulatorServer]]


def small_config(**overrides: Any) -> EmulatorConfig:
    """A quick configuration: a small corpus, no QPS limit unless a test asks for one."""
    corpus = overrides.pop("corpus", CorpusConfig(results_per_query=120))
    overrides.setdefault("qps", None)
    return EmulatorConfig(corpus=corpus, **overrides)


@pytest.fixture
async def start_emulator() -> AsyncIterator[StartEmulator]:
    """``await start_emulator(**EmulatorConfig fields, clock=..., wall_clock=...)``."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**kwargs: Any) -> EmulatorServer:
            clocks = {k: kwargs.pop(k) for k in ("clock", "wall_clock") if k in kwargs}
            server = EmulatorServer(small_config(**kwargs), **clocks)
            return await stack.enter_async_context(server)

        yield start


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> EmulatorServer:
    """An emulator with the small default configuration."""
    return await start_emulator()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session (no key header: tests add it per request)."""
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(
    http: aiohttp.ClientSession,
    url: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    """GET ``url`` with the test key; return (status, parsed JSON body, headers)."""
    async with http.get(
        url, params=params, headers=HEADERS if headers is None else headers
    ) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def search_url(server: EmulatorServer) -> str:
    """The emulator's /images/search URL."""
    return server.base_url + "v7.0/images/search"


def key_of(server: EmulatorServer, image: dict[str, Any]) -> str:
    """The corpus key of an Image object served by ``server`` (its contentUrl path)."""
    prefix = server.base_url + "img/"
    assert image["contentUrl"].startswith(prefix)
    return unquote(image["contentUrl"][len(prefix) :])


def assert_query_shape(query: dict[str, Any], thumb_field: str = "thumbnailUrl") -> None:
    """A Query object as the reference shapes it."""
    assert {"text", "displayText", "webSearchUrl", "searchLink", "thumbnail"} <= set(query)
    assert isinstance(query["thumbnail"][thumb_field], str)
