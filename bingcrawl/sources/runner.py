"""The source runner: the producer that turns every source into checkpointed candidates.

:func:`run_sources` is the crawler's default producer; it sees the crawl only through
:class:`~bingcrawl.sources.base.SourceHost`.

Order of a run (:func:`run_sources`):

1. read the checkpoint's query rows; refuse a label change for a known root query;
2. a raised ``--limit``: what an earlier run skipped as surplus is made pending again;
3. register this run's rows: root queries, seed images (hashed into the dedup index *before*
   anything is queued, so copies of the seeds are never stored) and URL-list files (opened
   and checked before any request);
4. queue what an earlier run left pending (the query counts are known before);
5. run the sources together: search with its breadth-first expansions, visual search,
   trending, URL lists; then, once they are done and their downloads settled, similar
   images of everything stored.

Every API call of every source goes through the host's one API gate (one QPS bucket, one
retry policy, one ``--max-api-calls`` budget) with one lazily opened API client; see
:mod:`bingcrawl.sources`.
A page's (or batch's) new candidates and its row's next offset commit in one transaction
before the candidates are queued, so a crash never loses a page and a resumed run never
requests a completed page again.
"""

from __future__ import annotations

import asyncio
import logging

from bingcrawl.errors import ResumeMismatchError
from bingcrawl.events import QueriesKnown
from bingcrawl.records import Source
from bingcrawl.sources.base import SourceContext, SourceHost, candidate_from_image, norm_query
from bingcrawl.sources.search import SearchSource
from bingcrawl.sources.similar import SimilarSource
from bingcrawl.sources.trending import HOLD as TRENDING_HOLD
from bingcrawl.sources.trending import run_trending
from bingcrawl.sources.urls import UrlSource
from bingcrawl.sources.visual import VisualSource
from bingcrawl.store.rows import QueryRow

__all__ = ["candidate_from_image", "norm_query", "run_sources"]

log = logging.getLogger(__name__)


def _check_labels(ctx: SourceContext) -> None:
    known = {row.norm: row for row in ctx.rows.values() if row.source == Source.SEARCH.value}
    differences: dict[str, tuple[object, object]] = {}
    for spec in ctx.config.queries:
        old = known.get(norm_query(spec.text))
        if old is not None and old.label != spec.label:
            differences[f"label of {spec.text!r}"] = (old.label, spec.label)
    if differences and not ctx.config.fresh:
        raise ResumeMismatchError(differences)


async def _requeue_raised_limit(ctx: SourceContext) -> None:
    wanting = [row.id for row in ctx.rows.values() if not ctx.track(row).full()]
    if wanting and (n := await ctx.checkpoint.requeue_skipped(wanting)):
        log.info("limit raised: %d skipped candidates queued again", n)
        await ctx.load_rows()


async def _resume_pending(ctx: SourceContext, full: list[int]) -> list[QueryRow]:
    """Queue what an earlier run left pending (re-queued in-flight rows included) but for
    the queries in ``full``; the row of a pending candidate that was not loaded (a
    ``similar`` row already asked) is read then, and let go once its candidates have their
    outcomes."""
    n = 0
    absent: set[int] = set()
    loaded: list[QueryRow] = []
    async for candidate in ctx.checkpoint.iter_pending(except_queries=full):
        qid = candidate.query_id
        if qid not in ctx.rows:
            if qid in absent:
                continue
            found = await ctx.load_more([qid])
            if not found:
                absent.add(qid)
                continue
            ctx.track(found[0])
            loaded.append(found[0])
        await ctx.host.enqueue([candidate])
        n += 1
    if n:
        log.info("resumed %d pending candidates", n)
    return loaded


#: Rows one writer call marks skipped: the writer commits the crawl's outcomes in between.
SKIP_CHUNK = 5000


async def _skip_pending(ctx: SourceContext, full: list[int]) -> None:
    """Mark the pending candidates of queries that already hold their ``--limit`` (e.g.
    resumed with a lower one) skipped: a few thousand rows per writer call, not one outcome
    at a time through the workers, and beside the crawl rather than before it (1.5 million
    of them took 60-75 s at ten million candidates: every row rewrites its page). A stop
    leaves the rest pending; the next run skips them."""
    skipped = 0
    try:
        for query_id in full:
            while (n := await ctx.checkpoint.skip_pending([query_id], at_most=SKIP_CHUNK)):
                skipped += n
                if n < SKIP_CHUNK:
                    break
    except asyncio.CancelledError:
        if skipped:
            log.info("%d pending candidates of full queries skipped before the stop; the "
                     "next run skips the rest", skipped)  # fmt: skip
        raise
    if skipped:
        log.info("%d pending candidates of queries at their limit: skipped", skipped)


async def run_sources(host: SourceHost) -> None:
    """Run every source the config asks for, in the order the module docstring gives."""
    config = host.config
    ctx = SourceContext(host)
    await ctx.load_rows()
    _check_labels(ctx)
    await _requeue_raised_limit(ctx)

    search = SearchSource(ctx)
    roots = await search.register_roots()
    visual = VisualSource(ctx) if config.seed_images is not None else None
    urls = UrlSource(ctx) if config.urls_files else None
    try:
        if visual is not None:
            await visual.prepare()
        if urls is not None:
            await urls.prepare()
        for row in ctx.rows.values():
            ctx.track(row)

        root_ids = {row.id for row in roots}
        if config.trending:
            root_ids |= {r.id for r in ctx.rows.values() if r.source == Source.TRENDING.value}
        paged = search.schedule(root_ids)
        # Known before the pending candidates are queued (which can take a while on a large
        # resume): the progress display shows the whole crawl from its first refresh.
        done = len(ctx.rows) - paged - (len(visual.rows()) if visual else 0)
        host.emit(QueriesKnown(total=len(ctx.rows), done=done))
        full = await ctx.checkpoint.with_pending(
            [row.id for row in ctx.rows.values() if ctx.track(row).full()]
        )
        already_asked = await _resume_pending(ctx, full)
        if config.trending:
            # Released by run_trending once the tiles' queries are in; until then they are a
            # level of expansions not known yet.
            search.queue.hold(TRENDING_HOLD, depth=0)
        upstream_done = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            if full:
                tg.create_task(_skip_pending(ctx, full), name="skip-pending")
            for row in already_asked:  # their candidates are queued: let go once they settle
                ctx.forget(row)
                tg.create_task(host.release_query(row.id))
            if config.similar:
                tg.create_task(SimilarSource(ctx).run(upstream_done), name="similar")
            async with asyncio.TaskGroup() as upstream:
                upstream.create_task(search.run(), name="search")
                if config.trending:
                    upstream.create_task(run_trending(ctx, search), name="trending")
                if visual is not None:
                    upstream.create_task(visual.run(), name="visual")
                if urls is not None:
                    upstream.create_task(urls.run(), name="urls")
            upstream_done.set()
    finally:
        if urls is not None:
            urls.close()
    stopped = ctx.stop_error()
    if stopped is not None:
        raise stopped
