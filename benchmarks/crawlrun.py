"""Child side of a bingcrawl benchmark run: the public API, plus an event-loop lag monitor.

    python -m benchmarks.crawlrun --result FILE -- crawl QUERY ... --out DIR [bingcrawl flags]

The flags after ``--`` are the ``bingcrawl crawl`` flags, parsed by the declarations every
entry point shares (:func:`bingcrawl.options.crawl_parser`) and validated by the same
:func:`bingcrawl.options.build_config`; the crawl then runs as a library user runs one,
``async with bingcrawl.Crawler(config) as crawler: await crawler.run()``, with SIGINT and
SIGTERM calling :meth:`~bingcrawl.Crawler.request_stop` as the command line does. Nothing
of ``bingcrawl.cli`` is imported.
The only addition is :func:`bingcrawl.obs.looplag.monitor_lag` around the run; its cost is
one timer every 10 ms. The result file holds the run's stats and the lag.

``--tracemalloc N`` also traces Python allocations (several times slower: for memory
questions only): every 5 s, when more is allocated than at any earlier check, the N source
lines holding the most memory are recorded; the result keeps the largest such snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.measure import peak_rss_kb

# bingcrawl is imported inside the functions, not here: the hash pool's workers are spawned,
# and a spawned process imports its parent's main module again (a package's __main__, as in
# `python -m bingcrawl`, excepted). Imported here, each worker would load the crawler too:
# measured ~0.1 ms of CPU per image of the main scenario and ~19 MB per worker that a crawl
# started with `python -m bingcrawl` does not pay.

log = logging.getLogger("benchmarks.crawlrun")


def _top_allocations(limit: int) -> list[dict[str, Any]]:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    return [
        {"where": str(stat.traceback[0]), "kib": round(stat.size / 1024, 1), "count": stat.count}
        for stat in snapshot.statistics("lineno")[:limit]
    ]


async def _watch_allocations(limit: int, found: dict[str, Any], interval: float = 5.0) -> None:
    """Every ``interval`` s, if more is traced than ever before, record the top lines."""
    while True:
        await asyncio.sleep(interval)
        current, _ = tracemalloc.get_traced_memory()
        if current > found.get("current", 0):
            found.update(current=current, top=_top_allocations(limit))


async def _crawl(config: Any, trace: int) -> dict[str, Any]:
    import bingcrawl
    from bingcrawl.engine.crawler import STOPS
    from bingcrawl.obs.looplag import monitor_lag

    extra: dict[str, Any] = {}
    found: dict[str, Any] = {}
    watcher = None
    if trace:
        tracemalloc.start()
        watcher = asyncio.create_task(_watch_allocations(trace, found))
    crawler = bingcrawl.Crawler(config)
    loop = asyncio.get_running_loop()
    # Installed before the crawler opens (a signal while it opens stops it cleanly), as the
    # command line does: SIGTERM reports 143, a second signal stops at once.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, crawler.request_stop, signum)
    try:
        async with monitor_lag() as lag, crawler:
            try:
                report = await crawler.run()
            except STOPS:
                assert crawler.report is not None
                report = crawler.report
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if watcher is not None:
        watcher.cancel()
        _, peak = tracemalloc.get_traced_memory()
        extra["tracemalloc"] = {
            "peak_mib": round(peak / 2**20, 1),
            "largest_snapshot_mib": round(found.get("current", 0) / 2**20, 1),
            "top": found.get("top", []),
        }
        tracemalloc.stop()
    if report.error is not None:
        extra["error"] = str(report.error)
    return extra | {
        "exit": report.exit_code,
        "stats": report.stats,
        "loop_lag_p50_ms": round(lag.percentile(50) * 1000, 2),
        "loop_lag_p99_ms": round(lag.percentile(99) * 1000, 2),
        "loop_lag_max_ms": round(lag.max * 1000, 2),
        "lag_samples": len(lag.samples),
    }


def main(argv: list[str] | None = None) -> int:
    """Run one crawl and write ``--result``; returns bingcrawl's exit status."""
    import bingcrawl
    from bingcrawl import eventloop
    from bingcrawl.obs.logs import configure_logging
    from bingcrawl.options import build_config, crawl_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.crawlrun")
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--tracemalloc", type=int, default=0, metavar="N")
    own = p.parse_args(argv[:split])
    crawl_argv = argv[split + 1 :]
    parser = crawl_parser()
    # What the command adds around the crawl options (logging, the loop).
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", default="text")
    parser.add_argument("--event-loop", default="auto")
    args = parser.parse_args(crawl_argv[1:] if crawl_argv[:1] == ["crawl"] else crawl_argv)
    configure_logging(args.log_level, args.log_format)
    t0 = time.time()
    result: dict[str, Any] = {"argv": crawl_argv, "started": t0}
    try:
        config = build_config(args, os.environ, progress=False)
        result["event_loop"] = eventloop.resolve(args.event_loop)
        result.update(eventloop.run(_crawl(config, own.tracemalloc), args.event_loop))
    except bingcrawl.BingCrawlError as exc:
        log.error("crawl failed: %s", exc)
        result["error"] = str(exc)
        result["exit"] = exc.exit_code
    code = int(result["exit"])
    # VmHWM, not ru_maxrss: Linux starts a child's ru_maxrss at its spawner's peak.
    result["self_maxrss_kb"] = peak_rss_kb()
    result["wall_s"] = round(time.time() - t0, 3)
    own.result.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
