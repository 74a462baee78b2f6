"""Wikimedia Commons' search, served from the emulator's corpus (``/w/api.php``).

The MediaWiki Action API's ``action=query&generator=search&prop=imageinfo`` answer, in its
documented default shape (``query.pages`` keyed by page id, in no order; ``index`` is the
search order; ``continue.gsroffset`` the next offset), with each file's license and author in
``extmetadata`` (the corpus's Bing license value mapped onto a Commons license; the author as
the HTML link Commons gives). ``formatversion=2`` gives ``pages`` as a list. The service
rules: a client over the QPS window gets 429 with ``Retry-After``; the configured API faults
answer 500, a ``maxlag`` error (a 200 with ``Retry-After: 5``, what a lagged Commons sends),
or 503 with an HTML page. Requests are logged under the endpoint ``wikimedia``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from bingcrawl.emulator.api import links_for
from bingcrawl.emulator.corpus import ImageSpec
from bingcrawl.emulator.services import serve_logged
from bingcrawl.emulator.state import CORPUS, EmulatorState, retry_after_seconds

__all__ = ["API_PATH", "LICENSE_OF", "MAX_LIMIT", "api", "routes"]

API_PATH: Final = "/w/api.php"
MAX_LIMIT: Final = 50
MAX_OFFSET: Final = 10_000

#: The corpus's Bing license value -> (Commons' LicenseShortName, its URL).
LICENSE_OF: Final[Mapping[str, tuple[str, str]]] = {
    "Public": ("Public domain", ""),
    "Share": ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0"),
    "ShareCommercially": ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0"),
    "Modify": ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0"),
    "ModifyCommercially": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0"),
}
_MIME = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}


def author(spec: ImageSpec) -> str:
    """The author's name the emulator gives a picture."""
    return f"Commons User {spec.base % 9973}"


def _page(spec: ImageSpec, index: int, content_url: str) -> dict[str, Any]:
    digest = hashlib.blake2b(spec.key.encode(), digest_size=8).digest()
    pageid = 100_000 + int.from_bytes(digest, "big") % 900_000_000  # one per file
    title = f"File:{spec.name} {spec.key.rsplit('/', 1)[-1]}"
    short, license_url = LICENSE_OF[spec.license]
    who = author(spec)
    meta: dict[str, Any] = {
        "ObjectName": {"value": spec.name, "source": "mediawiki-metadata", "hidden": ""},
        "LicenseShortName": {"value": short, "source": "commons-desc-page", "hidden": ""},
        "Artist": {
            "value": f'<a href="//commons.wikimedia.org/wiki/User:{quote(who)}">{who}</a>',
            "source": "commons-desc-page",
        },
    }
    if license_url:
        meta["LicenseUrl"] = {"value": license_url, "source": "commons-desc-page", "hidden": ""}
    wiki = "https://commons.wikimedia.org/wiki/" + quote(title.replace(" ", "_"), safe=":/()")
    return {
        "pageid": pageid,
        "ns": 6,
        "title": title,
        "index": index,
        "imagerepository": "local",
        "imageinfo": [
            {
                "size": 0,
                "width": spec.width,
                "height": spec.height,
                "url": content_url,
                "descriptionurl": wiki,
                "descriptionshorturl": f"https://commons.wikimedia.org/w/index.php?curid={pageid}",
                "mime": _MIME.get(spec.format, "application/octet-stream"),
                "extmetadata": meta,
            }
        ],
    }


def _error(code: str, info: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"code": code, "info": info}}, headers=headers)


async def api(request: web.Request) -> web.Response:
    """``GET /w/api.php``: the service rules, then one page of file search results."""
    return await serve_logged(request, "wikimedia", _answer)


async def _answer(
    request: web.Request, state: EmulatorState, arrived: float
) -> tuple[web.Response, str]:
    wait = state.admit(f"wikimedia:{request.remote}", arrived)
    if wait is not None:
        seconds = retry_after_seconds(wait)
        return web.Response(
            status=429, text="Too many requests", headers={"Retry-After": str(seconds)}
        ), "throttled"
    fault = state.draw_fault()
    if fault == "server_error":
        return web.Response(status=500, text="Internal Server Error"), fault
    if fault == "empty_200":
        lag = _error("maxlag", "Waiting for a database server: 7 seconds lagged.", **{
            "Retry-After": "5", "X-Database-Lag": "7"})  # fmt: skip
        return lag, fault
    if fault is not None:
        return web.Response(status=503, text="<html>Service Unavailable</html>",
                            content_type="text/html"), fault  # fmt: skip
    query = request.query
    if query.get("action") != "query" or query.get("generator") != "search":
        return _error("badvalue", "Only action=query&generator=search is emulated."), "invalid"
    search = " ".join(query.get("gsrsearch", "").replace("filetype:bitmap", " ").split())
    if not search:
        return _error("missingparam", "The gsrsearch parameter must be set."), "invalid"
    try:
        limit = min(int(query.get("gsrlimit", "10")), MAX_LIMIT)
        offset = int(query.get("gsroffset", "0"))
    except ValueError:
        return _error("badinteger", "Invalid value for gsrlimit or gsroffset."), "invalid"
    if limit < 1 or not 0 <= offset <= MAX_OFFSET:
        return _error("badinteger", "gsrlimit or gsroffset out of range."), "invalid"
    results = request.app[CORPUS].query_results(search)
    chunk = results[offset : offset + limit]
    links = links_for(request)
    pages = [_page(s, offset + i + 1, links.content(s.key)) for i, s in enumerate(chunk)]
    body: dict[str, Any] = {"batchcomplete": True if query.get("formatversion") == "2" else ""}
    if offset + limit < len(results):
        body["continue"] = {"gsroffset": offset + limit, "continue": "gsroffset||"}
    if pages:
        listed: Any = pages
        if query.get("formatversion") != "2":
            listed = {str(p["pageid"]): p for p in reversed(pages)}  # keyed, in no order
        body["query"] = {"pages": listed}
    return web.json_response(body), "ok"


def routes() -> list[web.RouteDef]:
    """The Commons API route, mounted at the emulator's root."""
    return [web.get(API_PATH, api)]
