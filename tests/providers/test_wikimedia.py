"""The Wikimedia Commons provider: its answer parsed (documented-shape fixture), and its wire
behaviour against a loopback server (the documented query, etiquette, errors)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.errors import (
    ApiConnectionError,
    ConfigError,
    InvalidRequestError,
    ResponseFormatError,
    ServerError,
    ThrottledError,
)
from bingcrawl.providers.wikimedia import USER_AGENT, WikimediaSearch, parse_answer, text_of
from tests.support.scripted import ScriptedApi, serve

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "wikimedia" / "search_page1.json"


def answer() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def test_pages_come_in_search_order_with_license_and_author() -> None:
    page = parse_answer(answer(), offset=0)
    assert [h.image_id for h in page.hits] == ["51234", "88211"]  # by index; -1 is missing
    first, second = page.hits
    assert first.license == "Public domain"
    assert first.creator == "Unknown author"
    assert first.name == "Ailurus fulgens RoterPanda LesserPanda"  # from the file title
    assert first.attribution == (
        '"Ailurus fulgens RoterPanda LesserPanda" by Unknown author is in the public domain '
        "(Wikimedia Commons)."
    )
    assert second.url.startswith("https://upload.wikimedia.org/wikipedia/commons/a/a1/")
    assert second.host_page_url == (
        "https://commons.wikimedia.org/wiki/File:Red_Panda_(Ailurus_fulgens)_in_a_tree.jpg"
    )
    assert (second.width, second.height, second.encoding_format) == (3000, 2000, "jpeg")
    assert second.license == "CC BY-SA 4.0"
    assert second.license_url == "https://creativecommons.org/licenses/by-sa/4.0"
    assert second.creator == "Example Photographer & friend"  # HTML reduced to text
    assert second.name == "Red Panda (Ailurus fulgens) in a tree"
    assert page.next_offset == 3


def test_the_last_page_and_api_errors() -> None:
    last = {k: v for k, v in answer().items() if k != "continue"}
    assert parse_answer(last, offset=40).next_offset == 40  # no continue: no more
    as_list = {"query": {"pages": list(answer()["query"]["pages"].values())}}
    assert len(parse_answer(as_list, offset=0).hits) == 2  # formatversion=2: a list
    assert parse_answer({"batchcomplete": True}, offset=0).hits == ()  # nothing found
    lag = {"error": {"code": "maxlag", "info": "Waiting for a database server: 6 seconds"}}
    with pytest.raises(ThrottledError) as raised:
        parse_answer(lag, offset=0, retry_after=5.0)
    assert raised.value.retry_after == 5.0
    with pytest.raises(InvalidRequestError, match="badvalue"):
        parse_answer({"error": {"code": "badvalue", "info": "x"}}, offset=0)
    with pytest.raises(ResponseFormatError):
        parse_answer(["not", "an", "object"], offset=0)
    assert text_of("<b>A</b>&nbsp;<i>B</i>") == "A B"


@pytest.fixture
async def commons() -> AsyncIterator[tuple[ScriptedApi, str]]:
    fake = ScriptedApi(FIXTURE.read_bytes())
    async with serve(fake, "/w/api.php") as base:
        yield fake, base


async def test_the_documented_query_with_wikimedias_etiquette(
    commons: tuple[ScriptedApi, str],
) -> None:
    fake, base = commons
    async with WikimediaSearch(base) as client:
        page = await client.search("red panda", offset=60, count=150, filters={})
    [request] = fake.requests
    assert request.path == "/w/api.php"
    query = dict(request.query)
    assert query["gsrsearch"] == "filetype:bitmap red panda"
    assert query["generator"] == "search"
    assert (query["gsrnamespace"], query["prop"]) == ("6", "imageinfo")
    assert (query["gsrlimit"], query["gsroffset"], query["maxlag"]) == ("50", "60", "5")
    assert query["iiprop"] == "url|size|mime|extmetadata"
    assert request.headers["User-Agent"] == USER_AGENT  # names the tool and where it lives
    assert len(page.hits) == 2


@pytest.mark.parametrize(
    ("status", "headers", "body", "error"),
    [
        (429, {"Retry-After": "3"}, b"slow down", ThrottledError),
        (200, {"Retry-After": "5"}, b'{"error": {"code": "maxlag"}}', ThrottledError),
        (503, {}, b"<html>down</html>", ServerError),
        (200, {}, b"<html>not json</html>", ResponseFormatError),
    ],
)
async def test_every_answer_maps_onto_the_error_tree(
    commons: tuple[ScriptedApi, str],
    status: int,
    headers: dict[str, str],
    body: bytes,
    error: type[Exception],
) -> None:
    fake, base = commons
    fake.status, fake.headers, fake.body = status, headers, body
    async with WikimediaSearch(base) as client:
        with pytest.raises(error) as raised:
            await client.search("owl", offset=0, count=20, filters={})
    if isinstance(raised.value, ThrottledError):
        assert raised.value.retry_after == float(headers["Retry-After"])


async def test_filters_are_refused_and_an_unreachable_api_is_a_connection_error() -> None:
    async with WikimediaSearch("http://127.0.0.1:9/") as client:
        with pytest.raises(ConfigError, match="provider wikimedia"):
            await client.search("owl", offset=0, count=20, filters={"license": "by"})
        with pytest.raises(ApiConnectionError) as raised:
            await client.search("owl", offset=0, count=20, filters={})
    assert raised.value.sent is False
