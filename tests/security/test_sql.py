"""SQL: the checkpoint is written with placeholders only, so queries that look like SQL (or
like format strings) crawl, and come back intact from the checkpoint, the manifest,
``status`` and ``export``. The real command line runs against the emulator, with every SQL
statement text any connection prepares recorded: no value may ever appear in one."""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self, cast

import pytest

from bingcrawl.emulator import EmulatorConfig
from bingcrawl.emulator.corpus import CorpusConfig
from tests.support.emulator import StartEmulator
from tests.support.hostile import db_rows, run_main


class StatementLog:
    """Every SQL text handed to ``execute`` / ``executemany`` / ``executescript`` by the
    connections opened while it is installed (values bound to placeholders never show here;
    ``set_trace_callback`` would not do: it sees the statements with the values expanded)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def add(self, sql: object) -> None:
        with self._lock:
            self.statements.append(str(sql))

    def connection_class(self) -> type[sqlite3.Connection]:
        log = self

        class Cursor(sqlite3.Cursor):
            def execute(self, sql: str, *args: Any) -> Self:
                log.add(sql)
                return super().execute(sql, *args)

            def executemany(self, sql: str, rows: Iterable[Any]) -> Self:
                log.add(sql)
                return super().executemany(sql, rows)

            def executescript(self, script: str) -> sqlite3.Cursor:
                log.add(script)
                return super().executescript(script)

        class Connection(sqlite3.Connection):
            def cursor(self, factory: Any = None) -> Any:
                return super().cursor(Cursor if factory is None else factory)

            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                return cast(sqlite3.Cursor, self.cursor(Cursor).execute(sql, *args))

            def executemany(self, sql: str, rows: Iterable[Any]) -> sqlite3.Cursor:
                return cast(sqlite3.Cursor, self.cursor(Cursor).executemany(sql, rows))

            def executescript(self, script: str) -> sqlite3.Cursor:
                return cast(sqlite3.Cursor, self.cursor(Cursor).executescript(script))

        return Connection


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> StatementLog:
    """Record the SQL of every connection bingcrawl opens during the test."""
    log = StatementLog()
    monkeypatch.setattr(
        sqlite3, "connect", functools.partial(sqlite3.connect, factory=log.connection_class())
    )
    return log


def hostile_queries(tmp: Path) -> list[str]:
    """Queries that would break, or break out of, a query built by string formatting."""
    return [
        "'); DROP TABLE queries;--",
        "Robert'); DROP TABLE candidates; --",
        "' OR '1'='1",
        '" OR "1"="1',
        f"x'); ATTACH DATABASE '{tmp / 'pwned.sqlite'}' AS pwn; CREATE TABLE pwn.t(x); --",
        "back\\slash \\' and \\\" quotes",
        "percent %s %d %% {0} {} $1 ? :name @p",
        "semi;colon /* comment */ -- trailing",
        "unicode ✓ 猫 🐱 Ωmega",
        "nul\x00byte",
    ]


async def test_sql_looking_queries_round_trip_intact(
    start_emulator: StartEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    statements: StatementLog,
) -> None:
    queries = hostile_queries(tmp_path)
    listing = tmp_path / "queries.txt"
    listing.write_text("".join(f"{q}\n" for q in queries), encoding="utf-8")
    out = tmp_path / "out"
    corpus = CorpusConfig(results_per_query=5, fault_rate=0.0)
    server = await start_emulator(EmulatorConfig(qps=None, corpus=corpus))
    argv = [
        "crawl", "--queries-file", str(listing), "--out", str(out), "--key", "k",
        "--endpoint", server.base_url, "--allow-network", "127.0.0.1/32", "--no-progress",
        "--hash-workers", "0", "--limit", "2", "--log-level", "WARNING", "--qps", "50",
    ]  # fmt: skip
    assert await asyncio.to_thread(run_main, argv) == 0
    sent = Counter(r.params.get("q") for r in server.state.requests(endpoint="search"))
    assert set(sent) == set(queries)  # the API got every query as written

    db = out / "checkpoint.sqlite"
    tables = {r["name"] for r in db_rows(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"queries", "candidates", "meta"} <= tables
    assert db_rows(db, "PRAGMA integrity_check")[0][0] == "ok"
    assert not (tmp_path / "pwned.sqlite").exists()
    assert sorted(r["text"] for r in db_rows(db, "SELECT text FROM queries")) == sorted(queries)
    stored = db_rows(db, "SELECT query, count(*) AS n FROM candidates "
                     "WHERE status = 'stored' GROUP BY query")  # fmt: skip
    assert {r["query"]: r["n"] for r in stored} == dict.fromkeys(queries, 2)

    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert Counter(m["query"] for m in manifest) == dict.fromkeys(queries, 2)

    capsys.readouterr()
    assert await asyncio.to_thread(run_main, ["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert sorted(q["text"] for q in status["queries"]) == sorted(queries)
    assert await asyncio.to_thread(run_main, ["export", str(out), "--all"]) == 0
    exported = (out / "export" / "candidates.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["query"] for line in exported} == set(queries)

    # Placeholders only: the texts went in and out, yet no statement ever contained one.
    written = "\n".join(statements.statements)
    assert "INSERT INTO queries" in written  # the recorder saw the checkpoint's writes...
    assert "INSERT INTO candidates" in written
    assert "SELECT" in written  # ... and its reads
    for q in queries:
        assert q not in written
    assert "DROP TABLE" not in written
    assert "ATTACH" not in written
