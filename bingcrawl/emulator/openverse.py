"""The Openverse API's image search, served from the emulator's corpus (``/v1/images/``).

The same pictures as the Bing emulator's search (same corpus, same image host, same faults),
in Openverse's shape (its documented ``/v1/images/`` answer): page-numbered, at most
:data:`MAX_RESULTS` results per query, each with its own license, creator and attribution
(the corpus's Bing license filter value mapped onto a Creative Commons license). The
service rules follow Openverse's: no key needed; a ``page_size`` above 20 without a bearer
token is refused with 401 (a token comes from ``POST /v1/auth_tokens/token/`` with client
credentials); a client over the QPS window or over its quota gets 429 with ``Retry-After``
(Openverse throttles a spent daily budget the same way); the configured API faults answer
500, or 503 with an HTML page. Every request is logged under the endpoint ``openverse``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from bingcrawl.emulator.api import links_for
from bingcrawl.emulator.corpus import ImageSpec
from bingcrawl.emulator.services import serve_logged
from bingcrawl.emulator.state import CORPUS, EmulatorState, retry_after_seconds

__all__ = ["LICENSE_OF", "MAX_RESULTS", "SEARCH_PATH", "TOKEN_PATH", "images", "routes", "token"]

SEARCH_PATH: Final = "/v1/images/"
TOKEN_PATH: Final = "/v1/auth_tokens/token/"
MAX_RESULTS: Final = 240
ANONYMOUS_PAGE_SIZE: Final = 20
AUTHENTICATED_PAGE_SIZE: Final = 50

#: The corpus's Bing license value -> (Openverse license code, version).
LICENSE_OF: Final[Mapping[str, tuple[str, str]]] = {
    "Public": ("cc0", "1.0"),
    "Share": ("by-nc-nd", "4.0"),
    "ShareCommercially": ("by-nd", "4.0"),
    "Modify": ("by-nc-sa", "4.0"),
    "ModifyCommercially": ("by", "4.0"),
}
_LICENSE_URL = {
    "cc0": "https://creativecommons.org/publicdomain/zero/1.0/",
}
_CLIENTS: Final = {"emulator-client": "emulator-secret"}
_TOKEN_PREFIX: Final = "ov-token-"


def _detail(status: int, detail: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def _license(spec: ImageSpec) -> tuple[str, str, str]:
    code, version = LICENSE_OF[spec.license]
    url = _LICENSE_URL.get(code, f"https://creativecommons.org/licenses/{code}/{version}/")
    return code, version, url


def _creator(spec: ImageSpec) -> str:
    return f"Photographer {int(hashlib.blake2b(spec.key.encode(), digest_size=2).hexdigest(), 16)}"


def result_json(spec: ImageSpec, content_url: str, api: str) -> dict[str, Any]:
    """One result of ``/v1/images/``, in the documented shape."""
    code, version, license_url = _license(spec)
    creator = _creator(spec)
    marked = "is marked with" if code in ("cc0", "pdm") else "is licensed under"
    ident = hashlib.blake2b(spec.key.encode(), digest_size=16).hexdigest()
    uuid = f"{ident[:8]}-{ident[8:12]}-{ident[12:16]}-{ident[16:20]}-{ident[20:32]}"
    return {
        "id": uuid,
        "title": spec.name,
        "indexed_on": "2024-01-01T00:00:00Z",
        "foreign_landing_url": spec.host_page_url,
        "url": content_url,
        "creator": creator,
        "creator_url": None,
        "license": code,
        "license_version": version,
        "license_url": license_url,
        "provider": "emulator",
        "source": "emulator",
        "category": "photograph",
        "genres": None,
        "filesize": None,
        "filetype": spec.ext,
        "tags": [],
        "attribution": f'"{spec.name}" by {creator} {marked} CC {code.upper()} {version}. '
        f"To view a copy of this license, visit {license_url}.",
        "fields_matched": ["title"],
        "mature": False,
        "height": spec.height,
        "width": spec.width,
        "thumbnail": f"{api}{SEARCH_PATH}{uuid}/thumb/",
        "detail_url": f"{api}{SEARCH_PATH}{uuid}/",
        "related_url": f"{api}{SEARCH_PATH}{uuid}/related/",
        "unstable__sensitivity": [],
    }


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[7:].startswith(_TOKEN_PREFIX):
        return auth[7:]
    return None


def _int(value: str | None, default: int) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return None


def _select(
    results: Sequence[ImageSpec], licenses: str | None
) -> Sequence[ImageSpec]:
    if not licenses:
        return results
    wanted = {v.strip().casefold() for v in licenses.split(",")}
    return [s for s in results if LICENSE_OF[s.license][0] in wanted]


async def images(request: web.Request) -> web.Response:
    """``GET /v1/images/``: the service rules, then one page of the query's results."""
    return await serve_logged(request, "openverse", _answer, key=_bearer(request))


async def _answer(
    request: web.Request, state: EmulatorState, arrived: float
) -> tuple[web.Response, str]:
    token = _bearer(request)
    client = token or f"anon:{request.remote}"
    wait = state.admit(client, arrived)
    if wait is not None or state.over_quota(client):
        seconds = retry_after_seconds(wait) if wait is not None else 86_400
        text = f"Request was throttled. Expected available in {seconds} seconds."
        return _detail(429, text, {"Retry-After": str(seconds)}), "throttled"
    fault = state.draw_fault()
    if fault == "server_error":
        return _detail(500, "A server error occurred."), fault
    if fault is not None:
        busy = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>"
        return web.Response(status=503, body=busy, content_type="text/html"), fault
    query = request.query
    q = query.get("q", "").strip()
    page_size = _int(query.get("page_size"), ANONYMOUS_PAGE_SIZE)
    page = _int(query.get("page"), 1)
    limit = AUTHENTICATED_PAGE_SIZE if token else ANONYMOUS_PAGE_SIZE
    if page_size is not None and page_size > limit and token is None:
        return _detail(401, "Authentication credentials were not provided."), "invalid_request"
    if not q:
        return _detail(400, {"q": ["This field is required."]}), "invalid_request"
    if page_size is None or not 1 <= page_size <= limit:
        return _detail(400, {"page_size": [f"Ensure this value is <= {limit}."]}), (
            "invalid_request"
        )
    if page is None or page < 1:
        return _detail(400, {"page": ["Ensure this value is >= 1."]}), "invalid_request"
    corpus = request.app[CORPUS]
    results = _select(corpus.query_results(q), query.get("license"))[:MAX_RESULTS]
    page_count = math.ceil(len(results) / page_size)
    if page > max(page_count, 1):
        return _detail(400, "Invalid page."), "invalid_request"
    chunk = results[(page - 1) * page_size : page * page_size]
    links = links_for(request)
    body = {
        "result_count": len(results),
        "page_count": page_count,
        "page_size": page_size,
        "page": page,
        "results": [result_json(s, links.content(s.key), links.api) for s in chunk],
        "warnings": [],
    }
    return web.json_response(body), "ok"


async def token(request: web.Request) -> web.Response:
    """``POST /v1/auth_tokens/token/``: client credentials -> a bearer token."""
    form = await request.post()
    client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
    if form.get("grant_type") != "client_credentials" or _CLIENTS.get(client_id) != secret:
        return web.json_response({"error": "invalid_client"}, status=401)
    return web.json_response(
        {
            "access_token": _TOKEN_PREFIX + client_id,
            "scope": "read write groups",
            "expires_in": 36000,
            "token_type": "Bearer",
        }
    )


def routes() -> list[web.RouteDef]:
    """The Openverse routes, mounted at the emulator's root."""
    return [web.get(SEARCH_PATH, images), web.post(TOKEN_PATH, token)]
