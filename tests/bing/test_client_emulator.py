"""Contract tests: BingClient against the bingcrawl emulator over real loopback HTTP.

The emulator's request log is the ground truth for what went over the wire; the client's
typed answers and errors are checked against it.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from bingcrawl.bing import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_SIDE,
    BingClient,
    CropArea,
    DetailsParams,
    Image,
    SearchParams,
    TrendingParams,
    VisualSearchParams,
)
from bingcrawl.emulator import CorpusConfig, EmulatorConfig, EmulatorServer
from bingcrawl.errors import (
    ApiError,
    AuthenticationError,
    HttpNotAllowedError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    ServerError,
    ThrottledError,
)
from tests.support.bing import make_image
from tests.support.emulator import StartEmulator

KEY = "emulator-test-key-0123456789"
RESULTS = 120
Session = tuple[EmulatorServer, BingClient, list[tuple[str, int]]]
StartSession = Callable[..., Awaitable[Session]]


@pytest.fixture
async def start_session(start_emulator: StartEmulator) -> AsyncIterator[StartSession]:
    """``await start_session(key=..., clock=..., **EmulatorConfig fields)``: an emulator plus a
    client pointed at it, with the client's on_response log; all closed when the test ends."""
    async with contextlib.AsyncExitStack() as clients:

        async def start(
            *, key: str = KEY, clock: Callable[[], float] = time.monotonic, **config: Any
        ) -> Session:
            options: dict[str, Any] = {
                "qps": None,
                "corpus": CorpusConfig(results_per_query=RESULTS),
            }
            options.update(config)
            seen: list[tuple[str, int]] = []
            server = await start_emulator(EmulatorConfig(**options), clock=clock)
            client = await clients.enter_async_context(
                BingClient(key, server.base_url, on_response=lambda e, s: seen.append((e, s)))
            )
            return server, client, seen

        yield start


@pytest.fixture
async def emulator(start_session: StartSession) -> Session:
    return await start_session()


async def test_search_paging_by_next_offset(emulator: Session) -> None:
    server, client, seen = emulator
    params = SearchParams("red flowers", count=50, mkt="en-US")
    urls: list[str] = []
    requested: list[int] = []
    offset = 0
    while True:
        requested.append(offset)
        page = await client.search(params.with_offset(offset))
        assert page.total_estimated_matches is not None
        assert page.total_estimated_matches >= RESULTS
        if offset == 0:
            # The first page carries the query suggestions, shaped as the reference shows.
            assert page.query_expansions
            assert all(q.text and q.search_link for q in page.query_expansions)
            assert [p.pivot for p in page.pivot_suggestions] == ["red", "flowers"]
            assert page.similar_terms
        assert page.next_offset is not None
        if not page.value:
            assert page.next_offset == offset  # the end: nextOffset stops advancing
            break
        assert offset < page.next_offset <= offset + len(page.value)
        urls += [image.content_url for image in page.value if image.content_url]
        offset = page.next_offset
    # Following nextOffset loses nothing; pages overlap, so some URLs came twice.
    expected = {
        f"{server.base_url}img/{spec.key}" for spec in server.corpus.query_results("red flowers")
    }
    assert set(urls) == expected
    assert len(urls) > len(expected)
    logged = server.state.requests(endpoint="search")
    assert [int(r.params["offset"]) for r in logged] == requested
    assert {r.params["count"] for r in logged} == {"50"}
    assert seen == [("search", 200)] * len(logged)
    # The client ID the emulator issued on the first answer is echoed on every later call.
    assert logged[0].client_id is None
    assert client.client_id is not None
    assert {r.client_id for r in logged[1:]} == {client.client_id}
    assert {r.key for r in logged} == {KEY}


async def test_search_images_are_complete(emulator: Session) -> None:
    server, client, _ = emulator
    page = await client.search(SearchParams("lighthouse", count=20, license="Public"))
    assert page.value
    for image in page.value:
        assert image.content_url is not None
        assert image.content_url.startswith(f"{server.base_url}img/")
        assert image.image_id
        assert image.image_insights_token
        assert image.host_page_url
        assert image.width
        assert image.height
        assert image.content_size
        assert image.encoding_format in ("jpeg", "png", "gif", "webp", "animatedgif")
    (logged,) = server.state.requests(endpoint="search")
    assert logged.params["license"] == "Public"
    assert logged.params["count"] == "20"


async def test_details_by_token_and_by_url(emulator: Session) -> None:
    server, client, seen = emulator
    first: Image = (await client.search(SearchParams("old bridges", count=5))).value[0]
    assert first.image_insights_token is not None
    insights = await client.details(
        DetailsParams(
            insights_token=first.image_insights_token,
            modules=["SimilarImages", "PagesIncluding", "RelatedSearches", "BRQ"],
            q="old bridges",
        )
    )
    assert insights.image_insights_token
    assert insights.visually_similar_images
    assert all(i.content_url for i in insights.visually_similar_images)
    assert insights.pages_including
    assert insights.related_searches
    assert insights.best_representative_query is not None
    assert first.content_url is not None
    by_url = await client.details(DetailsParams(img_url=first.content_url, modules=["All"]))
    assert by_url.visually_similar_images
    (by_token, url_call) = server.state.requests(endpoint="details")
    assert by_token.params["insightsToken"] == first.image_insights_token
    assert url_call.params["imgUrl"] == first.content_url
    assert seen[-2:] == [("details", 200), ("details", 200)]


async def test_trending(emulator: Session) -> None:
    server, client, _ = emulator
    trending = await client.trending(TrendingParams(mkt="en-us"))
    assert trending.categories
    for category in trending.categories:
        assert category.title
        assert category.tiles
        for tile in category.tiles:
            assert tile.query.text
            assert tile.image.content_url is not None
    (logged,) = server.state.requests(endpoint="trending")
    assert logged.params["mkt"] == "en-US"


async def test_visual_search_by_token_and_url(emulator: Session) -> None:
    server, client, _ = emulator
    first = (await client.search(SearchParams("sailing boats", count=5))).value[0]
    assert first.image_insights_token is not None
    by_token = await client.visual_search(
        VisualSearchParams(
            insights_token=first.image_insights_token,
            crop_area=CropArea(top=0.1, left=0.2, bottom=0.7, right=0.5),
        )
    )
    assert by_token.default_tag is not None
    similar = by_token.visually_similar()
    assert similar
    assert all(image.content_url for image in similar)
    assert first.content_url is not None
    by_url = await client.visual_search(VisualSearchParams(image_url=first.content_url))
    assert by_url.visually_similar()
    assert by_url.image_insights_token
    # The site filter narrows similar images to one domain.
    host = urlsplit(similar[0].host_page_url or "").hostname
    assert host
    on_site = await client.visual_search(
        VisualSearchParams(insights_token=first.image_insights_token, site=host)
    )
    hosts = {urlsplit(i.host_page_url or "").hostname for i in on_site.visually_similar()}
    assert hosts == {host}
    assert [r.status for r in server.state.requests(endpoint="visualsearch")] == [200, 200, 200]


async def test_visual_search_upload_passes_the_emulator_limits(emulator: Session) -> None:
    server, client, seen = emulator
    big = make_image(2400, 1700, noise=True)
    assert len(big) > MAX_UPLOAD_BYTES
    knowledge = await client.visual_search(image=big)
    assert knowledge.image_insights_token
    assert knowledge.visually_similar()
    # The emulator enforces <= 1 MB and <= 1,500 px: the downscaled upload was accepted.
    assert server.config.max_upload_side == MAX_UPLOAD_SIDE
    assert seen == [("visualsearch", 200)]
    # The same picture gives the same answer (the emulator keys results on its bytes).
    again = await client.visual_search(image=big)
    assert again.image_insights_token == knowledge.image_insights_token


# -- the error table, produced by the emulator, mapped by the client ---------------------------


async def test_unknown_and_disabled_keys(start_session: StartSession) -> None:
    server, client, seen = await start_session(key="not-a-known-key", keys=frozenset({KEY}))
    with pytest.raises(AuthenticationError) as unknown:
        await client.search(SearchParams("cats"))
    assert [r.outcome for r in server.state.requests()] == ["unauthorized"]
    assert (unknown.value.status, unknown.value.code) == (401, "InvalidAuthorization")
    assert unknown.value.trace_id
    assert seen == [("search", 401)]
    _, client, _ = await start_session(disabled_keys=frozenset({KEY}))
    with pytest.raises(AuthenticationError) as disabled:
        await client.search(SearchParams("cats"))
    assert (disabled.value.status, disabled.value.code, disabled.value.sub_code) == (
        403,
        "InsufficientAuthorization",
        "AuthorizationDisabled",
    )
    assert disabled.value.exit_code == 3


async def test_monthly_quota(start_session: StartSession) -> None:
    _, client, seen = await start_session(monthly_quota=1)
    await client.search(SearchParams("cats"))
    with pytest.raises(QuotaExceededError) as info:
        await client.search(SearchParams("cats"))
    assert (info.value.status, info.value.code) == (403, "RateLimitExceeded")
    assert info.value.exit_code == 4
    assert seen == [("search", 200), ("search", 403)]


@pytest.mark.parametrize("fmt", ["seconds", "date"])
async def test_qps_throttling_with_retry_after(start_session: StartSession, fmt: str) -> None:
    frozen = 1000.0  # the emulator's window never moves: the second call is always refused
    server, client, seen = await start_session(
        qps=1.0, retry_after_format=fmt, clock=lambda: frozen
    )
    await client.search(SearchParams("cats"))
    with pytest.raises(ThrottledError) as info:
        await client.search(SearchParams("cats"))
    assert (info.value.status, info.value.code) == (429, "RateLimitExceeded")
    assert info.value.retry_after is not None
    if fmt == "seconds":
        assert info.value.retry_after == 1.0
    else:
        assert 0.0 <= info.value.retry_after <= 2.0
    assert server.state.statuses(endpoint="search") == Counter({200: 1, 429: 1})
    assert seen == [("search", 200), ("search", 429)]


@pytest.mark.parametrize(
    ("config", "error", "status"),
    [
        ({"http_not_allowed": True}, HttpNotAllowedError, 410),
        ({"p_server_error": 1.0}, ServerError, 500),
        ({"p_empty_200": 1.0}, ThrottledError, 200),
        ({"p_non_json_200": 1.0}, ThrottledError, 200),
    ],
)
async def test_service_faults(
    start_session: StartSession, config: dict[str, Any], error: type[ApiError], status: int
) -> None:
    server, client, seen = await start_session(**config)
    with pytest.raises(error) as info:
        await client.search(SearchParams("cats"))
    assert type(info.value) is error
    assert info.value.status == status
    if error is ThrottledError:
        assert isinstance(info.value, ThrottledError)
        assert info.value.retry_after is None  # a 200 throttle says nothing about when
    assert seen == [("search", status)]
    assert server.state.statuses() == Counter({status: 1})


async def test_url_too_long_is_not_found(start_session: StartSession) -> None:
    _, client, seen = await start_session(max_url_length=200)
    with pytest.raises(NotFoundError) as info:
        await client.search(SearchParams("x" * 300))
    assert info.value.status == 404
    assert seen == [("search", 404)]


async def test_invalid_request_names_the_parameter(emulator: Session) -> None:
    _, client, seen = emulator
    with pytest.raises(InvalidRequestError) as info:
        await client.details(DetailsParams(insights_token="ccid_not*a_token_we_issued"))
    assert info.value.status == 400
    assert info.value.parameter == "insightsToken"
    assert info.value.value == "ccid_not*a_token_we_issued"
    assert seen == [("details", 400)]


async def test_no_key_in_any_error(start_session: StartSession) -> None:
    _, client, _ = await start_session(keys=frozenset({"another"}))
    with pytest.raises(AuthenticationError) as info:
        await client.search(SearchParams("cats"))
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)
    assert KEY not in repr(client)


@pytest.mark.parametrize("q", ["c++ & c# = 100%", "site:example.com cats", "東京 タワー"])
async def test_query_text_reaches_the_server_intact(emulator: Session, q: str) -> None:
    server, client, _ = emulator
    await client.search(SearchParams(q, count=1))
    (logged,) = server.state.requests(endpoint="search")
    assert logged.params["q"] == q
