"""The image host over real loopback HTTP: every fault kind behaves as specified."""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from bingcrawl.emulator.corpus import BOMB_SIZE, FAULT_KINDS, Corpus, CorpusConfig, ImageSpec
from bingcrawl.emulator.imagehost import (
    GZIP_BOMB_BYTES,
    ImageHost,
    ImageHostConfig,
    build_bomb_png,
    build_gzip_bomb,
)
from bingcrawl.errors import ConfigError
from bingcrawl.imaging.sniff import sniff_format

MiB = 1 << 20

Serve = Callable[..., Awaitable[tuple[TestClient[web.Request, web.Application], ImageHost]]]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    """One small corpus shared by the module (its caches only speed things up)."""
    return Corpus(CorpusConfig(results_per_query=150, fault_rate=0.2))


@pytest.fixture
async def serve(corpus: Corpus) -> AsyncIterator[Serve]:
    """``await serve(**ImageHostConfig fields)`` -> (client, host) on a loopback TestServer."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(**config: Any) -> tuple[TestClient[web.Request, web.Application], ImageHost]:
        host = ImageHost(corpus, ImageHostConfig(**config))
        app = web.Application()
        app.add_routes(host.routes())
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client, host

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def plain_server(corpus: Corpus) -> AsyncIterator[tuple[str, ImageHost]]:
    """The host behind a plain AppRunner, which (unlike TestServer, and like the emulator's
    server) does not cancel handlers when their client disconnects. Yields (base URL, host)."""
    host = ImageHost(corpus, ImageHostConfig(slow_seconds=60.0))
    app = web.Application()
    app.add_routes(host.routes())
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    address = runner.addresses[0]
    try:
        yield f"http://{address[0]}:{address[1]}", host
    finally:
        await runner.cleanup()


def key_of(corpus: Corpus, fault: str) -> str:
    return corpus.fault_url_keys()[fault]


def spec_of(corpus: Corpus, fault: str) -> ImageSpec:
    spec = corpus.spec(key_of(corpus, fault))
    assert spec is not None
    return spec


# -- healthy images --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "gif", "webp"])
async def test_serves_each_format_with_its_content_type(fmt: str) -> None:
    config = CorpusConfig(results_per_query=60, format_mix=(0.25, 0.25, 0.25, 0.25))
    mixed = Corpus(config)
    spec = next(s for s in mixed.query_results("formats") if s.format == fmt and not s.fault)
    host = ImageHost(mixed)
    app = web.Application()
    app.add_routes(host.routes())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get(f"/img/{spec.key}")
        body = await resp.read()
        assert resp.status == 200
        assert resp.content_type == f"image/{fmt}"
        assert resp.content_length == len(body)
        assert body == mixed.image_bytes(spec)
        assert sniff_format(body) == fmt
        with Image.open(io.BytesIO(body)) as img:
            assert img.size == (spec.width, spec.height)
    assert host.requests[spec.key] == 1
    assert host.bytes_sent == len(body)


async def test_head_sends_headers_without_body(serve: Serve, corpus: Corpus) -> None:
    client, host = await serve()
    spec = next(s for s in corpus.query_results("head") if s.fault is None)
    resp = await client.head(f"/img/{spec.key}")
    assert resp.status == 200
    assert resp.content_length == len(corpus.image_bytes(spec))
    assert await resp.read() == b""
    assert host.requests[spec.key] == 1


@pytest.mark.parametrize(
    ("fault", "length"),
    [("oversize", 25 * MiB), ("huge_chunked", None), ("slow_drip", "image"), ("bomb", "bomb")],
)
async def test_head_of_streaming_faults_is_headers_only(
    serve: Serve, corpus: Corpus, fault: str, length: object
) -> None:
    client, host = await serve(slow_seconds=60.0)
    resp = await client.head(f"/img/{key_of(corpus, fault)}")
    assert resp.status == 200
    assert await resp.read() == b""
    if length == "image":
        length = len(corpus.image_bytes(spec_of(corpus, fault)))
    elif length == "bomb":
        length = len(build_bomb_png())
    assert resp.content_length == length
    await asyncio.wait_for(host.wait_idle(), 10)
    assert host.bytes_sent == 0


async def test_unknown_key_is_404_and_counted(serve: Serve) -> None:
    client, host = await serve()
    resp = await client.get("/img/no-such-thing/0001.jpg")
    assert resp.status == 404
    assert host.requests["no-such-thing/0001.jpg"] == 1


async def test_requests_count_every_fetch(serve: Serve, corpus: Corpus) -> None:
    client, host = await serve()
    specs = [s for s in corpus.query_results("counting") if s.fault is None][:3]
    for spec in (*specs, specs[0]):
        async with client.get(f"/img/{spec.key}") as resp:
            assert resp.status == 200
            await resp.read()
    assert host.requests == {specs[0].key: 2, specs[1].key: 1, specs[2].key: 1}


async def test_latency_delays_every_response(serve: Serve, corpus: Corpus) -> None:
    client, _host = await serve(latency=30.0)
    spec = next(s for s in corpus.query_results("latency") if s.fault is None)
    with pytest.raises(asyncio.TimeoutError):
        await client.get(f"/img/{spec.key}", timeout=aiohttp.ClientTimeout(total=0.2))
    with pytest.raises(asyncio.TimeoutError):
        await client.get("/img/unknown.jpg", timeout=aiohttp.ClientTimeout(total=0.2))


# -- status faults -----------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status"), [("http_404", 404), ("http_500", 500)])
async def test_permanent_errors(serve: Serve, corpus: Corpus, fault: str, status: int) -> None:
    client, host = await serve()
    for _ in range(3):
        resp = await client.get(f"/img/{key_of(corpus, fault)}")
        assert resp.status == status
        assert resp.content_type == "text/html"
    assert host.requests[key_of(corpus, fault)] == 3


async def test_transient_503_then_image(serve: Serve, corpus: Corpus) -> None:
    client, host = await serve(transient_failures=2, retry_after=1.5)
    key = key_of(corpus, "transient_503")
    statuses = []
    for _ in range(2):
        resp = await client.get(f"/img/{key}")
        statuses.append(resp.status)
        assert resp.headers["Retry-After"] == "1.5"
    resp = await client.get(f"/img/{key}")
    assert [*statuses, resp.status] == [503, 503, 200]
    assert await resp.read() == corpus.image_bytes(spec_of(corpus, "transient_503"))
    assert host.requests[key] == 3


async def test_transient_state_is_per_host_instance(serve: Serve, corpus: Corpus) -> None:
    key = key_of(corpus, "transient_503")
    first, _ = await serve(transient_failures=1)
    second, _ = await serve(transient_failures=1)
    assert (await first.get(f"/img/{key}")).status == 503
    assert (await second.get(f"/img/{key}")).status == 503
    assert (await first.get(f"/img/{key}")).status == 200


# -- slow faults -----------------------------------------------------------------------------


async def test_slow_headers_stall_then_serve(serve: Serve, corpus: Corpus) -> None:
    client, _host = await serve(slow_seconds=0.2)
    resp = await client.get(f"/img/{key_of(corpus, 'slow_headers')}")
    assert resp.status == 200
    assert await resp.read() == corpus.image_bytes(spec_of(corpus, "slow_headers"))


async def test_slow_headers_time_out_and_stop_when_client_leaves(
    serve: Serve, corpus: Corpus
) -> None:
    client, host = await serve(slow_seconds=60.0)
    with pytest.raises(asyncio.TimeoutError):
        await client.get(
            f"/img/{key_of(corpus, 'slow_headers')}",
            timeout=aiohttp.ClientTimeout(sock_read=0.2),
        )
    await asyncio.wait_for(host.wait_idle(), 10)
    assert host.bytes_sent == 0


async def test_slow_drip_sends_headers_then_trickles(serve: Serve, corpus: Corpus) -> None:
    client, host = await serve(slow_seconds=60.0)
    spec = spec_of(corpus, "slow_drip")
    size = len(corpus.image_bytes(spec))
    resp = await client.get(f"/img/{spec.key}")
    assert resp.status == 200
    assert resp.content_length == size
    pieces = [await resp.content.readany() for _ in range(4)]
    assert all(0 < len(piece) <= 64 for piece in pieces), [len(p) for p in pieces]
    assert b"".join(pieces) == corpus.image_bytes(spec)[: sum(map(len, pieces))]
    resp.close()
    await asyncio.wait_for(host.wait_idle(), 10)
    assert host.bytes_sent < 1000


async def test_slow_drip_completes_for_a_patient_client(serve: Serve, corpus: Corpus) -> None:
    client, _host = await serve(slow_seconds=0.6)
    spec = spec_of(corpus, "slow_drip")
    resp = await client.get(f"/img/{spec.key}")
    assert await resp.read() == corpus.image_bytes(spec)


# -- broken bodies -------------------------------------------------------------------------


async def test_truncated_body_closes_before_content_length(serve: Serve, corpus: Corpus) -> None:
    client, _host = await serve()
    spec = spec_of(corpus, "truncated_body")
    resp = await client.get(f"/img/{spec.key}")
    assert resp.status == 200
    assert resp.content_length == len(corpus.image_bytes(spec))
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    # The server is still healthy for the next request.
    assert (await client.get(f"/img/{key_of(corpus, 'http_404')}")).status == 404


async def test_truncated_image_has_honest_length_but_cut_data(serve: Serve, corpus: Corpus) -> None:
    client, _ = await serve()
    spec = spec_of(corpus, "truncated_image")
    resp = await client.get(f"/img/{spec.key}")
    body = await resp.read()
    full = corpus.image_bytes(spec)
    assert resp.content_length == len(body) == len(full) // 2
    assert body == full[: len(full) // 2]
    with Image.open(io.BytesIO(body)) as img, pytest.raises(OSError, match="truncated"):
        img.load()


@pytest.mark.parametrize(
    ("fault", "prefix"),
    [("html_as_jpeg", b"<!DOCTYPE html>"), ("svg_as_jpeg", b"<?xml"), ("random_bytes", b"")],
)
async def test_non_images_labelled_jpeg(
    serve: Serve, corpus: Corpus, fault: str, prefix: bytes
) -> None:
    client, _ = await serve()
    resp = await client.get(f"/img/{key_of(corpus, fault)}")
    body = await resp.read()
    assert resp.status == 200
    assert resp.content_type == "image/jpeg"
    assert body.startswith(prefix)
    assert len(body) > 100
    assert sniff_format(body) is None
    # Deterministic: the same URL serves the same bytes again.
    assert await (await client.get(f"/img/{key_of(corpus, fault)}")).read() == body


async def test_wrong_content_type_is_a_valid_image(serve: Serve, corpus: Corpus) -> None:
    client, _ = await serve()
    spec = spec_of(corpus, "wrong_content_type")
    resp = await client.get(f"/img/{spec.key}")
    body = await resp.read()
    assert resp.content_type == "text/html"
    assert sniff_format(body) == "jpeg"
    assert body == corpus.image_bytes(spec)


# -- bombs and huge bodies ---------------------------------------------------------------


async def test_bomb_is_a_small_valid_png_pillow_refuses(serve: Serve, corpus: Corpus) -> None:
    client, _ = await serve()
    resp = await client.get(f"/img/{key_of(corpus, 'bomb')}")
    body = await resp.read()
    assert resp.content_type == "image/png"
    assert len(body) < 1 * MiB
    width, height, depth, colour = struct.unpack(">IIBB", body[16:26])
    assert (width, height, depth, colour) == (*BOMB_SIZE, 1, 0)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(body))


def test_bomb_png_inflates_to_every_row() -> None:
    png = build_bomb_png(4000, 3000)  # same construction, smaller, so inflating it is quick
    length = struct.unpack(">I", png[33:37])[0]
    assert png[37:41] == b"IDAT"
    raw = zlib.decompress(png[41 : 41 + length])  # also checks the Adler-32
    assert raw == bytes(3000 * (1 + 4000 // 8))
    with Image.open(io.BytesIO(png)) as img:
        assert (img.size, img.mode) == ((4000, 3000), "1")
        img.load()


async def test_gzip_bomb_is_small_on_the_wire_huge_inflated(serve: Serve, corpus: Corpus) -> None:
    client, _ = await serve()
    resp = await client.get(f"/img/{key_of(corpus, 'gzip_bomb')}", auto_decompress=False)
    body = await resp.read()
    assert resp.headers["Content-Encoding"] == "gzip"
    assert len(body) < 2 * MiB
    assert struct.unpack("<I", body[-4:])[0] == GZIP_BOMB_BYTES & 0xFFFFFFFF
    inflater = zlib.decompressobj(wbits=31)
    head = inflater.decompress(body[:4096], 64)
    assert sniff_format(head) == "jpeg"


def test_gzip_bomb_member_is_valid() -> None:
    small = build_gzip_bomb(5 * MiB + 123)  # the same construction, quick to inflate fully
    inflated = zlib.decompress(small, wbits=31)  # checks CRC-32 and length
    assert len(inflated) == 5 * MiB + 123
    assert sniff_format(inflated[:16]) == "jpeg"
    assert inflated.rstrip(b"\x00").endswith(b"\xff\xd9")


async def _read_all(resp: aiohttp.ClientResponse) -> tuple[int, bytes]:
    total, head = 0, b""
    async for chunk in resp.content.iter_chunked(MiB):
        if not head:
            head = chunk[:16]
        total += len(chunk)
    return total, head


@pytest.mark.parametrize(("fault", "chunked"), [("oversize", False), ("oversize_chunked", True)])
async def test_oversize_streams_without_buffering(
    serve: Serve, corpus: Corpus, fault: str, chunked: bool
) -> None:
    client, _host = await serve()
    await client.get(f"/img/{key_of(corpus, fault)}", auto_decompress=False)  # warm the picture
    tracemalloc.start()
    try:
        resp = await client.get(f"/img/{key_of(corpus, fault)}")
        total, head = await _read_all(resp)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 25 * MiB
    assert sniff_format(head) == "jpeg"
    assert (resp.content_length is None) == chunked
    assert (resp.headers.get("Transfer-Encoding") == "chunked") == chunked
    assert peak < 6 * MiB, f"peak traced memory {peak} while streaming 25 MiB"


async def test_huge_chunked_stops_when_client_leaves(serve: Serve, corpus: Corpus) -> None:
    client, host = await serve()
    tracemalloc.start()
    try:
        resp = await client.get(f"/img/{key_of(corpus, 'huge_chunked')}")
        assert resp.headers["Transfer-Encoding"] == "chunked"
        got = 0
        while got < MiB:
            got += len(await resp.content.read(64 * 1024))
        resp.close()
        await asyncio.wait_for(host.wait_idle(), 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert host.bytes_sent < 64 * MiB
    assert peak < 6 * MiB


# -- redirects -------------------------------------------------------------------------------


async def test_redirect_goes_to_the_original_on_the_same_host(serve: Serve, corpus: Corpus) -> None:
    client, _host = await serve()
    spec = spec_of(corpus, "redirect")
    resp = await client.get(f"/img/{spec.key}", allow_redirects=False)
    assert resp.status == 302
    location = resp.headers["Location"]
    assert location.startswith(str(client.make_url("/img/b/")))
    resp = await client.get(f"/img/{spec.key}")
    assert resp.status == 200
    assert len(resp.history) == 1
    assert await resp.read() == corpus.base_bytes(spec.base)
    target = corpus.spec(location.split("/img/", 1)[1])
    assert target is not None
    assert (target.base, target.fault, target.variant) == (spec.base, None, "original")


async def test_redirect_loop_never_ends(serve: Serve, corpus: Corpus) -> None:
    client, host = await serve()
    key = key_of(corpus, "redirect_loop")
    first = await client.get(f"/img/{key}", allow_redirects=False)
    second = await client.session.get(first.headers["Location"], allow_redirects=False)
    assert first.status == second.status == 302
    assert second.headers["Location"].split("?")[0] == first.headers["Location"].split("?")[0]
    with pytest.raises(aiohttp.TooManyRedirects):
        await client.get(f"/img/{key}", max_redirects=7)
    assert host.requests[key] == 2 + 7  # the first request and 6 followed hops


# -- coverage of the whole list ---------------------------------------------------------------


async def test_every_fault_kind_of_a_query_is_served(serve: Serve, corpus: Corpus) -> None:
    """Faults reached through query result URLs behave like the examples (spot check)."""
    client, host = await serve(slow_seconds=0.0, oversize_bytes=2 * MiB)
    faults = {s.fault: s for s in corpus.query_results("every fault") if s.fault}
    assert set(faults) == set(FAULT_KINDS)
    expected = {"http_404": 404, "http_500": 500, "transient_503": 503, "redirect": 302}
    expected |= {"redirect_loop": 302}
    streams = {"truncated_body", "oversize", "oversize_chunked", "huge_chunked"}
    for kind, spec in faults.items():
        resp = await client.get(f"/img/{spec.key}", allow_redirects=False, auto_decompress=False)
        assert resp.status == expected.get(kind, 200), kind
        if kind not in streams:
            await resp.read()
        resp.close()
    assert host.requests.total() == len(FAULT_KINDS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("latency", -1.0),
        ("slow_seconds", float("inf")),
        ("oversize_bytes", 0),
        ("transient_failures", -1),
        ("retry_after", "1"),
    ],
)
def test_config_validation_names_the_option(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        ImageHostConfig(**{field: value})  # type: ignore[arg-type]
    assert info.value.option == field


# -- handlers stop by themselves when the server does not cancel them ------------------------


@pytest.mark.parametrize("fault", ["slow_headers", "slow_drip", "huge_chunked"])
async def test_streams_stop_without_handler_cancellation(
    plain_server: tuple[str, ImageHost], corpus: Corpus, fault: str
) -> None:
    base_url, host = plain_server
    async with aiohttp.ClientSession() as session:
        timeout = aiohttp.ClientTimeout(sock_read=0.3)
        with contextlib.suppress(asyncio.TimeoutError):
            async with session.get(
                f"{base_url}/img/{key_of(corpus, fault)}", timeout=timeout
            ) as resp:
                assert resp.status == 200
                await resp.content.read(64 * 1024)
    await asyncio.wait_for(host.wait_idle(), 10)
    assert host.requests[key_of(corpus, fault)] == 1
    assert host.bytes_sent < 64 * MiB
