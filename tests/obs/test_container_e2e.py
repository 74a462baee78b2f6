"""The container, run without Docker: the image's entry point with the environment compose sets.

There is no Docker engine here, so these tests run what the container runs, as it runs it:
``ENTRYPOINT`` + compose ``command`` (``bingcrawl crawl``, the console script the image
installs) with the Dockerfile's ``ENV`` overlaid by the crawler service's ``environment:``
(read from the parsed docker-compose.yml; only the endpoint, the network allowance, ``/data``
and the metrics address are replaced by loopback equivalents), under a stand-in for tini
(:data:`REAPER`): a child subreaper that forwards SIGTERM, reaps what the crawler leaves
behind and reports it.

The emulator standing in for the ``emulator`` service runs in this test's event loop: its
request log is ground truth, and an :class:`ImageGate` decides how far the crawler gets
before it is stopped or killed, so nothing waits on a sleep. The ``emulator`` service's own
entry point and compose health check are run for real as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bingcrawl.cli import build_parser
from bingcrawl.config import safe_label
from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.cli import config_from_args
from bingcrawl.store.recovery import TEMP_NAME
from tests.support.container import ROOT, crawler_env, dockerfile_env, final_stage, seconds

#: PID 1 of the image is ``tini -- bingcrawl``. This stand-in does tini's part: it forwards
#: SIGTERM/SIGINT to its one child, exits with the child's status (128 + N if killed by
#: signal N) and, as a child subreaper, inherits and reaps whatever the child leaves behind.
#: It waits up to ``linger`` seconds for those orphans to exit on their own, then SIGKILLs the
#: rest (the kernel does that to a container when PID 1 exits) and writes a JSON report.
REAPER = r"""
import ctypes, json, os, select, signal, subprocess, sys, time

report, linger, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
child = subprocess.Popen(argv)
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda s, _: child.send_signal(s))
status = child.wait()

def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""

me = os.getpid()
orphans = {}
for task in os.listdir(f"/proc/{me}/task"):
    with open(f"/proc/{me}/task/{task}/children") as fh:
        orphans.update((int(pid), "") for pid in fh.read().split())
orphans = {pid: cmdline(pid) for pid in orphans}
pending = {os.pidfd_open(pid): pid for pid in orphans}
exited, killed = [], []
deadline = time.monotonic() + linger
while pending and (left := deadline - time.monotonic()) > 0:
    for fd in select.select(list(pending), [], [], left)[0]:
        exited.append(pending.pop(fd))
        os.close(fd)
for fd, pid in pending.items():
    signal.pidfd_send_signal(fd, signal.SIGKILL)
    killed.append(pid)
    os.close(fd)
for pid in orphans:
    os.waitpid(pid, 0)
with open(report, "w") as fh:
    json.dump({"status": status, "orphans": orphans, "exited": exited, "killed": killed}, fh)
sys.exit(128 - status if status < 0 else status)
"""

#: What the resumed crawl must stop within: Docker's default stop timeout (``docker stop``).
DOCKER_STOP_TIMEOUT = 10.0
#: The metric families /metrics documents (bingcrawl.obs.metrics), as prometheus_client names
#: them (a counter family drops its ``_total``).
METRIC_FAMILIES = {
    "bingcrawl_api_calls": "counter",
    "bingcrawl_downloads": "counter",
    "bingcrawl_download_errors": "counter",
    "bingcrawl_bytes_downloaded": "counter",
    "bingcrawl_queue_depth": "gauge",
    "bingcrawl_in_flight_requests": "gauge",
    "bingcrawl_images_per_second": "gauge",
    "bingcrawl_queries": "gauge",
    "bingcrawl_seconds_since_progress": "gauge",
    "bingcrawl_up": "gauge",
}

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def compose_file() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML (test extra) parses docker-compose.yml")
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def entrypoint(command: Iterable[str]) -> list[str]:
    """The image's ENTRYPOINT after ``tini --``, resolved like the image's PATH would."""
    stage = dict(final_stage())
    tini, dashes, program, *args = json.loads(stage["ENTRYPOINT"])
    assert (tini, dashes) == ("tini", "--")
    resolved = shutil.which(program, path=str(Path(sys.executable).parent))
    assert resolved, f"the {program!r} console script is not installed"
    return [resolved, *args, *command]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(compose: Mapping[str, Any], endpoint: str, out: Path, port: int) -> dict[str, str]:
    """The crawler container's environment: the image's ENV, then compose's, on loopback."""
    env = {**dockerfile_env(), **crawler_env(compose)}
    loopback = {
        "BING_SEARCH_V7_ENDPOINT": endpoint,
        "BINGCRAWL_ALLOW_NETWORK": "127.0.0.1/32",
        "BINGCRAWL_OUT": str(out),
        "BINGCRAWL_METRICS_HOST": "127.0.0.1",
        "BINGCRAWL_METRICS_PORT": str(port),
    }
    assert loopback.keys() <= env.keys(), "compose no longer sets a variable this test replaces"
    return {**env, **loopback, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


def emulator_config(compose: Mapping[str, Any], *extra: str) -> EmulatorConfig:
    """The compose emulator service's configuration, plus test-only flags."""
    args = build_parser().parse_args([*compose["services"]["emulator"]["command"], *extra])
    return config_from_args(args)


def children_of(pid: int, *, recursive: bool = False) -> dict[int, str]:
    """Live children (or all descendants) of ``pid`` with their command lines, from /proc."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except FileNotFoundError:  # exited meanwhile
                continue
            found[child] = cmd.decode(errors="replace").strip()
            if recursive:
                found.update(children_of(child, recursive=True))
    return found


# -- a container process --------------------------------------------------------------------


@dataclass
class Finished:
    """How a container process ended."""

    code: int
    stderr: list[str]
    stdout: str
    report: dict[str, Any]


@dataclass
class Container:
    """The REAPER running ``argv``: the test's handle on one container start."""

    proc: asyncio.subprocess.Process
    report_path: Path
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls, argv: list[str], env: Mapping[str, str], cwd: Path, *, linger: float = 5.0
    ) -> Container:
        report = cwd.parent / f"reaper-{time.monotonic_ns()}.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", REAPER, str(report), str(linger), *argv,
            env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=1 << 20,
        )  # fmt: skip
        container = cls(proc, report)
        assert proc.stdout is not None
        assert proc.stderr is not None
        container.readers = [
            asyncio.create_task(container._read(proc.stderr, container.stderr)),
            asyncio.create_task(container._read(proc.stdout, container.stdout)),
        ]
        return container

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            async with self.changed:
                into.append(raw.decode(errors="replace").rstrip("\n"))
                self.changed.notify_all()

    def records(self) -> list[dict[str, Any]]:
        """The stderr lines that are JSON log records."""
        return [r for r in map(_json_or_none, self.stderr) if r is not None]

    async def wait_for(
        self, predicate: Callable[[Container], bool], what: str, timeout: float = 60.0
    ) -> None:
        """Wait (event-driven, bounded) until ``predicate`` holds for the output so far."""

        def ready() -> bool:
            return predicate(self) or self.proc.returncode is not None

        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(ready), timeout)
            except TimeoutError:
                pytest.fail(f"no {what} within {timeout} s; stderr: {self.stderr[-5:]}")
        if not predicate(self):
            pytest.fail(f"exited {self.proc.returncode} before {what}; stderr: {self.stderr}")

    def child_pid(self) -> int:
        """The pid of the program PID 1 runs (the crawler or the emulator)."""
        [pid] = children_of(self.proc.pid)
        return pid

    async def finish(self, timeout: float = 60.0) -> Finished:
        """Wait for the exit and collect everything."""
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self.readers)
        report = json.loads(self.report_path.read_text()) if self.report_path.exists() else {}
        return Finished(code, list(self.stderr), "\n".join(self.stdout), report)

    async def kill(self) -> None:
        """Cleanup after a failed test: SIGKILL the child (the REAPER then exits)."""
        if self.proc.returncode is None:
            for pid in children_of(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
            await self.finish()


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def metrics_logged(container: Container) -> bool:
    return any(str(r.get("msg", "")).startswith("metrics on") for r in container.records())


def progress_logged(container: Container) -> bool:
    return any(r.get("logger") == "bingcrawl.progress" for r in container.records())


# -- reading what the crawler left ---------------------------------------------------------


@dataclass(frozen=True)
class OutView:
    """The state of OUT (the /data volume) after a run."""

    integrity: str
    statuses: Counter[str]
    stored: list[dict[str, Any]]
    manifest: list[dict[str, Any]]
    temp_files: list[str]
    bad_files: list[str]
    settled_keys: set[str]


def inspect_out(out: Path) -> OutView:
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        statuses = Counter(r[0] for r in conn.execute("SELECT status FROM candidates"))
        stored = [dict(r) for r in conn.execute("SELECT * FROM candidates WHERE status='stored'")]
        settled = {
            url_key(r[0])
            for r in conn.execute(
                "SELECT url FROM candidates WHERE status IN ('stored', 'duplicate', 'failed')"
            )
        }
    finally:
        conn.close()
    manifest_path = out / "manifest.jsonl"
    manifest = (
        [json.loads(line) for line in manifest_path.read_text().splitlines() if line.strip()]
        if manifest_path.exists()
        else []
    )
    temp = [str(p.relative_to(out)) for p in out.rglob("*") if TEMP_NAME.match(p.name)]
    bad = []
    for row in stored:
        data = (out / row["path"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != row["sha256"] or len(data) != row["bytes"]:
            bad.append(row["path"])
    return OutView(integrity, statuses, stored, manifest, temp, bad, settled)


def url_key(url: str) -> str:
    """The emulator's image key of an image URL."""
    return url.split("/img/", 1)[1]


def pages(server: EmulatorServer) -> list[tuple[str | None, str | None]]:
    """(q, offset) of every search page the emulator answered 200, in order."""
    return [
        (r.params.get("q"), r.params.get("offset"))
        for r in server.state.requests(endpoint="search", status=200)
    ]


def parse_metrics(text: str) -> tuple[dict[str, str], dict[tuple[str, str], float]]:
    """Families (name -> type) and samples ((name, sorted labels) -> value)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, str] = {}
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return families, samples


async def get(url: str) -> tuple[int, str]:
    """GET ``url``: status and body (as text, undecodable bytes replaced)."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, (await resp.read()).decode(errors="replace")


async def run_python(code: str, env: Mapping[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def dockerfile_healthcheck() -> str:
    """The Python code of the image's HEALTHCHECK command."""
    [rest] = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    command = json.loads(rest.partition(" CMD ")[2])
    assert command[:2] == ["python", "-c"]
    return str(command[2])


# -- the emulator's image host, held back on demand -----------------------------------------


class ImageGate:
    """An emulator middleware that holds image requests until the test lets them through.

    It replaces "sleep and hope" with control: the test decides how many images the crawler
    gets before it is stopped or killed, and can wait until the crawler has used them all and
    is waiting for more (a quiet, known state to act in). ``budget`` is how many more image
    requests may pass (``None``: all of them).
    """

    def __init__(self) -> None:
        self.budget: int | None = 0
        self.held = 0
        self.changed = asyncio.Condition()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/img/"):
            async with self.changed:
                self.held += 1
                self.changed.notify_all()
                try:
                    await self.changed.wait_for(lambda: self.budget is None or self.budget > 0)
                finally:
                    self.held -= 1
                if self.budget is not None:
                    self.budget -= 1
                self.changed.notify_all()
        response: web.StreamResponse = await handler(request)
        return response

    async def allow(self, n: int | None) -> None:
        """Let ``n`` more image requests through, then hold them again (``None``: open)."""
        async with self.changed:
            self.budget = None if n is None else (self.budget or 0) + n
            self.changed.notify_all()

    async def reset(self, n: int, timeout: float = 60.0) -> None:
        """Let the requests still held go (their crawler is gone), then allow exactly ``n``."""
        async with self.changed:
            self.budget = None
            self.changed.notify_all()
            await asyncio.wait_for(self.changed.wait_for(lambda: self.held == 0), timeout)
            self.budget = n

    async def exhausted(self, timeout: float = 60.0) -> None:
        """Wait until the budget is spent and the crawler is waiting for more."""
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: self.budget == 0 and self.held > 0), timeout
            )


# -- crawler service: metrics, SIGTERM, SIGKILL, resume ------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One crawler volume through three container starts.

    1. started, scraped twice, stopped with SIGTERM (``docker compose stop``);
    2. started again, SIGKILLed mid-crawl (an OOM kill: compose restarts it, on-failure);
    3. started again: runs to the end.
    """

    env: dict[str, str]
    truth: set[tuple[str, str]]
    scrapes: list[str]
    healthz: tuple[int, str]
    healthcheck: tuple[int, str]
    pool: dict[int, str]
    stop_seconds: float
    stopped: Finished
    after_stop: OutView
    fetched_at_signal: Counter[str]
    fetched_before_stop: Counter[str]
    pages_before_stop: list[tuple[str | None, str | None]]
    killed: Finished
    completed: Finished
    final: OutView
    pages: list[tuple[str | None, str | None]]
    fetched: Counter[str]


#: Image requests held at the signal that the emulator lets through while the crawler stops.
RELEASED_AFTER_SIGNAL = 4

#: Faults that fail for good, at once: the set of pictures a clean crawl stores is then known.
FINAL_FAULTS = "http_404,truncated_image,html_as_jpeg,random_bytes"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Run the scenario once; the tests below each check one part of it."""
    compose = compose_file()
    limit = int(crawler_env(compose)["BINGCRAWL_LIMIT"])
    # No more results than the limit, no near or cross-query duplicates and only final
    # faults: whatever order the workers finish in, a clean run stores every good picture
    # exactly once, under its query's label.
    config = emulator_config(
        compose, "--results-per-query", str(limit), "--fault-rate", "0.08",
        "--fault-kinds", FINAL_FAULTS, "--near-dup-rate", "0", "--cross-query-rate", "0",
    )  # fmt: skip
    out = tmp_path_factory.mktemp("container") / "data"
    out.mkdir()
    argv = entrypoint(compose["services"]["crawler"]["command"])
    gate = ImageGate()
    server = EmulatorServer(config)
    server.app.middlewares.append(gate.middleware)
    async with server:
        env = service_env(compose, server.base_url, out, free_port())
        metrics = f"http://127.0.0.1:{env['BINGCRAWL_METRICS_PORT']}/"

        # 1. scraped while it runs, then `docker compose stop`
        container = await Container.start(argv, env, out)
        try:
            await container.wait_for(metrics_logged, "metrics server")
            scrapes = [(await get(metrics + "metrics"))[1]]  # no image served yet
            await gate.allow(40)
            # meanwhile, the ground truth is rendered (which warms the emulator's image cache)
            healthz, healthcheck, truth, _ = await asyncio.gather(
                get(metrics + "healthz"),
                run_python(dockerfile_healthcheck(), env),
                asyncio.to_thread(clean_run_dataset, server, env["BINGCRAWL_QUERIES"]),
                gate.exhausted(),
            )
            scrapes.append(await scrape_once_stored(metrics + "metrics"))
            pool = children_of(container.child_pid(), recursive=True)
            fetched_at_signal = Counter(server.image_host.requests)
            sent = time.monotonic()
            container.proc.send_signal(signal.SIGTERM)  # what `docker stop` sends PID 1
            await container.wait_for(stopping_logged, "stop message", timeout=30)
            # Some downloads in flight at the signal complete; the rest hang until the
            # crawler's --grace runs out (a slow host): the worst case for `docker stop`.
            # The first progress line (5 s after the crawl started) comes before that.
            await gate.allow(RELEASED_AFTER_SIGNAL)
            stopped = await container.finish(timeout=30)
            stop_seconds = time.monotonic() - sent
        finally:
            await container.kill()
        after_stop = inspect_out(out)
        fetched_before_stop = Counter(server.image_host.requests)
        pages_before_stop = pages(server)

        # 2. `docker compose up` again; SIGKILLed mid-crawl (PID 1 exits with it at once)
        await gate.reset(30)
        container = await Container.start(argv, env, out, linger=0.0)
        try:
            await gate.exhausted()
            os.kill(container.child_pid(), signal.SIGKILL)
            killed = await container.finish()
        finally:
            await container.kill()

        # 3. compose's restart: the same environment, to the end
        await gate.allow(None)
        container = await Container.start(argv, env, out)
        try:
            completed = await container.finish(timeout=90)
        finally:
            await container.kill()
        return Scenario(
            env=env,
            truth=truth,
            scrapes=scrapes,
            healthz=healthz,
            healthcheck=healthcheck,
            pool=pool,
            stop_seconds=stop_seconds,
            stopped=stopped,
            after_stop=after_stop,
            fetched_at_signal=fetched_at_signal,
            fetched_before_stop=fetched_before_stop,
            pages_before_stop=pages_before_stop,
            killed=killed,
            completed=completed,
            final=inspect_out(out),
            pages=pages(server),
            fetched=Counter(server.image_host.requests),
        )


async def scrape_once_stored(url: str, timeout: float = 60.0) -> str:
    """The first scrape of ``url`` that shows a stored image (bounded polling)."""
    deadline = time.monotonic() + timeout
    while True:
        text = (await get(url))[1]
        _, samples = parse_metrics(text)
        if samples[("bingcrawl_downloads_total", "outcome=stored")] > 0:
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"nothing stored within {timeout} s")
        await asyncio.sleep(0.05)


def clean_run_dataset(server: EmulatorServer, queries: str) -> set[tuple[str, str]]:
    """(label, sha256) of every picture a clean crawl of ``queries`` stores."""
    return {
        (safe_label(q), hashlib.sha256(server.corpus.image_bytes(spec)).hexdigest())
        for q in queries.split(";")
        for spec in server.corpus.query_results(q)
        if spec.fault is None
    }


def stopping_logged(container: Container) -> bool:
    return any("signal 15" in str(r.get("msg")) for r in container.records())


def test_metrics_scraped_during_the_crawl_parse_and_grow(scenario: Scenario) -> None:
    first, second = (parse_metrics(text) for text in scenario.scrapes)
    families, samples = second
    for name, kind in METRIC_FAMILIES.items():
        assert families.get(name) == kind, name
    assert samples[("bingcrawl_up", "")] == 1
    stored = ("bingcrawl_downloads_total", "outcome=stored")
    nbytes = ("bingcrawl_bytes_downloaded_total", "")
    assert first[1][stored] == 0
    assert second[1][stored] > 0
    assert second[1][nbytes] > first[1][nbytes]
    assert samples[("bingcrawl_api_calls_total", "endpoint=search,status=200")] >= 1
    assert samples[("bingcrawl_queries", "state=active")] >= 1
    assert samples[("bingcrawl_in_flight_requests", "")] >= 1  # held at the gate


def test_health_endpoint_and_image_healthcheck_pass_while_crawling(scenario: Scenario) -> None:
    status, body = scenario.healthz
    assert status == 200, body
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["state"] in ("starting", "running")
    code, out = scenario.healthcheck
    assert code == 0, out
    assert out.startswith("healthy: http://127.0.0.1:")


def test_progress_is_logged_periodically_without_a_tty(scenario: Scenario) -> None:
    records = [r for r in map(_json_or_none, scenario.stopped.stderr) if r is not None]
    progress = [r for r in records if r.get("logger") == "bingcrawl.progress"]
    # the first line comes 5 s after the crawl started, before the 5 s --grace of the stop
    assert progress, "no progress line while the crawler ran without a TTY"
    assert all("stored" in r["msg"] for r in progress)


def test_sigterm_exits_143_within_dockers_stop_timeout(scenario: Scenario) -> None:
    stopped = scenario.stopped
    assert stopped.code == 143, stopped.stderr[-5:]
    # 143 returned by the crawler after its checkpoint, not a death by the signal itself
    assert stopped.report["status"] == 143
    assert scenario.stop_seconds < DOCKER_STOP_TIMEOUT, scenario.stop_seconds


def test_checkpoint_is_consistent_after_sigterm(scenario: Scenario) -> None:
    view = scenario.after_stop
    assert view.integrity == "ok"
    assert view.statuses["inflight"] == 0
    assert view.temp_files == []
    assert view.bad_files == []
    # the manifest is rewritten at the end of every run, interrupted ones included
    assert sorted(r["path"] for r in view.manifest) == sorted(r["path"] for r in view.stored)
    assert 0 < len(view.stored) < len(scenario.truth), "the SIGTERM did not land mid-crawl"
    # every picture served, before the signal or while stopping, was checkpointed
    assert set(scenario.fetched_before_stop) <= view.settled_keys
    after_signal = set(scenario.fetched_before_stop) - set(scenario.fetched_at_signal)
    assert len(after_signal) == RELEASED_AFTER_SIGNAL


def test_hash_pool_leaves_no_orphans_or_zombies(scenario: Scenario) -> None:
    pool = scenario.pool  # every process below the crawler while it ran
    helpers = {pid for pid, cmd in pool.items() if "resource_tracker" in cmd or "forkserver" in cmd}
    workers = {pid for pid, cmd in pool.items() if "multiprocessing" in cmd} - helpers
    assert workers, pool  # the hash pool (default --hash-workers: the CPU count)
    report = scenario.stopped.report
    orphans = {int(pid) for pid in report["orphans"]}
    # The crawler shut its hash pool down and reaped the workers itself; only
    # multiprocessing's helper processes (they exit when their parent's pipe closes)
    # outlive it, briefly, for PID 1 to reap.
    assert not workers & orphans, report
    assert orphans <= helpers, report
    assert report["killed"] == [], "orphans did not exit on their own"
    assert all(not Path(f"/proc/{pid}").exists() for pid in pool)


def test_sigkilled_crawler_exits_so_that_compose_restarts_it(scenario: Scenario) -> None:
    policy, _, retries = compose_file()["services"]["crawler"]["restart"].partition(":")
    assert policy == "on-failure"
    assert int(retries or 1) >= 1
    killed = scenario.killed
    assert killed.report["status"] == -signal.SIGKILL
    assert killed.code == 137  # non-zero: `restart: on-failure` starts it again


def test_restarted_crawl_completes_a_clean_runs_dataset(scenario: Scenario) -> None:
    completed = scenario.completed
    assert completed.code == 0, completed.stderr[-5:]
    assert "stored" in completed.stdout  # the summary
    view = scenario.final
    assert view.integrity == "ok"
    assert view.temp_files == []
    assert view.bad_files == []
    assert view.statuses["inflight"] == view.statuses["pending"] == 0
    assert {(r["label"], r["sha256"]) for r in view.manifest} == scenario.truth
    assert len(view.manifest) == len(scenario.truth)
    assert sorted(r["path"] for r in view.manifest) == sorted(r["path"] for r in view.stored)
    assert completed.report["killed"] == []


def test_resumed_runs_repeat_no_page_and_no_stored_download(scenario: Scenario) -> None:
    before = scenario.pages_before_stop
    assert before
    assert len(before) == len(set(before)), "a page was requested twice"
    # (a page the SIGKILLed run fetched may legitimately be fetched again: not checked)
    assert set(scenario.pages[len(before) :]).isdisjoint(before)
    for row in scenario.after_stop.stored:
        key = url_key(row["url"])
        assert scenario.fetched[key] == scenario.fetched_before_stop[key], row["url"]


def test_json_logs_carry_context_and_never_the_key(scenario: Scenario) -> None:
    key = scenario.env["BING_SEARCH_V7_SUBSCRIPTION_KEY"]
    run_ids = []
    for run in (scenario.stopped, scenario.completed):
        records = [r for r in map(_json_or_none, run.stderr) if r is not None]
        assert records
        for record in records:
            assert {"ts", "level", "logger", "msg"} <= record.keys(), record
        ids = {r["run_id"] for r in records if r["logger"] == "bingcrawl.progress"}
        run_ids.append(ids)
        assert key not in "\n".join([*run.stderr, run.stdout])
    assert all(len(ids) <= 1 for ids in run_ids)


def test_every_stderr_line_is_a_json_record_with_the_run_id(scenario: Scenario) -> None:
    for run in (scenario.stopped, scenario.completed):
        ids = set()
        for line in filter(None, run.stderr):
            record = _json_or_none(line)
            assert record is not None, f"not a JSON log line: {line!r}"
            assert record.get("run_id"), f"no run_id: {line!r}"
            ids.add(record["run_id"])
        assert len(ids) == 1


# -- emulator service ----------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorRun:
    """The emulator service's container: probed, used, stopped, probed again."""

    stop_grace_period: float
    healthy: tuple[int, str]
    thumbnail: int
    stop_seconds: float
    stopped: Finished
    unhealthy: tuple[int, str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def emulator_run(tmp_path_factory: pytest.TempPathFactory) -> EmulatorRun:
    """The compose ``emulator`` service's command, on loopback, with its health check."""
    service = compose_file()["services"]["emulator"]
    command = list(service["command"])
    # loopback instead of 0.0.0.0, and a free port (read back from the first stdout line)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = "0"
    env = {**dockerfile_env(), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    probe = service["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]
    workdir = tmp_path_factory.mktemp("emulator")
    container = await Container.start(entrypoint(command), env, workdir)
    try:
        await container.wait_for(
            lambda c: any(line.startswith("listening on ") for line in c.stdout), "listening line"
        )
        base_url = container.stdout[0].removeprefix("listening on ").strip()
        port = base_url.rstrip("/").rsplit(":", 1)[1]
        code = probe[3].replace(":8000/", f":{port}/")
        assert code != probe[3]
        healthy = await run_python(code, env)
        thumbnail, _ = await get(f"{base_url}th?q=red+panda")
        sent = time.monotonic()
        container.proc.send_signal(signal.SIGTERM)  # `docker compose stop`
        stopped = await container.finish(timeout=30)
        stop_seconds = time.monotonic() - sent
    finally:
        await container.kill()
    # what `depends_on: condition: service_healthy` would see once it is gone
    unhealthy = await run_python(code, env)
    return EmulatorRun(
        seconds(service["stop_grace_period"]), healthy, thumbnail, stop_seconds, stopped, unhealthy
    )


def test_emulator_service_passes_its_healthcheck_and_stops_on_sigterm(
    emulator_run: EmulatorRun,
) -> None:
    code, out = emulator_run.healthy
    assert code == 0, out
    assert out.startswith("healthy")
    assert emulator_run.thumbnail == 200
    assert emulator_run.stopped.code == 0, emulator_run.stopped.stderr
    assert emulator_run.stopped.report["orphans"] == {}
    assert emulator_run.stop_seconds < emulator_run.stop_grace_period
    code, out = emulator_run.unhealthy
    assert code == 1
    assert out.startswith("unhealthy")


def test_emulator_service_logs_json_as_the_image_sets(emulator_run: EmulatorRun) -> None:
    lines = [line for line in emulator_run.stopped.stderr if line]
    assert lines
    for line in lines:
        record = _json_or_none(line)
        assert record is not None, f"not a JSON log line: {line!r}"
        assert record["logger"].startswith("bingcrawl")
