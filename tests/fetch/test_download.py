"""The download worker against real aiohttp servers on loopback.

The image host below is a real HTTP server with hostile routes (slow drips, endless bodies,
gzip, lies about Content-Type and Content-Length). Every test asserts what the worker
returned and, where it matters, what the server observed (bytes sent, whether it finished,
request timestamps, concurrent requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import random
import socket
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bingcrawl.errors import ConfigError
from bingcrawl.fetch.download import (
    DownloadConfig,
    Downloader,
    HostBreaker,
    HostRates,
    HostSlots,
)
from bingcrawl.fetch.etiquette import Etiquette
from bingcrawl.fetch.netpolicy import NetworkPolicy, StaticResolver, parse_resolve
from bingcrawl.records import Candidate, DownloadFailure, Fetched
from tests.support.net import CANARY_HOST, RawServer, ScriptedResolver

HTML = b"<!doctype html><html><head><title>not an image</title></head><body>" + b"x" * 4096


@dataclass
class ImageHost:
    """State of the hostile image host, as the server saw it."""

    png: bytes
    hits: Counter[str] = field(default_factory=Counter)
    stamps: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    sent: Counter[str] = field(default_factory=Counter)
    finished: set[str] = field(default_factory=set)
    disconnected: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    saturate_at: int = 0
    saturated: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/img.png", self.image)
        r.add_get("/img-as-html", self.image_as_html)
        r.add_get("/html-as-jpeg", self.html_as_jpeg)
        r.add_get("/bmp", self.bmp)
        r.add_get("/gzip", self.gzipped)
        r.add_get("/huge-length", self.huge_length)
        r.add_get("/endless", self.endless)
        r.add_get("/drip", self.drip)
        r.add_get("/slow-headers", self.slow_headers)
        r.add_get("/status/{code}", self.status)
        r.add_get("/flaky/{key}", self.flaky)
        r.add_get("/redirect/{n}", self.redirect_chain)
        r.add_get("/loop/{side}", self.redirect_loop)
        r.add_get("/redirect-to", self.redirect_to)
        r.add_get("/no-location", self.no_location)
        r.add_get("/limited/{i}", self.limited)
        r.add_get("/slow-service/{i}", self.slow_service)
        return app

    def _seen(self, request: web.Request, name: str) -> None:
        self.hits[name] += 1
        self.stamps[name].append(time.monotonic())
        self.headers[name] = dict(request.headers)

    async def _stream(
        self,
        request: web.Request,
        name: str,
        resp: web.StreamResponse,
        chunks: AsyncIterator[bytes],
    ) -> web.StreamResponse:
        """Send chunks until done or the client hangs up; record what was sent."""
        try:
            await resp.prepare(request)
            async for chunk in chunks:
                await resp.write(chunk)
                self.sent[name] += len(chunk)
            await resp.write_eof()
            self.finished.add(name)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected[name].set()
            raise
        return resp

    async def image(self, request: web.Request) -> web.Response:
        self._seen(request, "img")
        return web.Response(body=self.png, content_type="image/png")

    async def image_as_html(self, request: web.Request) -> web.Response:
        self._seen(request, "img-as-html")
        return web.Response(body=self.png, content_type="text/html")

    async def html_as_jpeg(self, request: web.Request) -> web.StreamResponse:
        self._seen(request, "html-as-jpeg")

        async def body() -> AsyncIterator[bytes]:
            yield HTML
            await self.stop.wait()  # the rest never comes: only sniffing can end this early
            yield b"</html>"

        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        return await self._stream(request, "html-as-jpeg", resp, body())

    async def bmp(self, request: web.Request) -> web.Response:
        self._seen(request, "bmp")
        return web.Response(body=b"BM" + b"\0" * 64, content_type="image/bmp")

    async def gzipped(self, request: web.Request) -> web.Response:
        self._seen(request, "gzip")
        return web.Response(
            body=gzip.compress(self.png),
            headers={"Content-Type": "image/png", "Content-Encoding": "gzip"},
        )

    async def huge_length(self, request: web.Request) -> web.StreamResponse:
        self._seen(request, "huge-length")
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = 10 * 1024**3

        async def body() -> AsyncIterator[bytes]:
            yield self.png[:64]
            await self.stop.wait()
            yield b""

        return await self._stream(request, "huge-length", resp, body())

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """1 GiB, chunked, generated lazily."""
        self._seen(request, "endless")
        chunk = self.png[:16] + b"\0" * (64 * 1024 - 16)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(1024**3 // len(chunk)):
                yield chunk

        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        return await self._stream(request, "endless", resp, body())

    async def drip(self, request: web.Request) -> web.StreamResponse:
        """One byte every 20 ms after a PNG signature: 50 B/s, for 10 minutes."""
        self._seen(request, "drip")

        async def body() -> AsyncIterator[bytes]:
            yield self.png[:16]
            for _ in range(30_000):
                await asyncio.sleep(0.02)
                yield b"\0"

        return await self._stream(
            request, "drip", web.StreamResponse(headers={"Content-Type": "image/png"}), body()
        )

    async def slow_headers(self, request: web.Request) -> web.Response:
        self._seen(request, "slow-headers")
        try:
            await self.stop.wait()
        except asyncio.CancelledError:
            self.disconnected["slow-headers"].set()
            raise
        self.finished.add("slow-headers")
        return web.Response(body=self.png, content_type="image/png")

    async def status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        self._seen(request, f"status-{code}")
        return web.Response(status=code, text="nope")

    async def flaky(self, request: web.Request) -> web.Response:
        """503 with Retry-After: 1 twice, then the image."""
        key = f"flaky-{request.match_info['key']}"
        self._seen(request, key)
        if self.hits[key] <= 2:
            return web.Response(status=503, headers={"Retry-After": "1"})
        return web.Response(body=self.png, content_type="image/png")

    async def redirect_chain(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        self._seen(request, f"redirect-{n}")
        if n == 0:
            return web.Response(body=self.png, content_type="image/png")
        # Alternate relative and absolute-path Locations.
        location = str(n - 1) if n % 2 else f"/redirect/{n - 1}"
        raise web.HTTPFound(location)

    async def redirect_loop(self, request: web.Request) -> web.Response:
        side = request.match_info["side"]
        self._seen(request, f"loop-{side}")
        raise web.HTTPFound("/loop/b" if side == "a" else "/loop/a")

    async def redirect_to(self, request: web.Request) -> web.Response:
        self._seen(request, "redirect-to")
        raise web.HTTPFound(request.query["u"])

    async def no_location(self, request: web.Request) -> web.Response:
        self._seen(request, "no-location")
        return web.Response(status=302)

    async def limited(self, request: web.Request) -> web.Response:
        """Counts concurrent requests; holds each until ``saturate_at`` are in flight."""
        self._seen(request, "limited")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.in_flight >= self.saturate_at:
                self.saturated.set()
            # If never saturated, give up waiting; the assertion on max_in_flight says so.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.saturated.wait(), 2.0)
        finally:
            self.in_flight -= 1
        return web.Response(body=self.png, content_type="image/png")

    async def slow_service(self, request: web.Request) -> web.Response:
        self._seen(request, "slow-service")
        await asyncio.sleep(0.4)  # server latency, part of the scenario
        return web.Response(body=self.png, content_type="image/png")


@pytest.fixture
async def dl_host(dl_png: bytes) -> AsyncIterator[ImageHost]:
    host = ImageHost(png=dl_png)
    server = TestServer(host.app(), host="127.0.0.1")
    await server.start_server()
    host.server = server
    yield host
    host.stop.set()
    await server.close()


@dataclass
class RecordingSleep:
    """Stands in for asyncio.sleep between attempts: records the delay, does not wait."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


NO_ETIQUETTE = Etiquette(respect=frozenset())


def _config(**overrides: Any) -> DownloadConfig:
    values: dict[str, Any] = {
        "policy": NetworkPolicy.from_cidrs(["127.0.0.1/32"]),
        "timeout": 10.0,
        "connect_timeout": 5.0,
        "read_timeout": 5.0,
        "retries": 0,
        "backoff_base": 0.01,
        "backoff_max": 5.0,
        # The transport on its own: the origin's robots.txt and tdmrep.json would add their
        # requests and resolutions to every count here (tests/fetch/test_etiquette.py).
        "etiquette": NO_ETIQUETTE,
    }
    values.update(overrides)
    return DownloadConfig(**values)


def _candidate(url: str, **kw: Any) -> Candidate:
    return Candidate(url=url, label="cat", query="cat", **kw)


Fetch = Callable[..., Awaitable[Fetched | DownloadFailure]]


@pytest.fixture
def dl_fetch() -> Fetch:
    """``await dl_fetch(url, sleep=..., resolver=..., **config)``: one fetch, own downloader."""

    async def fetch(
        url: str,
        *,
        sleep: RecordingSleep | None = None,
        resolver: ScriptedResolver | None = None,
        **overrides: Any,
    ) -> Fetched | DownloadFailure:
        async with Downloader(
            _config(**overrides),
            rng=random.Random(1),
            sleep=sleep or RecordingSleep(),
            resolver=resolver,
        ) as downloader:
            return await downloader.fetch(_candidate(url))

    return fetch


def _failure(result: Fetched | DownloadFailure, error_class: str) -> DownloadFailure:
    assert isinstance(result, DownloadFailure), f"expected {error_class}, got {result!r}"
    assert result.error_class == error_class, result.detail
    return result


# --------------------------------------------------------------------------- success


async def test_image_is_fetched(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    url = dl_host.url("/img.png")
    result = await dl_fetch(url)
    assert isinstance(result, Fetched)
    assert result.body == dl_host.png
    assert result.final_url == url
    assert result.status == 200
    assert result.content_type == "image/png"
    assert result.attempts == 1
    assert result.elapsed >= 0
    sent = dl_host.headers["img"]
    assert sent["Accept-Encoding"] == "identity"
    assert "bingcrawl/0.1" in sent["User-Agent"]
    assert "Cookie" not in sent


async def test_referer_is_the_host_page(dl_host: ImageHost) -> None:
    page = "https://bücher.example/galerie/ä.html#top"
    async with Downloader(_config()) as downloader:
        result = await downloader.fetch(_candidate(dl_host.url("/img.png"), host_page_url=page))
    assert isinstance(result, Fetched)
    # Sent in its ASCII form, without the fragment, as a browser would.
    assert dl_host.headers["img"]["Referer"] == "https://xn--bcher-kva.example/galerie/%C3%A4.html"


async def test_image_served_as_html_is_kept(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    result = await dl_fetch(dl_host.url("/img-as-html"))
    assert isinstance(result, Fetched)
    assert result.body == dl_host.png
    assert result.content_type is not None
    assert result.content_type.startswith("text/html")


# --------------------------------------------------------------------------- content checks


async def test_html_served_as_jpeg_is_dropped_after_the_first_bytes(
    dl_host: ImageHost, dl_fetch: Fetch
) -> None:
    # The server never finishes this body: only sniffing the first bytes can end the fetch.
    result = await dl_fetch(dl_host.url("/html-as-jpeg"))
    failure = _failure(result, "not_an_image")
    assert failure.attempts == 1
    await asyncio.wait_for(dl_host.disconnected["html-as-jpeg"].wait(), 10)
    assert "html-as-jpeg" not in dl_host.finished


async def test_recognised_but_unaccepted_format(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    _failure(await dl_fetch(dl_host.url("/bmp")), "unsupported_format")


async def test_gzip_body_is_refused_not_inflated(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    failure = _failure(await dl_fetch(dl_host.url("/gzip")), "bad_encoding")
    assert "gzip" in failure.detail
    assert dl_host.headers["gzip"]["Accept-Encoding"] == "identity"


async def test_content_length_over_cap_is_refused_without_reading(
    dl_host: ImageHost, dl_fetch: Fetch
) -> None:
    failure = _failure(await dl_fetch(dl_host.url("/huge-length"), max_bytes=1024), "too_large")
    assert "Content-Length" in failure.detail
    await asyncio.wait_for(dl_host.disconnected["huge-length"].wait(), 10)
    assert "huge-length" not in dl_host.finished


async def test_chunked_body_over_cap_stops_at_the_cap(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    cap = 256 * 1024
    failure = _failure(await dl_fetch(dl_host.url("/endless"), max_bytes=cap), "too_large")
    assert str(cap) in failure.detail
    await asyncio.wait_for(dl_host.disconnected["endless"].wait(), 30)
    assert "endless" not in dl_host.finished
    # Socket buffers absorb some, but nowhere near the 1 GiB on offer.
    assert dl_host.sent["endless"] < 64 * 1024 * 1024


async def test_body_exactly_at_cap_is_kept(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    result = await dl_fetch(dl_host.url("/img.png"), max_bytes=len(dl_host.png))
    assert isinstance(result, Fetched)
    _failure(
        await dl_fetch(dl_host.url("/img.png"), max_bytes=len(dl_host.png) - 1), "too_large"
    )


async def test_truncated_body(
    dl_png: bytes, dl_raw_server: Callable[[bytes], Awaitable[RawServer]], dl_fetch: Fetch
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    server = await dl_raw_server(head + dl_png[:100])
    sleep = RecordingSleep()
    failure = _failure(await dl_fetch(server.url("/t.png"), retries=1, sleep=sleep), "truncated")
    assert failure.attempts == 2  # a cut connection is worth one more try
    assert server.connections == 2
    assert len(sleep.delays) == 1


async def test_truncated_chunked_body(
    dl_png: bytes, dl_raw_server: Callable[[bytes], Awaitable[RawServer]], dl_fetch: Fetch
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = await dl_raw_server(head + b"%x\r\n" % 64 + dl_png[:64] + b"\r\n")
    _failure(await dl_fetch(server.url("/t.png")), "truncated")


async def test_garbage_response_is_a_failure_not_an_exception(
    dl_raw_server: Callable[[bytes], Awaitable[RawServer]], dl_fetch: Fetch
) -> None:
    server = await dl_raw_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    result = await dl_fetch(server.url("/x.png"))
    assert isinstance(result, DownloadFailure)
    assert result.error_class == "connection"


# --------------------------------------------------------------------------- time limits


async def test_slow_drip_is_cut_off_as_too_slow(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    failure = _failure(
        await dl_fetch(
            dl_host.url("/drip"), min_throughput=1000, throughput_grace=0.2, timeout=60
        ),
        "too_slow",
    )
    assert "bytes/s" in failure.detail
    await asyncio.wait_for(dl_host.disconnected["drip"].wait(), 10)
    assert "drip" not in dl_host.finished


async def test_slow_drip_hits_the_total_deadline(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    failure = _failure(
        await dl_fetch(dl_host.url("/drip"), min_throughput=0, timeout=0.5), "timeout"
    )
    assert "deadline" in failure.detail
    assert "drip" not in dl_host.finished


async def test_slow_headers_hit_the_read_timeout(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    _failure(await dl_fetch(dl_host.url("/slow-headers"), read_timeout=0.3), "timeout")
    await asyncio.wait_for(dl_host.disconnected["slow-headers"].wait(), 10)
    assert "slow-headers" not in dl_host.finished


async def test_slow_headers_hit_the_total_deadline(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    failure = _failure(
        await dl_fetch(dl_host.url("/slow-headers"), read_timeout=30, timeout=0.3), "timeout"
    )
    assert "deadline" in failure.detail


async def test_queueing_for_a_slot_does_not_eat_the_deadline(dl_host: ImageHost) -> None:
    # One connection, four requests of ~0.4 s each: the last one queues for ~1.2 s, longer
    # than its 1 s deadline, and must still succeed.
    async with Downloader(_config(per_host=1, timeout=1.0)) as downloader:
        results = await asyncio.gather(
            *(downloader.fetch(_candidate(dl_host.url(f"/slow-service/{i}"))) for i in range(4))
        )
    assert all(isinstance(r, Fetched) for r in results), results
    assert dl_host.hits["slow-service"] == 4


# --------------------------------------------------------------------------- HTTP status, retries


async def test_404_is_not_retried(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    failure = _failure(await dl_fetch(dl_host.url("/status/404"), retries=3), "http_404")
    assert failure.attempts == 1
    assert dl_host.hits["status-404"] == 1


async def test_410_is_an_http_class(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    _failure(await dl_fetch(dl_host.url("/status/410")), "http_410")


async def test_retry_after_is_honoured(dl_host: ImageHost) -> None:
    # Real sleeping here: the server's clock shows how long the client waited.
    async with Downloader(_config(retries=3), rng=random.Random(7)) as downloader:
        result = await downloader.fetch(_candidate(dl_host.url("/flaky/a")))
    assert isinstance(result, Fetched)
    assert result.attempts == 3
    stamps = dl_host.stamps["flaky-a"]
    assert len(stamps) == 3
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 0.99 for gap in gaps), gaps


async def test_500_is_retried_then_reported(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    sleep = RecordingSleep()
    failure = _failure(
        await dl_fetch(dl_host.url("/status/500"), retries=2, sleep=sleep, backoff_base=0.5),
        "http_500",
    )
    assert failure.attempts == 3
    assert dl_host.hits["status-500"] == 3
    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= 0.5
    assert 0 <= sleep.delays[1] <= 1.0


async def test_connection_refused(dl_fetch: Fetch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleep = RecordingSleep()
    failure = _failure(
        await dl_fetch(f"http://127.0.0.1:{port}/x.png", retries=1, sleep=sleep), "connection"
    )
    assert failure.attempts == 2


async def test_unknown_host_is_not_retried(dl_fetch: Fetch) -> None:
    resolver = ScriptedResolver({})  # answers "no such name" for everything
    failure = _failure(
        await dl_fetch("http://nowhere.test/x.png", retries=3, resolver=resolver), "connection"
    )
    assert failure.attempts == 1
    assert "DNS" in failure.detail


def test_backoff_is_full_jitter_capped_and_honours_retry_after() -> None:
    downloader = Downloader(
        _config(backoff_base=0.5, backoff_max=4.0), rng=random.Random(3)
    )
    for attempt in range(1, 12):
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        delays = [downloader.backoff_delay(attempt) for _ in range(50)]
        assert all(0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert downloader.backoff_delay(1, retry_after=2.5) >= 2.5
    assert downloader.backoff_delay(1, retry_after=3600) == 4.0  # a server cannot park us
    same = [Downloader(_config(), rng=random.Random(9)).backoff_delay(3) for _ in range(2)]
    assert same[0] == same[1]


# --------------------------------------------------------------------------- redirects


async def test_five_redirects_are_followed(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    result = await dl_fetch(dl_host.url("/redirect/5"), max_redirects=5)
    assert isinstance(result, Fetched)
    assert result.final_url == dl_host.url("/redirect/0")
    assert result.body == dl_host.png
    assert [dl_host.hits[f"redirect-{n}"] for n in range(6)] == [1] * 6


async def test_six_redirects_are_too_many(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    _failure(await dl_fetch(dl_host.url("/redirect/6"), max_redirects=5), "too_many_redirects")
    assert dl_host.hits["redirect-0"] == 0


async def test_redirect_loop(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    failure = _failure(await dl_fetch(dl_host.url("/loop/a")), "too_many_redirects")
    assert "loop" in failure.detail
    assert dl_host.hits["loop-a"] == 1
    assert dl_host.hits["loop-b"] == 1


async def test_redirect_without_location(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    _failure(await dl_fetch(dl_host.url("/no-location")), "http_302")


async def test_redirect_to_a_non_http_scheme(dl_host: ImageHost, dl_fetch: Fetch) -> None:
    url = dl_host.url("/redirect-to?u=file:///etc/passwd")
    _failure(await dl_fetch(url), "bad_url")


# --------------------------------------------------------------------------- SSRF


async def test_blocked_url_is_refused_before_any_request(
    dl_canary: RawServer, dl_fetch: Fetch
) -> None:
    failure = _failure(await dl_fetch(dl_canary.url("/x.png")), "blocked_address")
    assert failure.attempts == 0
    assert dl_canary.connections == 0


async def test_redirect_to_a_blocked_address(
    dl_host: ImageHost, dl_canary: RawServer, dl_fetch: Fetch
) -> None:
    url = dl_host.url(f"/redirect-to?u={dl_canary.url('/secret')}")
    failure = _failure(await dl_fetch(url), "blocked_address")
    assert failure.attempts == 1
    assert dl_host.hits["redirect-to"] == 1
    assert dl_canary.connections == 0


async def test_redirect_to_a_name_that_resolves_to_a_blocked_address(
    dl_host: ImageHost, dl_canary: RawServer, dl_fetch: Fetch
) -> None:
    resolver = ScriptedResolver({"internal.test": [[CANARY_HOST]]})
    url = dl_host.url(f"/redirect-to?u=http://internal.test:{dl_canary.port}/secret")
    _failure(await dl_fetch(url, resolver=resolver), "blocked_address")
    assert resolver.calls == ["internal.test"]
    assert dl_canary.connections == 0


async def test_dns_rebinding_between_fetches(dl_host: ImageHost, dl_canary: RawServer) -> None:
    assert dl_host.server is not None
    resolver = ScriptedResolver({"cdn.test": [["127.0.0.1"], [CANARY_HOST]]})
    url = f"http://cdn.test:{dl_host.server.port}/img.png"
    async with Downloader(_config(), resolver=resolver) as first:
        assert isinstance(await first.fetch(_candidate(url)), Fetched)
    async with Downloader(_config(), resolver=resolver) as second:
        _failure(await second.fetch(_candidate(url)), "blocked_address")
    assert resolver.calls == ["cdn.test", "cdn.test"]
    assert dl_canary.connections == 0


# --------------------------------------------------------------------------- concurrency, lifecycle


async def test_per_host_limit_is_honoured(dl_host: ImageHost) -> None:
    dl_host.saturate_at = 2
    async with Downloader(_config(per_host=2, concurrency=8)) as downloader:
        results = await asyncio.gather(
            *(downloader.fetch(_candidate(dl_host.url(f"/limited/{i}"))) for i in range(10))
        )
    assert all(isinstance(r, Fetched) for r in results)
    assert dl_host.hits["limited"] == 10
    assert dl_host.max_in_flight == 2


async def test_lifecycle() -> None:
    downloader = Downloader(_config())
    with pytest.raises(RuntimeError, match="not open"):
        await downloader.fetch(_candidate("http://example.com/a.jpg"))
    async with downloader:
        open_inside = not downloader.closed
    assert open_inside
    assert downloader.closed
    await downloader.aclose()  # twice is harmless
    with pytest.raises(RuntimeError, match="only once"):
        async with downloader:
            pass


# --------------------------------------------------------------------------- configuration


def test_defaults() -> None:
    cfg = DownloadConfig()
    assert (cfg.concurrency, cfg.per_host, cfg.max_bytes) == (256, 8, 20 * 1024 * 1024)
    assert (cfg.timeout, cfg.connect_timeout, cfg.read_timeout) == (30.0, 10.0, 15.0)
    assert cfg.retry_statuses == frozenset({408, 429, 500, 502, 503, 504})
    assert cfg.max_redirects == 5
    assert cfg.policy == NetworkPolicy()


@pytest.mark.parametrize(
    ("field_name", "value", "option"),
    [
        ("concurrency", 0, "--concurrency"),
        ("concurrency", True, "--concurrency"),
        ("per_host", 0, "--per-host"),
        ("max_bytes", 0, "--max-bytes"),
        ("max_bytes", 1.5, "--max-bytes"),
        ("timeout", 0, "--timeout"),
        ("timeout", float("inf"), "--timeout"),
        ("timeout", float("nan"), "--timeout"),
        ("connect_timeout", -1, "--connect-timeout"),
        ("read_timeout", 0, "--read-timeout"),
        ("min_throughput", -1, "--min-throughput"),
        ("throughput_grace", -0.1, "--throughput-grace"),
        ("retries", -1, "--retries"),
        ("backoff_base", -1, "--backoff-base"),
        ("backoff_max", 0.1, "--backoff-max"),
        ("retry_statuses", frozenset({200}), "--retry-status"),
        ("retry_statuses", {503}, "--retry-status"),
        ("max_redirects", -1, "--max-redirects"),
        ("user_agent", "", "--user-agent"),
        ("user_agent", "evil\r\nX-Injected: 1", "--user-agent"),
        ("formats", frozenset(), "--formats"),
        ("formats", frozenset({"svg"}), "--formats"),
        ("policy", None, "--allow-network"),
        ("host_failures", -1, "--host-failures"),
        ("resolve", (("a b", "127.0.0.1"),), "--resolve"),
        ("resolve", (("a.test", "127.1"),), "--resolve"),
    ],
)
def test_config_validation_names_the_option(field_name: str, value: object, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        DownloadConfig(**{field_name: value})  # type: ignore[arg-type]
    assert info.value.option == option


# -- --host-rate: requests per second to one host (aiolimiter) ----------------------------------


async def test_host_rate_spaces_every_request_to_a_host(dl_host: ImageHost) -> None:
    # 10 requests/s: six images and a three-hop redirect chain, all started at once, reach
    # the host at least 0.1 s apart (every hop counts). A lower bound only: a slow machine
    # spaces them more, never less.
    async with Downloader(_config(host_rate=10.0, per_host=8)) as downloader:
        urls = [dl_host.url("/img.png")] * 6 + [dl_host.url("/redirect/2")]
        results = await asyncio.gather(*(downloader.fetch(_candidate(u)) for u in urls))
    assert all(isinstance(r, Fetched) for r in results)
    stamps = sorted(t for name, ts in dl_host.stamps.items() for t in ts)
    assert len(stamps) == 6 + 3
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.1 - 0.01, gaps  # (the limiter and the server read different clocks)


async def test_waiting_for_the_hosts_turn_is_not_on_the_attempts_clock(
    dl_host: ImageHost,
) -> None:
    # 2 requests/s with a 0.3 s deadline: the fourth request waits ~1.5 s for its turn and
    # still succeeds, since only the server's time counts against the deadline.
    async with Downloader(_config(host_rate=2.0, timeout=0.3)) as downloader:
        urls = [dl_host.url("/img.png")] * 4
        results = await asyncio.gather(*(downloader.fetch(_candidate(u)) for u in urls))
    assert [type(r).__name__ for r in results] == ["Fetched"] * 4


async def test_host_rates_keep_only_busy_hosts() -> None:
    # A rate so high that every bucket has drained by the next call: at each sweep every
    # limiter but the newest goes, so the table stays at the sweep size, not the hosts seen.
    rates = HostRates(1e12, sweep_at=8)
    for i in range(100):
        await rates.wait(f"host-{i}.example")
    assert len(rates) <= 8
    slow = HostRates(0.001, sweep_at=8)  # one request per 1,000 s: nothing drains
    for i in range(20):
        await slow.wait(f"host-{i}.example")
    assert len(slow) == 20  # a host still holding its request is never forgotten
    assert not HostRates(0).enabled


def test_host_rate_is_validated_with_its_option_name() -> None:
    with pytest.raises(ConfigError, match="--host-rate"):
        _config(host_rate=-1.0)


async def test_a_host_with_its_own_limit_gets_no_more_downloads_at_a_time(
    dl_host: ImageHost,
) -> None:
    # Wikimedia's file host asks for two at a time; here the test server plays that host.
    dl_host.saturate_at = 2
    config = _config(per_host=8, host_limits=(("127.0.0.1", 2),))
    async with Downloader(config) as downloader:
        urls = [dl_host.url(f"/limited/{i}") for i in range(6)]
        results = await asyncio.gather(*(downloader.fetch(_candidate(u)) for u in urls))
    assert all(isinstance(r, Fetched) for r in results)
    assert dl_host.max_in_flight == 2
    assert DownloadConfig().host_limits == (("upload.wikimedia.org", 2),)
    with pytest.raises(ConfigError, match="host limit of x"):
        _config(host_limits=(("x", 0),))


async def test_without_its_own_limit_a_host_gets_per_host_at_a_time(
    dl_host: ImageHost,
) -> None:
    # The control of the test above: the server holds requests until three are in flight,
    # which only happens without a limit of two.
    dl_host.saturate_at = 3
    async with Downloader(_config(per_host=8, host_limits=())) as downloader:
        urls = [dl_host.url(f"/limited/{i}") for i in range(6)]
        await asyncio.gather(*(downloader.fetch(_candidate(u)) for u in urls))
    assert dl_host.max_in_flight >= 3


async def test_a_sweep_keeps_a_host_whose_requests_are_waiting() -> None:
    # One request a second: a's second request waits; a new host then triggers a sweep while
    # a's bucket is empty again. Dropping a's limiter would let a third request go at once
    # beside the waiting one (found by review).
    rates = HostRates(1.0, sweep_at=2)
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def request(host: str) -> None:
        await rates.wait(host)
        if host == "a":
            times.append(loop.time())

    await request("a")
    waiting = asyncio.create_task(request("a"))
    while "a" not in rates._waiting:  # (yield until the second request waits)
        await asyncio.sleep(0)
    await request("b")  # the table reaches sweep_at: a sweep runs now
    third = asyncio.create_task(request("a"))
    await asyncio.gather(waiting, third)
    gaps = [b - a for a, b in itertools.pairwise(sorted(times))]
    assert min(gaps) >= 1.0 - 0.05, gaps


# -- --resolve: names answered without DNS --------------------------------------------------


def test_resolve_values_are_parsed_and_named_in_errors() -> None:
    assert parse_resolve(["*.Web.Test.:127.0.0.1", "a.example:[::1]"]) == (
        ("*.web.test", "127.0.0.1"),
        ("a.example", "::1"),
    )
    for bad, why in [
        ("img.test", "expected HOST:ADDRESS"),
        ("img test:127.0.0.1", "not a host name"),
        ("*.:127.0.0.1", "not a host name"),
        ("img.test:localhost", "not an IP address"),
    ]:
        with pytest.raises(ConfigError, match=why) as info:
            parse_resolve([bad])
        assert info.value.option == "--resolve"


async def test_an_exact_name_wins_over_a_pattern_and_others_go_to_dns() -> None:
    inner = ScriptedResolver({"other.example": [["127.0.0.9"]]})
    resolver = StaticResolver(
        parse_resolve(["*.test:127.0.0.2", "*.web.test:127.0.0.3", "a.web.test:127.0.0.4"]),
        inner,
    )
    assert resolver.lookup("A.Web.Test.") == "127.0.0.4"
    assert resolver.lookup("b.web.test") == "127.0.0.3"
    assert resolver.lookup("c.test") == "127.0.0.2"
    assert resolver.lookup("web.test.org") is None
    assert [a["host"] for a in await resolver.resolve("b.web.test", 80)] == ["127.0.0.3"]
    assert [a["host"] for a in await resolver.resolve("other.test", 80)] == ["127.0.0.2"]
    assert inner.calls == []  # every name so far was mapped
    assert [a["host"] for a in await resolver.resolve("other.example", 80)] == ["127.0.0.9"]
    assert inner.calls == ["other.example"]


async def test_a_mapped_name_reaches_the_address_with_its_own_host_header(
    dl_host: ImageHost, dl_fetch: Fetch
) -> None:
    assert dl_host.server is not None
    url = f"http://img.web.test:{dl_host.server.port}/img.png"
    result = await dl_fetch(url, resolve=parse_resolve(["*.web.test:127.0.0.1"]))
    assert isinstance(result, Fetched), result
    assert result.body == dl_host.png
    assert dl_host.headers["img"]["Host"] == f"img.web.test:{dl_host.server.port}"


async def test_a_mapped_address_is_still_judged_by_the_network_policy(
    dl_host: ImageHost, dl_fetch: Fetch
) -> None:
    assert dl_host.server is not None
    url = f"http://img.web.test:{dl_host.server.port}/img.png"
    resolve = parse_resolve(["img.web.test:127.0.0.1"])
    result = await dl_fetch(url, resolve=resolve, policy=NetworkPolicy())
    failure = _failure(result, "blocked_address")
    assert "127.0.0.1" in failure.detail
    assert dl_host.hits["img"] == 0


# -- hosts that stop answering (HostBreaker) -------------------------------------------------


async def test_a_timeout_on_a_host_that_never_answered_is_not_retried(
    dl_host: ImageHost, dl_fetch: Fetch
) -> None:
    failure = _failure(
        await dl_fetch(dl_host.url("/slow-headers"), read_timeout=0.2, retries=3), "timeout"
    )
    assert failure.attempts == 1
    assert "not retried" in failure.detail
    assert dl_host.hits["slow-headers"] == 1


async def test_a_host_that_stops_answering_is_given_up_and_its_other_urls_fail_at_once(
    dl_host: ImageHost,
) -> None:
    sleep = RecordingSleep()
    async with Downloader(_config(read_timeout=0.2, retries=3), sleep=sleep) as downloader:
        assert isinstance(await downloader.fetch(_candidate(dl_host.url("/img.png"))), Fetched)
        # The host has answered: a timeout is retried once, and the second in a row (the
        # default --host-failures 2) gives the host up, which ends the retries.
        hung = _failure(
            await downloader.fetch(_candidate(dl_host.url("/slow-headers"))), "timeout"
        )
        assert hung.attempts == 2
        assert "given up" in hung.detail
        assert dl_host.hits["slow-headers"] == 2
        # Its other URLs are not requested at all.
        later = _failure(
            await downloader.fetch(_candidate(dl_host.url("/img.png"))), "host_unresponsive"
        )
        assert later.attempts == 0
        assert "did not answer 2 requests in a row" in later.detail
        assert dl_host.hits["img"] == 1
        assert downloader.breaker.given_up == {"127.0.0.1": 1}


async def test_refused_connections_give_a_host_up_too(dl_fetch: Fetch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failure = _failure(
        await dl_fetch(f"http://127.0.0.1:{port}/x.png", retries=5), "connection"
    )
    assert failure.attempts == 2  # not 6: the second refusal gave the host up
    assert "given up" in failure.detail


async def test_host_failures_zero_never_gives_a_host_up(
    dl_host: ImageHost, dl_fetch: Fetch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failure = _failure(
        await dl_fetch(f"http://127.0.0.1:{port}/x.png", retries=3, host_failures=0),
        "connection",
    )
    assert failure.attempts == 4


def test_a_given_up_host_gets_requests_again_after_the_cool_down() -> None:
    now = [0.0]
    breaker = HostBreaker(threshold=2, cooldown=60.0, clock=lambda: now[0])
    breaker.unanswered("h", since=0.0)
    assert breaker.refusal("h") is None  # one failure is not enough
    breaker.unanswered("h", since=0.0)
    assert breaker.refusal("h") is not None
    now[0] = 59.0
    assert breaker.refusal("h") is not None
    now[0] = 61.0
    assert breaker.refusal("h") is None  # cool-down over: requests go again
    breaker.unanswered("h", since=61.0)  # and a single failure gives it up again
    assert breaker.refusal("h") is not None
    assert breaker.given_up == {"h": 2}
    now[0] = 200.0
    assert breaker.refusal("h") is None
    breaker.answered("h")  # an answer clears the count
    breaker.unanswered("h", since=201.0)
    assert breaker.refusal("h") is None
    assert breaker.has_answered("h")


def test_a_slow_url_of_a_host_that_answers_others_meanwhile_does_not_count() -> None:
    now = [10.0]
    breaker = HostBreaker(threshold=2, cooldown=60.0, clock=lambda: now[0])
    # Two requests sent at t=0 time out at t=15; the host answered another one at t=10.
    breaker.answered("busy")
    now[0] = 15.0
    breaker.unanswered("busy", since=0.0)
    breaker.unanswered("busy", since=0.0)
    assert breaker.refusal("busy") is None
    assert breaker.given_up == {}
    # Sent after its last answer: these count.
    breaker.unanswered("busy", since=11.0)
    breaker.unanswered("busy", since=11.0)
    assert breaker.refusal("busy") is not None


def test_the_breaker_remembers_a_bounded_number_of_hosts() -> None:
    breaker = HostBreaker(clock=lambda: 0.0, max_hosts=3)
    for i in range(10):
        breaker.answered(f"h{i}")
    remembered = [breaker.has_answered(f"h{i}") for i in (0, 6, 7, 8, 9)]
    assert remembered == [False, False, True, True, True]


async def test_requests_that_waited_for_a_given_up_hosts_turn_are_not_sent(
    dl_host: ImageHost,
) -> None:
    config = _config(read_timeout=0.2, retries=3, per_host=1, host_failures=1)
    async with Downloader(config) as downloader:
        url = dl_host.url("/slow-headers")
        results = await asyncio.gather(*(downloader.fetch(_candidate(url)) for _ in range(3)))
    classes = sorted((r.error_class, r.attempts) for r in results if isinstance(r, DownloadFailure))
    assert classes == [("host_unresponsive", 0), ("host_unresponsive", 0), ("timeout", 1)]
    assert dl_host.hits["slow-headers"] == 1  # the two that waited their turn were not sent


async def test_retries_share_the_timeout_of_their_image(dl_host: ImageHost) -> None:
    # The host has answered before, so its timeouts are retried, but every attempt takes
    # from the one --timeout: 0.3 s of socket timeout, then what is left of 0.5 s, then none.
    config = _config(read_timeout=0.3, timeout=0.5, retries=5, host_failures=0)
    async with Downloader(config) as downloader:
        assert isinstance(await downloader.fetch(_candidate(dl_host.url("/img.png"))), Fetched)
        started = time.monotonic()
        failure = _failure(
            await downloader.fetch(_candidate(dl_host.url("/slow-headers"))), "timeout"
        )
        spent = time.monotonic() - started
    assert failure.attempts == 2
    assert "--timeout are spent" in failure.detail
    assert dl_host.hits["slow-headers"] == 2
    assert spent >= 0.5  # both attempts ran their course (a lower bound only)


async def test_host_slots_hand_over_in_order_and_forget_idle_hosts() -> None:
    slots = HostSlots(per_host=2, caps={"small.test": 1})
    order: list[str] = []
    got = {name: asyncio.Event() for name in ("a1", "a2", "a3")}
    done = {name: asyncio.Event() for name in ("a1", "a2", "a3")}

    async def take(name: str) -> None:
        await slots.acquire("a.test")
        order.append(name)
        got[name].set()
        await done[name].wait()
        slots.release("a.test")

    tasks = [asyncio.create_task(take(name)) for name in ("a1", "a2", "a3")]
    await got["a1"].wait()
    await got["a2"].wait()
    await asyncio.sleep(0)  # (a3 runs up to its wait)
    assert order == ["a1", "a2"]
    assert (slots.busy("a.test"), slots.waiting("a.test")) == (2, 1)
    done["a1"].set()  # a1's slot goes to a3
    await got["a3"].wait()
    assert order == ["a1", "a2", "a3"]
    assert (slots.busy("a.test"), slots.waiting("a.test")) == (2, 0)
    done["a2"].set()
    done["a3"].set()
    await asyncio.gather(*tasks)
    assert len(slots) == 0  # nothing under way: the host is forgotten

    # A host with its own cap; a waiter cancelled while waiting leaves no trace.
    await slots.acquire("small.test")
    waiter = asyncio.create_task(slots.acquire("small.test"))
    await asyncio.sleep(0)  # (it runs up to its wait)
    assert slots.waiting("small.test") == 1
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert slots.waiting("small.test") == 0
    slots.release("small.test")
    assert len(slots) == 0
