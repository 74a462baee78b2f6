"""The container runs the container tests check: what each did and what it left behind.

:func:`run_scenario` takes one crawler volume through three container starts (stopped,
killed, restarted) and :func:`run_emulator_service` starts, probes and stops the emulator
service; both record what the tests then check, part by part (tests/obs/conftest.py runs each
once for the package). The emulator standing in for the ``emulator`` service runs in the
test's event loop: its request log is ground truth, and an :class:`ImageGate` decides how far
the crawler gets before it is stopped or killed, so nothing waits on a sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.config import safe_label
from bingcrawl.emulator import EmulatorServer
from bingcrawl.store.recovery import TEMP_NAME
from tests.support.container import compose_file, crawler_env, dockerfile_env, seconds
from tests.support.container_process import (
    Container,
    Finished,
    children_of,
    dockerfile_healthcheck,
    emulator_config,
    entrypoint,
    free_port,
    get,
    metrics_logged,
    run_python,
    service_env,
    stopping_logged,
)
from tests.support.crawls import key_of
from tests.support.emulator import Emulators
from tests.support.gate import ImageGate

__all__ = [
    "DOCKER_STOP_TIMEOUT",
    "METRIC_FAMILIES",
    "RELEASED_AFTER_SIGNAL",
    "EmulatorRun",
    "OutView",
    "Scenario",
    "parse_metrics",
    "run_emulator_service",
    "run_scenario",
]

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
    """Read OUT behind the crawler's back: its checkpoint, manifest, temporary files, and
    whether every stored file still has the size and sha256 the checkpoint recorded."""
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        statuses = Counter(r[0] for r in conn.execute("SELECT status FROM candidates"))
        stored = [dict(r) for r in conn.execute("SELECT * FROM candidates WHERE status='stored'")]
        settled = {
            key_of(r[0])
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


async def run_scenario(workdir: Path) -> Scenario:
    """Run the :class:`Scenario` with the volume under ``workdir`` (an empty directory)."""
    compose = compose_file()
    limit = int(crawler_env(compose)["BINGCRAWL_LIMIT"])
    # No more results than the limit, no near or cross-query duplicates and only final
    # faults: whatever order the workers finish in, a clean run stores every good picture
    # exactly once, under its query's label.
    config = emulator_config(
        compose, "--results-per-query", str(limit), "--fault-rate", "0.08",
        "--fault-kinds", FINAL_FAULTS, "--near-dup-rate", "0", "--cross-query-rate", "0",
    )  # fmt: skip
    out = workdir / "data"
    out.mkdir()
    argv = entrypoint(compose["services"]["crawler"]["command"])
    gate = ImageGate()
    async with Emulators() as emulators:
        server = await emulators.start(config, attach=gate.attach)
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


async def run_emulator_service(workdir: Path) -> EmulatorRun:
    """The compose ``emulator`` service's command, on loopback, with its health check, run in
    ``workdir`` (an empty directory)."""
    service = compose_file()["services"]["emulator"]
    command = list(service["command"])
    # loopback instead of 0.0.0.0, and a free port (read back from the first stdout line)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = "0"
    env = {**dockerfile_env(), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    probe = service["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]
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
