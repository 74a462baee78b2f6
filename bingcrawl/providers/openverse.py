"""Openverse (``api.openverse.org``) as a search provider: openly licensed images, keyless.

``GET {endpoint}v1/images/?q=...&page=N&page_size=M`` answers ``{"result_count", "page_count",
"page_size", "page", "results": [...]}``; every result carries its own license
(``license``, ``license_version``, ``license_url``), ``creator`` and a ready ``attribution``
line, which land on the candidate. Paging is by page number: the crawl's result offset maps
onto ``page = offset // page_size + 1`` (an offset inside a page skips that page's first
results), and a query ends at its last page or at :data:`MAX_RESULTS`, the most Openverse
serves for one query.

Anonymous use allows ``page_size`` up to 20; with OAuth2 client credentials
(``OPENVERSE_CLIENT_ID`` / ``OPENVERSE_CLIENT_SECRET``, registered at
``POST v1/auth_tokens/register/``) the client first trades them for a bearer token at
``POST v1/auth_tokens/token/`` and may ask for up to 50. Answers map onto the error tree as
Bing's do: 401/403 -> :class:`AuthenticationError`, 429 -> :class:`ThrottledError` with the
``Retry-After`` seconds (a wait over :data:`DAILY_LIMIT_WAIT` is the spent daily limit:
:class:`QuotaExceededError`, exit 4, resumable), 400 -> :class:`InvalidRequestError`, 5xx or
a body that is not the documented JSON -> :class:`ServerError`; no connection ->
:class:`ApiConnectionError`. One HTTP request per call, no retries: the crawl's API gate paces
and retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final

import orjson

from bingcrawl.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
    parse_retry_after,
    redact,
)
from bingcrawl.providers.base import Hit, ResultPage
from bingcrawl.providers.http import JsonApi

__all__ = [
    "DEFAULT_ENDPOINT",
    "FILTERS",
    "LICENSES",
    "MAX_RESULTS",
    "OPTION_PARAMS",
    "OpenverseSearch",
    "check_filters",
    "openverse_filters",
    "page_size_limit",
    "parse_results",
]

log = logging.getLogger("bingcrawl.providers.openverse")

DEFAULT_ENDPOINT: Final = "https://api.openverse.org/"
#: Openverse asks API clients to identify themselves (no browser disguise here).
USER_AGENT: Final = "bingcrawl/0.1 (image dataset crawler; aiohttp)"
SEARCH_PATH: Final = "v1/images/"
TOKEN_PATH: Final = "v1/auth_tokens/token/"

#: The most results Openverse serves for one query, whatever the page size.
MAX_RESULTS: Final = 240
#: A 429 asking for a longer wait than this (seconds) is the spent daily limit, not a burst.
DAILY_LIMIT_WAIT: Final = 600.0
#: Largest ``page_size`` without a token, and with one.
ANONYMOUS_PAGE_SIZE: Final = 20
AUTHENTICATED_PAGE_SIZE: Final = 50

#: Openverse's license codes (``license=``, comma-separated).
LICENSES: Final = (
    "by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd", "cc0", "pdm", "sampling+",
    "nc-sampling+",
)  # fmt: skip

#: The crawl options Openverse honours: flag -> (its parameter, the values it accepts; each
#: option takes one value or a comma-separated list of them).
OPTION_PARAMS: Final[Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "--license": ("license", LICENSES),
    "--license-type": ("license_type", ("all", "all-cc", "commercial", "modification")),
    "--category": ("category", ("photograph", "illustration", "digitized_artwork")),
    "--aspect": ("aspect_ratio", ("tall", "wide", "square")),
    "--size": ("size", ("small", "medium", "large")),
}
#: ``--safe-search``: Openverse leaves mature results out unless ``mature=true``.
_MATURE: Final = {"off": "true", "moderate": None, "strict": None}

#: Query parameters of ``/v1/images/`` the crawl may pass as filters.
FILTERS: Final = frozenset({param for param, _ in OPTION_PARAMS.values()} | {"mature"})


def openverse_filters(options: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The ``/v1/images/`` parameters of the crawl options given (flag -> value), canonical
    (lower case, sorted). A flag Openverse cannot honour, or a value it does not take, raises
    :class:`ConfigError` naming the option and the provider, before any request."""
    params: dict[str, str] = {}
    for flag, value in options.items():
        text = str(value).strip().casefold()
        if flag == "--safe-search":
            if text not in _MATURE:
                raise ConfigError(flag, f"invalid value {value!r}; accepted: Off, Moderate, Strict")
            if (mature := _MATURE[text]) is not None:
                params["mature"] = mature
            continue
        if flag not in OPTION_PARAMS:
            takes = ", ".join([*OPTION_PARAMS, "--safe-search"])
            raise ConfigError(
                flag, f"provider openverse cannot honour this filter (it takes {takes})"
            )
        param, accepted = OPTION_PARAMS[flag]
        values = [v.strip() for v in text.split(",") if v.strip()]
        wrong = [v for v in values if v not in accepted]
        if not values or wrong:
            raise ConfigError(
                flag,
                f"invalid value {value!r} for provider openverse; accepted: "
                f"{', '.join(accepted)} (several separated by commas)",
            )
        params[param] = ",".join(values)
    return tuple(sorted(params.items()))


def check_filters(filters: Mapping[str, str]) -> None:
    """Refuse parameters that are not canonical Openverse filters (a config built in code)."""
    flag_of = {param: flag for flag, (param, _) in OPTION_PARAMS.items()} | {
        "mature": "--safe-search"
    }
    for param, value in filters.items():
        if param not in flag_of:
            raise ConfigError(param, "is not a filter Openverse takes (provider openverse)")
        if param == "mature":
            if value != "true":
                raise ConfigError("--safe-search", f"mature={value!r}: only 'true' (Off) is sent")
            continue
        openverse_filters({flag_of[param]: value})



def page_size_limit(authenticated: bool) -> int:
    """The largest ``page_size`` Openverse accepts from this client."""
    return AUTHENTICATED_PAGE_SIZE if authenticated else ANONYMOUS_PAGE_SIZE


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _hit(result: Mapping[str, Any]) -> Hit | None:
    url = _text(result.get("url"))
    if url is None:
        return None
    code = _text(result.get("license"))
    version = _text(result.get("license_version"))
    license = None if code is None else f"{code} {version}" if version else code
    return Hit(
        url=url,
        image_id=_text(result.get("id")),
        name=_text(result.get("title")),
        host_page_url=_text(result.get("foreign_landing_url")),
        thumbnail_url=_text(result.get("thumbnail")),
        encoding_format=_text(result.get("filetype")),
        width=_int(result.get("width")),
        height=_int(result.get("height")),
        license=license,
        license_url=_text(result.get("license_url")),
        creator=_text(result.get("creator")),
        attribution=_text(result.get("attribution")),
    )


def parse_results(
    body: object, *, offset: int, page_size: int
) -> ResultPage:
    """The page of an ``/v1/images/`` answer asked at ``offset`` (see the module docstring)."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ResponseFormatError("openverse: the answer has no 'results' list")
    page = offset // page_size + 1
    results = [r for r in body["results"] if isinstance(r, dict)]
    skip = offset % page_size  # an offset inside a page (another --count earlier)
    hits = tuple(h for h in map(_hit, results[skip:]) if h is not None)
    page_count = _int(body.get("page_count"))
    result_count = _int(body.get("result_count"))
    end = page * page_size
    last = (
        not results
        or (page_count is not None and page >= page_count)
        or (result_count is not None and end >= result_count)
        or end >= MAX_RESULTS
    )
    # The next offset "not past this page's offset" is the end of the query.
    return ResultPage(hits, offset if last else end, count=len(results) - skip)


def _seconds(value: str | None) -> float | None:
    """A delta-seconds ``Retry-After`` as it was sent (None otherwise)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error(status: int, body: bytes, headers: Mapping[str, str], key: str | None) -> ApiError:
    try:
        detail: object = orjson.loads(body).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        detail = body[:200].decode("utf-8", "replace")
    text = redact(f"openverse: HTTP {status}: {detail}", key)
    if status == 429:
        wait = parse_retry_after(headers.get("Retry-After"))  # (capped: a pause, not a day)
        asked = _seconds(headers.get("Retry-After"))
        if asked is not None and asked > DAILY_LIMIT_WAIT:
            # The sustained (daily) limit is spent: a stop that resumes, not a day's wait.
            return QuotaExceededError(
                f"{text} (Openverse's daily limit; a re-run resumes in about "
                f"{asked / 3600:.0f} h, or sooner with OPENVERSE_CLIENT_ID/SECRET)",
                status=status,
            )
        return ThrottledError(text, retry_after=wait, status=status)
    if status in (401, 403):
        return AuthenticationError(text, status=status)
    if status == 400:
        parameter = next(iter(detail), None) if isinstance(detail, dict) else None
        return InvalidRequestError(text, status=status, parameter=parameter)
    if status in (404, 410):
        return NotFoundError(text, status=status)
    return ServerError(text, status=status)


class OpenverseSearch(JsonApi):
    """An Openverse client: one session, one request per :meth:`search` call."""

    name = "openverse"
    service = "Openverse"
    default_endpoint = DEFAULT_ENDPOINT
    default_user_agent = USER_AGENT

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        **transport: Any,
    ) -> None:
        if bool(client_id) != bool(client_secret):
            raise ConfigError(
                "OPENVERSE_CLIENT_ID", "give both the client id and the client secret, or neither"
            )
        super().__init__(endpoint, secret=client_secret, **transport)
        self._credentials = (client_id, client_secret) if client_id and client_secret else None
        self._token: str | None = None
        self._token_lock = asyncio.Lock()

    @property
    def page_size(self) -> int:
        """The largest page this client may ask for."""
        return page_size_limit(self._credentials is not None)

    async def search(
        self, query: str, *, offset: int, count: int, filters: Mapping[str, str]
    ) -> ResultPage:
        check_filters(filters)
        page_size = max(1, min(count, self.page_size))
        params = {
            "q": query,
            "page": str(offset // page_size + 1),
            "page_size": str(page_size),
            **filters,
        }
        headers = {"Accept": "application/json"}
        if self._credentials is not None:
            headers["Authorization"] = f"Bearer {await self._bearer()}"
        body = await self._json("search", "GET", SEARCH_PATH, params=params, headers=headers)
        return parse_results(body, offset=offset, page_size=page_size)

    async def _bearer(self) -> str:
        async with self._token_lock:
            if self._token is None:
                assert self._credentials is not None
                client_id, secret = self._credentials
                form = {
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret,
                }
                answer = await self._json("token", "POST", TOKEN_PATH, data=form)
                token = answer.get("access_token") if isinstance(answer, dict) else None
                if not isinstance(token, str) or not token:
                    raise AuthenticationError("openverse: the token answer has no access_token")
                self._token = token
            return self._token

    async def _json(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Any:
        answer = await self.request(
            endpoint, method, path, params=params, headers=headers, data=data
        )
        if not 200 <= answer.status < 300:
            raise _error(answer.status, answer.body, answer.headers, self._secret)
        return answer.json("openverse")
