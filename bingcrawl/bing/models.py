"""Typed response objects of the Bing Image Search API v7 (only what bingcrawl uses).

Raw JSON stops here: every class has a ``from_json(obj)`` that ignores unknown fields, maps
missing optional fields to ``None`` or an empty tuple, and accepts numbers sent as strings
(``"contentSize": "12345 B"``, ``"width": "894"``). The top-level objects (:class:`Images`,
:class:`ImageInsights`, :class:`TrendingImages`, :class:`ImageKnowledge`) check the ``_type``
hint and raise :class:`ResponseFormatError` when the body is not the documented object, so a
surprising answer is an error, never an empty result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

from bingcrawl.errors import ResponseFormatError

__all__ = [
    "ErrorDetail",
    "Image",
    "ImageAction",
    "ImageCaption",
    "ImageInsights",
    "ImageKnowledge",
    "ImageTag",
    "Images",
    "InsightsMetadata",
    "MediaSize",
    "Pivot",
    "Query",
    "ResponseFormatError",
    "TrendingCategory",
    "TrendingImages",
    "TrendingTile",
    "parse_error_response",
]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dicts(value: object) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, list | tuple):
        yield from (item for item in value if isinstance(item, Mapping))


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    """An int from an int, an integral float, or a string such as ``"894"`` / ``"12345 B"``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match[1]) * _UNITS[(match[2] or "B").upper()])
    return None


def _float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _check_type(obj: object, expected: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ResponseFormatError(
            f"expected a JSON object of type {expected[0]}, got {type(obj).__name__}"
        )
    found = obj.get("_type")
    if found not in expected:
        raise ResponseFormatError(f"expected a response of type {expected[0]}, got {found!r}")
    return obj


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ``Error`` of an ``ErrorResponse``."""

    code: str | None
    sub_code: str | None
    message: str | None
    more_details: str | None
    parameter: str | None
    value: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        """Build from one element of ``ErrorResponse.errors``."""
        return cls(
            code=_str(obj.get("code")),
            sub_code=_str(obj.get("subCode")),
            message=_str(obj.get("message")),
            more_details=_str(obj.get("moreDetails")),
            parameter=_str(obj.get("parameter")),
            value=None if obj.get("value") is None else str(obj.get("value")),
        )


def parse_error_response(obj: object) -> tuple[ErrorDetail, ...]:
    """The errors of an ``ErrorResponse`` body; empty when ``obj`` is not one."""
    if not isinstance(obj, Mapping) or obj.get("_type") != "ErrorResponse":
        return ()
    return tuple(ErrorDetail.from_json(e) for e in _dicts(obj.get("errors")))


@dataclass(frozen=True, slots=True)
class MediaSize:
    """Width and height in pixels (the ``thumbnail`` field of an Image)."""

    width: int | None
    height: int | None

    @classmethod
    def from_json(cls, obj: object) -> Self | None:
        """Build from a ``MediaSize`` object; ``None`` when absent."""
        if not isinstance(obj, Mapping):
            return None
        return cls(width=_int(obj.get("width")), height=_int(obj.get("height")))


@dataclass(frozen=True, slots=True)
class InsightsMetadata:
    """Counts of insights available for an image."""

    pages_including_count: int | None = None
    available_sizes_count: int | None = None
    shopping_sources_count: int | None = None
    recipe_sources_count: int | None = None

    @classmethod
    def from_json(cls, obj: object) -> Self | None:
        """Build from an ``InsightsMetadata`` object; ``None`` when absent."""
        if not isinstance(obj, Mapping):
            return None
        return cls(
            pages_including_count=_int(obj.get("pagesIncludingCount")),
            available_sizes_count=_int(obj.get("availableSizesCount")),
            shopping_sources_count=_int(obj.get("shoppingSourcesCount")),
            recipe_sources_count=_int(obj.get("recipeSourcesCount")),
        )


@dataclass(frozen=True, slots=True)
class Image:
    """An image the API returned. ``content_url`` is the file to download.

    ``content_size`` is in bytes (parsed from ``"12345 B"``). ``creative_commons`` is the
    license Bing reports for the image, when it reports one.
    """

    content_url: str | None = None
    image_id: str | None = None
    id: str | None = None
    name: str | None = None
    host_page_url: str | None = None
    host_page_display_url: str | None = None
    thumbnail_url: str | None = None
    thumbnail: MediaSize | None = None
    web_search_url: str | None = None
    encoding_format: str | None = None
    width: int | None = None
    height: int | None = None
    content_size: int | None = None
    image_insights_token: str | None = None
    date_published: str | None = None
    accent_color: str | None = None
    creative_commons: str | None = None
    is_family_friendly: bool | None = None
    insights_metadata: InsightsMetadata | None = None

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from an ``Image`` object (unknown fields ignored)."""
        d = _dict(obj)
        family = d.get("isFamilyFriendly")
        return cls(
            content_url=_str(d.get("contentUrl")),
            image_id=_str(d.get("imageId")),
            id=_str(d.get("id")),
            name=_str(d.get("name")),
            host_page_url=_str(d.get("hostPageUrl")),
            host_page_display_url=_str(d.get("hostPageDisplayUrl")),
            thumbnail_url=_str(d.get("thumbnailUrl")),
            thumbnail=MediaSize.from_json(d.get("thumbnail")),
            web_search_url=_str(d.get("webSearchUrl")),
            encoding_format=_str(d.get("encodingFormat")),
            width=_int(d.get("width")),
            height=_int(d.get("height")),
            content_size=_int(d.get("contentSize")),
            image_insights_token=_str(d.get("imageInsightsToken")),
            date_published=_str(d.get("datePublished")),
            accent_color=_str(d.get("accentColor")),
            creative_commons=_str(d.get("creativeCommons")),
            is_family_friendly=family if isinstance(family, bool) else None,
            insights_metadata=InsightsMetadata.from_json(d.get("insightsMetadata")),
        )


def _images(value: object) -> tuple[Image, ...]:
    return tuple(Image.from_json(item) for item in _dicts(value))


@dataclass(frozen=True, slots=True)
class Query:
    """A suggested or related query (``queryExpansions``, pivots, related searches, ...)."""

    text: str | None = None
    display_text: str | None = None
    web_search_url: str | None = None
    search_link: str | None = None
    thumbnail_url: str | None = None

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from a ``Query`` object.

        The reference's examples spell the thumbnail both ``{"url": ...}`` and
        ``{"thumbnailUrl": ...}``; either is accepted.
        """
        d = _dict(obj)
        thumb = _dict(d.get("thumbnail"))
        return cls(
            text=_str(d.get("text")),
            display_text=_str(d.get("displayText")),
            web_search_url=_str(d.get("webSearchUrl")),
            search_link=_str(d.get("searchLink")),
            thumbnail_url=_str(thumb.get("url")) or _str(thumb.get("thumbnailUrl")),
        )


def _queries(value: object) -> tuple[Query, ...]:
    return tuple(Query.from_json(item) for item in _dicts(value))


@dataclass(frozen=True, slots=True)
class Pivot:
    """A segment of the original query and the suggested replacements for it."""

    pivot: str | None
    suggestions: tuple[Query, ...]

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from a ``Pivot`` object."""
        d = _dict(obj)
        return cls(pivot=_str(d.get("pivot")), suggestions=_queries(d.get("suggestions")))


@dataclass(frozen=True, slots=True)
class Images:
    """The answer of ``/images/search``: one page of images plus query suggestions.

    Page with :attr:`next_offset` (not ``offset + count``: pages overlap).
    """

    value: tuple[Image, ...]
    next_offset: int | None = None
    total_estimated_matches: int | None = None
    current_offset: int | None = None
    next_offset_add_count: int | None = None
    query_expansions: tuple[Query, ...] = ()
    pivot_suggestions: tuple[Pivot, ...] = ()
    similar_terms: tuple[Query, ...] = ()
    read_link: str | None = None
    web_search_url: str | None = None

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from an ``Images`` response; raises :class:`ResponseFormatError` otherwise."""
        d = _check_type(obj, ("Images",))
        return cls(
            value=_images(d.get("value")),
            next_offset=_int(d.get("nextOffset")),
            total_estimated_matches=_int(d.get("totalEstimatedMatches")),
            current_offset=_int(d.get("currentOffset")),
            next_offset_add_count=_int(d.get("nextOffsetAddCount")),
            query_expansions=_queries(d.get("queryExpansions")),
            pivot_suggestions=tuple(Pivot.from_json(p) for p in _dicts(d.get("pivotSuggestions"))),
            similar_terms=_queries(d.get("similarTerms")),
            read_link=_str(d.get("readLink")),
            web_search_url=_str(d.get("webSearchUrl")),
        )


@dataclass(frozen=True, slots=True)
class ImageCaption:
    """A caption of an image and the site it came from."""

    caption: str | None
    data_source_url: str | None
    related_searches: tuple[Query, ...]

    @classmethod
    def from_json(cls, obj: object) -> Self | None:
        """Build from an ``ImageCaption``; ``None`` when absent."""
        if not isinstance(obj, Mapping):
            return None
        related = obj.get("relatedSearches")
        return cls(
            caption=_str(obj.get("caption")),
            data_source_url=_str(obj.get("dataSourceUrl")),
            related_searches=(Query.from_json(related),)
            if isinstance(related, Mapping)
            else _queries(related),
        )


def _module(value: object) -> object:
    """The ``value`` list of an ImagesModule / RelatedSearchesModule (or the bare list)."""
    return value.get("value") if isinstance(value, Mapping) else value


@dataclass(frozen=True, slots=True)
class ImageInsights:
    """The answer of ``/images/details``; fields are empty for modules not requested."""

    image_insights_token: str | None = None
    best_representative_query: Query | None = None
    image_caption: ImageCaption | None = None
    visually_similar_images: tuple[Image, ...] = ()
    visually_similar_products: tuple[Image, ...] = ()
    pages_including: tuple[Image, ...] = ()
    related_searches: tuple[Query, ...] = ()
    image_tags: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from an ``ImageInsights`` response; raises :class:`ResponseFormatError`."""
        d = _check_type(obj, ("ImageInsights", "ImageInsightsResponse"))
        brq = d.get("bestRepresentativeQuery")
        tags = (_str(t.get("name")) for t in _dicts(_module(d.get("imageTags"))))
        return cls(
            image_insights_token=_str(d.get("imageInsightsToken")),
            best_representative_query=Query.from_json(brq) if isinstance(brq, Mapping) else None,
            image_caption=ImageCaption.from_json(d.get("imageCaption")),
            visually_similar_images=_images(_module(d.get("visuallySimilarImages"))),
            visually_similar_products=_images(_module(d.get("visuallySimilarProducts"))),
            pages_including=_images(_module(d.get("pagesIncluding"))),
            related_searches=_queries(_module(d.get("relatedSearches"))),
            image_tags=tuple(t for t in tags if t is not None),
        )


@dataclass(frozen=True, slots=True)
class TrendingTile:
    """One trending image and the query that finds more like it."""

    query: Query
    image: Image

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from a ``Tile`` object."""
        d = _dict(obj)
        return cls(query=Query.from_json(d.get("query")), image=Image.from_json(d.get("image")))


@dataclass(frozen=True, slots=True)
class TrendingCategory:
    """A category of trending images, e.g. "Popular people searches"."""

    title: str | None
    tiles: tuple[TrendingTile, ...]

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from a ``Category`` object."""
        d = _dict(obj)
        tiles = tuple(TrendingTile.from_json(t) for t in _dicts(d.get("tiles")))
        return cls(title=_str(d.get("title")), tiles=tiles)


@dataclass(frozen=True, slots=True)
class TrendingImages:
    """The answer of ``/images/trending``."""

    categories: tuple[TrendingCategory, ...]

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from a ``TrendingImages`` response; raises :class:`ResponseFormatError`."""
        d = _check_type(obj, ("TrendingImages",))
        return cls(tuple(TrendingCategory.from_json(c) for c in _dicts(d.get("categories"))))


# Action types whose data.value lists images rather than queries (when _type is missing).
_IMAGE_ACTIONS = frozenset({"PagesIncluding", "VisualSearch", "ProductVisualSearch"})
_QUERY_ACTIONS = frozenset({"RelatedSearches", "DocumentLevelSuggestions"})


@dataclass(frozen=True, slots=True)
class ImageAction:
    """One insight of a visual-search tag, keyed by ``action_type``.

    ``images`` holds ``data.value`` of image actions (VisualSearch, PagesIncluding,
    ProductVisualSearch), ``queries`` that of query actions (RelatedSearches,
    DocumentLevelSuggestions); ``image`` is the ImageById image. ``next_offset`` and
    ``total_estimated_matches`` page the similar images.
    """

    action_type: str | None
    type_hint: str | None = None
    display_name: str | None = None
    web_search_url: str | None = None
    service_url: str | None = None
    url: str | None = None
    images: tuple[Image, ...] = ()
    queries: tuple[Query, ...] = ()
    image: Image | None = None
    current_offset: int | None = None
    next_offset: int | None = None
    total_estimated_matches: int | None = None

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from one element of a tag's ``actions``."""
        d = _dict(obj)
        action_type, type_hint = _str(d.get("actionType")), _str(d.get("_type"))
        data = _dict(d.get("data"))
        is_images = type_hint == "ImageModuleAction" or action_type in _IMAGE_ACTIONS
        is_queries = type_hint == "ImageRelatedSearchesAction" or action_type in _QUERY_ACTIONS
        image = d.get("image")
        return cls(
            action_type=action_type,
            type_hint=type_hint,
            display_name=_str(d.get("displayName")),
            web_search_url=_str(d.get("webSearchUrl")),
            service_url=_str(d.get("serviceUrl")),
            url=_str(d.get("url")),
            images=_images(data.get("value")) if is_images else (),
            queries=_queries(data.get("value")) if is_queries and not is_images else (),
            image=Image.from_json(image) if isinstance(image, Mapping) else None,
            current_offset=_int(data.get("currentOffset")),
            next_offset=_int(data.get("nextOffset")),
            total_estimated_matches=_int(data.get("totalEstimatedMatches")),
        )


@dataclass(frozen=True, slots=True)
class ImageTag:
    """A visual-search tag: a display name and its actions (``""`` names the default tag)."""

    display_name: str | None
    actions: tuple[ImageAction, ...]
    thumbnail_url: str | None = None
    sources: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from an ``ImageTag`` object."""
        d = _dict(obj)
        sources = d.get("sources")
        return cls(
            display_name=_str(d.get("displayName")),
            actions=tuple(ImageAction.from_json(a) for a in _dicts(d.get("actions"))),
            thumbnail_url=_str(_dict(d.get("image")).get("thumbnailUrl")),
            sources=tuple(s for s in sources if isinstance(s, str))
            if isinstance(sources, list)
            else (),
        )


@dataclass(frozen=True, slots=True)
class ImageKnowledge:
    """The answer of ``/images/visualsearch``."""

    image_insights_token: str | None
    tags: tuple[ImageTag, ...]

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from an ``ImageKnowledge`` response; raises :class:`ResponseFormatError`."""
        d = _check_type(obj, ("ImageKnowledge",))
        return cls(
            image_insights_token=_str(_dict(d.get("image")).get("imageInsightsToken")),
            tags=tuple(ImageTag.from_json(t) for t in _dicts(d.get("tags"))),
        )

    @property
    def default_tag(self) -> ImageTag | None:
        """The tag whose display name is empty: insights about the whole image."""
        return next((t for t in self.tags if not t.display_name), None)

    def actions(self, action_type: str) -> Iterator[ImageAction]:
        """Every action of ``action_type`` in every tag, default tag first."""
        default = self.default_tag
        ordered = ([default] if default else []) + [t for t in self.tags if t is not default]
        for tag in ordered:
            yield from (a for a in tag.actions if a.action_type == action_type)

    def visually_similar(self) -> tuple[Image, ...]:
        """The images of every ``VisualSearch`` action, in order."""
        return tuple(img for action in self.actions("VisualSearch") for img in action.images)
