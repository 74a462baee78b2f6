"""Bing Image Search v7 as a search provider: ``/images/search`` through :class:`BingClient`."""

from __future__ import annotations

from collections.abc import Mapping

from bingcrawl.bing.client import BingClient
from bingcrawl.bing.models import Image, Images
from bingcrawl.bing.params import MAX_QUERY_LENGTH, SearchParams
from bingcrawl.providers.base import Hit, ResultPage

__all__ = ["BingSearch", "hit_from_image", "result_page", "suggestions"]


def hit_from_image(image: Image) -> Hit | None:
    """The hit of one API image (None without a content URL). Bing's own
    ``creativeCommons`` is not taken as the image's license: the filter used is."""
    if not image.content_url:
        return None
    return Hit(
        url=image.content_url,
        image_id=image.image_id,
        name=image.name,
        host_page_url=image.host_page_url,
        thumbnail_url=image.thumbnail_url,
        insights_token=image.image_insights_token,
        encoding_format=image.encoding_format,
        width=image.width,
        height=image.height,
    )


def suggestions(page: Images) -> tuple[str, ...]:
    """The texts a first page suggests, in order: expansions, pivots, similar terms."""
    queries = [
        *page.query_expansions,
        *(s for pivot in page.pivot_suggestions for s in pivot.suggestions),
        *page.similar_terms,
    ]
    texts = (" ".join((q.text or q.display_text or "").split()) for q in queries)
    return tuple(t for t in texts if t and len(t) <= MAX_QUERY_LENGTH)


def result_page(page: Images) -> ResultPage:
    """A search answer as a provider-neutral page (Bing's ``nextOffset`` as it is)."""
    hits = tuple(h for h in map(hit_from_image, page.value) if h is not None)
    return ResultPage(hits, page.next_offset, suggestions(page), count=len(page.value))


class BingSearch:
    """``/images/search``, paged by Bing's own ``offset``/``nextOffset``."""

    name = "bing"

    def __init__(self, client: BingClient) -> None:
        self.client = client

    async def search(
        self, query: str, *, offset: int, count: int, filters: Mapping[str, str]
    ) -> ResultPage:
        params = SearchParams.from_mapping({"q": query, "count": count, **filters})
        return result_page(await self.client.search(params.with_offset(offset)))
