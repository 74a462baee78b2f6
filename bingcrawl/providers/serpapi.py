"""SerpApi as a provider: Bing Images or Google Images through ``search.json`` (a key).

``GET {endpoint}search.json?engine=bing_images&q=...&first=K&count=N&api_key=...`` (or
``engine=google_images&ijn=P``, pages of 100) answers ``{"images_results": [...]}``: the image
is ``original`` (``original_width``/``original_height``), the page it is on ``link``, the
thumbnail ``thumbnail``. ``bing_images`` pages by result offset and keeps Bing's filters
meaningful (``--size``, ``--image-type``, ``--aspect``, ``--color``, ``--license``, ``--mkt``,
``--cc``: mapped onto the names Bing's own web filters use); ``google_images`` takes none.
A page with fewer results than asked is the last.

Errors come as ``{"error": "..."}``: 401 -> :class:`AuthenticationError`; 429 means the
hourly throughput limit (a throttle, waited out) unless the account ran out of searches
(:class:`QuotaExceededError`: the crawl stops, exit 4, resumable); 400 ->
:class:`InvalidRequestError`; 5xx -> :class:`ServerError`. The key travels in the query
string, so it is redacted from every message. SerpApi serves an identical search made
within an hour from its cache, free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from bingcrawl.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    QuotaExceededError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
    redact,
)
from bingcrawl.providers.base import Hit, ResultPage
from bingcrawl.providers.http import JsonApi

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENGINES",
    "KEY_ENV",
    "SerpApiSearch",
    "parse_results",
    "serpapi_filters",
]

DEFAULT_ENDPOINT: Final = "https://serpapi.com/"
SEARCH_PATH: Final = "search.json"
KEY_ENV: Final = "SERPAPI_API_KEY"
ENGINES: Final = ("bing_images", "google_images")
GOOGLE_PAGE: Final = 100
MAX_COUNT: Final = 150

#: Bing filter flag -> (the bing_images parameter, Bing's value -> SerpApi's), case-folded.
_BING: Final[Mapping[str, tuple[str, Mapping[str, str]]]] = {
    "--size": ("imagesize", {"small": "small", "medium": "medium", "large": "large",
                             "wallpaper": "wallpaper"}),
    "--image-type": ("photo", {"photo": "photo", "clipart": "clipart", "line": "linedrawing",
                               "animatedgif": "animatedgif", "transparent": "transparent"}),
    "--aspect": ("aspect", {"square": "square", "wide": "wide", "tall": "tall"}),
    "--color": ("color2", {"coloronly": "color", "monochrome": "bw", "red": "FGcls_RED",
                           "orange": "FGcls_ORANGE", "yellow": "FGcls_YELLOW",
                           "green": "FGcls_GREEN", "teal": "FGcls_TEAL", "blue": "FGcls_BLUE",
                           "purple": "FGcls_PURPLE", "pink": "FGcls_PINK",
                           "brown": "FGcls_BROWN", "black": "FGcls_BLACK",
                           "gray": "FGcls_GRAY", "white": "FGcls_WHITE"}),
    "--license": ("license", {"any": "Type-Any", "all": "Type-Any", "public": "L1",
                              "share": "L2_L3_L4_L5_L6_L7", "sharecommercially": "L2_L3_L4",
                              "modify": "L2_L3_L5_L6", "modifycommercially": "L2_L3"}),
}  # fmt: skip
_FREE_TEXT: Final = {"--mkt": "mkt", "--cc": "cc"}


def serpapi_filters(engine: str, options: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The ``search.json`` parameters of the crawl options given (flag -> value) for
    ``engine``; an option the engine cannot honour raises :class:`ConfigError` naming it."""
    if engine not in ENGINES:
        raise ConfigError("--serpapi-engine", f"must be one of {', '.join(ENGINES)}")
    params: dict[str, str] = {}
    for flag, value in options.items():
        text = str(value).strip()
        if engine == "google_images":
            raise ConfigError(flag, "provider serpapi with google_images takes no filter")
        if flag in _FREE_TEXT:
            params[_FREE_TEXT[flag]] = text
            continue
        if flag not in _BING:
            takes = ", ".join([*_BING, *_FREE_TEXT])
            raise ConfigError(
                flag, f"provider serpapi cannot honour this filter (it takes {takes})"
            )
        param, values = _BING[flag]
        mapped = values.get(text.casefold())
        if mapped is None:
            raise ConfigError(flag, f"invalid value {value!r} for provider serpapi")
        params[param] = mapped
    return tuple(sorted(params.items()))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _hit(result: Mapping[str, Any]) -> Hit | None:
    url = result.get("original")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    def text(name: str) -> str | None:
        value = result.get(name)
        return value if isinstance(value, str) and value else None
    return Hit(
        url=url,
        name=text("title"),
        host_page_url=text("link"),
        thumbnail_url=text("thumbnail"),
        width=_int(result.get("original_width")),
        height=_int(result.get("original_height")),
    )


def parse_results(body: object, *, offset: int, asked: int) -> ResultPage:
    """The page asked at ``offset`` for ``asked`` results: a shorter page is the last."""
    if not isinstance(body, dict):
        raise ResponseFormatError("serpapi: the answer is not a JSON object")
    results = body.get("images_results", [])
    if not isinstance(results, list):
        raise ResponseFormatError("serpapi: 'images_results' is not a list")
    rows = [r for r in results if isinstance(r, dict)]
    hits = tuple(h for h in map(_hit, rows) if h is not None)
    last = len(rows) < asked
    return ResultPage(hits, offset if last else offset + len(rows), count=len(rows))


def _error(status: int, body: bytes, key: str | None) -> ApiError:
    try:
        detail = str(orjson.loads(body).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        detail = body[:200].decode("utf-8", "replace")
    text = redact(f"serpapi: HTTP {status}: {detail}", key)
    if status == 429:
        if "run out of searches" in detail.casefold():
            return QuotaExceededError(text, status=status)
        return ThrottledError(text, retry_after=None, status=status)
    if status in (401, 403):
        return AuthenticationError(text, status=status)
    if 400 <= status < 500:
        return InvalidRequestError(text, status=status)
    return ServerError(text, status=status)


class SerpApiSearch(JsonApi):
    """A SerpApi client for one image engine: one request per :meth:`search` call."""

    name = "serpapi"
    service = "SerpApi"
    default_endpoint = DEFAULT_ENDPOINT

    def __init__(
        self,
        key: str,
        endpoint: str | None = None,
        *,
        engine: str = "bing_images",
        **transport: Any,
    ) -> None:
        if not key or not key.strip():
            raise ConfigError("--key", f"provider serpapi needs a key (--key or ${KEY_ENV})")
        if engine not in ENGINES:
            raise ConfigError("--serpapi-engine", f"must be one of {', '.join(ENGINES)}")
        super().__init__(endpoint, secret=key.strip(), **transport)
        self.engine = engine

    async def search(
        self, query: str, *, offset: int, count: int, filters: Mapping[str, str]
    ) -> ResultPage:
        params = {"engine": self.engine, "q": query, "api_key": self._secret or "", **filters}
        if self.engine == "google_images":
            asked = GOOGLE_PAGE
            params["ijn"] = str(offset // GOOGLE_PAGE)
        else:
            asked = max(1, min(count, MAX_COUNT))
            params |= {"first": str(offset + 1), "count": str(asked)}
        answer = await self.request("search", "GET", SEARCH_PATH, params=params)
        if not 200 <= answer.status < 300:
            raise _error(answer.status, answer.body, self._secret)
        body = answer.json("serpapi")
        if isinstance(body, dict) and body.get("error") and not body.get("images_results"):
            # "Google hasn't returned any results for this query." comes as a 200.
            if "hasn't returned any results" in str(body["error"]):
                return ResultPage((), offset)
            raise _error(400, answer.body, self._secret)
        return parse_results(body, offset=offset, asked=asked)
