"""Producers: the coroutines that turn sources into checkpointed candidates on the frontier.

Order of a run: register the root queries in the checkpoint (refusing a label change for a
known query), re-queue what an earlier run left pending, then page every active query, at
most ``--max-active-queries`` at once, each through the one :class:`~bingcrawl.pipeline.
ratelimit.ApiGate`. A page's new candidates and the query's next offset commit in one
transaction before the candidates are queued, so a crash never loses a page and a resumed
run never requests a completed page again.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING

from bingcrawl.bing.client import BingClient
from bingcrawl.bing.models import Image, Images
from bingcrawl.bing.params import SearchParams
from bingcrawl.errors import (
    ApiConnectionError,
    ConfigError,
    InvalidRequestError,
    ResumeMismatchError,
    ServerError,
)
from bingcrawl.obs.logs import log_context
from bingcrawl.records import Candidate, Source

if TYPE_CHECKING:
    from bingcrawl.pipeline.crawler import Crawler, Producer, QueryState
    from bingcrawl.store.checkpoint import QueryRow

__all__ = ["candidate_from_image", "default_producers", "norm_query"]

log = logging.getLogger(__name__)


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


def default_producers(crawler: Crawler) -> list[Producer]:
    """The producers a config asks for (search; more sources plug in here)."""
    return [_run_queries]


async def _register_queries(crawler: Crawler) -> list[QueryRow]:
    cp = crawler.checkpoint
    known = {(row.source, row.norm): row for row in await cp.queries()}
    differences: dict[str, tuple[object, object]] = {}
    for spec in crawler.config.queries:
        old = known.get((Source.SEARCH.value, norm_query(spec.text)))
        if old is not None and old.label != spec.label:
            differences[f"label of {spec.text!r}"] = (old.label, spec.label)
    if differences and not crawler.config.fresh:
        raise ResumeMismatchError(differences)
    rows = []
    for spec in crawler.config.queries:
        rows.append(
            await cp.upsert_query(
                source=Source.SEARCH.value,
                label=spec.label,
                text=spec.text,
                norm=norm_query(spec.text),
                params=crawler.config.filter_map(),
            )
        )
    return rows


async def _resume_pending(crawler: Crawler) -> int:
    """Queue what an earlier run left pending (re-queued in-flight rows included)."""
    n = 0
    async for candidate in crawler.checkpoint.iter_pending():
        state = crawler.queries.get(candidate.query_id)
        if state is None:
            continue
        await crawler.enqueue(state, [candidate])
        n += 1
    if n:
        log.info("resumed %d pending candidates", n)
    return n


async def _run_queries(crawler: Crawler) -> None:
    cp = crawler.checkpoint
    roots = await _register_queries(crawler)
    counts = await cp.stored_counts()
    for row in await cp.queries():
        crawler.query_state(row.id, row.label, row.text, counts.get(row.id, 0))
    # A raised --limit: what an earlier run skipped as surplus is wanted again.
    wanting = [row.id for row in roots if not crawler.queries[row.id].full()]
    if wanting and (n := await cp.requeue_skipped(wanting)):
        log.info("limit raised: %d skipped candidates queued again", n)
        roots = await _register_queries(crawler)
    crawler.counters.queries_total = len(roots)
    await _resume_pending(crawler)
    active = [
        row for row in roots if row.state == "active" and not crawler.queries[row.id].full()
    ]
    crawler.counters.queries_done = len(roots) - len(active)
    if not active:
        return
    if not crawler.config.key:
        raise ConfigError("--key", "a subscription key is needed to search")
    client = await crawler.enter_context().enter_async_context(
        BingClient(
            crawler.config.key,
            crawler.config.endpoint,
            user_agent=crawler.config.user_agent,
            on_response=lambda endpoint, status: _account(crawler, endpoint, status),
        )
    )
    slots = asyncio.Semaphore(crawler.config.max_active_queries)

    async def one(row: QueryRow) -> None:
        async with slots:
            crawler.counters.queries_active += 1
            try:
                with log_context(query=row.text, label=row.label):
                    await _page_query(crawler, client, row, crawler.queries[row.id])
            finally:
                crawler.counters.queries_active -= 1
                crawler.counters.queries_done += 1

    async with asyncio.TaskGroup() as tg:
        for row in active:
            tg.create_task(one(row), name=f"query-{row.id}")


def _account(crawler: Crawler, endpoint: str, status: int) -> None:
    counters = crawler.counters
    counters.api_calls += 1
    counters.api_by_status[(endpoint, status)] += 1
    counters.progressed()
    crawler.checkpoint.record_api_call(endpoint, status)


async def _page_query(
    crawler: Crawler, client: BingClient, row: QueryRow, state: QueryState
) -> None:
    """Page one query until it has its limit, runs out of results, or fails."""
    cp = crawler.checkpoint
    params = SearchParams.from_mapping(
        {"q": row.text, "count": crawler.config.count, **crawler.config.filter_map()}
    )
    license = crawler.config.filter_map().get("license")
    offset = row.next_offset
    seen_ids: set[str] = set()
    seen_urls: set[str] = set()
    while True:
        while not state.needs_more():
            if state.full():
                await cp.set_query_state(row.id, "done")
                return
            state.changed.clear()
            await state.changed.wait()
        page_params = params.with_offset(offset)
        try:
            page: Images = await crawler.gate.call("search", partial(client.search, page_params))
        except InvalidRequestError as exc:
            log.error("query %r refused by the API: %s", row.text, exc)
            await cp.set_query_state(row.id, "failed", error=str(exc))
            return
        except (ServerError, ApiConnectionError) as exc:
            # Retries are spent (the gate retried them): this query fails, the run goes on.
            log.error("query %r: the API kept failing: %s", row.text, exc)
            await cp.set_query_state(row.id, "failed", error=str(exc))
            return
        crawler.crash.hit("api_response")
        crawler.counters.pages += 1
        fresh: list[Candidate] = []
        for image in page.value:
            if (image.image_id and image.image_id in seen_ids) or (
                image.content_url and image.content_url in seen_urls
            ):
                continue
            if image.image_id:
                seen_ids.add(image.image_id)
            if image.content_url:
                seen_urls.add(image.content_url)
            candidate = candidate_from_image(
                image, label=row.label, query=row.text, source=Source.SEARCH, license=license
            )
            if candidate is not None:
                fresh.append(candidate)
        next_offset = page.next_offset if page.next_offset is not None else offset + len(page.value)
        exhausted = not page.value or next_offset <= offset
        inserted = await cp.record_page(
            row.id, offset=offset, next_offset=next_offset, exhausted=exhausted, candidates=fresh
        )
        crawler.crash.hit("page_committed")
        await crawler.enqueue(state, inserted)
        if exhausted:
            log.info("query %r: no more results after offset %d", row.text, offset)
            return
        offset = next_offset
