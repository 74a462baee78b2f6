"""manifest.jsonl, stats.json, exports (jsonl / csv / parquet) and the status summary."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from bingcrawl.errors import ConfigError
from bingcrawl.records import Candidate, ErrorClass, Outcome, Source, Status
from bingcrawl.store import (
    MANIFEST_FIELDS,
    Checkpoint,
    export,
    read_summary,
    status_report,
    write_manifest,
    write_stats,
)
from bingcrawl.store import output as output_module
from tests.support.store import make_candidates, stored_outcome

CONTRACT_FIELDS = {
    "path", "label", "query", "source", "content_url", "host_page_url", "image_id", "name",
    "sha256", "phash", "width", "height", "format", "bytes", "license", "fetched_at",
    "parent", "thumbnail_url", "member", "shard_offset",
    # licenses as data (issue 15, DESIGN.md "Providers")
    "license_url", "creator", "attribution", "provider",
    # the regions near-duplicate method's second hash (issue 17)
    "centre_hash",
}  # fmt: skip


@pytest.fixture
async def crawled(out: Path) -> dict[str, Any]:
    """A small finished crawl: 2 stored, 2 duplicates of the first, 1 failed, 1 pending."""
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        await cp.check_fingerprint({"license": "Public"})
        q = await cp.upsert_query(source="search", label="cat", text="cute cat", norm="cute cat")
        e = await cp.upsert_query(
            source="expand", label="cat", text="cat toy", norm="cat toy", parent_id=q.id, depth=1
        )
        page = make_candidates(4, query="cute cat")
        new = await cp.record_page(q.id, offset=0, next_offset=4, exhausted=True, candidates=page)
        expanded = [
            Candidate(
                url="https://img.example.com/toy.png", label="cat", query="cat toy",
                source=Source.EXPAND, parent="cute cat", license="Public",
            ),
            Candidate(url="https://img.example.com/toy2.png", label="cat", query="cat toy",
                      source=Source.EXPAND, parent="cute cat"),
        ]  # fmt: skip
        new += await cp.record_page(
            e.id, offset=0, next_offset=2, exhausted=True, candidates=expanded
        )
        first = stored_outcome(out, new[0], b"first image", phash=0xFEDC_BA98_7654_3210)
        second = stored_outcome(out, new[4], b"second image", phash=0x0F)
        cp.record_outcome(first)
        cp.record_outcome(second)
        for c, d in ((new[1], 0), (new[2], 4)):
            cp.record_outcome(
                Outcome(c, Status.DUPLICATE, attempts=1, sha256=f"{d}" * 64, phash=1,
                        duplicate_of=first.sha256, distance=d, fetched_at=2.0)
            )  # fmt: skip
        cp.record_outcome(
            Outcome(new[3], Status.FAILED, attempts=3, error_class=ErrorClass.TIMEOUT, detail="t")
        )
        cp.record_api_call("images/search", 200)
        cp.record_api_call("images/search", 200)
        cp.record_api_call("images/search", 429)
    return {"first": first, "second": second, "new": new}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_manifest_has_the_contract_fields(out: Path, crawled: dict[str, Any]) -> None:
    assert write_manifest(out, out) == 2
    rows = _jsonl(out / "manifest.jsonl")
    assert [set(r) for r in rows] == [CONTRACT_FIELDS, CONTRACT_FIELDS]
    assert tuple(rows[0]) == MANIFEST_FIELDS
    first, second = crawled["first"], crawled["second"]
    c = first.candidate
    assert rows[0] == {
        "path": first.path, "label": "cat", "query": "cute cat", "source": "search",
        "content_url": c.url, "host_page_url": c.host_page_url, "image_id": c.image_id,
        "name": c.name, "sha256": first.sha256, "phash": "fedcba9876543210", "width": 640,
        "height": 480, "format": "jpeg", "bytes": len(b"first image"), "license": "Public",
        "fetched_at": rows[0]["fetched_at"], "parent": None, "thumbnail_url": c.thumbnail_url,
        "member": None, "shard_offset": None, "license_url": None, "creator": None,
        "attribution": None, "provider": None, "centre_hash": None,
    }  # fmt: skip
    fetched = datetime.fromisoformat(rows[0]["fetched_at"].replace("Z", "+00:00"))
    assert fetched.utcoffset() == timedelta(0)
    assert abs(fetched.timestamp() - first.fetched_at) < 0.001
    assert rows[1]["phash"] == "000000000000000f"
    assert (rows[1]["source"], rows[1]["parent"], rows[1]["query"]) == (
        "expand",
        "cute cat",
        "cat toy",
    )
    assert rows[1]["sha256"] == second.sha256
    for row in rows:
        assert (out / row["path"]).is_file()


async def test_manifest_is_replaced_atomically(
    out: Path, crawled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_manifest(out, out)
    before = (out / "manifest.jsonl").read_bytes()

    def broken(conn: Any) -> Iterator[dict[str, Any]]:
        yield {"path": "images/cat/x.jpg"}
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(output_module, "_manifest_rows", broken)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(out, out, durable=True)
    assert (out / "manifest.jsonl").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


async def test_outputs_from_an_open_checkpoint(out: Path) -> None:
    async with await Checkpoint.open(out, batch_interval=60.0) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        (c,) = await cp.add_candidates(make_candidates(1), query_id=q.id)
        cp.record_outcome(stored_outcome(out, c, b"img"))
        # The outcome is still queued in the writer: these methods flush before reading.
        assert await cp.write_manifest() == 1
        stats = await cp.write_stats({"durations": {"total_s": 1.0}})
        assert write_manifest(cp, out) == 1
    assert _jsonl(out / "manifest.jsonl")[0]["content_url"] == c.url
    assert stats["candidates"]["by_status"]["stored"] == 1  # type: ignore[index]
    assert json.loads((out / "stats.json").read_text())["durations"] == {"total_s": 1.0}


async def test_stats(out: Path, crawled: dict[str, Any]) -> None:
    stats = write_stats(out, out, extra={"durations": {"total_s": 12.5, "search_s": 3.0}})
    assert json.loads((out / "stats.json").read_text()) == stats
    assert stats["candidates"] == {
        "total": 6,
        "by_status": {"pending": 1, "inflight": 0, "stored": 2, "duplicate": 2, "failed": 1,
                      "skipped": 0},
    }  # fmt: skip
    assert stats["errors"] == {"timeout": 1}
    assert stats["queries"] == {"total": 2, "by_state": {"exhausted": 2}}
    assert stats["api_calls"] == {
        "total": 3,
        "by_endpoint": {"images/search": {"200": 2, "429": 1}},
    }
    assert stats["stored_bytes"] == len(b"first image") + len(b"second image")
    assert stats["durations"] == {"total_s": 12.5, "search_s": 3.0}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
async def test_export_formats(out: Path, crawled: dict[str, Any], fmt: str) -> None:
    def load(path: Path) -> list[dict[str, Any]]:
        if fmt == "jsonl":
            return _jsonl(path)
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh))
        loaded: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return loaded

    manifest = export(out, fmt=fmt)  # type: ignore[arg-type]
    # under OUT/export/: never the crawl's own OUT/manifest.jsonl
    assert (manifest.path, manifest.rows) == (out / "export" / f"manifest.{fmt}", 2)
    assert manifest.path is not None
    rows = load(manifest.path)
    assert [r["sha256"] for r in rows] == [crawled["first"].sha256, crawled["second"].sha256]
    assert [r["phash"] for r in rows] == ["fedcba9876543210", "000000000000000f"]

    everything = export(out, fmt=fmt, all_candidates=True, dest=out / "x" / f"all.{fmt}")  # type: ignore[arg-type]
    assert everything.rows == 6
    assert everything.path is not None
    rows = load(everything.path)
    assert [r["status"] for r in rows] == [
        "stored",
        "duplicate",
        "duplicate",
        "failed",
        "stored",
        "pending",
    ]
    assert rows[3]["error_class"] == "timeout"

    clusters = export(out, fmt=fmt, duplicates=True)  # type: ignore[arg-type]
    assert clusters.path is not None
    rows = load(clusters.path)
    first = crawled["first"]
    assert [(r["role"], str(r["distance"]), r["cluster"]) for r in rows] == [
        ("stored", "0", first.sha256),
        ("duplicate", "0", first.sha256),
        ("duplicate", "4", first.sha256),
    ]
    assert rows[0]["path"] == first.path


async def test_export_of_an_empty_crawl(out: Path) -> None:
    async with await Checkpoint.open(out):
        pass
    for fmt in ("jsonl", "csv", "parquet"):
        result = export(out, fmt=fmt)
        assert result.rows == 0
        assert result.path is not None
        assert result.path.exists()
    assert pq.read_table(out / "export" / "manifest.parquet").column_names[:2] == ["path", "label"]


async def test_export_option_errors(
    out: Path, crawled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="--format"):
        export(out, fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--duplicates"):
        export(out, all_candidates=True, duplicates=True)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"pip install 'bingcrawl\[parquet\]'"):
        export(out, fmt="parquet")
    assert not (out / "manifest.parquet").exists()
    assert not list(out.glob(".*.tmp"))


async def test_status_summary_text_and_json(out: Path, crawled: dict[str, Any]) -> None:
    async with await Checkpoint.open(out) as cp:
        q = await cp.upsert_query(source="search", label="dog", text="evil\nTOTAL 999", norm="evil")
        await cp.set_query_state(q.id, "failed", "quota exhausted")
        summary = await cp.status_summary()
    assert read_summary(out) == summary  # the blocking helper for `bingcrawl status`
    text = summary.render_text()
    lines = text.splitlines()
    header = (
        "ID SOURCE LABEL QUERY STATE OFFSET PAGES PENDING INFLIGHT STORED DUPLICATE FAILED SKIPPED"
    )
    assert lines[0].split() == header.split()
    row = "1 search cat cute cat exhausted 4 1 0 0 1 2 1 0"
    assert lines[1].split() == row.split()
    # A newline in a query cannot forge a table line.
    assert not any(line.lstrip().startswith("TOTAL 999") for line in lines)
    assert len(lines) == len(text.split("\n")) - 1
    assert "evil\\nTOTAL 999" in text
    assert "timeout: 1" in text
    assert "API calls: 3" in text
    assert "quota exhausted" in text

    data = json.loads(summary.to_json())
    assert data["totals"] == {"stored": 2, "duplicate": 2, "failed": 1, "pending": 1}
    assert data["api_calls"]["total"] == 3
    assert [q["text"] for q in data["queries"]] == ["cute cat", "cat toy", "evil\nTOTAL 999"]
    assert data["queries"][0]["candidates"] == {"stored": 1, "duplicate": 2, "failed": 1}


async def test_status_report_for_the_cli(out: Path, crawled: dict[str, Any]) -> None:
    text = status_report(out)
    assert text.splitlines()[0].split()[:3] == ["ID", "SOURCE", "LABEL"]
    assert not text.endswith("\n")
    data = json.loads(status_report(str(out), as_json=True))
    assert data["totals"]["stored"] == 2
