"""URL lists (``--urls FILE``): candidates straight from a file, no API call.

One ``urls`` row per file (``text`` = the path as given, ``norm`` = the resolved path). The
file is streamed in batches of :data:`BATCH` records; each batch's candidates and the offset
after it commit in one transaction (:meth:`Checkpoint.record_page`), then are queued, and the
next batch is read only once the frontier took them, so memory stays flat for any file size
and a resumed run continues after the last committed batch.

Labels: the record's label column if present, else ``--label``, else the file's stem. The
caption column becomes the manifest's ``name``. ``--limit`` does not cut a URL list unless it
is given explicitly (``CrawlConfig.url_limit``): a list is usually meant to be fetched whole.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bingcrawl.config import safe_label
from bingcrawl.events import PageCommitted
from bingcrawl.records import Candidate, Source
from bingcrawl.sources.base import SourceContext
from bingcrawl.store.rows import QueryRow
from bingcrawl.urllist import UrlColumns, UrlListReader, open_url_list, url_format

__all__ = ["BATCH", "UrlSource"]

log = logging.getLogger("bingcrawl.sources.urls")

#: Records read, committed and queued at a time.
BATCH = 1000


class UrlSource:
    """Streams every ``--urls`` file through the pipeline."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.files = config.urls_files
        self.columns = UrlColumns(*config.url_columns)
        self._readers: dict[int, UrlListReader] = {}

    async def prepare(self) -> list[QueryRow]:
        """Register one row per file and open the files still to read (validating their
        format and columns before any request)."""
        ctx = self.ctx
        known = {r.norm: r for r in ctx.rows.values() if r.source == Source.URLS.value}
        rows = []
        for path in self.files:
            norm = str(path.resolve())
            row = known.get(norm)
            if row is None:
                row = await ctx.add_row(
                    source=Source.URLS.value,
                    label=ctx.config.label or safe_label(path.stem),
                    text=str(path),
                    norm=norm,
                    params={"format": url_format(path)},
                )
                known[norm] = row
            rows.append(row)
            if row.state == "active" and row.id not in self._readers:
                self._readers[row.id] = await asyncio.to_thread(
                    open_url_list, path, self.columns, start=row.next_offset
                )
        return rows

    def close(self) -> None:
        """Close every open file."""
        readers, self._readers = self._readers, {}
        for reader in readers.values():
            reader.close()

    async def run(self) -> None:
        """Read every open file to its end (or its row's limit)."""
        async with asyncio.TaskGroup() as tg:
            for row_id, reader in self._readers.items():
                row = self.ctx.rows[row_id]
                tg.create_task(self.ctx.run_row(row, self._read(row, reader)))

    async def _read(self, row: QueryRow, reader: UrlListReader) -> None:
        ctx = self.ctx
        cp = ctx.checkpoint
        state = ctx.track(row)
        offset = row.next_offset
        records = invalid = 0
        query = Path(row.text).name
        while True:
            if not await ctx.wait_for_room(row, state):
                return
            batch = await asyncio.to_thread(reader.read, BATCH)
            records += len(batch.entries) + batch.invalid
            invalid += batch.invalid
            found = [
                Candidate(
                    url=entry.url,
                    label=safe_label(entry.label, lower=False) if entry.label else row.label,
                    query=query,
                    source=Source.URLS,
                    name=entry.caption,
                )
                for entry in batch.entries
            ]
            inserted = await cp.record_page(
                row.id,
                offset=offset,
                next_offset=max(batch.end, offset),
                exhausted=batch.eof,
                candidates=found,
            )
            ctx.host.emit(PageCommitted(row.id, len(inserted)))
            await ctx.host.enqueue(inserted)
            if batch.eof:
                log.info("%s: %d records read, %d invalid skipped", row.text, records, invalid)
                return
            offset = batch.end
