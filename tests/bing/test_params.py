"""Client-side validation of every parameter, against the reference's documented values."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bingcrawl.bing.params import (
    ASPECTS,
    COLORS,
    COUNTRY_CODES,
    FRESHNESS,
    IMAGE_CONTENTS,
    IMAGE_TYPES,
    LANGUAGES,
    LICENSES,
    MARKETS,
    MAX_FILE_SIZE,
    MODULES,
    SAFE_SEARCH,
    SIZES,
    TRENDING_MARKETS,
    CropArea,
    DetailsParams,
    SearchParams,
    TrendingParams,
    VisualSearchParams,
)
from bingcrawl.errors import ConfigError, InvalidParameterError

FAST = settings(max_examples=40, deadline=None)

# (attribute, the reference's name, documented values)
ENUMS: list[tuple[str, str, tuple[str, ...]]] = [
    ("safe_search", "safeSearch", SAFE_SEARCH),
    ("license", "license", LICENSES),
    ("image_type", "imageType", IMAGE_TYPES),
    ("image_content", "imageContent", IMAGE_CONTENTS),
    ("size", "size", SIZES),
    ("aspect", "aspect", ASPECTS),
    ("color", "color", COLORS),
    ("freshness", "freshness", FRESHNESS),
    ("set_lang", "setLang", LANGUAGES),
    ("mkt", "mkt", MARKETS),
]
# (attribute, the reference's name, lowest, highest accepted)
RANGES: list[tuple[str, str, int, int]] = [
    ("count", "count", 1, 150),
    ("offset", "offset", 0, 65535),
    ("height", "height", 1, 65535),
    ("width", "width", 1, 65535),
    ("min_width", "minWidth", 1, 2**31 - 1),
    ("max_width", "maxWidth", 1, 2**31 - 1),
    ("min_height", "minHeight", 1, 2**31 - 1),
    ("max_height", "maxHeight", 1, 2**31 - 1),
    ("min_file_size", "minFileSize", 0, MAX_FILE_SIZE),
    ("max_file_size", "maxFileSize", 0, MAX_FILE_SIZE),
]


def any_case(values: tuple[str, ...]) -> st.SearchStrategy[tuple[str, str]]:
    """(canonical value, the same value in a random mix of cases)."""
    return st.sampled_from(values).flatmap(
        lambda v: st.lists(st.booleans(), min_size=len(v), max_size=len(v)).map(
            lambda flips: (
                v,
                "".join(c.upper() if f else c.lower() for c, f in zip(v, flips, strict=True)),
            )
        )
    )


@pytest.mark.parametrize(("attr", "name", "values"), ENUMS, ids=[e[1] for e in ENUMS])
@FAST
@given(data=st.data())
def test_every_documented_value_is_accepted_in_any_case(
    attr: str, name: str, values: tuple[str, ...], data: st.DataObject
) -> None:
    canonical, spelled = data.draw(any_case(values))
    params = SearchParams("cats", **{attr: spelled})
    assert getattr(params, attr) == canonical
    assert params.to_query()[name] == canonical


@pytest.mark.parametrize(("attr", "name", "values"), ENUMS, ids=[e[1] for e in ENUMS])
def test_every_documented_value_round_trips(attr: str, name: str, values: tuple[str, ...]) -> None:
    for value in values:
        assert SearchParams("cats", **{attr: value}).to_query()[name] == value


@pytest.mark.parametrize(("attr", "name", "values"), ENUMS, ids=[e[1] for e in ENUMS])
@FAST
@given(value=st.text(max_size=20))
def test_undocumented_values_are_refused_naming_the_parameter(
    attr: str, name: str, values: tuple[str, ...], value: str
) -> None:
    if value.strip().lower() in {v.lower() for v in values}:
        return
    with pytest.raises(InvalidParameterError) as info:
        SearchParams("cats", **{attr: value})
    assert info.value.parameter == name
    assert info.value.option == name
    assert values[0] in info.value.accepted  # the accepted values are listed
    assert isinstance(info.value, ConfigError)


@FAST
@given(pair=any_case(COUNTRY_CODES))
def test_every_country_code_is_accepted_with_accept_language(pair: tuple[str, str]) -> None:
    canonical, spelled = pair
    params = SearchParams("cats", cc=spelled, accept_language="en-US,en;q=0.8")
    assert params.to_query()["cc"] == canonical
    assert params.headers() == {"Accept-Language": "en-US,en;q=0.8"}


@pytest.mark.parametrize(("attr", "name", "low", "high"), RANGES, ids=[r[1] for r in RANGES])
@FAST
@given(data=st.data())
def test_documented_ranges(attr: str, name: str, low: int, high: int, data: st.DataObject) -> None:
    inside = data.draw(st.integers(low, high))
    assert SearchParams("cats", **{attr: inside}).to_query()[name] == str(inside)
    outside = data.draw(st.integers(max_value=low - 1) | st.integers(min_value=high + 1))
    with pytest.raises(InvalidParameterError) as info:
        SearchParams("cats", **{attr: outside})
    assert info.value.parameter == name
    assert str(low) in info.value.accepted
    assert str(high) in info.value.accepted


@pytest.mark.parametrize("attr", ["count", "offset"])
@pytest.mark.parametrize("value", ["150", 150.0, True, None])
def test_integers_must_be_integers(attr: str, value: Any) -> None:
    with pytest.raises(InvalidParameterError) as info:
        SearchParams("cats", **{attr: value})
    assert info.value.parameter == attr


@FAST
@given(
    a=st.dates(date(2000, 1, 1), date(2030, 12, 31)),
    b=st.dates(date(2000, 1, 1), date(2030, 12, 31)),
)
def test_freshness_date_ranges(a: date, b: date) -> None:
    text = f"{a.isoformat()}..{b.isoformat()}"
    if a <= b:
        assert SearchParams("cats", freshness=text).freshness == text
    else:
        with pytest.raises(InvalidParameterError) as info:
            SearchParams("cats", freshness=text)
        assert info.value.parameter == "freshness"


@pytest.mark.parametrize(
    "value", ["2018-02-30..2018-03-01", "2018-1-1..2018-2-2", "2017-06-15", ".."]
)
def test_malformed_freshness_ranges(value: str) -> None:
    with pytest.raises(InvalidParameterError, match="freshness"):
        SearchParams("cats", freshness=value)


def test_defaults_and_query_spelling() -> None:
    params = SearchParams(
        "  aston martin  ",
        license="public",
        image_type="photo",
        safe_search="STRICT",
        min_width=640,
        max_file_size=500_000,
        id="ABC",
    )
    assert params.to_query() == {
        "q": "aston martin",
        "count": "150",
        "offset": "0",
        "safeSearch": "Strict",
        "license": "Public",
        "imageType": "Photo",
        "minWidth": "640",
        "maxFileSize": "500000",
        "id": "ABC",
    }
    assert params.headers() == {}


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"mkt": "en-US", "cc": "US", "accept_language": "en"}, "cc"),
        ({"set_lang": "en", "cc": "US", "accept_language": "en"}, "setLang"),
        ({"cc": "US"}, "cc"),
        ({"accept_language": "en-US"}, "Accept-Language"),
        ({"accept_language": "en_US", "cc": "US"}, "Accept-Language"),
        ({"width": 100, "min_width": 50}, "width"),
        ({"height": 100, "max_height": 50}, "height"),
        ({"min_width": 500, "max_width": 100}, "minWidth"),
        ({"min_height": 500, "max_height": 100}, "minHeight"),
        ({"min_file_size": 5000, "max_file_size": 100}, "minFileSize"),
        ({"image_type": "Shopping", "mkt": "en-GB"}, "imageType"),
        ({"image_type": "Shopping", "cc": "FR", "accept_language": "fr"}, "imageType"),
        ({"mkt": "no-NO"}, "mkt"),
        ({"client_ip": "999.999.999.999"}, "X-MSEdge-ClientIP"),
        ({"id": "   "}, "id"),
    ],
)
def test_cross_parameter_rules(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        SearchParams("cats", **kwargs)
    assert info.value.parameter == parameter


def test_shopping_in_en_us() -> None:
    assert SearchParams("x", image_type="shopping", mkt="EN-us").to_query()["mkt"] == "en-US"


@pytest.mark.parametrize("q", ["", "   ", None, 42])
def test_query_is_required(q: Any) -> None:
    with pytest.raises(InvalidParameterError) as info:
        SearchParams(q)
    assert info.value.parameter == "q"


def test_query_length_limit() -> None:
    SearchParams("a" * 1400)
    with pytest.raises(InvalidParameterError) as info:
        SearchParams("é" * 300)  # 1,800 characters once URL-encoded
    assert info.value.parameter == "q"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("lat:47.60357;long:-122.3295;re:100", True),
        ("lat:47.6;long:-122.3;re:22m;ts:1700000000;sp:3;head:90;alt:10;are:5", True),
        ("lat:91;long:0;re:10", False),
        ("lat:0;long:-181;re:10", False),
        ("lat:0;long:0", False),
        ("lat:0;long:0;re:10;head:90", False),  # head needs a nonzero sp
        ("lat:0;long:0;re:10;are:5", False),  # are needs alt
        ("lat:0;long:0;re:10;city:Paris", False),
        ("lat:x;long:0;re:10", False),
    ],
)
def test_search_location_header(value: str, ok: bool) -> None:
    if ok:
        headers = SearchParams("x", location=value).headers()
        assert headers["X-Search-Location"] == value
    else:
        with pytest.raises(InvalidParameterError) as info:
            SearchParams("x", location=value)
        assert info.value.parameter == "X-Search-Location"


def test_request_headers() -> None:
    params = SearchParams(
        "x",
        cc="gb",
        accept_language="en-GB, en;q=0.5",
        client_ip="2001:0db8::0001",
        location="lat:51.5;long:-0.12;re:50",
    )
    assert params.headers() == {
        "Accept-Language": "en-GB,en;q=0.5",
        "X-MSEdge-ClientIP": "2001:db8::1",
        "X-Search-Location": "lat:51.5;long:-0.12;re:50",
    }
    assert "Accept-Language" not in params.to_query()


@FAST
@given(offset=st.integers(0, 65535))
def test_with_offset(offset: int) -> None:
    params = SearchParams("cats", license="Public", count=50)
    page = params.with_offset(offset)
    assert page.offset == offset
    assert page.count == 50
    assert page.license == "Public"
    assert page.fingerprint() == params.fingerprint()


def test_with_offset_revalidates() -> None:
    with pytest.raises(InvalidParameterError, match="offset"):
        SearchParams("cats").with_offset(-1)


def test_params_are_frozen() -> None:
    params = SearchParams("cats")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.q = "dogs"  # type: ignore[misc]


def test_fingerprint() -> None:
    base = SearchParams("cats", license="Public", image_type="Photo", mkt="en-US")
    fingerprint = base.fingerprint()
    assert fingerprint == {"q": "cats", "mkt": "en-US", "license": "Public", "imageType": "Photo"}
    # Paging, page size and the UI language do not change the result set.
    assert (
        dataclasses.replace(base, count=10, offset=300, set_lang="de").fingerprint() == fingerprint
    )
    # "All" / the default safeSearch mean the same as leaving the parameter out.
    assert SearchParams("cats", size="all", safe_search="moderate").fingerprint() == {"q": "cats"}
    # Filters do change it.
    assert dataclasses.replace(base, license="Share").fingerprint() != fingerprint
    assert dataclasses.replace(base, min_width=800).fingerprint() != fingerprint
    with_lang = SearchParams("cats", cc="DE", accept_language="de").fingerprint()
    assert with_lang["Accept-Language"] == "de"
    assert with_lang["cc"] == "DE"


# -- /images/details -----------------------------------------------------------------------


def test_details_params() -> None:
    params = DetailsParams(
        insights_token="ccid_abc",
        modules=["similarimages", "PAGESINCLUDING", "SimilarImages"],
        q="apple pie",
        crop_area=CropArea(top=0.1, left=0.2, bottom=0.7, right=0.5),
        mkt="en-us",
    )
    assert params.modules == ("SimilarImages", "PagesIncluding")
    assert params.to_query() == {
        "insightsToken": "ccid_abc",
        "modules": "SimilarImages,PagesIncluding",
        "q": "apple pie",
        "cal": "0.2",
        "cat": "0.1",
        "car": "0.5",
        "cab": "0.7",
        "mkt": "en-US",
    }
    by_url = DetailsParams(img_url="https://contoso.com/a.jpg", modules="all, brq")
    assert by_url.to_query() == {"imgUrl": "https://contoso.com/a.jpg", "modules": "All,BRQ"}


@FAST
@given(pair=any_case(MODULES))
def test_every_module_is_accepted(pair: tuple[str, str]) -> None:
    canonical, spelled = pair
    params = DetailsParams(insights_token="t", modules=[spelled], q="x")
    assert params.modules == (canonical,)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({}, "insightsToken"),
        ({"insights_token": "t", "img_url": "https://e.example/a.jpg"}, "insightsToken"),
        ({"img_url": "ftp://e.example/a.jpg"}, "imgUrl"),
        ({"img_url": "https://e.example/" + "a" * 2100}, "imgUrl"),
        ({"insights_token": "t", "modules": ["Faces"]}, "modules"),
        ({"insights_token": "t", "modules": []}, "modules"),
        ({"insights_token": "t", "modules": ["RecognizedEntities", "Tags"]}, "modules"),
        ({"insights_token": "t", "modules": ["RelatedSearches"]}, "q"),
        ({"insights_token": "t", "mkt": "xx-XX"}, "mkt"),
    ],
)
def test_details_refusals(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        DetailsParams(**kwargs)
    assert info.value.parameter == parameter


# -- /images/trending ----------------------------------------------------------------------


@pytest.mark.parametrize("market", MARKETS)
def test_trending_markets(market: str) -> None:
    if market in TRENDING_MARKETS:
        assert TrendingParams(mkt=market.lower()).to_query() == {"mkt": market}
    else:
        with pytest.raises(InvalidParameterError) as info:
            TrendingParams(mkt=market)
        assert info.value.parameter == "mkt"
        assert "en-US" in info.value.accepted


def test_trending_country_and_language() -> None:
    assert TrendingParams(cc="au", accept_language="en-AU").to_query() == {"cc": "AU"}
    with pytest.raises(InvalidParameterError, match="cc"):
        TrendingParams(cc="FR", accept_language="fr")
    assert TrendingParams().to_query() == {}


# -- /images/visualsearch ------------------------------------------------------------------

unit = st.floats(0, 1, allow_nan=False)


@FAST
@given(top=unit, left=unit, bottom=unit, right=unit)
def test_crop_area(top: float, left: float, bottom: float, right: float) -> None:
    if top < bottom and left < right:
        area = CropArea(top=top, left=left, bottom=bottom, right=right)
        assert area.to_json() == {"top": top, "left": left, "bottom": bottom, "right": right}
    else:
        with pytest.raises(InvalidParameterError) as info:
            CropArea(top=top, left=left, bottom=bottom, right=right)
        assert info.value.parameter in ("cropArea.top", "cropArea.left")


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), "0.5", True])
def test_crop_area_out_of_range(bad: Any) -> None:
    with pytest.raises(InvalidParameterError) as info:
        CropArea(top=bad, left=0.0, bottom=1.0, right=1.0)
    assert info.value.parameter == "cropArea.top"


def test_visual_search_knowledge_request_shapes() -> None:
    by_url = VisualSearchParams(image_url="https://contoso.com/2018/05/fashion/red.jpg")
    assert by_url.knowledge_request() == {
        "imageInfo": {"url": "https://contoso.com/2018/05/fashion/red.jpg"}
    }
    assert by_url.to_query() == {"mkt": "en-US"}  # the reference makes mkt required
    full = VisualSearchParams(
        insights_token="mid_D6426898706EC7",
        crop_area=CropArea(top=0.1, left=0.2, bottom=0.7, right=0.5),
        site="WWW.Microsoft.com",
        enable_entity_data=True,
        mkt="en-us",
        safe_search="strict",
    )
    assert full.knowledge_request() == {
        "imageInfo": {
            "imageInsightsToken": "mid_D6426898706EC7",
            "cropArea": {"top": 0.1, "left": 0.2, "bottom": 0.7, "right": 0.5},
        },
        "knowledgeRequest": {
            "filters": {"site": "www.microsoft.com"},
            "invokedSkillsRequestData": {"enableEntityData": "true"},
        },
    }
    assert full.to_query() == {"mkt": "en-US", "safeSearch": "Strict"}
    assert VisualSearchParams().knowledge_request() == {}
    by_country = VisualSearchParams(cc="US", accept_language="en-US")
    assert by_country.to_query() == {"cc": "US"}


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"image_url": "https://e.example/a.jpg", "insights_token": "t"}, "imageInfo.url"),
        ({"image_url": "not a url"}, "imageInfo.url"),
        ({"site": "https://www.microsoft.com/"}, "filters.site"),
        ({"site": "bad host.com"}, "filters.site"),
        ({"enable_entity_data": "true"}, "enableEntityData"),
        ({"safe_search": "none"}, "safeSearch"),
    ],
)
def test_visual_search_refusals(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        VisualSearchParams(**kwargs)
    assert info.value.parameter == parameter


def test_visual_search_image_combinations() -> None:
    VisualSearchParams().check_image(True)
    VisualSearchParams(image_url="https://e.example/a.jpg").check_image(False)
    with pytest.raises(InvalidParameterError, match="imageInfo"):
        VisualSearchParams().check_image(False)
    with pytest.raises(InvalidParameterError, match="image"):
        VisualSearchParams(insights_token="t").check_image(True)


def test_from_mapping_takes_the_reference_names() -> None:
    params = SearchParams.from_mapping(
        {
            "q": "cats",
            "count": 50,
            "imageType": "photo",
            "minWidth": "640",  # command-line values arrive as text
            "maxFileSize": " 500000 ",
            "image_content": "face",  # attribute names work too
            "cc": "us",
            "Accept-Language": "en-US",
            "license": None,  # None means unset
        }
    )
    assert params == SearchParams(
        "cats",
        count=50,
        image_type="Photo",
        min_width=640,
        max_file_size=500_000,
        image_content="Face",
        cc="US",
        accept_language="en-US",
    )
    # A to_query() round trip gives the same parameters back.
    assert SearchParams.from_mapping(params.to_query() | params.headers()) == params


@pytest.mark.parametrize(
    ("mapping", "parameter"),
    [
        ({"q": "x", "minWidth": "wide"}, "minWidth"),
        ({"q": "x", "count": "1e3"}, "count"),
        ({"q": "x", "imgType": "Photo"}, "imgType"),
        ({"count": 10}, "q"),
    ],
)
def test_from_mapping_refusals(mapping: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        SearchParams.from_mapping(mapping)
    assert info.value.parameter == parameter
