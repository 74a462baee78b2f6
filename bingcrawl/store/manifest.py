"""``OUT/manifest.jsonl``, appended as images are stored: its cost is O(new rows).

The checkpoint knows which stored rows have a committed manifest line and how long the
committed manifest is:

* ``candidates.unlisted`` is 1 on a stored row whose line is not yet committed (set by the
  outcome that stores it), NULL otherwise; a partial index holds only those rows;
* meta ``manifest_committed`` is the length of the manifest as of the last committed append
  and the file's inode (``"<bytes> <inode>"``): a file replaced behind the crawl's back (an
  editor, :func:`bingcrawl.store.write_manifest`) is another inode and is rewritten, never cut.

:func:`append_sync` runs in the checkpoint writer's transaction: it cuts the file back to the
committed length (whatever a crash or a failed commit left past it is not committed), appends
one line per unlisted row, flushes (fsyncs with ``durable``), then clears those rows' flag and
records the new length. If the transaction does not commit, the flag and the length stay as
they were and the next append cuts the extra lines off and writes them again: the file is a
valid JSONL listing each stored image exactly once after any crash, as soon as the next run
opens the checkpoint.

The file is rewritten in full (atomically, :func:`rewrite_sync`) only when it cannot be
trusted: it is missing or shorter than its committed length (lost by a power failure, or
deleted) or replaced, the checkpoint predates this scheme (no ``manifest_committed``), or
start-up recovery took stored rows back (their lines must go). ``bingcrawl export`` remains
the way to produce a fresh listing in any format.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import orjson

from bingcrawl.errors import UnsafePathError
from bingcrawl.store.atomic import atomic_open
from bingcrawl.store.meta import MANIFEST_KEY, SET_META
from bingcrawl.store.output import (
    MANIFEST_NAME,
    manifest_rows,
    manifest_select,
    manifest_values,
    write_jsonl,
)

__all__ = ["Appended", "append_sync", "forget_length", "rewrite_sync"]


@dataclass(frozen=True, slots=True)
class Appended:
    """What :func:`append_sync` did (the caller logs it: the writer thread has no run id)."""

    lines: int  # lines written
    cut: int = 0  # uncommitted bytes cut off the end first
    rewritten: str | None = None  # why the file was rewritten in full, if it was


_UNLISTED = (
    f"SELECT id, {manifest_select()} FROM candidates INDEXED BY idx_candidates_unlisted "
    "WHERE unlisted IS NOT NULL AND status = 'stored' ORDER BY id"
)
_LISTED = "UPDATE candidates SET unlisted = NULL WHERE id = ?"
_LIST_ALL = "UPDATE candidates SET unlisted = NULL WHERE unlisted IS NOT NULL"
_FETCH = 2000


def _committed(conn: sqlite3.Connection) -> tuple[int, int] | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (MANIFEST_KEY,)).fetchone()
    if row is None:
        return None
    size, inode = str(row[0]).split()
    return int(size), int(inode)


def _commit(conn: sqlite3.Connection, size: int, inode: int) -> None:
    conn.execute(SET_META, (MANIFEST_KEY, f"{size} {inode}"))


def forget_length(conn: sqlite3.Connection) -> None:
    """Make the next :func:`append_sync` rewrite the manifest in full (recovery took stored
    rows back, or the crawl starts over)."""
    conn.execute("DELETE FROM meta WHERE key = ?", (MANIFEST_KEY,))


def _open(out: Path) -> int | None:
    # O_NOFOLLOW: a symlink planted at OUT/manifest.jsonl is refused, never written through.
    try:
        return os.open(out / MANIFEST_NAME, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(
                errno.ELOOP, "a symlink; refusing to write through it", str(out / MANIFEST_NAME)
            ) from exc
        raise


def append_sync(conn: sqlite3.Connection, out: Path, *, durable: bool) -> Appended:
    """Append the stored rows not yet in the manifest; say what was done.

    Runs in the writer's transaction (see the module docstring). Falls back to
    :func:`rewrite_sync` when the file cannot be trusted.
    """
    state = _committed(conn)
    fd = None if state is None else _open(out)
    if state is None or fd is None:
        why = "no committed length" if state is None else "the file is missing"
        return Appended(rewrite_sync(conn, out, durable=durable), rewritten=why)
    committed, inode = state
    try:
        info = os.fstat(fd)
        size = info.st_size
        if info.st_ino != inode:
            os.close(fd)
            fd = None
            why = "the file was replaced"
            return Appended(rewrite_sync(conn, out, durable=durable), rewritten=why)
        if size < committed:
            os.close(fd)
            fd = None
            why = f"it is shorter ({size} bytes) than its committed length ({committed})"
            return Appended(rewrite_sync(conn, out, durable=durable), rewritten=why)
        if size > committed:
            # Lines past the committed length were never committed: a crash or a failed
            # commit between the write and the checkpoint's commit. Their rows are still
            # unlisted and are written again below.
            os.ftruncate(fd, committed)
        cursor = conn.execute(_UNLISTED)
        ids: list[tuple[int]] = []
        end = committed
        while chunk := cursor.fetchmany(_FETCH):
            data = b"".join(orjson.dumps(manifest_values(row[1:])) + b"\n" for row in chunk)
            ids.extend((row[0],) for row in chunk)
            end += _pwrite_all(fd, data, end)
        if not ids:
            return Appended(0, cut=size - committed)
        if durable:
            os.fsync(fd)
    finally:
        if fd is not None:
            os.close(fd)
    conn.executemany(_LISTED, ids)
    _commit(conn, end, inode)
    return Appended(len(ids), cut=size - committed)


def _pwrite_all(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
    return len(data)


def rewrite_sync(conn: sqlite3.Connection, out: Path, *, durable: bool) -> int:
    """Rewrite the manifest in full (atomically) from ``conn`` and mark every stored row
    listed; return the number of lines."""
    with atomic_open(out, MANIFEST_NAME, durable=durable) as fh:
        n = write_jsonl(fh, manifest_rows(conn))
        fh.flush()
        size = fh.tell()
        inode = os.fstat(fh.fileno()).st_ino  # the temp file's: os.replace keeps it
    conn.execute(_LIST_ALL)
    _commit(conn, size, inode)
    return n
