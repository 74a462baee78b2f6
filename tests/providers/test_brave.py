"""The Brave Search provider: its answer parsed (documented-shape fixture), and its wire
behaviour against a loopback server (key header, one page a query, limits and errors)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bingcrawl.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    QuotaExceededError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
)
from bingcrawl.providers.brave import BraveSearch, brave_filters, parse_results
from tests.support.scripted import ScriptedApi, serve

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "brave" / "images.json"


def test_results_become_hits_and_a_query_is_one_page() -> None:
    page = parse_results(json.loads(FIXTURE.read_text()), offset=0)
    first, second = page.hits  # the third has no properties.url
    assert first.url == "https://www.example-zoo.org/media/red-panda-branch.jpg"
    assert first.host_page_url == "https://www.example-zoo.org/animals/red-panda"
    assert first.thumbnail_url == "https://imgs.search.brave.com/abc/rs:fit:500:0:0/g:ce/aHR0cHM6"
    assert (first.width, first.height, first.name) == (1600, 1067, "Red panda resting on a branch")
    assert (second.width, second.height) == (None, None)
    assert first.license is None  # Brave states none
    assert page.next_offset == 0  # not past the offset: the query ends with this page
    with pytest.raises(ResponseFormatError):
        parse_results({"type": "ErrorResponse"}, offset=0)


def test_only_the_filters_brave_takes() -> None:
    assert brave_filters({"--cc": "de", "--set-lang": "pt-br", "--safe-search": "Off"}) == (
        ("country", "DE"), ("safesearch", "off"), ("search_lang", "pt-br"),
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"^--license: provider brave cannot honour"):
        brave_filters({"--license": "Public"})
    with pytest.raises(ConfigError, match="Off or Strict"):
        brave_filters({"--safe-search": "Moderate"})


@pytest.fixture
async def brave() -> AsyncIterator[tuple[ScriptedApi, str]]:
    fake = ScriptedApi(FIXTURE.read_bytes())
    async with serve(fake, "/res/v1/images/search") as base:
        yield fake, base


async def test_the_key_goes_in_its_header_and_a_query_is_asked_once(
    brave: tuple[ScriptedApi, str],
) -> None:
    fake, base = brave
    async with BraveSearch("tok-1", base) as client:
        page = await client.search("red panda", offset=0, count=150, filters={"country": "DE"})
        assert (await client.search("red panda", offset=150, count=150, filters={})).hits == ()
    [request] = fake.requests  # the second call asked nothing: one page a query
    assert request.headers["X-Subscription-Token"] == "tok-1"
    assert dict(request.query) == {"q": "red panda", "count": "150", "country": "DE"}
    assert len(page.hits) == 2
    with pytest.raises(ConfigError, match="BRAVE_SEARCH_API_KEY"):
        BraveSearch("  ", base)


ERROR = b'{"type": "ErrorResponse", "error": {"code": "RATE_LIMITED", "detail": "slow"}}'


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (429, {"X-RateLimit-Remaining": "0, 900", "X-RateLimit-Reset": "1, 86000"}, ThrottledError),
        (429, {"X-RateLimit-Remaining": "1, 0", "X-RateLimit-Reset": "1, 86000"},
         QuotaExceededError),
        (401, {}, AuthenticationError),
        (422, {}, InvalidRequestError),
        (502, {}, ServerError),
    ],
)  # fmt: skip
async def test_limits_and_errors_map_onto_the_error_tree(
    brave: tuple[ScriptedApi, str], status: int, headers: dict[str, str], error: type[Exception]
) -> None:
    fake, base = brave
    fake.status, fake.headers, fake.body = status, headers, ERROR
    async with BraveSearch("tok-1", base) as client:
        with pytest.raises(error) as raised:
            await client.search("owl", offset=0, count=20, filters={})
    if isinstance(raised.value, ThrottledError):
        assert raised.value.retry_after == 1.0  # the per-second window's reset
    assert "tok-1" not in str(raised.value)
