"""The ceiling for pure download: one aiohttp session, N workers, GET, read, write a file.

    python -m benchmarks.baselines.bare_aiohttp --urls FILE --out DIR --concurrency N
                                               --result FILE

Nothing else: no per-host limit, no validation, no hashing, no dedup, no checkpoint, no
retries, files named by their index in the list and written straight from the event loop (a ~30
KB write to the page cache costs less than handing it to a thread). Whatever this loop reaches
against the emulator bounds what any client could, so bingcrawl's figure is reported as a share
of it. The event-loop lag is measured the same way as in bingcrawl's run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp

from benchmarks import hostmap
from benchmarks.measure import write_result
from bingcrawl import eventloop
from bingcrawl.fetch.netpolicy import StaticResolver
from bingcrawl.obs.looplag import monitor_lag


async def fetch_all(
    urls: list[str], out: Path, concurrency: int, timeout: float = 60.0
) -> dict[str, int]:
    """Download every URL with ``concurrency`` workers, each request under a total
    ``timeout``; returns ok / failed counts. Names of :data:`benchmarks.hostmap.ENV` connect
    to its addresses (the ``network`` scenario)."""
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(urls):
        queue.put_nowait(item)
    counts = {"ok": 0, "failed": 0}
    pairs = hostmap.pairs_from_env()
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=concurrency,
        resolver=StaticResolver(pairs, aiohttp.DefaultResolver()) if pairs else None,
    )

    async def worker() -> None:
        while True:
            try:
                index, url = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            ext = os.path.splitext(url)[1] or ".bin"
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if not ok:
                counts["failed"] += 1
                continue
            with open(out / f"{index:07d}{ext}", "wb") as fh:
                fh.write(body)
            counts["ok"] += 1

    async with (
        aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as session,
        asyncio.TaskGroup() as tg,
    ):
        for _ in range(min(concurrency, len(urls)) or 1):
            tg.create_task(worker())
    return counts


async def _run(
    urls: list[str], out: Path, concurrency: int, timeout: float
) -> dict[str, object]:
    async with monitor_lag() as lag:
        counts = await fetch_all(urls, out, concurrency, timeout)
    return {
        **counts,
        "loop_lag_p50_ms": round(lag.percentile(50) * 1000, 2),
        "loop_lag_p99_ms": round(lag.percentile(99) * 1000, 2),
        "loop_lag_max_ms": round(lag.max * 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the loop and write the result file."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines.bare_aiohttp")
    p.add_argument("--urls", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=60.0, help="total seconds per request")
    p.add_argument(
        "--event-loop",
        default="auto",
        choices=eventloop.EVENT_LOOPS,
        help="auto (default) is what bingcrawl uses by default, so the ceiling is comparable",
    )
    args = p.parse_args(argv)
    urls = [line.strip() for line in args.urls.read_text().splitlines() if line.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result = eventloop.run(
        _run(urls, args.out, args.concurrency, args.timeout), args.event_loop
    )
    result["event_loop"] = eventloop.resolve(args.event_loop)
    result["wall_s"] = round(time.time() - t0, 3)
    write_result(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
