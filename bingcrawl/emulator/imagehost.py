"""The emulator's image host: aiohttp.web routes serving the corpus, faults included.

``GET`` and ``HEAD /img/{key}`` serve the bytes of :meth:`Corpus.spec(key)
<bingcrawl.emulator.corpus.Corpus.spec>`, or misbehave the way its ``fault`` says:

=====================  =====================================================================
``http_404/http_500``  a permanent error status with a small HTML body
``transient_503``      the first ``transient_failures`` requests of the URL answer 503 with
                       ``Retry-After``; later ones serve the image
``slow_headers``       stalls ``slow_seconds`` before the status line, then serves the image
``slow_drip``          sends headers, then a few bytes per second for ``slow_seconds``, then
                       the rest of the image
``truncated_body``     announces the full Content-Length, sends half, closes the connection
``truncated_image``    a correct Content-Length for an image cut in half
``html_as_jpeg``       an HTML page labelled ``image/jpeg`` (also ``svg_as_jpeg``,
                       ``random_bytes``)
``bomb``               a ~300 KB PNG of 50,000 x 50,000 1-bit pixels
``oversize``           ``oversize_bytes`` (a JPEG, then padding) with Content-Length; also
                       ``oversize_chunked`` (no length) and ``huge_chunked`` (1 GiB, chunked)
``gzip_bomb``          ``Content-Encoding: gzip``, ~1 MB on the wire, more than 1 GiB inflated
``redirect``           302 to the base's canonical URL on this host (a success case)
``redirect_loop``      302 between two URLs of the same key, forever
``wrong_content_type`` a valid image labelled ``text/html`` (a success case)
=====================  =====================================================================

Publishers' opt-outs (what :mod:`bingcrawl.fetch.etiquette` honours), for tests and demos:

* ``/robots.txt`` serves ``robots_txt`` (404 when None) with status ``robots_status``
  (e.g. 503: an origin that cannot say), ``/.well-known/tdmrep.json`` serves ``tdmrep_json``
  (404 when None); :attr:`ImageHost.origin_requests` counts both by ``Host`` header;
* an image answers with the ``headers`` of the config, and with the opt-out headers its
  URL's query names (``?x-robots-tag=noai``, ``tdm-reservation=1``, ``content-usage=...``,
  ``content-signal=...``; any of :data:`SIGNAL_HEADERS`), the way a publisher would mark
  some images and not others.

With a :class:`~bingcrawl.emulator.network.NetworkProfile` as ``network``, the host plays
a web of many servers: each ``/img/`` request behaves as the host named by its ``Host``
header (port stripped, lowercased) would, and waits that host's jittered latency
(:meth:`NetworkProfile.delay <bingcrawl.emulator.network.NetworkProfile.delay>`) instead of
``latency``:

=====================  =====================================================================
``hang`` host          accepts the request and never sends a status line (it waits until
                       the client leaves, at most an hour, then drops the connection)
error key              on any host that answers: after the wait, the status of
                       ``NetworkProfile.error(key)`` (404, 403, 500 or 503) with a small
                       HTML body; a 503 (with ``Retry-After: retry_after``) only to the
                       first request of its key, later ones go on as below
``drip`` host          the headers (full Content-Length), then the body at ``drip_rate``
                       bytes/s in a piece every 0.25 s; after ``drip_max`` seconds the rest
                       at once (a corpus fault key keeps its fault instead)
``normal`` host        serves as without a profile, corpus faults included
=====================  =====================================================================

``/robots.txt`` and ``/.well-known/tdmrep.json`` answer at once on every host, as above.
:attr:`ImageHost.network_requests` counts the image requests by what the network did.

Large bodies are streamed from one reusable chunk, so memory stays flat; every streaming or
stalling handler stops as soon as the client goes away, whether or not the server cancels
handlers on disconnect.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import http
import io
import logging
import math
import random
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from PIL import Image

from bingcrawl.emulator.corpus import (
    BOMB_SIZE,
    EXTENSIONS,
    FAULT_KINDS,
    MIME_TYPES,
    Corpus,
    ImageSpec,
)
from bingcrawl.emulator.network import TRANSIENT_STATUS, NetworkProfile, host_name
from bingcrawl.emulator.synth import stable_hash
from bingcrawl.errors import ConfigError
from bingcrawl.imaging.sniff import sniff_format

__all__ = [
    "FAULT_KINDS",
    "GZIP_BOMB_BYTES",
    "HUGE_BYTES",
    "SIGNAL_HEADERS",
    "ImageHost",
    "ImageHostConfig",
    "NetworkProfile",
]

log = logging.getLogger(__name__)

#: Length of the ``huge_chunked`` stream.
HUGE_BYTES = 1 << 30
#: Inflated length of the ``gzip_bomb`` body (its compressed length is about 1/1000 of it).
GZIP_BOMB_BYTES = (1 << 30) + (1 << 20)

_CHUNK = 1 << 16
_YIELD_EVERY = 1 << 20  # streaming handlers yield to the event loop at least this often
_ZERO_BLOCK = 1 << 20  # deflate input unit of the bombs: 1 MiB of zeros -> ~1 KB
_DRIP_BYTES = 8
_DRIP_INTERVAL = 0.25
_STALL_SLICE = 0.1  # how often a stalled handler checks that the client is still there
_HANG_SECONDS = 3600.0  # how long a hanging host holds a request before dropping it
_TRANSIENT_KEYS = 100_000  # keys remembered as having had their network 503

#: Opt-out headers an image URL's query can ask for (``?x-robots-tag=noai``).
SIGNAL_HEADERS: tuple[str, ...] = (
    "X-Robots-Tag",
    "tdm-reservation",
    "tdm-policy",
    "Content-Usage",
    "Content-Signal",
)

_FaultHandler = Callable[[web.Request, ImageSpec], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ImageHostConfig:
    """How the image host behaves (see the module docstring for what each fault does)."""

    latency: float = 0.0
    slow_seconds: float = 30.0
    oversize_bytes: int = 25 * 1024 * 1024
    transient_failures: int = 2
    retry_after: float = 1.0
    #: Served at /robots.txt (None: 404), with this status.
    robots_txt: str | None = None
    robots_status: int = 200
    #: Served at /.well-known/tdmrep.json (None: 404).
    tdmrep_json: str | None = None
    #: Headers of every image response, e.g. (("X-Robots-Tag", "noai"),).
    headers: tuple[tuple[str, str], ...] = ()
    #: Behave per ``Host`` name like the web (None: one host, ``latency`` for every image).
    network: NetworkProfile | None = None

    def __post_init__(self) -> None:
        if self.network is not None and not isinstance(self.network, NetworkProfile):
            raise ConfigError("network", f"must be a NetworkProfile or None, got {self.network!r}")
        if not 100 <= self.robots_status <= 599:
            raise ConfigError("robots_status", f"must be an HTTP status, got {self.robots_status}")
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in self.headers))
        for name in ("latency", "slow_seconds", "retry_after"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value < math.inf:
                raise ConfigError(name, f"must be a finite number >= 0, got {value!r}")
        for name, low in (("oversize_bytes", 1), ("transient_failures", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(name, f"must be an integer >= {low}, got {value!r}")


def _zero_deflate(total: int) -> bytes:
    """A raw deflate stream of ``total`` zero bytes without compressing them all.

    After a full flush the compressor starts afresh, so every 1 MiB block of zeros compresses
    to the same bytes: compress one block, repeat it, compress the remainder separately.
    The stream is not final: the caller appends a final block.
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(_ZERO_BLOCK)) + comp.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(total, _ZERO_BLOCK)
    tail_comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = tail_comp.compress(bytes(rest)) + tail_comp.flush(zlib.Z_FULL_FLUSH)
    return block * count + tail


def _final_empty_block() -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return comp.flush(zlib.Z_FINISH)


def build_bomb_png(width: int = BOMB_SIZE[0], height: int = BOMB_SIZE[1]) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels, in ~1/1000 of the
    raw size (about 300 KB for the default 50,000 x 50,000)."""
    raw = height * (1 + (width + 7) // 8)  # filter byte + packed row, all zero
    stream = _zero_deflate(raw)
    adler = ((raw % 65521) << 16) | 1  # adler32 of zeros: a stays 1, b counts the bytes
    idat = b"\x78\xda" + stream + _final_empty_block() + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def build_gzip_bomb(inflated: int = GZIP_BOMB_BYTES) -> bytes:
    """A gzip member that inflates to a tiny JPEG followed by zeros, ``inflated`` bytes in all."""
    picture = io.BytesIO()
    Image.new("L", (8, 8), 128).save(picture, "JPEG")
    head = picture.getvalue()
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    zeros = _zero_deflate(inflated - len(head))
    crc = zlib.crc32(head)
    block = bytes(_ZERO_BLOCK)
    count, rest = divmod(inflated - len(head), _ZERO_BLOCK)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(bytes(rest), crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, inflated & 0xFFFFFFFF)
    return header + first + zeros + _final_empty_block() + trailer


@functools.cache
def gzip_bomb() -> bytes:
    """:func:`build_gzip_bomb` at its default size, built once per process."""
    return build_gzip_bomb()


def _html_page(spec: ImageSpec) -> bytes:
    return (
        "<!DOCTYPE html>\n<html><head><title>"
        f"{spec.name}</title></head>\n<body><h1>{spec.name}</h1>"
        '<p>This image is no longer available. <a href="/">Home</a></p>'
        "</body></html>\n"
    ).encode()


def _svg_document(spec: ImageSpec) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{spec.width}" height="{spec.height}">'
        f'<rect width="100%" height="100%" fill="#{spec.color}"/>'
        '<circle cx="50%" cy="50%" r="25%" fill="#ffffff" opacity="0.5"/></svg>\n'
    ).encode()


def _random_bytes(spec: ImageSpec) -> bytes:
    rng = random.Random(stable_hash("random-bytes", spec.key))
    out = bytearray(rng.randbytes(2048 + rng.randrange(30_000)))
    if sniff_format(bytes(out[:16])) is not None:  # a chance hit on a magic number
        out[0] ^= 0x55
    return bytes(out)


class ImageHost:
    """Serves the corpus's image URLs with their faults; one instance per server.

    ``requests`` counts requests per key (GET and HEAD, every redirect hop, unknown keys
    too): the ground truth for "each URL fetched at most once". A request is counted once
    its latency has passed (a client that leaves during it is not), one to a hanging host
    when it arrives. ``bytes_sent`` counts body bytes handed to the transport. Per-URL state
    (the transient 503 counters) lives here, not in the corpus.
    """

    def __init__(self, corpus: Corpus, config: ImageHostConfig | None = None) -> None:
        self.corpus = corpus
        self.config = config if config is not None else ImageHostConfig()
        self.requests: collections.Counter[str] = collections.Counter()
        #: Image requests by User-Agent.
        self.user_agents: collections.Counter[str] = collections.Counter()
        #: Requests of /robots.txt and /.well-known/tdmrep.json, by ``"<Host header><path>"``.
        self.origin_requests: collections.Counter[str] = collections.Counter()
        #: With a network profile: image requests by what the network did with them:
        #: ``hang``, ``error_404`` / ``error_403`` / ``error_500`` / ``error_503``, ``drip``,
        #: ``normal`` (served as without a profile, corpus faults and unknown keys included)
        #: and ``left`` (the client went away during the host's latency).
        self.network_requests: collections.Counter[str] = collections.Counter()
        self._transient_answered: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.bytes_sent = 0
        self.active = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._bomb_png: bytes | None = None
        self._gzip_bomb: asyncio.Future[bytes] | None = None
        self._fault_handlers = self._handlers()
        missing = set(FAULT_KINDS) - set(self._fault_handlers)
        assert not missing, f"no handler for {missing}"

    def routes(self) -> list[web.AbstractRouteDef]:
        """``GET`` (and ``HEAD``) ``/img/{key}``, ``/robots.txt``, ``/.well-known/tdmrep.json``."""
        return [
            web.get("/img/{key:.+}", self.handle),
            web.get("/robots.txt", self.robots),
            web.get("/.well-known/tdmrep.json", self.tdmrep),
        ]

    async def robots(self, request: web.Request) -> web.StreamResponse:
        """The origin's robots.txt (see the module docstring)."""
        self.origin_requests[f"{request.host}{request.path}"] += 1
        text = self.config.robots_txt
        if text is None:
            return web.Response(status=404, text="no robots.txt here\n")
        return web.Response(status=self.config.robots_status, text=text)

    async def tdmrep(self, request: web.Request) -> web.StreamResponse:
        """The origin's TDMRep file (see the module docstring)."""
        self.origin_requests[f"{request.host}{request.path}"] += 1
        if self.config.tdmrep_json is None:
            return web.Response(status=404, text="no tdmrep.json here\n")
        return web.Response(text=self.config.tdmrep_json, content_type="application/json")

    async def wait_idle(self) -> None:
        """Return once no request is being handled (e.g. a stream noticed its client left)."""
        while self.active:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one image request (the route handler)."""
        self.active += 1
        try:
            return await self._handle(request)
        finally:
            self.active -= 1
            if not self.active:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if self.config.network is not None:
            return await self._on_the_web(request, key, self.config.network)
        if self.config.latency and not await self._stall(request, self.config.latency):
            return web.Response(status=499)  # the client left during the latency
        self._count(request, key)
        return await self._serve(request, self.corpus.spec(key))

    def _count(self, request: web.Request, key: str) -> None:
        self.requests[key] += 1
        self.user_agents[request.headers.get("User-Agent", "")] += 1

    async def _serve(self, request: web.Request, spec: ImageSpec | None) -> web.StreamResponse:
        """The answer of the corpus alone: the image, its fault, or 404 for an unknown key."""
        if spec is None:
            return self._simple(request, 404, b"<html><body>Not Found</body></html>", "text/html")
        if spec.fault is None:
            return await self._image(request, spec)
        return await self._fault_handlers[spec.fault](request, spec)

    async def _on_the_web(
        self, request: web.Request, key: str, network: NetworkProfile
    ) -> web.StreamResponse:
        """Answer as the host of the ``Host`` header would (see the module docstring)."""
        name = host_name(request.host)
        traits = network.host(name)
        if traits.behaviour == "hang":
            self._count(request, key)
            self.network_requests["hang"] += 1
            await self._stall(request, _HANG_SECONDS)
            if request.transport is not None:
                request.transport.close()  # never a status line, even after the hour
            return web.Response(status=499)
        if not await self._stall(request, network.delay(name, key)):
            self.network_requests["left"] += 1
            return web.Response(status=499)  # the client left during the latency
        self._count(request, key)
        status = network.error(key)
        if status is not None and (status != TRANSIENT_STATUS or self._first_transient(key)):
            self.network_requests[f"error_{status}"] += 1
            phrase = http.HTTPStatus(status).phrase
            body = f"<html><body><h1>{status} {phrase}</h1></body></html>".encode()
            headers = None
            if status == TRANSIENT_STATUS:
                headers = {"Retry-After": f"{self.config.retry_after:g}"}
            return self._simple(request, status, body, "text/html", headers)
        spec = self.corpus.spec(key)
        if traits.behaviour == "drip" and spec is not None and spec.fault is None:
            self.network_requests["drip"] += 1
            return await self._trickle(
                request,
                spec,
                await self._picture(spec),
                MIME_TYPES[spec.format],
                self._image_headers(request),
                piece=max(1, round(network.drip_rate * _DRIP_INTERVAL)),
                seconds=network.drip_max,
            )
        self.network_requests["normal"] += 1
        return await self._serve(request, spec)

    def _first_transient(self, key: str) -> bool:
        """True for the first request of ``key`` (a bounded memory of the keys seen)."""
        if key in self._transient_answered:
            return False
        self._transient_answered[key] = None
        if len(self._transient_answered) > _TRANSIENT_KEYS:
            self._transient_answered.popitem(last=False)
        return True

    def _handlers(self) -> dict[str, _FaultHandler]:
        """Fault kind -> the handler that produces it (every kind of FAULT_KINDS)."""
        return {
            "http_404": self._http_error,
            "http_500": self._http_error,
            "transient_503": self._transient_503,
            "slow_headers": self._slow_headers,
            "slow_drip": self._drip,
            "truncated_body": self._truncated_body,
            "truncated_image": self._truncated_image,
            "html_as_jpeg": self._mislabelled,
            "svg_as_jpeg": self._mislabelled,
            "random_bytes": self._mislabelled,
            "bomb": self._bomb,
            "oversize": self._oversize,
            "oversize_chunked": self._oversize,
            "huge_chunked": self._oversize,
            "gzip_bomb": self._gzip,
            "redirect": self._redirect,
            "redirect_loop": self._redirect,
            "wrong_content_type": self._wrong_content_type,
        }

    # -- one handler per fault (family) ---------------------------------------------------

    async def _http_error(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        status = 404 if spec.fault == "http_404" else 500
        body = f"<html><body><h1>{status}</h1></body></html>".encode()
        return self._simple(request, status, body, "text/html")

    async def _transient_503(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        if self.requests[spec.key] <= self.config.transient_failures:
            headers = {"Retry-After": f"{self.config.retry_after:g}"}
            body = b"<html><body>Service Unavailable</body></html>"
            return self._simple(request, 503, body, "text/html", headers)
        return await self._image(request, spec)

    async def _slow_headers(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        if await self._stall(request, self.config.slow_seconds):
            return await self._image(request, spec)
        return web.Response(status=499)  # nobody is listening any more

    async def _truncated_image(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        data = await self._picture(spec)
        return self._simple(request, 200, data[: len(data) // 2], "image/jpeg")

    async def _mislabelled(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        if spec.fault == "html_as_jpeg":
            body = _html_page(spec)
        elif spec.fault == "svg_as_jpeg":
            body = _svg_document(spec)
        else:
            body = _random_bytes(spec)
        return self._simple(request, 200, body, "image/jpeg")

    async def _bomb(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        if self._bomb_png is None:
            self._bomb_png = await asyncio.to_thread(build_bomb_png)
        return self._simple(request, 200, self._bomb_png, "image/png")

    async def _oversize(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        size = HUGE_BYTES if spec.fault == "huge_chunked" else self.config.oversize_bytes
        return await self._stream(request, spec, size, with_length=spec.fault == "oversize")

    async def _gzip(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        # One build for every request that arrives while it runs (and, through the cache,
        # for every host of the process): concurrent first requests must not each spend
        # ~0.3 s of CPU and keep a client waiting for its headers past its deadline.
        if self._gzip_bomb is None:
            self._gzip_bomb = asyncio.ensure_future(asyncio.to_thread(gzip_bomb))
        body = await asyncio.shield(self._gzip_bomb)
        headers = {"Content-Encoding": "gzip"}
        return self._simple(request, 200, body, "image/jpeg", headers)

    async def _redirect(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        if spec.fault == "redirect":
            target, query = f"b/{spec.base:014x}.{EXTENSIONS['jpeg']}", {}
        else:  # redirect_loop: bounce between the URL with and without ?hop=1, forever
            target, query = spec.key, ({} if request.query.get("hop") == "1" else {"hop": "1"})
        # Keep whatever prefix the routes are mounted under.
        prefix = request.path[: len(request.path) - len(spec.key)]
        location = request.url.with_path(prefix + target).with_query(query)
        return web.Response(status=302, headers={"Location": str(location)})

    async def _wrong_content_type(
        self, request: web.Request, spec: ImageSpec
    ) -> web.StreamResponse:
        return self._simple(request, 200, await self._picture(spec), "text/html")

    # -- building blocks -----------------------------------------------------------------

    async def _picture(self, spec: ImageSpec) -> bytes:
        """The image bytes of ``spec``, rendered off the event loop when not cached."""
        data = self.corpus.cached_bytes(spec)
        if data is None:
            data = await asyncio.to_thread(self.corpus.image_bytes, spec)
        return data

    def _image_headers(self, request: web.Request) -> dict[str, str]:
        """The config's image headers and the opt-out headers the URL's query asks for."""
        headers = dict(self.config.headers)
        asked = {name.lower(): value for name, value in request.query.items()}
        for name in SIGNAL_HEADERS:
            if name.lower() in asked:
                headers[name] = asked[name.lower()]
        return headers

    async def _image(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        fmt = spec.format if spec.fault is None else "jpeg"
        headers = self._image_headers(request)
        return self._simple(
            request, 200, await self._picture(spec), MIME_TYPES[fmt], headers or None
        )

    def _simple(
        self,
        request: web.Request,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        resp = web.Response(status=status, body=body, headers=headers)
        resp.content_type = content_type
        if request.method != "HEAD":
            self.bytes_sent += len(body)
        return resp

    @staticmethod
    def _client_gone(request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    async def _stall(self, request: web.Request, seconds: float) -> bool:
        """Wait ``seconds``; ``False`` as soon as the client disconnects."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            if self._client_gone(request):
                return False
            await asyncio.sleep(min(_STALL_SLICE, left))
        return not self._client_gone(request)

    async def _drip(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        data = await self._picture(spec)
        seconds = self.config.slow_seconds
        return await self._trickle(
            request, spec, data, "image/jpeg", {}, piece=_DRIP_BYTES, seconds=seconds
        )

    async def _trickle(
        self,
        request: web.Request,
        spec: ImageSpec,
        data: bytes,
        content_type: str,
        headers: dict[str, str],
        *,
        piece: int,
        seconds: float,
    ) -> web.StreamResponse:
        """Headers with the full Content-Length, then ``piece`` bytes of ``data`` every
        0.25 s; after ``seconds`` the rest at once. Stops as soon as the client leaves."""
        resp = web.StreamResponse(headers=headers)
        resp.content_type = content_type
        resp.content_length = len(data)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        sent = 0
        try:
            while sent < len(data) and not self._client_gone(request):
                end = sent + piece if loop.time() < deadline else len(data)
                chunk = data[sent:end]
                await resp.write(chunk)
                sent += len(chunk)
                self.bytes_sent += len(chunk)
                if sent < len(data):
                    await asyncio.sleep(_DRIP_INTERVAL)
        except ConnectionError:
            pass
        if sent < len(data):
            log.debug("dripping client left after %d bytes of %s", sent, spec.key)
        return resp

    async def _truncated_body(self, request: web.Request, spec: ImageSpec) -> web.StreamResponse:
        data = await self._picture(spec)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(data)
        resp.force_close()
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        half = data[: len(data) // 2]
        try:
            await resp.write(half)
            self.bytes_sent += len(half)
        except ConnectionError:
            return resp
        if request.transport is not None:
            # close() flushes what was written, then drops the connection mid-body;
            # aiohttp's own write_eof then finds the transport closing and gives up quietly.
            request.transport.close()
        return resp

    async def _stream(
        self, request: web.Request, spec: ImageSpec, size: int, *, with_length: bool
    ) -> web.StreamResponse:
        """``size`` bytes: the picture, then zero padding, written from one reused chunk."""
        head = await self._picture(spec)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        if with_length:
            resp.content_length = size
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        padding = memoryview(bytes(_CHUNK))
        sent = 0
        try:
            first = head[:size]
            await resp.write(first)
            sent += len(first)
            while sent < size:
                piece = padding[: min(_CHUNK, size - sent)]
                await resp.write(piece)
                sent += len(piece)
                if sent % _YIELD_EVERY < _CHUNK:
                    # A reader as fast as the socket never makes write() wait: let the
                    # rest of the server (the API, other downloads) run now and then.
                    await asyncio.sleep(0)
        except ConnectionError:
            log.debug("client left %s after %d of %d bytes", spec.key, sent, size)
        finally:
            self.bytes_sent += sent
        return resp
