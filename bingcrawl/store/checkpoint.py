"""The SQLite checkpoint: the source of truth of a crawl that may be killed at any moment.

One :class:`Checkpoint` per OUT directory. All writes go through ONE dedicated writer thread
(:mod:`bingcrawl.store.writer`) in batched transactions; reads run in worker threads
(``asyncio.to_thread``) on separate read-only connections. The event loop never waits on
SQLite. An advisory lock (``OUT/checkpoint.sqlite-lock``, ``flock``) keeps a second crawler
off the same OUT; the kernel drops it when the process dies, even by SIGKILL.

Invariants a resumed crawl relies on:

* a result page's candidates, its ``pages`` row and the query's ``next_offset`` commit in ONE
  transaction (:meth:`Checkpoint.record_page`), so a page is either fully known or will be
  requested again;
* a URL is recorded once across all queries (``url_key`` is unique);
* a candidate is ``stored`` only once its file is in place: the caller writes the file (see
  :func:`bingcrawl.store.atomic.atomic_write_bytes`) *then* records the outcome;
  :meth:`Checkpoint.recover` repairs whatever a crash left in between.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np
import orjson

from bingcrawl.errors import CheckpointError, ConfigError, ResumeMismatchError, UnsafePathError
from bingcrawl.records import Candidate, Outcome, Source
from bingcrawl.store import manifest, meta, output, rows
from bingcrawl.store.recovery import RecoveryReport, recover_sync
from bingcrawl.store.rows import QueryRow, StoredHashes, url_key
from bingcrawl.store.schema import CHECKPOINT_NAME, QUERY_STATES, SCHEMA_VERSION, connect_readonly
from bingcrawl.store.summary import StatusSummary, build_summary
from bingcrawl.store.writer import Writer

__all__ = ["Checkpoint", "QueryRow", "StoredHashes", "url_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Readers:
    """A small pool of read-only connections used from ``asyncio.to_thread`` workers."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._closed:
                raise CheckpointError("the checkpoint is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect_readonly(self._path)
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise CheckpointError(f"checkpoint read failed: {exc}") from exc
        finally:
            self._release(conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Checkpoint:
    """The crawl's SQLite checkpoint in ``OUT/checkpoint.sqlite``. Create with :meth:`open`.

    Use as an async context manager (or call :meth:`close`). Closing flushes every queued
    write, is idempotent and is shielded from cancellation; a closed checkpoint is not
    reopened (open a new one). ``read_only=True`` opens it for ``bingcrawl status`` /
    ``export`` next to a running crawl: no lock, no migration, no writes.
    """

    def __init__(
        self,
        out: Path,
        *,
        durable: bool,
        writer: Writer | None,
        readers: _Readers,
        lock_fd: int | None,
        api_calls_total: int,
        migrated_from: int,
    ) -> None:
        # Private: use Checkpoint.open().
        self._out = out
        self._durable = durable
        self._writer = writer
        self._readers = readers
        self._lock_fd = lock_fd
        # Both start from the checkpoint's total: the larger one is the truth (meta.api_total).
        self._api_sent = api_calls_total
        self._api_answered = api_calls_total
        self._migrated_from = migrated_from
        self._downloads_recorded = False
        self._recovered = False
        #: Keep Bing's insights tokens in new candidate rows (~155 bytes each). Only
        #: ``--similar`` uses them, and it asks by image URL where a row has none: a crawl
        #: without it sets this False.
        self.tokens = True
        self._close_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        out: Path,
        *,
        durable: bool = False,
        batch_size: int = 512,
        batch_interval: float = 0.2,
        read_only: bool = False,
    ) -> Checkpoint:
        """Open (creating and migrating as needed) the checkpoint of ``out``.

        Raises :class:`CheckpointError` if the file is not a checkpoint, comes from a newer
        bingcrawl, or another process is writing ``out``.
        """
        if batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {batch_size!r}")
        if not batch_interval >= 0:
            raise ConfigError("batch_interval", f"must be >= 0, got {batch_interval!r}")
        out = Path(out)
        db_path = out / CHECKPOINT_NAME
        for name in (CHECKPOINT_NAME, f"{CHECKPOINT_NAME}-wal", f"{CHECKPOINT_NAME}-shm"):
            # sqlite3 cannot open with O_NOFOLLOW: a planted link would send the database
            # (and its WAL, created beside the target) outside OUT.
            if (out / name).is_symlink():
                raise UnsafePathError(f"{out / name} is a symlink; refusing to open it")
        readers = _Readers(db_path)
        if read_only:
            total = await asyncio.to_thread(readers.run, meta.api_total)
            return cls(
                out,
                durable=False,
                writer=None,
                readers=readers,
                lock_fd=None,
                api_calls_total=total,
                migrated_from=SCHEMA_VERSION,
            )
        lock_fd = await asyncio.to_thread(meta.acquire_lock, out)
        writer = Writer(
            db_path,
            durable=durable,
            batch_size=batch_size,
            batch_interval=batch_interval,
            on_commit=meta.touch_updated,
        )
        try:
            state = await writer.start(meta.open_setup)
        except BaseException:
            meta.release_lock(lock_fd)
            raise
        return cls(
            out,
            durable=durable,
            writer=writer,
            readers=readers,
            lock_fd=lock_fd,
            api_calls_total=state.api_calls_total,
            migrated_from=state.migrated_from,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def out(self) -> Path:
        """The output directory."""
        return self._out

    @property
    def db_path(self) -> Path:
        """Path of the SQLite file."""
        return self._out / CHECKPOINT_NAME

    @property
    def durable(self) -> bool:
        """True when commits (and output files) are fsynced for power-loss safety."""
        return self._durable

    @property
    def migrated_from(self) -> int:
        """The schema version found at open (equal to the current one if nothing migrated)."""
        return self._migrated_from

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._close_task is not None

    async def close(self) -> None:
        """Commit everything queued, then close. Idempotent; shielded from cancellation."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        try:
            # Readers first: the writer's connection is then the last one, so its stop folds
            # the WAL into checkpoint.sqlite (TRUNCATE) and SQLite removes -wal and -shm.
            try:
                await asyncio.to_thread(self._readers.close)
            except Exception:  # the writer must still stop and the lock go
                log.warning("checkpoint: closing the readers failed", exc_info=True)
            if self._writer is not None:
                if self._downloads_recorded or self._recovered:
                    # A clean stop: the next start-up can skip the slowest repair.
                    self._writer.post(meta.SET_META, (meta.UNCLEAN_KEY, "0"))
                report = await self._writer.stop()
                if report.lost:
                    log.error(
                        "%d checkpoint writes were lost (last error: %s)",
                        report.lost,
                        report.last_error,
                    )
        finally:
            if self._lock_fd is not None:
                meta.release_lock(self._lock_fd)
                self._lock_fd = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _w(self) -> Writer:
        if self._writer is None:
            raise CheckpointError("the checkpoint was opened read-only")
        if self._close_task is not None:
            raise CheckpointError("the checkpoint is closed")
        return self._writer

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._close_task is not None:
            raise CheckpointError("the checkpoint is closed")
        return await asyncio.to_thread(self._readers.run, fn)

    # ------------------------------------------------------------------ run options

    async def check_fingerprint(
        self, fingerprint: Mapping[str, object], *, fresh: bool = False
    ) -> None:
        """Tie OUT to the options that shape its result set.

        First run: the fingerprint is stored. Later runs: any key that differs raises
        :class:`ResumeMismatchError` listing the differences. ``fresh=True`` starts over:
        the previous run's ``images/``, ``manifest.jsonl`` and ``stats.json`` are *moved*
        (one rename each, nothing deleted) into ``OUT/replaced-<UTC time>/``, then queries,
        pages, candidates and API accounting are wiped and the new fingerprint stored. Files
        are moved before rows are wiped, so a crash in between leaves the old checkpoint
        pointing at missing files, which the next ``--fresh`` (or recovery) handles.
        """
        writer = self._w()
        new = meta.normalise_fingerprint(fingerprint)
        if fresh:
            moved = await asyncio.to_thread(meta.move_previous_run_aside, self._out)
            if moved is not None:
                log.warning("--fresh: the previous run's files were moved to %s", moved)
            await writer.call(lambda conn: meta.reset_crawl(conn, new), what="fresh start")
            self._api_sent = self._api_answered = 0
            return

        def check(conn: sqlite3.Connection) -> dict[str, tuple[object, object]]:
            old = meta.load_fingerprint(conn)
            if old is None:
                meta.store_fingerprint(conn, new)
                return {}
            return meta.fingerprint_diff(old, new)

        differences = await writer.call(check, what="fingerprint check")
        if differences:
            raise ResumeMismatchError(differences)

    async def fingerprint(self) -> dict[str, object] | None:
        """The stored options fingerprint, or None before the first run stored one."""
        return await self._read(meta.load_fingerprint)

    # ------------------------------------------------------------------ queries and pages

    async def upsert_query(
        self,
        *,
        source: str,
        label: str,
        text: str,
        norm: str,
        parent_id: int | None = None,
        root_id: int | None = None,
        depth: int = 0,
        params: Mapping[str, object] | None = None,
    ) -> QueryRow:
        """Insert a query, or return the existing row with the same (source, label, norm).

        ``root_id`` defaults to the parent's root (or the row itself for a root query).
        """
        src = str(Source(source))
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        params_json = orjson.dumps(dict(params or {}), default=str).decode()

        def op(conn: sqlite3.Connection) -> QueryRow:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO queries (source, label, text, norm, parent_id, root_id, depth, "
                "params, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (source, label, norm) DO NOTHING",
                (src, label, text, norm, parent_id, root_id, depth, params_json, now, now),
            )
            if cur.rowcount == 1 and root_id is None:
                conn.execute(
                    "UPDATE queries SET root_id = coalesce("
                    "(SELECT coalesce(p.root_id, p.id) FROM queries p WHERE p.id = ?), id) "
                    "WHERE id = ?",
                    (parent_id, cur.lastrowid),
                )
            row = conn.execute(
                f"SELECT {rows.QUERY_COLUMNS} FROM queries "
                "WHERE source = ? AND label = ? AND norm = ?",
                (src, label, norm),
            ).fetchone()
            return rows.query_row(row)

        return await self._w().call(op, what="upsert_query")

    async def queries(self, *, finished_similar: bool = True) -> list[QueryRow]:
        """Every query, by id; without the ``similar`` rows that are no longer ``active``
        when ``finished_similar`` is False (one per stored image asked about: a crawl with
        ``--similar`` keeps only the rows still to ask in memory)."""

        def read(conn: sqlite3.Connection) -> list[QueryRow]:
            sql = f"SELECT {rows.QUERY_COLUMNS} FROM queries"
            if not finished_similar:
                sql += " WHERE source != 'similar' OR state = 'active'"
            return [rows.query_row(row) for row in conn.execute(sql + " ORDER BY id")]

        return await self._read(read)

    async def query_rows(self, ids: Sequence[int]) -> list[QueryRow]:
        """The query rows with these ids (those that exist), by id."""

        def read(conn: sqlite3.Connection) -> list[QueryRow]:
            found: list[QueryRow] = []
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {rows.QUERY_COLUMNS} FROM queries WHERE id IN ({marks})"
                found.extend(rows.query_row(row) for row in conn.execute(sql, chunk))
            return found

        return await self._read(read)

    async def count_queries(self) -> int:
        """How many query rows there are."""

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM queries").fetchone()[0])

        return await self._read(read)

    async def record_page(
        self,
        query_id: int,
        *,
        offset: int,
        next_offset: int,
        exhausted: bool,
        candidates: Sequence[Candidate],
    ) -> list[Candidate]:
        """Record one result page in ONE transaction and return the new candidates.

        Inserts the candidates whose URL (:func:`url_key`) is not known yet from any query,
        the page row, and the query's ``next_offset`` / ``pages`` / ``results`` (and state
        ``exhausted`` when ``exhausted``). All of it commits together or not at all. The
        returned candidates carry their ``id`` and ``query_id``, in input order.
        """
        if offset < 0 or next_offset < 0:
            raise ValueError(f"offsets must be >= 0, got {offset} and {next_offset}")
        batch = tuple(candidates)

        def op(conn: sqlite3.Connection) -> list[Candidate]:
            now = time.time()
            inserted = rows.insert_candidates(conn, batch, query_id, now, tokens=self.tokens)
            conn.execute(
                'INSERT INTO pages (query_id, "offset", next_offset, n_results, n_new, '
                "fetched_at) VALUES (?, ?, ?, ?, ?, ?) "
                'ON CONFLICT (query_id, "offset") DO UPDATE SET '
                "next_offset = excluded.next_offset, n_results = excluded.n_results, "
                "n_new = excluded.n_new, fetched_at = excluded.fetched_at",
                (query_id, offset, next_offset, len(batch), len(inserted), now),
            )
            cur = conn.execute(
                "UPDATE queries SET next_offset = ?, pages = pages + 1, results = results + ?, "
                "state = CASE WHEN ? THEN 'exhausted' ELSE state END, updated_at = ? "
                "WHERE id = ?",
                (next_offset, len(batch), exhausted, now, query_id),
            )
            if cur.rowcount != 1:
                raise CheckpointError(f"unknown query id {query_id}")
            return inserted

        return await self._w().call(op, what=f"record_page(query {query_id}, offset {offset})")

    async def set_query_state(self, query_id: int, state: str, error: str | None = None) -> None:
        """Set a query's state (``active``, ``exhausted``, ``failed``, ``done``) and error."""
        if state not in QUERY_STATES:
            raise ValueError(f"unknown query state {state!r}; one of {sorted(QUERY_STATES)}")

        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE queries SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                (state, error, time.time(), query_id),
            )
            if cur.rowcount != 1:
                raise CheckpointError(f"unknown query id {query_id}")

        await self._w().call(op, what="set_query_state")

    async def requeue_skipped(self, query_ids: Sequence[int]) -> int:
        """Make ``skipped`` candidates of these queries ``pending`` again (their query's
        ``--limit`` was raised); returns how many. Queries go back to ``active``."""
        ids = tuple(query_ids)

        def op(conn: sqlite3.Connection) -> int:
            n = 0
            now = time.time()
            for query_id in ids:
                n += conn.execute(
                    "UPDATE candidates SET status = 'pending', updated_at = ? "
                    "WHERE query_id = ? AND status = 'skipped'",
                    (now, query_id),
                ).rowcount
                conn.execute(
                    "UPDATE queries SET state = 'active', updated_at = ? "
                    "WHERE id = ? AND state = 'done'",
                    (now, query_id),
                )
            return n

        return await self._w().call(op, what="requeue_skipped")

    async def note_ignored(self, signals: Sequence[str]) -> list[str]:
        """Add ``signals`` (publishers' opt-outs a run did not honour) to the ones any run on
        this OUT ignored, and return them all, sorted: a dataset crawled even partly with an
        opt-out turned off says so for good (``stats.json``'s ``etiquette``)."""
        wanted = tuple(signals)

        def op(conn: sqlite3.Connection) -> list[str]:
            row = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (meta.IGNORED_KEY,)
            ).fetchone()
            known = set(orjson.loads(row[0])) if row is not None else set()
            ever = sorted(known | set(wanted))
            if ever != sorted(known) or row is None:
                conn.execute(meta.SET_META, (meta.IGNORED_KEY, orjson.dumps(ever).decode()))
            return ever

        return await self._w().call(op, what="note_ignored")

    async def skip_pending(self, query_ids: Sequence[int], *, at_most: int | None = None) -> int:
        """Mark the ``pending`` candidates of these queries ``skipped`` (each query already
        has its ``--limit`` of stored images), at most ``at_most`` rows in this call (None:
        all); returns how many. :meth:`requeue_skipped` undoes it when the limit is raised.

        Every row it changes rewrites its page (1.5 million rows spread over a checkpoint of
        ten million candidates took 60-75 s): a crawl calls it a few thousand rows at a time,
        beside its downloads, whose outcomes the writer commits in between."""
        ids = tuple(query_ids)

        def op(conn: sqlite3.Connection) -> int:
            now, done = time.time(), 0
            for query_id in ids:
                room = -1 if at_most is None else at_most - done
                if room == 0:
                    break
                done += conn.execute(
                    "UPDATE candidates SET status = 'skipped', updated_at = ? WHERE id IN "
                    "(SELECT id FROM candidates WHERE query_id = ? AND status = 'pending' "
                    "LIMIT ?)",
                    (now, query_id, room),
                ).rowcount
            return done

        return await self._w().call(op, what="skip_pending")

    async def with_pending(self, query_ids: Collection[int]) -> list[int]:
        """Those of ``query_ids`` that have ``pending`` candidates (one probe each of the
        (query, status) index), in their order."""
        wanted = orjson.dumps(sorted(set(query_ids))).decode()
        found: list[int] = await self._read(
            lambda conn: [
                row[0]
                for row in conn.execute(
                    "SELECT q.value FROM json_each(?) AS q WHERE EXISTS (SELECT 1 FROM "
                    "candidates WHERE query_id = q.value AND status = 'pending')",
                    (wanted,),
                )
            ]
        )
        keep = set(found)
        return [q for q in query_ids if q in keep]

    async def add_candidates(
        self, candidates: Sequence[Candidate], *, query_id: int
    ) -> list[Candidate]:
        """Insert candidates without a page (URL lists, similar images); new ones returned."""
        batch = tuple(candidates)
        return await self._w().call(
            lambda conn: rows.insert_candidates(
                conn, batch, query_id, time.time(), tokens=self.tokens
            ),
            what="add_candidates",
        )

    # ------------------------------------------------------------------ batched writes

    def record_outcome(self, outcome: Outcome) -> None:
        """Queue the final word on a candidate; never blocks. Committed within the batch
        interval; :meth:`flush` waits for it."""
        rows.validate_outcome(outcome)
        writer = self._w()
        self._downloads_recorded = True
        writer.post(rows.UPDATE_OUTCOME, rows.outcome_params(outcome, time.time()))

    async def room(self) -> None:
        """Wait while the writer has too many outcomes queued (backpressure: a crawl faster
        than its disk slows down to it instead of queueing without bound)."""
        if self._writer is not None:
            await self._writer.room()

    def record_api_call(self, endpoint: str, status: int) -> None:
        """Count one answered API call (by endpoint and HTTP status); never blocks.

        The row is batched: a kill -9 right after the answer can lose it. A budget that must
        hold across kills also counts each call with :meth:`count_api_call_sent`.
        """
        writer = self._w()
        writer.post(rows.COUNT_API_CALL, (endpoint, status))
        writer.post(rows.COUNT_API_CALL_TODAY, (endpoint,))
        self._api_answered += 1

    async def count_api_call_sent(self, endpoint: str) -> int:
        """Count one API call durably *before* it is sent; returns the new total.

        Committed before it returns (not batched), so no call the API may bill is ever
        missing from :attr:`api_calls_total`, whatever kills the process afterwards; call it
        just before sending each request (the budget check of ``--max-api-calls``).
        ``endpoint`` names the call in the error of a failed commit.
        """
        total = await self._w().call(meta.count_api_call_sent, what=f"count {endpoint} call")
        self._api_sent = total
        return total

    async def count_sent(self, endpoint: str) -> None:
        """:class:`~bingcrawl.engine.ratelimit.Ledger`: :meth:`count_api_call_sent`."""
        await self.count_api_call_sent(endpoint)

    def refund(self, endpoint: str) -> None:
        """:class:`~bingcrawl.engine.ratelimit.Ledger`: take back one call counted as sent
        that never left (its connection was never made); never blocks."""
        self._w().post(meta.REFUND_API_CALL, (meta.API_SENT_KEY,))
        self._api_sent -= 1

    @property
    def api_calls_total(self) -> int:
        """API calls across every run on this OUT: the larger of those counted as sent and
        those recorded as answered (loaded at open, plus those since)."""
        return max(self._api_sent, self._api_answered)

    async def flush(self) -> None:
        """Wait until everything queued so far is committed.

        Raises :class:`CheckpointError` if any queued write failed since the last flush
        (the failures were also logged when they happened).
        """
        report = await self._w().flush()
        if report.lost:
            raise CheckpointError(
                f"{report.lost} checkpoint writes failed (last error: {report.last_error})"
            )

    # ------------------------------------------------------------------ resume

    async def iter_pending(
        self, *, batch: int = 1000, except_queries: Collection[int] = ()
    ) -> AsyncIterator[Candidate]:
        """Yield the ``pending`` candidates by id, reading ``batch`` rows at a time, but none
        of the queries in ``except_queries`` (those at their limit, skipped meanwhile).

        Only rows that existed when the iteration started are yielded: candidates recorded
        later come back from :meth:`record_page` and must not be queued twice.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        # Each batch rebuilds the exclusion list's lookup: batches at least that long keep
        # it a fraction of the work.
        batch = max(batch, len(except_queries))
        upper: int = await self._read(
            lambda conn: conn.execute("SELECT coalesce(max(id), 0) FROM candidates").fetchone()[0]
        )
        last = 0
        excluded = orjson.dumps(sorted(except_queries)).decode()
        sql = (
            f"SELECT {rows.CANDIDATE_COLUMNS} FROM candidates "
            "WHERE status = 'pending' AND id > ? AND id <= ? "
            "AND query_id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?"
        )

        def read(conn: sqlite3.Connection, after: int) -> list[tuple[Any, ...]]:
            result: list[tuple[Any, ...]] = conn.execute(
                sql, (after, upper, excluded, batch)
            ).fetchall()
            return result

        while True:
            found = await self._read(functools.partial(read, after=last))
            if not found:
                return
            for row in found:
                yield rows.candidate_from_row(row)
            last = found[-1][0]

    async def stored_hashes(self) -> list[tuple[str, int]]:
        """``(sha256, phash)`` of every stored image (phash unsigned)."""
        return await self.read_stored_hashes(lambda found: [row[:2] for row in found])

    async def read_stored_hashes(
        self, consume: Callable[[Iterator[tuple[str, int, int | None]]], T]
    ) -> T:
        """``consume(rows)`` in a reader thread, ``rows`` streaming ``(sha256, phash, centre
        hash or None)`` (unsigned) of every stored image from the cursor: e.g.
        ``DedupIndex.rebuild`` at start-up, without a list of every stored row in memory
        (~210 bytes each) on top of the index it builds."""
        return await self._read(lambda conn: consume(rows.iter_stored_hashes(conn)))

    async def stored_hash_arrays(self) -> StoredHashes:
        """The same as :meth:`stored_hashes` as numpy arrays (for HammingIndex.build)."""

        def read(conn: sqlite3.Connection) -> StoredHashes:
            found = rows.stored_hash_rows(conn)
            n = len(found)
            ids = np.fromiter((r[0] for r in found), dtype=np.int64, count=n)
            phash = np.fromiter((r[2] for r in found), dtype=np.int64, count=n).view(np.uint64)
            return StoredHashes(ids=ids, phash=phash, sha256=[r[1] for r in found])

        return await self._read(read)

    async def stored_counts(self, ids: Collection[int] | None = None) -> dict[int, int]:
        """query id -> number of stored images (for ``--limit`` on resume); only of the
        queries ``ids`` when given (memory O(those), not O(queries))."""

        def read(conn: sqlite3.Connection) -> dict[int, int]:
            if ids is not None and len(ids) <= 500:
                marks = ", ".join("?" * len(ids))
                counts = conn.execute(
                    "SELECT query_id, count(*) FROM candidates INDEXED BY idx_candidates_query "
                    f"WHERE query_id IN ({marks}) AND status = 'stored' GROUP BY query_id",
                    list(ids),
                )
                return {qid: n for qid, n in counts}
            counts = conn.execute(
                # One scan of the small (query_id, status) index beats status lookups.
                "SELECT query_id, count(*) FROM candidates INDEXED BY idx_candidates_query "
                "WHERE status = 'stored' GROUP BY query_id"
            )
            if ids is None:
                return {qid: n for qid, n in counts}
            wanted = set(ids)
            return {qid: n for qid, n in counts if qid in wanted}

        return await self._read(read)

    async def stored_paths(self, paths: Sequence[str]) -> set[str]:
        """Which of ``paths`` (relative to OUT) some stored image is recorded at (flush first
        for the latest outcomes)."""

        def read(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for path in dict.fromkeys(paths):
                if conn.execute(
                    "SELECT 1 FROM candidates WHERE path = ? AND status = 'stored' LIMIT 1",
                    (path,),
                ).fetchone():
                    found.add(path)
            return found

        return await self._read(read)

    async def recover(
        self, out: Path | None = None, *, stop: threading.Event | None = None
    ) -> RecoveryReport:
        """Repair what a crash left behind; call once at start-up, before any download.

        See :func:`bingcrawl.store.recovery.recover_sync` for the invariants restored.
        ``stop`` set (a signal during start-up) ends the repair between two folders; its row
        changes roll back and the next start-up repeats it.
        """
        writer = self._w()
        if self._downloads_recorded:
            raise CheckpointError("recover() must run before any download outcome is recorded")
        root = self._out if out is None else Path(out)
        report = await writer.call(
            lambda conn: recover_sync(conn, root, stop=stop), what="recovery"
        )
        self._recovered = True
        if report.changed:
            log.info("checkpoint recovery: %s", report)
        return report

    async def status_summary(self) -> StatusSummary:
        """Progress per query, totals, errors and API calls (``bingcrawl status``)."""
        return await self._read(build_summary)

    # ------------------------------------------------------------------ output files

    async def append_manifest(self) -> int:
        """Append to ``OUT/manifest.jsonl`` the images stored since the last append; return
        how many. Costs O(new rows); cuts a torn or uncommitted tail off first, and rewrites
        the file in full only when it cannot be trusted (see :mod:`bingcrawl.store.manifest`).
        """
        out, durable = self._out, self._durable
        done = await self._w().call(
            lambda conn: manifest.append_sync(conn, out, durable=durable), what="manifest append"
        )
        if done.cut:
            log.info("manifest.jsonl: cut %d uncommitted bytes off its end", done.cut)
        if done.rewritten and done.lines:
            log.info("manifest.jsonl: rewritten in full (%s)", done.rewritten)
        return done.lines

    async def write_manifest(self) -> int:
        """Rewrite ``OUT/manifest.jsonl`` in full, in the writer's transaction (so later
        appends continue it); return the image count. :meth:`append_manifest` is the cheap
        way to bring it up to date."""
        out, durable = self._out, self._durable
        return await self._w().call(
            lambda conn: manifest.rewrite_sync(conn, out, durable=durable),
            what="manifest rewrite",
        )

    async def write_stats(self, extra: Mapping[str, object] | None = None) -> dict[str, object]:
        """Flush, then rewrite ``OUT/stats.json`` in a thread (``extra``: e.g. durations)."""
        await self.flush()
        return await asyncio.to_thread(
            output.write_stats, self, self._out, extra=extra, durable=self._durable
        )
