"""Where stored images go: one interface, chosen once per crawl by ``--output-format``.

An :class:`ImageSink` puts one decided image in place and says where it landed; the crawler
records that place in the image's outcome, after the sink's write is complete. Two sinks:

- :class:`FileSink` (``files``, the default): ``OUT/images/<label>/<sha16>.<ext>``, written
  atomically by :class:`~bingcrawl.store.atomic.ImageFileWriter`'s thread;
- :class:`ShardSink` (``webdataset``): tar shards under ``OUT/shards/``, each image a
  ``<sha16>.<ext>`` member followed by a ``<sha16>.json`` member that carries every manifest
  field but ``path`` and ``shard_offset`` (:class:`~bingcrawl.store.shards.ShardWriter`).

A new layout (a cloud bucket, a parquet of bytes) is a new class with :meth:`put` and
:meth:`close`, and one line in :func:`open_sink`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bingcrawl.records import OUTPUT_FORMATS, Candidate, Hashed
from bingcrawl.store.atomic import ImageFileWriter
from bingcrawl.store.schema import utc_iso
from bingcrawl.store.shards import ShardWriter

__all__ = ["FileSink", "ImageSink", "Placed", "ShardSink", "open_sink"]


@dataclass(frozen=True, slots=True)
class Placed:
    """Where an image landed: its path relative to OUT and, in a shard, its byte range."""

    path: str
    shard_offset: int | None = None
    shard_end: int | None = None


class ImageSink(Protocol):
    """Puts stored images in place. ``put`` may be called concurrently; it returns once the
    image is complete on disk (a storage fault raises ``OSError``)."""

    async def put(
        self, candidate: Candidate, hashed: Hashed, body: bytes, fetched_at: float | None
    ) -> Placed: ...

    def close(self) -> None:
        """Finish queued writes and release every handle (idempotent)."""
        ...


def member_key(hashed: Hashed) -> str:
    """The file (or member) name stem of an image: the first 16 hex digits of its sha256."""
    return hashed.sha256[:16]


def image_path(candidate: Candidate, hashed: Hashed) -> str:
    """Where :class:`FileSink` puts an image, relative to OUT."""
    return f"images/{candidate.label}/{member_key(hashed)}.{hashed.ext}"


class FileSink:
    """``OUT/images/<label>/<sha16>.<ext>``, one atomic file per image."""

    def __init__(self, out: Path, *, durable: bool = False) -> None:
        #: The writer thread's handle (tests bound its open directories, or wrap ``write``).
        self.writer = ImageFileWriter(out, durable=durable)

    async def put(
        self, candidate: Candidate, hashed: Hashed, body: bytes, fetched_at: float | None
    ) -> Placed:
        name = f"{member_key(hashed)}.{hashed.ext}"
        return Placed(await self.writer.put(candidate.label, name, body))

    def close(self) -> None:
        self.writer.close()


class ShardSink:
    """webdataset tar shards under ``OUT/shards/``, by label or all in one series."""

    def __init__(
        self,
        out: Path,
        *,
        shard_size: int,
        group_by: str,
        durable: bool = False,
        series: str | None = None,
    ) -> None:
        self.writer = ShardWriter(
            out, shard_size=shard_size, group_by=group_by, durable=durable, series=series
        )

    async def put(
        self, candidate: Candidate, hashed: Hashed, body: bytes, fetched_at: float | None
    ) -> Placed:
        key = member_key(hashed)
        future = self.writer.submit(
            candidate.label, key, hashed.ext, body, member_meta(candidate, hashed, fetched_at)
        )
        placed = await asyncio.wrap_future(future)
        return Placed(placed.path, placed.offset, placed.end)

    def close(self) -> None:
        self.writer.close()


def member_meta(
    candidate: Candidate, hashed: Hashed, fetched_at: float | None
) -> dict[str, Any]:
    """A shard member's manifest fields: all of them but the shard's path and the offset,
    which the member's own place in the shard gives."""
    return {
        "label": candidate.label,
        "query": candidate.query,
        "source": str(candidate.source),
        "parent": candidate.parent,
        "content_url": candidate.url,
        "host_page_url": candidate.host_page_url,
        "thumbnail_url": candidate.thumbnail_url,
        "image_id": candidate.image_id,
        "name": candidate.name,
        "license": candidate.license,
        "license_url": candidate.license_url,
        "creator": candidate.creator,
        "attribution": candidate.attribution,
        "provider": candidate.provider,
        "sha256": hashed.sha256,
        "phash": f"{hashed.phash:016x}",
        "centre_hash": None if hashed.centre is None else f"{hashed.centre:016x}",
        "width": hashed.width,
        "height": hashed.height,
        "format": hashed.format,
        "bytes": hashed.size,
        "fetched_at": utc_iso(time.time() if fetched_at is None else fetched_at),
        "member": f"{member_key(hashed)}.{hashed.ext}",
    }


def open_sink(
    output_format: str,
    out: Path,
    *,
    shard_size: int = 10_000,
    shard_by: str = "label",
    durable: bool = False,
    series: str | None = None,
) -> ImageSink:
    """The sink for ``--output-format`` (one of :data:`~bingcrawl.records.OUTPUT_FORMATS`).
    ``series`` names the writer's own shard series (writers running side by side); files
    need none (an image's path is its content's)."""
    if output_format == "files":
        return FileSink(out, durable=durable)
    if output_format == "webdataset":
        return ShardSink(
            out, shard_size=shard_size, group_by=shard_by, durable=durable, series=series
        )
    raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}")
