"""Streaming readers of URL lists: txt, csv, tsv, jsonl and parquet, resumable by offset.

A reader never holds the whole file: :meth:`UrlListReader.read` returns the next ``n``
records and the offset just after them (a byte offset for text formats, a row number for
parquet), which the checkpoint keeps as the row's ``next_offset``; :func:`open_url_list`
with that ``start`` continues right after the last committed batch.

Columns follow img2dataset: ``url`` and ``caption`` (plus an optional ``label``), names
configurable. A ``txt`` file has one URL per line (blank lines and ``#`` comments skipped).
A record without a usable http(s) URL (or an unparseable line) is counted as invalid and
skipped, never fatal. Readers are synchronous: call them from a thread.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit

import orjson

from bingcrawl.errors import ConfigError

__all__ = [
    "FORMATS",
    "UrlBatch",
    "UrlColumns",
    "UrlEntry",
    "UrlItem",
    "UrlListReader",
    "open_url_list",
    "url_format",
    "usable_url",
    "write_url_items",
]

#: File suffix -> format.
FORMATS = {
    "txt": "txt",
    "csv": "csv",
    "tsv": "tsv",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "parquet": "parquet",
}
_MAX_URL = 8192
_BOM = b"\xef\xbb\xbf"


def url_format(path: Path) -> str:
    """The format of a URL list, from its suffix (ConfigError naming ``--urls`` otherwise)."""
    fmt = FORMATS.get(path.suffix.lower().lstrip("."))
    if fmt is None:
        raise ConfigError(
            "--urls",
            f"{path}: unknown URL-list format; use one of "
            + ", ".join(f".{s}" for s in sorted(FORMATS)),
        )
    return fmt


def usable_url(text: str) -> bool:
    """True for an absolute http(s) URL with a host and no whitespace."""
    if not text or len(text) > _MAX_URL or any(c.isspace() for c in text):
        return False
    try:
        parts = urlsplit(text)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class UrlColumns:
    """Column names of a tabular URL list (img2dataset's defaults)."""

    url: str = "url"
    caption: str = "caption"
    label: str = "label"


@dataclass(frozen=True, slots=True)
class UrlEntry:
    """One usable record of a URL list."""

    url: str
    caption: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class UrlBatch:
    """Up to ``n`` records: the usable ones, the offset after them, and what was skipped."""

    entries: tuple[UrlEntry, ...]
    end: int
    eof: bool
    invalid: int


class UrlListReader(Protocol):
    """What :func:`open_url_list` returns."""

    def read(self, n: int) -> UrlBatch:
        """The next ``n`` records (fewer at the end of the file)."""
        ...

    def close(self) -> None:
        """Close the file."""
        ...


# A record: the offset just after it, and the entry (None: invalid).
_Record = tuple[int, UrlEntry | None]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _entry(url: Any, caption: Any = None, label: Any = None) -> UrlEntry | None:
    text = _text(url)
    if text is None or not usable_url(text):
        return None
    return UrlEntry(text, _text(caption), _text(label))


class _Reader:
    """Pulls records from a generator and batches them."""

    def __init__(self, records: Iterator[_Record], start: int) -> None:
        self._records = records
        self._end = start
        self._eof = False

    def read(self, n: int) -> UrlBatch:
        entries: list[UrlEntry] = []
        invalid = 0
        for _ in range(n):
            record = next(self._records, None)
            if record is None:
                self._eof = True
                break
            self._end, entry = record
            if entry is None:
                invalid += 1
            else:
                entries.append(entry)
        return UrlBatch(tuple(entries), self._end, self._eof, invalid)

    def close(self) -> None:
        self._records = iter(())


class _TextReader(_Reader):
    """txt, csv, tsv and jsonl: read as bytes so that offsets are byte positions."""

    def __init__(self, path: Path, fmt: str, columns: UrlColumns, start: int) -> None:
        self._fh: BinaryIO = path.open("rb")
        self._pos = 0
        self._path = path
        try:
            records = self._open(fmt, columns, start)
        except BaseException:
            self._fh.close()
            raise
        super().__init__(records, max(start, self._pos))

    def close(self) -> None:
        super().close()
        self._fh.close()

    def _lines(self) -> Iterator[str]:
        while raw := self._fh.readline():
            if self._pos == 0 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
                self._pos += len(_BOM)
            self._pos += len(raw)
            yield raw.decode("utf-8", errors="replace")

    def _open(self, fmt: str, columns: UrlColumns, start: int) -> Iterator[_Record]:
        if fmt in ("csv", "tsv"):
            header = next(csv.reader(self._lines(), delimiter="\t" if fmt == "tsv" else ","), [])
            index = _column_index(self._path, [h.strip() for h in header], columns)
            start = max(start, self._pos)
            self._fh.seek(start)
            self._pos = start
            return self._table(fmt, index)
        self._fh.seek(start)
        self._pos = start
        return self._jsonl(columns) if fmt == "jsonl" else self._txt()

    def _txt(self) -> Iterator[_Record]:
        for line in self._lines():
            text = line.strip()
            if text and not text.startswith("#"):
                yield self._pos, _entry(text)

    def _jsonl(self, columns: UrlColumns) -> Iterator[_Record]:
        for line in self._lines():
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield self._pos, None
                continue
            if not isinstance(obj, dict):
                yield self._pos, None
                continue
            yield (
                self._pos,
                _entry(obj.get(columns.url), obj.get(columns.caption), obj.get(columns.label)),
            )

    def _table(self, fmt: str, index: tuple[int, int | None, int | None]) -> Iterator[_Record]:
        url_i, caption_i, label_i = index
        # csv pulls lines only as it needs them, so _pos is the end of the record just read.
        rows = csv.reader(self._lines(), delimiter="\t" if fmt == "tsv" else ",")
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error:
                yield self._pos, None
                continue
            if not row or not any(cell.strip() for cell in row):
                continue

            def cell(i: int | None, row: list[str] = row) -> str | None:
                return row[i] if i is not None and i < len(row) else None

            yield self._pos, _entry(cell(url_i), cell(caption_i), cell(label_i))


def _column_index(
    path: Path, names: list[str], columns: UrlColumns
) -> tuple[int, int | None, int | None]:
    def find(name: str) -> int | None:
        if name in names:
            return names.index(name)
        folded = [n.casefold() for n in names]
        return folded.index(name.casefold()) if name.casefold() in folded else None

    url_i = find(columns.url)
    if url_i is None:
        raise ConfigError(
            "--url-col",
            f"{path}: no column {columns.url!r} (columns: {', '.join(names) or 'none'})",
        )
    return url_i, find(columns.caption), find(columns.label)


class _ParquetReader(_Reader):
    """parquet (needs pyarrow): offsets are row numbers; whole row groups are skipped."""

    def __init__(self, path: Path, columns: UrlColumns, start: int) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ConfigError("--urls", "reading parquet needs pyarrow") from exc
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, ValueError) as exc:
            raise ConfigError("--urls", f"{path}: not a readable parquet file ({exc})") from exc
        names = list(self._file.schema_arrow.names)
        url_i, caption_i, label_i = _column_index(path, names, columns)
        self._cols = [names[i] if i is not None else None for i in (url_i, caption_i, label_i)]
        super().__init__(self._rows(start), start)

    def _rows(self, start: int) -> Iterator[_Record]:
        wanted = [c for c in self._cols if c is not None]
        position = 0
        metadata = self._file.metadata
        for group in range(metadata.num_row_groups):
            size = metadata.row_group(group).num_rows
            if position + size <= start:
                position += size
                continue
            for batch in self._file.iter_batches(
                batch_size=1024, row_groups=[group], columns=wanted
            ):
                data = batch.to_pydict()
                url_c, caption_c, label_c = (data[c] if c is not None else None for c in self._cols)
                for i in range(batch.num_rows):
                    position += 1
                    if position <= start:
                        continue
                    yield (
                        position,
                        _entry(
                            url_c[i] if url_c is not None else None,
                            caption_c[i] if caption_c is not None else None,
                            label_c[i] if label_c is not None else None,
                        ),
                    )

    def close(self) -> None:
        super().close()
        self._file.close()


def open_url_list(
    path: Path, columns: UrlColumns | None = None, *, start: int = 0
) -> UrlListReader:
    """Open a URL list to read from ``start`` (an offset a previous :meth:`read` returned).

    Raises :class:`ConfigError` for an unknown format, a missing URL column or an unreadable
    file (before anything is read past the header).
    """
    columns = columns or UrlColumns()
    fmt = url_format(path)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    try:
        if fmt == "parquet":
            return _ParquetReader(path, columns, start)
        return _TextReader(path, fmt, columns, start)
    except OSError as exc:
        raise ConfigError("--urls", f"cannot read {path}: {exc.strerror or exc}") from exc


#: One URL given from Python: the URL; ``(url, caption)`` or ``(url, caption, label)``; or
#: a mapping with ``url`` and optionally ``caption`` and ``label``.
UrlItem = str | tuple[str, ...] | Mapping[str, object]

#: Where ``url_items`` are written, under the output directory.
INPUTS_DIR = "inputs"


def _item_record(item: object, n: int) -> dict[str, object]:
    if isinstance(item, str):
        return {"url": item}
    if isinstance(item, tuple) and 1 <= len(item) <= 3 and all(isinstance(v, str) for v in item):
        return dict(zip(("url", "caption", "label"), item, strict=False))
    if isinstance(item, Mapping) and isinstance(item.get("url"), str):
        return {k: item[k] for k in ("url", "caption", "label") if item.get(k) is not None}
    raise ConfigError(
        "url_items",
        f"item {n} is {item!r}: expected a URL, a (url, caption[, label]) tuple, "
        "or a mapping with a 'url' key",
    )


def write_url_items(
    items: Iterable[UrlItem], out: Path, columns: UrlColumns | None = None
) -> Path:
    """Write URLs given from Python to ``OUT/inputs/<hash>/urls.jsonl``; return that path.

    The crawl then reads them like any ``--urls`` file, so they resume the same way: the
    file's directory is named by a hash of its content, so the same items give the same
    file (and the same checkpoint row) on every run, and different items a new row; items
    without a label get the crawl's ``label`` option or ``urls``. Items stream to the
    file (a generator of millions of URLs never sits in memory); the file appears
    atomically, complete or not at all. A malformed item raises :class:`ConfigError`
    naming ``url_items``; unusable URLs are skipped as invalid by the reader, as in files.
    The file's keys are ``columns``' names (the crawl's ``--url-col`` and friends).
    """
    columns = columns or UrlColumns()
    names = {"url": columns.url, "caption": columns.caption, "label": columns.label}
    directory = Path(out) / INPUTS_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("url_items", f"cannot create {directory}: {exc.strerror}") from None
    if directory.is_symlink() or Path(out).is_symlink():
        raise ConfigError("url_items", f"{directory} is a symlink; refusing to write through it")
    digest = hashlib.sha256()
    fd, name = tempfile.mkstemp(dir=directory, prefix=".items-", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            for n, item in enumerate(items, 1):
                record = {names[k]: v for k, v in _item_record(item, n).items()}
                line = orjson.dumps(record) + b"\n"
                digest.update(line)
                fh.write(line)
        # One directory per content: the file keeps the stem "urls", which is the label of
        # items without one (as a file's stem is), and the path names the row.
        home = directory / digest.hexdigest()[:16]
        home.mkdir(exist_ok=True)
        if home.is_symlink():
            raise ConfigError("url_items", f"{home} is a symlink; refusing to write through it")
        path = home / "urls.jsonl"
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
