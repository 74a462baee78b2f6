"""Similar images: ``/images/details`` (``modules=SimilarImages``) for every stored image.

With ``--similar N``, once the other sources are done and their downloads have settled,
every stored image that did not come from this source is asked about once: by its insights
token, or by its URL (``imgUrl``) when it has none (URL lists). Up to N of the visually
similar images it gets back are queued with the stored image's label and query; the
manifest's ``parent`` is the stored image's sha256. Similar images are not asked about in
turn (one level).

Checkpoint: one ``similar`` row per stored image asked (``norm`` = its sha256, ``text`` =
"similar to <path>", ``params`` = how to ask), registered before the call; the answer's
candidates and the row's ``exhausted`` state commit together, so a resumed run asks only
for the rows still ``active`` and for images stored since.

Memory is O(rows still to ask), not O(stored images): a run loads only the ``active``
similar rows, finds the images not asked yet with an anti-join on the queries' unique index
instead of a set of what was asked, and lets go of each row (and of its live state once its
candidates have their outcomes) when it has been asked.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bingcrawl.bing.params import DetailsParams
from bingcrawl.errors import CheckpointError, InvalidParameterError
from bingcrawl.events import PageCommitted, PageReceived, QueryAdded
from bingcrawl.records import Candidate, Source
from bingcrawl.sources.base import ROW_ERRORS, SourceContext, candidate_from_image
from bingcrawl.store.rows import QueryRow, url_key
from bingcrawl.store.schema import connect_readonly

__all__ = ["SimilarSource", "StoredImage", "iter_stored"]

log = logging.getLogger("bingcrawl.sources.similar")

# Stored images not asked about yet: the anti-join looks each one up in the queries'
# UNIQUE (source, label, norm) index, so the source keeps no set of what it asked.
_STORED = (
    "SELECT id, query_id, label, query, url, insights_token, sha256, path FROM candidates c "
    "WHERE status = 'stored' AND source != 'similar' AND id > ? AND NOT EXISTS "
    "(SELECT 1 FROM queries q WHERE q.source = 'similar' AND q.label = c.label "
    "AND q.norm = c.sha256) ORDER BY id LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A stored image, as the similar source needs it."""

    id: int
    query_id: int
    label: str
    query: str
    url: str
    insights_token: str | None
    sha256: str
    path: str


def _stored_batch(db: Path, after: int, n: int) -> list[StoredImage]:
    conn = connect_readonly(db)
    try:
        return [StoredImage(*row) for row in conn.execute(_STORED, (after, n))]
    except sqlite3.Error as exc:
        raise CheckpointError(f"checkpoint read failed: {exc}") from exc
    finally:
        conn.close()


async def iter_stored(db: Path, *, batch: int = 500) -> AsyncIterator[StoredImage]:
    """Stored images of every source but ``similar``, by id, read ``batch`` at a time in a
    thread (committed rows only: flush the checkpoint first)."""
    after = 0
    while found := await asyncio.to_thread(_stored_batch, db, after, batch):
        for image in found:
            yield image
        after = found[-1].id


class SimilarSource:
    """Asks ``/images/details`` for the similar images of every stored image, once each."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.n = ctx.config.similar

    async def run(self, upstream_done: asyncio.Event) -> None:
        """Wait for the other sources and their downloads, then ask about stored images."""
        ctx = self.ctx
        await upstream_done.wait()
        await self._settle()
        await ctx.checkpoint.flush()
        if ctx.api_stopped():
            return
        # Only the rows still to ask are in memory (ctx.load_rows): O(active), not O(stored).
        active = [r for r in ctx.rows.values() if r.source == Source.SIMILAR.value]
        slots = asyncio.Semaphore(ctx.config.max_active_queries)
        async with asyncio.TaskGroup() as tg:

            async def ask(row: QueryRow) -> None:
                await ctx.run_row(row, self._ask(row))
                if row.id not in ctx.kept:
                    # Asked: its candidates are checkpointed and queued. Let go of the row,
                    # and of its live state once they have their outcomes.
                    ctx.forget(row)
                    tg.create_task(ctx.host.release_query(row.id))

            def start(row: QueryRow) -> None:
                ctx.host.emit(QueryAdded(row.source))
                task = tg.create_task(ask(row))
                task.add_done_callback(lambda _: slots.release())

            for row in active:
                if row.state == "active":
                    await slots.acquire()
                    start(row)
            async for image in iter_stored(ctx.checkpoint.db_path):
                if ctx.api_stopped():
                    break
                await slots.acquire()
                start(await self._register(image))

    async def _settle(self) -> None:
        # Images still in flight may yet be stored: wait until every outcome is in.
        await self.ctx.host.settled()

    async def _register(self, image: StoredImage) -> QueryRow:
        parent = self.ctx.rows.get(image.query_id)
        how = (
            {"insightsToken": image.insights_token}
            if image.insights_token
            else {"imgUrl": image.url}
        )
        return await self.ctx.add_row(
            source=Source.SIMILAR.value,
            label=image.label,
            text=f"similar to {image.path}",
            norm=image.sha256,
            parent_id=image.query_id,
            depth=(parent.depth + 1) if parent is not None else 1,
            params={**how, "query": image.query, "url": image.url, "sha256": image.sha256},
        )

    async def _ask(self, row: QueryRow) -> None:
        ctx = self.ctx
        p = {k: str(v) for k, v in row.params.items()}
        try:
            params = DetailsParams(
                insights_token=p.get("insightsToken"),
                img_url=p.get("imgUrl"),
                modules=("SimilarImages",),
                **ctx.locale(),
            )
        except InvalidParameterError as exc:
            await ctx.fail_row(row, exc)
            return
        client = await ctx.client()
        try:
            insights = await ctx.call("details", partial(client.details, params))
        except ROW_ERRORS as exc:
            await ctx.fail_row(row, exc)
            return
        ctx.host.emit(PageReceived(row.source, row.id))
        own = url_key(p.get("url", ""))
        found: list[Candidate] = []
        for image in insights.visually_similar_images:
            if len(found) >= self.n:
                break
            candidate = candidate_from_image(
                image,
                label=row.label,
                query=p.get("query", row.text),
                source=Source.SIMILAR,
                license=None,  # /images/details takes no license filter
                parent=p.get("sha256"),
            )
            if candidate is not None and url_key(candidate.url) != own:
                found.append(candidate)
        inserted = await ctx.checkpoint.record_page(
            row.id, offset=0, next_offset=len(found), exhausted=True, candidates=found
        )
        ctx.track(row)
        ctx.host.emit(PageCommitted(row.id, len(inserted)))
        await ctx.host.enqueue(inserted)
