"""The one way the tests start an in-process emulator, and the emulator corpora they share.

Tests ask for the ``start_emulator`` fixture (tests/conftest.py), which is an
:class:`Emulators` for the test: ``server = await start_emulator(config)`` starts an
:class:`~bingcrawl.emulator.EmulatorServer` on a free loopback port in the test's event loop,
and every server started so is stopped when the test ends, last started first. A fixture with
a wider scope uses :class:`Emulators` itself (``async with Emulators() as emulators:``).

``start_emulator(**fields)`` (no config) builds the config from EmulatorConfig fields with the
directory's defaults: the ``emulator_defaults`` fixture, which a directory's conftest.py
overrides (the end-to-end crawls default to
:func:`tests.support.crawls.crawl_emulator_config`, the emulator's own tests to
:func:`quick_emulator_config`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from aiohttp import web

from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.corpus import CorpusConfig

__all__ = [
    "ConfigDefaults",
    "Emulators",
    "StartEmulator",
    "clean_corpus",
    "quick_emulator_config",
]

#: Builds an EmulatorConfig from the fields a test names (the rest: defaults).
ConfigDefaults = Callable[..., EmulatorConfig]


class StartEmulator(Protocol):
    """The ``start_emulator`` fixture's type: :meth:`Emulators.start`."""

    async def __call__(
        self,
        config: EmulatorConfig | None = None,
        /,
        *,
        clock: Callable[[], float] = ...,
        wall_clock: Callable[[], float] = ...,
        attach: Callable[[web.Application], object] | None = None,
        **fields: Any,
    ) -> EmulatorServer: ...


class Emulators:
    """Emulators started in the running event loop, all stopped when the context ends.

    ``defaults`` builds the config of ``start(**fields)``; the plain :class:`EmulatorConfig`
    (the emulator's own defaults) unless told otherwise.
    """

    def __init__(self, defaults: ConfigDefaults = EmulatorConfig) -> None:
        self.defaults = defaults
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    async def start(
        self,
        config: EmulatorConfig | None = None,
        /,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        attach: Callable[[web.Application], object] | None = None,
        **fields: Any,
    ) -> EmulatorServer:
        """Start an emulator serving ``config`` (or ``defaults(**fields)``) and return it.

        ``clock`` and ``wall_clock`` are the emulator's (a test's fake clock drives its QPS
        window and quota month); ``attach(app)`` runs before the server starts, when the app
        still takes middlewares and signal handlers (a request log, a gate on the images).
        """
        if config is None:
            config = self.defaults(**fields)
        elif fields:
            raise TypeError(f"a config or its fields, not both: {sorted(fields)}")
        server = EmulatorServer(config, clock=clock, wall_clock=wall_clock)
        if attach is not None:
            attach(server.app)
        return await self._stack.enter_async_context(server)


# -- configurations -------------------------------------------------------------------------


def clean_corpus(**kw: Any) -> CorpusConfig:
    """Every image distinct and served: outcomes are exact."""
    kw.setdefault("results_per_query", 40)
    return CorpusConfig(
        fault_rate=0.0, exact_dup_rate=0.0, near_dup_rate=0.0, cross_query_rate=0.0, **kw
    )


def quick_emulator_config(**fields: Any) -> EmulatorConfig:
    """An emulator whose answers are quick to make: 120 results a query and no QPS limit
    unless the test asks for one."""
    fields.setdefault("corpus", CorpusConfig(results_per_query=120))
    fields.setdefault("qps", None)
    return EmulatorConfig(**fields)
