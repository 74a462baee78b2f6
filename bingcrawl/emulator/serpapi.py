"""SerpApi's ``search.json`` for ``bing_images`` and ``google_images``, from the corpus.

The documented answer (``images_results[]`` with ``original``, ``original_width``,
``original_height``, ``thumbnail``, ``link``, ``title``): bing_images pages by ``first``
(1-based) and ``count``, google_images by ``ijn`` (pages of 100). The key is the ``api_key``
parameter, checked against the emulator's keys as Bing's is (401 ``{"error": ...}``); the
QPS window answers 429 (SerpApi's hourly throughput limit), the monthly quota 429 "Your
account has run out of searches."; the configured API faults answer 500 or 503. Requests are
logged under the endpoint ``serpapi`` with their key.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from bingcrawl.emulator.api import links_for
from bingcrawl.emulator.services import serve_logged
from bingcrawl.emulator.state import CORPUS, EmulatorState

__all__ = ["SEARCH_PATH", "routes", "search"]

SEARCH_PATH: Final = "/search.json"
GOOGLE_PAGE: Final = 100


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


async def search(request: web.Request) -> web.Response:
    """``GET /search.json``: the service rules, then one page of image results."""
    key = request.query.get("api_key", "").strip() or None
    return await serve_logged(request, "serpapi", _answer, key=key)


async def _answer(
    request: web.Request, state: EmulatorState, arrived: float
) -> tuple[web.Response, str]:
    config, query = state.config, request.query
    key = query.get("api_key", "").strip()
    if not key or (config.keys is not None and key not in config.keys):
        return _error(401, "Invalid API key. Your API key should be here: "
                      "https://serpapi.com/manage-api-key"), "unauthorized"  # fmt: skip
    if state.admit(key, arrived) is not None:
        return _error(429, "Your account has reached its hourly throughput limit."), "throttled"
    if state.over_quota(key):
        return _error(429, "Your account has run out of searches."), "quota"
    fault = state.draw_fault()
    if fault == "server_error":
        return _error(500, "Something went wrong."), fault
    if fault is not None:
        return web.Response(status=503, text="Service Unavailable"), fault
    engine, q = query.get("engine"), query.get("q", "").strip()
    if engine not in ("bing_images", "google_images") or not q:
        return _error(400, "Missing query `q` parameter or unsupported engine."), "invalid"
    try:
        if engine == "google_images":
            start, n = int(query.get("ijn", "0")) * GOOGLE_PAGE, GOOGLE_PAGE
        else:
            start, n = int(query.get("first", "1")) - 1, int(query.get("count", "35"))
    except ValueError:
        return _error(400, "Invalid paging parameter."), "invalid"
    chunk = request.app[CORPUS].query_results(q)[max(start, 0) : max(start, 0) + max(n, 0)]
    if not chunk and engine == "google_images":
        return web.json_response(
            {"error": "Google hasn't returned any results for this query."}
        ), "ok"
    links = links_for(request)
    results: list[dict[str, Any]] = [
        {
            "position": start + i + 1,
            "thumbnail": links.thumbnail(s.key),
            "original": links.content(s.key),
            "original_width": s.width,
            "original_height": s.height,
            "source": s.host_page_url.split("/")[2],
            "title": s.name,
            "link": s.host_page_url,
        }
        for i, s in enumerate(chunk)
    ]
    body = {
        "search_metadata": {"status": "Success"},
        "search_parameters": {"engine": engine, "q": q},
        "images_results": results,
    }
    return web.json_response(body), "ok"


def routes() -> list[web.RouteDef]:
    """The SerpApi route, mounted at the emulator's root."""
    return [web.get(SEARCH_PATH, search)]
