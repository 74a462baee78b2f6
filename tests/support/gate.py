"""Holding an emulator's image downloads until the test lets them through."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

__all__ = ["ImageGate"]


class ImageGate:
    """An emulator middleware that holds image requests until the test lets them through.

    It replaces "sleep and hope" with control: the test decides how many images the crawler
    gets before it is stopped or killed, and can wait until the crawler has used them all and
    is waiting for more (a quiet, known state to act in). ``budget`` is how many more image
    requests may pass (``None``: all of them).
    """

    def __init__(self) -> None:
        self.budget: int | None = 0
        self.held = 0
        self.changed = asyncio.Condition()

    def attach(self, app: web.Application) -> None:
        """Hold ``app``'s image requests (before the app starts: its middlewares freeze)."""
        app.middlewares.append(self.middleware)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/img/"):
            async with self.changed:
                self.held += 1
                self.changed.notify_all()
                try:
                    await self.changed.wait_for(lambda: self.budget is None or self.budget > 0)
                finally:
                    self.held -= 1
                if self.budget is not None:
                    self.budget -= 1
                self.changed.notify_all()
        response: web.StreamResponse = await handler(request)
        return response

    async def allow(self, n: int | None) -> None:
        """Let ``n`` more image requests through, then hold them again (``None``: open)."""
        async with self.changed:
            self.budget = None if n is None else (self.budget or 0) + n
            self.changed.notify_all()

    async def reset(self, n: int, timeout: float = 60.0) -> None:
        """Let the requests still held go (their crawler is gone), then allow exactly ``n``."""
        async with self.changed:
            self.budget = None
            self.changed.notify_all()
            await asyncio.wait_for(self.changed.wait_for(lambda: self.held == 0), timeout)
            self.budget = n

    async def exhausted(self, timeout: float = 60.0) -> None:
        """Wait until the budget is spent and the crawler is waiting for more."""
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: self.budget == 0 and self.held > 0), timeout
            )
