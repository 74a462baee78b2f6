"""Flat curves to 10M candidates: start-up, images/s, RSS, disk, status/export, SIGTERM.

    python -m benchmarks.scale_bench [--sizes 100000,1000000,10000000] [--dir CACHE]
                                     [--rebuild] [--new-images 20000] [--json FILE]

For each size N a synthetic crawl of N candidates is built once through the public store
API (``Checkpoint.open``, ``check_fingerprint``, ``upsert_query``, ``add_candidates``,
``record_outcome``, ``append_manifest``) under ``CACHE/<N>/`` and reused by later runs (a
marker file names the builder version, the schema and the commit it was built with; another
builder version or schema is rebuilt, ``--rebuild`` forces it; ``--build-only`` stops
there). Its 1000 queries (N/100 below 100k) are ``done``; in each, of every 20 candidates
10 are stored (a zero-byte file under ``images/<label>/``, random 64-bit frame and centre
hashes), 3 are duplicates, 4 failed and 3 still pending. The rows look like Bing results
(URLs of ~100 characters, host page, thumbnail, name, image id; the insights token Bing
sends is dropped, as a crawl without ``--similar`` does). The
fingerprint is the one of the crawl measured afterwards (its config built by
:func:`bingcrawl.options.build_config` from the same flags), so that crawl resumes the
checkpoint instead of refusing it (exit 2). 10M candidates take ~25 min on 2 cores.

Then, per size, from the built state (a measured run's writes are undone first: the built
checkpoint is copied back, the manifest cut back), with one emulator process for every size
(50 ms image latency, 20 ms API latency, JPEGs only, no faults, every image of the measured
crawl rendered before it starts, in an image cache large enough to hold them, ``--cache-mb``):

* a crawl of ``--new-images`` new images (new queries of :data:`LIMIT` images each, with
  ``--limit`` :data:`LIMIT`; every synthetic query already holds that many, so what they
  left pending is skipped, as on any resume of full queries), run by
  ``benchmarks.crawlrun`` (the library API, as the command runs it) under
  :func:`benchmarks.measure.run_measured`. **start-up** is the time from the process's
  spawn to its first new image file (open, recovery, manifest check, dedup rebuild, the
  pending candidates, then one API call and one download; the crawl's INFO log lines until
  then are kept with their times); **img/s** the steady state, first to last new image file
  (as :mod:`benchmarks.measure` defines it); **RSS** the crawl process's peak;
* ``bingcrawl status DIR --json`` and ``bingcrawl export DIR -o FILE`` wall times (the
  export's lines are counted against the stored images, then the file is deleted);
* SIGTERM: another ``bingcrawl crawl`` (new queries again) on the same folder is sent
  SIGTERM once it has stored images: the seconds to its exit and its exit status (143
  expected); its time to a first image is **restart** (a start-up with nothing pending);
* disk: ``checkpoint.sqlite`` bytes per candidate, and per table and index from SQLite's
  ``dbstat`` (on the built checkpoint);
* the dedup index, rebuilt from the built checkpoint in this process: bytes per stored
  image (``DedupIndex.nbytes``), rebuild seconds, and the mean cost of deciding one new
  picture (``check_and_add`` of random hashes), which should stay flat.

The table has one row per size, the dbstat breakdown, then for each step between sizes
img/s over the smaller size's (should stay >= ~0.9) and each figure's growth per candidate
(1 = linear); growth beyond :data:`SUPERLINEAR` is flagged as faster than linear, as is a
per-picture dedup cost that grows more than :data:`DEDUP_GROWTH` times. Exit status 1 if a
behaviour check failed (the crawl refused the checkpoint, SIGTERM did not give 143...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.measure import Timeline, file_timeline, run_measured
from benchmarks.urlset import EmulatorSpec, query_texts
from bingcrawl.config import CrawlConfig, safe_label
from bingcrawl.emulator.server import start_emulator_process, stop_emulator_process
from bingcrawl.options import build_config, crawl_parser
from bingcrawl.records import NEAR_DUP_METHODS, Candidate, ErrorClass, Outcome, Status
from bingcrawl.store import CHECKPOINT_NAME, Checkpoint
from bingcrawl.store.schema import SCHEMA_VERSION

__all__ = [
    "BUILDER_VERSION",
    "CRAWL_DIR",
    "LIMIT",
    "MARKER",
    "PRISTINE",
    "Settings",
    "build",
    "crawl_config",
    "ensure_built",
    "main",
    "render_table",
    "restore",
    "run_scale",
    "size_dir",
    "summarize",
]

log = logging.getLogger("benchmarks.scale_bench")

#: Bumped whenever :func:`build` makes a different checkpoint: an older build is rebuilt.
BUILDER_VERSION = 3

#: Images kept per query (``--limit``): the new queries' size, and at most what every
#: synthetic query already holds (so their pending candidates are skipped on resume).
LIMIT = 50

#: The synthetic status of each candidate by its position in its query, modulo 20:
#: 10 stored (S), 3 duplicates (D), 4 failed (F), 3 pending (P). Starts with S, so every
#: duplicate names an image stored before it in the same query.
PATTERN = "SSDSFSPSFDSFSPSDFSPS"

#: Results per API page (``--count``), and candidates per ``add_candidates`` call.
PAGE = 150

#: Pages handed to the checkpoint writer at once while building.
GROUP = 16

#: Growth of a per-candidate figure (bytes, MB or seconds over candidates) from one size to
#: a larger one beyond which it counts as growing faster than linearly.
SUPERLINEAR = 1.5

#: New images each measured crawl stores, by default.
DEFAULT_NEW_IMAGES = 20_000

REPO = Path(__file__).resolve().parent.parent

MARKER = "scale-build.json"
PRISTINE = "pristine.sqlite"
CRAWL_DIR = "crawl"

#: The crawl options every run on a synthetic checkpoint shares (result-set ones included:
#: the builder stores the fingerprint of exactly these).
COMMON_FLAGS: tuple[str, ...] = (
    "--key", "bench-key",
    "--allow-network", "127.0.0.1/32",
    "--count", str(PAGE),
    "--limit", str(LIMIT),
    "--no-progress",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Settings:
    """What a measurement does (the same at every size)."""

    new_images: int = DEFAULT_NEW_IMAGES
    image_latency: float = 0.05
    api_latency: float = 0.02
    concurrency: int = 128
    qps: float = 50.0
    max_active_queries: int = 16
    #: Queries of the SIGTERM run (it is stopped long before it finishes them).
    sigterm_queries: int = 40
    #: Seconds the SIGTERM run is given, after its first stored image, before the signal.
    sigterm_after: float = 1.0
    #: Seconds a stopped crawl may take before it is killed (the requirement is 10 s).
    sigterm_timeout: float = 60.0
    timeout: float = 3600.0

    @property
    def new_queries(self) -> int:
        """New queries of :data:`LIMIT` images each that make ``new_images``."""
        return max(1, -(-self.new_images // LIMIT))

    def emulator(self) -> EmulatorSpec:
        """The emulator: unique JPEGs, no faults, :data:`LIMIT` results a query."""
        return EmulatorSpec(
            image_latency=self.image_latency,
            api_latency=self.api_latency,
            results_per_query=LIMIT,
            qps=0.0,
            warm_queries=self.new_queries,
        )


# -- the synthetic crawl -----------------------------------------------------------------------


def crawl_config(out: Path, endpoint: str = "http://127.0.0.1:9/") -> CrawlConfig:
    """The config of a crawl on ``out`` with :data:`COMMON_FLAGS`, built as the command
    builds it, with the near-duplicate method a fresh crawl resolves to (the fingerprint's
    ``near_dup_method``)."""
    parser = crawl_parser()
    args = parser.parse_args(["q", "--out", str(out), "--endpoint", endpoint, *COMMON_FLAGS])
    config = build_config(args, {}, progress=False)
    if config.near_dup_method is None:
        config = replace(config, near_dup_method=NEAR_DUP_METHODS[0])
    return config


def query_count(n: int) -> int:
    """Synthetic queries of a crawl of ``n`` candidates: 1000, fewer below 100k so that
    each holds at least 100 candidates (50 stored, at least :data:`LIMIT`)."""
    return max(1, min(1000, n // 100))


def _h(n: int, salt: int, digits: int) -> str:
    """Deterministic hex of ``digits`` characters (a cheap stand-in for random tokens)."""
    x = (n * 0x9E3779B97F4A7C15 + salt * 0xC2B2AE3D27D4EB4F) & ((1 << 64) - 1)
    text = ""
    while len(text) < digits:
        x = (x * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
        text += f"{x:016x}"
    return text[:digits]


def synthetic_candidate(n: int, label: str, query: str, slug: str) -> Candidate:
    """Candidate ``n`` of a query, shaped like a Bing result (URL ~100 characters, a host
    page, a Bing thumbnail, an insights token of ~130)."""
    return Candidate(
        url=f"https://img{n % 997}.example{n % 13}.com/wp-content/uploads/20{n % 10 + 15}/"
        f"{n % 12 + 1:02d}/{slug}-{n:09d}.jpg",
        label=label,
        query=query,
        host_page_url=f"https://www.site{n % 331}.example.org/{slug}/article-{n:09d}.html",
        thumbnail_url=f"https://tse{n % 4 + 1}.mm.bing.net/th?id=OIP.{_h(n, 1, 22)}&pid=Api",
        name=f"{query.title()} - photo {n} on site{n % 331}",
        image_id=_h(n, 2, 40).upper(),
        insights_token=f"ccid_{_h(n, 3, 8)}*cp_{_h(n, 4, 32)}*mid_{_h(n, 5, 40)}"
        f"*simid_{_h(n, 6, 18)}*thid_OIP.{_h(n, 7, 22)}",
        encoding_format="jpeg",
        reported_width=640 + (n % 7) * 160,
        reported_height=480 + (n % 5) * 120,
        provider="bing",
    )


_ERRORS = (
    (ErrorClass.TIMEOUT, "read timeout after 30 s"),
    (ErrorClass.CONNECTION, "Cannot connect to host: connection refused"),
    (ErrorClass.http(404), "HTTP 404 Not Found"),
    (ErrorClass.NOT_AN_IMAGE, "bytes are not an image (text/html)"),
)


def synthetic_outcome(
    c: Candidate, kind: str, rng: random.Random, stored_sha: str, now: float
) -> Outcome | None:
    """The outcome of a candidate of status ``kind`` (``P``: none, it stays pending)."""
    if kind == "S":
        sha = f"{rng.getrandbits(256):064x}"
        return Outcome(
            c, Status.STORED, attempts=1, sha256=sha, phash=rng.getrandbits(64),
            centre=rng.getrandbits(64), width=c.reported_width, height=c.reported_height,
            format="jpeg", size=0, path=f"images/{c.label}/{sha[:16]}.jpg", fetched_at=now,
        )  # fmt: skip
    if kind == "D":
        exact = rng.random() < 0.4
        return Outcome(
            c, Status.DUPLICATE, attempts=1, sha256=stored_sha if exact else
            f"{rng.getrandbits(256):064x}", phash=rng.getrandbits(64),
            centre=rng.getrandbits(64), width=c.reported_width, height=c.reported_height,
            format="jpeg", size=0, duplicate_of=stored_sha, distance=0 if exact else
            rng.randint(1, 6), match="exact" if exact else "frame", fetched_at=now,
        )  # fmt: skip
    if kind == "F":
        error, detail = _ERRORS[rng.randrange(len(_ERRORS))]
        return Outcome(c, Status.FAILED, attempts=rng.randint(1, 3), error_class=error,
                       detail=detail)  # fmt: skip
    return None


async def build(out: Path, n: int, *, seed: int = 1234) -> dict[str, Any]:
    """Fill ``out`` with a synthetic crawl of ``n`` candidates; return what it took.

    Queries are paged round-robin, :data:`PAGE` candidates at a time, as a crawl of many
    active queries writes them; each page's outcomes are queued as soon as it is inserted
    (the writer's backpressure bounds the queue). The manifest is written once, at the end.
    """
    rng = random.Random(seed)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    config = crawl_config(out)
    q = query_count(n)
    sizes = [n // q + (1 if i < n % q else 0) for i in range(q)]
    counts = dict.fromkeys("SDFP", 0)
    files = 0
    async with await Checkpoint.open(out, batch_size=4096, batch_interval=0.05) as cp:
        await cp.check_fingerprint(config.fingerprint())
        cp.tokens = bool(config.similar)  # as the crawl does: no insights tokens without it
        rows = []
        for i in range(q):
            text = f"scale query {i:04d}"
            rows.append(
                await cp.upsert_query(
                    source="search",
                    label=safe_label(text),
                    text=text,
                    norm=text,
                    params=config.filter_map(),
                )
            )
        for row in rows:
            (out / "images" / row.label).mkdir(parents=True, exist_ok=True)
        made = [0] * q
        last_stored = [""] * q
        number = next_log = 0
        while any(made[i] < sizes[i] for i in range(q)):
            # Pages of GROUP queries are handed to the writer together: it commits them in
            # one transaction and never waits for the next page.
            for start in range(0, q, GROUP):
                pages: list[tuple[int, list[Candidate]]] = []
                for i in range(start, min(q, start + GROUP)):
                    take = min(PAGE, sizes[i] - made[i])
                    if take <= 0:
                        continue
                    row = rows[i]
                    slug = row.text.replace(" ", "-")
                    pages.append((i, [synthetic_candidate(number + k, row.label, row.text, slug)
                                      for k in range(take)]))  # fmt: skip
                    number += take
                if not pages:
                    continue
                inserted = await asyncio.gather(
                    *(cp.add_candidates(page, query_id=rows[i].id) for i, page in pages)
                )
                now = time.time()
                for (i, page), new in zip(pages, inserted, strict=True):
                    for k, c in enumerate(new):
                        kind = PATTERN[(made[i] + k) % len(PATTERN)]
                        counts[kind] += 1
                        outcome = synthetic_outcome(c, kind, rng, last_stored[i], now)
                        if outcome is None:
                            continue
                        if outcome.status is Status.STORED:
                            assert outcome.sha256 is not None
                            assert outcome.path is not None
                            last_stored[i] = outcome.sha256
                            os.close(os.open(out / outcome.path, os.O_CREAT | os.O_WRONLY, 0o644))
                            files += 1
                        cp.record_outcome(outcome)
                    made[i] += len(page)
                await cp.room()
                if number >= next_log:
                    next_log += max(100_000, n // 10)
                    log.info("built %d / %d candidates (%.0f/s)", number, n,
                             number / (time.perf_counter() - t0))  # fmt: skip
        for row in rows:
            await cp.set_query_state(row.id, "done")
        await cp.flush()
        t1 = time.perf_counter()
        lines = await cp.append_manifest()
        t2 = time.perf_counter()
    total = time.perf_counter() - t0
    return {
        "candidates": number,
        "queries": q,
        "stored": counts["S"],
        "duplicates": counts["D"],
        "failed": counts["F"],
        "pending": counts["P"],
        "files": files,
        "manifest_lines": lines,
        "rows_s": round(t1 - t0, 2),
        "manifest_s": round(t2 - t1, 2),
        "build_s": round(total, 2),
        "rows_per_s": round(number / (t1 - t0)),
    }


def dbstat(db: Path) -> dict[str, int]:
    """Bytes of each table and index of ``db`` (SQLite's ``dbstat``), largest first, and of
    its free pages (``(free pages)``: rows that shrank or went, e.g. a pending row's data
    cleared by its outcome), so that they add up to the file's size."""
    # immutable: the built copy never changes, and no -shm / -wal is made beside it
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        found = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        found.append(
            ("(free pages)", conn.execute("PRAGMA freelist_count").fetchone()[0] * page_size)
        )
    finally:
        conn.close()
    return {str(name): int(size) for name, size in sorted(found, key=lambda f: -f[1])}


@functools.cache
def code_version() -> str:
    """The checkout's commit, ``+dirty`` when ``bingcrawl/`` has uncommitted changes (the
    rows a build writes depend on the store code of the day); read once, at the first call
    (the code this process runs), not again when a later commit lands during a long build."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "bingcrawl"],
                               cwd=REPO, check=False).returncode != 0  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def size_dir(root: Path, n: int) -> Path:
    """Where the build of ``n`` candidates is cached."""
    return root / str(n)


def ensure_built(root: Path, n: int, *, rebuild: bool = False) -> dict[str, Any]:
    """The marker of the build of ``n`` candidates under ``root``, built first unless a
    build of this :data:`BUILDER_VERSION` is there (the marker is written last, so a build
    cut short is never reused)."""
    where = size_dir(root, n)
    marker_path = where / MARKER
    if not rebuild and marker_path.exists():
        marker: dict[str, Any] = json.loads(marker_path.read_text())
        made_by = (marker.get("builder_version"), marker.get("schema_version"))
        if made_by == (BUILDER_VERSION, SCHEMA_VERSION) and marker.get("n") == n:
            log.info("reusing the build of %d candidates in %s (bingcrawl %s)", n, where,
                     marker.get("bingcrawl"))  # fmt: skip
            return marker
        # Another schema would be migrated by every measured crawl, inside its start-up.
        log.info("%s was made by builder %s for schema %s: rebuilding", where, *made_by)
    shutil.rmtree(where, ignore_errors=True)
    out = where / CRAWL_DIR
    log.info("building %d candidates in %s ...", n, out)
    version = code_version()
    built = asyncio.run(build(out, n))
    t = time.perf_counter()
    shutil.copyfile(out / CHECKPOINT_NAME, where / PRISTINE)
    copy_s = time.perf_counter() - t
    t = time.perf_counter()
    tables = dbstat(where / PRISTINE)
    marker = {
        "builder_version": BUILDER_VERSION,
        "schema_version": SCHEMA_VERSION,
        "bingcrawl": version,
        "n": n,
        "built_at": datetime.now().isoformat(timespec="seconds"),
        "build": built | {"copy_s": round(copy_s, 2)},
        "db_bytes": (where / PRISTINE).stat().st_size,
        "dbstat": tables,
        "dbstat_s": round(time.perf_counter() - t, 2),
        "manifest_bytes": (out / "manifest.jsonl").stat().st_size,
    }
    marker_path.write_text(json.dumps(marker, indent=1) + "\n")
    log.info("built %d candidates in %.0f s (%d rows/s)", n, built["build_s"],
             built["rows_per_s"])  # fmt: skip
    return marker


# -- measuring a built size --------------------------------------------------------------------

_DIRTY = "dirty"


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINGCRAWL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def restore(where: Path, marker: dict[str, Any]) -> float:
    """Bring the crawl folder back to the state the build left (after a measured run wrote
    into it); returns the seconds it took. The manifest is cut back in place (same inode:
    the checkpoint's record of it stays valid) and the new queries' folders removed."""
    t = time.perf_counter()
    out = where / CRAWL_DIR
    if (where / _DIRTY).exists():
        for suffix in ("-wal", "-shm"):
            (out / f"{CHECKPOINT_NAME}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(where / PRISTINE, out / CHECKPOINT_NAME)
        os.truncate(out / "manifest.jsonl", int(marker["manifest_bytes"]))
        for entry in os.scandir(out / "images"):
            if entry.name.startswith("bench_"):
                shutil.rmtree(entry.path)
        for name in ("stats.json", "export"):
            with contextlib.suppress(FileNotFoundError):
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        (where / _DIRTY).unlink()
    return time.perf_counter() - t


def crawl_argv(out: Path, endpoint: str, queries: Sequence[str], s: Settings) -> list[str]:
    """``crawl`` and its flags (without the program): the run the build's fingerprint is for."""
    return [
        "crawl", *queries, "--out", str(out), "--endpoint", endpoint, *COMMON_FLAGS,
        "--qps", repr(s.qps), "--concurrency", str(s.concurrency),
        # One emulator is one host: a per-host cap below --concurrency would be the bound.
        "--per-host", str(s.concurrency), "--max-active-queries", str(s.max_active_queries),
        "--retries", "1",
    ]  # fmt: skip


def labels_timeline(images: Path, labels: Sequence[str]) -> Timeline:
    """:func:`file_timeline` over the folders of ``labels`` only (not the synthetic ones)."""
    count, first, last = 0, None, None
    for label in labels:
        t = file_timeline(images / label)
        count += t.count
        if t.first is not None:
            first = t.first if first is None else min(first, t.first)
        if t.last is not None:
            last = t.last if last is None else max(last, t.last)
    return Timeline(count, first, last)


def _count_files(images: Path, labels: Sequence[str]) -> int:
    n = 0
    for label in labels:
        with contextlib.suppress(FileNotFoundError):
            n += sum(1 for _ in os.scandir(images / label))
    return n


def startup_log(stderr: Path, started: float, until: float | None) -> list[list[Any]]:
    """``[seconds after spawn, message]`` of the crawl's JSON log lines up to ``until``."""
    found: list[list[Any]] = []
    with contextlib.suppress(FileNotFoundError), stderr.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                ts = datetime.fromisoformat(entry["ts"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            if until is not None and ts > until:
                break
            if entry.get("logger") == "bingcrawl.progress":
                continue  # the periodic progress line
            found.append([round(ts - started, 2), str(entry.get("msg", ""))[:100]])
    return found[:40]


def measure_crawl(out: Path, endpoint: str, s: Settings, where: Path) -> dict[str, Any]:
    """The crawl of ``s.new_images`` new images on ``out``, through ``benchmarks.crawlrun``."""
    queries = query_texts(s.new_queries)
    labels = [safe_label(q) for q in queries]
    result_path, stderr = where / "crawl-result.json", where / "crawl-stderr.jsonl"
    result_path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "benchmarks.crawlrun", "--result", str(result_path), "--",
            *crawl_argv(out, endpoint, queries, s), "--log-level", "INFO",
            "--log-format", "json"]  # fmt: skip
    proc = run_measured(argv, env=_child_env(), cwd=REPO, timeout=s.timeout, stderr_path=stderr)
    result: dict[str, Any] = json.loads(result_path.read_text()) if result_path.exists() else {}
    timeline = labels_timeline(out / "images", labels)
    run = dict(result.get("stats", {}).get("run", {}))
    steps = startup_log(stderr, proc.started, timeline.first)
    return {
        "exit": proc.returncode,
        "wall_s": round(proc.wall_s, 2),
        "startup_s": None if timeline.first is None else round(timeline.first - proc.started, 2),
        "new_stored": timeline.count,
        "images_per_s": None if timeline.steady_rate() is None
        else round(timeline.steady_rate() or 0.0, 1),
        "peak_rss_mb": round(max(proc.peak_rss_mb,
                                 float(result.get("self_maxrss_kb") or 0) / 1024), 1),
        "tree_peak_rss_mb": round(proc.tree_peak_rss_mb, 1),
        "cpu_s": round(proc.cpu_s, 1),
        "loop_lag_p99_ms": result.get("loop_lag_p99_ms"),
        "run": {k: run.get(k) for k in ("stored", "dataset_stored", "duplicates", "failed",
                                        "skipped", "api_calls")},
        "stored_before": (run.get("dataset_stored") or 0) - (run.get("stored") or 0),
        "startup_log": steps,
        "stderr_tail": proc.stderr_tail if proc.returncode else "",
    }  # fmt: skip


def _timed(argv: Sequence[str], timeout: float) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    done = subprocess.run(list(argv), cwd=REPO, env=_child_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip
    return time.perf_counter() - t, done


def measure_status_export(out: Path, s: Settings) -> dict[str, Any]:
    """``bingcrawl status --json`` and ``bingcrawl export`` (to a file under /tmp) times."""
    status_s, status = _timed([sys.executable, "-m", "bingcrawl", "status", str(out), "--json"],
                              s.timeout)  # fmt: skip
    totals: dict[str, int] = {}
    if status.returncode == 0:
        totals = json.loads(status.stdout).get("totals", {})
    target = Path(tempfile.gettempdir()) / f"scale-export-{os.getpid()}.jsonl"
    try:
        export_s, export = _timed([sys.executable, "-m", "bingcrawl", "export", str(out),
                                   "--output", str(target)], s.timeout)  # fmt: skip
        lines = 0
        if target.exists():
            with target.open("rb") as fh:
                lines = sum(1 for _ in fh)
        export_bytes = target.stat().st_size if target.exists() else 0
    finally:
        target.unlink(missing_ok=True)
    return {
        "status_s": round(status_s, 2),
        "status_exit": status.returncode,
        "status_stored": totals.get("stored"),
        "status_skipped": totals.get("skipped"),
        "export_s": round(export_s, 2),
        "export_exit": export.returncode,
        "export_lines": lines,
        "export_bytes": export_bytes,
    }


def measure_sigterm(out: Path, endpoint: str, s: Settings, where: Path) -> dict[str, Any]:
    """A ``bingcrawl crawl`` of more queries, sent SIGTERM once it stores images: seconds
    from the signal to its exit, and its exit status."""
    queries = query_texts(s.new_queries + s.sigterm_queries)[s.new_queries :]
    labels = [safe_label(q) for q in queries]
    images = out / "images"
    with (where / "sigterm-stderr.txt").open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bingcrawl", *crawl_argv(out, endpoint, queries, s),
             "--log-level", "WARNING"],
            cwd=REPO, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=err, start_new_session=True,
        )  # fmt: skip
        try:
            while proc.poll() is None and _count_files(images, labels) == 0:
                if time.perf_counter() - t0 > s.timeout:
                    break
                time.sleep(0.02)
            first_s = time.perf_counter() - t0
            time.sleep(s.sigterm_after)
            before = _count_files(images, labels)
            if proc.poll() is not None:
                return {"sigterm_exit": proc.returncode, "sigterm_s": None,
                        "sigterm_first_image_s": round(first_s, 2),
                        "sigterm_stored_before_signal": before,
                        "sigterm_note": "the crawl ended before the signal"}  # fmt: skip
            t = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            try:
                code: int | None = proc.wait(timeout=s.sigterm_timeout)
            except subprocess.TimeoutExpired:
                code = None
            exit_s = time.perf_counter() - t
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {
        "sigterm_exit": code,
        "sigterm_s": round(exit_s, 2),
        "sigterm_first_image_s": round(first_s, 2),
        "sigterm_stored_before_signal": before,
    }


def measure_dedup(out: Path, lookups: int) -> dict[str, Any]:
    """The dedup index the crawl rebuilds at start-up, rebuilt here from the checkpoint:
    its bytes per stored image (``DedupIndex.nbytes``), the rebuild's seconds, and the mean
    cost of deciding one new picture (``check_and_add`` of ``lookups`` random hashes, as the
    crawl's event loop does for every downloaded image: as many as the measured crawl
    stores, so the index's tail merges, one step per addition past 16,384, are counted)."""
    from bingcrawl.dedup.index import DedupIndex

    distance = crawl_config(out).near_dup_distance

    async def rebuild() -> DedupIndex:
        async with await Checkpoint.open(out, read_only=True) as cp:
            return await cp.read_stored_hashes(lambda rows: DedupIndex.rebuild(rows, distance))

    t = time.perf_counter()
    index = asyncio.run(rebuild())
    seconds = time.perf_counter() - t
    rng = random.Random(99)
    probes = [(f"{rng.getrandbits(256):064x}", rng.getrandbits(64), rng.getrandbits(64))
              for _ in range(lookups)]  # fmt: skip
    t = time.perf_counter()
    for sha, frame, centre in probes:
        index.check_and_add(sha, frame, centre)
    lookup_s = (time.perf_counter() - t) / lookups
    stored = len(index) - lookups
    return {
        "dedup_stored": stored,
        "dedup_bytes_per_image": round(index.nbytes / len(index), 1),
        "dedup_rebuild_s": round(seconds, 2),
        "dedup_lookup_us": round(lookup_s * 1e6, 1),
    }


def measure_size(root: Path, marker: dict[str, Any], endpoint: str, s: Settings) -> dict[str, Any]:
    """Every figure of one built size (see the module docstring)."""
    n = int(marker["n"])
    where = size_dir(root, n)
    out = where / CRAWL_DIR
    row: dict[str, Any] = {"n": n, "restore_s": round(restore(where, marker), 2)}
    build_info = marker["build"]
    row["build_s"] = build_info["build_s"]
    row["build_rows_per_s"] = build_info["rows_per_s"]
    row["stored_built"] = build_info["stored"]
    row["pending_built"] = build_info["pending"]
    row["db_bytes"] = marker["db_bytes"]
    row["db_bytes_per_candidate"] = round(marker["db_bytes"] / n, 1)
    row["dbstat_bytes_per_candidate"] = {
        name: round(size / n, 1) for name, size in marker["dbstat"].items() if size / n >= 0.05
    }
    row["manifest_bytes_per_stored"] = round(marker["manifest_bytes"] / build_info["stored"], 1)
    row.update(measure_dedup(out, s.new_queries * LIMIT))
    (where / _DIRTY).touch()
    log.info("%d: crawling %d new images ...", n, s.new_images)
    row["crawl"] = measure_crawl(out, endpoint, s, where)
    log.info("%d: status and export ...", n)
    row.update(measure_status_export(out, s))
    log.info("%d: SIGTERM ...", n)
    row.update(measure_sigterm(out, endpoint, s, where))
    row["checks"] = checks(row, s)
    return row


def checks(row: dict[str, Any], s: Settings) -> dict[str, bool]:
    """What must hold whatever the timings: the crawl resumed the synthetic checkpoint and
    stored every new image, status and export agree with it, SIGTERM gave 143."""
    crawl = row["crawl"]
    stored_total = row["stored_built"] + crawl["new_stored"]
    return {
        "crawl_exit_0": crawl["exit"] == 0,
        "resumed_synthetic": crawl["stored_before"] == row["stored_built"],
        # The synthetic queries hold their limit already: what they left pending is skipped.
        "pending_skipped": row["status_skipped"] == row["pending_built"],
        # Every new result stored, or a near duplicate of another (the emulator's pictures
        # are synthetic: a few of 20,000 look alike), the same ones at every size.
        "new_images_stored": crawl["run"].get("stored") == crawl["new_stored"]
        and crawl["new_stored"] + (crawl["run"].get("duplicates") or 0) == s.new_queries * LIMIT,
        "status_counts_stored": row["status_stored"] == stored_total,
        "export_lines_are_stored": row["export_lines"] == stored_total,
        "sigterm_143": row["sigterm_exit"] == 143,
        "sigterm_within_10s": row["sigterm_s"] is not None and row["sigterm_s"] <= 10.0,
    }


# -- the whole scenario ------------------------------------------------------------------------

#: Figures checked for faster-than-linear growth: (name, how to read it, the least value
#: worth judging: a step is judged only when both sizes' figures reach it; below it, noise,
#: fixed costs and CPU caches decide).
GROWTH: tuple[tuple[str, Callable[[dict[str, Any]], float | None], float], ...] = (
    ("start-up s", lambda r: r["crawl"]["startup_s"], 1.0),
    ("restart s", lambda r: r["sigterm_first_image_s"], 1.0),
    ("peak RSS MB", lambda r: r["crawl"]["peak_rss_mb"], 0.0),
    ("checkpoint bytes", lambda r: r["db_bytes"], 0.0),
    ("status s", lambda r: r["status_s"], 0.5),
    ("export s", lambda r: r["export_s"], 0.5),
    ("SIGTERM s", lambda r: r["sigterm_s"], 0.5),
    ("build s", lambda r: r["build_s"], 1.0),
    ("dedup rebuild s", lambda r: r["dedup_rebuild_s"], 0.5),
)

#: How much the cost of deciding one picture (``dedup_lookup_us``) may grow from one size to
#: another before it is flagged: it should stay about flat (a crawl of N pictures then costs
#: O(N)); growing with the index, the crawl's total dedup work grows faster than linearly.
DEDUP_GROWTH = 2.0


def _label(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """For each step between consecutive sizes and from the smallest to the largest:
    images/s over the smaller size's (should stay >= ~0.9), and each :data:`GROWTH` figure's
    growth per candidate (1.0: linear; less: fixed costs amortised); flags where worse."""
    flags: list[str] = []
    ratios: dict[str, dict[str, float | None]] = {}
    pairs = list(itertools.pairwise(rows))
    if len(rows) > 2:
        pairs.append((rows[0], rows[-1]))
    for small, large in pairs:
        step = f"{_label(small['n'])}->{_label(large['n'])}"
        scale = large["n"] / small["n"]
        a, b = small["crawl"]["images_per_s"], large["crawl"]["images_per_s"]
        ratio = round(b / a, 3) if a and b else None
        ratios.setdefault("images/s (ratio)", {})[step] = ratio
        if ratio is not None and ratio < 0.9:
            flags.append(f"images/s {step}: {a:g} -> {b:g} ({ratio:.2f}x, < 0.9)")
        a, b = small["dedup_lookup_us"], large["dedup_lookup_us"]
        ratio = round(b / a, 3) if a and b else None
        ratios.setdefault("dedup us per picture (ratio)", {})[step] = ratio
        if ratio is not None and ratio > DEDUP_GROWTH:
            flags.append(f"deciding one picture costs {a:g} -> {b:g} us {step} ({ratio:.2f}x): "
                         "the crawl's dedup work grows faster than linearly")  # fmt: skip
        for name, read, floor in GROWTH:
            a, b = read(small), read(large)
            growth = round((b / a) / scale, 3) if a and b is not None else None
            ratios.setdefault(f"{name} (per candidate)", {})[step] = growth
            judged = a is not None and b is not None and min(a, b) >= floor
            if growth is not None and growth > SUPERLINEAR and judged:
                flags.append(f"{name} grows faster than linearly {step}: {a:g} -> {b:g} "
                             f"({growth:.2f}x per candidate)")  # fmt: skip
    for row in rows:
        if row["sigterm_s"] is not None and row["sigterm_s"] > 10:
            flags.append(f"SIGTERM at {row['n']:,} took {row['sigterm_s']} s (> 10 s)")
    return {"ratios": ratios, "flags": flags, "failed_checks": _failed(rows)}


def _failed(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{row['n']}: {name}" for row in rows for name, ok in row["checks"].items() if not ok]


def run_scale(sizes: Sequence[int], root: Path, s: Settings, *,
              rebuild: bool = False) -> dict[str, Any]:  # fmt: skip
    """Build (or reuse) every size, then measure each against one emulator."""
    markers = [ensure_built(root, n, rebuild=rebuild) for n in sorted(sizes)]
    spec = s.emulator()
    log.info("starting the emulator (warming %d images) ...", s.new_queries * LIMIT)
    t = time.perf_counter()
    cache_mb = max(256, s.new_queries * LIMIT * 40 // 1024 + 64)  # ~32 kB a 30k JPEG
    proc, endpoint = start_emulator_process(
        [*spec.args(), "--cache-mb", str(cache_mb)], timeout=600.0
    )
    warm_s = time.perf_counter() - t
    rows = []
    try:
        for marker in markers:
            rows.append(measure_size(root, marker, endpoint, s))
    finally:
        stop_emulator_process(proc, grace=30.0)
    return {
        "settings": asdict(s) | {"new_queries": s.new_queries, "limit": LIMIT},
        "emulator": {"args": spec.args()[:20], "warm_s": round(warm_s, 1), "cache_mb": cache_mb},
        "builder_version": BUILDER_VERSION,
        "bingcrawl": code_version(),
        "built_with": {str(m["n"]): m.get("bingcrawl") for m in markers},
        "dir": str(root),
        "rows": rows,
        "summary": summarize(rows),
    }


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def render_table(result: dict[str, Any]) -> str:
    """One line per size, then the dbstat breakdown, the ratios and the flags."""
    head = ("candidates", "build s", "rows/s", "start-up s", "restart s", "img/s", "RSS MB",
            "B/cand", "status s", "export s", "SIGTERM s", "exit", "dedup B/img",
            "dedup us")  # fmt: skip
    lines = [" ".join(f"{h:>11}" for h in head)]
    for r in result["rows"]:
        c = r["crawl"]
        cells = (f"{r['n']:,}", _fmt(r["build_s"], ".0f"), _fmt(r["build_rows_per_s"], ","),
                 _fmt(c["startup_s"], ".2f"), _fmt(r["sigterm_first_image_s"], ".2f"),
                 _fmt(c["images_per_s"], ".0f"),
                 _fmt(c["peak_rss_mb"], ".0f"), _fmt(r["db_bytes_per_candidate"], ".0f"),
                 _fmt(r["status_s"], ".2f"), _fmt(r["export_s"], ".2f"),
                 _fmt(r["sigterm_s"], ".2f"), _fmt(r["sigterm_exit"]),
                 _fmt(r["dedup_bytes_per_image"], ".0f"),
                 _fmt(r["dedup_lookup_us"], ".0f"))  # fmt: skip
        lines.append(" ".join(f"{x:>11}" for x in cells))
    rows = result["rows"]
    names = [name for name, per in rows[-1]["dbstat_bytes_per_candidate"].items() if per >= 0.5]
    lines.append("\ncheckpoint bytes per candidate by table / index (dbstat):")
    lines.append(f"  {'':<34}" + "".join(f"{_label(r['n']):>10}" for r in rows))
    for name in ["(file)", *names]:
        values = [
            r["db_bytes_per_candidate"] if name == "(file)"
            else r["dbstat_bytes_per_candidate"].get(name)
            for r in rows
        ]  # fmt: skip
        lines.append(f"  {name:<34}" + "".join(f"{_fmt(c, '.1f'):>10}" for c in values))
    summary = result["summary"]
    if summary["ratios"]:
        steps = list(next(iter(summary["ratios"].values())))
        lines.append(f"\n  {'growth per candidate (1 = linear)':<34}"
                     + "".join(f"{st:>12}" for st in steps))  # fmt: skip
        for name, by_step in summary["ratios"].items():
            lines.append(f"  {name:<34}" + "".join(f"{_fmt(by_step[st]):>12}" for st in steps))
    for flag in summary["flags"]:
        lines.append(f"FLAG: {flag}")
    for failed in summary["failed_checks"]:
        lines.append(f"FAILED CHECK: {failed}")
    return "\n".join(lines)


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; 0 when every size was measured as expected."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_bench",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--sizes", type=_sizes, default=(100_000, 1_000_000, 10_000_000),
                   help="candidates of each synthetic checkpoint (default 100000,1000000,"
                   "10000000)")  # fmt: skip
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("/tmp/bingcrawl-scale"),
        help="cache of the builds, one folder per size (default /tmp/bingcrawl-scale)",
    )
    p.add_argument("--rebuild", action="store_true", help="build again even if cached")
    p.add_argument("--build-only", action="store_true", help="build (or check) and stop")
    p.add_argument(
        "--new-images",
        type=int,
        default=DEFAULT_NEW_IMAGES,
        help=f"new images each measured crawl stores (default {DEFAULT_NEW_IMAGES})",
    )
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.build_only:
        for n in args.sizes:
            marker = ensure_built(args.dir, n, rebuild=args.rebuild)
            sys.stdout.write(json.dumps({"n": n, **marker["build"]}) + "\n")
        return 0
    settings = Settings(new_images=args.new_images)
    result = run_scale(args.sizes, args.dir, settings, rebuild=args.rebuild)
    result["command"] = "python -m benchmarks.scale_bench " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    sys.stdout.write(render_table(result) + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 1 if result["summary"]["failed_checks"] else 0


if __name__ == "__main__":
    sys.exit(main())
