"""A loopback API whose answers a test scripts: the provider clients' wire tests use it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["ScriptedApi", "serve"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ScriptedApi:
    """Answers every request with ``status``, ``body`` and ``headers`` (a test changes them
    between calls) and keeps each request in ``requests``."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[web.Request] = field(default_factory=list)

    async def answer(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        return web.Response(status=self.status, body=self.body, headers=self.headers)


@contextlib.asynccontextmanager
async def serve(
    api: ScriptedApi, path: str, *, extra: tuple[tuple[str, str, Handler], ...] = ()
) -> AsyncIterator[str]:
    """Serve ``api`` at ``GET path`` (and ``extra`` (method, path, handler) routes) on
    127.0.0.1; yields the base URL (with its trailing slash)."""
    app = web.Application()
    app.router.add_get(path, api.answer)
    for method, route, handler in extra:
        app.router.add_route(method, route, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()
