"""Builders and raw reads for the store tests: candidates, stored outcomes, SQL behind the
checkpoint's back, and the write an older bingcrawl posted."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from bingcrawl.records import Candidate, Outcome, Source, Status
from bingcrawl.store import CHECKPOINT_NAME, Checkpoint, atomic_write_bytes

__all__ = [
    "LEGACY_MARK_INFLIGHT",
    "make_candidates",
    "mark_inflight_legacy",
    "sql",
    "stored_outcome",
]


def sql(out: Path, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one query on a fresh read-only connection: look behind the API's back."""
    conn = sqlite3.connect(f"file:{out / CHECKPOINT_NAME}?mode=ro", uri=True)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


#: What bingcrawl before 0.2 posted for a candidate handed to a worker; recovery still repairs
#: such rows in old checkpoints.
LEGACY_MARK_INFLIGHT = (
    "UPDATE candidates SET status = 'inflight', updated_at = ? WHERE id = ? AND status = 'pending'"
)


def mark_inflight_legacy(cp: Checkpoint, ids: list[int]) -> None:
    """Queue ``pending -> inflight`` as an older bingcrawl did (through the one writer)."""
    now = time.time()
    for cid in ids:
        cp._w().post(LEGACY_MARK_INFLIGHT, (now, cid))


def make_candidates(
    n: int, *, prefix: str = "a", label: str = "cat", query: str = "cat", start: int = 0
) -> list[Candidate]:
    """``n`` candidates with distinct URLs ``https://img.example.com/<prefix>/<i>.jpg``."""
    return [
        Candidate(
            url=f"https://img.example.com/{prefix}/{i}.jpg",
            label=label,
            query=query,
            source=Source.SEARCH,
            image_id=f"id-{prefix}-{i}",
            name=f"name {i}",
            host_page_url=f"https://site.example.org/{prefix}/{i}",
            thumbnail_url=f"https://tse.example.net/{prefix}/{i}",
            license="Public",
            reported_width=640,
            reported_height=480,
        )
        for i in range(start, start + n)
    ]


def stored_outcome(
    out: Path, candidate: Candidate, data: bytes, *, phash: int = 0x8000_0000_0000_0001
) -> Outcome:
    """Write ``data`` as the candidate's image under ``out`` and return its STORED outcome."""
    sha = hashlib.sha256(data).hexdigest()
    rel = f"images/{candidate.label}/{sha[:16]}.jpg"
    atomic_write_bytes(out, rel, data, durable=False)
    return Outcome(
        candidate,
        Status.STORED,
        attempts=1,
        sha256=sha,
        phash=phash,
        width=640,
        height=480,
        format="jpeg",
        size=len(data),
        path=rel,
        fetched_at=time.time(),
    )
