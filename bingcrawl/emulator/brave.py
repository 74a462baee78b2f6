"""Brave Search's image search, served from the emulator's corpus (``/res/v1/images/search``).

Brave's documented answer (``type: images``, ``results[]`` with ``properties.url``,
``thumbnail.src`` and the page ``url``): one page per query, ``count`` results (at most 200).
The service rules: the token (``X-Subscription-Token``) is checked against the emulator's
keys as Bing's is (missing or unknown: 401; disabled: 403); the QPS window answers 429 with
``X-RateLimit-*`` headers (per second, per month) and the monthly quota 429 with no monthly
calls left; the configured API faults answer 500 or 503. Every answer carries the
``X-RateLimit-*`` headers. Requests are logged under the endpoint ``brave``.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from bingcrawl.emulator.api import links_for
from bingcrawl.emulator.services import serve_logged
from bingcrawl.emulator.state import CORPUS, EmulatorState, retry_after_seconds

__all__ = ["KEY_HEADER", "MAX_COUNT", "SEARCH_PATH", "images", "routes"]

SEARCH_PATH: Final = "/res/v1/images/search"
KEY_HEADER: Final = "X-Subscription-Token"
MAX_COUNT: Final = 200
_MONTH_SECONDS: Final = 30 * 86_400


def _error(status: int, code: str, detail: str, headers: dict[str, str]) -> web.Response:
    body = {
        "type": "ErrorResponse",
        "error": {"id": "emulator", "status": status, "code": code, "detail": detail},
        "time": 0,
    }
    return web.json_response(body, status=status, headers=headers)


def _limits(state: EmulatorState, token: str, second_left: int) -> dict[str, str]:
    quota = state.config.monthly_quota
    per_second = state.config.qps
    month_left = max(0, quota - state.calls[token]) if quota is not None else 1_000_000
    return {
        "X-RateLimit-Limit": f"{int(per_second or 50)}, {quota or 1_000_000}",
        "X-RateLimit-Remaining": f"{second_left}, {month_left}",
        "X-RateLimit-Reset": f"1, {_MONTH_SECONDS}",
    }


async def images(request: web.Request) -> web.Response:
    """``GET /res/v1/images/search``: the service rules, then the query's one page."""
    token = request.headers.get(KEY_HEADER, "").strip() or None
    return await serve_logged(request, "brave", _answer, key=token)


async def _answer(
    request: web.Request, state: EmulatorState, arrived: float
) -> tuple[web.Response, str]:
    config = state.config
    token = request.headers.get(KEY_HEADER, "").strip()
    if not token or (config.keys is not None and token not in config.keys):
        return _error(401, "SUBSCRIPTION_TOKEN_INVALID", "The token is invalid.", {}), (
            "unauthorized"
        )
    if token in config.disabled_keys:
        return _error(403, "SUBSCRIPTION_NOT_ACTIVE", "The subscription is inactive.", {}), (
            "disabled"
        )
    wait = state.admit(token, arrived)
    if wait is not None:
        headers = _limits(state, token, 0)
        headers["X-RateLimit-Reset"] = f"{retry_after_seconds(wait)}, {_MONTH_SECONDS}"
        return _error(429, "RATE_LIMITED", "Request rate limit exceeded.", headers), "throttled"
    if state.over_quota(token):
        headers = _limits(state, token, 1)
        return _error(429, "RATE_LIMITED", "Monthly quota exceeded.", headers), "quota"
    headers = _limits(state, token, 1)
    fault = state.draw_fault()
    if fault == "server_error":
        return _error(500, "INTERNAL", "An internal error occurred.", headers), fault
    if fault is not None:
        return web.Response(status=503, text="Service Unavailable", headers=headers), fault
    q = request.query.get("q", "").strip()
    try:
        count = int(request.query.get("count", "50"))
    except ValueError:
        count = 0
    if not q or not 1 <= count <= MAX_COUNT:
        return _error(422, "VALIDATION", "q is required and count is 1-200.", headers), "invalid"
    links = links_for(request)
    results: list[dict[str, Any]] = []
    for spec in request.app[CORPUS].query_results(q)[:count]:
        results.append(
            {
                "type": "image_result",
                "title": spec.name,
                "url": spec.host_page_url,
                "source": spec.host_page_url.split("/")[2],
                "thumbnail": {"src": links.thumbnail(spec.key), "width": 500, "height": 333},
                "properties": {
                    "url": links.content(spec.key),
                    "placeholder": links.thumbnail(spec.key),
                    "width": spec.width,
                    "height": spec.height,
                },
                "confidence": "high",
            }
        )
    body = {"type": "images", "query": {"original": q}, "results": results, "extra": {}}
    return web.json_response(body, headers=headers), "ok"


def routes() -> list[web.RouteDef]:
    """The Brave route, mounted at the emulator's root."""
    return [web.get(SEARCH_PATH, images)]
