"""Measuring one tool run from the outside: a child process, its CPU, its memory, its output.

Every tool (bingcrawl, the baselines, img2dataset, icrawler) runs as a child process so that
each is billed only for itself: :func:`run_measured` starts the command in its own process
group, samples the process tree's memory from ``/proc`` in a thread, and reaps the child with
``os.wait4``, whose rusage covers the child *and* every descendant it reaped (hash-pool
workers, img2dataset's processes). The emulator is another process; :func:`process_cpu`
reads its CPU time before and after a run so its share can be reported separately.

Peak memory is ``VmHWM``, the high-water mark of the address space that exec created, never
``ru_maxrss``: on Linux a child's ``ru_maxrss`` (from ``wait4``, or its own ``getrusage``)
includes the spawner's memory, carried over exec: its peak (``posix_spawn`` and vfork share
the spawner's address space until exec) or its resident size at the time (fork). A tool
spawned by the harness after it built a 100k-URL list (~120 MB) reported at least that. A
runner that reports its own peak uses :func:`peak_rss_kb`.

Throughput is judged by what landed on disk, the same way for every tool
(:func:`file_timeline`): the number of image files and the first and last modification
times. The steady-state rate is ``(n - 1) / (last - first)``; the wall rate
``n / (exit - spawn)`` also pays for interpreter start-up, imports and tail waits.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGE_EXTENSIONS",
    "ProcessRun",
    "Timeline",
    "file_timeline",
    "peak_rss_kb",
    "process_cpu",
    "run_measured",
    "timeline_of",
    "write_result",
]

#: File extensions counted as stored images in an output directory.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_KB = 1024


@dataclass(frozen=True, slots=True)
class Timeline:
    """When the stored images landed: count and first/last epoch times."""

    count: int
    first: float | None
    last: float | None
    #: Every image's time, sorted (kept by :func:`file_timeline`; empty when not kept).
    times: tuple[float, ...] = ()

    def at_share(self, share: float) -> float | None:
        """When ``share`` (0-1] of the images had landed (None without :attr:`times`)."""
        if not self.times:
            return None
        return self.times[min(len(self.times) - 1, max(0, math.ceil(share * len(self.times)) - 1))]

    def steady_rate(self) -> float | None:
        """Images per second between the first and the last stored image."""
        if self.count < 2 or self.first is None or self.last is None:
            return None
        span = self.last - self.first
        return (self.count - 1) / span if span > 0 else None


@dataclass(slots=True)
class ProcessRun:
    """What :func:`run_measured` observed of one child process (and its descendants)."""

    argv: list[str]
    returncode: int
    started: float  # epoch seconds at spawn
    wall_s: float
    cpu_s: float  # child + reaped descendants, user + system
    peak_rss_mb: float  # the child process itself
    children_peak_rss_mb: float  # the largest descendant (hash worker, img2dataset process)
    tree_peak_rss_mb: float  # the largest sampled sum over the whole tree
    rss_end_mb: float  # the child's RSS at its last sample
    timed_out: bool = False
    stderr_tail: str = ""
    samples: int = 0
    descendants: set[int] = field(default_factory=set)
    #: The child's RSS over time, ``(seconds, MB)``, at most :data:`SERIES_POINTS` points.
    rss_series: list[tuple[float, float]] = field(default_factory=list)


#: Points kept of a run's RSS time series.
SERIES_POINTS = 60


def _downsample(series: list[tuple[float, int]], points: int) -> list[tuple[float, float]]:
    step = max(1, -(-len(series) // points))
    kept = series[::step]
    if series and kept[-1] != series[-1]:
        kept.append(series[-1])
    return [(round(t, 2), round(kb / _PAGE_KB, 1)) for t, kb in kept]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def peak_rss_kb(pid: int | str = "self") -> int:
    """Peak RSS (``VmHWM``, KiB) of a live process's address space since its exec; 0 if
    unknown. Unlike ``getrusage``'s ``ru_maxrss`` it does not include the spawner's peak."""
    return _status_kb(pid).get("VmHWM", 0)


def write_result(path: Path, result: Mapping[str, Any]) -> None:
    """Write a baseline's result file, with its own peak RSS as ``self_maxrss_kb``.

    ``VmHWM``, not ``getrusage``'s ``ru_maxrss``: Linux starts a child's ``ru_maxrss`` at its
    spawner's peak (the harness's), which would hide a smaller tool's own figure.
    """
    path.write_text(json.dumps({**result, "self_maxrss_kb": peak_rss_kb()}) + "\n")


def _status_kb(pid: int | str) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            kids.extend(int(c) for c in text.split())
    return kids


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(_children(current))
    return found


class _MemorySampler(threading.Thread):
    """Samples VmHWM / VmRSS of a process tree until stopped."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(name=f"rss-sampler-{pid}", daemon=True)
        self.pid = pid
        self.interval = interval
        self.stop = threading.Event()
        self.root_hwm_kb = 0
        self.root_rss_kb = 0
        self.child_hwm_kb = 0
        self.tree_kb = 0
        self.samples = 0
        self.descendants: set[int] = set()
        self.series: list[tuple[float, int]] = []  # (seconds since start, child's RSS kB)
        self.started = time.monotonic()

    def sample(self) -> None:
        total = 0
        for pid in _tree(self.pid):
            status = _status_kb(pid)
            if not status:
                continue
            total += status.get("VmRSS", 0)
            if pid == self.pid:
                self.root_hwm_kb = max(self.root_hwm_kb, status.get("VmHWM", 0))
                self.root_rss_kb = status.get("VmRSS", self.root_rss_kb)
                self.series.append((time.monotonic() - self.started, self.root_rss_kb))
            else:
                self.descendants.add(pid)
                self.child_hwm_kb = max(self.child_hwm_kb, status.get("VmHWM", 0))
        self.tree_kb = max(self.tree_kb, total)
        self.samples += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 1800.0,
    interval: float = 0.1,
    stderr_path: Path | None = None,
) -> ProcessRun:
    """Run ``argv`` to completion and measure it (see the module docstring).

    The child runs in a new session so a timeout kills its whole process group. stdout is
    discarded; stderr goes to ``stderr_path`` (its last lines are kept in the result).
    """
    stderr_file = open(stderr_path, "wb") if stderr_path else None  # noqa: SIM115
    try:
        started, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file if stderr_file is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
        sampler = _MemorySampler(proc.pid, interval)
        sampler.start()
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            # wait4, not Popen.wait: its rusage includes every descendant the child reaped.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            sampler.stop.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        # Stray grandchildren (a tool that does not reap its workers) must not outlive the run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if stderr_file is not None:
            stderr_file.close()
    tail = ""
    if stderr_path is not None and stderr_path.exists():
        tail = "\n".join(stderr_path.read_text(errors="replace").splitlines()[-15:])
    # Not wait4's ru_maxrss: it covers reaped descendants and starts from this (harness)
    # process's own peak (see the module docstring). The sampled VmHWM is a high-water mark,
    # so it misses at most the growth of the last interval before exit; a runner that knows
    # better reports its own peak_rss_kb() in its result file (see benchmarks.tools).
    root_peak_kb = sampler.root_hwm_kb
    return ProcessRun(
        argv=list(argv),
        returncode=proc.returncode,
        started=started,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=root_peak_kb / _PAGE_KB,
        children_peak_rss_mb=sampler.child_hwm_kb / _PAGE_KB,
        tree_peak_rss_mb=sampler.tree_kb / _PAGE_KB,
        rss_end_mb=sampler.root_rss_kb / _PAGE_KB,
        timed_out=timed_out.is_set(),
        stderr_tail=tail,
        samples=sampler.samples,
        descendants=sampler.descendants,
        rss_series=_downsample(sampler.series, SERIES_POINTS),
    )


def file_timeline(root: Path, *, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> Timeline:
    """Image files under ``root``: how many, and the first and last modification time."""
    exts = frozenset(extensions)
    times: list[float] = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if os.path.splitext(name)[1].lower() not in exts or name.startswith("."):
                continue
            try:
                mtime = os.stat(os.path.join(dirpath, name)).st_mtime_ns / 1e9
            except OSError:
                continue
            times.append(mtime)
    return timeline_of(times)


def timeline_of(times: Iterable[float]) -> Timeline:
    """The :class:`Timeline` of these epoch times (in any order)."""
    ordered = tuple(sorted(times))
    if not ordered:
        return Timeline(0, None, None)
    return Timeline(len(ordered), ordered[0], ordered[-1], ordered)
