"""The SerpApi provider: its answer parsed (documented-shape fixture), Bing's filters mapped
for bing_images, and its wire behaviour against a loopback server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bingcrawl.errors import (
    AuthenticationError,
    ConfigError,
    QuotaExceededError,
    ServerError,
    ThrottledError,
)
from bingcrawl.providers.serpapi import SerpApiSearch, parse_results, serpapi_filters
from tests.support.scripted import ScriptedApi, serve

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "serpapi" / "bing_images.json"


def test_results_become_hits_and_a_short_page_is_the_last() -> None:
    body = json.loads(FIXTURE.read_text())
    page = parse_results(body, offset=0, asked=3)
    first, second = page.hits  # the third is a data: URL
    assert first.url == "https://images.example.com/red-panda-1.jpg"
    assert first.host_page_url == "https://images.example.com/gallery/red-panda"
    assert first.thumbnail_url == "https://tse1.mm.bing.net/th?id=OIP.aaa&pid=Api"
    assert (first.width, first.height, first.name) == (1920, 1280, "Red panda in the snow")
    assert (second.width, second.height) == (None, None)
    assert page.next_offset == 3  # a full page: the next starts after it
    assert parse_results(body, offset=30, asked=10).next_offset == 30  # short: the last


def test_bing_filters_keep_their_meaning_on_bing_images() -> None:
    options = {"--license": "Public", "--image-type": "Line", "--size": "Large",
               "--color": "Monochrome", "--mkt": "de-DE"}  # fmt: skip
    assert dict(serpapi_filters("bing_images", options)) == {
        "license": "L1", "photo": "linedrawing", "imagesize": "large", "color2": "bw",
        "mkt": "de-DE",
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"^--freshness: provider serpapi cannot honour"):
        serpapi_filters("bing_images", {"--freshness": "Day"})
    with pytest.raises(ConfigError, match=r"^--license: provider serpapi with google_images"):
        serpapi_filters("google_images", {"--license": "Public"})


@pytest.fixture
async def serpapi() -> AsyncIterator[tuple[ScriptedApi, str]]:
    fake = ScriptedApi(FIXTURE.read_bytes())
    async with serve(fake, "/search.json") as base:
        yield fake, base


async def test_bing_images_pages_by_first_and_google_images_by_ijn(
    serpapi: tuple[ScriptedApi, str],
) -> None:
    fake, base = serpapi
    async with SerpApiSearch("sk-1", base) as client:
        await client.search("red panda", offset=30, count=150, filters={"license": "L1"})
    async with SerpApiSearch("sk-1", base, engine="google_images") as client:
        await client.search("red panda", offset=200, count=150, filters={})
    bing, google = (dict(r.query) for r in fake.requests)
    assert bing == {"engine": "bing_images", "q": "red panda", "api_key": "sk-1",
                    "license": "L1", "first": "31", "count": "150"}  # fmt: skip
    assert google == {"engine": "google_images", "q": "red panda", "api_key": "sk-1", "ijn": "2"}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (429, b'{"error": "Your account has run out of searches."}', QuotaExceededError),
        (429, b'{"error": "Hourly throughput limit reached."}', ThrottledError),
        (401, b'{"error": "Invalid API key sk-1."}', AuthenticationError),
        (500, b'{"error": "Internal error."}', ServerError),
    ],
)
async def test_errors_map_onto_the_error_tree_without_the_key(
    serpapi: tuple[ScriptedApi, str], status: int, body: bytes, error: type[Exception]
) -> None:
    fake, base = serpapi
    fake.status, fake.body = status, body
    async with SerpApiSearch("sk-1", base) as client:
        with pytest.raises(error) as raised:
            await client.search("owl", offset=0, count=20, filters={})
    assert "sk-1" not in str(raised.value)


async def test_no_results_is_an_empty_last_page(serpapi: tuple[ScriptedApi, str]) -> None:
    fake, base = serpapi
    fake.body = b'{"error": "Google hasn\'t returned any results for this query."}'
    async with SerpApiSearch("sk-1", base, engine="google_images") as client:
        page = await client.search("zzqx", offset=0, count=20, filters={})
    assert (page.hits, page.next_offset) == ((), 0)
