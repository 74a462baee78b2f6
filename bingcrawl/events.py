"""What happens during a crawl, as one stream of typed events.

Every stage reports what it did by emitting an event on the crawl's :class:`Events`; it never
updates a counter or calls a hook of its own. Everything that watches a crawl subscribes:
the live counters behind progress, the summary and the metrics endpoint
(:class:`~bingcrawl.obs.progress.Counters`), the crash points of the crash-loop tests
(:class:`~bingcrawl.engine.crashpoints.CrashPoints`), and the caller's code
(``Crawler(on_event=...)``, ``on_outcome=``, ``crawler.events.subscribe``).

Subscribers run synchronously, in the order they subscribed, on the event loop: they must
be quick and must not block. :meth:`Events.subscribe` guards a subscriber by default: its
exception is logged and the crawl goes on (a caller's bug never stops a stage half-way); the
crawl's own subscribers are unguarded, since their exception is a bug of the crawl. Events
are frozen dataclasses; a subscriber dispatches on the class (``match``/
``isinstance``) and ignores the ones it does not know, so new kinds can be added.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bingcrawl.records import Outcome

__all__ = [
    "ApiResponse",
    "Downloaded",
    "Event",
    "Events",
    "FileWritten",
    "OutcomeRecorded",
    "PageCommitted",
    "PageReceived",
    "QueriesKnown",
    "QueryAdded",
    "QueryDone",
    "QueryStarted",
    "QueryStopped",
    "Subscriber",
]

log = logging.getLogger("bingcrawl.events")


@dataclass(frozen=True, slots=True)
class QueriesKnown:
    """At the start of a run: how many query rows exist and how many of them are done."""

    total: int
    done: int


@dataclass(frozen=True, slots=True)
class QueryAdded:
    """A new query row (an expansion, a similar-images request, a trending tile)."""

    source: str


@dataclass(frozen=True, slots=True)
class QueryStarted:
    """A source began working on a query row."""

    query_id: int


@dataclass(frozen=True, slots=True)
class QueryStopped:
    """A source stopped working on a query row (finished or not: see :class:`QueryDone`)."""

    query_id: int


@dataclass(frozen=True, slots=True)
class QueryDone:
    """A query row is finished: nothing more to ask the API for it."""

    query_id: int


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """The API answered one request (any status, retries included)."""

    endpoint: str
    status: int


@dataclass(frozen=True, slots=True)
class PageReceived:
    """A page (or batch) of candidates arrived and is about to be committed."""

    source: str
    query_id: int | None  # None: a page that is not one row's (trending's categories)


@dataclass(frozen=True, slots=True)
class PageCommitted:
    """A page's new candidates and its row's next offset are committed, not yet queued."""

    query_id: int
    candidates: int


@dataclass(frozen=True, slots=True)
class Downloaded:
    """An image's bytes are in memory, not yet hashed."""

    url: str
    size: int


@dataclass(frozen=True, slots=True)
class FileWritten:
    """An image is in place on disk (a file or a shard member), its outcome not yet recorded."""

    sha256: str


@dataclass(frozen=True, slots=True)
class OutcomeRecorded:
    """A candidate's final outcome is handed to the checkpoint's writer."""

    outcome: Outcome


Event = (
    QueriesKnown
    | QueryAdded
    | QueryStarted
    | QueryStopped
    | QueryDone
    | ApiResponse
    | PageReceived
    | PageCommitted
    | Downloaded
    | FileWritten
    | OutcomeRecorded
)

Subscriber = Callable[[Event], object]


class Events:
    """The crawl's event stream: :meth:`emit` calls every subscriber in order."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber, *, guarded: bool = True) -> Callable[[], None]:
        """Call ``subscriber(event)`` for every later event; returns the unsubscribe call.

        ``guarded`` (the default, for code that is not the crawl's own: a caller's callback):
        an exception the subscriber raises is logged and the crawl goes on, never half-way
        through a stage. The crawl's own subscribers pass ``guarded=False``: their exception
        is a bug and propagates.
        """
        target = subscriber if not guarded else _guard(subscriber)
        self._subscribers = (*self._subscribers, target)

        def unsubscribe() -> None:
            self._subscribers = tuple(s for s in self._subscribers if s is not target)

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every subscriber, in the order they subscribed."""
        for subscriber in self._subscribers:
            subscriber(event)


def _guard(subscriber: Subscriber) -> Subscriber:
    def guarded(event: Event) -> None:
        try:
            subscriber(event)
        except Exception:
            log.exception("an event subscriber failed on %s", type(event).__name__)

    return guarded
