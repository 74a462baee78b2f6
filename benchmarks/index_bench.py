"""Near-duplicate index benchmark: multi-index hashing against a numpy brute-force scan.

    python -m benchmarks.index_bench [--sizes 10000,100000,1000000] [--radius 6]
                                     [--queries 2000] [--seed 0] [--json out.json]

For each size, N random 64-bit hashes are inserted one at a time (as the crawler does) into
:class:`~bingcrawl.dedup.index.HammingIndex` and into the baseline, a growable numpy array
scanned with ``np.bitwise_count``; then the same queries - half a stored hash with 0..radius
bits flipped, half uniformly random - go to both. Reported per structure: inserts/s,
queries/s, per-query latency (median, p99), and the speedup of the index over the scan
(ratio of medians and of throughputs). The answers of both are compared: any mismatch is a
bug and makes the run exit 1. Last, the start-up rebuild at the largest size:
``HammingIndex.build`` from arrays and ``DedupIndex.rebuild`` from (sha256, phash) rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bingcrawl.dedup.index import DedupIndex, HammingIndex


class ScanIndex:
    """The baseline: every query scans all hashes (vectorised), same API as HammingIndex."""

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._ids = np.zeros(1024, dtype=np.int64)
        self._n = 0

    def add(self, h: int, id: int) -> None:
        if self._n == self._hashes.size:
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
            self._ids = np.concatenate([self._ids, np.zeros_like(self._ids)])
        self._hashes[self._n] = h
        self._ids[self._n] = id
        self._n += 1

    def nearest(self, h: int) -> tuple[int, int] | None:
        dist = np.bitwise_count(self._hashes[: self._n] ^ np.uint64(h))
        ok = np.flatnonzero(dist <= self.max_distance)
        if ok.size == 0:
            return None
        d = dist[ok]
        best = int(d.min())
        return int(self._ids[ok[d == best]].min()), best


def make_queries(
    rng: np.random.Generator, hashes: npt.NDArray[np.uint64], radius: int, count: int
) -> list[int]:
    out: list[int] = []
    for i in range(count):
        if i % 2:
            out.append(int(rng.integers(0, 2**64, dtype=np.uint64, endpoint=False)))
            continue
        h = int(hashes[rng.integers(hashes.size)])
        for bit in rng.choice(64, int(rng.integers(0, radius + 1)), replace=False):
            h ^= 1 << int(bit)
        out.append(h)
    return out


def measure(
    index: HammingIndex | ScanIndex, hashes: npt.NDArray[np.uint64], queries: list[int]
) -> tuple[dict[str, float], list[tuple[int, int] | None]]:
    as_ints = hashes.tolist()
    t0 = time.perf_counter()
    for i, h in enumerate(as_ints):
        index.add(h, i)
    insert_s = time.perf_counter() - t0
    latencies = np.empty(len(queries), dtype=np.int64)
    answers: list[tuple[int, int] | None] = []
    t0 = time.perf_counter()
    for k, q in enumerate(queries):
        start = time.perf_counter_ns()
        answers.append(index.nearest(q))
        latencies[k] = time.perf_counter_ns() - start
    query_s = time.perf_counter() - t0
    row = {
        "inserts_per_s": len(as_ints) / insert_s,
        "queries_per_s": len(queries) / query_s,
        "median_us": float(np.median(latencies)) / 1e3,
        "p99_us": float(np.percentile(latencies, 99)) / 1e3,
    }
    return row, answers


def rebuild_times(rng: np.random.Generator, n: int, radius: int) -> dict[str, float]:
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    t0 = time.perf_counter()
    index = HammingIndex.build(hashes, np.arange(n, dtype=np.int64), radius)
    build_s = time.perf_counter() - t0
    rows = [(os.urandom(32).hex(), h) for h in hashes.tolist()]
    t0 = time.perf_counter()
    dedup = DedupIndex.rebuild(rows, radius)
    rebuild_s = time.perf_counter() - t0
    assert len(index) == n
    assert len(dedup) == n
    return {
        "size": n,
        "hamming_build_s": build_s,
        "dedup_rebuild_s": rebuild_s,
        "index_mb": index.nbytes / 1e6,
    }


def dedup_decisions(
    rng: np.random.Generator, n: int, radius: int, decisions: int
) -> dict[str, dict[str, float]]:
    """The crawler's whole decision (:meth:`DedupIndex.check_and_add`) at ``n`` stored
    images, by near-duplicate method: ``whole`` stores one hash per image, ``regions`` two
    (frame and centre, two index queries per decision, each hit confirmed). Per method: the
    median and p99 microseconds of a decision (half new pictures, half near copies) and the
    bytes per stored image (tracemalloc)."""
    frames = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    centres = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    shas = [os.urandom(32).hex() for _ in range(n)]
    # Half new pictures (random hashes), half copies of a stored one (each hash 0..radius
    # bits away from that picture's).
    q_frames, q_centres = [], []
    for i in range(decisions):
        k = int(rng.integers(n))
        pair = [int(frames[k]), int(centres[k])]
        for j in range(2):
            if i % 2:
                pair[j] = int(rng.integers(0, 2**64, dtype=np.uint64, endpoint=False))
                continue
            for bit in rng.choice(64, int(rng.integers(0, radius + 1)), replace=False):
                pair[j] ^= 1 << int(bit)
        q_frames.append(pair[0])
        q_centres.append(pair[1])
    out: dict[str, dict[str, float]] = {}
    for method in ("whole", "regions"):
        centre_of = centres.tolist() if method == "regions" else [None] * n
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        dedup = DedupIndex.rebuild(zip(shas, frames.tolist(), centre_of, strict=True), radius)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        times = []
        for i, (f, c) in enumerate(zip(q_frames, q_centres, strict=True)):
            sha = f"{i:064x}"
            t0 = time.perf_counter()
            dedup.check_and_add(sha, f, c if method == "regions" else None)
            times.append(time.perf_counter() - t0)
        us = np.array(times) * 1e6
        out[method] = {
            "median_us": float(np.median(us)),
            "p99_us": float(np.percentile(us, 99)),
            "bytes_per_image": held / n,
        }
    out["regions"]["median_ratio"] = out["regions"]["median_us"] / out["whole"]["median_us"]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, Any]] = []
    mismatches = 0
    for n in args.sizes:
        hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
        queries = make_queries(rng, hashes, args.radius, args.queries)
        mih, mih_answers = measure(HammingIndex(args.radius), hashes, queries)
        scan, scan_answers = measure(ScanIndex(args.radius), hashes, queries)
        bad = sum(a != b for a, b in zip(mih_answers, scan_answers, strict=True))
        mismatches += bad
        hits = sum(a is not None for a in scan_answers)
        for name, row in (("HammingIndex", mih), ("numpy scan", scan)):
            rows.append({"size": n, "structure": name, "hits": hits, "mismatches": bad, **row})
        rows[-2]["speedup_median"] = scan["median_us"] / mih["median_us"]
        rows[-2]["speedup_throughput"] = mih["queries_per_s"] / scan["queries_per_s"]
    rebuild = rebuild_times(rng, max(args.sizes), args.radius)
    decisions = dedup_decisions(rng, max(args.sizes), args.radius, args.queries)
    return {
        "dedup_decisions": decisions,
        "radius": args.radius,
        "queries": args.queries,
        "rows": rows,
        "rebuild": rebuild,
        "mismatches": mismatches,
    }


def render(result: dict[str, Any]) -> str:
    head = (
        f"{'size':>9}  {'structure':<13} {'inserts/s':>10} {'queries/s':>10} "
        f"{'median us':>10} {'p99 us':>9} {'speedup':>8}"
    )
    lines = [f"radius {result['radius']}, {result['queries']} queries per size", head]
    for r in result["rows"]:
        speedup = f"{r['speedup_median']:7.1f}x" if "speedup_median" in r else ""
        lines.append(
            f"{r['size']:>9}  {r['structure']:<13} {r['inserts_per_s']:>10,.0f} "
            f"{r['queries_per_s']:>10,.0f} {r['median_us']:>10.1f} {r['p99_us']:>9.1f} "
            f"{speedup:>8}"
        )
    rb = result["rebuild"]
    lines.append(
        f"rebuild at {rb['size']:,}: HammingIndex.build {rb['hamming_build_s']:.2f} s, "
        f"DedupIndex.rebuild from rows {rb['dedup_rebuild_s']:.2f} s, "
        f"index arrays {rb['index_mb']:.0f} MB"
    )
    lines.append(f"answers differing from the scan: {result['mismatches']}")
    lines.append(f"DedupIndex.check_and_add at {rb['size']:,} stored images:")
    for method, d in result["dedup_decisions"].items():
        ratio = f" ({d['median_ratio']:.2f}x whole)" if "median_ratio" in d else ""
        lines.append(
            f"  {method:<8} median {d['median_us']:.1f} us{ratio}, p99 {d['p99_us']:.1f} us, "
            f"{d['bytes_per_image']:.0f} bytes per stored image"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10_000, 100_000, 1_000_000],
    )
    p.add_argument("--radius", type=int, default=6)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    result = run(args)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
