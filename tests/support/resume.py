"""Helpers of the crash-resume tests (tests/e2e/test_resume*.py): run the crawl as a real
process against an emulator, kill it at crash points or random moments, and compare the
resumed dataset with an uninterrupted run's (see tests/e2e/test_resume.py for the method)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import sys
import tarfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.corpus import CorpusConfig
from bingcrawl.emulator.imagehost import ImageHostConfig
from bingcrawl.engine.crashpoints import POINTS
from bingcrawl.store.recovery import TEMP_NAME
from tests.support.crawls import key_of
from tests.support.emulator import Emulators

#: Image faults whose outcome is the same however often, and after however many kills, the
#: URL is fetched (with ``--retries 2`` a transient 503 always ends served). Slow faults are
#: left out: they cost seconds and prove nothing more about resuming.
FAULTS = (
    "http_404", "http_500", "transient_503", "truncated_body", "truncated_image",
    "html_as_jpeg", "random_bytes", "redirect", "wrong_content_type", "oversize",
)  # fmt: skip

QUERIES = ("alpha one", "beta two", "gamma three", "delta four")

#: Bound on every wait for a crawl process (a hung crawl fails the test instead of the
#: 120 s per-test timeout killing it without a diagnosis).
RUN_TIMEOUT = 90.0

#: How often a kill condition is checked while the crawl runs.
POLL = 0.01

_TERMINAL = ("stored", "duplicate", "failed", "skipped")


def emulator_config(*, results_per_query: int = 80, seed: int = 7) -> EmulatorConfig:
    """The emulator of the resume tests: faults, exact mirrors and near duplicates.

    No cross-query pictures: a picture two queries share is stored under the label of
    whichever query reaches it first, which no two runs need agree on.
    """
    return EmulatorConfig(
        qps=None,
        corpus=CorpusConfig(
            seed=seed,
            results_per_query=results_per_query,
            fault_rate=0.12,
            fault_kinds=FAULTS,
            exact_dup_rate=0.1,
            near_dup_rate=0.05,
            cross_query_rate=0.0,
        ),
        images=ImageHostConfig(retry_after=0.0, oversize_bytes=3 * 1024 * 1024),
    )


def crawl_args(
    base_url: str, out: Path, *extra: str, queries: Iterable[str] = QUERIES
) -> list[str]:
    """``crawl ...`` as these tests run it (``extra`` options go last and win)."""
    return [
        "crawl", *queries,
        "--out", str(out), "--key", "test-key", "--endpoint", base_url,
        "--count", "10", "--limit", "1000", "--qps", "50", "--max-active-queries", "2",
        "--concurrency", "8", "--per-host", "8", "--timeout", "2", "--retries", "2",
        "--max-bytes", str(2 * 1024 * 1024), "--near-dup-distance", "0",
        "--hash-workers", "0", "--grace", "1",
        "--allow-network", "127.0.0.1/32", "--no-progress", "--log-level", "WARNING",
        *extra,
    ]  # fmt: skip


def crawl_argv(
    base_url: str, out: Path, *extra: str, queries: Iterable[str] = QUERIES
) -> list[str]:
    """The command line of a crawl process (see :func:`crawl_args`)."""
    return [sys.executable, "-m", "bingcrawl", *crawl_args(base_url, out, *extra, queries=queries)]


def child_env(crash_at: str | None = None) -> dict[str, str]:
    """The crawl's environment: ours without any bingcrawl or Bing settings, plus a crash."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BINGCRAWL_", "BING_SEARCH_V7_"))
    }
    if crash_at is not None:
        env["BINGCRAWL_CRASH_AT"] = crash_at
    return env


# -- running and killing the crawl -------------------------------------------------------

Condition = Callable[[int], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Run:
    """How one crawl process ended."""

    returncode: int
    killed: bool
    log: Path
    pid: int  # also the id of its process group

    def stderr(self) -> str:
        """What the process wrote to stderr."""
        return self.log.read_text(encoding="utf-8", errors="replace")


async def run_crawl(
    argv: list[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    kill_when: Condition | None = None,
    sig: signal.Signals = signal.SIGKILL,
    timeout: float = RUN_TIMEOUT,
) -> Run:
    """Run the crawl to its end; with ``kill_when``, send it ``sig`` as soon as that holds.

    ``kill_when(pid)`` is polled every :data:`POLL` seconds while the process runs (by waiting
    on the process with a timeout, so an exit is seen at once).
    """
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env if env is not None else child_env()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            # its own process group: what the crawl started can be found (and cleaned up)
            start_new_session=True,
        )
    waiter = asyncio.ensure_future(proc.wait())
    with signaller(proc.pid) as send:
        try:
            async with asyncio.timeout(timeout):
                if kill_when is not None:
                    while not waiter.done():
                        if await kill_when(proc.pid):
                            send(sig)
                            break
                        await asyncio.wait({waiter}, timeout=POLL)
                returncode = await waiter
        except TimeoutError:
            send(signal.SIGKILL)
            await waiter
            pytest.fail(f"the crawl did not end within {timeout} s:\n{log.read_text()[-3000:]}")
    # Killed by us or by a crash point; a kill that raced with the exit is no kill.
    return Run(returncode, returncode == -signal.SIGKILL, log, proc.pid)


@contextlib.contextmanager
def signaller(pid: int) -> Iterator[Callable[[int], None]]:
    """A function that signals process ``pid`` through a pidfd, harmless once it has exited.

    Not ``Process.send_signal``: its ``Popen.poll()`` reaps a child that has just exited,
    before asyncio's child watcher does, which then reports exit status 255.
    """
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = None  # gone already: nothing to signal

    def send(sig: int) -> None:
        if pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)

    try:
        yield send
    finally:
        if pidfd is not None:
            os.close(pidfd)


def db_query(out: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on OUT's checkpoint ([] while there is no usable checkpoint yet)."""
    path = out / "checkpoint.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


async def db_count(out: Path, sql: str) -> int:
    """A ``SELECT count(*) ...`` on the checkpoint, off the event loop (it serves the emulator)."""
    rows = await asyncio.to_thread(db_query, out, sql)
    return int(rows[0][0]) if rows else 0


def _image_files(out: Path) -> list[Path]:
    images = out / "images"
    return [p for p in images.rglob("*") if p.is_file()] if images.is_dir() else []


async def make_condition(kind: str, out: Path, rng: random.Random) -> tuple[str, Condition]:
    """A random kill moment of ``kind``: a description and the condition to poll."""
    if kind == "startup":
        # The child holds OUT's lock: it is opening, migrating or recovering the checkpoint.
        lock = out / "checkpoint.sqlite-lock"

        async def holds_lock(pid: int) -> bool:
            try:
                return lock.read_text().strip() == str(pid)
            except FileNotFoundError:
                return False

        return "startup (lock taken)", holds_lock
    if kind == "pages":
        sql = "SELECT count(*) FROM pages"
        step = rng.randint(1, 3)
    elif kind == "outcomes":
        sql = "SELECT count(*) FROM candidates WHERE status IN ('stored', 'duplicate', 'failed')"
        step = rng.randint(1, 12)
    elif kind == "files":
        before = len(await asyncio.to_thread(_image_files, out))
        step = rng.randint(1, 12)

        async def files_grew(pid: int) -> bool:
            return len(await asyncio.to_thread(_image_files, out)) >= before + step

        return f"{step} more image files", files_grew
    else:
        raise ValueError(kind)
    target = await db_count(out, sql) + step

    async def grew(pid: int) -> bool:
        return await db_count(out, sql) >= target

    return f"{kind} >= {target}", grew


# -- reading what a crawl left -----------------------------------------------------------


@dataclass(slots=True)
class Ledger:
    """What the crash loop saw, round by round, for the checks at the end."""

    kills: int = 0
    rounds: list[str] = field(default_factory=list)
    #: (round, what) of every violation of "nothing done twice".
    repeats: list[tuple[str, str]] = field(default_factory=list)


def committed_pages(out: Path) -> set[tuple[str, int]]:
    """(query text, offset) of every page committed to the checkpoint."""
    return {
        (text, offset)
        for text, offset in db_query(
            out, 'SELECT q.text, p."offset" FROM pages p JOIN queries q ON q.id = p.query_id'
        )
    }


def settled_keys(out: Path) -> set[str]:
    """Emulator URL keys of the candidates whose outcome is committed."""
    marks = ", ".join(f"'{s}'" for s in _TERMINAL)
    rows = db_query(out, f"SELECT url FROM candidates WHERE status IN ({marks})")
    return {key_of(url) for (url,) in rows}


def page_requests(server: EmulatorServer, since: int = 0) -> list[tuple[str, int]]:
    """(q, offset) of the answered search requests, from the ``since``-th on."""
    return [
        (r.params["q"], int(r.params.get("offset", "0")))
        for r in server.state.requests(endpoint="search", status=200)[since:]
    ]


async def crash_round(
    server: EmulatorServer,
    argv: list[str],
    out: Path,
    ledger: Ledger,
    *,
    name: str,
    crash_at: str | None = None,
    kill_when: Condition | None = None,
    sig: signal.Signals = signal.SIGKILL,
) -> Run:
    """One run of the crash loop, checking that it repeats nothing done before it."""
    pages_before = await asyncio.to_thread(committed_pages, out)
    settled_before = await asyncio.to_thread(settled_keys, out)
    n_requests = len(server.state.requests(endpoint="search", status=200))
    fetched_before = Counter(server.image_host.requests)
    log = out.parent / f"{out.name}-round{len(ledger.rounds)}.log"
    run = await run_crawl(argv, log, env=child_env(crash_at), kill_when=kill_when, sig=sig)
    ledger.rounds.append(f"{name}: exit {run.returncode}")
    if run.killed:
        ledger.kills += 1
    elif run.returncode not in (0, 128 + sig):
        pytest.fail(f"round {name} exited {run.returncode}:\n{run.stderr()[-3000:]}")
    for page in page_requests(server, n_requests):
        if page in pages_before:
            ledger.repeats.append((name, f"committed page {page} requested again"))
    fetched = Counter(server.image_host.requests)
    fetched.subtract(fetched_before)
    for key in sorted(k for k, n in fetched.items() if n > 0 and k in settled_before):
        ledger.repeats.append((name, f"settled URL {key} downloaded again"))
    return run


@dataclass(frozen=True, slots=True)
class Dataset:
    """A finished crawl's results, with the emulator's origin taken out of every URL."""

    candidates: dict[str, dict[str, Any]]  # URL key -> candidate row
    manifest: list[dict[str, Any]]
    stats: dict[str, Any]
    fetches: Counter[str]  # URL key -> image requests the emulator served
    pages: list[tuple[str, int]]  # answered search requests

    @classmethod
    def read(cls, out: Path, server: EmulatorServer) -> Dataset:
        base = server.base_url

        def local(value: object) -> object:
            return value.replace(base, "EMULATOR/") if isinstance(value, str) else value

        conn = sqlite3.connect(out / "checkpoint.sqlite")
        conn.row_factory = sqlite3.Row
        try:
            candidates = {
                key_of(row["url"]): {k: local(row[k]) for k in row.keys()}  # noqa: SIM118 (sqlite3.Row)
                for row in conn.execute("SELECT * FROM candidates")
            }
        finally:
            conn.close()
        with (out / "manifest.jsonl").open(encoding="utf-8") as fh:
            manifest = [
                {k: local(v) for k, v in json.loads(line).items()} for line in fh if line.strip()
            ]
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        return cls(
            candidates, manifest, stats, Counter(server.image_host.requests), page_requests(server)
        )


def check_integrity(out: Path, *, finished: bool = True) -> None:
    """The checkpoint is sound and agrees with the files under OUT; a ``finished`` crawl
    left no candidate unsettled."""
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT url) FROM candidates"
        ).fetchone()
        assert n == distinct, "duplicate candidate rows"
        pages = conn.execute(
            'SELECT count(*), count(DISTINCT query_id || ":" || "offset") FROM pages'
        )
        n, distinct = pages.fetchone()
        assert n == distinct, "duplicate page rows"
        unsettled = conn.execute(
            "SELECT status, count(*) FROM candidates WHERE status IN ('pending', 'inflight') "
            "GROUP BY status"
        ).fetchall()
        assert unsettled == [] or not finished, "a finished crawl left candidates unsettled"
        stored = conn.execute(
            "SELECT path, sha256, bytes, shard_offset, shard_end FROM candidates "
            "WHERE status = 'stored'"
        ).fetchall()
        dangling = conn.execute(
            "SELECT count(*) FROM candidates d WHERE d.status = 'duplicate' AND NOT EXISTS "
            "(SELECT 1 FROM candidates s WHERE s.status = 'stored' AND s.sha256 = d.duplicate_of)"
        ).fetchone()[0]
        assert dangling == 0, "a duplicate points at an image that is not stored"
    finally:
        conn.close()
    assert len({row[1] for row in stored}) == len(stored), "one picture stored twice"
    files = [row[:3] for row in stored if not row[0].startswith("shards/")]
    on_disk = {p.relative_to(out).as_posix(): p for p in _image_files(out)}
    assert set(on_disk) == {path for path, _, _ in files}, "orphan or missing image files"
    for path, sha, size in files:
        data = on_disk[path].read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha, size), path
    check_shards(out, [row for row in stored if row[0].startswith("shards/")])
    temp = [p for p in out.rglob("*") if TEMP_NAME.match(p.name) or p.name.endswith(".tmp")]
    assert temp == [], "temp files left behind"


def check_shards(out: Path, stored: list[tuple[Any, ...]]) -> None:
    """Webdataset output: every shard is a tar holding exactly the stored images (an image
    member and its json member each), at the offsets the checkpoint recorded."""
    members: dict[tuple[str, int], tuple[str, bytes, int]] = {}
    for shard in sorted(out.glob("shards/*")):
        rel = shard.relative_to(out).as_posix()
        with tarfile.open(shard) as tar:  # a valid tar, end-of-archive included
            found = [(info, tar.extractfile(info)) for info in tar]
            assert found, f"{rel} holds nothing"
            for info, fh in found:
                assert fh is not None
                end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                members[(rel, info.offset)] = (info.name, fh.read(), end)
    assert len(members) == 2 * len(stored), "shards hold members that no stored row has"
    for path, sha, size, offset, end in stored:
        name, data, image_end = members[(path, offset)]
        assert name.startswith(f"{sha[:16]}.")
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha, size), (path, offset)
        name, meta, meta_end = members[(path, image_end)]
        assert name == f"{sha[:16]}.json"
        assert json.loads(meta)["sha256"] == sha
        assert meta_end == end


def outcome_of(row: Mapping[str, Any]) -> tuple[object, ...]:
    """What must not depend on kills: a URL's result (which copy of a picture is the stored
    one and which the duplicate is a race in any run, so both count as "kept")."""
    if row["status"] in ("stored", "duplicate"):
        return ("kept", row["sha256"], row["bytes"], row["width"], row["height"], row["format"])
    return (row["status"], row["error_class"])


#: Manifest fields that describe the picture, equal in every run; the other fields describe
#: the URL it was stored from, which for an exact mirror is whichever copy won the race.
PICTURE_FIELDS = (
    "path", "label", "query", "source", "sha256", "phash", "width", "height", "format",
    "bytes", "license", "parent",
)  # fmt: skip
URL_FIELDS = ("content_url", "host_page_url", "image_id", "name", "thumbnail_url")


def check_same_dataset(
    got: Dataset,
    want: Dataset,
    *,
    picture: Callable[[str], object] | None = None,
    same_paths: bool = True,
) -> None:
    """``got`` (resumed) holds exactly the results of ``want`` (uninterrupted).

    With exact dedup the stored sha256 set is fixed. With near-duplicate dedup, which variant
    of a picture is stored is a race in any run, so pass ``picture`` (URL key -> the picture
    it shows, from the emulator's ground truth): then the stored *pictures* must be the same.
    ``same_paths=False``: webdataset shards are numbered per run, so paths differ.
    """
    fields = PICTURE_FIELDS if same_paths else tuple(f for f in PICTURE_FIELDS if f != "path")
    assert set(got.candidates) == set(want.candidates)
    differ = {
        key: (outcome_of(got.candidates[key]), outcome_of(row))
        for key, row in want.candidates.items()
        if outcome_of(got.candidates[key]) != outcome_of(row)
    }
    assert differ == {}
    assert len(got.manifest) == len(want.manifest)
    by_sha = {row["sha256"]: row for row in want.manifest}
    if picture is None:
        assert {r["sha256"] for r in got.manifest} == set(by_sha)
    else:
        stored = Counter(picture(key_of(r["content_url"])) for r in got.manifest)
        assert stored == Counter(picture(key_of(r["content_url"])) for r in want.manifest)
    for row in got.manifest:
        if picture is None:
            ref = by_sha[row["sha256"]]
            assert {f: row[f] for f in fields} == {f: ref[f] for f in fields}
            assert row.keys() == ref.keys()
        # the row describes a URL that delivered these bytes in the uninterrupted run too
        source = want.candidates[key_of(row["content_url"])]
        assert {f: row[f] for f in URL_FIELDS} == {
            "content_url": source["url"],
            "host_page_url": source["host_page_url"],
            "image_id": source["image_id"],
            "name": source["name"],
            "thumbnail_url": source["thumbnail_url"],
        }
        assert [row[f] for f in ("sha256", "bytes", "width", "height", "format", "label")] == [
            source[f] for f in ("sha256", "bytes", "width", "height", "format", "label")
        ]
    assert got.stats["candidates"] == want.stats["candidates"]
    assert got.stats["errors"] == want.stats["errors"]
    if picture is None:
        assert got.stats["stored_bytes"] == want.stats["stored_bytes"]


def check_bounded_work(got: Dataset, want: Dataset, ledger: Ledger) -> None:
    """Nothing done twice that was done before a kill; nothing beyond (kills + 1) times."""
    assert ledger.repeats == [], ledger.rounds
    pages = Counter(got.pages)
    assert set(pages) == set(want.pages)
    assert max(pages.values()) <= ledger.kills + 1
    over = {
        key: (n, want.fetches[key])
        for key, n in got.fetches.items()
        if n > (ledger.kills + 1) * max(1, want.fetches[key])
    }
    assert over == {}, f"downloaded more than (kills + 1) times: {over}"


async def reference_run(
    tmp_path: Path, config: EmulatorConfig, *extra: str, queries: Iterable[str] = QUERIES
) -> Dataset:
    """The uninterrupted crawl every resumed one is compared with."""
    async with Emulators() as emulators:
        server = await emulators.start(config)
        out = tmp_path / "reference"
        argv = crawl_argv(server.base_url, out, *extra, queries=queries)
        run = await run_crawl(argv, tmp_path / "reference.log")
        assert run.returncode == 0, run.stderr()
        check_integrity(out)
        return Dataset.read(out, server)


# -- the crash loop ----------------------------------------------------------------------

#: Per named point, the range its hit number is drawn from: early enough that the point is
#: reached in any round, late enough that the round gets somewhere first.
POINT_HITS = {
    "api_response": (1, 4),
    "page_committed": (1, 4),
    "downloaded": (1, 12),
    "file_written": (1, 12),
    "outcome_recorded": (1, 12),
}
RANDOM_KINDS = ("startup", "pages", "outcomes", "files")
#: The kinds that need pages still to be fetched.
PAGING = ("api_response", "page_committed", "pages")


def paging_left(out: Path) -> bool:
    """True unless every query of OUT has had its last page."""
    states = {state for (state,) in db_query(out, "SELECT DISTINCT state FROM queries")}
    return not states or "active" in states  # no query registered yet, or one still active


async def crash_loop(
    server: EmulatorServer,
    out: Path,
    schedule: list[str],
    rng: random.Random,
    *extra: str,
) -> Ledger:
    """Kill the crawl once per schedule entry (a named point or a random kind), then run it
    to the end; returns what happened."""
    ledger = Ledger()
    argv = crawl_argv(server.base_url, out, *extra)
    for i, kind in enumerate(schedule):
        if kind in PAGING and not await asyncio.to_thread(paging_left, out):
            kind = "outcome_recorded"  # no page is left to die at
        if kind in POINTS:
            crash_at = f"{kind}:{rng.randint(*POINT_HITS[kind])}"
            run = await crash_round(
                server, argv, out, ledger, name=f"{i} {crash_at}", crash_at=crash_at
            )
        else:
            what, condition = await make_condition(kind, out, rng)
            run = await crash_round(
                server, argv, out, ledger, name=f"{i} {what}", kill_when=condition
            )
        if not run.killed:
            break  # the crawl finished first
    run = await crash_round(server, argv, out, ledger, name="final")
    assert run.returncode == 0
    return ledger
