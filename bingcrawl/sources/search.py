"""Search and query expansion: ``/images/search`` paged per query, expanded breadth-first.

Root queries come from the config. With ``--expand DEPTH``, the first page of every query
shallower than DEPTH brings suggestions (``queryExpansions``, every pivot's ``suggestions``,
``similarTerms``); each becomes an ``expand`` row one level deeper, with the root's label and
the query it came from as parent, unless a query with the same case- and space-insensitive
text is known already or ``--max-queries`` search queries exist. Queries wait in a
:class:`QueryQueue` that hands out the shallowest first, so the crawl is breadth-first.

Crash safety: a first page's suggestions are registered *before* the page is recorded, so
a crash in between only costs the page being asked again (the children already exist). A
query whose first page was recorded by a run without ``--expand`` (no children) is asked for
its first page once more to expand it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Hashable, Iterable
from functools import partial

from bingcrawl.bing.params import MAX_QUERY_LENGTH
from bingcrawl.events import QueryAdded
from bingcrawl.providers.base import Hit, ResultPage, candidate_from_hit
from bingcrawl.records import Candidate, Source
from bingcrawl.sources.base import ROW_ERRORS, SourceContext, norm_query
from bingcrawl.store.rows import QueryRow

__all__ = ["MAX_QUERY_LENGTH", "QueryQueue", "SearchSource"]

log = logging.getLogger("bingcrawl.sources.search")

_SEARCHES = frozenset({Source.SEARCH.value, Source.EXPAND.value})


class QueryQueue:
    """Query rows waiting to be paged: shallowest first, level by level; ends when empty and
    nobody can add.

    Whoever may still add rows holds the queue under a key (:meth:`hold`; every row taken is
    held under its id until :meth:`release`), so :meth:`take` returns None only when no more
    can come. A hold with a ``depth`` also blocks deeper rows until :meth:`expanded`: a row
    is held that way until its first page has registered its suggestions, so the rows of
    level d+1 are all known before any of them is paged (and registers level d+2), whatever
    order the API answers in. That keeps ``--max-queries`` filling breadth-first.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, QueryRow]] = []
        self._holds: set[Hashable] = set()
        self._blocking: dict[Hashable, int] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, row: QueryRow) -> None:
        """Queue a row (depth, then id, decides the order)."""
        heapq.heappush(self._heap, (row.depth, row.id, row))
        self._wake.set()

    def hold(self, key: Hashable, *, depth: int | None = None) -> None:
        """``key`` may still push rows (of depth > ``depth``, if given: those wait)."""
        self._holds.add(key)
        if depth is not None:
            self._blocking[key] = depth

    def expanded(self, key: Hashable) -> None:
        """``key`` has pushed the rows of its next level: deeper rows may go."""
        if self._blocking.pop(key, None) is not None:
            self._wake.set()

    def release(self, key: Hashable) -> None:
        """``key`` is done (a taken row: its paging ended)."""
        self._holds.discard(key)
        self._blocking.pop(key, None)
        self._wake.set()

    async def take(self) -> QueryRow | None:
        """The next row, held under its id, or None when the queue is finished."""
        while True:
            if self._heap:
                depth = self._heap[0][0]
                if not self._blocking or min(self._blocking.values()) >= depth:
                    row = heapq.heappop(self._heap)[2]
                    self.hold(row.id, depth=row.depth)
                    return row
            elif not self._holds:
                return None
            self._wake.clear()
            await self._wake.wait()


class SearchSource:
    """Search queries and their expansions, paged by ``--max-active-queries`` workers."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.queue = QueryQueue()
        self.depth = config.expand_depth
        self.max_queries = config.max_queries
        self.license = config.filter_map().get("license")
        self._norms: set[str] = set()
        self._count = 0
        self._parents: set[int] = set()
        self._capped = False

    # -- registration ----------------------------------------------------------------------

    async def register_roots(self) -> list[QueryRow]:
        """Register the config's root queries (an existing row is returned as it is)."""
        ctx = self.ctx
        roots = []
        for spec in ctx.config.queries:
            roots.append(
                await ctx.add_row(
                    source=Source.SEARCH.value,
                    label=spec.label,
                    text=spec.text,
                    norm=norm_query(spec.text),
                    params=ctx.config.filter_map(),
                )
            )
        return roots

    def schedule(self, root_ids: Iterable[int]) -> int:
        """Queue the rows this run works on: the roots and, with ``--expand``, the expanded
        queries under the given roots (search roots and trending categories). Returns how
        many rows will be paged."""
        rows = self.ctx.rows.values()
        searches = [r for r in rows if r.source in _SEARCHES]
        self._norms = {r.norm for r in searches}
        self._count = len(searches)
        self._parents = {r.parent_id for r in rows if r.parent_id is not None}
        roots = set(root_ids)
        paged = 0
        for row in searches:
            if row.id in roots:
                wanted = row.source == Source.SEARCH.value
            else:
                wanted = (
                    row.source == Source.EXPAND.value
                    and row.depth <= self.depth
                    and row.root_id in roots
                )
            if not wanted:
                continue
            if row.state == "active":
                paged += 1
                self.queue.push(row)
            elif self._needs_catch_up(row):
                self.queue.push(row)
        return paged

    def _needs_catch_up(self, row: QueryRow) -> bool:
        return (
            row.depth < self.depth
            and row.pages > 0
            and row.id not in self._parents
            and not self._cap_reached()
        )

    def _cap_reached(self) -> bool:
        return self.max_queries is not None and self._count >= self.max_queries

    async def add_children(self, parent: QueryRow, texts: Iterable[str]) -> int:
        """Register expanded queries under ``parent`` (depth + 1, its label); returns how
        many are new. Duplicates of any known search query are skipped."""
        if parent.depth >= self.depth:
            return 0
        added = 0
        for text in texts:
            if self._cap_reached():
                if not self._capped:
                    self._capped = True
                    log.info("--max-queries %s reached: no more expansions", self.max_queries)
                break
            norm = norm_query(text)
            if norm in self._norms:
                continue
            self._norms.add(norm)
            self._count += 1
            child = await self.ctx.add_row(
                source=Source.EXPAND.value,
                label=parent.label,
                text=text,
                norm=norm,
                parent_id=parent.id,
                depth=parent.depth + 1,
                params=self.ctx.config.filter_map(),
            )
            self._parents.add(parent.id)
            self.ctx.track(child)
            self.ctx.host.emit(QueryAdded(child.source))
            if child.state == "active":
                self.queue.push(child)
            added += 1
        if added:
            log.info("%r: %d expanded queries at depth %d", parent.text, added, parent.depth + 1)
        return added

    # -- paging ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Page every queued row until the queue is finished."""
        workers = self.ctx.config.max_active_queries
        async with asyncio.TaskGroup() as tg:
            for i in range(workers):
                tg.create_task(self._worker(), name=f"search-{i}")

    async def _worker(self) -> None:
        while (row := await self.queue.take()) is not None:
            try:
                if not self._expands(row):
                    self.queue.expanded(row.id)
                if not self.ctx.api_stopped():
                    await self.ctx.guard(self._catch_up(row))
                if row.state == "active" and not self.ctx.api_stopped():
                    await self.ctx.run_row(row, self._page(row))
            finally:
                self.queue.release(row.id)

    def _expands(self, row: QueryRow) -> bool:
        """True if the row's first page will register suggestions in this run."""
        if row.depth >= self.depth:
            return False
        return (row.state == "active" and row.pages == 0) or self._needs_catch_up(row)

    async def _search(self, row: QueryRow, offset: int) -> ResultPage:
        """One page of ``row``'s results from the crawl's search provider."""
        config = self.ctx.config
        provider = await self.ctx.provider()
        search = partial(
            provider.search,
            row.text,
            offset=offset,
            count=config.count,
            filters=config.filter_map(),
        )
        return await self.ctx.call("search", search)

    async def _catch_up(self, row: QueryRow) -> None:
        """Ask an already paged query's first page again, only for its suggestions."""
        try:
            if not self._needs_catch_up(row):
                return
            try:
                page = await self._search(row, 0)
            except ROW_ERRORS as exc:
                log.warning("cannot expand %r: %s", row.text, exc)
                return
            await self.add_children(row, page.suggestions)
        finally:
            if row.state != "active" or row.pages > 0:
                self.queue.expanded(row.id)  # (a row not paged yet expands on its first page)

    async def _page(self, row: QueryRow) -> None:
        ctx = self.ctx
        parent = ctx.rows.get(row.parent_id) if row.parent_id is not None else None
        source = Source(row.source)

        async def fetch(offset: int) -> tuple[tuple[Hit, ...], int | None]:
            page = await self._search(row, offset)
            if offset == 0:
                await self.add_children(row, page.suggestions)
                self.queue.expanded(row.id)
            if page.next_offset is not None:
                return page.hits, page.next_offset
            # No next offset given: the next page starts after every result of this one.
            return page.hits, offset + (len(page.hits) if page.count is None else page.count)

        def make(hit: Hit) -> Candidate | None:
            return candidate_from_hit(
                hit,
                label=row.label,
                query=row.text,
                source=source,
                license=self.license,
                parent=parent.text if parent is not None else None,
                provider=ctx.config.provider,
            )

        await ctx.page_row(row, ctx.track(row), fetch, make)
