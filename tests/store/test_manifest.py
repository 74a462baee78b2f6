"""manifest.jsonl appended as images are stored (issue 18): O(new rows), a torn or
uncommitted tail cut off, a full rewrite only when the file cannot be trusted."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from bingcrawl.errors import CheckpointError
from bingcrawl.records import Candidate
from bingcrawl.store import CHECKPOINT_NAME, Checkpoint, write_manifest
from bingcrawl.store.manifest import append_sync
from bingcrawl.store.schema import connect_writer
from tests.support.store import make_candidates, sql, stored_outcome

MANIFEST = "manifest.jsonl"


def lines(out: Path) -> list[dict[str, object]]:
    """The manifest's objects; fails on a line that is not JSON (a torn tail)."""
    data = (out / MANIFEST).read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the manifest ends inside a line"
    return [json.loads(line) for line in data.splitlines()]


def stored_shas(out: Path) -> list[str]:
    found = sql(out, "SELECT sha256 FROM candidates WHERE status = 'stored'")
    return sorted(str(r[0]) for r in found)


async def store(cp: Checkpoint, out: Path, candidates: list[Candidate], tag: str) -> None:
    for i, c in enumerate(candidates):
        cp.record_outcome(stored_outcome(out, c, f"{tag}-{i}".encode(), phash=i + 1))
    await cp.flush()


async def crawl_part(out: Path, n: int, *, start: int, tag: str) -> int:
    """One "run": n more candidates stored, then the manifest brought up to date."""
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        new = await cp.add_candidates(make_candidates(n, start=start), query_id=q.id)
        await store(cp, out, new, tag)
        return await cp.append_manifest()


async def test_a_resumed_run_appends_and_never_rewrites(out: Path) -> None:
    assert await crawl_part(out, 3, start=0, tag="one") == 3
    first = (out / MANIFEST).read_bytes()
    inode = (out / MANIFEST).stat().st_ino
    assert await crawl_part(out, 2, start=3, tag="two") == 2
    data = (out / MANIFEST).read_bytes()
    assert data.startswith(first)  # the first run's lines are untouched...
    assert (out / MANIFEST).stat().st_ino == inode  # ...in the same file
    assert sorted(str(r["sha256"]) for r in lines(out)) == stored_shas(out)
    # nothing new: nothing written
    async with await Checkpoint.open(out) as cp:
        assert await cp.append_manifest() == 0
    assert (out / MANIFEST).read_bytes() == data
    assert sql(out, "SELECT count(*) FROM candidates WHERE unlisted IS NOT NULL") == [(0,)]


async def test_a_torn_tail_is_cut_off_and_its_rows_listed_again(out: Path) -> None:
    await crawl_part(out, 3, start=0, tag="one")
    committed = (out / MANIFEST).read_bytes()
    # a crash in the middle of an append: half a line after the committed ones
    with open(out / MANIFEST, "ab") as fh:
        fh.write(b'{"path": "images/cat/0123')
    assert await crawl_part(out, 2, start=3, tag="two") == 2
    data = (out / MANIFEST).read_bytes()
    assert data.startswith(committed)
    assert sorted(str(r["sha256"]) for r in lines(out)) == stored_shas(out)
    assert len(lines(out)) == 5


async def test_lines_whose_commit_failed_are_written_once(out: Path) -> None:
    """The append wrote its lines, then the checkpoint's transaction rolled back (a failed
    commit, or a kill before it): the next append cuts them and lists the rows once."""
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        new = await cp.add_candidates(make_candidates(4), query_id=q.id)
        await store(cp, out, new[:2], "one")
        assert await cp.append_manifest() == 2
        await store(cp, out, new[2:], "two")
    conn = connect_writer(out / CHECKPOINT_NAME, durable=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        assert append_sync(conn, out, durable=False).lines == 2  # the lines are in the file...
        conn.execute("ROLLBACK")  # ...but their rows never committed as listed
    finally:
        conn.close()
    assert len(lines(out)) == 4
    async with await Checkpoint.open(out) as cp:
        assert await cp.append_manifest() == 2
    assert sorted(str(r["sha256"]) for r in lines(out)) == stored_shas(out)
    assert len(lines(out)) == 4


async def test_a_manifest_that_cannot_be_trusted_is_rewritten(out: Path) -> None:
    await crawl_part(out, 3, start=0, tag="one")
    # deleted
    (out / MANIFEST).unlink()
    assert await crawl_part(out, 1, start=3, tag="two") == 4
    assert len(lines(out)) == 4
    # shorter than committed (a power failure lost its end)
    data = (out / MANIFEST).read_bytes()
    (out / MANIFEST).write_bytes(data[: data.index(b"\n") + 1])
    assert await crawl_part(out, 1, start=4, tag="three") == 5
    # replaced by another file (write_manifest, an editor): rewritten, never cut
    write_manifest(out, out)
    with open(out / MANIFEST, "ab") as fh:
        fh.write(b'{"note": "added by hand"}\n')
    assert await crawl_part(out, 1, start=5, tag="four") == 6
    assert sorted(str(r["sha256"]) for r in lines(out)) == stored_shas(out)


async def test_a_symlinked_manifest_is_refused(out: Path, tmp_path: Path) -> None:
    await crawl_part(out, 1, start=0, tag="one")
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes(b"")
    (out / MANIFEST).unlink()
    (out / MANIFEST).symlink_to(target)
    async with await Checkpoint.open(out) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        (c,) = await cp.add_candidates(make_candidates(1, start=1), query_id=q.id)
        await store(cp, out, [c], "two")
        with pytest.raises(CheckpointError, match="symlink"):
            await cp.append_manifest()
    assert target.read_bytes() == b""


async def test_recovery_that_takes_rows_back_rewrites_the_manifest(out: Path) -> None:
    await crawl_part(out, 3, start=0, tag="one")
    (path,) = sql(out, "SELECT path FROM candidates WHERE status = 'stored' ORDER BY id LIMIT 1")
    os.unlink(out / str(path[0]))  # an image deleted between runs
    async with await Checkpoint.open(out) as cp:
        await cp.recover()
        assert await cp.append_manifest() == 2
    assert len(lines(out)) == 2
    assert sorted(str(r["sha256"]) for r in lines(out)) == stored_shas(out)


async def test_a_checkpoint_from_before_appends_gets_its_manifest_rewritten_once(
    out: Path,
) -> None:
    await crawl_part(out, 2, start=0, tag="one")
    # what an older bingcrawl left: a full manifest, no committed length
    conn = sqlite3.connect(out / CHECKPOINT_NAME)
    conn.execute("DELETE FROM meta WHERE key = 'manifest_committed'")
    conn.commit()
    conn.close()
    write_manifest(out, out)
    assert await crawl_part(out, 1, start=2, tag="two") == 3  # rewritten in full, once
    inode = (out / MANIFEST).stat().st_ino
    assert await crawl_part(out, 1, start=3, tag="three") == 1  # then appended
    assert (out / MANIFEST).stat().st_ino == inode
    assert sorted(str(r["sha256"]) for r in lines(out)) == stored_shas(out)
