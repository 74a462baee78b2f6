"""What every source shares: the one API client, row bookkeeping and the paging loop.

A :class:`SourceContext` lives for one run of the producers. It opens the
:class:`~bingcrawl.bing.client.BingClient` lazily, on the crawler's exit stack, the first time
a source needs the API (a resumed run with nothing left to ask opens no connection), so every
source shares one session and one ``X-MSEdge-ClientID``. Every call goes through
:meth:`SourceContext.call`, i.e. the crawler's one :class:`~bingcrawl.pipeline.ratelimit.
ApiGate`: one QPS bucket, one retry policy, one ``--max-api-calls`` budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bingcrawl.bing.client import DEFAULT_ENDPOINT, BingClient
from bingcrawl.bing.models import Image
from bingcrawl.errors import (
    ApiConnectionError,
    BingCrawlError,
    ConfigError,
    IncompleteCrawlError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
)
from bingcrawl.obs.logs import log_context
from bingcrawl.records import Candidate, Source
from bingcrawl.store.rows import QueryRow

if TYPE_CHECKING:
    from bingcrawl.pipeline.crawler import Crawler, QueryState

__all__ = [
    "LOCALE_PARAMS",
    "RETRYABLE_ROW_ERRORS",
    "ROW_ERRORS",
    "UNLIMITED",
    "Fetch",
    "SourceContext",
    "candidate_from_image",
    "norm_query",
]

log = logging.getLogger("bingcrawl.sources")

T = TypeVar("T")

#: A --limit that never binds (URL lists without an explicit --limit).
UNLIMITED = 1 << 62

#: Search filters that also apply to details, visual search and trending (locale, safety).
LOCALE_PARAMS: Mapping[str, str] = {
    "mkt": "mkt",
    "cc": "cc",
    "setLang": "set_lang",
    "safeSearch": "safe_search",
    "Accept-Language": "accept_language",
}

#: One page of a paged source: the images and the API's ``nextOffset`` (None if absent).
Fetch = Callable[[int], Awaitable[tuple[Sequence[Image], int | None]]]

# API answers that end one row (the run goes on): a refused request (the row is failed for
# good), or an API that kept failing with 5xx after the gate spent its retries (the row stays
# active, with its error, for the next run). An unreachable API is not a row's fault: it
# stops the API for the run (see SourceContext.guard).
ROW_ERRORS = (InvalidRequestError, NotFoundError, ServerError, ThrottledError)

#: Row errors a re-run may not meet: the row stays ``active`` and is retried next run. (A 200
#: whose JSON is not the documented object, ResponseFormatError, is a ServerError too, but
#: the same answer would come back: that row fails.)
RETRYABLE_ROW_ERRORS = (ServerError, ThrottledError)


def retryable(exc: BaseException) -> bool:
    """True for a row error a later run may not meet (a 5xx, a throttle that never ended)."""
    return isinstance(exc, RETRYABLE_ROW_ERRORS) and not isinstance(exc, ResponseFormatError)


def norm_query(text: str) -> str:
    """Case- and space-insensitive form of a query, for matching."""
    return " ".join(text.casefold().split())


def candidate_from_image(
    image: Image,
    *,
    label: str,
    query: str,
    source: Source,
    license: str | None,
    parent: str | None = None,
) -> Candidate | None:
    """A candidate for one API image (None when the image has no content URL)."""
    if not image.content_url:
        return None
    return Candidate(
        url=image.content_url,
        label=label,
        query=query,
        source=source,
        image_id=image.image_id,
        name=image.name,
        host_page_url=image.host_page_url,
        thumbnail_url=image.thumbnail_url,
        insights_token=image.image_insights_token,
        encoding_format=image.encoding_format,
        reported_width=image.width,
        reported_height=image.height,
        license=license,
        parent=parent,
    )


class SourceContext:
    """Shared state of the sources during one :meth:`Crawler.run`."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.config = crawler.config
        self.checkpoint = crawler.checkpoint
        #: Every query row known to this run, by id (rows added by sources included).
        self.rows: dict[int, QueryRow] = {}
        self._stored: dict[int, int] = {}
        self._client: BingClient | None = None
        self._client_lock = asyncio.Lock()
        #: The quota (or --max-api-calls) error that stopped the API, once one did.
        self.quota: QuotaExceededError | None = None
        #: The connection error that stopped the API (unreachable after its retries).
        self.unreachable: ApiConnectionError | None = None
        #: Rows (and other API work) left unfinished by a retryable API error this run.
        self.incomplete: list[str] = []
        self._kept: set[int] = set()

    # -- the API ---------------------------------------------------------------------------

    async def client(self) -> BingClient:
        """The crawl's one API client, opened on first use and closed with the crawler."""
        async with self._client_lock:
            if self._client is None:
                if not self.config.key:
                    raise ConfigError("--key", "a subscription key is needed to call the API")
                self._client = await self.crawler.enter_context().enter_async_context(
                    BingClient(
                        self.config.key,
                        self.config.endpoint,
                        user_agent=self.config.user_agent,
                        on_response=self._account,
                    )
                )
            return self._client

    async def call(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One API request under the crawl's limiter, retry policy and call budget.

        The gate counts the call in the checkpoint (committed) before it takes the grant, so
        a kill -9 right after the response cannot hide a call from ``--max-api-calls``.
        """
        # Only what stops the API for everyone (quota, unreachable) stops a call here; a
        # query left on its 5xx concerns that query alone (reported at the end of the run).
        if self.quota is not None:
            raise self.quota
        if self.unreachable is not None:
            raise self.unreachable
        return await self.crawler.gate.call(endpoint, fn)

    def api_stopped(self) -> bool:
        """True once the quota or an unreachable API stopped the API: no new API work."""
        return self.quota is not None or self.unreachable is not None

    def stop_error(self) -> BingCrawlError | None:
        """The error the run ends with once the sources are done (None: they all finished)."""
        if self.quota is not None:
            return self.quota
        if self.unreachable is not None:
            return self.unreachable
        if self.incomplete:
            n = len(self.incomplete)
            shown = ", ".join(self.incomplete[:5]) + (" ..." if n > 5 else "")
            what = "an API request" if n == 1 else f"{n} API requests"
            return IncompleteCrawlError(
                f"{what} kept failing on server errors ({shown}); the rest of the crawl is "
                "done and nothing was marked failed: re-run the same command to retry"
            )
        return None

    async def guard(self, work: Awaitable[None]) -> None:
        """Run ``work``; a quota error or an unreachable API stops it (and every later call)
        but not its siblings.

        Cancelling sibling tasks on the first such error would abandon requests already sent,
        which the API counts but the checkpoint would not; instead every source winds down on
        its own and :func:`~bingcrawl.pipeline.producers.run_sources` raises the error once
        all are done. Nothing is marked failed: a re-run resumes.
        """
        try:
            await work
        except QuotaExceededError as exc:
            if self.quota is None:
                self.quota = exc
                log.warning("API calls stop: %s", exc)
        except ApiConnectionError as exc:
            if self.unreachable is None:
                self.unreachable = ApiConnectionError(
                    f"{exc}. {self._unreachable_hint()}", sent=exc.sent
                )
                log.warning("the API cannot be reached: no more API calls this run (%s)", exc)

    def _unreachable_hint(self) -> str:
        endpoint = self.config.endpoint
        if endpoint.rstrip("/") == DEFAULT_ENDPOINT.rstrip("/"):
            return (
                f"{endpoint} is the Bing Search API, which Microsoft retired on 11 Aug 2025: "
                "re-run with --endpoint (or BING_SEARCH_V7_ENDPOINT) pointing at a compatible "
                "service, or try `bingcrawl demo` for the built-in emulator; nothing was "
                "marked failed, so that run resumes this one"
            )
        return (
            "Nothing was marked failed: re-run the same command to resume once the API is "
            "reachable"
        )

    def _account(self, endpoint: str, status: int) -> None:
        counters = self.crawler.counters
        counters.api_calls += 1
        counters.api_by_status[(endpoint, status)] += 1
        counters.progressed()
        self.checkpoint.record_api_call(endpoint, status)

    def locale(self) -> dict[str, Any]:
        """Locale and SafeSearch filters as keyword arguments of the non-search params."""
        filters = self.config.filter_map()
        return {attr: filters[name] for name, attr in LOCALE_PARAMS.items() if name in filters}

    # -- rows ------------------------------------------------------------------------------

    async def load_rows(self) -> list[QueryRow]:
        """Read every query row and its stored count (once, before any source runs)."""
        self._stored = await self.checkpoint.stored_counts()
        rows = await self.checkpoint.queries()
        self.rows = {row.id: row for row in rows}
        return rows

    async def add_row(self, **fields: Any) -> QueryRow:
        """Upsert a query row (see :meth:`Checkpoint.upsert_query`) and remember it."""
        row = await self.checkpoint.upsert_query(**fields)
        self.rows[row.id] = row
        return row

    def track(self, row: QueryRow) -> QueryState:
        """The live state of a row; URL lists get their own limit (see ``url_limit``)."""
        state = self.crawler.query_state(row.id, row.label, row.text, self._stored.get(row.id, 0))
        if row.source == Source.URLS.value:
            state.limit = self.config.url_limit or UNLIMITED
        return state

    async def run_row(self, row: QueryRow, work: Awaitable[None]) -> None:
        """Run one row's work with progress counters and log context."""
        counters = self.crawler.counters
        counters.queries_active += 1
        try:
            with log_context(query=row.text, label=row.label):
                await self.guard(work)
        finally:
            counters.queries_active -= 1
        # Not when a stop cancelled it, the API stopped under it, or it is kept for the next
        # run: the row is not done, and the totals must say so.
        if not self.api_stopped() and row.id not in self._kept:
            counters.queries_done += 1

    async def wait_for_room(self, row: QueryRow, state: QueryState) -> bool:
        """Wait until ``row`` may take more candidates; False (the row marked done) once it
        has its limit of stored images."""
        while not state.needs_more():
            if state.full():
                await self.checkpoint.set_query_state(row.id, "done")
                return False
            await state.wait_change()
        return True

    async def fail_row(self, row: QueryRow, exc: Exception) -> None:
        """End a row's work for this run after an API error that concerns only this row.

        A refused request fails the row for good; a retryable error (5xx that outlasted the
        retries) leaves it ``active`` with its error, so the next run tries it again, and
        makes this run end with :class:`IncompleteCrawlError`.
        """
        if retryable(exc):
            log.error("%s %r: %s (kept for the next run)", row.source, row.text, exc)
            self.incomplete.append(repr(row.text))
            self._kept.add(row.id)
            await self.checkpoint.set_query_state(row.id, "active", error=str(exc)[:500])
            return
        log.error("%s %r: %s", row.source, row.text, exc)
        await self.checkpoint.set_query_state(row.id, "failed", error=str(exc)[:500])

    # -- paging ----------------------------------------------------------------------------

    async def page_row(
        self,
        row: QueryRow,
        state: QueryState,
        fetch: Fetch,
        make: Callable[[Image], Candidate | None],
        *,
        stop_when_stale: bool = False,
    ) -> None:
        """Page one row from its ``next_offset`` until it has its limit, runs out, or fails.

        A page's new candidates and the row's next offset commit in one transaction before
        the candidates are queued. Paging stops on an empty page or a ``nextOffset`` that does
        not advance; with ``stop_when_stale`` also on a later page that brings nothing new
        (an API that ignores the offset would otherwise be asked forever).
        """
        cp = self.checkpoint
        crawler = self.crawler
        offset = row.next_offset
        seen: set[str] = set()
        while True:
            if not await self.wait_for_room(row, state):
                return
            try:
                images, api_next = await fetch(offset)
            except ROW_ERRORS as exc:
                await self.fail_row(row, exc)
                return
            crawler.crash.hit("api_response")
            crawler.counters.pages += 1
            fresh: list[Candidate] = []
            new_images = 0
            for image in images:
                keys = [k for k in (image.image_id, image.content_url) if k]
                if any(k in seen for k in keys):
                    continue
                seen.update(keys)
                new_images += 1
                candidate = make(image)
                if candidate is not None:
                    fresh.append(candidate)
            next_offset = api_next if api_next is not None else offset + len(images)
            exhausted = not images or next_offset <= offset
            if stop_when_stale and offset > row.next_offset and not new_images:
                exhausted = True
            inserted = await cp.record_page(
                row.id,
                offset=offset,
                next_offset=max(next_offset, offset),
                exhausted=exhausted,
                candidates=fresh,
            )
            crawler.crash.hit("page_committed")
            await crawler.enqueue(state, inserted)
            if exhausted:
                log.info("%s %r: no more results after offset %d", row.source, row.text, offset)
                return
            offset = next_offset
