"""The single writer: one thread, one SQLite connection, batched transactions.

The event loop never waits on SQLite. Coroutines hand operations to a dedicated thread through
a :class:`queue.SimpleQueue`; the thread groups whatever is queued into ONE transaction and
commits it. Two kinds of operation exist:

* **calls** (:meth:`Writer.call`) run a function against the connection and hand its result
  (or exception) back to the awaiting coroutine through ``loop.call_soon_threadsafe``. Each
  call runs inside its own ``SAVEPOINT``, so a failing call rolls back completely (nothing of
  a half-recorded page is ever visible) without dragging the rest of the batch down.
* **rows** (:meth:`Writer.post`) are fire-and-forget statements such as outcome updates.
  Consecutive rows with the same SQL are coalesced into one ``executemany``; if that fails
  the rows are retried one by one so a single bad row is isolated. A row that still fails is
  logged and counted; :meth:`Writer.flush` reports the count, so nothing is dropped silently.

Backpressure: rows queued but not yet committed are counted; past ``max_queued`` of them
:meth:`Writer.room` makes its caller wait (the crawler's workers, before their next
download) until the thread has brought the queue back under half of it. Posting itself
never blocks, so a row is never lost to a full queue; a crawl faster than its disk slows
down to the disk instead of growing the queue without bound.

Latency versus throughput: a batch that holds a call, a flush or the stop request is
committed as soon as the queue is drained (a producer awaiting ``record_page`` should not
wait for the batch timer); a batch that starts with a row waits ``batch_interval`` seconds
for more (cut short by a call, flush or stop) and takes at most ``batch_size`` operations.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bingcrawl.errors import CheckpointError
from bingcrawl.store.schema import connect_writer

__all__ = ["FlushReport", "Writer"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_JOIN_AT_EXIT = 30.0

#: Rows queued (posted, not yet committed) past which :meth:`Writer.room` waits.
MAX_QUEUED = 20_000

#: SQLite's result code for "database or disk is full" (extended codes keep these low bits).
_SQLITE_FULL = 13


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What the writer lost since the previous flush (``lost == 0`` when all is well)."""

    lost: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _Call:
    fn: Callable[[sqlite3.Connection], Any]
    what: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Row:
    sql: str
    params: Sequence[object]


@dataclass(slots=True)
class _Flush:
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None


@dataclass(slots=True)
class _Stop:
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None


_Op = _Call | _Row | _Flush | _Stop


@dataclass(slots=True)
class _Losses:
    count: int = 0
    last_error: str | None = None

    def add(self, n: int, error: str) -> None:
        self.count += n
        self.last_error = error

    def take(self) -> FlushReport:
        report = FlushReport(self.count, self.last_error)
        self.count, self.last_error = 0, None
        return report


def _settle(future: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    # Runs on the loop thread. The awaiting coroutine may have been cancelled meanwhile;
    # the write itself has happened (or not) regardless.
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _resolve(
    loop: asyncio.AbstractEventLoop | None,
    future: asyncio.Future[Any] | None,
    result: object = None,
    exc: BaseException | None = None,
) -> None:
    if loop is None or future is None:
        return
    try:
        loop.call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:
        # The loop is closed: nobody is waiting any more.
        log.debug("checkpoint writer: result for a closed event loop discarded")


def _checkpoint_wal(conn: sqlite3.Connection) -> None:
    # At a clean stop, move everything from the WAL into the main file and empty the WAL:
    # checkpoint.sqlite alone then holds the whole crawl (a user may copy just that file).
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        log.warning("checkpoint: the WAL could not be checkpointed at stop: %s", exc)
        return
    if busy:
        log.info("checkpoint: a reader kept part of the WAL at stop; the next open folds it in")


def _shutdown_at_exit(
    ops: queue.SimpleQueue[_Op], urgent: threading.Event, thread: threading.Thread
) -> None:
    # The thread is a daemon (a forgotten close() must not hang the interpreter), so at exit
    # we ask it to commit what is queued and wait for it.
    if thread.is_alive():
        log.warning("checkpoint writer was not closed; committing its queue at exit")
        ops.put(_Stop(None, None))
        urgent.set()
        thread.join(_JOIN_AT_EXIT)


class Writer:
    """The one thread that writes the checkpoint (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        durable: bool,
        batch_size: int,
        batch_interval: float,
        on_commit: Callable[[sqlite3.Connection], None] | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._path = path
        self._max_queued = max_queued
        # Rows posted (by the loop's thread only) and settled (by the writer thread only):
        # each counter has one writer, so their difference needs no lock.
        self._posted = 0
        self._settled = 0
        self._room_lock = threading.Lock()
        self._room_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._durable = durable
        self._batch_size = batch_size
        self._batch_interval = batch_interval
        self._on_commit = on_commit
        self._ops: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._urgent = threading.Event()
        self._losses = _Losses()
        self._closed = False
        self._started = False
        self._thread = threading.Thread(
            target=self._run, name=f"bingcrawl-writer:{path.name}", daemon=True
        )
        self._setup: Callable[[sqlite3.Connection], Any] | None = None
        self._ready: tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]] | None = None
        self._finalizer = weakref.finalize(
            self, _shutdown_at_exit, self._ops, self._urgent, self._thread
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`stop` was requested."""
        return self._closed

    async def start(self, setup: Callable[[sqlite3.Connection], T]) -> T:
        """Start the thread, open the connection and run ``setup`` on it (e.g. migrations).

        ``setup`` runs outside any batch and manages its own transactions. If it fails the
        thread exits, the connection is closed and the error is raised here.
        """
        if self._started:
            raise RuntimeError("writer already started")
        self._started = True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._setup = setup
        self._ready = (loop, future)
        self._thread.start()
        try:
            return await future
        except BaseException:
            # Failed or cancelled: if setup went on to succeed, the thread is waiting for
            # work; a stop request makes it close its connection and exit.
            self._closed = True
            self._put_urgent(_Stop(None, None))
            raise

    def post(self, sql: str, params: Sequence[object]) -> None:
        """Queue one fire-and-forget statement; never blocks."""
        self._check_open()
        self._posted += 1
        self._ops.put(_Row(sql, params))

    @property
    def queued(self) -> int:
        """Rows posted and not yet committed (or lost)."""
        return self._posted - self._settled

    async def room(self) -> None:
        """Return at once while fewer than ``max_queued`` rows wait to be committed; else wait
        until the writer has brought them under half of that (or stopped)."""
        if self.queued < self._max_queued or self._closed or not self._thread.is_alive():
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._room_lock:
            self._room_waiters.append((loop, future))
        # The thread may have drained the queue, or stopped, meanwhile.
        self._wake_waiters(all_of_them=self._closed)
        await future

    def _wake_waiters(self, *, all_of_them: bool = False) -> None:
        # Any thread. The waiters go when the queue is under half the bound, or at the end.
        if not all_of_them and self.queued >= self._max_queued // 2:
            return
        with self._room_lock:
            waiters, self._room_waiters = self._room_waiters, []
        for loop, future in waiters:
            _resolve(loop, future, None)

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, what: str) -> T:
        """Run ``fn(conn)`` in the writer's next transaction and return its result.

        ``fn``'s changes commit atomically with the rest of the batch, or not at all: any
        exception rolls them back and is re-raised here as :class:`CheckpointError`.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put_urgent(_Call(fn, what, loop, future))
        return await future

    async def flush(self) -> FlushReport:
        """Wait until everything queued so far is committed; report rows lost since last time."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FlushReport] = loop.create_future()
        self._put_urgent(_Flush(loop, future))
        return await future

    async def stop(self) -> FlushReport:
        """Commit the queue, close the connection and join the thread. Idempotent."""
        if self._closed:
            return FlushReport()
        self._closed = True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FlushReport] = loop.create_future()
        self._put_urgent(_Stop(loop, future))
        try:
            return await future
        finally:
            await asyncio.to_thread(self._thread.join)
            self._finalizer.detach()

    def _put_urgent(self, op: _Op) -> None:
        self._ops.put(op)
        self._urgent.set()  # after the put: a woken writer must find the op queued

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError("the checkpoint is closed")
        if not self._thread.is_alive():
            raise CheckpointError("the checkpoint writer is not running")

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        assert self._ready is not None
        assert self._setup is not None
        loop, ready = self._ready
        try:
            conn = connect_writer(self._path, durable=self._durable)
        except BaseException as exc:
            _resolve(loop, ready, exc=exc)
            return
        try:
            try:
                result = self._setup(conn)
            except BaseException as exc:
                _resolve(loop, ready, exc=exc)
                return
            _resolve(loop, ready, result)
            while True:
                batch = self._collect()
                if isinstance(batch[-1], _Stop):
                    self._execute(conn, batch, checkpoint_wal=True)
                    return
                self._execute(conn, batch)
        except BaseException:
            log.critical("checkpoint writer thread crashed", exc_info=True)
            raise
        finally:
            self._closed = True
            conn.close()
            self._drain_after_stop()
            self._wake_waiters(all_of_them=True)  # nobody waits on a writer that is gone

    def _drain_after_stop(self) -> None:
        # Nothing should be queued after a stop; if something raced in, fail it loudly.
        while True:
            try:
                op = self._ops.get_nowait()
            except queue.Empty:
                return
            if isinstance(op, _Row):
                log.error("checkpoint writer stopped: a queued %s was not written", op.sql[:40])
            else:
                _resolve(op.loop, op.future, exc=CheckpointError("the checkpoint is closed"))

    def _collect(self) -> list[_Op]:
        first = self._ops.get()
        batch: list[_Op] = [first]
        if isinstance(first, _Stop):
            return batch
        if isinstance(first, _Row):
            # Rows are not urgent: let them pile up for one interval. Waiting on the queue
            # instead would wake this thread (and hand it the GIL) once per posted row -
            # thousands of times a second in a fast crawl. A call, flush or stop cuts the
            # wait short through ``_urgent``.
            self._urgent.wait(self._batch_interval)
        # Cleared before draining: an urgent op queued after this line is either drained
        # below or finds the event set on the next round, so it never waits an interval.
        self._urgent.clear()
        while len(batch) < self._batch_size:
            try:
                op = self._ops.get_nowait()
            except queue.Empty:
                break
            batch.append(op)
            if isinstance(op, _Stop):
                break
        else:
            self._urgent.set()  # a full batch: more may be queued, do not wait next round
        return batch

    def _execute(
        self, conn: sqlite3.Connection, batch: list[_Op], *, checkpoint_wal: bool = False
    ) -> None:
        settled: list[tuple[_Call, object, BaseException | None]] = []
        rows = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            i = 0
            while i < len(batch):
                op = batch[i]
                if isinstance(op, _Row):
                    group = [op.params]
                    i += 1
                    while i < len(batch):
                        nxt = batch[i]
                        if not isinstance(nxt, _Row) or nxt.sql != op.sql:
                            break
                        group.append(nxt.params)
                        i += 1
                    rows += len(group)
                    self._run_rows(conn, op.sql, group)
                    continue
                if isinstance(op, _Call):
                    settled.append(self._run_call(conn, op))
                i += 1
            if self._on_commit is not None:
                self._on_commit(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            # The whole transaction is gone: every call fails and every row counts as lost.
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL:
                # A full disk is the user's to fix, not a bug: one line, no traceback.
                log.error("checkpoint: the disk is full; %d operations not committed", len(batch))
            else:
                log.exception("checkpoint transaction of %d operations failed", len(batch))
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("checkpoint rollback failed")
            error = CheckpointError(f"checkpoint commit failed: {exc}")
            error.__cause__ = exc
            settled = [(op, None, error) for op in batch if isinstance(op, _Call)]
            if rows:
                self._losses.add(rows, str(exc))
        self._settled += sum(isinstance(op, _Row) for op in batch)
        self._wake_waiters()
        if checkpoint_wal:
            _checkpoint_wal(conn)
        for call, result, err in settled:
            _resolve(call.loop, call.future, result, err)
        for op in batch:
            if isinstance(op, _Flush | _Stop):
                _resolve(op.loop, op.future, self._losses.take())

    def _run_call(
        self, conn: sqlite3.Connection, op: _Call
    ) -> tuple[_Call, object, BaseException | None]:
        conn.execute("SAVEPOINT op")
        try:
            result = op.fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            log.warning("checkpoint %s failed and was rolled back: %s", op.what, exc)
            error = CheckpointError(f"{op.what} failed: {exc}")
            error.__cause__ = exc
            return op, None, error
        conn.execute("RELEASE op")
        return op, result, None

    def _run_rows(self, conn: sqlite3.Connection, sql: str, group: list[Sequence[object]]) -> None:
        conn.execute("SAVEPOINT rows")
        try:
            conn.executemany(sql, group)
        except Exception:
            conn.execute("ROLLBACK TO rows")
        else:
            conn.execute("RELEASE rows")
            return
        conn.execute("RELEASE rows")
        # Isolate the bad row(s): the others must still land.
        for params in group:
            conn.execute("SAVEPOINT row")
            try:
                conn.execute(sql, params)
            except Exception as exc:
                conn.execute("ROLLBACK TO row")
                log.error("checkpoint write lost (%s): %s; params=%.200r", sql[:40], exc, params)
                self._losses.add(1, str(exc))
            conn.execute("RELEASE row")
