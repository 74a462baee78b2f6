"""How each tool is launched on a URL set, and the result row it yields.

A :class:`ToolSpec` names a tool and its settings; :func:`run_tool` starts it as a child
process (see :mod:`benchmarks.measure`), then builds a :class:`Row` from what the process did
(CPU, memory), what landed on disk (count, first and last file), what the emulator spent
meanwhile, and the tool's own result file (loop lag, API calls).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks import hostmap
from benchmarks.hostmap import resolve_value
from benchmarks.measure import (
    ProcessRun,
    Timeline,
    file_timeline,
    process_cpu,
    run_measured,
    timeline_of,
)
from benchmarks.profiling import profiled, summarize
from benchmarks.urlset import UrlSet

__all__ = [
    "PEER_MODULES",
    "TOOL_KINDS",
    "Context",
    "Row",
    "ToolSpec",
    "bingcrawl_features",
    "peer_available",
    "run_tool",
]

log = logging.getLogger("benchmarks")

TOOL_KINDS = ("bingcrawl", "bare", "seed", "img2dataset", "icrawler")

#: The importable module of each optional peer.
PEER_MODULES = {"img2dataset": "img2dataset", "icrawler": "icrawler"}

#: Below this much free disk, finished runs are deleted at once instead of at the end.
_LOW_DISK = 4 * 2**30

_OFFLINE_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations asks PyPI for updates on import
    "WANDB_MODE": "disabled",
    "no_proxy": "127.0.0.1,localhost",
    "NO_PROXY": "127.0.0.1,localhost",
}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool and its settings.

    ``kind`` is one of :data:`TOOL_KINDS`; ``concurrency`` is download concurrency for
    bingcrawl and the bare loop and threads per process for the peers; ``variant`` selects a
    mode (bingcrawl: ``""`` for files or ``webdataset``; img2dataset: ``""`` or
    ``noreencode``); ``source`` is where bingcrawl gets the URLs (``urls``: the URL list file
    every tool reads, ``search``: the search API, whose results are the same URLs);
    ``processes`` is img2dataset's process count; ``sample`` caps the URLs (the seed loop
    runs on a sample); ``event_loop`` forces bingcrawl's ``--event-loop`` (and the bare
    loop's) instead of the default, which takes uvloop when it is installed;
    ``near_dup_method`` forces bingcrawl's ``--near-dup-method``; ``careless`` runs bingcrawl
    with ``--ignore all`` (no robots.txt, tdmrep.json or opt-out headers: what etiquette costs).
    """

    kind: str
    concurrency: int = 128
    variant: str = ""
    source: str = "urls"
    processes: int = 2
    sample: int | None = None
    event_loop: str = ""  # bingcrawl and the bare loop: "" = their default (auto)
    near_dup_method: str = ""  # bingcrawl: "" = its default (regions)
    careless: bool = False  # bingcrawl: --ignore all
    #: bingcrawl's --per-host (0: = concurrency, as on the one-host emulator) and --retries
    #: (None: its default); the peers' request timeout (None: the wrapper's default).
    per_host: int = 0
    retries: int | None = 1
    timeout: float | None = None
    shards_per_process: int = 4  # img2dataset

    @property
    def name(self) -> str:
        """The tool's name in tables (settings excluded)."""
        if self.kind == "bingcrawl" and self.source == "search":
            return "bingcrawl (search API)"
        if self.kind in ("bingcrawl", "bare") and self.event_loop:
            base = "bare aiohttp loop" if self.kind == "bare" else "bingcrawl"
            return f"{base} ({self.event_loop} loop)"
        if self.kind == "bingcrawl" and self.near_dup_method:
            return f"bingcrawl ({self.near_dup_method} dedup)"
        if self.kind == "bingcrawl" and self.careless:
            return "bingcrawl (no etiquette)"
        names = {
            ("bingcrawl", "webdataset"): "bingcrawl (webdataset)",
            ("img2dataset", "noreencode"): "img2dataset (no reencode)",
            ("bare", ""): "bare aiohttp loop",
            ("seed", ""): "seed blog loop",
        }
        return names.get((self.kind, self.variant), self.kind)

    @property
    def settings(self) -> str:
        """The settings in tables."""
        if self.kind == "seed":
            return f"sequential, sample {self.sample}"
        if self.kind == "img2dataset":
            return f"{self.processes} proc x {self.concurrency} thr"
        if self.kind == "icrawler":
            return f"{self.concurrency} thr"
        if self.per_host:
            return f"c={self.concurrency}, per host {self.per_host}"
        return f"c={self.concurrency}"


@dataclass(slots=True)
class Row:
    """One measured run of one tool (``status`` says why a row has no figures)."""

    scenario: str
    point: str
    tool: str
    settings: str
    urls: int
    status: str = "ok"
    repeat: int = 0
    stored: int = 0
    images_per_s: float | None = None  # steady state: first to last stored image (see _fill)
    wall_images_per_s: float | None = None  # stored / (exit - spawn)
    wall_s: float | None = None
    cpu_s_per_image: float | None = None
    emulator_cpu_s_per_image: float | None = None
    emulator_busy: float | None = None  # emulator CPU seconds per wall second (1.0 = a core)
    peak_rss_mb: float | None = None
    children_peak_rss_mb: float | None = None
    tree_peak_rss_mb: float | None = None
    rss_end_mb: float | None = None
    loop_lag_p99_ms: float | None = None
    time_to_first_image_s: float | None = None
    #: Seconds from spawn until 99 % of the images it stored had landed, and from then to
    #: the process's exit (the crawl's tail).
    t99_s: float | None = None
    tail_s: float | None = None
    api_calls: int | None = None
    api_calls_per_s: float | None = None
    qps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, floats rounded."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(slots=True)
class Context:
    """What every run of one harness invocation shares."""

    workdir: Path
    python: str = sys.executable
    peers_python: str = sys.executable
    emulator_pid: int | None = None
    qps: float = 10.0
    keep: bool = False
    timeout: float = 1800.0
    env: dict[str, str] = field(default_factory=dict)
    counter: int = 0
    #: Run bingcrawl under py-spy and keep the raw profiles here (memory figures then
    #: describe py-spy's process tree, so they are not the tool's).
    profile_dir: Path | None = None
    #: Trace bingcrawl's allocations and report the top N lines (0: off; slow).
    tracemalloc: int = 0
    #: Finished runs' directories, deleted by :meth:`cleanup` (see :meth:`discard`).
    finished: list[Path] = field(default_factory=list)

    def discard(self, run_dir: Path) -> None:
        """Mark a finished run's output for deletion at the end of the harness.

        Not now: deleting thousands of files makes ext4 slow to create new ones for the next
        ~30 s (its inode allocator skips recently freed inodes, reading each one's deletion
        time: ``recently_deleted`` was 15 % of all CPU samples in a run that followed a
        deletion), which penalised whichever tool writes one file per image right after
        another tool's output was removed. Only when free disk runs low is it deleted at once.
        """
        if self.keep:
            return
        self.finished.append(run_dir)
        if shutil.disk_usage(self.workdir).free < _LOW_DISK:
            log.warning("low disk: deleting finished runs now (the next may run slower)")
            self.cleanup()

    def cleanup(self) -> None:
        """Delete the finished runs' directories."""
        while self.finished:
            shutil.rmtree(self.finished.pop(), ignore_errors=True)

    def child_env(self) -> dict[str, str]:
        """The environment of tool processes: offline, no proxy for loopback."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BINGCRAWL_")}
        env.update(_OFFLINE_ENV)
        # The children run `-m benchmarks...`: make the package importable from any cwd.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.update(self.env)
        return env

    def next_dir(self, name: str) -> Path:
        """A fresh directory for one run."""
        self.counter += 1
        path = self.workdir / f"{self.counter:03d}-{name.replace(' ', '_').replace('(', '')}"
        path = Path(str(path).replace(")", ""))
        path.mkdir(parents=True)
        return path


@functools.cache
def bingcrawl_features(python: str) -> frozenset[str]:
    """Optional ``bingcrawl crawl`` flags this checkout has (``--urls``, ``--output-format``,
    ...): a harness of this checkout can measure an older one."""
    text = subprocess.run(
        [python, "-m", "bingcrawl", "crawl", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    flags = ("--urls", "--output-format", "--event-loop", "--near-dup-method", "--ignore",
             "--resolve")  # fmt: skip
    return frozenset(flag for flag in flags if flag in text)


@functools.cache
def peer_available(python: str, kind: str) -> bool:
    """True if ``python`` can import the peer (checked without importing it)."""
    module = PEER_MODULES[kind]
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", code], timeout=60, check=False).returncode == 0


def _manifest_timeline(out: Path) -> Timeline:
    path = out / "manifest.jsonl"
    if not path.exists():
        return Timeline(0, None, None)
    return timeline_of(
        datetime.fromisoformat(json.loads(line)["fetched_at"]).timestamp()
        for line in path.read_text().splitlines()
        if line.strip()
    )


def _argv(spec: ToolSpec, urls: UrlSet, files: dict[str, Path], out: Path, result: Path,
          ctx: Context) -> tuple[list[str], str]:  # fmt: skip
    """The command line of one run and the interpreter it needs."""
    n = spec.sample or len(urls)
    if spec.kind == "bingcrawl":
        features = bingcrawl_features(ctx.python)
        if spec.source == "urls" and "--urls" in features:
            crawl = ["crawl", "--urls", str(files["txt"])]
        else:
            # At most the CLI's default of 8 queries paged at once, as a real crawl would.
            active = min(max(1, urls.queries), 8)
            crawl = ["crawl", *urls.query_list, "--limit", str(urls.spec.results_per_query),
                     "--max-active-queries", str(active)]  # fmt: skip
        argv = [
            "-m", "benchmarks.crawlrun", "--result", str(result),
            "--tracemalloc", str(ctx.tracemalloc), "--",
            *crawl,
            "--out", str(out),
            "--key", "bench-key",
            "--endpoint", urls.base_url,
            "--allow-network", "127.0.0.1/32",
            "--qps", repr(ctx.qps),
            "--concurrency", str(spec.concurrency),
            # One emulator is one host: a per-host cap below --concurrency would be the bound.
            "--per-host", str(spec.per_host or spec.concurrency),
            "--no-progress",
            "--log-level", "WARNING",
        ]  # fmt: skip
        if spec.retries is not None:
            argv += ["--retries", str(spec.retries)]
        if urls.hosts and "--resolve" in features:
            argv += ["--resolve", resolve_value(urls.domain)]
        if spec.variant == "webdataset" and "--output-format" in features:
            argv += ["--output-format", "webdataset"]
        if spec.event_loop and "--event-loop" in features:
            argv += ["--event-loop", spec.event_loop]
        if spec.near_dup_method and "--near-dup-method" in features:
            argv += ["--near-dup-method", spec.near_dup_method]
        if spec.careless and "--ignore" in features:
            argv += ["--ignore", "all"]
        return argv, ctx.python
    if spec.kind == "bare":
        return [
            "-m", "benchmarks.baselines.bare_aiohttp", "--urls", str(files["txt"]),
            "--out", str(out), "--concurrency", str(spec.concurrency), "--result", str(result),
            "--event-loop", spec.event_loop or "auto",
            *(["--timeout", repr(spec.timeout)] if spec.timeout else []),
        ], ctx.python  # fmt: skip
    if spec.kind == "seed":
        return [
            "-m", "benchmarks.baselines.seed_blog", "--endpoint", urls.base_url,
            "--query", urls.query_list[0], "--max", str(n), "--out", str(out),
            "--result", str(result),
        ], ctx.python  # fmt: skip
    if spec.kind == "img2dataset":
        argv = [
            "-m", "benchmarks.baselines.img2dataset_run", "--urls", str(files["txt"]),
            "--out", str(out), "--result", str(result), "--processes", str(spec.processes),
            "--threads", str(spec.concurrency),
        ]  # fmt: skip
        if spec.variant == "noreencode":
            argv.append("--disable-all-reencoding")
        if spec.timeout:
            argv += ["--timeout", repr(spec.timeout)]
        if spec.shards_per_process != 4:
            argv += ["--shards-per-process", str(spec.shards_per_process)]
        return argv, ctx.peers_python
    if spec.kind == "icrawler":
        return [
            "-m", "benchmarks.baselines.icrawler_run", "--urls", str(files["txt"]),
            "--out", str(out), "--result", str(result), "--threads", str(spec.concurrency),
        ], ctx.peers_python  # fmt: skip
    raise ValueError(f"unknown tool kind {spec.kind!r}")


def run_tool(
    spec: ToolSpec,
    urls: UrlSet,
    files: dict[str, Path],
    ctx: Context,
    *,
    scenario: str,
    point: str,
    repeat: int = 0,
) -> Row:
    """Run one tool on ``urls`` (files from :meth:`UrlSet.write`) and measure it."""
    n = min(spec.sample or len(urls), len(urls))
    row = Row(scenario, point, spec.name, spec.settings, n, repeat=repeat)
    if spec.kind in PEER_MODULES and not peer_available(ctx.peers_python, spec.kind):
        row.status = f"skipped: {PEER_MODULES[spec.kind]} not installed (bench-peers extra)"
        return row
    if spec.variant == "webdataset" and "--output-format" not in bingcrawl_features(ctx.python):
        row.status = "skipped: this bingcrawl has no --output-format"
        return row
    run_dir = ctx.next_dir(f"{scenario}-{spec.name}")
    out, result_path = run_dir / "out", run_dir / "result.json"
    argv, python = _argv(spec, urls, files, out, result_path, ctx)
    emu0 = process_cpu(ctx.emulator_pid) if ctx.emulator_pid else 0.0
    log.info("%s %s: %s %s on %d URLs", scenario, point, spec.name, spec.settings, n)
    command = [python, *argv]
    profile_path = None
    if ctx.profile_dir is not None and spec.kind == "bingcrawl":
        ctx.profile_dir.mkdir(parents=True, exist_ok=True)
        profile_path = ctx.profile_dir / f"{run_dir.name}.txt"
        command = profiled(command, profile_path)
    env = ctx.child_env()
    if urls.hosts:
        env[hostmap.ENV] = resolve_value(urls.domain)  # the peers' map (the bare loop's too)
    proc = run_measured(
        command,
        env=env,
        timeout=ctx.timeout,
        stderr_path=run_dir / "stderr.txt",
    )
    emu_cpu = (process_cpu(ctx.emulator_pid) - emu0) if ctx.emulator_pid else None
    result: dict[str, Any] = {}
    if result_path.exists():
        result = json.loads(result_path.read_text())
    try:
        _fill(row, spec, proc, result, out, emu_cpu, ctx)
        if profile_path is not None and profile_path.exists():
            row.extra["profile"] = summarize(profile_path, top=12)
            row.extra["profile_path"] = str(profile_path)
    finally:
        ctx.discard(run_dir)
    return row


def settle_rate(row: Row) -> None:
    """Without a steady-state rate (one image, or every image stamped within one tick of a
    coarse file-time clock: no span to divide by), the wall rate stands in, marked as such in
    ``extra["rate_basis"]``; it pays for start-up, so it understates the tool."""
    if row.images_per_s is None and row.wall_images_per_s:
        row.images_per_s = row.wall_images_per_s
        row.extra["rate_basis"] = "wall (no measurable span between first and last image)"


def _fill(row: Row, spec: ToolSpec, proc: ProcessRun, result: dict[str, Any], out: Path,
          emu_cpu: float | None, ctx: Context) -> None:  # fmt: skip
    if proc.timed_out or proc.returncode != 0 or not result:
        why = "timed out" if proc.timed_out else f"exit {proc.returncode}"
        row.status = f"failed: {why}"
        row.extra["stderr_tail"] = proc.stderr_tail
        log.warning("%s failed (%s):\n%s", spec.name, why, proc.stderr_tail)
        if not result:
            return
    timeline = file_timeline(out / "images" if spec.kind == "bingcrawl" else out)
    if spec.kind == "bingcrawl" and spec.source == "urls":
        row.extra["source"] = "urls" if "--urls" in bingcrawl_features(ctx.python) else "search"
    if spec.kind == "bingcrawl" and timeline.count == 0:
        timeline = _manifest_timeline(out)  # shard output: no file per image
    row.stored = timeline.count
    row.wall_s = proc.wall_s
    row.wall_images_per_s = timeline.count / proc.wall_s if proc.wall_s > 0 else None
    row.images_per_s = timeline.steady_rate()
    t99 = timeline.at_share(0.99)
    if t99 is not None:
        row.t99_s = t99 - proc.started
        row.tail_s = max(0.0, proc.started + proc.wall_s - t99)
    if row.scenario == "network":
        # Slow hosts are the point: the rate counts the whole run, tail included.
        row.extra["steady_images_per_s"] = row.images_per_s
        row.images_per_s = row.wall_images_per_s
    if spec.kind == "seed":
        # Extrapolated from the sample: search pages (with their sleeps) plus downloads.
        inner = float(result.get("wall_s") or 0.0)
        row.images_per_s = timeline.count / inner if inner > 0 else None
    settle_rate(row)
    stored = max(timeline.count, 1)
    row.cpu_s_per_image = proc.cpu_s / stored
    if emu_cpu is not None:
        row.emulator_cpu_s_per_image = emu_cpu / stored
        row.emulator_busy = emu_cpu / proc.wall_s if proc.wall_s > 0 else None
    # The runner's own getrusage peak is exact; sampling can miss a peak between samples.
    row.peak_rss_mb = max(proc.peak_rss_mb, float(result.get("self_maxrss_kb") or 0) / 1024)
    if ctx.profile_dir is not None and spec.kind == "bingcrawl":
        row.peak_rss_mb = float(result.get("self_maxrss_kb") or 0) / 1024  # root is py-spy
    row.children_peak_rss_mb = proc.children_peak_rss_mb
    row.tree_peak_rss_mb = proc.tree_peak_rss_mb
    row.rss_end_mb = proc.rss_end_mb
    row.extra["rss_series_mb"] = proc.rss_series
    row.loop_lag_p99_ms = result.get("loop_lag_p99_ms")
    if timeline.first is not None:
        row.time_to_first_image_s = timeline.first - proc.started
    if spec.kind == "bingcrawl":
        run = dict(result.get("stats", {}).get("run", {}))
        if run.get("api_calls"):
            row.api_calls = int(run["api_calls"])
            row.qps = ctx.qps
            row.api_calls_per_s = row.api_calls / proc.wall_s if proc.wall_s > 0 else None
        row.extra.update(
            {
                k: run.get(k)
                for k in ("stored", "duplicates", "near_duplicates", "failed", "api_throttled")
            }
        )
        row.extra["loop_lag_max_ms"] = result.get("loop_lag_max_ms")
        if "tracemalloc" in result:
            row.extra["tracemalloc"] = result["tracemalloc"]
    else:
        row.extra.update({k: v for k, v in result.items() if k not in ("wall_s", "self_maxrss_kb")})
