"""Server-side validation of Bing v7 query parameters, and the search filters the corpus honours.

Every refusal is a 400 ``ApiFailure`` naming the parameter (and the value, for an invalid
one), as the reference's ErrorResponse does. Enumerated values are matched
case-insensitively (the reference's own blog example sends ``license=public``).

What the emulator can honour, and how (the corpus is synthetic, so some filters are
approximations, and a few cannot be honoured at all):

* ``license``: the reference's hierarchy. Each image carries its most specific license;
  ``Public`` satisfies every filter, ``ModifyCommercially`` satisfies ``Modify`` and
  ``ShareCommercially``, and everything satisfies ``Share``, ``Any`` and ``All``.
* ``imageType``: exact, ``AnimatedGifHttps`` as ``AnimatedGif``; ``Shopping`` matches nothing
  (the corpus has no merchants).
* ``size``: Small = long side < 200 px, Large = short side >= 500 px, Medium = the rest,
  Wallpaper = at least 1024 x 768 (either orientation).
* ``aspect``: Tall = width/height < 0.9, Square = 0.9 .. 1.1, Wide = > 1.1.
* ``color``: from the accent colour (hue buckets; Monochrome = low saturation or very dark).
* ``width``, ``height``, ``min/max Width/Height``: exact; ``min/maxFileSize`` on the
  ``contentSize`` estimate (``Corpus.approx_size``); values above 520,192 are capped, as
  the reference says.
* ``freshness``: on ``datePublished``, a date range exactly, Day/Week/Month/Year relative to
  the server's clock.
* ``safeSearch`` and ``imageContent``: validated, not applied (nothing in the corpus is adult
  content or a face).
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from bingcrawl.emulator.config import MAX_COUNT
from bingcrawl.emulator.shapes import ApiFailure

if TYPE_CHECKING:
    from bingcrawl.emulator.corpus import ImageSpec

__all__ = [
    "ASPECTS",
    "COLORS",
    "COUNTRY_CODES",
    "FRESHNESS",
    "IMAGE_CONTENT",
    "IMAGE_TYPES",
    "LICENSES",
    "MARKETS",
    "MODULES",
    "SAFE_SEARCH",
    "SIZES",
    "SearchRequest",
    "color_name",
    "parse_locale",
    "parse_search",
]

ASPECTS = ("Square", "Wide", "Tall", "All")
COLORS = (
    "ColorOnly", "Monochrome", "Black", "Blue", "Brown", "Gray", "Green", "Orange", "Pink",
    "Purple", "Red", "Teal", "White", "Yellow",
)  # fmt: skip
FRESHNESS = ("Day", "Week", "Month", "Year")
IMAGE_CONTENT = ("Face", "Portrait")
IMAGE_TYPES = (
    "AnimatedGif", "AnimatedGifHttps", "Clipart", "Line", "Photo", "Shopping", "Transparent",
)  # fmt: skip
LICENSES = ("Any", "Public", "Share", "ShareCommercially", "Modify", "ModifyCommercially", "All")
SIZES = ("Small", "Medium", "Large", "Wallpaper", "All")
SAFE_SEARCH = ("Off", "Moderate", "Strict")
MODULES = (
    "All", "BRQ", "Caption", "Collections", "Recipes", "PagesIncluding", "RecognizedEntities",
    "RelatedSearches", "ShoppingSources", "SimilarImages", "SimilarProducts", "Tags",
)  # fmt: skip
MARKETS = (
    "es-AR", "en-AU", "de-AT", "nl-BE", "fr-BE", "pt-BR", "en-CA", "fr-CA", "es-CL", "da-DK",
    "fi-FI", "fr-FR", "de-DE", "zh-HK", "en-IN", "en-ID", "it-IT", "ja-JP", "ko-KR", "en-MY",
    "es-MX", "nl-NL", "en-NZ", "zh-CN", "pl-PL", "pt-PT", "en-PH", "ru-RU", "ar-SA", "en-ZA",
    "es-ES", "sv-SE", "fr-CH", "de-CH", "zh-TW", "tr-TR", "en-GB", "en-US", "es-US",
)  # fmt: skip
COUNTRY_CODES = (
    "AR", "AU", "AT", "BE", "BR", "CA", "CL", "DK", "FI", "FR", "DE", "HK", "IN", "ID", "IT",
    "JP", "KR", "MY", "MX", "NL", "NZ", "NO", "CN", "PL", "PT", "PH", "RU", "SA", "ZA", "ES",
    "SE", "CH", "TW", "TR", "GB", "US",
)  # fmt: skip

DEFAULT_MARKET = "en-US"
DEFAULT_COUNT = 35
#: The reference caps min/maxFileSize at this many bytes.
MAX_FILE_SIZE = 520_192
_UNSIGNED_SHORT = 65_535
_MARKET_BY_LOWER = {m.lower(): m for m in MARKETS}
_DATE_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_LICENSE_SATISFIES = {
    "Public": {"Public"},
    "ModifyCommercially": {"Public", "ModifyCommercially"},
    "Modify": {"Public", "ModifyCommercially", "Modify"},
    "ShareCommercially": {"Public", "ModifyCommercially", "ShareCommercially"},
    "Share": {"Public", "ModifyCommercially", "Modify", "ShareCommercially", "Share"},
}

Query = Mapping[str, str]
Predicate = Callable[["ImageSpec"], bool]


def enum_value(query: Query, name: str, allowed: Sequence[str]) -> str | None:
    """The canonical spelling of an enumerated parameter, or a 400 naming it."""
    raw = query.get(name)
    if raw is None:
        return None
    for value in allowed:
        if value.lower() == raw.strip().lower():
            return value
    raise ApiFailure.invalid(name, raw, "accepted: " + ", ".join(allowed))


def unsigned(query: Query, name: str, *, maximum: int = _UNSIGNED_SHORT) -> int | None:
    """An unsigned integer parameter in [0, maximum], or a 400 naming it."""
    raw = query.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or int(text) > maximum:
        raise ApiFailure.invalid(name, raw, f"an integer from 0 to {maximum}")
    return int(text)


def parse_locale(query: Query, headers: Mapping[str, str]) -> str:
    """Validate mkt / cc / setLang / Accept-Language / safeSearch; return the market used.

    An unlisted but well-formed ``mkt`` is not an error: Bing falls back to a best-fit market
    (here en-US, or the listed market of the same language), reported in BingAPIs-Market.
    """
    mkt, cc, set_lang = query.get("mkt"), query.get("cc"), query.get("setLang")
    accept_language = headers.get("Accept-Language")
    if mkt is not None and cc is not None:
        raise ApiFailure.invalid("cc", cc, "mkt and cc are mutually exclusive")
    if set_lang is not None and accept_language is not None:
        raise ApiFailure.invalid(
            "setLang", set_lang, "setLang and the Accept-Language header are mutually exclusive"
        )
    if set_lang is not None and not _LANG.match(set_lang):
        raise ApiFailure.invalid("setLang", set_lang, "an ISO 639-1 language code")
    enum_value(query, "safeSearch", SAFE_SEARCH)
    if mkt is not None:
        if not _LANG.match(mkt):
            raise ApiFailure.invalid("mkt", mkt, "<language>-<country>, e.g. en-US")
        market = _MARKET_BY_LOWER.get(mkt.lower())
        return market or _best_fit(mkt.split("-")[0].lower())
    if cc is not None:
        if len(cc) != 2 or not cc.isalpha():
            raise ApiFailure.invalid("cc", cc, "a 2-letter country code")
        country = cc.upper()
        langs = [
            p.split(";")[0].strip().split("-")[0].lower()
            for p in (accept_language or "").split(",")
        ]
        for lang in langs:
            candidate = _MARKET_BY_LOWER.get(f"{lang}-{country.lower()}")
            if candidate:
                return candidate
        return next((m for m in MARKETS if m.endswith("-" + country)), DEFAULT_MARKET)
    return DEFAULT_MARKET


def _best_fit(lang: str) -> str:
    """The listed market of a language: its home country first (fr -> fr-FR), else any."""
    same = [m for m in MARKETS if m.lower().startswith(lang + "-")]
    home = [m for m in same if m.lower() == f"{lang}-{lang}"]
    if lang == "en" or not same:
        return DEFAULT_MARKET
    return (home or same)[0]


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A validated /images/search request."""

    q: str
    count: int
    offset: int
    market: str
    image_id: str | None
    predicates: tuple[Predicate, ...]


def parse_search(
    query: Query, headers: Mapping[str, str], *, size_of: Callable[[ImageSpec], int], today: date
) -> SearchRequest:
    """Validate every /images/search parameter; 400 on the first bad one."""
    q = query.get("q")
    if q is None or not q.strip():
        raise ApiFailure.missing("q")
    count = unsigned(query, "count")
    if count is not None and not 1 <= count <= MAX_COUNT:
        raise ApiFailure.invalid("count", query["count"], f"an integer from 1 to {MAX_COUNT}")
    offset = unsigned(query, "offset") or 0
    market = parse_locale(query, headers)
    predicates = _filters(query, size_of=size_of, today=today)
    return SearchRequest(
        q=q.strip(),
        count=count or DEFAULT_COUNT,
        offset=offset,
        market=market,
        image_id=query.get("id"),
        predicates=predicates,
    )


def _filters(
    query: Query, *, size_of: Callable[[ImageSpec], int], today: date
) -> tuple[Predicate, ...]:
    preds: list[Predicate] = []
    license_ = enum_value(query, "license", LICENSES)
    if license_ not in (None, "Any", "All"):
        allowed = _LICENSE_SATISFIES[license_]
        preds.append(lambda s: s.license in allowed)
    image_type = enum_value(query, "imageType", IMAGE_TYPES)
    if image_type is not None:
        wanted = "AnimatedGif" if image_type == "AnimatedGifHttps" else image_type
        preds.append(lambda s: s.image_type == wanted)
    enum_value(query, "imageContent", IMAGE_CONTENT)
    size = enum_value(query, "size", SIZES)
    if size not in (None, "All"):
        preds.append(lambda s: _size_class(s.width, s.height, size))
    aspect = enum_value(query, "aspect", ASPECTS)
    if aspect not in (None, "All"):
        preds.append(lambda s: _aspect(s.width, s.height) == aspect)
    color = enum_value(query, "color", COLORS)
    if color is not None:
        preds.append(lambda s: _color_matches(s.color, color))
    freshness = query.get("freshness")
    if freshness is not None:
        lo, hi = _freshness_range(freshness, today)
        preds.append(lambda s: lo <= s.date_published[:10] <= hi)
    preds.extend(_dimension_filters(query))
    lo_size = unsigned(query, "minFileSize", maximum=2**31)
    hi_size = unsigned(query, "maxFileSize", maximum=2**31)
    if lo_size is not None:
        lo_bytes = min(lo_size, MAX_FILE_SIZE)
        preds.append(lambda s: size_of(s) >= lo_bytes)
    if hi_size is not None:
        hi_bytes = min(hi_size, MAX_FILE_SIZE)
        preds.append(lambda s: size_of(s) <= hi_bytes)
    return tuple(preds)


def _dimension_filters(query: Query) -> list[Predicate]:
    preds: list[Predicate] = []
    for dim, lo_name, hi_name in (
        ("width", "minWidth", "maxWidth"),
        ("height", "minHeight", "maxHeight"),
    ):
        exact = unsigned(query, dim)
        lo = unsigned(query, lo_name, maximum=2**31)
        hi = unsigned(query, hi_name, maximum=2**31)
        if exact is not None and (lo is not None or hi is not None):
            name = lo_name if lo is not None else hi_name
            raise ApiFailure.invalid(name, query[name], f"{dim} and {name} are mutually exclusive")
        if exact is not None:
            lo = hi = exact
        if lo is not None or hi is not None:
            preds.append(_within(dim, lo, hi))
    return preds


def _within(dim: str, lo: int | None, hi: int | None) -> Predicate:
    def check(spec: ImageSpec) -> bool:
        value = spec.width if dim == "width" else spec.height
        return (lo is None or value >= lo) and (hi is None or value <= hi)

    return check


def _freshness_range(raw: str, today: date) -> tuple[str, str]:
    days = {"day": 1, "week": 7, "month": 30, "year": 365}.get(raw.strip().lower())
    if days is not None:
        return (today - timedelta(days=days)).isoformat(), today.isoformat()
    match = _DATE_RANGE.match(raw.strip())
    accepted = "Day, Week, Month, Year or YYYY-MM-DD..YYYY-MM-DD"
    if match is None:
        raise ApiFailure.invalid("freshness", raw, accepted)
    try:
        lo, hi = (date.fromisoformat(g) for g in match.groups())
    except ValueError:
        raise ApiFailure.invalid("freshness", raw, accepted) from None
    if lo > hi:
        raise ApiFailure.invalid("freshness", raw, "the range must not end before it starts")
    return lo.isoformat(), hi.isoformat()


def today_utc(wall_time: float) -> date:
    """The UTC date at a Unix timestamp (freshness is relative to the server's clock)."""
    return datetime.fromtimestamp(wall_time, UTC).date()


def _size_class(width: int, height: int, size: str) -> bool:
    long_side, short_side = max(width, height), min(width, height)
    if size == "Small":
        return long_side < 200
    if size == "Large":
        return short_side >= 500
    if size == "Medium":
        return long_side >= 200 and short_side < 500
    return long_side >= 1024 and short_side >= 768  # Wallpaper


def _aspect(width: int, height: int) -> str:
    ratio = width / max(height, 1)
    if ratio < 0.9:
        return "Tall"
    return "Square" if ratio <= 1.1 else "Wide"


def color_name(hex_color: str) -> str:
    """A rough dominant-colour name of an accent colour (one of the reference's colours)."""
    try:
        r, g, b = (int(hex_color[i : i + 2], 16) / 255 for i in (0, 2, 4))
    except ValueError:
        return "Gray"
    hue, sat, val = colorsys.rgb_to_hsv(r, g, b)
    if val < 0.2:
        return "Black"
    if sat < 0.15:
        return "White" if val > 0.85 else "Gray"
    deg = hue * 360
    if 15 <= deg < 45 and val < 0.6:
        return "Brown"
    for limit, name in (
        (15, "Red"), (45, "Orange"), (70, "Yellow"), (165, "Green"), (195, "Teal"),
        (255, "Blue"), (290, "Purple"), (345, "Pink"),
    ):  # fmt: skip
        if deg < limit:
            return name
    return "Red"


def _color_matches(hex_color: str, wanted: str) -> bool:
    name = color_name(hex_color)
    monochrome = name in ("Black", "White", "Gray")
    if wanted == "Monochrome":
        return monochrome
    if wanted == "ColorOnly":
        return not monochrome
    return name == wanted
