"""What the emulator's other services share (Openverse, Wikimedia Commons): the configured API
latency before the answer, and one entry in the request log for every request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from bingcrawl.emulator.state import STATE, ApiRequest, EmulatorState

__all__ = ["Answer", "serve_logged"]

#: A service's answer to one request: (the response, the outcome logged).
Answer = Callable[[web.Request, EmulatorState, float], Awaitable[tuple[web.Response, str]]]


async def serve_logged(
    request: web.Request, endpoint: str, answer: Answer, *, key: str | None = None
) -> web.Response:
    """Answer ``request`` (after the configured latency) and log it under ``endpoint``."""
    state: EmulatorState = request.app[STATE]
    arrived, wall = state.clock(), state.wall_clock()
    if state.config.api_latency > 0:
        await asyncio.sleep(state.config.api_latency)
    response, outcome = await answer(request, state, arrived)
    state.record(
        ApiRequest(
            time=arrived,
            wall_time=wall,
            endpoint=endpoint,
            method=request.method,
            key=key,
            status=response.status,
            outcome=outcome,
            params=dict(request.query),
            client_id=None,
        )
    )
    return response
