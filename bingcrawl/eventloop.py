"""Which event loop runs a command: uvloop when it is installed, else asyncio's own.

``--event-loop auto`` (the default) picks uvloop if it can be imported, ``uvloop`` insists on
it (a clear error naming the option when it is missing), ``asyncio`` keeps the standard
loop. The HTTP client is the largest share of the crawler's main process, and uvloop's
transports and selector in C cut it: in the benchmark harness (``python -m benchmarks``)
bingcrawl is ~10 % faster on uvloop, with half the event-loop lag (``benchmarks/RESULTS.md``).
Nothing in bingcrawl depends on which loop runs: signal handlers, executors (the hash pool),
and the connector's ``socket_factory`` (the SSRF guard at connect time) behave the same on
both. The in-process tests run on asyncio's loop; the CLI's subprocess tests and
``tests/e2e/test_event_loops.py`` run crawls on uvloop.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from bingcrawl.errors import ConfigError

__all__ = ["EVENT_LOOPS", "loop_factory", "resolve", "run"]

T = TypeVar("T")

#: Accepted values of ``--event-loop``.
EVENT_LOOPS: Final[tuple[str, ...]] = ("auto", "asyncio", "uvloop")


def resolve(name: str, *, option: str = "--event-loop") -> str:
    """The loop ``name`` stands for (``asyncio`` or ``uvloop``); ConfigError naming ``option``."""
    if name not in EVENT_LOOPS:
        raise ConfigError(option, f"must be one of {', '.join(EVENT_LOOPS)}, got {name!r}")
    available = importlib.util.find_spec("uvloop") is not None
    if name == "uvloop" and not available:
        raise ConfigError(option, "uvloop is not installed (pip install uvloop)")
    if name == "auto":
        return "uvloop" if available else "asyncio"
    return name


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The ``loop_factory`` of :class:`asyncio.Runner` for a resolved ``name``."""
    if resolve(name) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(coro: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """:func:`asyncio.run` on the chosen loop (a bad choice closes ``coro`` unstarted)."""
    try:
        factory = loop_factory(event_loop)
    except BaseException:
        coro.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
