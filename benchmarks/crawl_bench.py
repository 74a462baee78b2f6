"""One crawl, in this process, against the emulator in a separate process (for profiling).

``python -m benchmarks`` is the benchmark harness (every tool as a child process, baselines,
curves, targets); this script keeps the crawler in the calling process so that an in-process
profiler sees it whole, e.g. ``pyinstrument -m benchmarks.crawl_bench --queries 5 --limit
1000``.

    python -m benchmarks.crawl_bench [--queries 20] [--limit 150] [--api-latency 0.02]
                                     [--image-latency 0.05] [--qps 10] [--concurrency 64]
                                     [--near-dup-distance 8] [--format-mix jpeg]
                                     [--json out.json]

The emulator runs in its own process (so its CPU is not billed to the crawler) with the given
API and image latency; the crawler runs here. Reported: stored images/s, API calls/s against
--qps, client CPU seconds per image (this process plus its hash-pool children), peak RSS of
this process and of the largest hash worker, and event-loop lag p99.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bingcrawl import eventloop
from bingcrawl.config import CrawlConfig, QuerySpec
from bingcrawl.emulator.server import start_emulator_process, stop_emulator_process
from bingcrawl.engine.crawler import Crawler
from bingcrawl.fetch.download import DownloadConfig
from bingcrawl.fetch.netpolicy import NetworkPolicy
from bingcrawl.obs.looplag import monitor_lag


def _cpu() -> float:
    self_ = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


async def _crawl(config: CrawlConfig) -> tuple[dict[str, Any], float, float]:
    async with monitor_lag() as lag, Crawler(config) as crawler:
        report = await crawler.run()
    return report.stats, lag.percentile(99), lag.max


def bench_config(
    out: Path, queries: list[str], base_url: str, *, limit: int, qps: float, concurrency: int,
    near_dup_distance: int, **fields: Any,
) -> CrawlConfig:  # fmt: skip
    """The crawl of a pipeline benchmark: every query at once, the emulator's loopback
    allowed, one download retry; ``fields`` set the rest (e.g. ``engine``)."""
    return CrawlConfig(
        out=out,
        queries=tuple(QuerySpec.of(q) for q in queries),
        key="bench-key",
        endpoint=base_url,
        limit=limit,
        qps=qps,
        max_active_queries=len(queries),
        download=DownloadConfig(
            concurrency=concurrency,
            per_host=concurrency,
            retries=1,
            policy=NetworkPolicy.from_cidrs(["127.0.0.1/32"]),
        ),
        near_dup_distance=near_dup_distance,
        **fields,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the emulator, crawl, measure; returns the result row."""
    emulator_args = [
        "--qps", str(args.qps),
        "--api-latency", str(args.api_latency),
        "--image-latency", str(args.image_latency),
        "--results-per-query", str(args.results_per_query),
        "--fault-rate", str(args.fault_rate),
        "--image-size", args.image_size,
        "--exact-dup-rate", str(args.dup_rate),
        "--near-dup-rate", str(args.dup_rate),
        "--cross-query-rate", str(args.dup_rate),
        "--format-mix", args.format_mix,
    ]  # fmt: skip
    queries = [f"benchmark query {i}" for i in range(args.queries)]
    emulator_args += ["--warm-count", str(int(args.limit * 1.4) + 10)]
    for q in queries:
        emulator_args += ["--warm", q]
    # Warming renders every image first (~5-20 ms each): give it time.
    proc, base_url = start_emulator_process(emulator_args, timeout=1800.0)
    out = Path(tempfile.mkdtemp(prefix="bingcrawl-bench-"))
    try:
        config = bench_config(
            out, queries, base_url, limit=args.limit, qps=args.qps,
            concurrency=args.concurrency, near_dup_distance=args.near_dup_distance,
        )  # fmt: skip
        cpu0, t0 = _cpu(), time.perf_counter()
        stats, lag_p99, lag_max = eventloop.run(_crawl(config), args.event_loop)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        stop_emulator_process(proc)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    run_stats = stats.get("run", stats)
    stored = int(run_stats.get("stored", 0))
    calls = int(run_stats.get("api_calls", 0))
    return {
        "scenario": f"{args.queries}q x limit {args.limit}, api {args.api_latency * 1000:.0f} ms, "
        f"images {args.image_latency * 1000:.0f} ms, dedup d={args.near_dup_distance}",
        "stored": stored,
        "duplicates": run_stats.get("duplicates"),
        "failed": run_stats.get("failed"),
        "wall_s": round(wall, 2),
        "images_per_s": round(stored / wall, 1),
        "api_calls": calls,
        "api_calls_per_s": round(calls / wall, 2),
        "qps": args.qps,
        "cpu_s_per_image": round(cpu / max(stored, 1), 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_child_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
        "loop_lag_p99_ms": round(lag_p99 * 1000, 1),
        "loop_lag_max_ms": round(lag_max * 1000, 1),
        "time_to_first_image_s": run_stats.get("time_to_first_stored_s"),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--limit", type=int, default=150)
    p.add_argument("--results-per-query", type=int, default=1000)
    p.add_argument("--api-latency", type=float, default=0.02)
    p.add_argument("--image-latency", type=float, default=0.05)
    p.add_argument("--image-size", default="30k")
    p.add_argument("--format-mix", default="jpeg", help="the emulator's --format-mix")
    p.add_argument("--event-loop", default="auto", choices=eventloop.EVENT_LOOPS)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--dup-rate", type=float, default=0.0, help="exact, near and cross-query")
    p.add_argument("--qps", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--near-dup-distance", type=int, default=8)
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the output directory")
    args = p.parse_args(argv)
    row = run(args)
    width = max(len(k) for k in row)
    for key, value in row.items():
        sys.stdout.write(f"{key.ljust(width)}  {value}\n")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
