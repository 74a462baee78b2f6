"""URL-list readers: every format, invalid records, and resuming from any committed offset."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bingcrawl.errors import ConfigError
from bingcrawl.urllist import UrlColumns, UrlEntry, open_url_list, url_format, usable_url

URLS = [f"http://img{i % 3}.example/p/{i}.jpg" for i in range(23)]


def read_all(path: Path, *, n: int = 4, columns: UrlColumns | None = None) -> list[UrlEntry]:
    reader = open_url_list(path, columns)
    entries: list[UrlEntry] = []
    try:
        while True:
            batch = reader.read(n)
            entries += batch.entries
            if batch.eof:
                return entries
    finally:
        reader.close()


def read_resuming(
    path: Path, splits: list[int], *, columns: UrlColumns | None = None
) -> list[UrlEntry]:
    """Read in batches of the given sizes, reopening the file at every batch's end offset."""
    entries: list[UrlEntry] = []
    start = 0
    for n in [*splits, 10_000]:
        reader = open_url_list(path, columns, start=start)
        try:
            batch = reader.read(n)
        finally:
            reader.close()
        entries += batch.entries
        assert batch.end >= start
        start = batch.end
        if batch.eof:
            return entries
    raise AssertionError("never reached the end")


def write_formats(tmp_path: Path) -> dict[str, Path]:
    """The same list (with a label and a caption per URL) in every format."""
    labels = [f"class {i % 2}" for i in range(len(URLS))]
    captions = [f'a "quoted", multi\nline caption {i}' for i in range(len(URLS))]
    files = {}
    txt = tmp_path / "list.txt"
    txt.write_text("# comment\n\n" + "\n".join(f"  {u}  " for u in URLS) + "\n")
    files["txt"] = txt
    for fmt, delim in (("csv", ","), ("tsv", "\t")):
        import csv

        path = tmp_path / f"list.{fmt}"
        with path.open("w", newline="", encoding="utf-8-sig") as fh:
            writer = csv.writer(fh, delimiter=delim)
            writer.writerow(["caption", "URL", "label", "other"])
            for u, lab, cap in zip(URLS, labels, captions, strict=True):
                writer.writerow([cap, u, lab, "x"])
        files[fmt] = path
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"url": u, "caption": c, "label": lab})
            for u, lab, c in zip(URLS, labels, captions, strict=True)
        )
        + "\n"
    )
    files["jsonl"] = jsonl
    table = pa.table({"url": URLS, "caption": captions, "label": labels})
    parquet = tmp_path / "list.parquet"
    pq.write_table(table, parquet, row_group_size=5)
    files["parquet"] = parquet
    return files


@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "jsonl", "parquet"])
def test_every_format_yields_the_list(tmp_path: Path, fmt: str) -> None:
    path = write_formats(tmp_path)[fmt]
    entries = read_all(path)
    assert [e.url for e in entries] == URLS
    if fmt != "txt":
        assert entries[3] == UrlEntry(URLS[3], 'a "quoted", multi\nline caption 3', "class 1")


@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "jsonl", "parquet"])
def test_resuming_at_any_committed_offset_continues_exactly(tmp_path: Path, fmt: str) -> None:
    path = write_formats(tmp_path)[fmt]
    full = read_all(path)
    for splits in ([1], [3, 3], [1, 7, 2, 5], [22], [23], [30]):
        assert read_resuming(path, splits) == full, splits


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(splits=st.lists(st.integers(min_value=1, max_value=9), max_size=8))
def test_resuming_csv_property(tmp_path: Path, splits: list[int]) -> None:
    path = tmp_path / "list.csv"
    if not path.exists():
        write_formats(tmp_path)
    assert read_resuming(path, splits) == read_all(path)


def test_invalid_records_are_counted_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [
        '{"url": "https://a.example/1.jpg"}',
        "not json",
        '["a list"]',
        '{"url": "ftp://a.example/x.jpg"}',
        '{"url": "javascript:alert(1)"}',
        '{"caption": "no url"}',
        '{"url": "https://a.example/with space.jpg"}',
        "",
        '{"url": "https://a.example/2.jpg", "label": 7}',
    ]
    path.write_text("\n".join(lines) + "\n")
    reader = open_url_list(path)
    batch = reader.read(100)
    reader.close()
    assert batch.eof
    assert batch.invalid == 6
    assert batch.entries == (
        UrlEntry("https://a.example/1.jpg"),
        UrlEntry("https://a.example/2.jpg", label="7"),
    )
    assert batch.end == path.stat().st_size


def test_configurable_columns_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("link,text\nhttp://a.example/1.png,one\n")
    with pytest.raises(ConfigError) as exc:
        open_url_list(path)
    assert exc.value.option == "--url-col"
    assert "link" in str(exc.value)
    entries = read_all(path, columns=UrlColumns(url="link", caption="text"))
    assert entries == [UrlEntry("http://a.example/1.png", "one")]


def test_unknown_format_and_url_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        url_format(tmp_path / "list.xlsx")
    assert exc.value.option == "--urls"
    assert usable_url("https://example.com/a.jpg?x=1")
    assert not usable_url("https:///nohost")
    assert not usable_url("http://[::1")
    assert not usable_url("")
