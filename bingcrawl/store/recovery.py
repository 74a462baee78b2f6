"""Start-up recovery: make the checkpoint and the files under OUT agree again.

A crawl can die between any two steps of "write temp file -> os.replace -> record outcome".
:func:`recover_sync` runs once at start-up, before any download, in the writer's transaction,
and restores these invariants:

1. **No temp files.** Files named like the atomic writer's temp files (``.<name>.<random>.tmp``)
   under ``OUT/images/`` and directly in ``OUT`` are removed: they are unfinished writes.
2. **Nothing in flight.** ``inflight`` rows (written by bingcrawl before 0.2; the crawler no
   longer marks rows in flight) go back to ``pending``.
3. **Every stored row has its file.** A ``stored`` row whose file is missing or is not a
   regular file (e.g. a symlink planted there) goes back to ``pending``; so does one whose
   file has the wrong size (a write torn by a crash or power loss without ``--durable``),
   and the torn file is removed. Rows that were ``duplicate`` of such an image go back to
   ``pending`` too (unless another stored row has the same sha256), so no duplicate points
   at an image that is not there. ``images/`` is walked one label folder at a time, each
   against its range of the stored rows' covering index, so memory is O(largest folder)
   and not O(crawl). Sizes (a ``stat`` per file: minutes at ten million) are checked only
   when the previous run did not close its checkpoint cleanly: a clean close commits each
   row after its file is in place. (Without ``--durable``, a power failure within the
   kernel's writeback delay, ~30 s, *after* a clean exit can still tear the last files
   unnoticed; ``--durable`` closes that window.)
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
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bingcrawl.errors import UnsafePathError
from bingcrawl.store import manifest, meta, rows
from bingcrawl.store.shards import SHARD_RANGE, recover_shards

__all__ = ["IMAGE_NAME", "TEMP_NAME", "RecoveryReport", "StartupStopped", "recover_sync"]

log = logging.getLogger(__name__)

#: Names the atomic writer gives its temp files.
TEMP_NAME = re.compile(r"\A\..+\.tmp\Z", re.DOTALL)

#: Names bingcrawl gives image files: ``<sha256[:16]>.<ext>``.
IMAGE_NAME = re.compile(r"\A[0-9a-f]{16}\.[a-z0-9]{2,5}\Z")



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


def _listing(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except FileNotFoundError:
        return []


#: Stored rows in one folder's range of the covering index (parameters: prefix, its end).
_FOLDER_ROWS = (
    "SELECT id, path, bytes FROM candidates INDEXED BY idx_candidates_stored_location "
    "WHERE status = 'stored' AND path >= ? AND path < ?"
)
_FILE_ROWS = (
    "SELECT count(*) FROM candidates INDEXED BY idx_candidates_stored_location "
    "WHERE status = 'stored' AND (path IS NULL OR path < ? OR path >= ?)"
)
_ALL_FILE_ROWS = (
    "SELECT id, path FROM candidates INDEXED BY idx_candidates_stored_location "
    "WHERE status = 'stored' AND (path IS NULL OR path < ? OR path >= ?)"
)


class StartupStopped(Exception):
    """A stop was asked for while start-up repaired OUT (nothing is half-done: the repair's
    row changes roll back and the next start-up does it again)."""


@dataclass(slots=True)
class _Walk:
    """What the folder-by-folder walk of ``images/`` found."""

    check_sizes: bool
    stop: threading.Event | None
    temp_removed: int = 0
    vanished: list[int] = field(default_factory=list)
    torn: int = 0
    orphans: int = 0
    foreign: int = 0
    matched: int = 0  # stored rows found in a folder that exists
    folders: set[str] = field(default_factory=set)

    def folder(self, conn: sqlite3.Connection, rel: str, path: str) -> None:
        """Check one folder (``rel`` as the checkpoint writes it, ``path`` on disk) against
        its stored rows: memory O(this folder), not O(crawl)."""
        if self.stop is not None and self.stop.is_set():
            raise StartupStopped("a stop was asked for during start-up recovery")
        self.folders.add(rel)
        prefix = f"{rel}/"
        depth = len(prefix)
        found = {
            p: (cid, size)
            for cid, p, size in conn.execute(_FOLDER_ROWS, rows.prefix_range(prefix))
            if "/" not in p[depth:]  # (rows of a subfolder are checked with it)
        }
        self.matched += len(found)
        for entry in _listing(path):
            name = entry.name
            if entry.is_dir(follow_symlinks=False):
                self.folder(conn, prefix + name, entry.path)
                continue
            if TEMP_NAME.match(name):
                self.temp_removed += _remove(entry.path)
                continue
            row = found.pop(prefix + name, None)
            if row is None:
                if IMAGE_NAME.match(name) and entry.is_file(follow_symlinks=False):
                    self.orphans += _remove(entry.path)  # its write never committed
                else:
                    self.foreign += 1
                continue
            cid, size = row
            if not entry.is_file(follow_symlinks=False):  # e.g. a symlink planted there
                self.vanished.append(cid)
                self.foreign += 1
                continue
            if (
                self.check_sizes
                and size is not None
                and entry.stat(follow_symlinks=False).st_size != size
            ):
                self.torn += _remove(entry.path)
                self.vanished.append(cid)
        self.vanished.extend(cid for cid, _ in found.values())  # rows whose file is gone


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def recover_sync(
    conn: sqlite3.Connection, out: Path, *, stop: threading.Event | None = None
) -> RecoveryReport:
    """Restore the invariants of the module docstring; return what was fixed.

    Runs inside the caller's transaction (the writer's): the row changes commit together.
    ``stop`` set (a signal during start-up) ends the walk between two folders with
    :class:`StartupStopped`; the caller's transaction then rolls back.
    """
    now = time.time()
    unclean = meta.get_flag(conn, meta.UNCLEAN_KEY, default=True)
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

    # One label folder at a time, each against its range of the covering index: memory is
    # O(largest folder), not O(crawl). Sizes (a stat per file) are checked only after a stop
    # that was not clean, the only time a write can be torn (see the module docstring).
    walk = _Walk(check_sizes=unclean, stop=stop)
    walk.temp_removed = temp_removed
    for entry in sorted(_listing(str(images)), key=lambda e: e.name):
        rel = f"images/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            walk.folder(conn, rel, entry.path)
        elif TEMP_NAME.match(entry.name):
            walk.temp_removed += _remove(entry.path)
        elif IMAGE_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            walk.orphans += _remove(entry.path)
        else:
            walk.foreign += 1
    (file_rows,) = conn.execute(_FILE_ROWS, SHARD_RANGE).fetchone()
    if file_rows != walk.matched:
        # Rows in a folder that is gone (or with no path): one streamed pass finds them.
        walk.vanished.extend(
            cid
            for cid, path in conn.execute(_ALL_FILE_ROWS, SHARD_RANGE)
            if path is None or path.rpartition("/")[0] not in walk.folders
        )
    vanished, torn, temp_removed = walk.vanished, walk.torn, walk.temp_removed
    orphans, foreign = walk.orphans, walk.foreign
    if foreign:
        log.warning("%d files under %s were not written by bingcrawl; left alone", foreign, images)

    duplicates = rows.reset_stored(conn, vanished, now)
    if vanished:
        log.warning(
            "%d stored images were missing or torn; they will be fetched again", len(vanished)
        )

    shards = recover_shards(conn, out)
    duplicates += shards["shard_duplicates_reset"]
    if unclean:
        # Only after a stop that was not clean (and once for a checkpoint from before the
        # flag): a full scan of the duplicates costs ~0.5-3 s per million rows.
        duplicates += conn.execute(rows.RESET_ORPHAN_DUPLICATES, (now,)).rowcount
    if vanished or shards["shard_rows_reset"]:
        manifest.forget_length(conn)  # their lines must go: the manifest is rewritten once
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
