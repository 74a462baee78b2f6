"""Ground truth of the dedup tests (tests/e2e/test_dedup.py, tests/cluster): which URLs are
copies of one picture, a third query made of copies, and the checks that every copy collapsed.

Ground truth is the emulator's: equal ``ImageSpec.base`` = the same picture, whatever the
bytes (mirrors, rescaled / recompressed / brightened / retouched variants, another format).
A third query, "echoes", is given results that copy the other queries' pictures under new
URLs (``b/<base>.<ext>``: the original re-served, as-is or in another format; ``s/<base>/3``:
a near-duplicate variant), so copies cross queries both exactly and nearly.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.config import DEFAULT_NEAR_DUP_DISTANCE
from bingcrawl.emulator import EmulatorServer
from bingcrawl.emulator.corpus import Corpus, ImageSpec, normalize_query
from tests.support.crawls import key_of, small_corpus

QUERIES = ("harbour seals", "old lighthouse")
ECHO = "echoes"
D = DEFAULT_NEAR_DUP_DISTANCE
MASK = (1 << 64) - 1
# Faults that still deliver the picture, and faults that lose it: a URL that failed is no
# evidence about its picture, one that succeeded is.
FAULTS = ("transient_503", "redirect", "http_404", "truncated_image")


def corpus_config() -> Any:
    return small_corpus(
        results_per_query=60,
        fault_rate=0.06,
        fault_kinds=FAULTS,
        exact_dup_rate=0.12,
        near_dup_rate=0.25,
        cross_query_rate=0.12,
    )


def candidates(out: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM candidates ORDER BY id")]
    finally:
        conn.close()


def copies_of(corpus: Corpus, pictures: Iterable[ImageSpec]) -> list[ImageSpec]:
    """Copies of each picture under URLs no query returns: exact, format-changed or near."""
    out = []
    for i, spec in enumerate(pictures):
        base = f"{spec.base:014x}"
        if i % 3 == 0:
            key = f"b/{base}.{spec.ext}"  # the same bytes again
        elif i % 3 == 1:
            key = f"b/{base}.{'png' if spec.format == 'jpeg' else 'jpg'}"  # another format
        else:
            key = corpus.similar(spec, 4)[3].key  # a near-duplicate variant of the picture
        copy = corpus.spec(key)
        assert copy is not None
        assert copy.base == spec.base
        out.append(copy)
    return out


def echo_results(corpus: Corpus, sources: Sequence[str], own: int) -> list[ImageSpec]:
    """Results of ECHO: copies of every third clean original of ``sources``, interleaved
    with ``own`` distinct pictures of its own."""
    originals = [
        s
        for q in sources
        for s in corpus.query_results(q)
        if s.fault is None and s.variant == "original"
    ][::3]
    copies = copies_of(corpus, originals)
    distinct = {s.base: s for s in reversed(corpus.query_results(ECHO)) if s.fault is None}
    mine = [s for s in distinct.values() if s.variant == "original"][::-1][:own]
    mixed: list[ImageSpec] = []
    for i in range(max(len(copies), len(mine))):
        mixed.extend(x[i] for x in (copies, mine) if i < len(x))
    return mixed


def serve_echoes(
    monkeypatch: pytest.MonkeyPatch, server: EmulatorServer, results: list[ImageSpec]
) -> None:
    """Make the emulator answer the ECHO query with ``results`` (other queries unchanged)."""
    real = server.corpus.query_results

    def query_results(q: str) -> Sequence[ImageSpec]:
        return tuple(results) if normalize_query(q) == ECHO else real(q)

    monkeypatch.setattr(server.corpus, "query_results", query_results)


def base_of(server: EmulatorServer, row: dict[str, Any]) -> int:
    spec = server.corpus.spec(key_of(row["url"]))
    assert spec is not None
    return spec.base


def check_collapsed(server: EmulatorServer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every picture seen has exactly one stored image; every duplicate names it."""
    assert all(r["status"] in ("stored", "duplicate", "failed") for r in rows)
    ok = [r for r in rows if r["status"] != "failed"]
    stored = [r for r in ok if r["status"] == "stored"]
    per_base: defaultdict[int, list[str]] = defaultdict(list)
    for r in stored:
        per_base[base_of(server, r)].append(r["sha256"])
    # no picture stored twice, none lost
    assert all(len(shas) == 1 for shas in per_base.values()), per_base
    assert set(per_base) == {base_of(server, r) for r in ok}
    by_sha = {r["sha256"]: r for r in stored}
    assert len(by_sha) == len(stored)
    for dup in (r for r in ok if r["status"] == "duplicate"):
        target = by_sha[dup["duplicate_of"]]  # names a stored image...
        assert base_of(server, target) == base_of(server, dup)  # ...of the same picture
        distance = ((dup["phash"] ^ target["phash"]) & MASK).bit_count()
        if dup["sha256"] == target["sha256"]:
            assert dup["distance"] == 0
        else:
            assert dup["distance"] == distance <= D
    return by_sha


def kinds_of_duplicates(rows: list[dict[str, Any]], by_sha: dict[str, Any]) -> dict[str, int]:
    """How many duplicates are exact or near, within one query or across queries."""
    counts: defaultdict[str, int] = defaultdict(int)
    for dup in (r for r in rows if r["status"] == "duplicate"):
        target = by_sha[dup["duplicate_of"]]
        exact = "exact" if dup["sha256"] == target["sha256"] else "near"
        where = "within" if dup["query"] == target["query"] else "across"
        counts[f"{exact} {where}"] += 1
    return dict(counts)
