"""Validated request parameters for the Bing Image Search API v7.

Every query, filter and header parameter of ``/images/search``, ``/images/details``,
``/images/trending`` and ``/images/visualsearch`` is a field of a frozen, slotted dataclass,
checked in ``__post_init__`` before any request is made. A bad value raises
:class:`~bingcrawl.errors.InvalidParameterError` naming the parameter as the reference spells
it (``imageType``, ``cc``, ``Accept-Language``, ...) and listing what is accepted.

Enumerated values are accepted in any case and normalised to the reference's spelling, so
``SearchParams("cats", license="public").license == "Public"``. The enumerations are module
constants (``LICENSES``, ``IMAGE_TYPES``, ...) for building command-line choices.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode, urlsplit

from bingcrawl.errors import InvalidParameterError

__all__ = [
    "ASPECTS",
    "COLORS",
    "COUNTRY_CODES",
    "FRESHNESS",
    "IMAGE_CONTENTS",
    "IMAGE_TYPES",
    "LANGUAGES",
    "LICENSES",
    "MARKETS",
    "MAX_COUNT",
    "MAX_FILE_SIZE",
    "MAX_QUERY_LENGTH",
    "MODULES",
    "SAFE_SEARCH",
    "SIZES",
    "TRENDING_MARKETS",
    "CropArea",
    "DetailsParams",
    "SearchParams",
    "TrendingParams",
    "VisualSearchParams",
]

#: The ``mkt`` values of the reference's Market Codes table.
MARKETS: tuple[str, ...] = (
    "es-AR", "en-AU", "de-AT", "nl-BE", "fr-BE", "pt-BR", "en-CA", "fr-CA", "es-CL", "da-DK",
    "fi-FI", "fr-FR", "de-DE", "zh-HK", "en-IN", "en-ID", "it-IT", "ja-JP", "ko-KR", "en-MY",
    "es-MX", "nl-NL", "en-NZ", "zh-CN", "pl-PL", "pt-PT", "en-PH", "ru-RU", "ar-SA", "en-ZA",
    "es-ES", "sv-SE", "fr-CH", "de-CH", "zh-TW", "tr-TR", "en-GB", "en-US", "es-US",
)  # fmt: skip
#: The ``cc`` values of the reference's Country Codes table.
COUNTRY_CODES: tuple[str, ...] = (
    "AR", "AU", "AT", "BE", "BR", "CA", "CL", "DK", "FI", "FR", "DE", "HK", "IN", "ID", "IT",
    "JP", "KR", "MY", "MX", "NL", "NZ", "NO", "CN", "PL", "PT", "PH", "RU", "SA", "ZA", "ES",
    "SE", "CH", "TW", "TR", "GB", "US",
)  # fmt: skip
#: ``setLang`` values: the ISO 639-1 languages of the reference's market table.
LANGUAGES: tuple[str, ...] = tuple(sorted({m.split("-")[0] for m in MARKETS}))
#: The only markets the Trending Images API supports (reference: "Trending Images").
TRENDING_MARKETS: tuple[str, ...] = ("en-US", "en-CA", "en-AU", "zh-CN")

SAFE_SEARCH: tuple[str, ...] = ("Off", "Moderate", "Strict")
LICENSES: tuple[str, ...] = (
    "Any", "Public", "Share", "ShareCommercially", "Modify", "ModifyCommercially", "All",
)  # fmt: skip
IMAGE_TYPES: tuple[str, ...] = (
    "AnimatedGif", "AnimatedGifHttps", "Clipart", "Line", "Photo", "Shopping", "Transparent",
)  # fmt: skip
IMAGE_CONTENTS: tuple[str, ...] = ("Face", "Portrait")
SIZES: tuple[str, ...] = ("Small", "Medium", "Large", "Wallpaper", "All")
ASPECTS: tuple[str, ...] = ("Square", "Wide", "Tall", "All")
COLORS: tuple[str, ...] = (
    "ColorOnly", "Monochrome", "Black", "Blue", "Brown", "Gray", "Green", "Orange", "Pink",
    "Purple", "Red", "Teal", "White", "Yellow",
)  # fmt: skip
#: Relative ``freshness`` values; a ``YYYY-MM-DD..YYYY-MM-DD`` date range is also accepted.
FRESHNESS: tuple[str, ...] = ("Day", "Week", "Month", "Year")
#: ``modules`` values of ``/images/details``.
MODULES: tuple[str, ...] = (
    "All", "BRQ", "Caption", "Collections", "Recipes", "PagesIncluding", "RecognizedEntities",
    "RelatedSearches", "ShoppingSources", "SimilarImages", "SimilarProducts", "Tags",
)  # fmt: skip

MAX_COUNT = 150
MAX_UNSIGNED_SHORT = 65535
#: minFileSize / maxFileSize ceiling: the API silently clamps larger values, so refuse them.
MAX_FILE_SIZE = 520_192
#: The reference keeps query strings under 1,500 characters so URLs stay under 2,048.
MAX_QUERY_LENGTH = 1500
#: The Bing Search API's base URL (retired by Microsoft on 11 Aug 2025; see --endpoint).
DEFAULT_ENDPOINT = "https://api.bing.microsoft.com/"
MAX_URL_LENGTH = 2048

_DATE_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")
_LANGUAGE_RANGE = re.compile(
    r"^(\*|[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*)(;\s*q=(0(\.\d{0,3})?|1(\.0{0,3})?))?$"
)
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}$")
_LOCATION_KEYS = ("lat", "long", "re", "ts", "head", "sp", "alt", "are")


def _lookup(values: tuple[str, ...]) -> Mapping[str, str]:
    return MappingProxyType({v.lower(): v for v in values})


_CANON: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "mkt": _lookup(MARKETS), "cc": _lookup(COUNTRY_CODES), "setLang": _lookup(LANGUAGES),
    "safeSearch": _lookup(SAFE_SEARCH), "license": _lookup(LICENSES),
    "imageType": _lookup(IMAGE_TYPES), "imageContent": _lookup(IMAGE_CONTENTS),
    "size": _lookup(SIZES), "aspect": _lookup(ASPECTS), "color": _lookup(COLORS),
    "freshness": _lookup(FRESHNESS), "modules": _lookup(MODULES),
})  # fmt: skip


def _enum(parameter: str, value: object, allowed: tuple[str, ...] | None = None) -> str | None:
    """Return the canonical spelling of an enumerated value (case-insensitive input)."""
    if value is None:
        return None
    table = _CANON[parameter]
    canonical = table.get(value.strip().lower()) if isinstance(value, str) else None
    if canonical is None or (allowed is not None and canonical not in allowed):
        raise InvalidParameterError(parameter, value, ", ".join(allowed or table.values()))
    return canonical


def _int(parameter: str, value: object, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterError(parameter, value, f"an integer from {low} to {high}")
    return value


def _text(parameter: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameterError(parameter, value, "a non-empty string")
    return value.strip()


def _url(parameter: str, value: object) -> str | None:
    text = _text(parameter, value)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(text) > MAX_URL_LENGTH:
        raise InvalidParameterError(
            parameter, value, f"an absolute http(s) URL of at most {MAX_URL_LENGTH} characters"
        )
    return text


def _freshness(value: object) -> str | None:
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else ""
    relative = _CANON["freshness"].get(text.lower())
    if relative is not None:
        return relative
    match = _DATE_RANGE.match(text)
    try:
        start = date.fromisoformat(match[1]) if match else None
        end = date.fromisoformat(match[2]) if match else None
    except ValueError:
        start = end = None
    if start is None or end is None or start > end:
        raise InvalidParameterError(
            "freshness", value, ", ".join(FRESHNESS) + " or a date range YYYY-MM-DD..YYYY-MM-DD"
        )
    return f"{start.isoformat()}..{end.isoformat()}"


def _accept_language(value: object) -> str | None:
    text = _text("Accept-Language", value)
    if text is None:
        return None
    ranges = [part.strip() for part in text.split(",")]
    if not all(_LANGUAGE_RANGE.match(r) for r in ranges):
        raise InvalidParameterError(
            "Accept-Language", value, "comma-delimited language tags, e.g. 'en-US,fr;q=0.5'"
        )
    return ",".join(ranges)


def _client_ip(value: object) -> str | None:
    text = _text("X-MSEdge-ClientIP", value)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidParameterError("X-MSEdge-ClientIP", value, "an IPv4 or IPv6 address") from None


def _location(value: object) -> str | None:
    """Validate an ``X-Search-Location`` header: ``lat:..;long:..;re:..`` plus optional keys."""
    text = _text("X-Search-Location", value)
    if text is None:
        return None
    accepted = (
        "'lat:<-90..90>;long:<-180..180>;re:<metres>' with optional ts, head (0..360, needs a "
        "nonzero sp), sp, alt, are (needs alt)"
    )
    pairs: dict[str, float] = {}
    out: list[str] = []
    for item in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, raw = item.partition(":")
        key, raw = key.strip().lower(), raw.strip()
        try:
            number = float(raw.removesuffix("m") if key in ("re", "are") else raw)
        except ValueError:
            number = math.nan
        if not sep or key not in _LOCATION_KEYS or key in pairs or not math.isfinite(number):
            raise InvalidParameterError("X-Search-Location", value, accepted)
        pairs[key] = number
        out.append(f"{key}:{raw}")
    ok = (
        {"lat", "long", "re"} <= pairs.keys()
        and -90 <= pairs["lat"] <= 90
        and -180 <= pairs["long"] <= 180
        and pairs["re"] >= 0
        and ("head" not in pairs or (0 <= pairs["head"] <= 360 and pairs.get("sp", 0) != 0))
        and ("are" not in pairs or "alt" in pairs)
        and pairs.get("ts", 0) >= 0
    )
    if not ok:
        raise InvalidParameterError("X-Search-Location", value, accepted)
    return ";".join(out)


def _locale(obj: Any, *, markets: tuple[str, ...] = MARKETS) -> None:
    """Normalise and cross-check mkt / cc / setLang / Accept-Language and the location headers."""
    countries = tuple(m.split("-")[1] for m in markets) if markets is not MARKETS else None
    set_ = object.__setattr__
    set_(obj, "mkt", _enum("mkt", obj.mkt, None if markets is MARKETS else markets))
    set_(obj, "cc", _enum("cc", obj.cc, countries))
    set_(obj, "set_lang", _enum("setLang", obj.set_lang))
    set_(obj, "safe_search", _enum("safeSearch", obj.safe_search))
    set_(obj, "accept_language", _accept_language(obj.accept_language))
    set_(obj, "client_ip", _client_ip(obj.client_ip))
    set_(obj, "location", _location(obj.location))
    if obj.mkt is not None and obj.cc is not None:
        raise InvalidParameterError("cc", obj.cc, "not together with mkt (mutually exclusive)")
    if obj.set_lang is not None and obj.accept_language is not None:
        raise InvalidParameterError(
            "setLang", obj.set_lang, "not together with Accept-Language (mutually exclusive)"
        )
    if obj.cc is not None and obj.accept_language is None:
        raise InvalidParameterError("cc", obj.cc, "only together with the Accept-Language header")
    if obj.accept_language is not None and obj.cc is None:
        raise InvalidParameterError(
            "Accept-Language", obj.accept_language, "only together with the cc query parameter"
        )


def _locale_query(obj: Any) -> dict[str, str]:
    pairs = (
        ("mkt", obj.mkt), ("cc", obj.cc), ("setLang", obj.set_lang), ("safeSearch", obj.safe_search)
    )  # fmt: skip
    return {k: v for k, v in pairs if v is not None}


def _headers(obj: Any) -> dict[str, str]:
    pairs = (
        ("Accept-Language", obj.accept_language),
        ("X-MSEdge-ClientIP", obj.client_ip),
        ("X-Search-Location", obj.location),
    )
    return {k: v for k, v in pairs if v is not None}


def _check_query_length(query: Mapping[str, str]) -> None:
    length = len(urlencode(query))
    if length >= MAX_QUERY_LENGTH:
        raise InvalidParameterError(
            "q", f"<{length} URL-encoded characters of parameters>",
            f"query parameters shorter than {MAX_QUERY_LENGTH} URL-encoded characters",
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CropArea:
    """A region of interest as fractions (0.0-1.0) of the image's height and width."""

    top: float
    left: float
    bottom: float
    right: float

    def __post_init__(self) -> None:
        for name in ("top", "left", "bottom", "right"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise InvalidParameterError(f"cropArea.{name}", value, "a number from 0.0 to 1.0")
            object.__setattr__(self, name, float(value))
        if self.top >= self.bottom:
            raise InvalidParameterError("cropArea.top", self.top, f"< bottom ({self.bottom})")
        if self.left >= self.right:
            raise InvalidParameterError("cropArea.left", self.left, f"< right ({self.right})")

    def to_json(self) -> dict[str, float]:
        """The ``cropArea`` object of a visual-search ``imageInfo``."""
        return {"top": self.top, "left": self.left, "bottom": self.bottom, "right": self.right}


# Attribute name -> the reference's query parameter name, in the order to_query emits them.
_SEARCH_QUERY: tuple[tuple[str, str], ...] = (
    ("q", "q"), ("count", "count"), ("offset", "offset"), ("mkt", "mkt"), ("cc", "cc"),
    ("set_lang", "setLang"), ("safe_search", "safeSearch"), ("license", "license"),
    ("image_type", "imageType"), ("image_content", "imageContent"), ("size", "size"),
    ("aspect", "aspect"), ("color", "color"), ("freshness", "freshness"), ("height", "height"),
    ("width", "width"), ("min_width", "minWidth"), ("max_width", "maxWidth"),
    ("min_height", "minHeight"), ("max_height", "maxHeight"), ("min_file_size", "minFileSize"),
    ("max_file_size", "maxFileSize"), ("id", "id"),
)  # fmt: skip
_SEARCH_ATTRS: Mapping[str, str] = MappingProxyType({
    **{name: attr for attr, name in _SEARCH_QUERY}, "Accept-Language": "accept_language",
    "X-MSEdge-ClientIP": "client_ip", "X-Search-Location": "location",
})  # fmt: skip
_SEARCH_FIELDS = frozenset(_SEARCH_ATTRS.values())
_INT_FIELDS = frozenset({
    "count", "offset", "height", "width", "min_width", "max_width", "min_height", "max_height",
    "min_file_size", "max_file_size",
})  # fmt: skip
_DECIMAL = re.compile(r"^\s*[+-]?\d{1,12}\s*$")
# Values that mean the same as leaving the parameter out (reference: "same as not specifying").
_NEUTRAL: Mapping[str, str] = MappingProxyType(
    {"license": "All", "size": "All", "aspect": "All", "safeSearch": "Moderate"}
)
# Parameters that do not change which images come back (paging, UI language).
_NOT_IN_FINGERPRINT = frozenset({"count", "offset", "setLang"})


@dataclass(frozen=True, slots=True)
class SearchParams:
    """Query, filter and header parameters of one ``GET /images/search`` request.

    Attributes use Python names; :meth:`to_query` emits the reference's spelling
    (``image_type`` -> ``imageType``). ``accept_language``, ``client_ip`` and ``location`` are
    request headers (``Accept-Language``, ``X-MSEdge-ClientIP``, ``X-Search-Location``).
    """

    q: str
    count: int = MAX_COUNT
    offset: int = 0
    mkt: str | None = None
    cc: str | None = None
    set_lang: str | None = None
    safe_search: str | None = None
    license: str | None = None
    image_type: str | None = None
    image_content: str | None = None
    size: str | None = None
    aspect: str | None = None
    color: str | None = None
    freshness: str | None = None
    height: int | None = None
    width: int | None = None
    min_width: int | None = None
    max_width: int | None = None
    min_height: int | None = None
    max_height: int | None = None
    min_file_size: int | None = None
    max_file_size: int | None = None
    id: str | None = None
    accept_language: str | None = None
    client_ip: str | None = None
    location: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if _text("q", self.q) is None:
            raise InvalidParameterError("q", None, "a non-empty string")
        set_(self, "q", _text("q", self.q))
        set_(self, "id", _text("id", self.id))
        if _int("count", self.count, 1, MAX_COUNT) is None:
            raise InvalidParameterError("count", None, f"an integer from 1 to {MAX_COUNT}")
        if _int("offset", self.offset, 0, MAX_UNSIGNED_SHORT) is None:
            raise InvalidParameterError("offset", None, "an integer from 0 to 65535")
        for attr, name in (("license", "license"), ("image_type", "imageType"),
                           ("image_content", "imageContent"), ("size", "size"),
                           ("aspect", "aspect"), ("color", "color")):  # fmt: skip
            set_(self, attr, _enum(name, getattr(self, attr)))
        set_(self, "freshness", _freshness(self.freshness))
        for attr, name in (("height", "height"), ("width", "width")):
            _int(name, getattr(self, attr), 1, MAX_UNSIGNED_SHORT)
        for attr, name in (("min_width", "minWidth"), ("max_width", "maxWidth"),
                           ("min_height", "minHeight"), ("max_height", "maxHeight")):  # fmt: skip
            _int(name, getattr(self, attr), 1, 2**31 - 1)
        for attr, name in (("min_file_size", "minFileSize"), ("max_file_size", "maxFileSize")):
            _int(name, getattr(self, attr), 0, MAX_FILE_SIZE)
        _locale(self)
        self._cross_check()
        _check_query_length(self.to_query())

    def _cross_check(self) -> None:
        for exact, low, high, names in (
            (self.width, self.min_width, self.max_width, ("width", "minWidth", "maxWidth")),
            (self.height, self.min_height, self.max_height, ("height", "minHeight", "maxHeight")),
            (None, self.min_file_size, self.max_file_size, ("", "minFileSize", "maxFileSize")),
        ):
            if exact is not None and (low is not None or high is not None):
                raise InvalidParameterError(
                    names[0], exact, f"not together with {names[1]}/{names[2]} (mutually exclusive)"
                )
            if low is not None and high is not None and low > high:
                raise InvalidParameterError(names[1], low, f"at most {names[2]} ({high})")
        # The reference: Shopping "is valid in the en-US market only".
        other_market = self.mkt not in (None, "en-US") or self.cc not in (None, "US")
        if self.image_type == "Shopping" and other_market:
            others = ", ".join(t for t in IMAGE_TYPES if t != "Shopping")
            raise InvalidParameterError(
                "imageType", self.image_type, f"{others}; Shopping only in the en-US market"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object]) -> SearchParams:
        """Build from the reference's names (``imageType``, ``minWidth``, ``Accept-Language``).

        Python attribute names are accepted too, ``None`` means unset, and integer
        parameters may be decimal strings (command-line and checkpoint values).
        """
        kwargs: dict[str, Any] = {}
        for name, value in mapping.items():
            attr = _SEARCH_ATTRS.get(name, name)
            if attr not in _SEARCH_FIELDS:
                raise InvalidParameterError(name, value, "a parameter of /images/search")
            if attr in _INT_FIELDS and isinstance(value, str) and _DECIMAL.match(value):
                value = int(value)
            kwargs[attr] = value
        return cls(**{"q": None, **kwargs})

    def to_query(self) -> dict[str, str]:
        """The query string parameters that are set, in the reference's spelling."""
        query: dict[str, str] = {}
        for attr, name in _SEARCH_QUERY:
            value = getattr(self, attr)
            if value is not None:
                query[name] = str(value)
        return query

    def headers(self) -> dict[str, str]:
        """The request headers these parameters imply (Accept-Language, location, client IP)."""
        return _headers(self)

    def with_offset(self, offset: int) -> SearchParams:
        """A copy of these parameters asking for the page at ``offset``."""
        return dataclasses.replace(self, offset=offset)

    def fingerprint(self) -> dict[str, str]:
        """The parameters that decide the result set, excluding paging and UI language.

        Values that mean "no filter" (``license=All``, ``safeSearch=Moderate``, ...) are left out,
        so they compare equal to not giving the parameter. The checkpoint stores this to refuse
        resuming a crawl with different filters.
        """
        query = self.to_query()
        if self.accept_language is not None:
            query["Accept-Language"] = self.accept_language
        return {
            k: v for k, v in query.items()
            if k not in _NOT_IN_FINGERPRINT and _NEUTRAL.get(k) != v
        }  # fmt: skip


def _modules(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not items:
        raise InvalidParameterError("modules", value, ", ".join(MODULES))
    modules: list[str] = []
    for item in items:
        canonical = _enum("modules", item.strip() if isinstance(item, str) else item)
        if canonical is not None and canonical not in modules:
            modules.append(canonical)
    if "RecognizedEntities" in modules and len(modules) > 1:
        raise InvalidParameterError("modules", value, "RecognizedEntities alone (no other module)")
    return tuple(modules)


@dataclass(frozen=True, slots=True)
class DetailsParams:
    """Parameters of one ``GET /images/details`` (image insights) request.

    Exactly one of ``insights_token`` (an ``Image.imageInsightsToken``) and ``img_url`` is
    required. ``crop_area`` becomes the ``cal``/``cat``/``car``/``cab`` parameters. Give ``q``,
    the original query: the reference requires it for ``RelatedSearches``.
    """

    insights_token: str | None = None
    img_url: str | None = None
    modules: Sequence[str] | None = None
    q: str | None = None
    crop_area: CropArea | None = None
    mkt: str | None = None
    cc: str | None = None
    set_lang: str | None = None
    safe_search: str | None = None
    accept_language: str | None = None
    client_ip: str | None = None
    location: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "insights_token", _text("insightsToken", self.insights_token))
        set_(self, "img_url", _url("imgUrl", self.img_url))
        set_(self, "q", _text("q", self.q))
        set_(self, "modules", _modules(self.modules))
        if (self.insights_token is None) == (self.img_url is None):
            raise InvalidParameterError(
                "insightsToken", self.insights_token, "exactly one of insightsToken and imgUrl"
            )
        if self.crop_area is not None and not isinstance(self.crop_area, CropArea):
            raise InvalidParameterError("cropArea", self.crop_area, "a CropArea")
        if self.modules and "RelatedSearches" in self.modules and self.q is None:
            raise InvalidParameterError("q", None, "the original query (RelatedSearches needs it)")
        _locale(self)
        _check_query_length(self.to_query())

    def to_query(self) -> dict[str, str]:
        """The query string parameters that are set, in the reference's spelling."""
        query: dict[str, str] = {}
        if self.insights_token is not None:
            query["insightsToken"] = self.insights_token
        if self.img_url is not None:
            query["imgUrl"] = self.img_url
        if self.modules:
            query["modules"] = ",".join(self.modules)
        if self.q is not None:
            query["q"] = self.q
        if self.crop_area is not None:
            c = self.crop_area
            query.update(cal=repr(c.left), cat=repr(c.top), car=repr(c.right), cab=repr(c.bottom))
        query.update(_locale_query(self))
        return query

    def headers(self) -> dict[str, str]:
        """The request headers these parameters imply."""
        return _headers(self)


@dataclass(frozen=True, slots=True)
class TrendingParams:
    """Parameters of one ``GET /images/trending`` request (trending markets only)."""

    mkt: str | None = None
    cc: str | None = None
    set_lang: str | None = None
    safe_search: str | None = None
    accept_language: str | None = None
    client_ip: str | None = None
    location: str | None = None

    def __post_init__(self) -> None:
        _locale(self, markets=TRENDING_MARKETS)

    def to_query(self) -> dict[str, str]:
        """The query string parameters that are set, in the reference's spelling."""
        return _locale_query(self)

    def headers(self) -> dict[str, str]:
        """The request headers these parameters imply."""
        return _headers(self)


@dataclass(frozen=True, slots=True)
class VisualSearchParams:
    """The ``knowledgeRequest`` and query parameters of one ``POST /images/visualsearch``.

    Give ``image_url`` or ``insights_token`` (not both), or upload image bytes with the call
    (then neither). ``site`` restricts similar images to a domain (``filters.site``). The
    reference makes ``mkt`` required: when neither ``mkt`` nor ``cc`` is given, ``en-US`` is used.
    """

    image_url: str | None = None
    insights_token: str | None = None
    crop_area: CropArea | None = None
    site: str | None = None
    enable_entity_data: bool = False
    mkt: str | None = None
    cc: str | None = None
    set_lang: str | None = None
    safe_search: str | None = None
    accept_language: str | None = None
    client_ip: str | None = None
    location: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "image_url", _url("imageInfo.url", self.image_url))
        set_(self, "insights_token", _text("imageInfo.imageInsightsToken", self.insights_token))
        if self.image_url is not None and self.insights_token is not None:
            raise InvalidParameterError(
                "imageInfo.url", self.image_url, "not together with imageInfo.imageInsightsToken"
            )
        if self.crop_area is not None and not isinstance(self.crop_area, CropArea):
            raise InvalidParameterError("imageInfo.cropArea", self.crop_area, "a CropArea")
        site = _text("filters.site", self.site)
        if site is not None and not _HOSTNAME.match(site.lower()):
            raise InvalidParameterError("filters.site", self.site, "a domain, e.g. www.example.com")
        set_(self, "site", site.lower() if site else None)
        if not isinstance(self.enable_entity_data, bool):
            raise InvalidParameterError("enableEntityData", self.enable_entity_data, "a bool")
        if self.mkt is None and self.cc is None:
            set_(self, "mkt", "en-US")
        _locale(self)

    def check_image(self, has_image: bool) -> None:
        """Refuse an impossible combination of URL / token and an uploaded image."""
        if has_image and (self.image_url or self.insights_token):
            raise InvalidParameterError(
                "image", "<bytes>", "an upload without imageInfo.url / imageInfo.imageInsightsToken"
            )
        if not has_image and not (self.image_url or self.insights_token):
            raise InvalidParameterError(
                "imageInfo", None, "imageInfo.url, imageInfo.imageInsightsToken or an image upload"
            )

    def knowledge_request(self) -> dict[str, Any]:
        """The JSON object of the ``knowledgeRequest`` form part (empty when nothing to say)."""
        info: dict[str, Any] = {}
        if self.image_url is not None:
            info["url"] = self.image_url
        if self.insights_token is not None:
            info["imageInsightsToken"] = self.insights_token
        if self.crop_area is not None:
            info["cropArea"] = self.crop_area.to_json()
        knowledge: dict[str, Any] = {}
        if self.site is not None:
            knowledge["filters"] = {"site": self.site}
        if self.enable_entity_data:
            # The reference's example sends the flag as the string "true".
            knowledge["invokedSkillsRequestData"] = {"enableEntityData": "true"}
        body: dict[str, Any] = {}
        if info:
            body["imageInfo"] = info
        if knowledge:
            body["knowledgeRequest"] = knowledge
        return body

    def to_query(self) -> dict[str, str]:
        """The query string parameters that are set, in the reference's spelling."""
        return _locale_query(self)

    def headers(self) -> dict[str, str]:
        """The request headers these parameters imply."""
        return _headers(self)
