"""Handlers of /images/search, /images/trending and the /th thumbnail route.

The service rules every API call goes through first (latency, key, 410, QPS, quota, URL
length, injected faults) are applied by the middleware in :mod:`bingcrawl.emulator.app`;
/images/details and /images/visualsearch live in :mod:`bingcrawl.emulator.insights`.

Paging follows the reference: ``value`` is ``results[offset : offset + count]`` and
``nextOffset`` tells where the next page starts. Like the real service, the emulator makes
pages overlap: ``nextOffset = offset + len(value) - k`` with
``0 <= k <= min(page_overlap, len(value) // 2)`` chosen deterministically per
(query, offset), so ``nextOffset`` always advances. Past the end, ``value`` is empty and
``nextOffset`` equals ``offset``.
``totalEstimatedMatches`` over-estimates the number of results, as Bing's estimate does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bingcrawl.emulator.params import parse_locale, parse_search, today_utc
from bingcrawl.emulator.shapes import (
    Links,
    decode_token,
    image_id,
    image_json,
    json_response,
    query_json,
    web_search_url,
)
from bingcrawl.emulator.state import CONFIG, CORPUS, STATE

if TYPE_CHECKING:
    from bingcrawl.emulator.corpus import ImageSpec

__all__ = ["links_for", "page", "search", "thumbnail", "trending"]

MARKET_HEADER = "BingAPIs-Market"

_EXPANSIONS = (
    "close up", "wallpaper", "drawing", "black and white", "at night", "in winter", "vintage",
    "hd", "illustration", "aerial view", "cartoon", "macro", "outdoors", "sketch",
)  # fmt: skip
_PIVOTS = (
    "red", "small", "wild", "old", "modern", "blue", "giant", "cute", "famous", "tiny",
    "golden", "dark",
)  # fmt: skip
_SIMILAR = ("{q} pictures", "{q} photos", "images of {q}", "{q} photography")


def _h(*parts: object) -> int:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def links_for(request: web.Request) -> Links:
    """The URL bases of a response: this server's origin, or the configured image origin."""
    api = str(request.url.origin())
    base = request.app[CONFIG].image_base_url
    prefix = "/bing" if request.path.startswith("/bing/") else ""
    return Links(api=api, images=base.rstrip("/") if base else api, prefix=prefix)


def page(
    results: Sequence[ImageSpec], *, offset: int, count: int, overlap: int, salt: str
) -> tuple[Sequence[ImageSpec], int, int]:
    """``(value, nextOffset, totalEstimatedMatches)`` of one page of ``results``."""
    total = len(results)
    estimate = total + (total * (10 + _h("total", salt) % 50)) // 100 if total else 0
    value = results[offset : offset + count]
    if not value:
        return value, offset, estimate
    # At most half a page repeats, so paging by nextOffset always makes progress.
    k = min(_h("overlap", salt, offset) % (overlap + 1), len(value) // 2)
    return value, offset + len(value) - k, estimate


def _suggestions(q: str, links: Links) -> dict[str, Any]:
    """queryExpansions, pivotSuggestions and similarTerms of a first page."""
    seed = _h("suggest", q.casefold())
    start = seed % len(_EXPANSIONS)
    words = [_EXPANSIONS[(start + 3 * i) % len(_EXPANSIONS)] for i in range(5)]
    out: dict[str, Any] = {
        "queryExpansions": [query_json(f"{q} {w}", w, links) for w in dict.fromkeys(words)]
    }
    terms = q.split()
    if len(terms) >= 2:
        pivots = []
        for i, term in enumerate(terms[:3]):
            alts = [_PIVOTS[(seed + i * 5 + j) % len(_PIVOTS)] for j in range(3)]
            alts = [a for a in dict.fromkeys(alts) if a != term.casefold()]
            suggestions = [
                query_json(" ".join([*terms[:i], alt, *terms[i + 1 :]]), alt, links) for alt in alts
            ]
            pivots.append({"pivot": term, "suggestions": suggestions})
        out["pivotSuggestions"] = pivots
    out["similarTerms"] = [
        query_json(pattern.format(q=q), pattern.format(q=q), links) for pattern in _SIMILAR
    ]
    return out


async def search(request: web.Request) -> web.Response:
    """GET /v7.0/images/search."""
    config, corpus, state = request.app[CONFIG], request.app[CORPUS], request.app[STATE]
    req = parse_search(
        request.query,
        request.headers,
        size_of=corpus.approx_size,
        today=today_utc(state.wall_clock()),
    )
    # A query's first request builds its whole ranked list (tens of ms): off the loop, so
    # image downloads served by the same process do not stall behind it.
    ranked = await asyncio.to_thread(corpus.query_results, req.q)
    results: list[ImageSpec] = [s for s in ranked if all(p(s) for p in req.predicates)]
    if req.image_id:
        wanted = req.image_id.upper()
        first = next((i for i, s in enumerate(results) if image_id(s.key) == wanted), None)
        if first:
            results.insert(0, results.pop(first))
    salt = " ".join(req.q.casefold().split())
    value, next_offset, estimate = page(
        results, offset=req.offset, count=req.count, overlap=config.page_overlap, salt=salt
    )
    links = links_for(request)
    body: dict[str, Any] = {
        "_type": "Images",
        "instrumentation": {"_type": "ResponseInstrumentation"},
        "webSearchUrl": web_search_url(req.q, "HDRSC2"),
        "totalEstimatedMatches": estimate,
        "nextOffset": next_offset,
        "currentOffset": req.offset,
        "value": [image_json(s, links, query=req.q, size=corpus.approx_size(s)) for s in value],
    }
    if req.offset == 0:
        body.update(_suggestions(req.q, links))
    response = json_response(body)
    response.headers[MARKET_HEADER] = req.market
    return response


async def trending(request: web.Request) -> web.Response:
    """GET /v7.0/images/trending: categories of tiles, each a query and an image."""
    corpus = request.app[CORPUS]
    market = parse_locale(request.query, request.headers)
    links = links_for(request)
    categories = []
    for title, tiles in corpus.trending():
        categories.append(
            {
                "title": title,
                "tiles": [
                    {
                        "query": {
                            "text": text,
                            "displayText": text,
                            "webSearchUrl": web_search_url(text, "TRENDI"),
                            "searchLink": links.search(text),
                        },
                        "image": image_json(spec, links, query=text, size=corpus.approx_size(spec)),
                    }
                    for text, spec in tiles
                ],
            }
        )
    response = json_response({"_type": "TrendingImages", "categories": categories})
    response.headers[MARKET_HEADER] = market
    return response


async def thumbnail(request: web.Request) -> web.Response:
    """GET /th?id=OIP.<key> or /th?q=<text>: the picture behind a thumbnail URL.

    Thumbnails are served at the picture's own size (not resized) and are not counted as
    image downloads: the pipeline never fetches them, a browser-like client may.
    """
    corpus, state = request.app[CORPUS], request.app[STATE]
    spec: ImageSpec | None = None
    ident = request.query.get("id")
    text = request.query.get("q")
    if ident is not None and ident.startswith("OIP."):
        ref = decode_token("ek_" + ident[4:])
        spec = corpus.spec(ref.key) if ref is not None and ref.key else None
    elif text:
        ranked = await asyncio.to_thread(corpus.query_results, text)
        spec = next((s for s in ranked if s.fault is None), None)
    if spec is None:
        raise web.HTTPNotFound()
    state.thumbnails[spec.key] += 1
    body = await asyncio.to_thread(corpus.base_bytes, spec.base)
    return web.Response(body=body, content_type="image/jpeg")
