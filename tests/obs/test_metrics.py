"""MetricsServer over real loopback HTTP: /metrics parsed by prometheus_client, /healthz, probe."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bingcrawl.errors import ConfigError
from bingcrawl.obs.metrics import (
    CONTENT_TYPE,
    MetricsServer,
    MetricsSnapshot,
    MetricsSource,
    RateWindow,
    probe,
    probe_main,
    render_metrics,
)


class FakeClock:
    """Monotonic time that only moves when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeCrawl:
    """A MetricsSource whose counters the test sets directly."""

    api_calls: Counter[tuple[str, int]] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    queue_depth: int = 0
    in_flight: int = 0
    images_per_s: float = 0.0
    queries: Counter[str] = field(default_factory=Counter)
    last_progress: float = 1000.0
    state: str = "running"
    scrapes: int = 0

    def metrics_snapshot(self) -> MetricsSnapshot:
        self.scrapes += 1
        return MetricsSnapshot(
            api_calls=self.api_calls,
            outcomes=self.outcomes,
            errors=self.errors,
            bytes=self.bytes,
            queue_depth=self.queue_depth,
            in_flight=self.in_flight,
            images_per_s=self.images_per_s,
            queries=self.queries,
            last_progress=self.last_progress,
            state=self.state,
        )


def busy_crawl() -> FakeCrawl:
    crawl = FakeCrawl()
    crawl.api_calls.update({("search", 200): 7, ("search", 429): 2, ("details", 200): 1})
    crawl.outcomes.update({"stored": 40, "duplicate": 5, "failed": 3})
    crawl.errors.update({"timeout": 2, "not_an_image": 1})
    crawl.bytes = 1_234_567
    crawl.queue_depth = 17
    crawl.in_flight = 4
    crawl.images_per_s = 2.5
    crawl.queries.update({"active": 2, "done": 1})
    return crawl


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_metrics_exposition_over_http() -> None:
    clock = FakeClock(1030.0)
    crawl = busy_crawl()
    async with MetricsServer(crawl, "127.0.0.1", 0, clock=clock) as server:
        assert server.port > 0
        status, content_type, text = await get(f"{server.url}metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE
    fams = families(text)

    api = fams["bingcrawl_api_calls"]
    assert api.type == "counter"
    assert samples(api) == {
        (("endpoint", "search"), ("status", "200")): 7,
        (("endpoint", "search"), ("status", "429")): 2,
        (("endpoint", "details"), ("status", "200")): 1,
    }
    downloads = samples(fams["bingcrawl_downloads"])
    # Every outcome is exported from the start, at 0 when nothing had it yet.
    assert downloads == {
        (("outcome", "stored"),): 40,
        (("outcome", "duplicate"),): 5,
        (("outcome", "failed"),): 3,
        (("outcome", "skipped"),): 0,
    }
    assert samples(fams["bingcrawl_download_errors"]) == {
        (("error_class", "timeout"),): 2,
        (("error_class", "not_an_image"),): 1,
    }
    assert samples(fams["bingcrawl_bytes_downloaded"]) == {(): 1_234_567}
    assert fams["bingcrawl_queue_depth"].type == "gauge"
    assert samples(fams["bingcrawl_queue_depth"]) == {(): 17}
    assert samples(fams["bingcrawl_in_flight_requests"]) == {(): 4}
    assert samples(fams["bingcrawl_images_per_second"]) == {(): 2.5}
    assert samples(fams["bingcrawl_queries"]) == {
        (("state", "active"),): 2,
        (("state", "done"),): 1,
        (("state", "exhausted"),): 0,
        (("state", "failed"),): 0,
    }
    assert samples(fams["bingcrawl_seconds_since_progress"]) == {(): 30.0}
    assert samples(fams["bingcrawl_up"]) == {(): 1}
    for name in ("bingcrawl_api_calls", "bingcrawl_downloads", "bingcrawl_bytes_downloaded"):
        assert fams[name].type == "counter"
        assert fams[name].documentation


async def test_every_scrape_reads_the_live_counters() -> None:
    crawl = FakeCrawl()
    async with MetricsServer(crawl, clock=FakeClock()) as server:
        _, _, before = await get(f"{server.url}metrics")
        crawl.outcomes["stored"] += 3
        crawl.api_calls[("search", 200)] += 1
        _, _, after = await get(f"{server.url}metrics")
    assert samples(families(before)["bingcrawl_downloads"])[(("outcome", "stored"),)] == 0
    assert samples(families(before)["bingcrawl_api_calls"]) == {}
    assert samples(families(after)["bingcrawl_downloads"])[(("outcome", "stored"),)] == 3
    assert crawl.scrapes == 2


def test_label_values_are_escaped() -> None:
    odd = 'bad "quote" \\ back\nslash'
    snapshot = MetricsSnapshot(errors={odd: 1}, last_progress=0.0)
    fams = families(render_metrics(snapshot, now=0.0))
    assert samples(fams["bingcrawl_download_errors"]) == {(("error_class", odd),): 1}


async def test_healthz_ok_then_503_on_stall() -> None:
    clock = FakeClock(1000.0)
    crawl = FakeCrawl(last_progress=1000.0)
    crawl.outcomes["stored"] = 12
    async with (
        MetricsServer(crawl, stall_after=60.0, clock=clock) as server,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{server.url}healthz") as response:
            ok_status, ok_body = response.status, await response.json()
        clock.now = 1061.0  # no progress for 61 s
        async with session.get(f"{server.url}healthz") as response:
            stalled_status, stalled_body = response.status, await response.json()
        crawl.state = "done"  # a finished crawl waiting to exit is not stalled
        async with session.get(f"{server.url}healthz") as response:
            done_status = response.status
        crawl.state, crawl.last_progress = "running", 1060.0
        async with session.get(f"{server.url}healthz") as response:
            recovered_status = response.status
    assert ok_status == 200
    assert ok_body["status"] == "ok"
    assert ok_body["state"] == "running"
    assert ok_body["stored"] == 12
    assert ok_body["last_progress_age_s"] == 0.0
    assert ok_body["last_progress_at"].endswith("Z")
    assert stalled_status == 503
    assert stalled_body["status"] == "stalled"
    assert stalled_body["last_progress_age_s"] == 61.0
    assert done_status == 200
    assert recovered_status == 200


async def test_probe_against_the_server() -> None:
    clock = FakeClock(1000.0)
    crawl = FakeCrawl(last_progress=1000.0)
    async with MetricsServer(crawl, stall_after=10.0, clock=clock) as server:
        healthy, detail = await asyncio.to_thread(probe, f"{server.url}healthz")
        env = {"BINGCRAWL_METRICS_PORT": str(server.port)}
        code_ok = await asyncio.to_thread(probe_main, [], env)
        clock.now = 2000.0
        unhealthy, stalled_detail = await asyncio.to_thread(probe, f"{server.url}healthz")
        code_stalled = await asyncio.to_thread(probe_main, [], env)
        port = server.port
    assert healthy
    assert detail.startswith("200 ")
    assert '"status": "ok"' in detail
    assert code_ok == 0
    assert not unhealthy
    assert stalled_detail.startswith("503 ")
    assert code_stalled == 1
    # The server is gone: unreachable, exit 1.
    url = f"http://127.0.0.1:{port}/healthz"
    gone, gone_detail = await asyncio.to_thread(probe, url, timeout=2)
    assert not gone
    assert gone_detail.startswith("unreachable")
    assert await asyncio.to_thread(probe_main, ["--url", url], {}) == 1


async def test_busy_port_is_an_oserror() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = MetricsServer(FakeCrawl(), "127.0.0.1", port)
        with pytest.raises(OSError, match=r"address|in use|bind"):
            await server.start()
        await server.close()


async def test_lifecycle() -> None:
    server = MetricsServer(FakeCrawl())
    assert "not started" in repr(server)
    with pytest.raises(RuntimeError):
        _ = server.port
    async with server:
        url = server.url
        assert url == f"http://127.0.0.1:{server.port}/"
    await server.close()  # closing twice is harmless
    with pytest.raises(RuntimeError):
        await server.start()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"{url}metrics")


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [({"port": 70000}, "--metrics-port"), ({"stall_after": 0.0}, "--stall-after")],
)
def test_bad_settings_name_the_option(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        MetricsServer(FakeCrawl(), **kwargs)
    assert info.value.option == option


def test_snapshot_is_a_copy_and_validated() -> None:
    outcomes = Counter({"stored": 1})
    snapshot = MetricsSnapshot(outcomes=outcomes)
    outcomes["stored"] += 10
    assert snapshot.stored == 1
    with pytest.raises(TypeError):
        snapshot.outcomes["stored"] = 5  # type: ignore[index]
    with pytest.raises(ValueError, match="queue_depth"):
        MetricsSnapshot(queue_depth=-1)
    with pytest.raises(ValueError, match="errors"):
        MetricsSnapshot(errors={"timeout": -1})
    assert isinstance(FakeCrawl(), MetricsSource)


def test_rate_window_counts_recent_events_only() -> None:
    clock = FakeClock(100.0)
    window = RateWindow(10.0, clock=clock)
    assert window.rate() == 0.0
    for _ in range(20):
        window.add()
    clock.now = 102.0
    # 20 events over the 2 s elapsed so far.
    assert window.rate() == pytest.approx(10.0)
    clock.now = 105.0
    window.add(10)
    assert window.rate() == pytest.approx(30 / 5)
    clock.now = 111.5  # the first burst (second 100) is out of the 10 s window
    assert window.rate() == pytest.approx(10 / 10)
    clock.now = 200.0
    assert window.rate() == 0.0
    with pytest.raises(ValueError, match="window"):
        RateWindow(0.5)
