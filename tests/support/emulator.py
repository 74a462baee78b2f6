"""Emulator corpora and emulator queries the tests share."""

from __future__ import annotations

from typing import Any

import aiohttp

from bingcrawl.emulator import EmulatorServer
from bingcrawl.emulator.corpus import CorpusConfig

__all__ = ["clean_corpus", "first_page_suggestions"]


def clean_corpus(**kw: Any) -> CorpusConfig:
    """Every image distinct and served: outcomes are exact."""
    kw.setdefault("results_per_query", 40)
    return CorpusConfig(
        fault_rate=0.0, exact_dup_rate=0.0, near_dup_rate=0.0, cross_query_rate=0.0, **kw
    )


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
