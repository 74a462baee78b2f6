"""Start-up recovery: make the checkpoint and the files under OUT agree again.

A crawl can die between any two steps of "write temp file -> os.replace -> record outcome".
:func:`recover_sync` runs once at start-up, before any download, in the writer's transaction,
and restores these invariants:

1. **No temp files.** Files named like the atomic writer's temp files (``.<name>.<random>.tmp``)
   under ``OUT/images/`` and directly in ``OUT`` are removed: they are unfinished writes.
2. **Nothing in flight.** ``inflight`` rows (written by bingcrawl before 0.2; the crawler no
   longer marks rows in flight) go back to ``pending``.
3. **Every stored row has its file.** A ``stored`` row whose file is missing, is not a
   regular file (e.g. a symlink planted there) or has the wrong size (a write torn by power
   loss without ``--durable``) goes back to ``pending``, and a torn file is removed. Rows
   that were ``duplicate`` of such an image go back to ``pending`` too (unless another stored
   row has the same sha256), so no duplicate points at an image that is not there.
4. **Every image file has its row.** A file named like ours (``<16 hex>.<ext>``) that no
   stored row points at is the product of a write whose outcome never committed. Its
   candidate is ``pending`` again and will be downloaded and written to the same name, so the
   file is *removed* rather than adopted (adopting would need the URL, which the file does not
   carry). Files that are not named like ours are never touched, only counted and logged:
   bingcrawl does not delete what it did not write.

5. **Every duplicate names a stored image** (or a visual-search seed). A ``duplicate`` row
   whose ``duplicate_of`` is neither the sha256 of a ``stored`` row nor a seed goes back to
   ``pending``. The crawler commits a duplicate only after the image it names is stored, so
   this full scan runs only when the previous run did not close its checkpoint cleanly (and
   once for a checkpoint from before that flag); the rows of vanished images are reset with
   their duplicates in step 3 anyway.

Only regular files and directories are followed; symlinks are never followed.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bingcrawl.errors import UnsafePathError
from bingcrawl.store import meta, rows
from bingcrawl.store.shards import SHARD_DIR, StoredRow, recover_shards

__all__ = ["IMAGE_NAME", "TEMP_NAME", "RecoveryReport", "recover_sync"]

log = logging.getLogger(__name__)

#: Names the atomic writer gives its temp files.
TEMP_NAME = re.compile(r"\A\..+\.tmp\Z", re.DOTALL)

#: Names bingcrawl gives image files: ``<sha256[:16]>.<ext>``.
IMAGE_NAME = re.compile(r"\A[0-9a-f]{16}\.[a-z0-9]{2,5}\Z")

#: Paths of stored rows that live in a webdataset shard start with this.
SHARD_PREFIX = f"{SHARD_DIR}/"


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """How many of each fix :func:`recover_sync` made."""

    temp_files_removed: int = 0
    inflight_reset: int = 0
    vanished_reset: int = 0
    torn_files_removed: int = 0
    duplicates_reset: int = 0
    orphans_removed: int = 0
    foreign_files: int = 0
    shards_truncated: int = 0  # webdataset shards cut back to their last committed member
    shards_removed: int = 0  # shards no committed row points at
    vanished_reset_shards: int = 0  # stored rows whose shard vanished or was cut short

    @property
    def changed(self) -> bool:
        """True if anything was repaired (foreign files are only reported)."""
        return any(v for k, v in asdict(self).items() if k != "foreign_files")

    def __str__(self) -> str:
        parts = [f"{k.replace('_', ' ')}: {v}" for k, v in asdict(self).items() if v]
        return ", ".join(parts) or "nothing to repair"


def _walk(root: Path, rel: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    # Relative POSIX paths (as the checkpoint stores them) of every non-directory entry.
    try:
        with os.scandir(root) as it:
            entries = list(it)
    except FileNotFoundError:
        return
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), path)
        else:
            yield path, entry


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def recover_sync(conn: sqlite3.Connection, out: Path) -> RecoveryReport:
    """Restore the invariants of the module docstring; return what was fixed.

    Runs inside the caller's transaction (the writer's): the row changes commit together.
    """
    now = time.time()
    images = out / "images"
    if images.is_symlink():
        # Walking it would delete image-named files wherever it points.
        raise UnsafePathError(f"{images} is a symlink; refusing to recover through it")
    temp_removed = 0
    with os.scandir(out) as top:
        for item in top:
            if TEMP_NAME.match(item.name) and not item.is_dir(follow_symlinks=False):
                temp_removed += _remove(item.path)

    inflight = conn.execute(
        "UPDATE candidates SET status = 'pending', updated_at = ? WHERE status = 'inflight'",
        (now,),
    ).rowcount

    # One directory walk, then set arithmetic: no per-row stat of files that are fine.
    files: dict[str, os.DirEntry[str]] = {}
    for rel, entry in _walk(images):
        if TEMP_NAME.match(entry.name):
            temp_removed += _remove(entry.path)
        else:
            files[f"images/{rel}"] = entry

    # Every stored row's location, read once for both layouts from a covering index: this
    # scan is most of what start-up costs at a million candidates.
    stored: list[tuple[int, str | None, int | None]] = []
    in_shards: list[StoredRow] = []
    for cid, path, size, shard_end in conn.execute(rows.STORED_LOCATIONS):
        if path is not None and path.startswith(SHARD_PREFIX):
            in_shards.append((cid, path, shard_end))
        else:
            stored.append((cid, path, size))
    referenced: set[str] = set()
    vanished: list[int] = []
    torn = 0
    for cid, path, size in stored:
        found = files.get(path) if path else None
        if path is None or found is None or not found.is_file(follow_symlinks=False):
            vanished.append(cid)
            continue
        if size is not None and found.stat(follow_symlinks=False).st_size != size:
            torn += _remove(found.path)
            vanished.append(cid)
            continue
        referenced.add(path)

    duplicates = rows.reset_stored(conn, vanished, now)
    if vanished:
        log.warning(
            "%d stored images were missing or torn; they will be fetched again", len(vanished)
        )

    orphans = foreign = 0
    for rel, entry in files.items():
        if rel in referenced:
            continue
        if IMAGE_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            orphans += _remove(entry.path)
        else:
            foreign += 1
    if foreign:
        log.warning("%d files under %s were not written by bingcrawl; left alone", foreign, images)
    shards = recover_shards(conn, out, stored=in_shards)
    duplicates += shards["shard_duplicates_reset"]
    if meta.get_flag(conn, meta.UNCLEAN_KEY, default=True):
        # Only after a stop that was not clean (and once for a checkpoint from before the
        # flag): a full scan of the duplicates costs ~0.5-3 s per million rows.
        duplicates += conn.execute(rows.RESET_ORPHAN_DUPLICATES, (now,)).rowcount
    meta.set_flag(conn, meta.UNCLEAN_KEY, True)  # until this run's checkpoint closes cleanly
    return RecoveryReport(
        temp_files_removed=temp_removed,
        inflight_reset=inflight,
        vanished_reset=len(vanished),
        torn_files_removed=torn,
        duplicates_reset=duplicates,
        orphans_removed=orphans,
        foreign_files=foreign,
        shards_truncated=shards["shards_truncated"],
        shards_removed=shards["shards_removed"],
        vanished_reset_shards=shards["shard_rows_reset"],
    )
