"""The benchmark harness: scenarios -> jobs -> emulator processes -> measured rows.

A scenario (``main``, ``concurrency``, ``latency``, ``size``, ``memory``) expands into
:class:`Job` s, each one tool on one URL set of one emulator. Jobs are grouped by emulator so
every emulator process starts once, warms the images its jobs need (so its own rendering does
not bound the measurement), serves them, and stops before the next starts: only one tool
and one emulator run at a time. :func:`run_benchmarks` returns the rows and a summary
(:mod:`benchmarks.report`).

``main``: the target comparison, every tool on the same URLs, repeated (median reported).
``network``: the same kind of comparison on the web as crawls meet it: thousands of host
names (all served by one emulator on loopback, :mod:`benchmarks.hostmap`), each with its own
latency, some hanging, some dripping, some failing; its images/s counts the whole run, the
slowest hosts' tail included, and each row says when 99 % of its images had landed.
img2dataset and icrawler first get a tuning pass over their thread counts; the best count is
then used in every repeat. ``concurrency``, ``latency`` and ``size`` are the curves (bingcrawl
and the bare loop, plus img2dataset at its best count for latency and size). ``memory`` crawls
10k and 100k candidates and reports RSS growth.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.tools import Context, Row, ToolSpec, run_tool
from benchmarks.urlset import EmulatorSpec, UrlSet
from bingcrawl.emulator.cli import parse_format_mix
from bingcrawl.emulator.server import start_emulator_process, stop_emulator_process

__all__ = ["SCENARIOS", "TOOLS", "Job", "Options", "plan", "run_benchmarks"]

log = logging.getLogger("benchmarks")

SCENARIOS = ("main", "network", "concurrency", "latency", "size", "memory")

#: Tool selectors: ``webdataset`` and ``search`` are bingcrawl with that output / source;
#: ``asyncio`` is bingcrawl (files) on asyncio's own loop instead of uvloop (what uvloop buys);
#: ``whole`` is bingcrawl with the one-hash near-duplicate method (what ``regions`` costs);
#: ``careless`` is bingcrawl with ``--ignore all`` (what honouring publishers' opt-outs costs).
TOOLS = ("bingcrawl", "webdataset", "search", "asyncio", "whole", "careless", "bare", "seed",
         "img2dataset", "icrawler")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Options:
    """The knobs of one harness run; :meth:`quick` is the small form CI runs."""

    scenarios: tuple[str, ...] = SCENARIOS
    main_queries: int = 5  # x results_per_query URLs
    results_per_query: int = 1000
    curve_queries: int = 2
    concurrency: int = 128
    concurrency_points: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
    latency_points: tuple[float, ...] = (0.0, 0.05, 0.2)
    # Sized so each set fits the emulator's 256 MB image cache (a miss re-renders: ~50-200 ms).
    size_points: tuple[tuple[str, int], ...] = (("30k", 2000), ("200k", 600), ("1m", 150))
    memory_points: tuple[int, ...] = (10, 100)  # queries of results_per_query candidates
    memory_unique_share: float = 0.2
    memory_concurrency: int = 256
    image_latency: float = 0.05
    api_latency: float = 0.02
    qps: float = 10.0
    format_mix: str = "jpeg"  # the emulator's --format-mix, every scenario
    memory_qps: float = 50.0
    repeats: int = 3
    seed_sample: int = 100
    img2dataset_processes: int = 2
    img2dataset_threads: tuple[int, ...] = (32, 64, 128, 256)
    # The network scenario: URLs over many host names, each host with its own latency
    # (lognormal: median host_latency, 1 % over host_latency_p99), 1 % hanging, 1 % dripping,
    # 3 % errors, 10 KB - 2 MB pictures (the emulator's --network web --image-size web).
    network_queries: int = 6  # x results_per_query URLs
    network_hosts: int = 1200
    network_host_skew: float = 0.5
    host_latency: float = 0.2
    host_latency_p99: float = 5.0
    drip_max: float = 120.0  # the emulator's --drip-max (its default; a real drip may not end)
    network_concurrency: int = 512
    network_per_host: int = 8  # bingcrawl's default: polite to each host
    network_img2dataset_threads: tuple[int, ...] = (128, 256, 512)
    network_img2dataset_timeout: float = 10.0  # img2dataset's own default
    network_cache_mb: int = 3072  # every picture of the set stays rendered
    icrawler_threads: tuple[int, ...] = (16, 32, 64)
    peers_in_curves: bool = True  # img2dataset on the latency and size curves too
    is_quick: bool = False  # the CI form: figures are not measurements
    tools: tuple[str, ...] = TOOLS

    def __post_init__(self) -> None:
        parse_format_mix(self.format_mix)  # a bad mix fails here, naming --format-mix
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
        bad_tools = set(self.tools) - set(TOOLS)
        if bad_tools:
            raise ValueError(f"unknown tools {sorted(bad_tools)}; known: {', '.join(TOOLS)}")

    @classmethod
    def quick(cls, **kw: Any) -> Options:
        """Tiny sizes: every scenario kind and tool, each run on tens of URLs."""
        base: dict[str, Any] = {
            "main_queries": 1,
            "results_per_query": 40,
            "curve_queries": 1,
            "concurrency": 16,
            "concurrency_points": (4, 16),
            "latency_points": (0.0, 0.05),
            "size_points": (("30k", 40), ("200k", 8)),
            "memory_points": (1, 2),
            "memory_concurrency": 16,
            "network_queries": 1,
            "network_hosts": 12,
            "host_latency": 0.01,
            "host_latency_p99": 0.1,
            "drip_max": 2.0,
            "network_concurrency": 16,
            "network_img2dataset_threads": (16,),
            "network_cache_mb": 256,
            "api_latency": 0.0,
            "qps": 50.0,
            "repeats": 1,
            "seed_sample": 4,
            "img2dataset_processes": 1,
            "img2dataset_threads": (16,),
            "icrawler_threads": (8,),
            "peers_in_curves": False,
            "is_quick": True,
        }
        base.update(kw)
        return cls(**base)


@dataclass(frozen=True, slots=True)
class Job:
    """One tool on one URL set, in one scenario (``tune`` jobs pick peers' thread counts)."""

    scenario: str
    point: str
    emulator: EmulatorSpec
    queries: int
    tool: ToolSpec
    repeat: int = 0
    tune: bool = False
    hosts: int = 0  # URLs spread over this many host names (UrlSet.hosts)
    host_skew: float = 0.5

    def reuse_key(self) -> tuple[EmulatorSpec, int, int, ToolSpec] | None:
        """Curve points that are the same run (same emulator, URLs, tool) are run once;
        repeats and tuning runs never are."""
        if self.tune or self.repeat > 0:
            return None
        return self.emulator, self.queries, self.hosts, self.tool


def plan(options: Options) -> list[Job]:
    """Every job of the selected scenarios, in the order they should run."""
    o = options
    main = EmulatorSpec(o.image_latency, o.api_latency, "30k", o.results_per_query, o.qps,
                        format_mix=o.format_mix)  # fmt: skip
    c, tools = o.concurrency, set(o.tools)
    jobs: list[Job] = []
    i2d = ToolSpec("img2dataset", o.img2dataset_threads[0], processes=o.img2dataset_processes)
    i2d_nr = replace(i2d, variant="noreencode")
    icrawler = ToolSpec("icrawler", o.icrawler_threads[0])
    if "main" in o.scenarios:
        tuning = [(i2d, o.img2dataset_threads), (i2d_nr, o.img2dataset_threads),
                  (icrawler, o.icrawler_threads)]  # fmt: skip
        for spec, threads in tuning:
            if spec.kind in tools and len(threads) > 1:
                jobs += [Job("main", "tuning", main, o.main_queries,
                             replace(spec, concurrency=t), tune=True) for t in threads]  # fmt: skip
        candidates = [
            ("bingcrawl", ToolSpec("bingcrawl", c)),
            ("webdataset", ToolSpec("bingcrawl", c, "webdataset")),
            ("search", ToolSpec("bingcrawl", c, source="search")),
            ("asyncio", ToolSpec("bingcrawl", c, event_loop="asyncio")),
            ("whole", ToolSpec("bingcrawl", c, near_dup_method="whole")),
            ("careless", ToolSpec("bingcrawl", c, careless=True)),
            ("bare", ToolSpec("bare", c)),
            ("img2dataset", i2d),
            ("img2dataset", i2d_nr),
            ("icrawler", icrawler),
            ("seed", ToolSpec("seed", 1, sample=o.seed_sample)),
        ]
        for r in range(o.repeats):
            jobs += [Job("main", "target", main, o.main_queries, spec, r)
                     for key, spec in candidates if key in tools]  # fmt: skip
    if "network" in o.scenarios:
        jobs += _network_jobs(o, tools)
    curve = [k for k in ("bingcrawl", "bare") if k in tools]
    peer = [i2d] if "img2dataset" in tools and o.peers_in_curves else []

    def specs(conc: int) -> list[ToolSpec]:
        return [ToolSpec(k, conc) for k in curve]

    if "concurrency" in o.scenarios:
        for conc in o.concurrency_points:
            jobs += [Job("concurrency", f"c={conc}", main, o.curve_queries, s)
                     for s in specs(conc)]  # fmt: skip
    if "latency" in o.scenarios:
        for lat in o.latency_points:
            emu = replace(main, image_latency=lat)
            jobs += [Job("latency", f"{lat * 1000:g} ms", emu, o.curve_queries, s)
                     for s in specs(c) + peer]  # fmt: skip
    if "size" in o.scenarios:
        for size, n in o.size_points:
            if size == "30k":
                emu, queries = main, max(1, n // o.results_per_query)
            else:
                emu, queries = replace(main, image_size=size, results_per_query=n), 1
            jobs += [Job("size", size, emu, queries, s) for s in specs(c) + peer]
    if "memory" in o.scenarios and "bingcrawl" in tools:
        emu = EmulatorSpec(0.0, 0.0, "30k", o.results_per_query, 0.0, o.memory_unique_share,
                           format_mix=o.format_mix)  # fmt: skip
        for queries in o.memory_points:
            n = queries * o.results_per_query
            point = f"{n // 1000}k" if n >= 1000 else str(n)
            # Search, not --urls: a large crawl's memory includes the API path's bookkeeping.
            spec = ToolSpec("bingcrawl", o.memory_concurrency, source="search")
            jobs.append(Job("memory", point, emu, queries, spec))
    return jobs


def _network_jobs(o: Options, tools: set[str]) -> list[Job]:
    """The network scenario: bingcrawl at its defaults for many hosts (``--per-host 8``,
    its retries, ``--resolve``), the bare loop, img2dataset without re-encoding (its fastest
    mode) tuned over its thread counts at its own default timeout (10 s), one shard per
    process."""
    emu = EmulatorSpec(0.0, o.api_latency, "web", o.results_per_query, o.qps,
                       format_mix=o.format_mix, network="web", host_latency=o.host_latency,
                       host_latency_p99=o.host_latency_p99, drip_max=o.drip_max,
                       cache_mb=o.network_cache_mb)  # fmt: skip
    c, q = o.network_concurrency, o.network_queries
    # One shard per process: a shard waits for its slowest download, so more shards would
    # wait for the slowest hosts more often.
    i2d = ToolSpec("img2dataset", o.network_img2dataset_threads[0], "noreencode",
                   processes=o.img2dataset_processes, timeout=o.network_img2dataset_timeout,
                   shards_per_process=1)  # fmt: skip
    polite = ToolSpec("bingcrawl", c, per_host=o.network_per_host, retries=None)
    candidates = [
        ("bingcrawl", polite),
        ("webdataset", replace(polite, variant="webdataset")),
        ("bare", ToolSpec("bare", c, timeout=30.0)),
        ("img2dataset", i2d),
    ]
    base = Job("network", "target", emu, q, i2d, hosts=o.network_hosts,
               host_skew=o.network_host_skew)  # fmt: skip
    jobs: list[Job] = []
    if "img2dataset" in tools and len(o.network_img2dataset_threads) > 1:
        jobs += [replace(base, point="tuning", tool=replace(i2d, concurrency=t), tune=True)
                 for t in o.network_img2dataset_threads]  # fmt: skip
    for r in range(o.repeats):
        jobs += [replace(base, tool=spec, repeat=r) for key, spec in candidates if key in tools]
    return jobs


def _by_emulator(jobs: Sequence[Job]) -> Iterator[tuple[EmulatorSpec, list[Job]]]:
    order: dict[EmulatorSpec, list[Job]] = {}
    for job in jobs:
        order.setdefault(job.emulator, []).append(job)
    yield from order.items()


def _best(rows: Sequence[Row], tool: str, scenario: str) -> int | None:
    """The thread count of the fastest tuning row of ``tool`` in ``scenario``."""
    ok = [r for r in rows if r.tool == tool and r.scenario == scenario and r.status == "ok"
          and r.images_per_s]  # fmt: skip
    if not ok:
        return None
    best = max(ok, key=lambda r: r.images_per_s or 0.0)
    return int(best.extra.get("threads") or 0) or None


def run_benchmarks(
    options: Options,
    *,
    workdir: Path | None = None,
    keep: bool = False,
    peers_python: str | None = None,
    profile_dir: Path | None = None,
    tracemalloc: int = 0,
    child_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run every selected scenario; returns ``{"options", "rows", "summary", ...}``.

    ``workdir`` holds the URL lists and each run's output (kept with ``keep``); with
    ``profile_dir``, bingcrawl runs under py-spy and each row carries a profile summary; with
    ``tracemalloc`` N, bingcrawl's rows carry the N lines holding the most memory;
    ``child_env`` is added to every tool's environment.
    """
    from benchmarks.report import summarize

    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="bingcrawl-bench-")) if workdir is None else workdir
    ctx = Context(
        workdir=root,
        keep=keep,
        profile_dir=profile_dir,
        tracemalloc=tracemalloc,
        env=dict(child_env or {}),
    )
    if peers_python:
        ctx.peers_python = peers_python
    rows: list[Row] = []
    emulators: list[dict[str, Any]] = []
    best_threads: dict[tuple[str, str, str], int] = {}
    done: dict[tuple[EmulatorSpec, int, int, ToolSpec], Row] = {}
    try:
        for emu, jobs in _by_emulator(plan(options)):
            warm = max(j.queries for j in jobs) if emu.unique_share >= 1 else 0
            emu = replace(emu, warm_queries=warm)
            log.info("starting emulator (%s, warm %d queries)", emu.label(), warm)
            proc, base_url = start_emulator_process(emu.args(), timeout=1800.0)
            try:
                ctx.emulator_pid = proc.pid
                ctx.qps = options.memory_qps if jobs[0].scenario == "memory" else options.qps
                url_files: dict[tuple[int, int], tuple[UrlSet, dict[str, Path]]] = {}
                for job in jobs:
                    set_key = (job.queries, job.hosts)
                    if set_key not in url_files:
                        urls = UrlSet(base_url, emu, job.queries, job.hosts, job.host_skew)
                        files = urls.write(
                            root / f"urls-{len(emulators)}-{job.queries}-{job.hosts}"
                        )
                        url_files[set_key] = (urls, files)
                    urls, files = url_files[set_key]
                    tool = job.tool
                    threads = best_threads.get((job.scenario, tool.kind, tool.variant))
                    if not job.tune and threads and tool.kind in ("img2dataset", "icrawler"):
                        tool = replace(tool, concurrency=threads)
                    key = job.reuse_key()
                    if key is not None and key in done:
                        row = replace(done[key], scenario=job.scenario, point=job.point,
                                      extra={**done[key].extra, "reused": True})  # fmt: skip
                    else:
                        row = run_tool(tool, urls, files, ctx, scenario=job.scenario,
                                       point=job.point, repeat=job.repeat)  # fmt: skip
                        if key is not None:
                            done[key] = row
                    rows.append(row)
                    if job.tune:
                        tuned = _best([r for r in rows if r.point == "tuning"], row.tool,
                                      job.scenario)  # fmt: skip
                        if tuned:
                            best_threads[(job.scenario, tool.kind, tool.variant)] = tuned
            finally:
                stop_emulator_process(proc, grace=30.0)
            emulators.append({"spec": emu.label(), "args": emu.args()[:20], "base_url": base_url})
    finally:
        ctx.cleanup()
        if own_dir and not keep:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "options": _options_json(options),
        "child_env": dict(child_env or {}),
        "emulators": emulators,
        "rows": [r.to_json() for r in rows],
        "summary": summarize(rows),
        "best_threads": {
            f"{s}:{k}{'/' + v if v else ''}": t for (s, k, v), t in best_threads.items()
        },
    }


def _options_json(options: Options) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__dataclass_fields__}
