"""Contract tests of /images/details and /images/visualsearch over real loopback HTTP."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import aiohttp
import orjson
import pytest
from PIL import Image

from bingcrawl.emulator import EmulatorServer
from tests.support.emulator_api import HEADERS, assert_query_shape, get_json, image_key, search_url

# -- /images/details ------------------------------------------------------------------------


def details_url(server: EmulatorServer) -> str:
    return server.base_url + "v7.0/images/details"


async def first_image(server: EmulatorServer, http: aiohttp.ClientSession, q: str) -> Any:
    _, body, _ = await get_json(http, search_url(server), {"q": q, "count": "5"})
    return body["value"][0]


async def test_details_by_token_returns_every_module_with_data(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    image = await first_image(emulator, http, "sailboat")
    spec = emulator.corpus.spec(image_key(emulator, image))
    status, body, _ = await get_json(
        http,
        details_url(emulator),
        {"insightsToken": image["imageInsightsToken"], "modules": "All", "q": "sailboat"},
    )
    assert status == 200
    assert body["_type"] == "ImageInsights"
    assert body["imageInsightsToken"] == image["imageInsightsToken"]
    similar = [image_key(emulator, im) for im in body["visuallySimilarImages"]["value"]]
    expected = emulator.corpus.similar(spec, emulator.config.details_similar_count)
    assert similar == [s.key for s in expected]
    pages = body["pagesIncluding"]["value"]
    assert image_key(emulator, pages[0]) == spec.key
    assert all(emulator.corpus.spec(image_key(emulator, p)).base == spec.base for p in pages)
    assert_query_shape(body["bestRepresentativeQuery"])
    assert body["relatedSearches"]["value"]
    for query in body["relatedSearches"]["value"]:
        assert_query_shape(query, "url")
    assert body["imageCaption"]["caption"] == spec.name
    assert body["imageTags"]["value"]
    for absent in ("recipes", "shoppingSources", "recognizedEntityGroups"):
        assert absent not in body


async def test_details_modules_select_fields(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    image = await first_image(emulator, http, "sailboat")
    _, body, _ = await get_json(
        http,
        details_url(emulator),
        {"insightsToken": image["imageInsightsToken"], "modules": "similarimages,BRQ"},
    )
    assert set(body) == {
        "_type",
        "imageInsightsToken",
        "visuallySimilarImages",
        "bestRepresentativeQuery",
    }
    # RelatedSearches needs the original query string, as the reference says.
    _, body, _ = await get_json(
        http,
        details_url(emulator),
        {"insightsToken": image["imageInsightsToken"], "modules": "RelatedSearches"},
    )
    assert "relatedSearches" not in body


async def test_details_by_img_url_of_a_corpus_image_and_of_another_url(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    image = await first_image(emulator, http, "sailboat")
    spec = emulator.corpus.spec(image_key(emulator, image))
    _, body, _ = await get_json(
        http, details_url(emulator), {"imgUrl": image["contentUrl"], "modules": "SimilarImages"}
    )
    assert body["imageInsightsToken"] == image["imageInsightsToken"]
    expected = emulator.corpus.similar(spec, emulator.config.details_similar_count)
    assert [image_key(emulator, im) for im in body["visuallySimilarImages"]["value"]] == [
        s.key for s in expected
    ]

    other = "https://elsewhere.example/picture.jpg"
    _, body, _ = await get_json(
        http, details_url(emulator), {"imgUrl": other, "modules": "SimilarImages"}
    )
    digest = hashlib.sha256(other.encode()).digest()
    expected = emulator.corpus.visual_results(digest, emulator.config.details_similar_count)
    assert [image_key(emulator, im) for im in body["visuallySimilarImages"]["value"]] == [
        s.key for s in expected
    ]


@pytest.mark.parametrize(
    ("params", "sub_code", "parameter"),
    [
        ({}, "ParameterMissing", "insightsToken"),
        ({"insightsToken": "garbage"}, "ParameterInvalidValue", "insightsToken"),
        ({"insightsToken": "ccid_x*ek_bm9wZQ", "imgUrl": "http://a.example/x.jpg"},
         "ParameterInvalidValue", "imgUrl"),
        ({"imgUrl": "ftp://a.example/x.jpg"}, "ParameterInvalidValue", "imgUrl"),
        ({"imgUrl": "http://a.example/x.jpg", "modules": "Everything"},
         "ParameterInvalidValue", "modules"),
        ({"imgUrl": "http://a.example/x.jpg", "cal": "1.5"}, "ParameterInvalidValue", "cal"),
    ],
)  # fmt: skip
async def test_details_refuses_bad_requests(
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
    params: dict[str, str],
    sub_code: str,
    parameter: str,
) -> None:
    status, body, _ = await get_json(http, details_url(emulator), params)
    assert status == 400
    assert body["errors"][0]["subCode"] == sub_code
    assert body["errors"][0]["parameter"] == parameter


def png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def upload_form(image: bytes | None = None, knowledge: Any = None) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    if knowledge is not None:
        text = knowledge if isinstance(knowledge, str) else orjson.dumps(knowledge).decode()
        form.add_field("knowledgeRequest", text)
    if image is not None:
        form.add_field("image", io.BytesIO(image), filename="upload.png", content_type="image/png")
    return form


async def post(
    http: aiohttp.ClientSession, url: str, form: aiohttp.FormData, **params: str
) -> tuple[int, Any]:
    async with http.post(url, data=form, params=params, headers=HEADERS) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_details_accepts_an_uploaded_image(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    data = png_bytes(64, 48)
    status, body = await post(
        http, details_url(emulator), upload_form(data), modules="SimilarImages"
    )
    assert status == 200
    digest = hashlib.sha256(data).digest()
    assert body["imageInsightsToken"] == "bcid_" + digest.hex().upper()
    expected = emulator.corpus.visual_results(digest, emulator.config.details_similar_count)
    assert [image_key(emulator, im) for im in body["visuallySimilarImages"]["value"]] == [
        s.key for s in expected
    ]


# -- /images/visualsearch -------------------------------------------------------------------


def visual_url(server: EmulatorServer) -> str:
    return server.base_url + "v7.0/images/visualsearch"


def default_actions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert body["_type"] == "ImageKnowledge"
    (default,) = [t for t in body["tags"] if t["displayName"] == ""]
    return {a["actionType"]: a for a in default["actions"]}


async def test_visual_search_upload_answers_from_the_digest(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    spec = next(s for s in emulator.corpus.query_results("kitten") if s.fault is None)
    data = emulator.corpus.image_bytes(spec)
    status, body = await post(http, visual_url(emulator), upload_form(data))
    assert status == 200
    digest = hashlib.sha256(data).digest()
    assert body["image"]["imageInsightsToken"] == "bcid_" + digest.hex().upper()
    action = default_actions(body)["VisualSearch"]
    assert action["_type"] == "ImageModuleAction"
    expected = emulator.corpus.visual_results(digest, emulator.config.similar_results)
    assert [image_key(emulator, im) for im in action["data"]["value"]] == [
        s.key for s in expected[:50]
    ]
    assert action["data"]["currentOffset"] == 0
    assert action["data"]["nextOffset"] == 50
    assert action["data"]["totalEstimatedMatches"] >= len(expected)
    others = [t for t in body["tags"] if t["displayName"]]
    assert others
    assert all("boundingBox" in t for t in others)


async def test_visual_search_pages_with_the_offset_extension(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    data = png_bytes(32, 32)
    expected = emulator.corpus.visual_results(
        hashlib.sha256(data).digest(), emulator.config.similar_results
    )
    _, body = await post(http, visual_url(emulator), upload_form(data), offset="40", count="20")
    data_ = default_actions(body)["VisualSearch"]["data"]
    assert [image_key(emulator, im) for im in data_["value"]] == [s.key for s in expected[40:60]]
    assert (data_["currentOffset"], data_["nextOffset"]) == (40, 60)


async def test_visual_search_by_token_includes_image_by_id(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    image = await first_image(emulator, http, "harbour")
    token = image["imageInsightsToken"]
    status, body = await post(
        http,
        visual_url(emulator),
        upload_form(knowledge={"imageInfo": {"imageInsightsToken": token}}),
    )
    assert status == 200
    actions = default_actions(body)
    assert actions["ImageById"]["image"]["contentUrl"] == image["contentUrl"]
    digest = hashlib.sha256(token.encode()).digest()
    expected = emulator.corpus.visual_results(digest, emulator.config.similar_results)
    assert [image_key(emulator, im) for im in actions["VisualSearch"]["data"]["value"]] == [
        s.key for s in expected[:50]
    ]
    assert image_key(emulator, actions["PagesIncluding"]["data"]["value"][0]) == image_key(
        emulator, image
    )
    assert actions["RelatedSearches"]["data"]["value"]
    assert actions["BestRepresentativeQuery"]["serviceUrl"].startswith(emulator.base_url)


async def test_visual_search_by_url_with_site_filter_and_skills(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = "https://photos.example/a.jpg"
    digest = hashlib.sha256(url.encode()).digest()
    pool = emulator.corpus.visual_results(digest, emulator.config.similar_results)
    site = pool[0].host_page_url.split("/")[2]
    knowledge = {
        "imageInfo": {"url": url},
        "knowledgeRequest": {"filters": {"site": site}, "invokedSkills": ["SimilarImages"]},
    }
    status, body = await post(http, visual_url(emulator), upload_form(knowledge=knowledge))
    assert status == 200
    actions = default_actions(body)
    assert set(actions) == {"VisualSearch"}
    hosts = {im["hostPageUrl"].split("/")[2] for im in actions["VisualSearch"]["data"]["value"]}
    assert hosts == {site}


async def test_visual_search_crop_area_changes_results_deterministically(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = "https://photos.example/b.jpg"
    crop = {"top": 0.1, "left": 0.2, "bottom": 0.7, "right": 0.5}
    results = []
    for info in ({"url": url}, {"url": url, "cropArea": crop}, {"url": url, "cropArea": crop}):
        _, body = await post(http, visual_url(emulator), upload_form(knowledge={"imageInfo": info}))
        results.append(
            [im["contentUrl"] for im in default_actions(body)["VisualSearch"]["data"]["value"]]
        )
    assert results[1] == results[2]
    assert results[0] != results[1]


@pytest.mark.parametrize(
    ("form", "sub_code", "parameter"),
    [
        (lambda: upload_form(knowledge="{not json"), "ParameterInvalidValue", "knowledgeRequest"),
        (lambda: upload_form(knowledge=[1, 2]), "ParameterInvalidValue", "knowledgeRequest"),
        (lambda: upload_form(knowledge={"imageInfo": {"url": "http://a.example/x",
                                                      "imageInsightsToken": "t"}}),
         "ParameterInvalidValue", "knowledgeRequest"),
        (lambda: upload_form(knowledge={"imageInfo": {"url": "http://a.example/x",
                                                      "cropArea": {"top": 0.5, "left": 0,
                                                                   "bottom": 0.2, "right": 1}}}),
         "ParameterInvalidValue", "knowledgeRequest"),
        (lambda: upload_form(knowledge={}), "ParameterMissing", "image"),
        (lambda: upload_form(png_bytes(8, 8), {"imageInfo": {"url": "http://a.example/x"}}),
         "ParameterInvalidValue", "knowledgeRequest"),
        (lambda: upload_form(b"this is not an image"), "ParameterInvalidValue", "image"),
        (lambda: upload_form(png_bytes(1600, 20)), "ParameterInvalidValue", "image"),
    ],
)  # fmt: skip
async def test_visual_search_refuses_bad_requests(
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
    form: Any,
    sub_code: str,
    parameter: str,
) -> None:
    status, body = await post(http, visual_url(emulator), form())
    assert status == 400
    assert body["errors"][0]["subCode"] == sub_code
    assert body["errors"][0]["parameter"] == parameter


async def test_visual_search_refuses_uploads_over_1_mb(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    too_big = b"\xff\xd8\xff\xe0" + bytes(emulator.config.max_upload_bytes)
    status, body = await post(http, visual_url(emulator), upload_form(too_big))
    assert status == 400
    assert body["errors"][0]["parameter"] == "image"
    # Exactly at the limit the size is fine (this one then fails as undecodable, not as size).
    at_limit = b"\xff\xd8\xff\xe0" + bytes(emulator.config.max_upload_bytes - 4)
    status, body = await post(http, visual_url(emulator), upload_form(at_limit))
    assert status == 400
    assert "bytes" in body["errors"][0]["value"]
    assert body["errors"][0].get("moreDetails") == "not a decodable image"


async def test_visual_search_requires_multipart(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(visual_url(emulator), json={"imageInfo": {}}, headers=HEADERS) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["errors"][0]["parameter"] == "Content-Type"
