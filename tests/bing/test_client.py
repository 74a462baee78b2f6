"""BingClient unit tests (aioresponses): headers, error mapping, secrecy and lifecycle."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer
from PIL import Image

from bingcrawl.bing import (
    DEFAULT_USER_AGENT,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_SIDE,
    BingClient,
    CropArea,
    DetailsParams,
    Images,
    ResponseFormatError,
    SearchParams,
    TrendingParams,
    VisualSearchParams,
    prepare_upload,
)
from bingcrawl.bing import client as client_module
from bingcrawl.errors import (
    MAX_RETRY_AFTER,
    ApiConnectionError,
    ApiError,
    AuthenticationError,
    ConfigError,
    HttpNotAllowedError,
    InvalidParameterError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    ServerError,
    ThrottledError,
)
from tests.support.bing import BASE, CompatResponse, MockApi, make_image

KEY = "0123456789abcdef-SECRET-KEY"
EMPTY_PAGE = {"_type": "Images", "value": [], "nextOffset": 0}


def error_body(code: str, sub_code: str | None = None, **extra: str) -> dict[str, Any]:
    """An ErrorResponse shaped like the reference's examples."""
    error: dict[str, Any] = {"code": code, "message": f"{code} happened.", **extra}
    if sub_code:
        error["subCode"] = sub_code
    return {"_type": "ErrorResponse", "errors": [error]}


@pytest.fixture
async def client() -> AsyncIterator[BingClient]:
    async with BingClient(KEY, BASE) as bing:
        yield bing


async def test_search_request_line_and_headers(mock_api: MockApi, client: BingClient) -> None:
    mock_api.add(payload={"_type": "Images", "value": [{"contentUrl": "https://e.example/a"}]})
    params = SearchParams(
        "red flowers", license="public", mkt="en-us", location="lat:1;long:2;re:3"
    )
    images = await client.search(params)
    assert isinstance(images, Images)
    assert images.value[0].content_url == "https://e.example/a"
    ((method, url, kwargs),) = mock_api.calls()
    assert method == "GET"
    assert str(url).startswith(f"{BASE}v7.0/images/search?")
    assert dict(url.query) == params.to_query()
    assert kwargs["allow_redirects"] is False
    headers = kwargs["headers"]
    assert headers["Ocp-Apim-Subscription-Key"] == KEY
    assert headers["User-Agent"] == DEFAULT_USER_AGENT
    assert headers["User-Agent"].startswith("Mozilla/5.0 (")
    assert headers["Pragma"] == "no-cache"
    assert headers["Accept"] == "application/json"
    assert headers["X-Search-Location"] == "lat:1;long:2;re:3"
    assert "X-MSEdge-ClientID" not in headers  # never on the very first call


async def test_client_id_is_captured_and_echoed(mock_api: MockApi, client: BingClient) -> None:
    mock_api.add(payload=EMPTY_PAGE, headers={"X-MSEdge-ClientID": "ID-FROM-BING"})
    mock_api.add(payload=EMPTY_PAGE, headers={"X-MSEdge-ClientID": "A-DIFFERENT-ID"})
    mock_api.add("trending", payload={"_type": "TrendingImages", "categories": []})
    params = SearchParams("cats")
    await client.search(params)
    assert client.client_id == "ID-FROM-BING"
    await client.search(params)
    await client.trending(TrendingParams(mkt="en-US"))
    sent = [kw["headers"].get("X-MSEdge-ClientID") for _, _, kw in mock_api.calls()]
    # The first ID Bing issued is kept and sent on every later call.
    assert sent == [None, "ID-FROM-BING", "ID-FROM-BING"]
    assert client.client_id == "ID-FROM-BING"


async def test_malformed_client_id_is_not_echoed(mock_api: MockApi, client: BingClient) -> None:
    mock_api.add(payload=EMPTY_PAGE, headers={"X-MSEdge-ClientID": "two words"})
    mock_api.add(payload=EMPTY_PAGE, headers={"X-MSEdge-ClientID": "GOOD-ID"})
    await client.search(SearchParams("cats"))
    assert client.client_id is None
    await client.search(SearchParams("cats"))
    assert client.client_id == "GOOD-ID"


async def test_persisted_client_id_and_custom_user_agent(mock_api: MockApi) -> None:
    mock_api.add(payload=EMPTY_PAGE, headers={"X-MSEdge-ClientID": "NEW"})
    async with BingClient(
        KEY,
        BASE,
        client_id="PERSISTED",
        user_agent="Mozilla/5.0 (X11; Linux x86_64)",
        no_cache=False,
    ) as bing:
        await bing.search(SearchParams("cats"))
        assert bing.client_id == "PERSISTED"
    ((_, _, kwargs),) = mock_api.calls()
    assert kwargs["headers"]["X-MSEdge-ClientID"] == "PERSISTED"
    assert kwargs["headers"]["User-Agent"] == "Mozilla/5.0 (X11; Linux x86_64)"
    assert "Pragma" not in kwargs["headers"]


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://api.example.test", f"{BASE}v7.0/images/search"),
        ("https://api.example.test/v7.0/", f"{BASE}v7.0/images/search"),
        ("https://api.example.test/bing/", f"{BASE}bing/v7.0/images/search"),
    ],
)
async def test_endpoint_is_a_base_url(mock_api: MockApi, endpoint: str, expected: str) -> None:
    pattern = expected + "?q=x&count=150&offset=0"
    mock_api.mocked.get(pattern, payload=EMPTY_PAGE, response_class=CompatResponse)
    async with BingClient(KEY, endpoint) as bing:
        await bing.search(SearchParams("x"))
    ((_, url, _),) = mock_api.calls()
    assert str(url).split("?")[0] == expected


async def test_details_and_visual_search_requests(mock_api: MockApi, client: BingClient) -> None:
    mock_api.add("details", payload={"_type": "ImageInsights", "imageInsightsToken": "tok"})
    mock_api.add("visualsearch", method="POST", payload={"_type": "ImageKnowledge", "tags": []})
    insights = await client.details(DetailsParams(insights_token="tok", modules=["SimilarImages"]))
    assert insights.image_insights_token == "tok"
    knowledge = await client.visual_search(VisualSearchParams(image_url="https://e.example/a.jpg"))
    assert knowledge.tags == ()
    (details, visual) = mock_api.calls()
    assert dict(details[1].query) == {"insightsToken": "tok", "modules": "SimilarImages"}
    assert visual[0] == "POST"
    assert dict(visual[1].query) == {"mkt": "en-US"}
    assert visual[2]["allow_redirects"] is False
    form = visual[2]["data"]
    assert isinstance(form, aiohttp.FormData)
    assert form.is_multipart


# -- error mapping, one row of the reference's table at a time ------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error", "code", "sub_code"),
    [
        (401, error_body("InvalidAuthorization", "AuthorizationMissing"), AuthenticationError,
         "InvalidAuthorization", "AuthorizationMissing"),
        (401, error_body("InvalidAuthorization", "AuthorizationRedundancy"), AuthenticationError,
         "InvalidAuthorization", "AuthorizationRedundancy"),
        (401, None, AuthenticationError, None, None),
        (403, error_body("InsufficientAuthorization", "AuthorizationDisabled"),
         AuthenticationError, "InsufficientAuthorization", "AuthorizationDisabled"),
        (403, error_body("InsufficientAuthorization", "AuthorizationExpired"),
         AuthenticationError, "InsufficientAuthorization", "AuthorizationExpired"),
        (403, error_body("RateLimitExceeded"), QuotaExceededError, "RateLimitExceeded", None),
        (410, error_body("InvalidRequest", "HttpNotAllowed"), HttpNotAllowedError,
         "InvalidRequest", "HttpNotAllowed"),
        (404, None, NotFoundError, None, None),
        (500, error_body("ServerError", "UnexpectedError"), ServerError, "ServerError",
         "UnexpectedError"),
        (500, error_body("ServerError", "ResourceError"), ServerError, "ServerError",
         "ResourceError"),
        (503, None, ServerError, None, None),
        (200, error_body("RateLimitExceeded"), ThrottledError, "RateLimitExceeded", None),
        (418, None, ApiError, None, None),
    ],
)  # fmt: skip
async def test_error_table(
    mock_api: MockApi,
    client: BingClient,
    status: int,
    body: dict[str, Any] | None,
    error: type[ApiError],
    code: str | None,
    sub_code: str | None,
) -> None:
    mock_api.add(
        status=status,
        body=orjson.dumps(body) if body else b"",
        headers={"BingAPIs-TraceId": "TRACE-1"},
    )
    with pytest.raises(error) as info:
        await client.search(SearchParams("cats"))
    assert type(info.value) is error
    assert (info.value.status, info.value.code, info.value.sub_code) == (status, code, sub_code)
    assert info.value.trace_id == "TRACE-1"
    assert "TRACE-1" in str(info.value)
    assert f"HTTP {status}" in str(info.value)


async def test_exit_codes_follow_the_error(mock_api: MockApi, client: BingClient) -> None:
    mock_api.add(status=401, payload=error_body("InvalidAuthorization", "AuthorizationMissing"))
    mock_api.add(status=403, payload=error_body("RateLimitExceeded"))
    with pytest.raises(AuthenticationError) as auth:
        await client.search(SearchParams("cats"))
    with pytest.raises(QuotaExceededError) as quota:
        await client.search(SearchParams("cats"))
    assert (auth.value.exit_code, quota.value.exit_code) == (3, 4)


async def test_403_without_body_uses_retry_after_to_tell_quota(
    mock_api: MockApi, client: BingClient
) -> None:
    mock_api.add(status=403, headers={"Retry-After": "3600"})
    mock_api.add(status=403)
    with pytest.raises(QuotaExceededError):
        await client.search(SearchParams("cats"))
    with pytest.raises(AuthenticationError):
        await client.search(SearchParams("cats"))


async def test_400_names_the_parameter(mock_api: MockApi, client: BingClient) -> None:
    body = error_body("InvalidRequest", "ParameterInvalidValue", parameter="imageType", value="X")
    mock_api.add(status=400, payload=body)
    with pytest.raises(InvalidRequestError) as info:
        await client.search(SearchParams("cats"))
    assert (info.value.parameter, info.value.value) == ("imageType", "X")
    assert info.value.sub_code == "ParameterInvalidValue"
    assert "imageType" in str(info.value)


async def test_400_parameter_missing_example(
    mock_api: MockApi, client: BingClient, fixture_json: Callable[[str], Any]
) -> None:
    mock_api.add(status=400, payload=fixture_json("errors.json")["parameter_missing"])
    with pytest.raises(InvalidRequestError) as info:
        await client.search(SearchParams("cats"))
    assert info.value.parameter == "q"
    assert "Required parameter is missing." in str(info.value)


async def test_429_retry_after_seconds(mock_api: MockApi, client: BingClient) -> None:
    mock_api.add(status=429, payload=error_body("RateLimitExceeded"), headers={"Retry-After": "7"})
    mock_api.add(status=429, headers={"Retry-After": "86400"})
    with pytest.raises(ThrottledError) as info:
        await client.search(SearchParams("cats"))
    assert info.value.retry_after == 7.0
    assert info.value.code == "RateLimitExceeded"
    with pytest.raises(ThrottledError) as capped:
        await client.search(SearchParams("cats"))
    assert capped.value.retry_after == MAX_RETRY_AFTER


async def test_429_retry_after_http_date(mock_api: MockApi, client: BingClient) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    mock_api.add(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(ThrottledError) as info:
        await client.search(SearchParams("cats"))
    assert info.value.retry_after is not None
    assert 0 < info.value.retry_after <= 120


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"   \r\n", "application/json"),
        (b"<html><body>Service busy</body></html>", "text/html"),
        (b'{"_type": "Images", "value": [', "application/json"),
    ],
)
async def test_200_without_json_is_throttling(
    mock_api: MockApi, client: BingClient, body: bytes, content_type: str
) -> None:
    mock_api.add(body=body, headers={"Content-Type": content_type})
    with pytest.raises(ThrottledError) as info:
        await client.search(SearchParams("cats"))
    assert info.value.retry_after is None
    assert info.value.status == 200


async def test_200_with_the_wrong_type(mock_api: MockApi, client: BingClient) -> None:
    mock_api.add(
        payload={"_type": "TrendingImages", "categories": []}, headers={"BingAPIs-TraceId": "T"}
    )
    with pytest.raises(ResponseFormatError) as info:
        await client.search(SearchParams("cats"))
    assert isinstance(info.value, ServerError)
    assert info.value.trace_id == "T"
    assert "search" in str(info.value)


async def test_redirect_is_an_error(mock_api: MockApi, client: BingClient) -> None:
    mock_api.add(status=302, headers={"Location": "https://elsewhere.example/"})
    with pytest.raises(ApiError) as info:
        await client.search(SearchParams("cats"))
    assert info.value.status == 302
    assert "elsewhere.example" in str(info.value)
    assert len(mock_api.calls()) == 1


@pytest.mark.parametrize(
    "exception",
    [
        aiohttp.ClientConnectionError("connection reset"),
        aiohttp.ClientConnectorDNSError(
            aiohttp.client_reqrep.ConnectionKey(
                "api.example.test", 443, True, True, None, None, None
            ),
            OSError("Name or service not known"),
        ),
        TimeoutError(),
        aiohttp.ServerTimeoutError("read timeout"),
        aiohttp.ClientPayloadError("truncated"),
    ],
)
async def test_connection_errors(
    mock_api: MockApi, client: BingClient, exception: BaseException
) -> None:
    mock_api.add(exception=exception)
    with pytest.raises(ApiConnectionError) as info:
        await client.search(SearchParams("cats"))
    assert info.value.__cause__ is exception
    assert isinstance(info.value, OSError)
    never_connected = isinstance(exception, aiohttp.ClientConnectorError)
    # A connection that was never made sent nothing: it is not a call (not counted, not
    # recorded); anything later may have reached the API and is recorded with status 0.
    assert info.value.sent is not never_connected
    if never_connected:
        assert client.last_call is None
    else:
        assert client.last_call is not None
        assert client.last_call.status == 0


# -- accounting, secrecy, lifecycle -----------------------------------------------------------


async def test_on_response_sees_every_call(mock_api: MockApi) -> None:
    seen: list[tuple[str, int]] = []
    mock_api.add(payload=EMPTY_PAGE, headers={"BingAPIs-TraceId": "T1", "BingAPIs-Market": "en-US"})
    mock_api.add(status=429, headers={"Retry-After": "1"})
    mock_api.add("trending", body=b"")
    mock_api.add(exception=aiohttp.ClientConnectionError("refused"))
    async with BingClient(KEY, BASE, on_response=lambda e, s: seen.append((e, s))) as bing:
        await bing.search(SearchParams("cats"))
        assert bing.last_call is not None
        assert (bing.last_call.trace_id, bing.last_call.market) == ("T1", "en-US")
        for call in (
            bing.search(SearchParams("cats")),
            bing.trending(),
            bing.search(SearchParams("c")),
        ):
            with pytest.raises((ThrottledError, ApiConnectionError)):
                await call
    assert seen == [("search", 200), ("search", 429), ("trending", 200), ("search", 0)]


async def test_the_key_never_leaks(
    mock_api: MockApi, client: BingClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = error_body(
        "InvalidAuthorization", "AuthorizationMissing", parameter="key", value=KEY,
        moreDetails=f"Subscription key {KEY} is not recognized.",
    )  # fmt: skip
    mock_api.add(status=401, payload=echo)
    mock_api.add(exception=aiohttp.ClientConnectionError(f"failed with {KEY}"))
    mock_api.add(status=200, payload={"_type": KEY})
    errors: list[BaseException] = []
    for _ in range(3):
        with pytest.raises(ApiError if len(errors) != 1 else ApiConnectionError) as info:
            await client.search(SearchParams("cats"))
        errors.append(info.value)
    texts = [repr(client), str(client), caplog.text]
    for error in errors:
        texts += [str(error), repr(error), str(getattr(error, "value", "")), *map(str, error.args)]
    assert errors[0].value == "***"  # type: ignore[attr-defined]
    assert all(KEY not in text for text in texts)
    assert "***" in str(errors[0])


async def test_lifecycle() -> None:
    bing = BingClient(KEY, BASE)
    assert KEY not in repr(bing)
    with pytest.raises(RuntimeError, match="not open"):
        await bing.search(SearchParams("cats"))
    async with bing:
        assert not bing.closed
    assert bing.closed
    await bing.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        await bing.search(SearchParams("cats"))
    with pytest.raises(RuntimeError, match="reopened"):
        async with bing:
            pass
    with pytest.raises(RuntimeError, match="closed"):
        await bing.visual_search(image=b"x")


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"key": ""}, "key"),
        ({"key": "   "}, "key"),
        ({"endpoint": "ftp://api.example.test/"}, "endpoint"),
        ({"endpoint": "http://127.0.0.1:8000/", "allow_http": False}, "endpoint"),
        ({"endpoint": "https://api.example.test/?x=1"}, "endpoint"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
    ],
)
def test_configuration_errors(kwargs: dict[str, Any], option: str) -> None:
    arguments: dict[str, Any] = {"key": KEY, "endpoint": BASE, **kwargs}
    with pytest.raises(ConfigError) as info:
        BingClient(arguments.pop("key"), **arguments)
    assert info.value.option == option


# -- real loopback: the multipart upload and the wire headers ---------------------------------


@dataclass
class Recorded:
    """What the loopback API server saw."""

    requests: list[web.Request] = field(default_factory=list)
    parts: list[dict[str, tuple[str | None, str | None, bytes]]] = field(default_factory=list)
    elsewhere_hits: int = 0


@pytest.fixture
async def loopback() -> AsyncIterator[tuple[str, Recorded]]:
    """A tiny Bing-like server on 127.0.0.1 recording every request."""
    seen = Recorded()

    async def search(request: web.Request) -> web.Response:
        seen.requests.append(request)
        response = web.json_response({"_type": "Images", "value": [], "nextOffset": 0})
        if "X-MSEdge-ClientID" not in request.headers:
            response.headers["X-MSEdge-ClientID"] = "LOOPBACK-ID"
            response.set_cookie("tracking", "1")
        return response

    async def visualsearch(request: web.Request) -> web.Response:
        seen.requests.append(request)
        parts: dict[str, tuple[str | None, str | None, bytes]] = {}
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            assert part.name is not None
            parts[part.name] = (part.filename, part.headers.get("Content-Type"), await part.read())
        seen.parts.append(parts)
        return web.json_response(
            {"_type": "ImageKnowledge", "tags": [], "image": {"imageInsightsToken": "bcid_1"}}
        )

    async def redirect(request: web.Request) -> web.Response:
        seen.requests.append(request)
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        seen.elsewhere_hits += 1
        return web.json_response({"_type": "TrendingImages", "categories": []})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/v7.0/images/search", search)
    app.router.add_post("/v7.0/images/visualsearch", visualsearch)
    app.router.add_get("/v7.0/images/trending", redirect)
    app.router.add_get("/elsewhere", elsewhere)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/")), seen
    finally:
        await server.close()


async def test_wire_headers_client_id_and_no_cookies(loopback: tuple[str, Recorded]) -> None:
    base, seen = loopback
    async with BingClient(KEY, base) as bing:
        await bing.search(SearchParams("cats"))
        await bing.search(SearchParams("cats", offset=150))
    first, second = seen.requests
    assert first.headers["Ocp-Apim-Subscription-Key"] == KEY
    assert first.headers["User-Agent"] == DEFAULT_USER_AGENT
    assert first.headers["Pragma"] == "no-cache"
    assert "X-MSEdge-ClientID" not in first.headers
    assert second.headers["X-MSEdge-ClientID"] == "LOOPBACK-ID"
    assert "Cookie" not in second.headers  # the reference: client ID, so no cookies
    assert second.query["offset"] == "150"


async def test_redirect_is_not_followed_on_the_wire(loopback: tuple[str, Recorded]) -> None:
    base, seen = loopback
    async with BingClient(KEY, base) as bing:
        with pytest.raises(ApiError) as info:
            await bing.trending()
    assert info.value.status == 302
    assert seen.elsewhere_hits == 0


async def test_upload_is_downscaled_and_knowledge_request_is_json(
    loopback: tuple[str, Recorded],
) -> None:
    base, seen = loopback
    big = make_image(2600, 1800, noise=True)
    assert len(big) > MAX_UPLOAD_BYTES
    params = VisualSearchParams(
        crop_area=CropArea(top=0.2, left=0.3, bottom=0.7, right=0.6), site="www.example.com"
    )
    async with BingClient(KEY, base) as bing:
        knowledge = await bing.visual_search(params, image=big)
    assert knowledge.image_insights_token == "bcid_1"
    (request,) = seen.requests
    assert request.content_type == "multipart/form-data"
    assert request.query["mkt"] == "en-US"
    parts = seen.parts[0]
    assert set(parts) == {"knowledgeRequest", "image"}
    assert orjson.loads(parts["knowledgeRequest"][2]) == {
        "imageInfo": {"cropArea": {"top": 0.2, "left": 0.3, "bottom": 0.7, "right": 0.6}},
        "knowledgeRequest": {"filters": {"site": "www.example.com"}},
    }
    filename, content_type, data = parts["image"]
    assert filename
    assert content_type == "image/jpeg"
    assert len(data) <= MAX_UPLOAD_BYTES
    with Image.open(io.BytesIO(data)) as uploaded:
        assert uploaded.format == "JPEG"
        assert max(uploaded.size) <= MAX_UPLOAD_SIDE
        # The aspect ratio survives the downscale.
        assert abs(uploaded.size[0] / uploaded.size[1] - 2600 / 1800) < 0.01


async def test_small_upload_is_sent_unchanged(loopback: tuple[str, Recorded]) -> None:
    base, seen = loopback
    small = make_image(300, 200, "PNG")
    async with BingClient(KEY, base) as bing:
        await bing.visual_search(image=small)
    parts = seen.parts[0]
    assert set(parts) == {"image"}  # nothing to say in a knowledgeRequest part
    assert parts["image"][1:] == ("image/png", small)


async def test_transparent_upload_is_flattened(loopback: tuple[str, Recorded]) -> None:
    base, seen = loopback
    async with BingClient(KEY, base) as bing:
        await bing.visual_search(image=make_image(1800, 1600, "PNG", mode="RGBA"))
    _, content_type, data = seen.parts[0]["image"]
    assert content_type == "image/jpeg"
    with Image.open(io.BytesIO(data)) as uploaded:
        assert uploaded.mode == "RGB"
        assert uploaded.size == (1500, 1333)


async def test_upload_is_prepared_off_the_event_loop(
    loopback: tuple[str, Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = loopback
    threads: list[threading.Thread] = []
    original = client_module.prepare_upload

    def spy(data: bytes) -> tuple[bytes, str]:
        threads.append(threading.current_thread())
        return original(data)

    monkeypatch.setattr(client_module, "prepare_upload", spy)
    async with BingClient(KEY, base) as bing:
        await bing.visual_search(image=make_image(2000, 100))
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()


async def test_bad_upload_is_refused_before_any_request(loopback: tuple[str, Recorded]) -> None:
    base, seen = loopback
    async with BingClient(KEY, base) as bing:
        with pytest.raises(InvalidParameterError) as info:
            await bing.visual_search(image=b"<html>not an image</html>")
        assert info.value.parameter == "image"
        truncated = make_image(400, 300)[:500]
        with pytest.raises(InvalidParameterError):
            await bing.visual_search(image=truncated)
        with pytest.raises(InvalidParameterError, match="imageInfo"):
            await bing.visual_search(VisualSearchParams())
    assert seen.requests == []


def test_prepare_upload_limits() -> None:
    data, content_type = prepare_upload(make_image(1200, 900, noise=True), max_bytes=200_000)
    assert content_type == "image/jpeg"
    assert len(data) <= 200_000
    with Image.open(io.BytesIO(data)) as picture:
        assert max(picture.size) <= 1200
    small_gif = make_image(64, 64, "GIF")
    assert prepare_upload(small_gif) == (small_gif, "image/gif")


async def test_connection_refused_on_loopback() -> None:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("/"))
    await server.close()
    async with BingClient(KEY, base, timeout=5) as bing:
        with pytest.raises(ApiConnectionError) as info:
            await bing.search(SearchParams("cats"))
    assert isinstance(info.value.__cause__, aiohttp.ClientError)
