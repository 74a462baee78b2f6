"""Visual search from local seed images: ``POST /images/visualsearch`` with the image uploaded.

``--seed-images DIR``: every regular, non-hidden file under DIR (sorted) is a seed. Before
anything is downloaded, each seed is hashed in the hash pool and added to the dedup index,
so copies of the seeds (exact, or near with ``--near-dup-distance``) are rejected as
duplicates of the seed (``duplicate_of`` is the seed's sha256; seeds are not stored). Then
each seed is uploaded (downscaled to at most 1,500 px and 1 MB once, optionally narrowed by
``--crop``) and the images of its ``VisualSearch`` action are paged like a search.

Labels: ``--label`` if given; otherwise the ImageFolder convention: a seed in ``DIR/<class>/``
gets the label ``<class>``, a seed directly in DIR the name of DIR.

Checkpoint: one ``visual`` row per distinct seed (``norm`` = the seed file's sha256, ``text``
= its path relative to DIR), paged with ``next_offset`` like a search query. Paging asks
with ``offset`` / ``count`` query parameters (the emulator's extension; the reference does
not say how to page visual search), and stops on a page with nothing new in case a service
ignores them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bingcrawl.bing.client import Upload
from bingcrawl.bing.models import Image
from bingcrawl.bing.params import CropArea, VisualSearchParams
from bingcrawl.config import safe_label
from bingcrawl.errors import ConfigError, InvalidParameterError
from bingcrawl.records import Candidate, Hashed, HashFailure, Source
from bingcrawl.sources.base import SourceContext, candidate_from_image
from bingcrawl.store.rows import QueryRow

__all__ = ["PagedVisualSearchParams", "Seed", "VisualSource", "list_seeds"]

log = logging.getLogger("bingcrawl.sources.visual")

_HASH_AHEAD = 4  # seeds read and hashed at once (bounds memory for large seed images)


@dataclass(frozen=True, slots=True)
class PagedVisualSearchParams(VisualSearchParams):
    """:class:`VisualSearchParams` plus ``offset`` / ``count`` to page the similar images."""

    offset: int = 0
    count: int | None = None

    def __post_init__(self) -> None:
        VisualSearchParams.__post_init__(self)
        if self.offset < 0:
            raise InvalidParameterError("offset", self.offset, "an integer >= 0")
        if self.count is not None and not 1 <= self.count <= 150:
            raise InvalidParameterError("count", self.count, "an integer from 1 to 150")

    def to_query(self) -> dict[str, str]:
        """The locale parameters plus ``offset`` and ``count``."""
        query = VisualSearchParams.to_query(self)
        query["offset"] = str(self.offset)
        if self.count is not None:
            query["count"] = str(self.count)
        return query


@dataclass(frozen=True, slots=True)
class Seed:
    """One local seed image: its path, its path relative to the seed directory, its label."""

    path: Path
    rel: str
    label: str


def list_seeds(root: Path, label: str | None = None) -> list[Seed]:
    """The seed files under ``root`` in a stable order (hidden files and directories skipped)."""
    if not root.is_dir():
        raise ConfigError("--seed-images", f"{root} is not a directory")
    default = label or safe_label(root.resolve().name)
    seeds = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory, name)
            if name.startswith(".") or not path.is_file():
                continue
            rel = path.relative_to(root)
            own = label or (
                safe_label(rel.parts[0], lower=False) if len(rel.parts) > 1 else default
            )
            seeds.append(Seed(path, rel.as_posix(), own))
    return seeds


class VisualSource:
    """Seeds into the dedup index first (:meth:`prepare`), then visual search per seed."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.root = config.seed_images
        self.crop = CropArea(*config.crop) if config.crop else None
        self._seeds: dict[str, Seed] = {}  # seed sha256 -> where it is in this run

    async def prepare(self) -> int:
        """Hash every seed into the dedup index and register its row; returns the count.

        Must run before any candidate is queued: a copy of a seed downloaded earlier would
        be stored.
        """
        ctx = self.ctx
        if self.root is None:
            return 0
        seeds = await asyncio.to_thread(list_seeds, self.root, ctx.config.label)
        gate = asyncio.Semaphore(_HASH_AHEAD)

        async def digest(seed: Seed) -> Hashed | None:
            async with gate:
                try:
                    data = await asyncio.to_thread(seed.path.read_bytes)
                except OSError as exc:
                    log.warning("seed %s cannot be read: %s", seed.rel, exc.strerror)
                    return None
                hashed = await ctx.host.hash_bytes(data)
            if isinstance(hashed, HashFailure):
                log.warning("seed %s skipped: %s (%s)", seed.rel, hashed.error_class, hashed.detail)
                return None
            return hashed

        hashes = await asyncio.gather(*(digest(seed) for seed in seeds))
        for seed, found in zip(seeds, hashes, strict=True):
            if found is None:
                continue
            sha256 = found.sha256
            ctx.host.add_to_index(found)
            if sha256 in self._seeds:
                continue  # the same bytes twice: one visual search is enough
            self._seeds[sha256] = seed
            await ctx.add_row(
                source=Source.VISUAL.value,
                label=seed.label,
                text=seed.rel,
                norm=sha256,
                params={"path": seed.rel},
            )
        skipped = len(seeds) - len([h for h in hashes if h is not None])
        log.info(
            "seed images: %d in the dedup index, %d skipped (not readable images)",
            len(seeds) - skipped,
            skipped,
        )
        return len(self._seeds)

    def rows(self) -> list[QueryRow]:
        """The visual rows this run pages (seeds present in this run, still active)."""
        return [
            row
            for row in self.ctx.rows.values()
            if row.source == Source.VISUAL.value
            and row.norm in self._seeds
            and row.state == "active"
        ]

    async def run(self) -> None:
        """Page every active seed, ``--max-active-queries`` at once."""
        ctx = self.ctx
        slots = asyncio.Semaphore(ctx.config.max_active_queries)

        async def one(row: QueryRow) -> None:
            async with slots:
                if not ctx.api_stopped():
                    await ctx.run_row(row, self._page(row, self._seeds[row.norm]))

        async with asyncio.TaskGroup() as tg:
            for row in self.rows():
                tg.create_task(one(row), name=f"visual-{row.id}")

    async def _page(self, row: QueryRow, seed: Seed) -> None:
        ctx = self.ctx
        try:
            data = await asyncio.to_thread(seed.path.read_bytes)
            # Prepared once, before any grant: the request must leave as soon as it is granted.
            upload = await asyncio.to_thread(Upload.prepare, data)
        except (OSError, InvalidParameterError) as exc:
            await ctx.fail_row(row, exc)
            return
        locale = ctx.locale()
        count = ctx.config.count

        async def fetch(offset: int) -> tuple[tuple[Image, ...], int | None]:
            client = await ctx.client()
            params = PagedVisualSearchParams(
                crop_area=self.crop, offset=offset, count=count, **locale
            )
            knowledge = await ctx.call(
                "visualsearch", partial(client.visual_search, params, image=upload)
            )
            action = next(knowledge.actions("VisualSearch"), None)
            return knowledge.visually_similar(), action.next_offset if action else None

        def make(image: Image) -> Candidate | None:
            return candidate_from_image(
                image,
                label=row.label,
                query=seed.rel,
                source=Source.VISUAL,
                license=None,  # visual search takes no license filter
                parent=row.norm,
            )

        await ctx.page_row(row, ctx.track(row), fetch, make, stop_when_stale=True)
