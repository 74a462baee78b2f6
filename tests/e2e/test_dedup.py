"""End-to-end dedup on the emulator: every copy of a picture collapses to one stored image.

Ground truth is the emulator's: equal ``ImageSpec.base`` = the same picture, whatever the
bytes (mirrors, rescaled / recompressed / brightened / retouched variants, another format).
A third query, "echoes", is given results that copy the other queries' pictures under new
URLs (``b/<base>.<ext>``: the original re-served, as-is or in another format; ``s/<base>/3``:
a near-duplicate variant), so copies cross queries both exactly and nearly.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.cli import main as cli_main
from bingcrawl.engine.crawler import Crawler
from bingcrawl.imaging import hashpool
from bingcrawl.imaging.hashing import hash_batch
from bingcrawl.records import Hashed, HashFailure
from tests.support.crawls import crawl_config, read_manifest
from tests.support.dedup import (
    ECHO,
    QUERIES,
    D,
    base_of,
    candidates,
    check_collapsed,
    corpus_config,
    echo_results,
    kinds_of_duplicates,
    serve_echoes,
)
from tests.support.emulator import StartEmulator


async def test_every_copy_collapses_to_one_stored_image(
    start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_emulator(corpus=corpus_config())
    serve_echoes(monkeypatch, server, echo_results(server.corpus, QUERIES, own=12))
    loop_thread = threading.get_ident()
    hashed_on: set[int] = set()

    def spy(*args: Any) -> list[Hashed | HashFailure]:
        hashed_on.add(threading.get_ident())
        return hash_batch(*args)

    monkeypatch.setattr(hashpool, "hash_batch", spy)
    config = crawl_config(
        server, tmp_path, (*QUERIES, ECHO), limit=1000, count=25, near_dup_distance=D, retries=2
    )
    async with Crawler(config) as crawler:
        await crawler.run()

    assert hashed_on
    assert loop_thread not in hashed_on  # hashing never ran on the event loop
    rows = candidates(tmp_path)
    by_sha = check_collapsed(server, rows)
    kinds = kinds_of_duplicates(rows, by_sha)
    # the corpus really exercised every kind of duplicate
    assert kinds.get("exact within", 0) >= 3, kinds
    assert kinds.get("near within", 0) >= 5, kinds
    assert kinds.get("exact across", 0) >= 3, kinds
    assert kinds.get("near across", 0) >= 5, kinds
    assert any(r["status"] == "failed" for r in rows)  # and lost URLs lose nothing else

    # The manifest holds exactly the stored images, one per picture.
    manifest = read_manifest(tmp_path)
    assert sorted(m["sha256"] for m in manifest) == sorted(by_sha)

    # `bingcrawl export DIR --duplicates`: each cluster is its stored image, then every
    # candidate that duplicates it, nearest first.
    assert cli_main(["export", str(tmp_path), "--duplicates"], env={}) == 0
    exported = [
        json.loads(line)
        for line in (tmp_path / "export" / "duplicates.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    ]
    clusters: dict[str, list[dict[str, Any]]] = {}
    for row in exported:
        if row["role"] == "stored":
            assert row["cluster"] == row["sha256"] in by_sha
            assert row["cluster"] not in clusters
            clusters[row["cluster"]] = []
        else:
            assert row["role"] == "duplicate"
            members = clusters[row["cluster"]]  # follows its stored image
            assert not members or members[-1]["distance"] <= row["distance"]
            members.append(row)
    dups = [r for r in rows if r["status"] == "duplicate"]
    assert set(clusters) == {r["duplicate_of"] for r in dups}
    assert sorted(m["content_url"] for ms in clusters.values() for m in ms) == sorted(
        r["url"] for r in dups
    )
    assert len(exported) == len(clusters) + len(dups)


async def test_a_resumed_crawl_stores_no_copy_of_what_is_stored(
    start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_emulator(corpus=corpus_config())
    first = crawl_config(server, tmp_path, QUERIES, limit=1000, count=25, near_dup_distance=D)
    async with Crawler(first) as crawler:
        await crawler.run()
    before = candidates(tmp_path)
    stored_before = {r["sha256"] for r in before if r["status"] == "stored"}
    bases_before = {base_of(server, r) for r in before if r["status"] == "stored"}

    # A new crawl into the same OUT, of a new query that returns copies of stored pictures:
    # the dedup index comes back from the checkpoint, not from memory.
    serve_echoes(monkeypatch, server, echo_results(server.corpus, QUERIES, own=10))
    second = crawl_config(server, tmp_path, [ECHO], limit=1000, count=25, near_dup_distance=D)
    async with Crawler(second) as crawler:
        await crawler.run()

    rows = candidates(tmp_path)
    echoes = [r for r in rows if r["query"] == ECHO and r["status"] != "failed"]
    copies = [r for r in echoes if base_of(server, r) in bases_before]
    own = [r for r in echoes if base_of(server, r) not in bases_before]
    assert len(copies) >= 10
    assert all(r["status"] == "duplicate" for r in copies)
    assert {r["duplicate_of"] for r in copies} <= stored_before
    assert any(r["sha256"] == r["duplicate_of"] for r in copies)  # exact copies
    assert sum(r["distance"] > 0 for r in copies) >= 3  # and near ones, across the restart
    # the query's own pictures are new: stored, so the resumed index does not refuse all
    assert len(own) == 10
    assert all(r["status"] == "stored" for r in own)
    check_collapsed(server, rows)
    assert {m["sha256"] for m in read_manifest(tmp_path)} == stored_before | {
        r["sha256"] for r in own
    }
