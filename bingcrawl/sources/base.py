"""What every source shares: what it may ask of the crawl, the API client, rows and paging.

Sources see the crawl through :class:`SourceHost`, a narrow protocol (the
:class:`~bingcrawl.engine.crawler.Crawler` implements it): the config and the checkpoint, one
way to call the API, one way to hand candidates to the workers, the live state of a query,
the event stream, and the hash pool and dedup index for seed images. Nothing here imports
the engine.

A :class:`SourceContext` lives for one run of the sources. It opens the
:class:`~bingcrawl.bing.client.BingClient` lazily, on the host's exit stack, the first time a
source needs the API (a resumed run with nothing left to ask opens no connection), so every
source shares one session and one ``X-MSEdge-ClientID``. Every call goes through
:meth:`SourceContext.call`, i.e. the host's one API gate: one QPS bucket, one retry policy,
one ``--max-api-calls`` budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Protocol, TypeVar

from bingcrawl.bing.client import DEFAULT_ENDPOINT, BingClient
from bingcrawl.bing.models import Image
from bingcrawl.config import CrawlConfig
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
from bingcrawl.events import (
    ApiResponse,
    Event,
    PageCommitted,
    PageReceived,
    QueryDone,
    QueryStarted,
    QueryStopped,
)
from bingcrawl.obs.logs import log_context
from bingcrawl.providers.base import SearchProvider, candidate_from_hit
from bingcrawl.providers.bing import BingSearch, hit_from_image
from bingcrawl.providers.brave import BraveSearch
from bingcrawl.providers.openverse import OpenverseSearch
from bingcrawl.providers.serpapi import SerpApiSearch
from bingcrawl.providers.wikimedia import WikimediaSearch
from bingcrawl.records import Candidate, Hashed, HashFailure, Source
from bingcrawl.store.checkpoint import Checkpoint
from bingcrawl.store.rows import QueryRow

__all__ = [
    "LOCALE_PARAMS",
    "RETRYABLE_ROW_ERRORS",
    "ROW_ERRORS",
    "UNLIMITED",
    "Fetch",
    "QueryTrack",
    "SourceContext",
    "SourceHost",
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

#: One page of a paged source: its items (API images, provider hits) and the next offset
#: (None if the API gave none: the offset after this page's items).
Fetch = Callable[[int], Awaitable[tuple[Sequence[T], int | None]]]

# API answers that end one row (the run goes on): a refused request (the row is failed for
# good), or an API that kept failing with 5xx after the gate spent its retries (the row stays
# active, with its error, for the next run). An unreachable API is not a row's fault: it
# stops the API for the run (see SourceContext.guard).
ROW_ERRORS = (InvalidRequestError, NotFoundError, ServerError, ThrottledError)

#: Row errors a re-run may not meet: the row stays ``active`` and is retried next run. (A 200
#: whose JSON is not the documented object, ResponseFormatError, is a ServerError too, but
#: the same answer would come back: that row fails.)
RETRYABLE_ROW_ERRORS = (ServerError, ThrottledError)


class QueryTrack(Protocol):
    """The live state of one query, as a source sees it: its limit and whether it wants
    more candidates."""

    limit: int

    def full(self) -> bool:
        """True once the query has its limit of stored images."""
        ...

    def needs_more(self) -> bool:
        """True while more candidates could still be stored under the limit."""
        ...

    async def wait_change(self) -> None:
        """Return after the query's counts change (an outcome, a write that ended)."""
        ...


class SourceHost(Protocol):
    """What a source may use of the crawl that runs it (the Crawler implements this)."""

    @property
    def config(self) -> CrawlConfig: ...

    @property
    def checkpoint(self) -> Checkpoint: ...

    def enter_context(self) -> AsyncExitStack:
        """The crawl's exit stack: a resource a source opens (the API client) closes with
        the crawl."""
        ...

    async def call_api(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One API request under the crawl's budget, QPS limit and retry policy."""
        ...

    def query_state(self, row_id: int, label: str, text: str, stored: int) -> QueryTrack:
        """Register (or return) the live state of a checkpointed query row."""
        ...

    async def enqueue(self, candidates: list[Candidate]) -> None:
        """Hand checkpointed candidates of registered queries to the download workers."""
        ...

    async def settled(self) -> None:
        """Wait until every queued candidate has its outcome."""
        ...

    async def release_query(self, row_id: int) -> None:
        """Wait until the queued candidates of a row have their outcomes, then drop its live
        state (a row that will not be run again in this crawl)."""
        ...

    def emit(self, event: Event) -> None:
        """Report what the source did (see :mod:`bingcrawl.events`)."""
        ...

    async def hash_bytes(self, data: bytes) -> Hashed | HashFailure:
        """Decode and hash image bytes in the crawl's hash pool."""
        ...

    def add_to_index(self, hashed: Hashed) -> None:
        """Enter an image that is not to be stored into the dedup index (a seed image)."""
        ...


def provider_client(
    config: CrawlConfig, on_response: Callable[[str, int], None]
) -> OpenverseSearch | WikimediaSearch | BraveSearch | SerpApiSearch:
    """The (unopened) client of ``config.provider``, for every provider but Bing."""
    common: dict[str, Any] = {"user_agent": config.user_agent, "on_response": on_response}
    if config.provider == "openverse":
        return OpenverseSearch(
            config.endpoint,
            client_id=config.client_id,
            client_secret=config.client_secret,
            **common,
        )
    if config.provider == "wikimedia":
        return WikimediaSearch(config.endpoint, **common)
    if not config.key:
        raise ConfigError("--key", f"provider {config.provider} needs a key")
    if config.provider == "brave":
        return BraveSearch(config.key, config.endpoint, **common)
    if config.provider == "serpapi":
        return SerpApiSearch(config.key, config.endpoint, engine=config.serpapi_engine, **common)
    raise ConfigError("--provider", f"no client for provider {config.provider!r}")


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
    hit = hit_from_image(image)
    if hit is None:
        return None
    return candidate_from_hit(
        hit, label=label, query=query, source=source, license=license, parent=parent,
        provider="bing",
    )  # fmt: skip


class SourceContext:
    """Shared state of the sources during one :meth:`Crawler.run`."""

    def __init__(self, host: SourceHost) -> None:
        self.host = host
        self.config = host.config
        self.checkpoint = host.checkpoint
        #: Every query row known to this run, by id (rows added by sources included).
        self.rows: dict[int, QueryRow] = {}
        self._stored: dict[int, int] = {}
        self._client: BingClient | None = None
        self._provider: SearchProvider | None = None
        self._provider_lock = asyncio.Lock()
        self._client_lock = asyncio.Lock()
        #: The quota (or --max-api-calls) error that stopped the API, once one did.
        self.quota: QuotaExceededError | None = None
        #: The connection error that stopped the API (unreachable after its retries).
        self.unreachable: ApiConnectionError | None = None
        #: Rows (and other API work) left unfinished by a retryable API error this run.
        self.incomplete: list[str] = []
        self._kept: set[int] = set()

    # -- the API ---------------------------------------------------------------------------

    async def provider(self) -> SearchProvider:
        """The crawl's search provider, opened on first use and closed with the crawl
        (Bing's ``/images/search`` shares the one API client)."""
        async with self._provider_lock:
            if self._provider is not None:
                return self._provider
            made: SearchProvider
            if self.config.provider == "bing":
                made = BingSearch(await self.client())
            else:
                made = await self.host.enter_context().enter_async_context(
                    provider_client(self.config, self._account)
                )
            self._provider = made
            return made

    async def client(self) -> BingClient:
        """The crawl's one API client, opened on first use and closed with the crawler."""
        async with self._client_lock:
            if self._client is None:
                if not self.config.key:
                    raise ConfigError("--key", "a subscription key is needed to call the API")
                self._client = await self.host.enter_context().enter_async_context(
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
        return await self.host.call_api(endpoint, fn)

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
        its own and :func:`~bingcrawl.sources.runner.run_sources` raises the error once
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
        self.checkpoint.record_api_call(endpoint, status)
        self.host.emit(ApiResponse(endpoint, status))

    def locale(self) -> dict[str, Any]:
        """Locale and SafeSearch filters as keyword arguments of the non-search params."""
        filters = self.config.filter_map()
        return {attr: filters[name] for name, attr in LOCALE_PARAMS.items() if name in filters}

    # -- rows ------------------------------------------------------------------------------

    async def load_rows(self) -> list[QueryRow]:
        """Read the query rows and their stored counts (once, before any source runs): every
        row but the ``similar`` ones already asked (one per stored image asked about: memory
        O(rows still to run), not O(stored); :meth:`load_more` reads one when a pending
        candidate of it is resumed)."""
        rows = await self.checkpoint.queries(finished_similar=False)
        self.rows = {row.id: row for row in rows}
        self._stored = await self.checkpoint.stored_counts(self.rows)
        return rows

    async def load_more(self, ids: Collection[int]) -> list[QueryRow]:
        """Read (and remember, with their stored counts) the rows of these ids."""
        rows = await self.checkpoint.query_rows(list(ids))
        self._stored.update(await self.checkpoint.stored_counts([row.id for row in rows]))
        for row in rows:
            self.rows[row.id] = row
        return rows

    @property
    def kept(self) -> frozenset[int]:
        """Rows kept ``active`` for the next run after a retryable error (see
        :meth:`fail_row`)."""
        return frozenset(self._kept)

    def forget(self, row: QueryRow) -> None:
        """Let go of a row whose work is over (a ``similar`` row); its live state goes once
        its candidates have their outcomes (:meth:`SourceHost.release_query`)."""
        self.rows.pop(row.id, None)
        self._stored.pop(row.id, None)

    async def add_row(self, **fields: Any) -> QueryRow:
        """Upsert a query row (see :meth:`Checkpoint.upsert_query`) and remember it."""
        row = await self.checkpoint.upsert_query(**fields)
        self.rows[row.id] = row
        return row

    def track(self, row: QueryRow) -> QueryTrack:
        """The live state of a row; URL lists get their own limit (see ``url_limit``)."""
        state = self.host.query_state(row.id, row.label, row.text, self._stored.get(row.id, 0))
        if row.source == Source.URLS.value:
            state.limit = self.config.url_limit or UNLIMITED
        return state

    async def run_row(self, row: QueryRow, work: Awaitable[None]) -> None:
        """Run one row's work with progress counters and log context."""
        self.host.emit(QueryStarted(row.id))
        try:
            with log_context(query=row.text, label=row.label):
                await self.guard(work)
        finally:
            self.host.emit(QueryStopped(row.id))
        # Not when a stop cancelled it, the API stopped under it, or it is kept for the next
        # run: the row is not done, and the totals must say so.
        if not self.api_stopped() and row.id not in self._kept:
            self.host.emit(QueryDone(row.id))

    async def wait_for_room(self, row: QueryRow, state: QueryTrack) -> bool:
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
        state: QueryTrack,
        fetch: Fetch[T],
        make: Callable[[T], Candidate | None],
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
        host = self.host
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
            host.emit(PageReceived(row.source, row.id))
            fresh: list[Candidate] = []
            new_images = 0
            for image in images:
                candidate = make(image)
                keys = [k for k in (candidate.image_id, candidate.url) if k] if candidate else []
                if any(k in seen for k in keys):
                    continue
                seen.update(keys)
                new_images += 1
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
            host.emit(PageCommitted(row.id, len(inserted)))
            await host.enqueue(inserted)
            if exhausted:
                log.info("%s %r: no more results after offset %d", row.source, row.text, offset)
                return
            offset = next_offset
