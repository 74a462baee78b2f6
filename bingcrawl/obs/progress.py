"""Live counters of a crawl, shown as a rich display on a TTY and as log lines otherwise."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bingcrawl.events import (
    ApiResponse,
    Downloaded,
    Event,
    OutcomeRecorded,
    PageCommitted,
    PageReceived,
    QueriesKnown,
    QueryAdded,
    QueryDone,
    QueryStarted,
    QueryStopped,
)
from bingcrawl.obs.metrics import RateWindow
from bingcrawl.records import OPTED_OUT, Outcome, Status

__all__ = ["Counters", "ProgressReporter"]

log = logging.getLogger("bingcrawl.progress")


#: Seconds without progress after which the display says what the crawl is waiting for.
IDLE_AFTER = 3.0


@dataclass(slots=True)
class Counters:
    """What this run has done so far, and what the dataset held when it started
    (``stored_before``: a resumed run shows the whole dataset and this run's part of it).

    Kept up to date by subscribing to the crawl's events (:meth:`on_event`); nothing else
    writes them but the crawler, once, for ``stored_before`` and the start-up
    ``queries_total``.
    """

    started: float = field(default_factory=time.monotonic)
    stored_before: int = 0
    queries_total: int = 0
    queries_done: int = 0
    queries_active: int = 0
    pages: int = 0
    api_calls: int = 0
    downloaded: int = 0
    bytes: int = 0
    stored: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    failed: int = 0
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    api_by_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    first_stored_at: float | None = None
    last_progress: float = field(default_factory=time.monotonic)
    recent: RateWindow = field(default_factory=RateWindow)

    def on_event(self, event: Event) -> None:
        """Count one event of the crawl (see :mod:`bingcrawl.events`)."""
        match event:
            case OutcomeRecorded(outcome):
                self._count_outcome(outcome)
            case Downloaded(_, size):
                self.downloaded += 1
                self.bytes += size
            case ApiResponse(endpoint, status):
                self.api_calls += 1
                self.api_by_status[(endpoint, status)] += 1
                self.progressed()
            case PageReceived():
                self.pages += 1
            case PageCommitted():
                self.progressed()
            case QueryStarted():
                self.queries_active += 1
            case QueryStopped():
                self.queries_active -= 1
            case QueryDone():
                self.queries_done += 1
            case QueryAdded():
                self.queries_total += 1
            case QueriesKnown(total, done):
                self.queries_total = total
                self.queries_done = done

    def _count_outcome(self, outcome: Outcome) -> None:
        self.progressed()
        status = outcome.status
        if status is Status.STORED:
            self.stored += 1
            self.recent.add(1)
            if self.first_stored_at is None:
                self.first_stored_at = time.monotonic()
        elif status is Status.DUPLICATE:
            self.duplicates += 1
            if outcome.distance:
                self.near_duplicates += 1
        elif status is Status.FAILED:
            self.failed += 1
            self.errors[str(outcome.error_class or "unknown")] += 1
        elif status is Status.SKIPPED:
            self.skipped += 1

    def progressed(self) -> None:
        """Something happened (an outcome, an API page): the crawl is not stalled."""
        self.last_progress = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def idle(self) -> float:
        """Seconds since anything last happened."""
        return time.monotonic() - self.last_progress

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy, with rates."""
        elapsed = max(self.elapsed(), 1e-9)
        return {
            "elapsed_s": round(elapsed, 3),
            "queries_total": self.queries_total,
            "queries_done": self.queries_done,
            "queries_active": self.queries_active,
            "pages": self.pages,
            "api_calls": self.api_calls,
            "api_calls_per_s": round(self.api_calls / elapsed, 3),
            "downloaded": self.downloaded,
            "bytes": self.bytes,
            "stored": self.stored,
            "dataset_stored": self.stored_before + self.stored,
            "duplicates": self.duplicates,
            "near_duplicates": self.near_duplicates,
            "failed": self.failed,
            "opted_out": sum(n for e, n in self.errors.items() if e.startswith(OPTED_OUT)),
            "skipped": self.skipped,
            "images_per_s": round(self.stored / elapsed, 2),
            "bytes_per_s": round(self.bytes / elapsed, 1),
            "errors": dict(self.errors.most_common()),
            "time_to_first_stored_s": (
                None
                if self.first_stored_at is None
                else round(self.first_stored_at - self.started, 3)
            ),
        }

    def line(self, waiting: str | None = None) -> str:
        """One human-readable progress line (``waiting``: what an idle crawl waits for)."""
        s = self.snapshot()
        line = (
            f"queries {s['queries_done']}/{s['queries_total']} ({s['queries_active']} active) | "
            f"pages {s['pages']} | API calls {s['api_calls']} ({s['api_calls_per_s']}/s) | "
            f"downloaded {s['downloaded']} | stored {s['dataset_stored']} "
            f"(+{s['stored']} this run) | dup {s['duplicates']} | "
            f"failed {s['failed']}{_opted(s)} | {s['images_per_s']} img/s | "
            f"{s['bytes_per_s'] / 1e6:.2f} MB/s"
        )
        if waiting:
            line += f" | idle {self.idle():.0f} s: waiting for {waiting}"
        return line


Waiting = Callable[[], str]


class ProgressReporter:
    """Shows :class:`Counters` until cancelled: rich on a TTY, else a log line per ``interval``.

    ``waiting`` tells what the crawl waits for; it is shown once nothing has happened for
    :data:`IDLE_AFTER` seconds (a throttled API, slow downloads, a quota pause...).
    """

    def __init__(
        self,
        counters: Counters,
        *,
        live: bool,
        interval: float = 5.0,
        waiting: Waiting | None = None,
    ) -> None:
        self.counters = counters
        self.live = live
        self.interval = interval
        self.waiting = waiting

    def _waiting(self) -> str | None:
        if self.waiting is None or self.counters.idle() < IDLE_AFTER:
            return None
        return self.waiting()

    async def run(self) -> None:
        """Report until cancelled."""
        if self.live:
            await self._run_live()
        else:
            while True:
                await asyncio.sleep(self.interval)
                log.info("%s", self.counters.line(self._waiting()))

    async def _run_live(self) -> None:
        from rich.live import Live  # imported here: only a TTY run pays for rich

        with Live(self._table(), refresh_per_second=4, transient=True) as live:
            while True:
                await asyncio.sleep(0.25)
                live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table

        s = self.counters.snapshot()
        table = Table(title="bingcrawl", show_header=False, expand=False)
        table.add_row(
            "queries",
            f"{s['queries_done']}/{s['queries_total']} done, {s['queries_active']} active",
        )
        table.add_row(
            "pages / API calls", f"{s['pages']} / {s['api_calls']} ({s['api_calls_per_s']}/s)"
        )
        table.add_row("downloaded", f"{s['downloaded']} ({s['bytes_per_s'] / 1e6:.2f} MB/s)")
        table.add_row(
            "stored",
            f"{s['dataset_stored']} in the dataset (+{s['stored']} this run, "
            f"{s['images_per_s']} img/s)",
        )
        table.add_row("duplicate / failed", f"{s['duplicates']} / {s['failed']}{_opted(s)}")
        waiting = self._waiting()
        if waiting:
            table.add_row("waiting for", f"{waiting} (idle {self.counters.idle():.0f} s)")
        return table


def _opted(stats: dict[str, Any]) -> str:
    """`` (N opted out)`` when publishers' opt-outs excluded images, else nothing."""
    n = stats.get("opted_out", 0)
    return f" ({n} opted out)" if n else ""


def summary_table(stats: dict[str, Any]) -> str:
    """The end-of-run summary as plain text (also fine for logs and non-TTY output)."""
    rows: list[tuple[str, object]] = []
    if "dataset_stored" in stats:
        rows.append(("images in the dataset", stats["dataset_stored"]))
    rows += [
        ("stored (this run)", stats.get("stored", 0)),
        ("duplicates", stats.get("duplicates", 0)),
        ("failed", f"{stats.get('failed', 0)}{_opted(stats)}"),
        ("skipped (limit reached)", stats.get("skipped", 0)),
        ("API calls", stats.get("api_calls", 0)),
        ("images/s", stats.get("images_per_s", 0)),
        ("elapsed (s)", stats.get("elapsed_s", 0)),
    ]
    errors = stats.get("errors") or {}
    rows += [(f"  {k}", v) for k, v in errors.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
