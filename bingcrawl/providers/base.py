"""What every search provider returns, and what the search source asks of one.

A provider is paged by a result offset, as Bing is (``offset``/``nextOffset``): a provider
that pages by page number (Openverse) or by continuation token maps the offset onto its own
cursor, so the checkpoint keeps one integer per query row whatever the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from bingcrawl.records import Candidate, Source

__all__ = ["Hit", "ResultPage", "SearchProvider", "candidate_from_hit"]


@dataclass(frozen=True, slots=True)
class Hit:
    """One image a provider returned. ``url`` is the file to download.

    ``license`` is the image's own license when the provider states one (``by-sa 4.0``),
    with ``license_url``, ``creator`` and a ready ``attribution`` line; None otherwise.
    """

    url: str
    image_id: str | None = None
    name: str | None = None
    host_page_url: str | None = None
    thumbnail_url: str | None = None
    insights_token: str | None = None
    encoding_format: str | None = None
    width: int | None = None
    height: int | None = None
    license: str | None = None
    license_url: str | None = None
    creator: str | None = None
    attribution: str | None = None


@dataclass(frozen=True, slots=True)
class ResultPage:
    """One page of results and where the next one starts.

    ``next_offset`` as Bing's ``nextOffset``: None when the provider gave none (the next
    page starts after this page's results), and no more pages when it is not past this
    page's offset. ``count`` is the number of results the page held, hits without a usable
    URL included (None: ``len(hits)``). ``suggestions`` are queries the provider suggests
    (for ``--expand``; empty where it suggests none).
    """

    hits: tuple[Hit, ...]
    next_offset: int | None
    suggestions: tuple[str, ...] = ()
    count: int | None = None


class SearchProvider(Protocol):
    """One search service, as the search source uses it (one HTTP request per call; the
    caller's API gate does the pacing, the retries and the budget)."""

    @property
    def name(self) -> str:
        """The provider's name (``bing``, ``openverse``...)."""
        ...

    async def search(
        self, query: str, *, offset: int, count: int, filters: Mapping[str, str]
    ) -> ResultPage:
        """The page of ``query`` that starts at result ``offset`` (at most ``count`` hits)."""
        ...


def candidate_from_hit(
    hit: Hit,
    *,
    label: str,
    query: str,
    source: Source,
    license: str | None,
    parent: str | None = None,
    provider: str | None = None,
) -> Candidate:
    """A candidate for one hit; the hit's own license wins over the filter's (``license``)."""
    return Candidate(
        url=hit.url,
        label=label,
        query=query,
        source=source,
        image_id=hit.image_id,
        name=hit.name,
        host_page_url=hit.host_page_url,
        thumbnail_url=hit.thumbnail_url,
        insights_token=hit.insights_token,
        encoding_format=hit.encoding_format,
        reported_width=hit.width,
        reported_height=hit.height,
        license=hit.license or license,
        parent=parent,
        license_url=hit.license_url,
        creator=hit.creator,
        attribution=hit.attribution,
        provider=provider,
    )
