"""Named crash points: a test hook that makes the process kill itself (SIGKILL) at a chosen step.

The crash-loop tests set ``BINGCRAWL_CRASH_AT=<point>:<n>`` (the CLI reads it once into
``CrawlConfig.crash_at``). A point is an event of the crawl's stream (:mod:`bingcrawl.events`);
the crawler subscribes :meth:`CrashPoints.on_event` only when a point is chosen, and the
``n``-th event of that kind kills the process on the spot, with no cleanup, exactly like
``kill -9`` at that moment.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from bingcrawl.errors import ConfigError
from bingcrawl.events import (
    Downloaded,
    Event,
    FileWritten,
    OutcomeRecorded,
    PageCommitted,
    PageReceived,
)

__all__ = ["POINTS", "CrashPoints"]

#: The steps a crash can be injected at, in pipeline order.
POINTS = (
    "api_response",  # an API page arrived, not yet committed
    "page_committed",  # a page's candidates and next offset are committed, not yet queued
    "downloaded",  # an image's bytes are in memory, not yet hashed
    "file_written",  # the image file is in place, its outcome not yet recorded
    "outcome_recorded",  # the outcome is queued for the writer, maybe not yet committed
)


#: The event each point is.
EVENT_OF: dict[str, type] = {
    "api_response": PageReceived,
    "page_committed": PageCommitted,
    "downloaded": Downloaded,
    "file_written": FileWritten,
    "outcome_recorded": OutcomeRecorded,
}


@dataclass(slots=True)
class CrashPoints:
    """Counts hits of one named point and SIGKILLs the process at the chosen one."""

    point: str | None = None
    at: int = 0
    hits: int = 0

    @classmethod
    def parse(cls, spec: str | None) -> CrashPoints:
        """``None`` (no crash) or ``"<point>:<n>"``, e.g. ``"file_written:7"``."""
        if not spec:
            return cls()
        point, _, n = spec.partition(":")
        if point not in POINTS or not n.isdigit() or int(n) < 1:
            raise ConfigError(
                "BINGCRAWL_CRASH_AT", f"expected <point>:<n> with a point in {', '.join(POINTS)}"
            )
        return cls(point, int(n))

    @property
    def armed(self) -> bool:
        """True when a point is chosen (the crawler subscribes only then)."""
        return self.point is not None

    def on_event(self, event: Event) -> None:
        """An event of the crawl: a hit of its point."""
        if self.point is not None and type(event) is EVENT_OF[self.point]:
            self.hit(self.point)

    def hit(self, point: str) -> None:
        """Record a pass through ``point``; die here if it is the chosen one."""
        if point != self.point:
            return
        self.hits += 1
        if self.hits == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
