"""Prometheus metrics and a health endpoint for a running crawl.

The server knows nothing about the crawler: it asks a :class:`MetricsSource` (anything with a
``metrics_snapshot()`` method, the Crawler in production, a fake in tests) for an immutable
:class:`MetricsSnapshot` on every scrape, and renders it by hand in the Prometheus text
format 0.0.4, so prometheus_client stays an optional extra.

Endpoints of :class:`MetricsServer`:

``/metrics``
    ``bingcrawl_api_calls_total{endpoint,status}``, ``bingcrawl_downloads_total{outcome}``,
    ``bingcrawl_download_errors_total{error_class}``, ``bingcrawl_bytes_downloaded_total``,
    ``bingcrawl_queue_depth``, ``bingcrawl_in_flight_requests``,
    ``bingcrawl_images_per_second``, ``bingcrawl_queries{state}``,
    ``bingcrawl_seconds_since_progress`` and ``bingcrawl_up``.
``/healthz``
    200 ``{"status": "ok", "state": ..., "stored": ..., ...}``; 503 with ``"status":
    "stalled"`` once the crawl has made no progress for ``stall_after`` seconds (a finished
    crawl, state ``done``, is never stalled).

The container's HEALTHCHECK runs :func:`probe_main` (``python -c "from bingcrawl.obs.metrics
import probe_main; raise SystemExit(probe_main())"``): exit 0 when /healthz answers 200.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from aiohttp import web

from bingcrawl.errors import ConfigError
from bingcrawl.records import QUERY_STATES

__all__ = [
    "API_ENDPOINTS",
    "CONTENT_TYPE",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_STALL_AFTER",
    "OUTCOMES",
    "QUERY_STATES",
    "MetricsServer",
    "MetricsSnapshot",
    "MetricsSource",
    "RateWindow",
    "health",
    "probe",
    "probe_main",
    "render_metrics",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_METRICS_PORT = 9100
#: Longer than the longest legitimate pause (a capped 300 s Retry-After), so a throttled
#: crawl is not reported as stalled.
DEFAULT_STALL_AFTER = 600.0

#: Label values always exported (at 0 if absent), so dashboards and rate() see every series
#: from the first scrape on.
OUTCOMES: tuple[str, ...] = ("stored", "duplicate", "failed", "skipped")
API_ENDPOINTS: tuple[str, ...] = ("search", "details", "trending", "visualsearch")


def _frozen(mapping: Mapping[Any, int]) -> Mapping[Any, int]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A consistent, immutable copy of a crawl's live counters (counts since the run began).

    ``api_calls`` maps ``(endpoint, http_status)`` to a count; ``outcomes`` maps an outcome
    (``stored``, ``duplicate``, ``failed``, ``skipped``) to a count; ``errors`` maps a download
    error class to a count; ``queries`` maps a query state to how many queries are in it.
    ``last_progress`` is the ``time.monotonic()`` of the last stored image, outcome or API
    page; ``state`` is ``starting``, ``running``, ``stopping`` or ``done``. The mappings are
    copied, so a source may pass its live counters.
    """

    api_calls: Mapping[tuple[str, int], int] = field(default_factory=dict)
    outcomes: Mapping[str, int] = field(default_factory=dict)
    errors: Mapping[str, int] = field(default_factory=dict)
    bytes: int = 0
    queue_depth: int = 0
    in_flight: int = 0
    images_per_s: float = 0.0
    queries: Mapping[str, int] = field(default_factory=dict)
    last_progress: float = 0.0
    state: str = "running"

    def __post_init__(self) -> None:
        for name in ("api_calls", "outcomes", "errors", "queries"):
            mapping: Mapping[Any, int] = getattr(self, name)
            if any(v < 0 for v in mapping.values()):
                raise ValueError(f"MetricsSnapshot.{name}: counts must be >= 0")
            object.__setattr__(self, name, _frozen(mapping))
        for name in ("bytes", "queue_depth", "in_flight"):
            if getattr(self, name) < 0:
                raise ValueError(f"MetricsSnapshot.{name}: must be >= 0")
        if not self.images_per_s >= 0:
            raise ValueError("MetricsSnapshot.images_per_s: must be >= 0")

    @property
    def stored(self) -> int:
        """Images stored so far in this run."""
        return self.outcomes.get("stored", 0)


@runtime_checkable
class MetricsSource(Protocol):
    """Anything that can report its counters; the Crawler implements it."""

    def metrics_snapshot(self) -> MetricsSnapshot:
        """A fresh snapshot; called on every scrape, on the event loop: keep it cheap."""
        ...


class RateWindow:
    """Events per second over the last ``window`` seconds (for ``images_per_s``).

    Counts are kept in one-second buckets, so memory is bounded by the window whatever the
    rate. ``clock`` is injectable so tests can step time instead of sleeping.
    """

    def __init__(
        self, window: float = 30.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not window >= 1.0:
            raise ValueError("RateWindow.window: must be >= 1 second")
        self.window = window
        self._clock = clock
        self._started = clock()
        self._buckets: deque[list[int]] = deque()  # [second, count], oldest first

    def add(self, n: int = 1) -> None:
        """Record ``n`` events now."""
        second = math.floor(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, n])
        self._expire(second)

    def rate(self) -> float:
        """Events per second over the window (over the time elapsed, while shorter)."""
        now = self._clock()
        self._expire(math.floor(now))
        span = min(self.window, max(now - self._started, 1.0))
        return sum(count for _, count in self._buckets) / span

    def _expire(self, second: int) -> None:
        horizon = second - self.window
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()


# -- exposition ---------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Sequence[tuple[Mapping[str, str], float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                self.lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _with_known(mapping: Mapping[str, int], known: Sequence[str]) -> list[tuple[str, int]]:
    merged = dict.fromkeys(known, 0)
    merged.update(mapping)
    return sorted(merged.items())


def render_metrics(snapshot: MetricsSnapshot, *, now: float | None = None) -> str:
    """The snapshot in the Prometheus text format 0.0.4 (``now``: monotonic seconds)."""
    now = time.monotonic() if now is None else now
    out = _Exposition()
    api = {(e, str(s)): n for (e, s), n in snapshot.api_calls.items()}
    out.family(
        "bingcrawl_api_calls_total",
        "counter",
        "Search API calls by endpoint and HTTP status.",
        [({"endpoint": e, "status": s}, n) for (e, s), n in sorted(api.items())],
    )
    out.family(
        "bingcrawl_downloads_total",
        "counter",
        "Candidates settled, by outcome.",
        [({"outcome": k}, n) for k, n in _with_known(snapshot.outcomes, OUTCOMES)],
    )
    out.family(
        "bingcrawl_download_errors_total",
        "counter",
        "Failed candidates by error class.",
        [({"error_class": k}, n) for k, n in sorted(snapshot.errors.items())],
    )
    out.family(
        "bingcrawl_bytes_downloaded_total",
        "counter",
        "Image bytes downloaded.",
        [({}, snapshot.bytes)],
    )
    out.family(
        "bingcrawl_queue_depth", "gauge", "Candidates waiting in the frontier.",
        [({}, snapshot.queue_depth)],
    )
    out.family(
        "bingcrawl_in_flight_requests", "gauge", "Downloads in progress.",
        [({}, snapshot.in_flight)],
    )
    out.family(
        "bingcrawl_images_per_second", "gauge", "Images stored per second, recent window.",
        [({}, float(snapshot.images_per_s))],
    )
    out.family(
        "bingcrawl_queries", "gauge", "Queries by state.",
        [({"state": k}, n) for k, n in _with_known(snapshot.queries, QUERY_STATES)],
    )
    out.family(
        "bingcrawl_seconds_since_progress", "gauge", "Seconds since the crawl last progressed.",
        [({}, max(0.0, now - snapshot.last_progress))],
    )
    out.family("bingcrawl_up", "gauge", "1 while the crawl process serves metrics.", [({}, 1)])
    return out.text()


def health(
    snapshot: MetricsSnapshot, *, now: float, stall_after: float, wall_now: float | None = None
) -> tuple[int, dict[str, Any]]:
    """The /healthz answer: (HTTP status, JSON body). 503 once progress is ``stall_after`` old."""
    age = max(0.0, now - snapshot.last_progress)
    stalled = snapshot.state != "done" and age > stall_after
    wall = time.time() if wall_now is None else wall_now
    body = {
        "status": "stalled" if stalled else "ok",
        "state": snapshot.state,
        "stored": snapshot.stored,
        "last_progress_age_s": round(age, 3),
        "last_progress_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall - age)),
        "stall_after_s": stall_after,
    }
    return (503 if stalled else 200), body


# -- the server ---------------------------------------------------------------------------


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` for ``source`` on ``host:port`` (0: a free port).

    An async context manager; bind to 127.0.0.1 unless the metrics must be reachable from
    elsewhere (``0.0.0.0`` in a container). Closing twice is harmless; reopening is refused.
    """

    def __init__(
        self,
        source: MetricsSource,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        stall_after: float = DEFAULT_STALL_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError("--metrics-port", f"must be 0..65535, got {port}")
        if not (stall_after > 0 and math.isfinite(stall_after)):
            raise ConfigError(
                "--stall-after", f"must be a finite number of seconds > 0, got {stall_after}"
            )
        self.source = source
        self.host = host
        self.stall_after = stall_after
        self._requested_port = port
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._state = "new"

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<MetricsServer {where}>"

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None:
            raise RuntimeError("the MetricsServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL to reach the server from this host (``http://127.0.0.1:PORT/`` for 0.0.0.0)."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        text = render_metrics(self.source.metrics_snapshot(), now=self._clock())
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        status, body = health(
            self.source.metrics_snapshot(), now=self._clock(), stall_after=self.stall_after
        )
        return web.json_response(body, status=status)

    async def start(self) -> None:
        """Bind and serve (raises OSError if the address is taken)."""
        if self._state != "new":
            raise RuntimeError("a MetricsServer cannot be restarted; make a new one")
        self._state = "open"
        # No access log: a scrape every few seconds would drown the crawl's own lines.
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._state = "closed"
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("metrics on %smetrics, health on %shealthz", self.url, self.url)

    async def close(self) -> None:
        """Stop serving; harmless if already closed."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# -- the container health probe -----------------------------------------------------------


def _describe(status: int, content_type: str | None, body: bytes) -> str:
    kind = (content_type or "").split(";", 1)[0].strip()
    if kind.startswith("text/") or kind.endswith("json"):
        text = " ".join(body.decode(errors="replace").split())
        return f"{status} {text[:200]}"
    return f"{status} {kind or 'no content type'}, {len(body)} bytes"


def probe(url: str, *, timeout: float = 3.0) -> tuple[bool, str]:
    """GET ``url`` (blocking: for a probe process, never the event loop); (healthy, detail)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(512)
            return True, _describe(response.status, response.headers.get("Content-Type"), body)
    except urllib.error.HTTPError as exc:
        return False, _describe(exc.code, exc.headers.get("Content-Type"), exc.read(512))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        return False, f"unreachable: {exc}"


def probe_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """A health-check command: exit 0 if /healthz (or ``--url``) answers 2xx, else 1.

    The default URL is ``http://127.0.0.1:$BINGCRAWL_METRICS_PORT/healthz`` (port 9100).
    """
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="bingcrawl-healthcheck")
    parser.add_argument("--url", help="URL to probe (default: the local /healthz)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    url = args.url
    if url is None:
        port = env.get("BINGCRAWL_METRICS_PORT", "").strip() or str(DEFAULT_METRICS_PORT)
        url = f"http://127.0.0.1:{port}/healthz"
    healthy, detail = probe(url, timeout=args.timeout)
    # The probe's one line is what `docker inspect` shows as the health log.
    sys.stdout.write(f"{'healthy' if healthy else 'unhealthy'}: {url} {detail}\n")
    return 0 if healthy else 1
