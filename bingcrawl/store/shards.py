"""Webdataset output: images appended to tar shards instead of one file each.

``OUT/shards/<label or all>-NNNNNN.tar`` hold, per image, a ``<key>.<ext>`` member (the bytes
as downloaded) and a ``<key>.json`` member (its manifest fields), where ``key`` is the first 16
hex digits of the image's sha256 - the webdataset convention img2dataset also follows.

Creating a file costs ~0.7 ms of CPU here, appending to an open shard ~0.02 ms: large crawls
want shards. Crash consistency works like the files layout, with offsets instead of files:

* appends happen in one dedicated thread, in order; each append ends with the tar end-of-archive
  blocks (so every shard is a valid tar at all times) and is flushed to the OS before the
  crawler records the image as ``stored`` with the member's ``shard_offset`` / ``shard_end``;
* at start-up, :func:`recover_shards` truncates every shard to the end of its last *committed*
  member (a torn or uncommitted tail is cut; those candidates are still ``pending`` and are
  fetched again); a shard cut *below* its committed end (power loss without ``--durable``)
  is truncated to its last whole member and the rows after it go back to ``pending``, so a
  torn tar never stays beside the re-fetched copies; it removes shards nothing committed
  points at, and sends the rows of a vanished shard back to ``pending``;
* a run never appends to an older run's shards: it starts new ones, numbered after the last.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import re
import sqlite3
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bingcrawl.errors import UnsafePathError
from bingcrawl.store.atomic import split_relative
from bingcrawl.store.rows import prefix_range, reset_stored

__all__ = [
    "SHARD_DIR",
    "SHARD_RANGE",
    "ShardWriter",
    "ShardedImage",
    "StoredRow",
    "recover_shards",
]

SHARD_DIR = "shards"
_SHARD_NAME = re.compile(r"^(?P<group>.+)-(?P<seq>\d{6})\.tar$")
_EOF = b"\0" * (2 * tarfile.BLOCKSIZE)

@dataclass(frozen=True, slots=True)
class ShardedImage:
    """Where one image landed: the shard (relative to OUT) and its members' byte range."""

    path: str
    offset: int
    end: int


def _member(name: str, data: bytes, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    pad = (-len(data)) % tarfile.BLOCKSIZE
    return b"".join((header, data, b"\0" * pad))


class _Shard:
    """One open shard file; appends overwrite the end-of-archive blocks."""

    def __init__(self, root: Path, rel: str, durable: bool) -> None:
        self.rel = rel
        self.durable = durable
        self.count = 0
        fd = os.open(
            root / rel, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        self.fh: BinaryIO = os.fdopen(fd, "r+b", buffering=0)
        self.end = 0

    def append(self, blob: bytes) -> tuple[int, int]:
        start = self.end
        fd = self.fh.fileno()
        # os.pwrite may write less than asked (a signal, a file-size limit): loop until every
        # byte is down or the OS raises (EFBIG, ENOSPC): never record a torn member.
        view = memoryview(blob + _EOF)
        offset = start
        while view:
            written = os.pwrite(fd, view, offset)
            if written == 0:
                raise OSError(errno.ENOSPC, "No space left on device (a write made no progress)")
            view = view[written:]
            offset += written
        if self.durable:
            os.fsync(self.fh.fileno())
        self.end = start + len(blob)
        self.count += 1
        return start, self.end

    def close(self) -> None:
        self.fh.close()


class ShardWriter:
    """Appends images to tar shards, one writer thread, in order.

    ``group_by`` is ``label`` (a shard series per label) or ``all`` (one series).
    ``shard_size`` is the number of images per shard; ``series`` (e.g. ``w3``, a cluster
    worker's) makes the writer's shard names its own.
    """

    def __init__(
        self,
        out: Path,
        *,
        shard_size: int = 10_000,
        group_by: str = "label",
        durable: bool = False,
        series: str | None = None,
    ) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        if group_by not in ("label", "all"):
            raise ValueError("group_by must be 'label' or 'all'")
        self.out = Path(out)
        self.shard_size = shard_size
        self.group_by = group_by
        self.durable = durable
        #: Appended to every group name (``<label>-<series>-NNNNNN.tar``): writers that run
        #: at the same time (the workers of a cluster) never share a shard name.
        self.series = series
        self._dir = self.out / SHARD_DIR
        if self._dir.is_symlink():
            raise UnsafePathError(f"{self._dir} is a symlink; refusing to write through it")
        self._dir.mkdir(exist_ok=True)
        self._open: dict[str, _Shard] = {}
        self._next_seq: dict[str, int] = {}
        for entry in os.scandir(self._dir):
            m = _SHARD_NAME.match(entry.name)
            if m:
                group, seq = m["group"], int(m["seq"])
                self._next_seq[group] = max(self._next_seq.get(group, 0), seq + 1)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bingcrawl-shards")
        self._closed = False

    def append(
        self, label: str, key: str, ext: str, data: bytes, meta: dict[str, Any]
    ) -> ShardedImage:
        """Append one image and its metadata (blocking: call from the writer thread via
        :meth:`submit`)."""
        group = label if self.group_by == "label" else "all"
        if self.series:
            group = f"{group}-{self.series}"
        split_relative(f"{SHARD_DIR}/{group}-000000.tar")  # refuses separators, "..", NUL
        shard = self._open.get(group)
        if shard is None or shard.count >= self.shard_size:
            if shard is not None:
                shard.close()
            seq = self._next_seq.get(group, 0)
            self._next_seq[group] = seq + 1
            shard = _Shard(self.out, f"{SHARD_DIR}/{group}-{seq:06d}.tar", self.durable)
            self._open[group] = shard
            if self.durable:
                dfd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        now = time.time()
        blob = _member(f"{key}.{ext}", data, now) + _member(
            f"{key}.json", orjson.dumps(meta, option=orjson.OPT_SORT_KEYS), now
        )
        start, end = shard.append(blob)
        return ShardedImage(shard.rel, start, end)

    def submit(
        self, label: str, key: str, ext: str, data: bytes, meta: dict[str, Any]
    ) -> concurrent.futures.Future[ShardedImage]:
        """Queue an append on the writer thread; the future gives where it landed."""
        if self._closed:
            raise RuntimeError("the shard writer is closed")
        return self._pool.submit(self.append, label, key, ext, data, meta)

    def close(self) -> None:
        """Finish queued appends and close every shard (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        for shard in self._open.values():
            shard.close()
        self._open.clear()


#: ``(id, path, shard_end)`` of a stored row whose image is in a shard.
StoredRow = tuple[int, str, int | None]

#: The stored rows in shards are this range of paths, of the covering index (path first).
_IN_SHARDS = "status = 'stored' AND path >= ? AND path < ?"
SHARD_RANGE = prefix_range(f"{SHARD_DIR}/")
_LOCATIONS = "FROM candidates INDEXED BY idx_candidates_stored_location WHERE "


def recover_shards(conn: sqlite3.Connection, out: Path) -> dict[str, int]:
    """Make the shards agree with the checkpoint (see the module docstring).

    Memory is O(shards), not O(stored images): the committed end of each shard comes from
    one grouped scan of the stored rows' covering index, and the rows of a shard are read
    only when that shard was cut or is gone. Runs inside the caller's transaction. Returns
    counts of what was fixed.
    """
    now = time.time()
    shard_dir = Path(out) / SHARD_DIR
    committed: dict[str, int] = {
        path: end
        for path, end in conn.execute(
            f"SELECT path, max(shard_end) {_LOCATIONS}{_IN_SHARDS} GROUP BY path", SHARD_RANGE
        )
        if end is not None
    }
    present: dict[str, int] = {}  # shard -> the end of its last intact committed member
    truncated = removed = 0
    if shard_dir.is_dir() and not shard_dir.is_symlink():
        for entry in os.scandir(shard_dir):
            if not _SHARD_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            rel = f"{SHARD_DIR}/{entry.name}"
            end = committed.get(rel)
            size = entry.stat(follow_symlinks=False).st_size
            if end is not None and size < end:
                # Torn below what was committed (power loss without --durable): keep the
                # members that are whole, cut the rest; their rows are fetched again.
                end = conn.execute(
                    f"SELECT max(shard_end) {_LOCATIONS}status = 'stored' AND path = ? "
                    "AND shard_end <= ?",
                    (rel, size),
                ).fetchone()[0]
            if end is None:
                os.unlink(entry.path)
                removed += 1
                continue
            present[rel] = end
            if size != end + len(_EOF):
                with open(entry.path, "r+b") as fh:
                    fh.truncate(end)
                    fh.seek(end)
                    fh.write(_EOF)
                truncated += 1
    lost: list[int] = []
    for path, end in committed.items():
        keep = present.get(path, -1)
        if keep == end:
            continue  # the shard holds every committed member
        # Rows past what survived of their shard (all of them if it is gone).
        lost.extend(
            cid
            for (cid,) in conn.execute(
                f"SELECT id {_LOCATIONS}status = 'stored' AND path = ? "
                "AND (shard_end IS NULL OR shard_end > ?)",
                (path, keep),
            )
        )
    duplicates = reset_stored(conn, lost, now)
    return {
        "shards_truncated": truncated,
        "shards_removed": removed,
        "shard_rows_reset": len(lost),
        "shard_duplicates_reset": duplicates,
    }


def read_member(out: Path, path: str, offset: int) -> tuple[str, bytes]:
    """The name and bytes of the member whose header is at ``offset`` (for tests and export)."""
    with open(Path(out, *split_relative(path)), "rb") as fh:
        fh.seek(offset)
        info = tarfile.TarInfo.frombuf(
            fh.read(tarfile.BLOCKSIZE), tarfile.ENCODING, "surrogateescape"
        )
        return info.name, fh.read(info.size)
