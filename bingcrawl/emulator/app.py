"""The emulator application: API routes, image host routes, and the service rules.

Every request under ``/v7.0/`` (or ``/bing/v7.0/``, the older cognitive.microsoft.com layout)
passes these rules in order before its handler runs, and is logged in
:class:`~bingcrawl.emulator.state.EmulatorState` whatever the outcome:

1. ``api_latency`` (the service's processing time);
2. the key: missing -> 401 InvalidAuthorization / AuthorizationMissing; given twice (header
   plus ``subscription-key`` query parameter or an ``Authorization`` header) -> 401
   AuthorizationRedundancy; disabled -> 403 InsufficientAuthorization / AuthorizationDisabled;
   unknown -> 401 InvalidAuthorization (the reference's own example body);
3. ``http_not_allowed`` -> 410 InvalidRequest / HttpNotAllowed;
4. the per-key sliding QPS window -> 429 RateLimitExceeded with Retry-After (delta-seconds
   or an HTTP date; the time until the window frees a slot, rounded up, at least 1);
5. the monthly quota -> 403 RateLimitExceeded (with Retry-After until the next month);
6. a URL longer than ``max_url_length`` -> 404 (an HTML body, as a front end would send);
7. one fault draw: 500 ServerError / UnexpectedError, a 200 with an empty body, or a 200
   with an HTML body;
8. the handler, whose own validation answers 400 InvalidRequest.

Every API response carries ``BingAPIs-TraceId``, ``BingAPIs-Market`` and
``X-MSEdge-ClientID`` (the client's own, echoed, or a new one).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import web

from bingcrawl.emulator import api, brave, insights, openverse, serpapi, wikimedia
from bingcrawl.emulator.config import EmulatorConfig
from bingcrawl.emulator.corpus import Corpus
from bingcrawl.emulator.imagehost import ImageHost
from bingcrawl.emulator.shapes import ApiFailure
from bingcrawl.emulator.state import (
    CONFIG,
    CORPUS,
    IMAGE_HOST,
    STATE,
    ApiRequest,
    EmulatorState,
    retry_after_seconds,
)

__all__ = ["API_PREFIXES", "KEY_HEADER", "create_app"]

logger = logging.getLogger(__name__)

KEY_HEADER = "Ocp-Apim-Subscription-Key"
API_PREFIXES = ("/v7.0/", "/bing/v7.0/")
_ENDPOINTS = {
    "images/search": "search",
    "images/details": "details",
    "images/trending": "trending",
    "images/visualsearch": "visualsearch",
}
_BUSY_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service busy</title></head>"
    b"<body><h1>The service is temporarily busy.</h1></body></html>"
)
_NOT_FOUND_PAGE = (
    b"<!DOCTYPE html><html><head><title>404 - Not Found</title></head>"
    b"<body><h2>404 - File or directory not found.</h2></body></html>"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(path: str) -> str:
    for prefix in API_PREFIXES:
        if path.startswith(prefix):
            rest = path[len(prefix) :].rstrip("/")
            return _ENDPOINTS.get(rest, rest)
    return path


def _hex_id(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).hexdigest().upper()


def _retry_after(config: EmulatorConfig, seconds: int, wall: float) -> str:
    if config.retry_after_format == "date":
        # HTTP dates have whole seconds: round the instant up so it is never too early.
        return format_datetime(datetime.fromtimestamp(math.ceil(wall + seconds), UTC), usegmt=True)
    return str(seconds)


def _seconds_to_next_month(wall: float) -> int:
    now = datetime.fromtimestamp(wall, UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return max(1, math.ceil(datetime(year, month, 1, tzinfo=UTC).timestamp() - wall))


def _check_key(request: web.Request, config: EmulatorConfig) -> str:
    key = request.headers.get(KEY_HEADER, "").strip()
    if not key:
        raise ApiFailure(
            401,
            "InvalidAuthorization",
            "Authorization is required.",
            sub_code="AuthorizationMissing",
            more_details="The Ocp-Apim-Subscription-Key header is missing.",
            outcome="unauthorized",
        )
    if "subscription-key" in request.query or "Authorization" in request.headers:
        raise ApiFailure(
            401,
            "InvalidAuthorization",
            "Authorization is redundant.",
            sub_code="AuthorizationRedundancy",
            more_details="Specify the subscription key only once.",
            outcome="redundant_auth",
        )
    if key in config.disabled_keys:
        raise ApiFailure(
            403,
            "InsufficientAuthorization",
            "Authorization is disabled.",
            sub_code="AuthorizationDisabled",
            more_details="The subscription key has been disabled.",
            outcome="disabled",
        )
    if config.keys is not None and key not in config.keys:
        raise ApiFailure(
            401,
            "InvalidAuthorization",
            "Authorization is required.",
            sub_code="AuthorizationMissing",
            more_details="Subscription key is not recognized.",
            outcome="unauthorized",
        )
    return key


async def _serve(
    request: web.Request, handler: Handler, state: EmulatorState, arrived: float, wall: float
) -> tuple[web.StreamResponse, str]:
    """Apply the service rules in order, then the handler; return (response, outcome)."""
    config = state.config
    if config.api_latency > 0:
        await asyncio.sleep(config.api_latency)
    key = _check_key(request, config)
    if config.http_not_allowed:
        raise ApiFailure(
            410,
            "InvalidRequest",
            "Http is not allowed. Use https.",
            sub_code="HttpNotAllowed",
            outcome="http_not_allowed",
        )
    wait = state.admit(key, arrived)
    if wait is not None:
        seconds = retry_after_seconds(wait)
        raise ApiFailure(
            429,
            "RateLimitExceeded",
            f"Rate limit is exceeded. Try again in {seconds} seconds.",
            outcome="throttled",
            headers={"Retry-After": _retry_after(config, seconds, wall)},
        )
    if state.over_quota(key):
        seconds = _seconds_to_next_month(wall)
        raise ApiFailure(
            403,
            "RateLimitExceeded",
            "Out of call volume quota. Quota will be replenished at the start of next month.",
            outcome="quota",
            headers={"Retry-After": _retry_after(config, seconds, wall)},
        )
    if len(str(request.url.origin())) + len(request.raw_path) > config.max_url_length:
        return web.Response(status=404, body=_NOT_FOUND_PAGE, content_type="text/html"), (
            "url_too_long"
        )
    fault = state.draw_fault()
    if fault == "server_error":
        raise ApiFailure(
            500,
            "ServerError",
            "An unexpected error has occurred.",
            sub_code="UnexpectedError",
            outcome="server_error",
        )
    if fault == "empty_200":
        return web.Response(status=200, body=b"", content_type="application/json"), fault
    if fault == "non_json_200":
        return web.Response(status=200, body=_BUSY_PAGE, content_type="text/html"), fault
    return await handler(request), "ok"


@web.middleware
async def service_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the service rules to API requests and log them; other routes pass through."""
    if not request.path.startswith(API_PREFIXES):
        return await handler(request)
    state = request.app[STATE]
    arrived, wall = state.clock(), state.wall_clock()
    serial = state.next_serial()
    client_id = request.headers.get("X-MSEdge-ClientID")
    response: web.StreamResponse
    try:
        response, outcome = await _serve(request, handler, state, arrived, wall)
    except ApiFailure as failure:
        response, outcome = failure.response(), failure.outcome
    except web.HTTPException as exc:  # the router's 404 / 405 for an unknown endpoint
        # Returning the exception object itself is deprecated in aiohttp: copy it.
        response = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
        outcome = "not_found" if exc.status == 404 else "invalid_request"
    except Exception:
        _log(state, request, arrived, wall, 500, "server_error", client_id)
        raise
    response.headers["BingAPIs-TraceId"] = _hex_id("trace", state.config.seed, serial)
    response.headers.setdefault("BingAPIs-Market", "en-US")
    response.headers["X-MSEdge-ClientID"] = client_id or _hex_id(
        "client", state.config.seed, serial
    )
    _log(state, request, arrived, wall, response.status, outcome, client_id)
    return response


def _log(
    state: EmulatorState,
    request: web.Request,
    arrived: float,
    wall: float,
    status: int,
    outcome: str,
    client_id: str | None,
) -> None:
    params: dict[str, str] = {}
    for name, value in request.query.items():
        params.setdefault(name, value)
    key = request.headers.get(KEY_HEADER)
    state.record(
        ApiRequest(
            time=arrived,
            wall_time=wall,
            endpoint=_endpoint(request.path),
            method=request.method,
            key=key.strip() if key else None,
            status=status,
            outcome=outcome,
            params=params,
            client_id=client_id,
        )
    )
    logger.debug("%s %s -> %d (%s)", request.method, request.path, status, outcome)


def create_app(
    config: EmulatorConfig | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> web.Application:
    """Build the emulator: the Bing v7 API, the thumbnail route and the image host.

    ``clock`` (monotonic seconds) drives the QPS window and the request log's ``time``;
    ``wall_clock`` (Unix seconds) drives Retry-After dates and ``freshness``. Tests inject
    fake clocks to step through a window instead of sleeping.
    """
    config = config or EmulatorConfig()
    corpus = Corpus(config.corpus)
    image_host = ImageHost(corpus, config.images)
    app = web.Application(middlewares=[service_middleware])
    app[CONFIG] = config
    app[STATE] = EmulatorState(config, clock=clock, wall_clock=wall_clock)
    app[CORPUS] = corpus
    app[IMAGE_HOST] = image_host
    app.add_routes(image_host.routes())
    for prefix in ("", "/bing"):
        base = f"{prefix}/v7.0/images"
        app.router.add_get(f"{base}/search", api.search)
        app.router.add_get(f"{base}/details", insights.details)
        app.router.add_post(f"{base}/details", insights.details)
        app.router.add_get(f"{base}/trending", api.trending)
        app.router.add_post(f"{base}/visualsearch", insights.visual_search)
    app.router.add_get("/th", api.thumbnail)
    app.add_routes(openverse.routes())  # Openverse's /v1/images/, same corpus
    app.add_routes(wikimedia.routes())  # Wikimedia Commons' /w/api.php, same corpus
    app.add_routes(brave.routes())  # Brave Search's /res/v1/images/search, same corpus
    app.add_routes(serpapi.routes())  # SerpApi's /search.json (bing/google images)
    return app
