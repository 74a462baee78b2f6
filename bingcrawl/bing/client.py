"""An asyncio client of the Bing Image Search API v7: one HTTP request per method call.

:class:`BingClient` owns one ``aiohttp.ClientSession`` used for the API only (image downloads
have their own). It never retries and never rate-limits: the pipeline wraps every call with
one limiter and its retry policy, so the client's job is to speak the protocol exactly and to
turn every answer into either a typed model or the most specific error of
:mod:`bingcrawl.errors`:

=====================================================  ====================================
answer                                                 raises
=====================================================  ====================================
401 (InvalidAuthorization)                             AuthenticationError
403 InsufficientAuthorization                          AuthenticationError
403 RateLimitExceeded (monthly quota)                  QuotaExceededError
429 RateLimitExceeded (QPS)                            ThrottledError(retry_after=...)
200 with an empty or non-JSON body (DoS throttle)      ThrottledError(retry_after=None)
400 InvalidRequest                                     InvalidRequestError(parameter, value)
404 / 410 HttpNotAllowed / 5xx                         NotFoundError / HttpNotAllowedError /
                                                       ServerError
3xx (never followed)                                   ApiError
200 with JSON of the wrong ``_type``                   ResponseFormatError (a ServerError)
connection refused / reset, DNS, timeout               ApiConnectionError
=====================================================  ====================================

The subscription key appears in no log line, exception text or repr.
"""

from __future__ import annotations

import asyncio
import enum
import io
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from PIL import Image as PILImage
from PIL import ImageOps

from bingcrawl.bing.models import (
    ImageInsights,
    ImageKnowledge,
    Images,
    ResponseFormatError,
    TrendingImages,
    parse_error_response,
)
from bingcrawl.bing.params import (
    DEFAULT_ENDPOINT,
    DetailsParams,
    SearchParams,
    TrendingParams,
    VisualSearchParams,
)
from bingcrawl.errors import (
    ApiConnectionError,
    ApiError,
    AuthenticationError,
    ConfigError,
    HttpNotAllowedError,
    InvalidParameterError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    ServerError,
    ThrottledError,
    parse_retry_after,
    redact,
)
from bingcrawl.obs.logs import secret_forms

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_USER_AGENT",
    "ENDPOINT_PATHS",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_SIDE",
    "ApiCall",
    "BingClient",
    "Upload",
    "error_from_response",
    "prepare_upload",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: The reference asks for "the same string that any commonly used browser sends".
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
ENDPOINT_PATHS: Mapping[str, str] = MappingProxyType(
    {
        "search": "v7.0/images/search",
        "details": "v7.0/images/details",
        "trending": "v7.0/images/trending",
        "visualsearch": "v7.0/images/visualsearch",
    }
)
#: Visual-search uploads: at most 1 MB (read conservatively as 10**6 bytes) and 1,500 px.
MAX_UPLOAD_BYTES = 1_000_000
MAX_UPLOAD_SIDE = 1500
#: API answers are small JSON documents; anything far larger is refused, not buffered.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# A client ID is echoed in a header: keep only a plain token (Bing issues 32 hex digits).
_CLIENT_ID = re.compile(r"^[!-~]{1,256}$")
# Formats sent unchanged when already within the upload limits.
_PASSTHROUGH = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP"})

#: Failures that happen before a connection exists: the request never left.
NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)


@dataclass(frozen=True, slots=True)
class ApiCall:
    """What one API call got back; ``status`` is 0 when no HTTP response arrived."""

    endpoint: str
    status: int
    elapsed: float
    trace_id: str | None = None
    market: str | None = None


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


_BY_STATUS: Mapping[int, type[ApiError]] = MappingProxyType({
    400: InvalidRequestError, 404: NotFoundError, 410: HttpNotAllowedError, 429: ThrottledError,
})  # fmt: skip
_BY_CODE: Mapping[str, type[ApiError]] = MappingProxyType({
    "RateLimitExceeded": ThrottledError, "InvalidAuthorization": AuthenticationError,
    "InsufficientAuthorization": AuthenticationError, "InvalidRequest": InvalidRequestError,
    "ServerError": ServerError,
})  # fmt: skip


def _error_class(
    status: int, code: str | None, sub_code: str | None, retry_after: bool
) -> type[ApiError]:
    if 300 <= status < 400:
        return ApiError
    if status == 401:
        return AuthenticationError
    if status == 403:
        if code == "RateLimitExceeded":
            return QuotaExceededError
        # Without a body, Retry-After is the reference's sign of a per-month (QPM) refusal.
        return QuotaExceededError if code is None and retry_after else AuthenticationError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    if sub_code == "HttpNotAllowed":
        return HttpNotAllowedError
    return _BY_CODE.get(code or "", ApiError)


def error_from_response(
    endpoint: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: tuple[str | None, ...] = (),
) -> ApiError:
    """The most specific :class:`ApiError` for an error answer (status and ErrorResponse body).

    Every text that goes into the error passes through :func:`redact` with ``secrets`` in
    every spelling of :func:`~bingcrawl.obs.logs.secret_forms` (an API or a proxy may echo
    the key, percent-encoded, in its message).
    """
    secrets = tuple(form for secret in secrets if secret for form in secret_forms(secret))
    try:
        details = parse_error_response(orjson.loads(body)) if body.strip() else ()
    except orjson.JSONDecodeError:
        details = ()
    first = details[0] if details else None
    code = first.code if first else None
    sub_code = first.sub_code if first else None
    trace_id = headers.get("BingAPIs-TraceId")
    retry_header = headers.get("Retry-After")
    cls = _error_class(status, code, sub_code, retry_header is not None)
    text = f"{endpoint}: HTTP {status}"
    if code:
        text += f" {code}" + (f"/{sub_code}" if sub_code else "")
    if first and (first.message or first.more_details):
        text += ": " + " ".join(filter(None, (first.message, first.more_details)))
    if first and first.parameter:
        text += f" (parameter {first.parameter}" + (f"={first.value!r})" if first.value else ")")
    if 300 <= status < 400:
        text += f"; redirect to {headers.get('Location')!r} not followed (the API never redirects)"
    if trace_id:
        text += f" [BingAPIs-TraceId {trace_id}]"
    kw: dict[str, Any] = {
        "status": status,
        "code": code,
        "sub_code": sub_code,
        "parameter": redact(first.parameter, *secrets) if first and first.parameter else None,
        "value": redact(first.value, *secrets) if first and first.value else None,
        "trace_id": trace_id,
    }
    if cls is ThrottledError:
        kw["retry_after"] = parse_retry_after(retry_header)
    error: ApiError = cls(redact(text, *secrets), **kw)
    return error


@dataclass(frozen=True, slots=True)
class Upload:
    """An image ready for a visual-search upload (see :func:`prepare_upload`)."""

    data: bytes
    content_type: str

    @classmethod
    def prepare(cls, data: bytes) -> Upload:
        """Fit ``data`` for an upload (CPU-bound: run it in a thread)."""
        return cls(*prepare_upload(data))


def prepare_upload(
    data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_side: int = MAX_UPLOAD_SIDE
) -> tuple[bytes, str]:
    """Fit an image for a visual-search upload: ``(bytes, content type)``.

    An image already within ``max_side`` pixels and ``max_bytes`` in a common format is sent
    unchanged; anything else is decoded (JPEG draft mode), oriented by its EXIF tag,
    downscaled and re-encoded as JPEG until it fits. CPU-bound: run it in a thread.
    """
    accepted = "a JPEG, PNG, GIF, WebP or BMP image that Pillow can decode"
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            if img.format in _PASSTHROUGH and max(img.size) <= max_side and len(data) <= max_bytes:
                img.load()  # refuse truncated bytes before they travel
                return data, PILImage.MIME.get(img.format or "", "image/jpeg")
            img.draft("RGB", (max_side, max_side))
            picture = ImageOps.exif_transpose(img)
            picture.load()
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
        raise InvalidParameterError("image", f"<{len(data)} bytes>", accepted) from exc
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        flat = PILImage.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        picture = flat
    elif picture.mode != "RGB":
        picture = picture.convert("RGB")
    picture.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
    qualities = iter((85, 70))
    quality = 90
    while True:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue(), "image/jpeg"
        next_quality = next(qualities, None)
        if next_quality is not None:
            quality = next_quality
            continue
        # Bytes grow roughly with the pixel count: shrink both sides by the square root.
        factor = min(0.9, math.sqrt(max_bytes / buffer.tell()) * 0.95)
        width, height = picture.size
        size = (max(1, int(width * factor)), max(1, int(height * factor)))
        picture = picture.resize(size, PILImage.Resampling.LANCZOS)


def _base_url(endpoint: str, allow_http: bool) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("endpoint", f"{endpoint!r} is not an http(s) base URL")
    if parts.scheme == "http" and not allow_http:
        raise ConfigError("endpoint", "plain http is refused: the API is https-only")
    if parts.query or parts.fragment:
        raise ConfigError("endpoint", "a base URL takes no query string or fragment")
    base = endpoint if endpoint.endswith("/") else endpoint + "/"
    # Accept a base that already names the version, as some portals show it.
    return base.removesuffix("v7.0/")


class BingClient:
    """The Bing Image Search API v7, one HTTP request per call; use as an async context manager.

    ``endpoint`` is a base URL; ``v7.0/images/<name>`` is appended. ``client_id`` seeds the
    ``X-MSEdge-ClientID`` header; otherwise the first ID a response carries is captured and
    sent on every later call (persist :attr:`client_id` across runs, as the reference asks).
    ``on_response(endpoint, status)`` is called once per call that may have reached the API
    (status 0: no HTTP response); a connection that was never made is not a call.
    ``connector`` is used but not closed by the client (for tests and custom DNS / TLS).
    """

    def __init__(
        self,
        key: str,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        user_agent: str | None = None,
        timeout: float = 20.0,
        client_id: str | None = None,
        allow_http: bool = True,
        no_cache: bool = True,
        on_response: Callable[[str, int], None] | None = None,
        connector: aiohttp.BaseConnector | None = None,
        trust_env: bool = False,
    ) -> None:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("key", "a non-empty subscription key is required")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise ConfigError("timeout", f"must be a positive number of seconds, got {timeout!r}")
        self._key = key.strip()
        self._base = _base_url(endpoint, allow_http)
        self._user_agent = user_agent or DEFAULT_USER_AGENT
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        self._client_id = client_id
        self._no_cache = no_cache
        self._on_response = on_response
        self._connector = connector
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        self._state = _State.NEW
        self.last_call: ApiCall | None = None

    def __repr__(self) -> str:
        return f"<BingClient endpoint={self._base!r} state={self._state.value}>"

    @property
    def endpoint(self) -> str:
        """The base URL every path is appended to."""
        return self._base

    @property
    def client_id(self) -> str | None:
        """The ``X-MSEdge-ClientID`` sent with requests (``None`` until Bing issues one)."""
        return self._client_id

    @property
    def closed(self) -> bool:
        """True once the client has been closed."""
        return self._state is _State.CLOSED

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise RuntimeError("a BingClient cannot be reopened; create a new one")
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            connector_owner=self._connector is None,
            timeout=self._timeout,
            # The reference: with X-MSEdge-ClientID, requests must carry no cookies.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=self._trust_env,
            raise_for_status=False,
        )
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session; closing twice is harmless."""
        self._state = _State.CLOSED
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def search(self, params: SearchParams) -> Images:
        """``GET /images/search``: one page of results."""
        obj, status, trace = await self._call("search", "GET", params.to_query(), params.headers())
        return self._parse(Images.from_json, obj, "search", status, trace)

    async def details(self, params: DetailsParams) -> ImageInsights:
        """``GET /images/details``: insights (similar images, pages including, ...) of an image."""
        obj, status, trace = await self._call("details", "GET", params.to_query(), params.headers())
        return self._parse(ImageInsights.from_json, obj, "details", status, trace)

    async def trending(self, params: TrendingParams | None = None) -> TrendingImages:
        """``GET /images/trending``: today's trending images by category."""
        params = params or TrendingParams()
        obj, status, trace = await self._call(
            "trending", "GET", params.to_query(), params.headers()
        )
        return self._parse(TrendingImages.from_json, obj, "trending", status, trace)

    async def visual_search(
        self, params: VisualSearchParams | None = None, *, image: bytes | Upload | None = None
    ) -> ImageKnowledge:
        """``POST /images/visualsearch`` (multipart): insights of a URL, a token or an upload.

        An uploaded ``image`` (raw bytes) is downscaled to at most 1,500 px and re-encoded to
        at most 1 MB in a worker thread when it is larger. An :class:`Upload` (from
        :meth:`Upload.prepare`) is sent as it is, with no await before the request leaves:
        what a rate-limited caller needs (the grant must be followed by the send).
        """
        self._require_open()
        params = params or VisualSearchParams()
        params.check_image(image is not None)
        form = aiohttp.FormData(default_to_multipart=True)
        knowledge = params.knowledge_request()
        if knowledge:
            form.add_field("knowledgeRequest", orjson.dumps(knowledge).decode())
        if image is not None:
            if not isinstance(image, Upload):
                image = await asyncio.to_thread(Upload.prepare, image)
            data, content_type = image.data, image.content_type
            extension = content_type.rsplit("/", 1)[-1]
            form.add_field("image", data, filename=f"image.{extension}", content_type=content_type)
        obj, status, trace = await self._call(
            "visualsearch", "POST", params.to_query(), params.headers(), data=form
        )
        return self._parse(ImageKnowledge.from_json, obj, "visualsearch", status, trace)

    def _require_open(self) -> aiohttp.ClientSession:
        if self._session is None:
            state = "closed" if self._state is _State.CLOSED else "not open (use 'async with')"
            raise RuntimeError(f"BingClient is {state}")
        return self._session

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {
            "Ocp-Apim-Subscription-Key": self._key,
            "User-Agent": self._user_agent,
            "Accept": "application/json",
        }
        if self._no_cache:
            headers["Pragma"] = "no-cache"
        if self._client_id:
            headers["X-MSEdge-ClientID"] = self._client_id
        headers.update(extra)
        return headers

    def _record(self, call: ApiCall) -> None:
        self.last_call = call
        log.debug(
            "bing %s -> %d in %.3fs (trace %s)", call.endpoint, call.status, call.elapsed,
            call.trace_id,
        )  # fmt: skip
        if self._on_response is not None:
            self._on_response(call.endpoint, call.status)

    async def _call(
        self,
        endpoint: str,
        method: str,
        query: Mapping[str, str],
        extra_headers: Mapping[str, str],
        *,
        data: aiohttp.FormData | None = None,
    ) -> tuple[object, int, str | None]:
        """Send one request; return (parsed JSON, status, trace id) or raise the mapped error."""
        session = self._require_open()
        loop = asyncio.get_running_loop()
        started = loop.time()
        too_large = False
        try:
            async with session.request(
                method,
                self._base + ENDPOINT_PATHS[endpoint],
                params=query,
                headers=self._headers(extra_headers),
                data=data,
                allow_redirects=False,
            ) as response:
                status, headers = response.status, response.headers
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        too_large = True
                        break
                    chunks.append(chunk)
                body = b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # No connection at all (refused, DNS, TLS, connect timeout): nothing was sent,
            # nothing is counted. Anything later may have reached the API: counted.
            sent = not isinstance(exc, NOT_SENT)
            if sent:
                self._record(ApiCall(endpoint, 0, loop.time() - started))
            detail = redact(f"{type(exc).__name__}: {exc}", *secret_forms(self._key))
            raise ApiConnectionError(
                f"{endpoint}: cannot reach the API at {self._base} ({detail})", sent=sent
            ) from exc
        trace_id = headers.get("BingAPIs-TraceId")
        issued = headers.get("X-MSEdge-ClientID")
        if issued and not self._client_id and _CLIENT_ID.match(issued):
            self._client_id = issued
        market = headers.get("BingAPIs-Market")
        self._record(ApiCall(endpoint, status, loop.time() - started, trace_id, market))
        if too_large:
            raise ResponseFormatError(
                f"{endpoint}: response larger than {MAX_RESPONSE_BYTES} bytes refused",
                status=status, trace_id=trace_id,
            )  # fmt: skip
        if not 200 <= status < 300:
            raise error_from_response(endpoint, status, body, headers, secrets=(self._key,))
        if not body.strip():
            raise ThrottledError(
                f"{endpoint}: HTTP {status} with an empty body (the API's denial-of-service "
                "throttle)", status=status, trace_id=trace_id,
            )  # fmt: skip
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ThrottledError(
                f"{endpoint}: HTTP {status} with a body that is not JSON "
                f"({headers.get('Content-Type')!r}, {len(body)} bytes)",
                status=status, trace_id=trace_id,
            ) from None  # fmt: skip
        if parse_error_response(obj):
            raise error_from_response(endpoint, status, body, headers, secrets=(self._key,))
        return obj, status, trace_id

    def _parse(
        self, build: Callable[[object], _T], obj: object, endpoint: str, status: int,
        trace_id: str | None,
    ) -> _T:  # fmt: skip
        try:
            return build(obj)
        except ResponseFormatError as exc:
            raise ResponseFormatError(
                redact(f"{endpoint}: {exc}", *secret_forms(self._key)),
                status=status,
                trace_id=trace_id,
            ) from None
