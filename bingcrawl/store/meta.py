"""Run-level state around the checkpoint: the OUT lock, set-up, the options fingerprint and
fresh starts.

The lock is an advisory ``flock`` on ``OUT/checkpoint.sqlite-lock`` (SQLite's own locks are
POSIX record locks on the database file; a separate file keeps the two from interfering, e.g.
on NFS where flock is emulated with record locks). The kernel releases it when the process
dies, even by SIGKILL, so a crashed crawl never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from bingcrawl.errors import CheckpointError, ConfigError
from bingcrawl.store.schema import CHECKPOINT_NAME, SCHEMA_VERSION, migrate, utc_iso

__all__ = [
    "API_SENT_KEY",
    "LOCK_NAME",
    "MANIFEST_KEY",
    "PREVIOUS_RUN_FILES",
    "REFUND_API_CALL",
    "SET_META",
    "UNCLEAN_KEY",
    "OpenState",
    "acquire_lock",
    "api_answered",
    "api_sent",
    "api_total",
    "count_api_call_sent",
    "fingerprint_diff",
    "get_flag",
    "load_fingerprint",
    "move_previous_run_aside",
    "normalise_fingerprint",
    "open_setup",
    "release_lock",
    "reset_crawl",
    "set_flag",
    "store_fingerprint",
    "touch_updated",
]

log = logging.getLogger(__name__)

#: Advisory lock file next to the checkpoint (the ``-wal`` / ``-shm`` naming of SQLite).
LOCK_NAME = CHECKPOINT_NAME + "-lock"


def acquire_lock(out: Path) -> int:
    """Create OUT if needed and take its exclusive lock; return the lock's fd.

    Raises CheckpointError naming the holder's pid if another process has it, and
    ConfigError (``--out``) if OUT cannot be created or written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ConfigError("--out", f"cannot use {out} as the output directory: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise CheckpointError(
            f"{out} is in use by another bingcrawl process (pid {holder}); "
            "wait for it to finish or use another --out"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    """Release the lock taken by :func:`acquire_lock`."""
    # Closing drops the flock; the file stays (deleting lock files races with new lockers).
    os.close(fd)


@dataclass(frozen=True, slots=True)
class OpenState:
    api_calls_total: int
    migrated_from: int


def open_setup(conn: sqlite3.Connection) -> OpenState:
    """Run in the writer thread at open: migrate, stamp ``created_at``, load totals."""
    start = migrate(conn)
    if 0 < start < SCHEMA_VERSION:
        log.info("checkpoint migrated from schema version %d", start)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('created_at', ?) ON CONFLICT DO NOTHING",
            (utc_iso(time.time()),),
        )
        total = api_total(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return OpenState(api_calls_total=total, migrated_from=start)


def touch_updated(conn: sqlite3.Connection) -> None:
    """Stamp ``meta.updated_at``; the writer runs it in every transaction."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('updated_at', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (utc_iso(time.time()),),
    )


def normalise_fingerprint(fingerprint: Mapping[str, object]) -> dict[str, object]:
    """The fingerprint as it will read back from JSON."""
    # A JSON round trip, so that a tuple and a list, or a Path and its str, compare equal
    # to what a previous run stored.
    data = orjson.dumps(dict(fingerprint), default=str, option=orjson.OPT_SORT_KEYS)
    result: dict[str, object] = orjson.loads(data)
    return result


def fingerprint_diff(
    old: Mapping[str, object], new: Mapping[str, object]
) -> dict[str, tuple[object, object]]:
    """Keys whose values differ (or exist on one side only): key -> (old, new)."""
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        if key not in old or key not in new or old[key] != new[key]
    }


def load_fingerprint(conn: sqlite3.Connection) -> dict[str, object] | None:
    """The stored fingerprint, or None before the first run stored one."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
    if row is None:
        return None
    value = orjson.loads(row[0])
    if not isinstance(value, dict):
        raise CheckpointError("the checkpoint's options fingerprint is not a JSON object")
    return value


def store_fingerprint(conn: sqlite3.Connection, fingerprint: Mapping[str, object]) -> None:
    """Store (replace) the fingerprint."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('fingerprint', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (orjson.dumps(dict(fingerprint), option=orjson.OPT_SORT_KEYS).decode(),),
    )


def reset_crawl(conn: sqlite3.Connection, fingerprint: Mapping[str, object]) -> None:
    """Wipe queries, pages, candidates and API accounting; store the new fingerprint."""
    # Children first: candidates and pages reference queries.
    for table in ("candidates", "pages", "queries", "api_calls"):
        conn.execute(f"DELETE FROM {table}")
    conn.execute("DELETE FROM meta WHERE key IN (?, ?)", (API_SENT_KEY, MANIFEST_KEY))
    store_fingerprint(conn, fingerprint)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('created_at', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (utc_iso(time.time()),),
    )


#: What a fresh start moves out of the way (never deletes): the previous run's files.
PREVIOUS_RUN_FILES = ("images", "manifest.jsonl", "stats.json")


def _is_empty_dir(path: Path) -> bool:
    # An empty images/ (e.g. made by the crawler before this call) is nothing to keep.
    if path.is_symlink() or not path.is_dir():
        return False
    with os.scandir(path) as it:
        return next(it, None) is None


def move_previous_run_aside(out: Path) -> Path | None:
    """Move images/, manifest.jsonl and stats.json into ``OUT/replaced-<UTC time>/``.

    Returns that directory, or None if there was nothing to move. Never deletes anything."""
    present = [
        out / name
        for name in PREVIOUS_RUN_FILES
        if os.path.lexists(out / name) and not _is_empty_dir(out / name)
    ]
    if not present:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = out / f"replaced-{stamp}"
    n = 1
    while os.path.lexists(dest):
        n += 1
        dest = out / f"replaced-{stamp}-{n}"
    dest.mkdir()
    for path in present:
        # One rename per entry: atomic and cheap however many images there are.
        os.rename(path, dest / path.name)
    return dest


#: ``meta`` key of the number of API calls counted *before* they were sent
#: (:func:`count_api_call_sent`).
API_SENT_KEY = "api_calls_sent"

#: "1" from the start of a run until its checkpoint closes cleanly (absent: never known).
UNCLEAN_KEY = "unclean_stop"

#: The committed length of ``manifest.jsonl`` and its inode (:mod:`bingcrawl.store.manifest`).
MANIFEST_KEY = "manifest_committed"
#: Publishers' opt-outs some run on this OUT did not honour (a JSON list, only ever grows).
IGNORED_KEY = "etiquette_ignored"


def get_flag(conn: sqlite3.Connection, key: str, *, default: bool) -> bool:
    """A boolean meta value (``default`` when absent)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0] == "1"


def set_flag(conn: sqlite3.Connection, key: str, value: bool) -> None:
    """Store a boolean meta value."""
    conn.execute(SET_META, (key, "1" if value else "0"))


#: Upsert one meta value (parameters: key, value).
SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

#: Take back one call counted as sent that never left (parameter: API_SENT_KEY).
REFUND_API_CALL = (
    "UPDATE meta SET value = CAST(max(CAST(value AS INTEGER) - 1, 0) AS TEXT) WHERE key = ?"
)


def api_answered(conn: sqlite3.Connection) -> int:
    """API calls whose answer (or failure) was recorded, by ``record_api_call``."""
    return int(conn.execute("SELECT coalesce(sum(count), 0) FROM api_calls").fetchone()[0])


def api_sent(conn: sqlite3.Connection) -> int:
    """API calls counted before they were sent (0 if the crawler never did)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (API_SENT_KEY,)).fetchone()
    return int(row[0]) if row is not None else 0


def api_total(conn: sqlite3.Connection) -> int:
    """All API calls spent on this OUT: counted when sent, or else when answered.

    A call counted as sent may never have been answered (the process was killed in between),
    so the larger count is the true one; a checkpoint written without send counts has only
    the answered ones.
    """
    return max(api_sent(conn), api_answered(conn))


def count_api_call_sent(conn: sqlite3.Connection) -> int:
    """Count one more API call as sent; return the new total (see :func:`api_total`)."""
    # Continue from the answered count when a previous run did not count sends.
    total = api_total(conn) + 1
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (API_SENT_KEY, str(total)),
    )
    return total
