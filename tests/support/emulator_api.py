"""Talking to a running emulator as a client would: its URLs, keyed GETs, and what its
answers must look like."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import aiohttp
from multidict import CIMultiDictProxy

from bingcrawl.emulator import EmulatorServer

__all__ = [
    "HEADERS",
    "KEY",
    "assert_query_shape",
    "first_page_suggestions",
    "get_json",
    "image_key",
    "search_url",
]

#: The subscription key the emulator tests send, and the header that carries it.
KEY = "emulator-test-key"
HEADERS = {"Ocp-Apim-Subscription-Key": KEY}


def search_url(server: EmulatorServer) -> str:
    """The emulator's /images/search URL."""
    return server.base_url + "v7.0/images/search"


async def get_json(
    http: aiohttp.ClientSession,
    url: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    """GET ``url`` with the test key; return (status, parsed JSON body, headers)."""
    async with http.get(
        url, params=params, headers=HEADERS if headers is None else headers
    ) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def image_key(server: EmulatorServer, image: dict[str, Any]) -> str:
    """The corpus key of an Image object served by ``server`` (its contentUrl path)."""
    prefix = server.base_url + "img/"
    assert image["contentUrl"].startswith(prefix)
    return unquote(image["contentUrl"][len(prefix) :])


def assert_query_shape(query: dict[str, Any], thumb_field: str = "thumbnailUrl") -> None:
    """A Query object as the reference shapes it."""
    assert {"text", "displayText", "webSearchUrl", "searchLink", "thumbnail"} <= set(query)
    assert isinstance(query["thumbnail"][thumb_field], str)


async def first_page_suggestions(server: EmulatorServer, q: str) -> list[str]:
    """The suggestion texts of ``q``'s first page, in the order the response lists them."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{server.base_url}v7.0/images/search",
            params={"q": q, "count": "1"},
            headers={"Ocp-Apim-Subscription-Key": "test-key"},
        ) as resp,
    ):
        body = await resp.json()
    texts = [q["text"] for q in body.get("queryExpansions", [])]
    texts += [s["text"] for p in body.get("pivotSuggestions", []) for s in p["suggestions"]]
    texts += [q["text"] for q in body.get("similarTerms", [])]
    return texts
