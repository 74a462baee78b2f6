"""Wikimedia Commons as a search provider: freely licensed files, keyless.

One MediaWiki Action API request per page: ``GET {endpoint}w/api.php?action=query
&generator=search&gsrnamespace=6&gsrsearch=filetype:bitmap <q>&gsrlimit=N&gsroffset=K
&prop=imageinfo&iiprop=url|size|mime|extmetadata``. Pages come keyed by page id (or as a
list with ``formatversion=2``) and are put in search order by their ``index``; paging follows
``continue.gsroffset`` (absent: the last page), which is the crawl's result offset as it is.
Each file's license (``LicenseShortName``, ``LicenseUrl``) and author (``Artist``, HTML
reduced to text) come from ``extmetadata``; the credit line is built from them.

Wikimedia's API etiquette is kept: a descriptive User-Agent (:data:`USER_AGENT`), ``maxlag``
honoured (an API ``maxlag`` or ``ratelimited`` error is a throttle, waited out), and at most
two concurrent downloads from ``upload.wikimedia.org`` (``DownloadConfig.host_limits``).
Errors: HTTP 429 or an API error ``maxlag``/``ratelimited`` -> :class:`ThrottledError`; other
API errors -> :class:`InvalidRequestError`; 5xx or a body that is not the documented JSON ->
:class:`ServerError`; no connection -> :class:`ApiConnectionError`. One request per call.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from bingcrawl.errors import (
    ApiError,
    ConfigError,
    InvalidRequestError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
    parse_retry_after,
)
from bingcrawl.providers.base import Hit, ResultPage
from bingcrawl.providers.http import JsonApi

__all__ = ["DEFAULT_ENDPOINT", "MAX_PAGE", "UPLOAD_HOST", "USER_AGENT", "WikimediaSearch",
           "parse_answer", "text_of"]  # fmt: skip

log = logging.getLogger("bingcrawl.providers.wikimedia")

DEFAULT_ENDPOINT: Final = "https://commons.wikimedia.org/"
API_PATH: Final = "w/api.php"
#: Wikimedia's User-Agent policy: name the tool and how to reach its makers.
USER_AGENT: Final = "bingcrawl/0.1 (image dataset crawler; https://pypi.org/project/bingcrawl/)"
#: ``gsrlimit`` for clients without the bot right.
MAX_PAGE: Final = 50
#: The host of the files; its robot policy asks for at most two downloads at a time.
UPLOAD_HOST: Final = "upload.wikimedia.org"
#: Seconds of replication lag at which the API asks clients to back off.
MAXLAG: Final = "5"

_THROTTLES: Final = frozenset({"maxlag", "ratelimited"})
_TAG = re.compile(r"<[^>]*>")


def text_of(markup: object) -> str | None:
    """The plain text of an ``extmetadata`` HTML value (tags dropped, entities decoded)."""
    if not isinstance(markup, str):
        return None
    text = " ".join(html.unescape(_TAG.sub(" ", markup)).split())
    return text or None


def _meta(info: Mapping[str, Any], name: str) -> str | None:
    field = info.get("extmetadata", {}).get(name)
    return text_of(field.get("value")) if isinstance(field, dict) else None


def _hit(page: Mapping[str, Any]) -> Hit | None:
    infos = page.get("imageinfo")
    if not isinstance(infos, list) or not infos or not isinstance(infos[0], dict):
        return None
    info = infos[0]
    url = info.get("url")
    if not isinstance(url, str) or not url:
        return None
    title = str(page.get("title") or "")
    name = _meta(info, "ObjectName") or title.removeprefix("File:").rsplit(".", 1)[0] or None
    license = _meta(info, "LicenseShortName")
    creator = _meta(info, "Artist")
    credit = [f'"{name or title}"']
    if creator:
        credit.append(f"by {creator}")
    if license:
        credit.append(f"is licensed under {license}" if license.lower() != "public domain"
                      else "is in the public domain")  # fmt: skip
    credit.append("(Wikimedia Commons)")
    mime = info.get("mime")
    return Hit(
        url=url,
        image_id=str(page["pageid"]) if isinstance(page.get("pageid"), int) else None,
        name=name,
        host_page_url=info.get("descriptionurl") if isinstance(info.get("descriptionurl"), str)
        else None,
        encoding_format=mime.split("/", 1)[1] if isinstance(mime, str) and "/" in mime else None,
        width=info.get("width") if isinstance(info.get("width"), int) else None,
        height=info.get("height") if isinstance(info.get("height"), int) else None,
        license=license,
        license_url=_meta(info, "LicenseUrl"),
        creator=creator,
        attribution=" ".join(credit) + ".",
    )  # fmt: skip


def parse_answer(body: object, *, offset: int, retry_after: float | None = None) -> ResultPage:
    """The page of an API answer asked at ``offset``: hits in search order, next offset."""
    if not isinstance(body, dict):
        raise ResponseFormatError("wikimedia: the answer is not a JSON object")
    error = body.get("error")
    if isinstance(error, dict):
        code = str(error.get("code") or "unknown")
        text = f"wikimedia: API error {code}: {error.get('info') or ''}".strip()
        if code in _THROTTLES:
            raise ThrottledError(text, retry_after=retry_after)
        raise InvalidRequestError(text, code=code)
    pages: object = body.get("query", {}).get("pages", []) if "query" in body else []
    if isinstance(pages, dict):
        pages = list(pages.values())
    if not isinstance(pages, list):
        raise ResponseFormatError("wikimedia: 'query.pages' is neither a list nor an object")
    ordered = sorted(
        (p for p in pages if isinstance(p, dict)),
        key=lambda p: p.get("index", 0) if isinstance(p.get("index"), int) else 0,
    )
    hits = tuple(h for h in map(_hit, ordered) if h is not None)
    more = body.get("continue")
    following = more.get("gsroffset") if isinstance(more, dict) else None
    # No "continue": the last page; the next offset not past this one ends the query.
    next_offset = following if isinstance(following, int) and following > offset else offset
    return ResultPage(hits, next_offset, count=len(ordered))


def _http_error(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    text = f"wikimedia: HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    if status == 429:
        return ThrottledError(text, retry_after=parse_retry_after(headers.get("Retry-After")),
                              status=status)  # fmt: skip
    if 400 <= status < 500:
        return InvalidRequestError(text, status=status)
    return ServerError(text, status=status)


class WikimediaSearch(JsonApi):
    """A Wikimedia Commons client: one session, one request per :meth:`search` call."""

    name = "wikimedia"
    service = "Wikimedia Commons"
    default_endpoint = DEFAULT_ENDPOINT
    default_user_agent = USER_AGENT

    async def search(
        self, query: str, *, offset: int, count: int, filters: Mapping[str, str]
    ) -> ResultPage:
        if filters:
            raise ConfigError(
                next(iter(filters)), "is not a filter Wikimedia Commons takes (provider wikimedia)"
            )
        params = {
            "action": "query",
            "format": "json",
            "formatversion": "2",
            "maxlag": MAXLAG,
            "generator": "search",
            "gsrnamespace": "6",
            "gsrsearch": f"filetype:bitmap {query}",
            "gsrlimit": str(max(1, min(count, MAX_PAGE))),
            "gsroffset": str(offset),
            "prop": "imageinfo",
            "iiprop": "url|size|mime|extmetadata",
            "iiextmetadatafilter": "LicenseShortName|LicenseUrl|Artist|ObjectName",
        }
        answer = await self.request(
            "search", "GET", API_PATH, params=params, headers={"Accept": "application/json"}
        )
        if not 200 <= answer.status < 300:
            raise _http_error(answer.status, answer.body, answer.headers)
        # A maxlag error comes as a 200 with Retry-After: the API asks for that long a pause.
        wait = parse_retry_after(answer.headers.get("Retry-After"))
        return parse_answer(answer.json("wikimedia"), offset=offset, retry_after=wait)
