"""Schema versions, forward migrations and refusal of checkpoints we cannot read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bingcrawl.errors import CheckpointError, ConfigError
from bingcrawl.records import Status
from bingcrawl.store import CHECKPOINT_NAME, SCHEMA_VERSION, Checkpoint, schema
from bingcrawl.store.schema import MIGRATIONS, from_signed, migrate, schema_version, to_signed
from tests.support.store import make_candidates, sql, stored_outcome


def _indexes(out: Path) -> set[str]:
    rows = sql(out, "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    return {str(name) for (name,) in rows}


def _make_v1(out: Path) -> None:
    """A version-1 checkpoint with one query and one stored candidate, as bingcrawl v1 wrote."""
    out.mkdir(parents=True)
    conn = sqlite3.connect(out / CHECKPOINT_NAME, isolation_level=None)
    try:
        migrate(conn, target=1)
        conn.execute(
            "INSERT INTO queries (id, source, label, text, norm, root_id, created_at, "
            "updated_at) VALUES (1, 'search', 'cat', 'Cat', 'cat', 1, 0, 0)"
        )
        conn.execute(
            "INSERT INTO candidates (url_key, url, query_id, label, query, source, status, "
            "sha256, phash, path, bytes, created_at, updated_at) VALUES "
            "(x'00', 'https://a/1.jpg', 1, 'cat', 'Cat', 'search', 'stored', ?, -5, "
            "'images/cat/x.jpg', 3, 0, 0)",
            ("ab" * 32,),
        )
    finally:
        conn.close()


async def test_new_checkpoint_has_current_schema(out: Path) -> None:
    async with await Checkpoint.open(out) as cp:
        assert cp.migrated_from == 0
    assert sql(out, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert sql(out, "PRAGMA journal_mode") == [("wal",)]
    tables = {n for (n,) in sql(out, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "queries", "pages", "candidates", "api_calls"} <= tables
    assert {
        "idx_candidates_status",
        "idx_candidates_query",
        "idx_candidates_stored_hash",
        "idx_candidates_duplicate_of",
        "idx_candidates_unlisted",
    } <= _indexes(out)
    # v8: every sha256 lookup is of a stored image; the stored rows' index answers it
    assert "idx_candidates_sha256" not in _indexes(out)


async def test_old_version_is_migrated_with_its_data(out: Path) -> None:
    _make_v1(out)
    assert "idx_candidates_stored_hash" not in _indexes(out)
    async with await Checkpoint.open(out) as cp:
        assert cp.migrated_from == 1
        assert await cp.stored_hashes() == [("ab" * 32, from_signed(-5))]
        # v7: rows stored before the regions method have no centre hash
        assert await cp.read_stored_hashes(list) == [("ab" * 32, from_signed(-5), None)]
        assert [q.text for q in await cp.queries()] == ["Cat"]
    assert sql(out, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert "idx_candidates_stored_hash" in _indexes(out)


async def test_newer_version_is_refused(out: Path) -> None:
    out.mkdir()
    conn = sqlite3.connect(out / CHECKPOINT_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(CheckpointError, match="newer"):
        await Checkpoint.open(out)
    with pytest.raises(CheckpointError, match="newer"):
        await Checkpoint.open(out, read_only=True)
    # The refusal released the OUT lock: the failure is not sticky.
    with pytest.raises(CheckpointError, match="newer"):
        await Checkpoint.open(out)


async def test_not_a_database_is_refused(out: Path) -> None:
    out.mkdir()
    (out / CHECKPOINT_NAME).write_bytes(b"this is not SQLite, just some text" * 100)
    with pytest.raises(CheckpointError, match="not a usable checkpoint"):
        await Checkpoint.open(out)


async def test_read_only_open_refuses_missing_and_unmigrated(out: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        await Checkpoint.open(out, read_only=True)
    _make_v1(out)
    with pytest.raises(CheckpointError, match="migrate"):
        await Checkpoint.open(out, read_only=True)


def test_migration_steps_are_atomic(tmp_path: Path) -> None:
    # A step that fails half-way leaves the previous version and none of its statements.
    conn = sqlite3.connect(tmp_path / "x.sqlite", isolation_level=None)
    try:
        migrate(conn, target=1)
        broken = (MIGRATIONS[1][0], "THIS IS NOT SQL")
        with pytest.raises(sqlite3.OperationalError):
            schema._apply(conn, 1, broken)
        assert schema_version(conn) == 1
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        assert "idx_candidates_stored_hash" not in names
        assert not conn.in_transaction
    finally:
        conn.close()


def test_status_check_matches_records() -> None:
    # The CHECK constraint in the schema must accept exactly the Status values.
    ddl = " ".join(MIGRATIONS[0])
    for status in Status:
        assert f"'{status.value}'" in ddl


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_signed_round_trip(value: int) -> None:
    signed = to_signed(value)
    assert -(1 << 63) <= signed < (1 << 63)
    assert from_signed(signed) == value


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_to_signed_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        to_signed(bad)


async def test_extreme_phash_values_round_trip(out: Path) -> None:
    async with await Checkpoint.open(out, batch_interval=0.01) as cp:
        q = await cp.upsert_query(source="search", label="cat", text="cat", norm="cat")
        new = await cp.add_candidates(make_candidates(3), query_id=q.id)
        values = [0, (1 << 63), (1 << 64) - 1]
        for i, (c, value) in enumerate(zip(new, values, strict=True)):
            cp.record_outcome(stored_outcome(out, c, bytes([i]) * 10, phash=value))
        await cp.flush()
        assert sorted(p for _, p in await cp.stored_hashes()) == sorted(values)
        arrays = await cp.stored_hash_arrays()
        assert sorted(int(v) for v in arrays.phash) == sorted(values)
        assert sorted(int(i) for i in arrays.ids) == sorted(c.id for c in new)


async def test_out_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("not a directory")
    with pytest.raises(ConfigError, match="--out"):
        await Checkpoint.open(target)
