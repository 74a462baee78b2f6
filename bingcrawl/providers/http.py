"""The HTTP side every JSON search provider shares: one session, one request per call.

:class:`JsonApi` opens an ``aiohttp`` session (no cookies, no environment proxy), sends one
request, caps the answer's size, reports every call that may have reached the service to
``on_response(endpoint, status)`` (status 0: no answer; a connection never made is not a
call), turns a missing connection into :class:`ApiConnectionError` (``sent`` says whether the
request may have left) and hands back the status, headers and body. Each provider maps
statuses and bodies onto the error tree itself; none retries (the crawl's API gate does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from bingcrawl.errors import ApiConnectionError, ResponseFormatError, redact

__all__ = ["MAX_RESPONSE_BYTES", "Answer", "JsonApi"]

MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
_NOT_SENT: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request got back."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self, service: str) -> Any:
        """The body as JSON; :class:`ResponseFormatError` when it is not."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise ResponseFormatError(
                f"{service}: HTTP {self.status} with a body that is not JSON", status=self.status
            ) from None


class JsonApi:
    """Base of a provider client: ``async with`` it, then :meth:`request`."""

    #: The service's name in messages.
    service = "api"
    #: The service's public base URL, and the User-Agent sent when none is given.
    default_endpoint = ""
    default_user_agent = "bingcrawl/0.1"

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        user_agent: str | None = None,
        timeout: float = 20.0,
        on_response: Callable[[str, int], None] | None = None,
        connector: aiohttp.BaseConnector | None = None,
        secret: str | None = None,
    ) -> None:
        endpoint = endpoint or self.default_endpoint
        self._base = endpoint if endpoint.endswith("/") else endpoint + "/"
        self._user_agent = user_agent or self.default_user_agent
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        self._on_response = on_response
        self._connector = connector
        self._secret = secret
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            connector_owner=self._connector is None,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send one request to ``{endpoint}{path}``; the answer, whatever its status."""
        session = self._session
        if session is None:
            raise RuntimeError(f"use 'async with' on the {self.service} client before calling it")
        try:
            async with session.request(
                method,
                self._base + path,
                params=params,
                data=data,
                headers={"User-Agent": self._user_agent, **(headers or {})},
                allow_redirects=False,
            ) as response:
                status, answer_headers = response.status, response.headers
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            sent = not isinstance(exc, _NOT_SENT)
            if sent and self._on_response is not None:
                self._on_response(endpoint, 0)
            raise ApiConnectionError(
                redact(f"{endpoint}: cannot reach {self.service} at {self._base} ({exc})",
                       self._secret),
                sent=sent,
            ) from exc  # fmt: skip
        if self._on_response is not None:
            self._on_response(endpoint, status)
        if len(body) > MAX_RESPONSE_BYTES:
            raise ResponseFormatError(f"{self.service} {endpoint}: answer too large", status=status)
        return Answer(status, answer_headers, body)
