"""Trending images: one ``GET /images/trending``; each category's tiles, labelled by category.

Every category becomes a ``trending`` row (label = :func:`~bingcrawl.config.safe_label` of its
title); its tiles' images are its candidates (``query`` = the tile's query, ``parent`` = the
category title). With ``--expand DEPTH`` the tiles' queries are also searched, as expanded
queries one level under their category (the search source pages them).

Checkpoint: all category rows are registered first, then each category's candidates commit
with the row's ``exhausted`` state. A resumed run asks again only while some category row is
still ``active`` (a crash part-way); categories no longer trending are then closed.
"""

from __future__ import annotations

import logging
from functools import partial

from bingcrawl.bing.params import TrendingParams
from bingcrawl.config import safe_label
from bingcrawl.events import PageCommitted, PageReceived, QueryAdded, QueryDone
from bingcrawl.records import Candidate, Source
from bingcrawl.sources.base import (
    ROW_ERRORS,
    SourceContext,
    candidate_from_image,
    norm_query,
    retryable,
)
from bingcrawl.sources.search import MAX_QUERY_LENGTH, SearchSource

__all__ = ["HOLD", "run_trending"]

log = logging.getLogger("bingcrawl.sources.trending")

#: The key under which the trending source holds the search queue.
HOLD = "trending"


async def run_trending(ctx: SourceContext, search: SearchSource) -> None:
    """Ask for today's trending images once (per crawl) and queue them.

    ``search.queue`` must be held under :data:`HOLD` (at depth 0) by the caller while this
    runs, so that the tiles' queries can still be queued, and are known before deeper
    expansions; it is released here.
    """
    try:
        await ctx.guard(_trending(ctx, search))
    finally:
        search.queue.release(HOLD)


async def _trending(ctx: SourceContext, search: SearchSource) -> None:
    known = [r for r in ctx.rows.values() if r.source == Source.TRENDING.value]
    if known and all(r.state != "active" for r in known):
        return  # answered by an earlier run; its pending candidates are resumed already
    client = await ctx.client()
    try:
        answer = await ctx.call(
            "trending", partial(client.trending, TrendingParams(**ctx.locale()))
        )
    except ROW_ERRORS as exc:
        log.error("trending images: %s", exc)
        if retryable(exc):
            ctx.incomplete.append("trending images")
        return
    ctx.host.emit(PageReceived(Source.TRENDING.value, None))
    categories = []
    for category in answer.categories:
        title = " ".join((category.title or "trending").split())
        row = await ctx.add_row(
            source=Source.TRENDING.value,
            label=safe_label(title),
            text=title,
            norm=norm_query(title),
            params=ctx.locale(),
        )
        categories.append((row, category))
    answered = {row.id for row, _ in categories}
    for row, category in categories:
        ctx.track(row)
        if row.state != "active":
            continue
        ctx.host.emit(QueryAdded(row.source))
        found: list[Candidate] = []
        queries: list[str] = []
        for tile in category.tiles:
            text = " ".join((tile.query.text or tile.query.display_text or "").split())
            if text and len(text) <= MAX_QUERY_LENGTH:
                queries.append(text)
            candidate = candidate_from_image(
                tile.image,
                label=row.label,
                query=text or row.text,
                source=Source.TRENDING,
                license=None,  # trending takes no license filter
                parent=row.text,
            )
            if candidate is not None:
                found.append(candidate)
        await search.add_children(row, queries)
        inserted = await ctx.checkpoint.record_page(
            row.id, offset=0, next_offset=len(found), exhausted=True, candidates=found
        )
        ctx.host.emit(PageCommitted(row.id, len(inserted)))
        ctx.host.emit(QueryDone(row.id))
        await ctx.host.enqueue(inserted)
    for row in known:
        if row.state == "active" and row.id not in answered:
            await ctx.checkpoint.set_query_state(row.id, "exhausted")
    log.info("trending: %d categories", len(categories))
