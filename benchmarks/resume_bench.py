"""Start-up cost of resuming a large crawl: open + recover + stored_hashes + stored_counts.

    python -m benchmarks.resume_bench [--rows 1000000] [--stored-share 0.25] [--dir DIR]
                                      [--rebuild] [--json out.json]

The first run builds a checkpoint with ``--rows`` candidates through the public API
(``add_candidates`` in chunks, then ``record_outcome``), a quarter of them stored with a
(zero-byte) file under ``images/``, and reports the write throughput. Later runs reuse it
(``--rebuild`` to start over). Each start-up step is then timed on the existing checkpoint.
The goal at 1M candidates is a start-up under 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bingcrawl.records import Candidate, ErrorClass, Outcome, Status
from bingcrawl.store import CHECKPOINT_NAME, Checkpoint

log = logging.getLogger("resume_bench")

_CHUNK = 5000
_QUERIES = 100


async def build(out: Path, rows: int, stored_share: float) -> dict[str, float]:
    """Fill ``out`` with a synthetic crawl; return the write rates."""
    rng = random.Random(1234)
    t0 = time.perf_counter()
    async with await Checkpoint.open(out) as cp:
        await cp.check_fingerprint({"bench": True})
        queries = [
            await cp.upsert_query(source="search", label=f"label{i}", text=f"q {i}", norm=f"q {i}")
            for i in range(_QUERIES)
        ]
        inserted: list[Candidate] = []
        per_query = rows // _QUERIES
        for q in queries:
            for start in range(0, per_query, _CHUNK):
                first = q.id * per_query + start
                last = first + min(_CHUNK, per_query - start)
                chunk = [
                    Candidate(
                        url=f"https://img{n % 997}.example.com/{q.id}/{n}.jpg?w=800",
                        label=q.label,
                        query=q.text,
                        host_page_url=f"https://site{n % 331}.example.org/page/{n}",
                        thumbnail_url=f"https://tse.example.net/th?id=OIP.{n:012d}",
                        name=f"image number {n}",
                        image_id=f"{n:040x}",
                        reported_width=800,
                        reported_height=600,
                    )
                    for n in range(first, last)
                ]
                inserted.extend(await cp.add_candidates(chunk, query_id=q.id))
        t1 = time.perf_counter()
        images = out / "images"
        for c in inserted:
            roll = rng.random()
            if roll < stored_share:
                sha = f"{c.id:064x}"
                rel = f"images/{c.label}/{sha[:16]}.jpg"
                (images / c.label).mkdir(parents=True, exist_ok=True)
                (out / rel).touch()
                outcome = Outcome(
                    c, Status.STORED, attempts=1, sha256=sha, phash=rng.getrandbits(64),
                    width=800, height=600, format="jpeg", size=0, path=rel,
                    fetched_at=time.time(),
                )  # fmt: skip
            elif roll < stored_share + 0.15:
                outcome = Outcome(
                    c, Status.DUPLICATE, attempts=1, sha256=f"{c.id:064x}",
                    phash=rng.getrandbits(64), duplicate_of=f"{c.id - 1:064x}", distance=3,
                )  # fmt: skip
            elif roll < stored_share + 0.35:
                outcome = Outcome(
                    c, Status.FAILED, attempts=3, error_class=ErrorClass.TIMEOUT, detail="slow"
                )
            else:
                continue
            cp.record_outcome(outcome)
        await cp.flush()
        t2 = time.perf_counter()
    return {
        "insert_rows_per_s": len(inserted) / (t1 - t0),
        "outcomes_per_s": len(inserted) / (t2 - t1),
    }


async def measure(out: Path) -> dict[str, float]:
    """Time each start-up step on an existing checkpoint."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    cp = await Checkpoint.open(out)
    timings["open"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        report = await cp.recover()
        timings["recover"] = time.perf_counter() - t
        t = time.perf_counter()
        hashes = await cp.stored_hashes()
        timings["stored_hashes"] = time.perf_counter() - t
        t = time.perf_counter()
        arrays = await cp.stored_hash_arrays()
        timings["stored_hash_arrays"] = time.perf_counter() - t
        t = time.perf_counter()
        counts = await cp.stored_counts()
        timings["stored_counts"] = time.perf_counter() - t
        t = time.perf_counter()
        pending = 0
        async for _ in cp.iter_pending():
            pending += 1
        timings["iter_pending_all"] = time.perf_counter() - t
    finally:
        await cp.close()
    timings["startup_total"] = (
        timings["open"] + timings["recover"] + timings["stored_hashes"] + timings["stored_counts"]
    )
    log.info("recovery: %s", report)
    log.info(
        "stored=%d (arrays %d) queries=%d pending=%d",
        len(hashes),
        len(arrays),
        len(counts),
        pending,
    )
    return timings


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stored-share", type=float, default=0.25)
    parser.add_argument("--dir", type=Path, default=None, help="reuse/build the crawl here")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.dir or Path(tempfile.gettempdir()) / f"bingcrawl-resume-bench-{args.rows}"
    if args.rebuild and out.exists():
        shutil.rmtree(out)
    result: dict[str, object] = {"rows": args.rows, "dir": str(out)}
    if not (out / CHECKPOINT_NAME).exists():
        log.info("building %d candidates in %s ...", args.rows, out)
        result["build"] = asyncio.run(build(out, args.rows, args.stored_share))
    result["db_bytes"] = os.path.getsize(out / CHECKPOINT_NAME)
    result["startup"] = asyncio.run(measure(out))
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
