"""Brave Search's image search as a provider (``X-Subscription-Token``, one page a query).

``GET {endpoint}res/v1/images/search?q=...&count=N`` with the key in ``X-Subscription-Token``
answers ``{"type": "images", "results": [...]}``: each result's image is
``properties.url`` (its size in ``properties.width``/``height`` for most images), the page
it is on ``url``, the thumbnail ``thumbnail.src``. Brave has no offset: one request returns up
to 200 results and a query ends there (``--count`` sets how many, at most 150 here). No
license is stated: the manifest's license stays empty.

Limits come in ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` headers, each a
comma-separated pair (per second, per month). A 429 with no monthly calls left is the month's
quota (:class:`QuotaExceededError`: the crawl stops, exit 4, resumable); any other 429 is a
throttle (:class:`ThrottledError`, waited out for the per-second reset). 401/403 ->
:class:`AuthenticationError`, 400/422 -> :class:`InvalidRequestError`, 5xx or a body that is
not the documented JSON -> :class:`ServerError`.
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
    "KEY_ENV",
    "MAX_COUNT",
    "OPTION_PARAMS",
    "BraveSearch",
    "brave_filters",
    "parse_results",
    "rate_limit",
]

DEFAULT_ENDPOINT: Final = "https://api.search.brave.com/"
SEARCH_PATH: Final = "res/v1/images/search"
KEY_ENV: Final = "BRAVE_SEARCH_API_KEY"
KEY_HEADER: Final = "X-Subscription-Token"
#: The most results one image search returns.
MAX_COUNT: Final = 200

#: The crawl options Brave's image search honours: flag -> its parameter.
OPTION_PARAMS: Final[Mapping[str, str]] = {
    "--cc": "country",
    "--set-lang": "search_lang",
    "--safe-search": "safesearch",
}


def brave_filters(options: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The search parameters of the crawl options given (flag -> value), canonical; an
    option Brave cannot honour raises :class:`ConfigError` naming it and the provider."""
    params: dict[str, str] = {}
    for flag, value in options.items():
        text = str(value).strip()
        if flag not in OPTION_PARAMS:
            raise ConfigError(
                flag,
                "provider brave cannot honour this filter (it takes "
                f"{', '.join(OPTION_PARAMS)})",
            )
        if flag == "--safe-search":
            if text.casefold() not in ("off", "strict"):
                raise ConfigError(flag, f"{value!r}: Brave's image search takes Off or Strict")
            text = text.casefold()
        elif flag == "--cc":
            if not (len(text) == 2 and text.isalpha()) and text.upper() != "ALL":
                raise ConfigError(flag, f"{value!r}: a two-letter country code, or ALL")
            text = text.upper()
        elif not (2 <= len(text) <= 10 and text.replace("-", "").isalpha()):
            raise ConfigError(flag, f"{value!r}: a language code such as en, de, pt-br")
        params[OPTION_PARAMS[flag]] = text
    return tuple(sorted(params.items()))


def rate_limit(headers: Mapping[str, str], name: str) -> list[int]:
    """An ``X-RateLimit-*`` header as its integers (per second, per month...); [] if absent."""
    values = []
    for part in headers.get(f"X-RateLimit-{name}", "").split(","):
        try:
            values.append(int(part.strip()))
        except ValueError:
            continue
    return values


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _hit(result: Mapping[str, Any]) -> Hit | None:
    props = result.get("properties")
    props = props if isinstance(props, dict) else {}
    url = props.get("url")
    if not isinstance(url, str) or not url:
        return None
    thumb = result.get("thumbnail")
    title = result.get("title")
    page = result.get("url")
    return Hit(
        url=url,
        name=title if isinstance(title, str) and title else None,
        host_page_url=page if isinstance(page, str) and page else None,
        thumbnail_url=thumb.get("src") if isinstance(thumb, dict) else None,
        width=_int(props.get("width")),
        height=_int(props.get("height")),
    )


def parse_results(body: object, *, offset: int) -> ResultPage:
    """The one page of a query: every image, and no next page."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ResponseFormatError("brave: the answer has no 'results' list")
    results = [r for r in body["results"] if isinstance(r, dict)]
    hits = tuple(h for h in map(_hit, results) if h is not None)
    return ResultPage(hits, offset, count=len(results))  # not past the offset: the end


def _error(status: int, body: bytes, headers: Mapping[str, str], key: str | None) -> ApiError:
    try:
        error = orjson.loads(body).get("error") or {}
        detail = f"{error.get('code', '')}: {error.get('detail', '')}".strip(": ")
    except (orjson.JSONDecodeError, AttributeError):
        detail = body[:200].decode("utf-8", "replace")
    text = redact(f"brave: HTTP {status}: {detail}", key)
    if status == 429:
        remaining = rate_limit(headers, "Remaining")
        if len(remaining) > 1 and remaining[-1] == 0:
            return QuotaExceededError(f"{text} (no calls left this month)", status=status)
        reset = rate_limit(headers, "Reset")
        return ThrottledError(text, retry_after=float(reset[0]) if reset else None, status=status)
    if status in (401, 403):
        return AuthenticationError(text, status=status)
    if status in (400, 422):
        return InvalidRequestError(text, status=status)
    return ServerError(text, status=status)


class BraveSearch(JsonApi):
    """A Brave Search API client: one session, one request per :meth:`search` call."""

    name = "brave"
    service = "Brave Search"
    default_endpoint = DEFAULT_ENDPOINT

    def __init__(self, key: str, endpoint: str | None = None, **transport: Any) -> None:
        if not key or not key.strip():
            raise ConfigError("--key", f"provider brave needs a key (--key or ${KEY_ENV})")
        super().__init__(endpoint, secret=key.strip(), **transport)

    async def search(
        self, query: str, *, offset: int, count: int, filters: Mapping[str, str]
    ) -> ResultPage:
        unknown = set(filters) - set(OPTION_PARAMS.values())
        if unknown:
            raise ConfigError(sorted(unknown)[0], "is not a filter Brave takes (provider brave)")
        if offset > 0:
            return ResultPage((), offset)  # one page a query: asked already
        params = {"q": query, "count": str(max(1, min(count, MAX_COUNT))), **filters}
        headers = {"Accept": "application/json", KEY_HEADER: self._secret or ""}
        answer = await self.request("search", "GET", SEARCH_PATH, params=params, headers=headers)
        if not 200 <= answer.status < 300:
            raise _error(answer.status, answer.body, answer.headers, self._secret)
        return parse_results(answer.json("brave"), offset=offset)
