"""The Ray engine against the local engine on this machine, and its shared parts' capacity.

    python -m benchmarks.ray_bench [--queries 20] [--limit 300] [--repeats 3] [--workers 2]
                                   [--image-latency 0.05] [--api-latency 0.02] [--qps 50]
                                   [--concurrency 64] [--json out.json] [--quick]

One emulator process (warmed, with API and image latency) serves every run. The crawls run
in this process, alternating ``--engine local`` and ``--engine ray`` on the same queries (the
same URLs) into fresh output directories; the Ray runtime is started once, before them, and
its start-up is reported apart (a long crawl pays it once). Reported per engine: median
stored images/s over the crawl (opening excluded), the driver's CPU per image (this process
only: what bounds one driver), and the machine's CPU per image (every process, from
/proc/stat); then the overhead of Ray against local (goal: at most 15 % slower with 2
workers on 2 cores).

Then the cluster's shared parts alone:

* **limiter**: grants/s of the one limiter actor (``LimiterActor`` via ``RemoteLimiter``)
  with the QPS set out of the way and 64 callers: the most API calls/s one key's crawl could
  make through it, whatever its ``--qps``;
* **dedup**: decisions/s of the driver's index (``DedupIndex.check_and_add``, exact +
  near at distance 6) holding 1M stored images, fed new hashes;

and a projection of images/s for N nodes (see :func:`projection`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.crawl_bench import bench_config
from bingcrawl.config import CrawlConfig
from bingcrawl.dedup.index import DedupIndex
from bingcrawl.emulator.server import start_emulator_process, stop_emulator_process
from bingcrawl.engine.crawler import Crawler


def _machine_busy() -> float:
    """CPU seconds every process on the machine has used (from /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def _crawl(config: CrawlConfig) -> dict[str, Any]:
    t_open = time.perf_counter()
    async with Crawler(config) as crawler:
        opened = time.perf_counter() - t_open
        cpu0, busy0, t0 = _self_cpu(), _machine_busy(), time.perf_counter()
        report = await crawler.run()
        wall = time.perf_counter() - t0
        cpu, busy = _self_cpu() - cpu0, _machine_busy() - busy0
    stored = report.stored
    return {
        "engine": config.engine,
        "stored": stored,
        "open_s": round(opened, 2),
        "wall_s": round(wall, 2),
        "images_per_s": round(stored / wall, 1),
        "driver_cpu_ms_per_image": round(cpu / max(stored, 1) * 1000, 3),
        "machine_cpu_ms_per_image": round(busy / max(stored, 1) * 1000, 3),
    }


async def limiter_capacity(ray: Any, seconds: float, callers: int = 64) -> float:
    """Grants per second of one limiter actor, its QPS out of the way."""
    from bingcrawl.cluster.engine import RemoteLimiter
    from bingcrawl.cluster.worker import LimiterActor

    handle = ray.remote(LimiterActor).options(num_cpus=0, max_concurrency=100_000).remote(1e9)
    limiter = RemoteLimiter(ray, lambda: handle, 1e9)
    await limiter.acquire()  # (the actor is up)
    granted = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal granted
        while time.perf_counter() < deadline:
            await limiter.acquire()
            granted += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    rate = granted / (time.perf_counter() - t0)
    ray.kill(handle)
    return rate


def dedup_capacity(stored: int, decisions: int, distance: int = 6) -> float:
    """Decisions per second of the driver's index holding ``stored`` images."""
    rng = random.Random(7)
    rows = ((f"{rng.getrandbits(256):064x}", rng.getrandbits(64)) for _ in range(stored))
    index = DedupIndex.rebuild(rows, near_distance=distance)
    new = [(f"{rng.getrandbits(256):064x}", rng.getrandbits(64)) for _ in range(decisions)]
    t0 = time.perf_counter()
    for sha, phash in new:
        index.check_and_add(sha, phash)
    return decisions / (time.perf_counter() - t0)


def projection(
    per_worker: float, driver_cpu_s: float, dedup_rate: float, limiter_rate: float,
    qps: float, results_per_call: float,
) -> list[dict[str, Any]]:  # fmt: skip
    """Images/s for N nodes (one worker per node CPU pair, 2 workers per 4-CPU node), as the
    least of what bounds it:

    * the workers: N nodes x 2 workers x the images/s one worker gave here (downloads and
      hashing scale out; the image hosts and the network are assumed not to be the limit);
    * the driver: one core's worth of its CPU per image (its loop decides, records and
      dispatches for the whole cluster);
    * the dedup index: its decisions/s (a decision per downloaded image);
    * the search API: ``--qps`` x the new images one result page yields.
    """
    rows = []
    for nodes in (1, 2, 4, 8, 16, 32):
        bounds = {
            "workers": nodes * 2 * per_worker,
            "driver": 1.0 / driver_cpu_s if driver_cpu_s > 0 else float("inf"),
            "dedup": dedup_rate,
            "api": min(limiter_rate, qps) * results_per_call,
        }
        bound = min(bounds, key=lambda k: bounds[k])
        rows.append({"nodes": nodes, "images_per_s": round(bounds[bound]), "bound_by": bound})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64, help="per worker, as --concurrency")
    p.add_argument("--api-latency", type=float, default=0.02)
    p.add_argument("--image-latency", type=float, default=0.05)
    p.add_argument("--image-size", default="30k")
    p.add_argument("--qps", type=float, default=50.0)
    p.add_argument("--count", type=int, default=150)
    p.add_argument("--dedup-stored", type=int, default=1_000_000)
    p.add_argument("--project-qps", type=float, default=250.0, help="QPS of the projection")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.queries, args.limit, args.repeats, args.dedup_stored = 4, 100, 1, 20_000

    import ray

    queries = [f"ray bench {i}" for i in range(args.queries)]
    emulator_args = [
        "--qps", str(args.qps * 2), "--api-latency", str(args.api_latency),
        "--image-latency", str(args.image_latency), "--image-size", args.image_size,
        "--results-per-query", str(args.limit * 2), "--fault-rate", "0",
        "--exact-dup-rate", "0", "--near-dup-rate", "0", "--cross-query-rate", "0",
        "--format-mix", "jpeg", "--warm-count", str(args.limit + 10),
    ]  # fmt: skip
    for q in queries:
        emulator_args += ["--warm", q]
    proc, base_url = start_emulator_process(emulator_args, timeout=1800.0)
    t0 = time.perf_counter()
    ray.init(
        namespace="bingcrawl", include_dashboard=False, logging_level=logging.WARNING,
        object_store_memory=128 * 2**20,
    )  # fmt: skip
    ray_start = time.perf_counter() - t0
    root = Path(tempfile.mkdtemp(prefix="bingcrawl-raybench-"))
    runs: list[dict[str, Any]] = []
    try:
        base = bench_config(
            root / "x", queries, base_url, limit=args.limit, qps=args.qps,
            concurrency=args.concurrency, near_dup_distance=6, count=args.count,
        )  # fmt: skip
        for i in range(args.repeats):
            for engine in ("local", "ray"):
                out = root / f"{engine}-{i}"
                config = replace(base, out=out, engine=engine)
                if engine == "ray":
                    config = replace(config, workers=args.workers)
                row = asyncio.run(_crawl(config))
                runs.append(row)
                sys.stderr.write(f"{row}\n")
                shutil.rmtree(out, ignore_errors=True)
        limiter = asyncio.run(limiter_capacity(ray, 3.0 if not args.quick else 1.0))
    finally:
        ray.shutdown()
        stop_emulator_process(proc)
        shutil.rmtree(root, ignore_errors=True)
    dedup = dedup_capacity(args.dedup_stored, 20_000 if args.quick else 200_000)

    def median(engine: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs if r["engine"] == engine))

    local, on_ray = median("local", "images_per_s"), median("ray", "images_per_s")
    per_worker = on_ray / args.workers
    summary = {
        "scenario": f"{args.queries} queries x {args.limit}, images {args.image_latency * 1000:.0f}"
        f" ms, api {args.api_latency * 1000:.0f} ms, {args.workers} workers, "
        f"concurrency {args.concurrency} per worker, {os.cpu_count()} CPUs",
        "ray_start_s": round(ray_start, 2),
        "local_images_per_s": local,
        "ray_images_per_s": on_ray,
        "ray_vs_local": round(on_ray / local, 3),
        "ray_slower_pct": round((1 - on_ray / local) * 100, 1),
        "driver_cpu_ms_per_image": {
            e: median(e, "driver_cpu_ms_per_image") for e in ("local", "ray")
        },
        "machine_cpu_ms_per_image": {
            e: median(e, "machine_cpu_ms_per_image") for e in ("local", "ray")
        },
        "ray_open_s": median("ray", "open_s"),
        "limiter_grants_per_s": round(limiter),
        "dedup_decisions_per_s": round(dedup),
        "dedup_index_size": args.dedup_stored,
        "projection_qps": args.project_qps,
        "projection": projection(
            per_worker,
            median("ray", "driver_cpu_ms_per_image") / 1000,
            dedup,
            limiter,
            args.project_qps,
            args.count * 0.5,  # half of a page new and kept: a typical search's yield
        ),
        "runs": runs,
    }
    for key, value in summary.items():
        if key != "runs":
            sys.stdout.write(f"{key:26} {value}\n")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
