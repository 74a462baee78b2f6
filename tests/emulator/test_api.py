"""Contract tests of the emulator's endpoints over real loopback HTTP, against ground truth."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from bingcrawl.emulator import EmulatorServer
from bingcrawl.emulator.shapes import image_id
from tests.support.emulator import StartEmulator
from tests.support.emulator_api import HEADERS, assert_query_shape, get_json, image_key, search_url

IMAGE_FIELDS = {
    "webSearchUrl": str,
    "name": str,
    "thumbnailUrl": str,
    "datePublished": str,
    "contentUrl": str,
    "hostPageUrl": str,
    "contentSize": str,
    "encodingFormat": str,
    "hostPageDisplayUrl": str,
    "width": int,
    "height": int,
    "thumbnail": dict,
    "imageInsightsToken": str,
    "insightsMetadata": dict,
    "imageId": str,
    "accentColor": str,
}


def assert_image_shape(image: dict[str, Any]) -> None:
    for name, kind in IMAGE_FIELDS.items():
        assert isinstance(image[name], kind), name
    assert image["contentSize"].endswith(" B")
    assert image["contentSize"][:-2].isdigit()
    assert set(image["thumbnail"]) == {"width", "height"}
    assert len(image["imageId"]) == 40
    assert len(image["accentColor"]) == 6


async def test_first_page_matches_ground_truth_and_reference_shape(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    status, body, headers = await get_json(
        http, search_url(emulator), {"q": "red fox", "count": "10"}
    )
    assert status == 200
    assert body["_type"] == "Images"
    assert body["currentOffset"] == 0
    truth = emulator.corpus.query_results("red fox")
    assert [image_key(emulator, im) for im in body["value"]] == [s.key for s in truth[:10]]
    for image, spec in zip(body["value"], truth, strict=False):
        assert_image_shape(image)
        assert (image["width"], image["height"], image["name"]) == (
            spec.width,
            spec.height,
            spec.name,
        )
        assert image["imageId"] == image_id(spec.key)
        assert image["encodingFormat"] == spec.format
        assert image["hostPageUrl"] == spec.host_page_url
    assert body["totalEstimatedMatches"] >= len(truth)
    assert headers["BingAPIs-Market"] == "en-US"
    assert headers["BingAPIs-TraceId"]


async def test_content_url_serves_the_image(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    _, body, _ = await get_json(http, search_url(emulator), {"q": "lighthouse", "count": "40"})
    image = next(
        im for im in body["value"] if emulator.corpus.spec(image_key(emulator, im)).fault is None
    )
    key = image_key(emulator, image)
    async with http.get(image["contentUrl"]) as resp:
        assert resp.status == 200
        data = await resp.read()
    assert data == emulator.corpus.image_bytes(emulator.corpus.spec(key))
    assert emulator.image_host.requests[key] == 1
    assert emulator.state.requests(endpoint="search")  # the API call is logged, not the image
    assert all(r.endpoint == "search" for r in emulator.state.requests())


async def test_paging_by_next_offset_covers_every_result_with_bounded_overlap(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    q, count = "mountain lake", 25
    truth = [s.key for s in emulator.corpus.query_results(q)]
    offset, seen, overlaps = 0, [], []
    for _ in range(50):
        status, body, _ = await get_json(
            http, search_url(emulator), {"q": q, "count": str(count), "offset": str(offset)}
        )
        assert status == 200
        keys = [image_key(emulator, im) for im in body["value"]]
        assert keys == truth[offset : offset + count]
        assert body["totalEstimatedMatches"] >= len(truth)
        if not keys:
            assert body["nextOffset"] == offset  # past the end: no advance
            break
        assert offset < body["nextOffset"] <= offset + len(keys)
        overlaps.append(offset + len(keys) - body["nextOffset"])
        seen.extend(keys)
        offset = body["nextOffset"]
    else:
        pytest.fail("paging did not reach the end")
    assert set(seen) == set(truth)
    assert max(overlaps) <= emulator.config.page_overlap
    assert any(overlaps), "pages are expected to overlap somewhere"


async def test_no_overlap_when_page_overlap_is_zero(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await start_emulator(page_overlap=0)
    for offset in (0, 30, 60):
        _, body, _ = await get_json(
            http, search_url(server), {"q": "tulips", "count": "30", "offset": str(offset)}
        )
        assert body["nextOffset"] == offset + 30


async def test_paging_is_deterministic_per_query_and_offset(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    a, b = await start_emulator(), await start_emulator()
    params = {"q": "old bridge", "count": "17", "offset": "34"}
    _, body_a, _ = await get_json(http, search_url(a), params)
    _, body_b, _ = await get_json(http, search_url(b), params)
    text_a = orjson.dumps(body_a).decode().replace(a.base_url, "ORIGIN/")
    text_b = orjson.dumps(body_b).decode().replace(b.base_url, "ORIGIN/")
    assert text_a == text_b


async def test_first_page_has_expansions_pivots_and_similar_terms(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    _, first, _ = await get_json(http, search_url(emulator), {"q": "red flowers"})
    assert first["queryExpansions"]
    for query in first["queryExpansions"]:
        assert_query_shape(query)
        assert query["text"].startswith("red flowers ")
        assert query["text"].endswith(query["displayText"])
    pivots = first["pivotSuggestions"]
    assert [p["pivot"] for p in pivots] == ["red", "flowers"]
    for pivot in pivots:
        assert pivot["suggestions"]
        for query in pivot["suggestions"]:
            assert_query_shape(query)
            assert query["displayText"] in query["text"]
    assert first["similarTerms"]
    for query in first["similarTerms"]:
        assert_query_shape(query)

    # A searchLink leads back to the emulator and works with the key.
    status, expanded, _ = await get_json(http, first["queryExpansions"][0]["searchLink"])
    assert status == 200
    assert expanded["value"]

    _, second, _ = await get_json(http, search_url(emulator), {"q": "red flowers", "offset": "35"})
    assert not {"queryExpansions", "pivotSuggestions", "similarTerms"} & set(second)


async def test_single_word_query_has_no_pivots(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    _, body, _ = await get_json(http, search_url(emulator), {"q": "owl"})
    assert "pivotSuggestions" not in body
    assert body["queryExpansions"]


LICENSE_OK = {
    "Public": {"Public"},
    "ModifyCommercially": {"Public", "ModifyCommercially"},
    "Modify": {"Public", "ModifyCommercially", "Modify"},
    "ShareCommercially": {"Public", "ModifyCommercially", "ShareCommercially"},
}


@pytest.mark.parametrize(
    ("params", "predicate"),
    [
        *[
            ({"license": name.lower()}, lambda s, ok=ok: s.license in ok)
            for name, ok in LICENSE_OK.items()
        ],
        ({"imageType": "photo"}, lambda s: s.image_type == "Photo"),
        ({"imageType": "Transparent"}, lambda s: s.image_type == "Transparent"),
        ({"aspect": "Wide"}, lambda s: s.width / s.height > 1.1),
        ({"aspect": "Tall"}, lambda s: s.width / s.height < 0.9),
        ({"size": "Small"}, lambda s: max(s.width, s.height) < 200),
        ({"minWidth": "300", "maxHeight": "400"}, lambda s: s.width >= 300 and s.height <= 400),
        ({"imageType": "Shopping"}, lambda s: False),
        ({"license": "All", "safeSearch": "Strict", "imageContent": "Face"}, lambda s: True),
    ],
)
async def test_filters_select_exactly_the_matching_ground_truth(
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
    params: dict[str, str],
    predicate: Any,
) -> None:
    q = "forest path"
    expected = [s.key for s in emulator.corpus.query_results(q) if predicate(s)][:150]
    status, body, _ = await get_json(http, search_url(emulator), {"q": q, "count": "150", **params})
    assert status == 200
    assert [image_key(emulator, im) for im in body["value"]] == expected


async def test_license_filter_narrows_the_results(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    truth = emulator.corpus.query_results("beach")
    licenses = {s.license for s in truth}
    assert len(licenses) > 1, "the corpus mixes licenses"
    _, body, _ = await get_json(
        http, search_url(emulator), {"q": "beach", "license": "Public", "count": "150"}
    )
    public = [s for s in truth if s.license == "Public"]
    assert body["totalEstimatedMatches"] >= len(public)
    assert len(body["value"]) == min(150, len(public)) < len(truth)


async def test_color_filter_uses_the_accent_colour(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    _, mono, _ = await get_json(
        http, search_url(emulator), {"q": "street", "color": "Monochrome", "count": "150"}
    )
    _, colour, _ = await get_json(
        http, search_url(emulator), {"q": "street", "color": "ColorOnly", "count": "150"}
    )
    mono_keys = {image_key(emulator, im) for im in mono["value"]}
    colour_keys = {image_key(emulator, im) for im in colour["value"]}
    assert not mono_keys & colour_keys
    assert len(mono_keys | colour_keys) == min(150, len(emulator.corpus.query_results("street")))


async def test_id_parameter_puts_that_image_first(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    spec = emulator.corpus.query_results("canyon")[7]
    _, body, _ = await get_json(
        http, search_url(emulator), {"q": "canyon", "id": image_id(spec.key)}
    )
    assert image_key(emulator, body["value"][0]) == spec.key


INVALID = [
    ({"q": "x", "count": "151"}, "count", "151"),
    ({"q": "x", "count": "ten"}, "count", "ten"),
    ({"q": "x", "offset": "-1"}, "offset", "-1"),
    ({"q": "x", "license": "Bogus"}, "license", "Bogus"),
    ({"q": "x", "imageType": "Photograph"}, "imageType", "Photograph"),
    ({"q": "x", "size": "Huge"}, "size", "Huge"),
    ({"q": "x", "aspect": "Round"}, "aspect", "Round"),
    ({"q": "x", "color": "Violet"}, "color", "Violet"),
    ({"q": "x", "safeSearch": "Maybe"}, "safeSearch", "Maybe"),
    ({"q": "x", "freshness": "Fortnight"}, "freshness", "Fortnight"),
    ({"q": "x", "freshness": "2020-05-01..2019-01-01"}, "freshness", "2020-05-01..2019-01-01"),
    ({"q": "x", "mkt": "en-US", "cc": "US"}, "cc", "US"),
    ({"q": "x", "width": "300", "minWidth": "200"}, "minWidth", "200"),
    ({"q": "x", "minHeight": "tall"}, "minHeight", "tall"),
]


@pytest.mark.parametrize(("params", "parameter", "value"), INVALID)
async def test_invalid_values_are_400_naming_parameter_and_value(
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
    params: dict[str, str],
    parameter: str,
    value: str,
) -> None:
    status, body, _ = await get_json(http, search_url(emulator), params)
    assert status == 400
    assert body["_type"] == "ErrorResponse"
    (error,) = body["errors"]
    assert error["code"] == "InvalidRequest"
    assert error["subCode"] == "ParameterInvalidValue"
    assert (error["parameter"], error["value"]) == (parameter, value)
    assert emulator.state.requests()[-1].status == 400


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "   "}])
async def test_missing_q_is_400_parameter_missing(
    emulator: EmulatorServer, http: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    status, body, _ = await get_json(http, search_url(emulator), params)
    assert status == 400
    assert body == {
        "_type": "ErrorResponse",
        "errors": [
            {
                "code": "InvalidRequest",
                "subCode": "ParameterMissing",
                "message": "Required parameter is missing.",
                "parameter": "q",
            }
        ],
    }


async def test_set_lang_and_accept_language_are_exclusive(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await get_json(
        http,
        search_url(emulator),
        {"q": "x", "setLang": "fr"},
        {**HEADERS, "Accept-Language": "fr-FR"},
    )
    assert status == 400
    assert body["errors"][0]["parameter"] == "setLang"


@pytest.mark.parametrize(
    ("params", "accept_language", "market"),
    [
        ({"mkt": "en-gb"}, None, "en-GB"),
        ({"mkt": "fr-LU"}, None, "fr-FR"),  # unlisted market: best fit, no error
        ({"cc": "ch"}, "de-CH,de;q=0.8", "de-CH"),
        ({"cc": "BE"}, "nl", "nl-BE"),
        ({}, None, "en-US"),
    ],
)
async def test_market_header_reports_the_market_used(
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
    params: dict[str, str],
    accept_language: str | None,
    market: str,
) -> None:
    headers = {**HEADERS, **({"Accept-Language": accept_language} if accept_language else {})}
    status, _, resp_headers = await get_json(
        http, search_url(emulator), {"q": "x", **params}, headers
    )
    assert status == 200
    assert resp_headers["BingAPIs-Market"] == market


async def test_client_id_is_issued_then_echoed(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    _, _, first = await get_json(http, search_url(emulator), {"q": "x"})
    issued = first["X-MSEdge-ClientID"]
    assert len(issued) == 32
    _, _, second = await get_json(
        http, search_url(emulator), {"q": "x"}, {**HEADERS, "X-MSEdge-ClientID": "MYCLIENT"}
    )
    assert second["X-MSEdge-ClientID"] == "MYCLIENT"
    assert [r.client_id for r in emulator.state.requests()] == [None, "MYCLIENT"]


# -- /images/trending -----------------------------------------------------------------------


async def test_trending_categories_and_tiles(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await get_json(
        http, emulator.base_url + "v7.0/images/trending", {"mkt": "en-US"}
    )
    assert status == 200
    assert body["_type"] == "TrendingImages"
    truth = emulator.corpus.trending()
    assert [c["title"] for c in body["categories"]] == [title for title, _ in truth]
    for category, (_, tiles) in zip(body["categories"], truth, strict=True):
        assert len(category["tiles"]) == len(tiles)
        for tile, (text, spec) in zip(category["tiles"], tiles, strict=True):
            assert tile["query"]["text"] == text
            assert {"displayText", "webSearchUrl"} <= set(tile["query"])
            assert image_key(emulator, tile["image"]) == spec.key
            assert tile["image"]["thumbnailUrl"]
