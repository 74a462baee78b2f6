"""The Openverse provider: its answer parsed (from a documented-shape fixture), and its wire
behaviour against a loopback server (paging, tokens, every error the crawl must tell apart)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bingcrawl.errors import (
    ApiConnectionError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    QuotaExceededError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
)
from bingcrawl.providers.base import candidate_from_hit
from bingcrawl.providers.openverse import MAX_RESULTS, OpenverseSearch, parse_results
from bingcrawl.records import Source
from tests.support.scripted import ScriptedApi, serve

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openverse" / "images_page1.json"


def answer() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def test_a_documented_answer_becomes_hits_with_their_own_licenses() -> None:
    page = parse_results(answer(), offset=0, page_size=20)
    assert [h.image_id for h in page.hits] == [
        "4bc43a04-ef46-4544-a0c1-63c63f56e276",
        "0d1a2b3c-4d5e-46f7-8a9b-0c1d2e3f4a5b",
    ]  # the third result has no url
    first, second = page.hits
    assert first.url == "https://live.staticflickr.com/65535/41112345678_0a1b2c3d4e_b.jpg"
    assert first.host_page_url == "https://www.flickr.com/photos/example/41112345678"
    assert (first.width, first.height, first.encoding_format) == (1024, 683, "jpg")
    assert first.license == "by 2.0"
    assert first.license_url == "https://creativecommons.org/licenses/by/2.0/"
    assert first.creator == "Jane Photographer"
    assert first.attribution is not None
    assert first.attribution.startswith('"Red panda (Ailurus fulgens)" by Jane Photographer')
    assert (second.license, second.creator, second.encoding_format) == ("cc0 1.0", None, None)
    assert page.next_offset == 20
    # The image's own license wins over the filter's on the candidate.
    candidate = candidate_from_hit(
        first, label="red_panda", query="red panda", source=Source.SEARCH, license="by"
    )
    assert candidate.license == "by 2.0"
    assert candidate.reported_width == 1024


def test_paging_ends_at_the_last_page_or_at_240_results() -> None:
    body = answer()
    assert parse_results(body, offset=200, page_size=20).next_offset == 220
    last = parse_results({**body, "page": 12}, offset=220, page_size=20)
    assert last.next_offset == 220  # not past the offset: no more pages
    short = parse_results({**body, "result_count": 30, "page_count": 2}, offset=20, page_size=20)
    assert short.next_offset == 20
    assert parse_results({**body, "results": []}, offset=40, page_size=20).next_offset == 40
    capped = parse_results(body, offset=MAX_RESULTS - 20, page_size=20)
    assert capped.next_offset == MAX_RESULTS - 20
    # An offset inside a page (an earlier run with another --count) skips what it saw.
    inside = parse_results(body, offset=21, page_size=20)
    assert [h.image_id for h in inside.hits] == ["0d1a2b3c-4d5e-46f7-8a9b-0c1d2e3f4a5b"]
    with pytest.raises(ResponseFormatError):
        parse_results({"detail": "nope"}, offset=0, page_size=20)


@dataclass
class Tokens:
    """Openverse's token route: records each client-credentials form, grants one token."""

    forms: list[dict[str, str]] = field(default_factory=list)

    async def grant(self, request: web.Request) -> web.Response:
        self.forms.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.json_response({"access_token": "tok-123", "expires_in": 36000})


@pytest.fixture
async def openverse() -> AsyncIterator[tuple[ScriptedApi, Tokens, str]]:
    fake, tokens = ScriptedApi(FIXTURE.read_bytes()), Tokens()
    async with serve(
        fake, "/v1/images/", extra=(("POST", "/v1/auth_tokens/token/", tokens.grant),)
    ) as base:
        yield fake, tokens, base


async def test_a_keyless_search_asks_the_documented_path(
    openverse: tuple[ScriptedApi, Tokens, str],
) -> None:
    fake, _tokens, base = openverse
    calls: list[tuple[str, int]] = []
    async with OpenverseSearch(base, on_response=lambda e, s: calls.append((e, s))) as client:
        page = await client.search("red panda", offset=40, count=150, filters={"license": "by,cc0"})
    [request] = fake.requests
    assert request.path == "/v1/images/"
    assert dict(request.query) == {
        "q": "red panda",
        "page": "3",
        "page_size": "20",
        "license": "by,cc0",
    }  # fmt: skip  (anonymous: at most 20 a page, so offset 40 is page 3)
    assert "Authorization" not in request.headers
    assert len(page.hits) == 2
    assert calls == [("search", 200)]


async def test_client_credentials_are_traded_for_a_bearer_token(
    openverse: tuple[ScriptedApi, Tokens, str],
) -> None:
    fake, tokens, base = openverse
    async with OpenverseSearch(base, client_id="id", client_secret="s3cret") as client:
        await client.search("owl", offset=0, count=150, filters={})
        await client.search("owl", offset=50, count=150, filters={})
    assert tokens.forms == [
        {"grant_type": "client_credentials", "client_id": "id", "client_secret": "s3cret"}
    ]  # once, then reused
    assert [r.headers["Authorization"] for r in fake.requests] == ["Bearer tok-123"] * 2
    assert [r.query["page_size"] for r in fake.requests] == ["50", "50"]
    assert fake.requests[1].query["page"] == "2"
    with pytest.raises(ConfigError, match="OPENVERSE_CLIENT_ID"):
        OpenverseSearch(base, client_id="id")


@pytest.mark.parametrize(
    ("status", "headers", "body", "error"),
    [
        (429, {"Retry-After": "7"}, b'{"detail": "Request was throttled."}', ThrottledError),
        (
            429,
            {"Retry-After": "80000"},
            b'{"detail": "Request was throttled."}',
            QuotaExceededError,
        ),  # the daily limit: a day's wait is a stop, not a pause
        (401, {}, b'{"detail": "Invalid token."}', AuthenticationError),
        (400, {}, b'{"detail": {"page_size": ["too large"]}}', InvalidRequestError),
        (503, {}, b"<html>down</html>", ServerError),
        (200, {}, b"<html>not json</html>", ResponseFormatError),
    ],
)
async def test_every_answer_maps_onto_the_error_tree(
    openverse: tuple[ScriptedApi, Tokens, str],
    status: int,
    headers: dict[str, str],
    body: bytes,
    error: type[Exception],
) -> None:
    fake, _tokens, base = openverse
    fake.status, fake.headers, fake.body = status, headers, body
    async with OpenverseSearch(base) as client:
        with pytest.raises(error) as raised:
            await client.search("owl", offset=0, count=20, filters={})
    if isinstance(raised.value, ThrottledError):
        assert raised.value.retry_after == 7.0
    if isinstance(raised.value, InvalidRequestError):
        assert raised.value.parameter == "page_size"


async def test_a_filter_openverse_does_not_take_is_refused_before_any_request(
    openverse: tuple[ScriptedApi, Tokens, str],
) -> None:
    fake, _tokens, base = openverse
    async with OpenverseSearch(base) as client:
        refused = r"imageType: is not a filter Openverse takes \(provider openverse\)"
        with pytest.raises(ConfigError, match=refused):
            await client.search("owl", offset=0, count=20, filters={"imageType": "Photo"})
    assert fake.requests == []


async def test_an_unreachable_endpoint_is_a_connection_error() -> None:
    async with OpenverseSearch("http://127.0.0.1:9/") as client:
        with pytest.raises(ApiConnectionError) as raised:
            await client.search("owl", offset=0, count=20, filters={})
    assert raised.value.sent is False
