"""Start-up recovery: each invariant of bingcrawl.store.recovery, one test each."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from bingcrawl.errors import CheckpointError
from bingcrawl.records import Outcome, Status
from bingcrawl.store import Checkpoint, RecoveryReport
from tests.support.store import make_candidates, mark_inflight_legacy, sql, stored_outcome


async def _crawl(out: Path, n: int = 4) -> list[Outcome]:
    """A finished first run: n candidates, all stored, one file each."""
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        new = await cp.add_candidates(make_candidates(n), query_id=q.id)
        outcomes = [stored_outcome(out, c, f"image {i}".encode()) for i, c in enumerate(new)]
        for o in outcomes:
            cp.record_outcome(o)
    return outcomes


async def _recover(out: Path) -> RecoveryReport:
    async with await Checkpoint.open(out) as cp:
        return await cp.recover()


def _statuses(out: Path) -> list[str]:
    return [str(s) for (s,) in sql(out, "SELECT status FROM candidates ORDER BY id")]


async def test_clean_checkpoint_needs_nothing(out: Path) -> None:
    await _crawl(out)
    report = await _recover(out)
    assert report == RecoveryReport()
    assert not report.changed
    assert str(report) == "nothing to repair"


async def test_temp_files_are_removed(out: Path) -> None:
    outcomes = await _crawl(out)
    label_dir = out / "images" / "cat"
    (label_dir / ".0123456789abcdef.jpg.a1b2c3d4e5f6.tmp").write_bytes(b"half")
    (out / ".manifest.jsonl.a1b2c3d4e5f6.tmp").write_bytes(b"{")
    keep = out / "notes.tmp"  # not our pattern (no leading dot): left alone
    keep.write_text("mine")
    report = await _recover(out)
    assert report.temp_files_removed == 2
    assert sorted(p.name for p in label_dir.iterdir()) == sorted(
        Path(o.path or "").name for o in outcomes
    )
    assert not list(out.glob(".*.tmp"))
    assert keep.read_text() == "mine"


async def test_inflight_rows_go_back_to_pending(out: Path) -> None:
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        new = await cp.add_candidates(make_candidates(3), query_id=q.id)
        mark_inflight_legacy(cp, [c.id for c in new[:2]])
    assert _statuses(out) == ["inflight", "inflight", "pending"]
    async with await Checkpoint.open(out) as cp:
        report = await cp.recover()
        assert [c.id for c in [c async for c in cp.iter_pending()]] == [c.id for c in new]
    assert report.inflight_reset == 2
    assert _statuses(out) == ["pending"] * 3


async def test_stored_rows_whose_file_vanished_are_fetched_again(out: Path) -> None:
    outcomes = await _crawl(out)
    gone = outcomes[1]
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        # Two candidates were judged duplicates of the image that is about to vanish.
        q = (await cp.queries())[0]
        dups = await cp.add_candidates(make_candidates(2, prefix="dup"), query_id=q.id)
        for d in dups:
            cp.record_outcome(
                Outcome(d, Status.DUPLICATE, attempts=1, sha256="e" * 64, phash=3,
                        duplicate_of=gone.sha256, distance=2)
            )  # fmt: skip
    (out / (gone.path or "")).unlink()
    report = await _recover(out)
    assert (report.vanished_reset, report.duplicates_reset) == (1, 2)
    assert _statuses(out) == ["stored", "pending", "stored", "stored", "pending", "pending"]
    row = sql(out, "SELECT sha256, path, bytes, duplicate_of FROM candidates WHERE id = ?",
              (gone.candidate.id,))  # fmt: skip
    assert row == [(None, None, None, None)]
    async with await Checkpoint.open(out) as cp:
        assert gone.sha256 not in {s for s, _ in await cp.stored_hashes()}


def _unclean(out: Path) -> None:
    """Make the last stop look unclean (a kill or a power failure: no clean close)."""
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'unclean_stop'")
    conn.commit()
    conn.close()


async def test_torn_file_is_removed_and_fetched_again(out: Path) -> None:
    outcomes = await _crawl(out)
    torn = out / (outcomes[0].path or "")
    torn.write_bytes(b"")  # power loss without --durable can leave an empty file
    _unclean(out)
    report = await _recover(out)
    assert (report.vanished_reset, report.torn_files_removed) == (1, 1)
    assert not torn.exists()
    assert _statuses(out)[0] == "pending"


async def test_sizes_are_checked_only_after_an_unclean_stop(out: Path) -> None:
    """A clean stop committed every row after its file: start-up lists folders, it does not
    stat ten million files (a file changed by hand since is the user's)."""
    outcomes = await _crawl(out)
    changed = out / (outcomes[0].path or "")
    changed.write_bytes(b"edited by hand, a different size")
    report = await _recover(out)  # the last stop was clean
    assert report == RecoveryReport()
    assert changed.exists()
    _unclean(out)
    report = await _recover(out)
    assert (report.vanished_reset, report.torn_files_removed) == (1, 1)


async def test_every_label_folder_is_checked_and_a_vanished_folder_is_found(out: Path) -> None:
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        for label in ("cat", "cat-toy", "dog"):  # "cat-toy" sorts between "cat/" and "cat0"
            q = await cp.upsert_query(source="search", label=label, text=label, norm=label)
            new = await cp.add_candidates(
                make_candidates(3, prefix=label, label=label), query_id=q.id
            )
            for i, c in enumerate(new):
                cp.record_outcome(stored_outcome(out, c, f"{label} {i}".encode()))
    (out / "images" / "cat-toy" / "00112233aabbccdd.jpg").write_bytes(b"orphan")
    for f in (out / "images" / "dog").iterdir():
        f.unlink()
    (out / "images" / "dog").rmdir()  # a whole label folder deleted between runs
    report = await _recover(out)
    assert (report.vanished_reset, report.orphans_removed, report.foreign_files) == (3, 1, 0)
    stored = sql(out, "SELECT label, count(*) FROM candidates WHERE status = 'stored' "
                      "GROUP BY label ORDER BY label")  # fmt: skip
    assert stored == [("cat", 3), ("cat-toy", 3)]


async def test_symlink_in_place_of_a_stored_file_is_not_trusted(out: Path, tmp_path: Path) -> None:
    outcomes = await _crawl(out)
    target = tmp_path / "elsewhere.jpg"
    target.write_bytes(b"image 0")
    planted = out / (outcomes[0].path or "")
    planted.unlink()
    planted.symlink_to(target)
    report = await _recover(out)
    assert report.vanished_reset == 1
    assert report.foreign_files == 1  # the link is counted, never followed or deleted
    assert planted.is_symlink()
    assert target.read_bytes() == b"image 0"


async def test_orphan_files_are_removed_foreign_files_kept(out: Path) -> None:
    await _crawl(out, n=2)
    label_dir = out / "images" / "cat"
    # An image whose outcome never committed (crash between os.replace and the commit).
    orphan = label_dir / "00112233aabbccdd.png"
    orphan.write_bytes(b"orphan")
    other_label = out / "images" / "dog"
    other_label.mkdir()
    (other_label / "ffeeddccbbaa9988.webp").write_bytes(b"orphan 2")
    foreign = [label_dir / "README.txt", out / "images" / "cat" / "My Photo.JPG"]
    for f in foreign:
        f.write_text("user file")
    report = await _recover(out)
    assert (report.orphans_removed, report.foreign_files) == (2, 2)
    assert not orphan.exists()
    assert all(f.read_text() == "user file" for f in foreign)
    assert _statuses(out) == ["stored", "stored"]


async def test_recover_refuses_to_run_once_downloads_started(out: Path) -> None:
    async with await Checkpoint.open(out) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        (c,) = await cp.add_candidates(make_candidates(1), query_id=q.id)
        cp.record_outcome(Outcome(c, Status.FAILED, attempts=1, error_class="timeout"))
        # A file written by a running worker would look like an orphan: refuse.
        with pytest.raises(CheckpointError, match="before any download"):
            await cp.recover()


async def test_recovery_is_idempotent(out: Path) -> None:
    outcomes = await _crawl(out)
    os.unlink(out / (outcomes[2].path or ""))
    (out / "images" / "cat" / "0000000000000000.jpg").write_bytes(b"orphan")
    first = await _recover(out)
    assert first.changed
    assert await _recover(out) == RecoveryReport()


async def test_a_duplicate_of_an_image_never_stored_goes_back_to_pending(out: Path) -> None:
    # An older crawler committed a duplicate while its winner was still being written; the
    # winner's write then failed (or the process died): the copy named an image that is not
    # there, and the picture was lost.
    outcomes = await _crawl(out, n=2)
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        q = (await cp.queries())[0]
        dups = await cp.add_candidates(make_candidates(3, prefix="dup"), query_id=q.id)
        never = "f" * 64  # no row of the checkpoint has this sha256 stored
        for d, of in zip(dups, (never, never, outcomes[0].sha256), strict=True):
            cp.record_outcome(
                Outcome(d, Status.DUPLICATE, attempts=1, sha256="e" * 64, phash=3,
                        duplicate_of=of, distance=1)
            )  # fmt: skip
        # and a copy of a visual-search seed: it names the seed, which is a query row
        seed = await cp.upsert_query(source="visual", label="cat", text="s.jpg", norm="d" * 64)
        (copy,) = await cp.add_candidates(make_candidates(1, prefix="seed"), query_id=seed.id)
        cp.record_outcome(
            Outcome(copy, Status.DUPLICATE, attempts=1, sha256="c" * 64, phash=5,
                    duplicate_of="d" * 64, distance=0)
        )  # fmt: skip
    # As an older bingcrawl left it: no record of how its last run stopped.
    _drop_meta(out, "unclean_stop")
    report = await _recover(out)
    assert report.duplicates_reset == 2
    assert _statuses(out) == ["stored", "stored", "pending", "pending", "duplicate", "duplicate"]
    assert (await _recover(out)) == RecoveryReport()  # and nothing more the next time


def _drop_meta(out: Path, key: str) -> None:
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    with conn:
        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
    conn.close()


async def test_the_duplicate_scan_runs_only_after_an_unclean_stop(out: Path) -> None:
    await _crawl(out, n=1)
    async with await Checkpoint.open(out) as cp:
        await cp.recover()  # a run starts: unclean until its checkpoint closes
        flags = await cp._read(lambda c: c.execute(
            "SELECT value FROM meta WHERE key = 'unclean_stop'").fetchall())  # fmt: skip
        assert flags == [("1",)]
    assert sql(out, "SELECT value FROM meta WHERE key = 'unclean_stop'") == [("0",)]
