"""The checkpoint's SQLite schema, its forward migrations, and connection set-up.

The schema version lives in ``PRAGMA user_version``. :data:`MIGRATIONS` is append-only: entry
``i`` takes a database from version ``i`` to ``i + 1``, so a checkpoint written by any older
bingcrawl is brought forward step by step, each step in its own transaction. A checkpoint from a
*newer* bingcrawl is refused with :class:`~bingcrawl.errors.CheckpointError` rather than
guessed at.

Tables (version 4):

``meta``
    key/value strings: ``fingerprint`` (the run's options, JSON), ``created_at``,
    ``updated_at`` (ISO 8601 UTC).
``queries``
    one row per query of any source; ``UNIQUE(source, label, norm)`` where ``norm`` is the
    caller's normalised text. ``next_offset`` is where paging resumes.
``pages``
    one row per completed result page; a completed page is never requested again.
``candidates``
    one row per distinct image URL (``url_key`` is a 16-byte BLAKE2b digest of
    :func:`~bingcrawl.store.checkpoint.url_key`, which keeps the unique index small at
    millions of rows) with its status and, once fetched, its hashes and file path.
    ``phash`` is the 64-bit perceptual hash stored as a *signed* SQLite INTEGER (version 7
    adds ``centre_hash``, stored alike, and ``match_kind``: how a duplicate was found).
``api_calls``
    aggregated count per (endpoint, HTTP status); the sum feeds ``--max-api-calls``.

Version 8 adds ``candidates.unlisted`` (a stored row not yet in ``manifest.jsonl``) and meta
``manifest_bytes`` (the manifest's committed length): see :mod:`bingcrawl.store.manifest`.

Version 3 adds ``candidates.shard_offset`` / ``shard_end`` for webdataset output (see
:mod:`bingcrawl.store.shards`); version 4 an index for start-up recovery. ``meta`` also holds
``api_calls_sent``: API calls counted before they were sent (see :func:`~bingcrawl.store.
meta.api_total`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bingcrawl.errors import CheckpointError
from bingcrawl.records import QUERY_STATES

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CHECKPOINT_NAME",
    "MIGRATIONS",
    "QUERY_STATES",
    "SCHEMA_VERSION",
    "connect_readonly",
    "connect_writer",
    "from_signed",
    "migrate",
    "schema_version",
    "to_signed",
    "utc_iso",
]

#: File name of the checkpoint inside OUT (a contract: see DESIGN.md "Output layout").
CHECKPOINT_NAME = "checkpoint.sqlite"

#: How long a connection waits on a lock held by another connection before failing.
BUSY_TIMEOUT_MS = 10_000

#: The states a query can be in.

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1

_V1: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE queries (
        id          INTEGER PRIMARY KEY,
        source      TEXT NOT NULL,
        label       TEXT NOT NULL,
        text        TEXT NOT NULL,
        norm        TEXT NOT NULL,
        parent_id   INTEGER REFERENCES queries(id),
        root_id     INTEGER REFERENCES queries(id),
        depth       INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0),
        params      TEXT NOT NULL DEFAULT '{}',
        next_offset INTEGER NOT NULL DEFAULT 0 CHECK (next_offset >= 0),
        state       TEXT NOT NULL DEFAULT 'active'
                    CHECK (state IN ('active', 'exhausted', 'failed', 'done')),
        pages       INTEGER NOT NULL DEFAULT 0,
        results     INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        UNIQUE (source, label, norm)
    )
    """,
    """
    CREATE TABLE pages (
        query_id    INTEGER NOT NULL REFERENCES queries(id),
        "offset"    INTEGER NOT NULL,
        next_offset INTEGER NOT NULL,
        n_results   INTEGER NOT NULL,
        n_new       INTEGER NOT NULL,
        fetched_at  REAL NOT NULL,
        PRIMARY KEY (query_id, "offset")
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE candidates (
        id              INTEGER PRIMARY KEY,
        url_key         BLOB NOT NULL UNIQUE,
        url             TEXT NOT NULL,
        query_id        INTEGER NOT NULL REFERENCES queries(id),
        label           TEXT NOT NULL,
        query           TEXT NOT NULL,
        source          TEXT NOT NULL,
        parent          TEXT,
        image_id        TEXT,
        name            TEXT,
        host_page_url   TEXT,
        thumbnail_url   TEXT,
        insights_token  TEXT,
        encoding_format TEXT,
        reported_width  INTEGER,
        reported_height INTEGER,
        license         TEXT,
        status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'inflight', 'stored', 'duplicate',
                                          'failed', 'skipped')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        error_class     TEXT,
        detail          TEXT,
        sha256          TEXT,
        phash           INTEGER,
        width           INTEGER,
        height          INTEGER,
        format          TEXT,
        bytes           INTEGER,
        path            TEXT,
        duplicate_of    TEXT,
        distance        INTEGER,
        fetched_at      REAL,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    )
    """,
    # (status, rowid) order lets iter_pending page through one status by id without sorting.
    "CREATE INDEX idx_candidates_status ON candidates(status)",
    "CREATE INDEX idx_candidates_query ON candidates(query_id, status)",
    "CREATE INDEX idx_candidates_sha256 ON candidates(sha256)",
    """
    CREATE TABLE api_calls (
        endpoint TEXT NOT NULL,
        status   INTEGER NOT NULL,
        count    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (endpoint, status)
    ) WITHOUT ROWID
    """,
)

_V2: tuple[str, ...] = (
    # Resume reads (id, sha256, phash) of every stored row. A partial covering index (status
    # included so SQLite treats it as covering) reads ~20x fewer pages than the table, which
    # is what counts on a cold cache. Queries name it with INDEXED BY: without ANALYZE data
    # the planner prefers idx_candidates_status.
    "CREATE INDEX idx_candidates_stored_hash ON candidates(sha256, phash, status) "
    "WHERE status = 'stored'",
    # Duplicate clusters (export --duplicates) join on duplicate_of.
    "CREATE INDEX idx_candidates_duplicate_of ON candidates(duplicate_of) "
    "WHERE duplicate_of IS NOT NULL",
)

_V3: tuple[str, ...] = (
    # Webdataset output: a stored image's ``path`` is its tar shard, and these are the byte
    # range of its members there (header of the image member .. end of the json member).
    "ALTER TABLE candidates ADD COLUMN shard_offset INTEGER",
    "ALTER TABLE candidates ADD COLUMN shard_end INTEGER",
)

_V4: tuple[str, ...] = (
    # Start-up recovery checks the file (path, size) or shard range of every stored row. This
    # partial covering index reads them in one sequential pass: about 3x faster than visiting
    # the table at a million candidates, far more on a cold cache. Named with INDEXED BY, like
    # the v2 index.
    "CREATE INDEX idx_candidates_stored_location ON candidates(path, bytes, shard_end, status) "
    "WHERE status = 'stored'",
)

_V5: tuple[str, ...] = (
    # Licenses as data (search providers that state them per image: Openverse) and the
    # provider that found each candidate. Older rows keep NULL: nothing was known.
    "ALTER TABLE candidates ADD COLUMN license_url TEXT",
    "ALTER TABLE candidates ADD COLUMN creator TEXT",
    "ALTER TABLE candidates ADD COLUMN attribution TEXT",
    "ALTER TABLE candidates ADD COLUMN provider TEXT",
)

_V6: tuple[str, ...] = (
    # API calls per UTC day, for providers with a daily budget (Openverse's anonymous 200 a
    # day): `status` shows today's. Older calls were not dated.
    "CREATE TABLE api_calls_daily (day TEXT NOT NULL, endpoint TEXT NOT NULL, "
    "count INTEGER NOT NULL, PRIMARY KEY (day, endpoint))",
)

_V7: tuple[str, ...] = (
    # The ``regions`` near-duplicate method: the centre hash of each picture (signed, like
    # phash; NULL for older rows, small pictures and the ``whole`` method), and for a
    # duplicate which hash matched (exact, frame, centre; NULL for older rows). Resume reads
    # the centre hash too, so the covering index of v2 now covers it.
    "ALTER TABLE candidates ADD COLUMN centre_hash INTEGER",
    "ALTER TABLE candidates ADD COLUMN match_kind TEXT",
    "DROP INDEX idx_candidates_stored_hash",
    "CREATE INDEX idx_candidates_stored_hash ON candidates(sha256, phash, centre_hash, status) "
    "WHERE status = 'stored'",
)

_V8: tuple[str, ...] = (
    # The manifest is appended, not rewritten (issue 18): ``unlisted`` is 1 on a stored row
    # whose manifest line is not yet committed, NULL otherwise. The partial index holds only
    # those rows, so finding what to append costs O(new rows). Rows of older checkpoints are
    # NULL; their manifest is rewritten once in full (meta ``manifest_bytes`` is absent).
    "ALTER TABLE candidates ADD COLUMN unlisted INTEGER",
    "CREATE INDEX idx_candidates_unlisted ON candidates(id) WHERE unlisted IS NOT NULL",
    # Every lookup by sha256 is of a stored image, which the stored rows' covering index
    # (sha256 first) answers: this index of every hashed row cost ~58 bytes per candidate.
    "DROP INDEX idx_candidates_sha256",
    # stats.json and `status` count failures by class at the end of every run: from this
    # covering index of the failed rows (~4 bytes per candidate), not a table lookup each
    # (seconds at ten million, more on a cold cache).
    "CREATE INDEX idx_candidates_failed ON candidates(error_class, status) WHERE status = 'failed'",
)

#: ``MIGRATIONS[i]`` upgrades a version-``i`` database to version ``i + 1``. Append only.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8)

#: The schema version this bingcrawl writes.
SCHEMA_VERSION = len(MIGRATIONS)


def to_signed(value: int) -> int:
    """Map an unsigned 64-bit hash onto SQLite's signed INTEGER range."""
    if not 0 <= value < _U64:
        raise ValueError(f"not an unsigned 64-bit value: {value!r}")
    return value - _U64 if value > _I64_MAX else value


def from_signed(value: int) -> int:
    """Inverse of :func:`to_signed`."""
    return value & (_U64 - 1)


def schema_version(conn: sqlite3.Connection) -> int:
    """The ``user_version`` of the database behind ``conn``."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the database forward to ``target`` and return the version it started at.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Each step runs in its own
    ``BEGIN IMMEDIATE`` transaction together with its ``user_version`` bump, so a crash
    mid-migration leaves the database at the previous version, never half-migrated.
    """
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"unknown schema version {target}")
    start = schema_version(conn)
    if start > SCHEMA_VERSION:
        raise CheckpointError(
            f"the checkpoint has schema version {start}, newer than this bingcrawl "
            f"understands ({SCHEMA_VERSION}); upgrade bingcrawl to resume it"
        )
    for version in range(start, target):
        _apply(conn, version, MIGRATIONS[version])
    return start


def _apply(conn: sqlite3.Connection, version: int, statements: Sequence[str]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        if schema_version(conn) != version:
            conn.execute("ROLLBACK")
            return
        for sql in statements:
            conn.execute(sql)
        # PRAGMA takes no placeholders; version is an int we computed.
        conn.execute(f"PRAGMA user_version = {version + 1:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def connect_writer(path: Path, *, durable: bool) -> sqlite3.Connection:
    """Open the single read-write connection: WAL, foreign keys, explicit transactions.

    ``synchronous=NORMAL`` in WAL mode survives any process crash (kill -9) and loses at most
    the last transactions on power loss; ``durable=True`` selects ``FULL`` for power loss too.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise CheckpointError(f"cannot open checkpoint {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise CheckpointError(f"{path}: cannot switch the checkpoint to WAL (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise CheckpointError(f"{path} is not a usable checkpoint: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open a read-only connection to a checkpoint written by this or an older bingcrawl.

    Refuses (CheckpointError) a missing file, a non-database, and a newer schema. An older
    schema is readable only after a crawl migrated it, hence also refused.
    """
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise CheckpointError(f"cannot open checkpoint {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        conn.execute("PRAGMA query_only = ON")
        version = schema_version(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise CheckpointError(f"{path} is not a usable checkpoint: {exc}") from exc
    if version != SCHEMA_VERSION:
        conn.close()
        if version > SCHEMA_VERSION:
            raise CheckpointError(
                f"{path} has schema version {version}, newer than this bingcrawl "
                f"understands ({SCHEMA_VERSION})"
            )
        raise CheckpointError(
            f"{path} has schema version {version}; run `bingcrawl crawl` once to migrate it "
            f"to version {SCHEMA_VERSION}"
        )
    return conn


def utc_iso(epoch: float) -> str:
    """Format epoch seconds as ISO 8601 UTC with millisecond precision and a ``Z`` suffix."""
    when = datetime.fromtimestamp(epoch, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
