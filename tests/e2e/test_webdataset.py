"""Webdataset output: tar shards that are valid, complete, and consistent after a crash."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import sys
import tarfile
from pathlib import Path

from bingcrawl.emulator.corpus import CorpusConfig
from bingcrawl.engine.crawler import Crawler
from bingcrawl.store.shards import read_member
from tests.support.crawls import crawl_config, read_manifest, small_corpus
from tests.support.emulator import StartEmulator

QUERIES = ("tar one", "tar two")


def check_shards(out: Path) -> list[dict[str, object]]:
    """Every manifest row's image is in its shard, with its metadata; every shard is a tar."""
    manifest = read_manifest(out)
    assert manifest
    for row in manifest:
        assert str(row["path"]).startswith("shards/")
        name, data = read_member(out, str(row["path"]), int(str(row["shard_offset"])))
        assert name == row["member"]
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    members: dict[str, bytes] = {}
    count = 0
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                fh = tar.extractfile(info)
                assert fh is not None
                members[info.name] = fh.read()
                count += 1
    # an image and its json per stored image, and nothing else (no uncommitted leftovers)
    assert count == len(members) == 2 * len(manifest)
    for row in manifest:
        key = str(row["sha256"])[:16]
        meta = json.loads(members[f"{key}.json"])
        assert meta["sha256"] == row["sha256"]
        assert meta["content_url"] == row["content_url"]
        assert meta["label"] == row["label"]
    return manifest


async def test_webdataset_shards_hold_the_dataset(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=small_corpus(fault_rate=0.0, results_per_query=40))
    config = crawl_config(
        server, tmp_path, QUERIES, limit=1000, output_format="webdataset", shard_size=15
    )
    async with Crawler(config) as crawler:
        await crawler.run()
    manifest = check_shards(tmp_path)
    labels = {row["label"] for row in manifest}
    shards = sorted(p.name for p in (tmp_path / "shards").glob("*.tar"))
    # one series per label, 15 images per shard
    assert {name.rsplit("-", 1)[0] for name in shards} == labels
    per_label = {label: sum(1 for r in manifest if r["label"] == label) for label in labels}
    for label, n in per_label.items():
        assert sum(1 for s in shards if s.startswith(f"{label}-")) == -(-n // 15)
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.*"))


async def test_crash_mid_shard_truncates_the_torn_tail(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    from bingcrawl.emulator import EmulatorConfig

    corpus = CorpusConfig(
        results_per_query=60, fault_rate=0.0, exact_dup_rate=0.0, near_dup_rate=0.0,
        cross_query_rate=0.0,
    )  # fmt: skip
    server = await start_emulator(EmulatorConfig(qps=None, corpus=corpus))
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "bingcrawl", "crawl", *QUERIES, "--out", str(out),
        "--key", "k", "--endpoint", server.base_url, "--allow-network", "127.0.0.1/32",
        "--output-format", "webdataset", "--shard-size", "1000", "--limit", "1000",
        "--hash-workers", "0", "--no-progress", "--log-level", "WARNING",
    ]  # fmt: skip
    # Die right after the 30th image is appended to its shard, before its outcome.
    env = {"BINGCRAWL_CRASH_AT": "file_written:30", "PATH": "/usr/bin:/bin"}
    proc = await asyncio.create_subprocess_exec(*argv, env=env)
    assert await proc.wait() == -9
    db = sqlite3.connect(out / "checkpoint.sqlite")
    committed = db.execute("SELECT count(*) FROM candidates WHERE status = 'stored'").fetchone()[0]
    db.close()
    shard_bytes = sum(p.stat().st_size for p in (out / "shards").glob("*.tar"))
    assert shard_bytes > 0
    assert committed < 30  # the last appends were never recorded: a torn tail to cut

    proc = await asyncio.create_subprocess_exec(*argv)
    assert await proc.wait() == 0
    manifest = check_shards(out)
    assert len(manifest) == 120
    assert len({r["sha256"] for r in manifest}) == 120


async def test_a_shard_torn_below_its_committed_end_is_cut_to_its_whole_members(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    # Power loss without --durable can cut a shard below what the checkpoint committed. The
    # torn tar used to stay beside the next shard, and the re-fetched images appeared twice.
    server = await start_emulator(corpus=small_corpus(fault_rate=0.0, results_per_query=30))
    config = crawl_config(
        server, tmp_path, ["tar one"], limit=1000, output_format="webdataset", shard_size=1000
    )
    async with Crawler(config) as crawler:
        await crawler.run()
    first = check_shards(tmp_path)
    (shard,) = (tmp_path / "shards").glob("*.tar")
    db = sqlite3.connect(tmp_path / "checkpoint.sqlite")
    ends = sorted(e for (e,) in db.execute("SELECT shard_end FROM candidates WHERE shard_end > 0"))
    db.close()
    assert len(ends) == len(first)
    cut = (ends[9] + ends[10]) // 2  # in the middle of the 11th image's members
    with shard.open("r+b") as fh:
        fh.truncate(cut)

    async with Crawler(config) as crawler:
        await crawler.run()
    again = check_shards(tmp_path)  # valid tars, one member pair per stored image
    assert sorted(r["sha256"] for r in again) == sorted(r["sha256"] for r in first)
    # the whole members before the cut were kept where they were
    kept = [r for r in again if str(r["path"]) == f"shards/{shard.name}"]
    assert len(kept) == 10


async def test_each_json_member_carries_the_manifest_fields(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=small_corpus(fault_rate=0.0, results_per_query=10))
    config = crawl_config(server, tmp_path, ["tar one"], limit=1000, output_format="webdataset")
    async with Crawler(config) as crawler:
        await crawler.run()
    manifest = {str(r["sha256"]): r for r in check_shards(tmp_path)}
    (shard,) = (tmp_path / "shards").glob("*.tar")
    with tarfile.open(shard) as tar:
        metas = [
            json.loads(tar.extractfile(m).read())  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.name.endswith(".json")
        ]
    assert len(metas) == len(manifest)
    for meta in metas:
        row = manifest[meta["sha256"]]
        expected = {k: v for k, v in row.items() if k not in ("path", "shard_offset")}
        assert meta == expected
