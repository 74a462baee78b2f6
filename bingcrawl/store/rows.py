"""How records map onto checkpoint rows: URL keys, column lists, statements, conversions.

Only placeholders ever carry values into SQL; the f-strings in this package splice in the
constant column lists below and nothing else.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import orjson

from bingcrawl.records import Candidate, Outcome, Source, Status
from bingcrawl.store.atomic import split_relative
from bingcrawl.store.schema import to_signed

__all__ = [
    "CANDIDATE_COLUMNS",
    "COUNT_API_CALL",
    "COUNT_API_CALL_TODAY",
    "QUERY_COLUMNS",
    "RESET_ORPHAN_DUPLICATES",
    "UPDATE_OUTCOME",
    "QueryRow",
    "StoredHashes",
    "candidate_from_row",
    "insert_candidates",
    "iter_stored_hashes",
    "outcome_params",
    "prefix_range",
    "query_row",
    "reset_stored",
    "sha256_by_id",
    "stored_hash_rows",
    "url_key",
    "url_key_digest",
    "validate_outcome",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_DETAIL = 2000


def url_key(url: str) -> str:
    """Normalise a URL for de-duplication.

    Lower-cases scheme and host, drops the default port and the fragment, and writes an
    empty http(s) path as ``/``. Path and query are kept as they are (they are case
    sensitive). A URL that cannot be parsed is only stripped of its fragment.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url.partition("#")[0]
    scheme = parts.scheme.lower()
    host = parts.hostname
    if host is None:
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{netloc}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{userinfo}@{netloc}"
    path = parts.path or ("/" if scheme in _DEFAULT_PORTS else "")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def url_key_digest(url: str) -> bytes:
    """The 16-byte digest of :func:`url_key` stored in the unique ``candidates.url_key``."""
    key = url_key(url).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(key, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class QueryRow:
    """One row of the ``queries`` table."""

    id: int
    source: str
    label: str
    text: str
    norm: str
    parent_id: int | None
    root_id: int | None
    depth: int
    params: dict[str, object]
    next_offset: int
    state: str
    pages: int
    results: int
    error: str | None


QUERY_COLUMNS = (
    "id, source, label, text, norm, parent_id, root_id, depth, params, next_offset, state, "
    "pages, results, error"
)

CANDIDATE_COLUMNS = (
    "id, url, label, query, source, query_id, image_id, name, host_page_url, thumbnail_url, "
    "insights_token, encoding_format, reported_width, reported_height, license, parent, "
    "license_url, creator, attribution, provider"
)

INSERT_CANDIDATE = (
    "INSERT INTO candidates (url_key, url, query_id, label, query, source, parent, image_id, "
    "name, host_page_url, thumbnail_url, insights_token, encoding_format, reported_width, "
    "reported_height, license, license_url, creator, attribution, provider, created_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

UPDATE_OUTCOME = (
    "UPDATE candidates SET status = ?, attempts = ?, error_class = ?, detail = ?, sha256 = ?, "
    "phash = ?, width = ?, height = ?, format = ?, bytes = ?, path = ?, duplicate_of = ?, "
    "distance = ?, fetched_at = ?, shard_offset = ?, shard_end = ?, centre_hash = ?, "
    "match_kind = ?, unlisted = ?, updated_at = ?, "
    # Bing's insights token (~155 bytes) serves only to ask about a stored image (--similar):
    # a candidate that ends duplicate or failed does not keep it.
    "insights_token = CASE WHEN ? IN ('duplicate', 'failed') THEN NULL ELSE insights_token END "
    "WHERE id = ?"
)

COUNT_API_CALL = (
    "INSERT INTO api_calls (endpoint, status, count) VALUES (?, ?, 1) "
    "ON CONFLICT (endpoint, status) DO UPDATE SET count = count + 1"
)

COUNT_API_CALL_TODAY = (
    "INSERT INTO api_calls_daily (day, endpoint, count) VALUES (date('now'), ?, 1) "
    "ON CONFLICT (day, endpoint) DO UPDATE SET count = count + 1"
)


def query_row(row: sqlite3.Row | tuple[Any, ...]) -> QueryRow:
    """A :class:`QueryRow` from a row selected with :data:`QUERY_COLUMNS`."""
    params = orjson.loads(row[8]) if row[8] else {}
    return QueryRow(
        id=row[0],
        source=row[1],
        label=row[2],
        text=row[3],
        norm=row[4],
        parent_id=row[5],
        root_id=row[6],
        depth=row[7],
        params=params,
        next_offset=row[9],
        state=row[10],
        pages=row[11],
        results=row[12],
        error=row[13],
    )


def candidate_from_row(row: tuple[Any, ...]) -> Candidate:
    """A :class:`Candidate` from a row selected with :data:`CANDIDATE_COLUMNS`."""
    return Candidate(
        id=row[0],
        url=row[1],
        label=row[2],
        query=row[3],
        source=Source(row[4]),
        query_id=row[5],
        image_id=row[6],
        name=row[7],
        host_page_url=row[8],
        thumbnail_url=row[9],
        insights_token=row[10],
        encoding_format=row[11],
        reported_width=row[12],
        reported_height=row[13],
        license=row[14],
        parent=row[15],
        license_url=row[16],
        creator=row[17],
        attribution=row[18],
        provider=row[19],
    )


def insert_candidates(
    conn: sqlite3.Connection,
    candidates: Sequence[Candidate],
    query_id: int,
    now: float,
    *,
    tokens: bool = True,
) -> list[Candidate]:
    """Insert the candidates whose URL key is new; return those, with id and query_id set.
    ``tokens=False`` leaves Bing's insights tokens out of the rows (~155 bytes each; only
    ``--similar`` uses them, and it can ask by URL instead).

    Must run inside the writer's transaction: the ids of the new rows are read back as the
    rows above the previous maximum id, which holds because only this connection writes.
    """
    fresh: dict[bytes, Candidate] = {}
    for c in candidates:
        fresh.setdefault(url_key_digest(c.url), c)  # first occurrence in the batch wins
    if not fresh:
        return []
    known = _known_keys(conn, list(fresh))
    rows = [
        (
            key, c.url, query_id, c.label, c.query, str(c.source), c.parent, c.image_id,
            c.name, c.host_page_url, c.thumbnail_url, c.insights_token if tokens else None,
            c.encoding_format,
            c.reported_width, c.reported_height, c.license, c.license_url, c.creator,
            c.attribution, c.provider, now, now,
        )
        for key, c in fresh.items()
        if key not in known
    ]  # fmt: skip
    if not rows:
        return []
    before = conn.execute("SELECT coalesce(max(id), 0) FROM candidates").fetchone()[0]
    conn.executemany(INSERT_CANDIDATE, rows)
    ids = dict(conn.execute("SELECT url_key, id FROM candidates WHERE id > ?", (before,)))
    return [
        replace(c, id=ids[key], query_id=query_id) for key, c in fresh.items() if key not in known
    ]


_IN_CHUNK = 500


def _known_keys(conn: sqlite3.Connection, keys: list[bytes]) -> set[bytes]:
    known: set[bytes] = set()
    for i in range(0, len(keys), _IN_CHUNK):
        chunk = keys[i : i + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT url_key FROM candidates WHERE url_key IN ({marks})"
        known.update(k for (k,) in conn.execute(sql, chunk))
    return known


def outcome_params(outcome: Outcome, now: float) -> tuple[object, ...]:
    """The parameters of :data:`UPDATE_OUTCOME` for ``outcome``."""
    phash = None if outcome.phash is None else to_signed(outcome.phash)
    detail = outcome.detail[:MAX_DETAIL] if outcome.detail else outcome.detail
    return (
        str(outcome.status),
        outcome.attempts,
        outcome.error_class,
        detail,
        outcome.sha256,
        phash,
        outcome.width,
        outcome.height,
        outcome.format,
        outcome.size,
        outcome.path,
        outcome.duplicate_of,
        outcome.distance,
        outcome.fetched_at,
        outcome.shard_offset,
        outcome.shard_end,
        None if outcome.centre is None else to_signed(outcome.centre),
        outcome.match,
        1 if outcome.status is Status.STORED else None,  # its manifest line is yet to come
        now,
        str(outcome.status),
        outcome.candidate.id,
    )


def validate_outcome(outcome: Outcome) -> None:
    """Refuse (ValueError) an outcome the checkpoint could not use: a programming error."""
    if outcome.candidate.id <= 0:
        raise ValueError("record_outcome: the candidate has no checkpoint id (never recorded)")
    if outcome.status is Status.STORED:
        if not (outcome.path and outcome.sha256 and outcome.phash is not None):
            raise ValueError("record_outcome: a stored outcome needs path, sha256 and phash")
        parts = split_relative(outcome.path)
        in_shard = parts[0] == "shards" and len(parts) == 2 and outcome.shard_end is not None
        if not in_shard and (parts[0] != "images" or len(parts) < 3):
            raise ValueError(
                "record_outcome: path must be images/<label>/<file> or shards/<shard>.tar "
                f"with shard offsets, got {outcome.path!r}"
            )
    if outcome.status is Status.DUPLICATE and not outcome.duplicate_of:
        raise ValueError("record_outcome: a duplicate outcome needs duplicate_of")


@dataclass(frozen=True, slots=True)
class StoredHashes:
    """The stored images' hashes as arrays (for a bulk index build).

    ``ids`` (int64) are candidate row ids, ``phash`` (uint64) the perceptual hashes and
    ``sha256`` the hex digests, all in the same order.
    """

    ids: npt.NDArray[np.int64]
    phash: npt.NDArray[np.uint64]
    sha256: list[str]

    def __len__(self) -> int:
        return len(self.sha256)


def prefix_range(prefix: str) -> tuple[str, str]:
    """``(prefix, end)``: ``path >= prefix AND path < end`` holds for exactly the paths under
    the folder ``prefix`` (which ends in "/"), a range scan of a path index."""
    return prefix, prefix[:-1] + chr(ord("/") + 1)


def sha256_by_id(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str | None]:
    """The sha256 of each of these candidates (few: those recovery resets)."""
    found: dict[int, str | None] = {}
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[i : i + _IN_CHUNK])
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT id, sha256 FROM candidates WHERE id IN ({marks})"
        found.update(conn.execute(sql, chunk))
    return found


STORED_HASHES = (
    "SELECT id, sha256, phash, centre_hash FROM candidates INDEXED BY idx_candidates_stored_hash "
    "WHERE status = 'stored' AND sha256 IS NOT NULL AND phash IS NOT NULL"
)


_MASK64 = (1 << 64) - 1


def iter_stored_hashes(conn: sqlite3.Connection) -> Iterator[tuple[str, int, int | None]]:
    """``(sha256, unsigned phash, unsigned centre hash or None)`` of every stored row,
    streamed from the cursor (the same covering-index scan as :func:`stored_hash_rows`,
    without a list of every row)."""
    for _, sha256, phash, centre in conn.execute(STORED_HASHES):
        yield sha256, phash & _MASK64, None if centre is None else centre & _MASK64


def stored_hash_rows(conn: sqlite3.Connection) -> list[tuple[int, str, int, int | None]]:
    """``(id, sha256, signed phash, signed centre hash or None)`` of every stored row (one
    covering-index scan)."""
    rows: list[tuple[int, str, int, int | None]] = conn.execute(STORED_HASHES).fetchall()
    return rows


_RESET_STORED = (
    "UPDATE candidates SET status = 'pending', sha256 = NULL, phash = NULL, width = NULL, "
    "height = NULL, format = NULL, bytes = NULL, path = NULL, duplicate_of = NULL, "
    "distance = NULL, shard_offset = NULL, shard_end = NULL, unlisted = NULL, updated_at = ? "
    "WHERE id = ?"
)
_RESET_DUPLICATES = (
    "UPDATE candidates SET status = 'pending', duplicate_of = NULL, distance = NULL, "
    "updated_at = ? WHERE status = 'duplicate' AND duplicate_of = ? "
    "AND NOT EXISTS (SELECT 1 FROM candidates s WHERE s.status = 'stored' AND s.sha256 = ?)"
)


#: Duplicates whose ``duplicate_of`` names no stored image go back to ``pending``.
#: (A copy of a visual-search seed names the seed, which is a query row, not a stored image.)
RESET_ORPHAN_DUPLICATES = (
    "UPDATE candidates SET status = 'pending', duplicate_of = NULL, distance = NULL, "
    "updated_at = ? WHERE status = 'duplicate' AND (duplicate_of IS NULL OR (NOT EXISTS "
    "(SELECT 1 FROM candidates s INDEXED BY idx_candidates_stored_hash "
    "WHERE s.sha256 = candidates.duplicate_of AND s.status = 'stored') AND NOT EXISTS "
    "(SELECT 1 FROM queries q WHERE q.source = 'visual' AND q.norm = candidates.duplicate_of)))"
)


def reset_stored(conn: sqlite3.Connection, ids: Sequence[int], now: float) -> int:
    """Send stored rows whose bytes are gone back to ``pending``, with the duplicates that
    pointed at them (unless another stored copy remains); returns how many duplicates."""
    if not ids:
        return 0
    digests = sha256_by_id(conn, ids)
    conn.executemany(_RESET_STORED, [(now, cid) for cid in ids])
    return sum(
        conn.execute(_RESET_DUPLICATES, (now, sha, sha)).rowcount
        for sha in {sha for sha in digests.values() if sha}
    )
