"""The files of a dataset: ``manifest.jsonl``, ``stats.json`` and exports.

All of them are read from the checkpoint through a read-only connection (safe next to a
running crawl), streamed row by row (never the whole table in memory) and written atomically
(:func:`bingcrawl.store.atomic.atomic_open`). The functions block: the crawler runs them in a
thread, after ``await checkpoint.flush()``.

``manifest.jsonl`` fields (a contract, DESIGN.md): ``path`` (relative to OUT), ``label``,
``query``, ``source``, ``content_url``, ``host_page_url``, ``image_id``, ``name``, ``sha256``,
``phash`` (16 lower-case hex digits), ``width``, ``height``, ``format``, ``bytes``,
``license``, ``fetched_at`` (ISO 8601 UTC), plus ``parent``, ``thumbnail_url`` and (the
``regions`` near-duplicate method) ``centre_hash``, 16 hex digits or null.

CSV cells are written as they are (no spreadsheet-formula escaping): an export is data for
programs; values that start with ``=`` come from the web and should be treated as such.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import orjson

from bingcrawl.errors import ConfigError
from bingcrawl.records import Status
from bingcrawl.store.atomic import atomic_open, atomic_write_bytes
from bingcrawl.store.schema import CHECKPOINT_NAME, connect_readonly, from_signed, utc_iso
from bingcrawl.store.summary import build_summary, read_summary

__all__ = [
    "CANDIDATE_FIELDS",
    "DUPLICATE_FIELDS",
    "MANIFEST_FIELDS",
    "MANIFEST_NAME",
    "STATS_NAME",
    "ExportResult",
    "HasDbPath",
    "atomic_open",
    "atomic_write_bytes",
    "export",
    "manifest_rows",
    "manifest_select",
    "manifest_values",
    "snapshot",
    "status_report",
    "write_jsonl",
    "write_manifest",
    "write_stats",
]

MANIFEST_NAME = "manifest.jsonl"
STATS_NAME = "stats.json"

ExportFormat = Literal["jsonl", "csv", "parquet"]

_FETCH = 2000
_STATUS_ORDER = tuple(s.value for s in Status)
_PARQUET_BATCH = 20_000

# (output field, SQL expression, kind) - kind drives conversion and the parquet type.
_Field = tuple[str, str, Literal["str", "int", "phash", "time"]]

_MEMBER = (
    "CASE WHEN shard_end IS NOT NULL THEN substr(sha256, 1, 16) || '.' || "
    "CASE format WHEN 'jpeg' THEN 'jpg' ELSE format END END"
)

_MANIFEST: tuple[_Field, ...] = (
    ("path", "path", "str"),
    ("label", "label", "str"),
    ("query", "query", "str"),
    ("source", "source", "str"),
    ("content_url", "url", "str"),
    ("host_page_url", "host_page_url", "str"),
    ("image_id", "image_id", "str"),
    ("name", "name", "str"),
    ("sha256", "sha256", "str"),
    ("phash", "phash", "phash"),
    ("width", "width", "int"),
    ("height", "height", "int"),
    ("format", "format", "str"),
    ("bytes", "bytes", "int"),
    ("license", "license", "str"),
    ("fetched_at", "fetched_at", "time"),
    ("parent", "parent", "str"),
    ("thumbnail_url", "thumbnail_url", "str"),
    # webdataset output: the image's member in the shard at ``path`` and its byte offset
    ("member", _MEMBER, "str"),
    ("shard_offset", "shard_offset", "int"),
    # licenses as data (issue 15): stated per image by providers that have them
    ("license_url", "license_url", "str"),
    ("creator", "creator", "str"),
    ("attribution", "attribution", "str"),
    ("provider", "provider", "str"),
    # the regions near-duplicate method (issue 17): the hash of the picture's centre, so a
    # dataset merged from several crawls can be de-duplicated by the crawl's own rule
    ("centre_hash", "centre_hash", "phash"),
)

_CANDIDATE: tuple[_Field, ...] = (
    ("id", "id", "int"),
    ("status", "status", "str"),
    ("content_url", "url", "str"),
    ("label", "label", "str"),
    ("query", "query", "str"),
    ("source", "source", "str"),
    ("query_id", "query_id", "int"),
    ("parent", "parent", "str"),
    ("attempts", "attempts", "int"),
    ("error_class", "error_class", "str"),
    ("detail", "detail", "str"),
    ("path", "path", "str"),
    ("sha256", "sha256", "str"),
    ("phash", "phash", "phash"),
    ("centre_hash", "centre_hash", "phash"),
    ("width", "width", "int"),
    ("height", "height", "int"),
    ("format", "format", "str"),
    ("bytes", "bytes", "int"),
    ("duplicate_of", "duplicate_of", "str"),
    ("distance", "distance", "int"),
    ("match", "match_kind", "str"),
    ("fetched_at", "fetched_at", "time"),
    ("host_page_url", "host_page_url", "str"),
    ("thumbnail_url", "thumbnail_url", "str"),
    ("image_id", "image_id", "str"),
    ("name", "name", "str"),
    ("license", "license", "str"),
    ("reported_width", "reported_width", "int"),
    ("reported_height", "reported_height", "int"),
    ("license_url", "license_url", "str"),
    ("creator", "creator", "str"),
    ("attribution", "attribution", "str"),
    ("provider", "provider", "str"),
)

_DUPLICATE: tuple[_Field, ...] = (
    ("cluster", "cluster", "str"),
    ("role", "role", "str"),
    ("distance", "distance", "int"),
    ("match", "match", "str"),
    ("id", "id", "int"),
    ("status", "status", "str"),
    ("content_url", "url", "str"),
    ("label", "label", "str"),
    ("query", "query", "str"),
    ("source", "source", "str"),
    ("path", "path", "str"),
    ("sha256", "sha256", "str"),
    ("phash", "phash", "phash"),
    ("centre_hash", "centre_hash", "phash"),
    ("width", "width", "int"),
    ("height", "height", "int"),
    ("host_page_url", "host_page_url", "str"),
)

#: Field names of each output, in order.
MANIFEST_FIELDS: tuple[str, ...] = tuple(f[0] for f in _MANIFEST)
CANDIDATE_FIELDS: tuple[str, ...] = tuple(f[0] for f in _CANDIDATE)
DUPLICATE_FIELDS: tuple[str, ...] = tuple(f[0] for f in _DUPLICATE)


class HasDbPath(Protocol):
    """Anything that knows where its checkpoint lives (e.g. a ``Checkpoint``)."""

    @property
    def db_path(self) -> Path:
        """The SQLite file."""
        ...


DbSource = HasDbPath | Path | str


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Where an export was written and how many rows it holds."""

    path: Path | None  # None: written to a stream (stdout)
    rows: int


def _db_path(source: DbSource) -> Path:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path / CHECKPOINT_NAME if path.is_dir() else path
    return source.db_path


def _convert(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "phash":
        return f"{from_signed(value):016x}"
    if kind == "time":
        return utc_iso(value)
    return value


def _select(fields: Sequence[_Field]) -> str:
    return ", ".join(expr for _, expr, _ in fields)


def _rows(cursor: sqlite3.Cursor, fields: Sequence[_Field]) -> Iterator[dict[str, Any]]:
    names = [(name, kind) for name, _, kind in fields]
    while chunk := cursor.fetchmany(_FETCH):
        for row in chunk:
            yield {name: _convert(kind, v) for (name, kind), v in zip(names, row, strict=True)}


def manifest_select() -> str:
    """The SQL select list of a manifest row (for :func:`manifest_values`)."""
    return _select(_MANIFEST)


_MANIFEST_NAMES = tuple((name, kind) for name, _, kind in _MANIFEST)


def manifest_values(row: Sequence[Any]) -> dict[str, Any]:
    """A manifest object from a row selected with :func:`manifest_select`."""
    return {
        name: _convert(kind, v) for (name, kind), v in zip(_MANIFEST_NAMES, row, strict=True)
    }


def manifest_rows(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """The manifest's rows (every stored image, in id order), read on ``conn``."""
    return _manifest_rows(conn)


def _manifest_rows(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    sql = f"SELECT {_select(_MANIFEST)} FROM candidates WHERE status = 'stored' ORDER BY id"
    return _rows(conn.execute(sql), _MANIFEST)


def _candidate_rows(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    sql = f"SELECT {_select(_CANDIDATE)} FROM candidates ORDER BY id"
    return _rows(conn.execute(sql), _CANDIDATE)


def _duplicate_rows(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    # Clusters: the stored image first (distance 0, role "stored"), then every candidate
    # whose duplicate_of points at it, nearest first, with the hash that matched it.
    cols = _select(_DUPLICATE[4:])
    heads = conn.execute(
        f"SELECT sha256, 'stored', 0, NULL, {cols} FROM candidates s "
        "WHERE s.status = 'stored' AND EXISTS "
        "(SELECT 1 FROM candidates d WHERE d.duplicate_of = s.sha256) ORDER BY s.id"
    )
    members = conn.cursor()
    for head in _rows(heads, _DUPLICATE):
        yield head
        members.execute(
            f"SELECT duplicate_of, 'duplicate', distance, match_kind, {cols} FROM candidates "
            "WHERE duplicate_of = ? AND status = 'duplicate' ORDER BY distance, id",
            (head["cluster"],),
        )
        yield from _rows(members, _DUPLICATE)


def snapshot(source: DbSource) -> AbstractContextManager[sqlite3.Connection]:
    """A read-only connection to ``source``'s checkpoint inside one read transaction: what
    is read through it describes one consistent state."""
    return _snapshot(source)


@contextmanager
def _snapshot(source: DbSource) -> Iterator[sqlite3.Connection]:
    # One read transaction: a file describes a single consistent state of the checkpoint.
    conn = connect_readonly(_db_path(source))
    try:
        conn.execute("BEGIN")
        yield conn
    finally:
        conn.close()


def write_jsonl(fh: BinaryIO, rows: Iterator[Mapping[str, Any]]) -> int:
    n = 0
    for row in rows:
        fh.write(orjson.dumps(row) + b"\n")
        n += 1
    return n


def _write_csv(fh: BinaryIO, rows: Iterator[Mapping[str, Any]], fields: Sequence[str]) -> int:
    text = io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=False)
    try:
        writer = csv.DictWriter(text, fieldnames=list(fields), lineterminator="\r\n")
        writer.writeheader()
        n = 0
        for row in rows:
            writer.writerow(row)
            n += 1
        text.flush()
    finally:
        # Hand the binary file back to atomic_open, which closes (and fsyncs) it.
        text.detach()
    return n


def _write_parquet(
    fh: BinaryIO, rows: Iterator[Mapping[str, Any]], fields: Sequence[_Field]
) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ConfigError(
            "--format", "parquet export needs pyarrow: pip install 'bingcrawl[parquet]'"
        ) from exc
    types = {"str": pa.string(), "phash": pa.string(), "time": pa.string(), "int": pa.int64()}
    schema = pa.schema([(name, types[kind]) for name, _, kind in fields])
    names = [name for name, _, _ in fields]
    n = 0
    with pq.ParquetWriter(fh, schema) as writer:
        while True:
            batch = list(itertools.islice(rows, _PARQUET_BATCH))
            if not batch and n:
                break
            columns = {name: [row[name] for row in batch] for name in names}
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))
            n += len(batch)
            if not batch:
                break
    return n


def write_manifest(source: DbSource, out: Path, *, durable: bool = False) -> int:
    """Rewrite ``OUT/manifest.jsonl`` (one object per stored image); return the row count."""
    with _snapshot(source) as conn, atomic_open(Path(out), MANIFEST_NAME, durable=durable) as fh:
        return write_jsonl(fh, _manifest_rows(conn))


def write_stats(
    source: DbSource,
    out: Path,
    *,
    extra: Mapping[str, object] | None = None,
    durable: bool = False,
) -> dict[str, object]:
    """Rewrite ``OUT/stats.json`` and return what was written.

    Counts candidates by status and failures by error class, queries by state, API calls
    (total and by endpoint / status) and stored bytes; ``extra`` (e.g. the run's durations,
    measured by the caller) is merged in at the top level.
    """
    with _snapshot(source) as conn:
        summary = build_summary(conn)
        stored_bytes = conn.execute(
            "SELECT coalesce(sum(bytes), 0) FROM candidates "
            "INDEXED BY idx_candidates_stored_location WHERE status = 'stored'"
        ).fetchone()[0]
    by_status = {status: summary.totals.get(status, 0) for status in _STATUS_ORDER}
    by_state: dict[str, int] = {}
    for q in summary.queries:
        by_state[q.state] = by_state.get(q.state, 0) + 1
    by_endpoint: dict[str, dict[str, int]] = {}
    for call in summary.api_calls:
        by_endpoint.setdefault(call.endpoint, {})[str(call.status)] = call.count
    stats: dict[str, object] = {
        "generated_at": utc_iso(time.time()),
        "candidates": {"total": sum(by_status.values()), "by_status": by_status},
        "errors": dict(summary.errors),
        "opted_out": summary.opted_out_dict(),
        "queries": {"total": len(summary.queries), "by_state": by_state},
        "api_calls": {"total": summary.api_calls_total, "by_endpoint": by_endpoint},
        "stored_bytes": stored_bytes,
    }
    if extra:
        stats.update(orjson.loads(orjson.dumps(dict(extra), default=str)))
    data = orjson.dumps(stats, option=orjson.OPT_INDENT_2) + b"\n"
    with atomic_open(Path(out), STATS_NAME, durable=durable) as fh:
        fh.write(data)
    return stats


_RowSource = Callable[[sqlite3.Connection], Iterator[dict[str, Any]]]

_KINDS: dict[str, tuple[tuple[_Field, ...], _RowSource]] = {
    "manifest": (_MANIFEST, _manifest_rows),
    "candidates": (_CANDIDATE, _candidate_rows),
    "duplicates": (_DUPLICATE, _duplicate_rows),
}


#: Where ``bingcrawl export`` writes by default, under OUT (never OUT/manifest.jsonl itself).
EXPORT_DIR = "export"


def export(
    out: Path,
    *,
    fmt: ExportFormat = "jsonl",
    all_candidates: bool = False,
    dest: Path | BinaryIO | None = None,
    duplicates: bool = False,
    durable: bool = False,
    source: DbSource | None = None,
    licenses: Sequence[str] | None = None,
) -> ExportResult:
    """Export the stored images (the manifest rows), every candidate with its status
    (``all_candidates``) or the duplicate clusters (``duplicates``) as jsonl, csv or parquet.

    ``licenses`` keeps only the rows whose license is one of these codes (``by``, ``by-sa``,
    ``cc0``... or a Bing filter value such as ``Public``): the first word of the row's
    ``license``, compared case-insensitively (``by 4.0`` is ``by``). Rows with no license
    are left out.

    ``dest`` is a file path (written atomically; its directory is created if needed), an
    open binary stream (e.g. ``sys.stdout.buffer``; jsonl and csv only), or None for
    ``OUT/export/<manifest|candidates|duplicates>.<fmt>``. The crawl's own
    ``OUT/manifest.jsonl`` is refused as a destination. ``source`` defaults to ``OUT``'s
    checkpoint. Parquet needs the optional ``pyarrow`` (ConfigError otherwise).
    """
    if fmt not in ("jsonl", "csv", "parquet"):
        raise ConfigError("--format", f"unknown export format {fmt!r}; one of jsonl, csv, parquet")
    if all_candidates and duplicates:
        raise ConfigError("--duplicates", "cannot be combined with --all")
    kind = "duplicates" if duplicates else "candidates" if all_candidates else "manifest"
    fields, all_rows = _KINDS[kind]
    rows_of = all_rows
    if licenses is not None:
        if duplicates:
            raise ConfigError("--license", "cannot be combined with --duplicates")
        wanted = {code.strip().casefold() for code in licenses if code.strip()}
        if not wanted:
            raise ConfigError("--license", "give one or more license codes, e.g. by,by-sa,cc0")

        def rows_of(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
            return (r for r in all_rows(conn) if license_code(r.get("license")) in wanted)

    out = Path(out)
    db = source if source is not None else out
    if dest is not None and not isinstance(dest, str | os.PathLike):
        if fmt == "parquet":
            raise ConfigError("--output", "parquet is written to a file, not a stream: name one")
        with _snapshot(db) as conn:
            n = _write_rows(fmt, dest, rows_of(conn), fields)
        dest.flush()
        return ExportResult(path=None, rows=n)
    target = Path(dest) if dest is not None else out / EXPORT_DIR / f"{kind}.{fmt}"
    if target.resolve() == (out / MANIFEST_NAME).resolve():
        raise ConfigError("--output", f"{target} is the crawl's own manifest; choose another file")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _snapshot(db) as conn, atomic_open(target.parent, target.name, durable=durable) as fh:
        n = _write_rows(fmt, fh, rows_of(conn), fields)
    return ExportResult(path=target, rows=n)


def license_code(license: object) -> str | None:
    """The code of a stored license, case-folded: its first word (``by 4.0`` -> ``by``)."""
    if not isinstance(license, str) or not license.strip():
        return None
    return license.split()[0].casefold()


def _write_rows(
    fmt: ExportFormat, fh: BinaryIO, rows: Iterator[dict[str, Any]], fields: Sequence[_Field]
) -> int:
    if fmt == "jsonl":
        return write_jsonl(fh, rows)
    if fmt == "csv":
        return _write_csv(fh, rows, [name for name, _, _ in fields])
    return _write_parquet(fh, rows, fields)


def status_report(out: Path | str, *, as_json: bool = False) -> str:
    """``bingcrawl status DIR [--json]``: the summary as a text table or JSON (no trailing
    newline). Read-only, so it is safe next to a running crawl."""
    summary = read_summary(Path(out))
    return summary.to_json() if as_json else summary.render_text().rstrip("\n")
