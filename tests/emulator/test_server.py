"""The emulator's service rules over real loopback HTTP: keys, 410, QPS, quota, faults, log."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from bingcrawl.emulator import CorpusConfig, EmulatorConfig, EmulatorServer
from bingcrawl.errors import ConfigError, parse_retry_after
from tests.support.emulator import StartEmulator
from tests.support.emulator_api import HEADERS, KEY, get_json, search_url


class FakeClock:
    """A clock the test moves by hand (the emulator reads it, nothing sleeps)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def search(
    http: aiohttp.ClientSession,
    server: EmulatorServer,
    headers: dict[str, str] | None = None,
    q: str = "cat",
) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    async with http.get(search_url(server), params={"q": q}, headers=headers or HEADERS) as resp:
        return resp.status, await resp.read(), resp.headers


# -- authentication -------------------------------------------------------------------------


async def test_missing_key_is_401_authorization_missing(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    status, body, headers = await get_json(http, search_url(emulator), {"q": "cat"}, {})
    assert status == 401
    assert body == {
        "_type": "ErrorResponse",
        "errors": [
            {
                "code": "InvalidAuthorization",
                "subCode": "AuthorizationMissing",
                "message": "Authorization is required.",
                "moreDetails": "The Ocp-Apim-Subscription-Key header is missing.",
            }
        ],
    }
    assert headers["BingAPIs-TraceId"]
    (entry,) = emulator.state.requests()
    assert (entry.status, entry.key, entry.outcome) == (401, None, "unauthorized")


async def test_unknown_key_is_401_with_the_reference_body(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await start_emulator(keys=frozenset({KEY}))
    status, body, _ = await get_json(
        http, search_url(server), {"q": "cat"}, {"Ocp-Apim-Subscription-Key": "wrong"}
    )
    assert status == 401
    # Exactly the reference's ErrorResponse example.
    assert body == {
        "_type": "ErrorResponse",
        "errors": [
            {
                "code": "InvalidAuthorization",
                "subCode": "AuthorizationMissing",
                "message": "Authorization is required.",
                "moreDetails": "Subscription key is not recognized.",
            }
        ],
    }
    status, _, _ = await get_json(http, search_url(server), {"q": "cat"})
    assert status == 200


async def test_key_given_twice_is_401_redundancy(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await get_json(
        http, search_url(emulator), {"q": "cat", "subscription-key": KEY}
    )
    assert status == 401
    assert body["errors"][0]["subCode"] == "AuthorizationRedundancy"


async def test_disabled_key_is_403_insufficient_authorization(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await start_emulator(disabled_keys=frozenset({KEY}), http_not_allowed=True)
    status, body, _ = await get_json(http, search_url(server), {"q": "cat"})
    assert status == 403  # the key check comes before the 410 rule
    assert body["errors"] == [
        {
            "code": "InsufficientAuthorization",
            "subCode": "AuthorizationDisabled",
            "message": "Authorization is disabled.",
            "moreDetails": "The subscription key has been disabled.",
        }
    ]


async def test_http_not_allowed_is_410(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await start_emulator(http_not_allowed=True)
    for endpoint in ("search?q=x", "trending", "details?imgUrl=http://a.example/x.jpg"):
        status, body, _ = await get_json(http, server.base_url + "v7.0/images/" + endpoint)
        assert status == 410
        assert body["errors"][0]["code"] == "InvalidRequest"
        assert body["errors"][0]["subCode"] == "HttpNotAllowed"


# -- QPS window -----------------------------------------------------------------------------


async def test_qps_window_refuses_the_extra_request_and_frees_a_slot_on_time(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock(1000.0)
    server = await start_emulator(qps=3.0, clock=clock)
    for t in (1000.0, 1000.1, 1000.2):
        clock.now = t
        assert (await search(http, server))[0] == 200
    clock.now = 1000.5
    status, body, headers = await search(http, server)
    assert status == 429
    assert headers["Retry-After"] == "1"  # 0.5 s until the first slot frees, rounded up
    (error,) = orjson_errors(body)
    assert error["code"] == "RateLimitExceeded"
    assert "subCode" not in error
    clock.now = 1000.99
    assert (await search(http, server))[0] == 429  # the window is a full second
    clock.now = 1001.0
    assert (await search(http, server))[0] == 200  # 1000.0 left the window
    clock.now = 1001.05
    assert (await search(http, server))[0] == 429
    clock.now = 1001.1
    assert (await search(http, server))[0] == 200
    assert server.state.throttled[KEY] == 3
    assert server.state.calls[KEY] == 5
    # Arrivals (1000.05, 1001.05] number six; the admitted ones never exceed three a second.
    assert server.state.max_in_window(1.0) == 6
    admitted = [r.time for r in server.state.requests(status=200)]
    assert admitted == [1000.0, 1000.1, 1000.2, 1001.0, 1001.1]


async def test_qps_is_per_key_and_refusals_do_not_take_slots(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock(50.0)
    server = await start_emulator(qps=1.0, clock=clock)
    other = {"Ocp-Apim-Subscription-Key": "another-key"}
    assert (await search(http, server))[0] == 200
    assert (await search(http, server, other))[0] == 200
    for t in (50.2, 50.4, 50.6, 50.8):
        clock.now = t
        assert (await search(http, server))[0] == 429
    clock.now = 51.0
    assert (await search(http, server))[0] == 200


async def test_fractional_qps_widens_the_window(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock(0.0)
    server = await start_emulator(qps=0.5, clock=clock)
    assert (await search(http, server))[0] == 200
    clock.now = 0.5
    status, _, headers = await search(http, server)
    assert (status, headers["Retry-After"]) == (429, "2")  # one request per 2 s; 1.5 s left
    clock.now = 2.0
    assert (await search(http, server))[0] == 200


async def test_retry_after_as_http_date(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    clock, wall = FakeClock(10.0), FakeClock(1_700_000_000.25)
    server = await start_emulator(qps=1.0, retry_after_format="date", clock=clock, wall_clock=wall)
    assert (await search(http, server))[0] == 200
    clock.now, wall.now = 10.3, 1_700_000_000.55
    status, _, headers = await search(http, server)
    assert status == 429
    expected = datetime.fromtimestamp(math.ceil(1_700_000_000.55 + 1), UTC)
    assert headers["Retry-After"] == format_datetime(expected, usegmt=True)
    seconds = parse_retry_after(headers["Retry-After"], now=datetime.fromtimestamp(wall.now, UTC))
    assert seconds is not None
    assert seconds >= 0.7  # never earlier than the slot frees (10.3 + 0.7 = 11.0)


async def test_qps_window_against_the_real_clock(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await start_emulator(qps=2.0)
    for _ in range(4):
        await search(http, server)
    log = server.state.requests()
    admitted: list[float] = []
    for entry in log:
        # Judge each request by the emulator's own arrival timestamps.
        recent = [t for t in admitted if t > entry.time - 1.0]
        assert entry.status == (429 if len(recent) >= 2 else 200)
        if entry.status == 200:
            admitted.append(entry.time)
    if log[2].time - log[0].time < 1.0:
        assert log[2].status == 429  # the 3rd request inside one second is refused


# -- monthly quota --------------------------------------------------------------------------


async def test_monthly_quota_is_403_rate_limit_exceeded(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock(0.0)
    server = await start_emulator(monthly_quota=2, qps=1.0, clock=clock)
    assert (await search(http, server))[0] == 200
    assert (await search(http, server))[0] == 429  # a throttled call is not billed
    clock.now = 1.0
    assert (await search(http, server))[0] == 200
    clock.now = 2.0
    status, body, headers = await search(http, server)
    assert status == 403
    (error,) = orjson_errors(body)
    assert error["code"] == "RateLimitExceeded"
    assert int(headers["Retry-After"]) >= 1
    other = {"Ocp-Apim-Subscription-Key": "someone-else"}
    assert (await search(http, server, other))[0] == 200
    assert [r.outcome for r in server.state.requests(key=KEY)] == ["ok", "throttled", "ok", "quota"]


# -- URL length and injected faults ---------------------------------------------------------


async def test_url_longer_than_2048_is_404(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    prefix = search_url(emulator) + "?q="
    ok_url = prefix + "a" * (2048 - len(prefix))
    async with http.get(ok_url, headers=HEADERS) as resp:
        assert resp.status == 200
    async with http.get(ok_url + "a", headers=HEADERS) as resp:
        assert resp.status == 404
        assert resp.content_type == "text/html"
    # Far beyond aiohttp's default request-line limit: still the reference's 404, not a 400.
    async with http.get(prefix + "b" * 10_000, headers=HEADERS) as resp:
        assert resp.status == 404
    assert [r.outcome for r in emulator.state.requests()] == ["ok", "url_too_long", "url_too_long"]


async def test_server_error_probability_one(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await start_emulator(p_server_error=1.0)
    status, body, _ = await get_json(http, search_url(server), {"q": "x"})
    assert status == 500
    assert body == {
        "_type": "ErrorResponse",
        "errors": [
            {
                "code": "ServerError",
                "subCode": "UnexpectedError",
                "message": "An unexpected error has occurred.",
            }
        ],
    }


async def test_empty_200_and_non_json_200(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    empty = await start_emulator(p_empty_200=1.0)
    status, body, _ = await search(http, empty)
    assert (status, body) == (200, b"")
    html = await start_emulator(p_non_json_200=1.0)
    status, body, headers = await search(http, html)
    assert status == 200
    assert body.startswith(b"<!DOCTYPE html>")
    assert headers["Content-Type"].startswith("text/html")


async def test_fault_draws_are_deterministic_per_seed(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    probs = {"p_server_error": 0.25, "p_empty_200": 0.25, "p_non_json_200": 0.2}
    runs = []
    for seed in (7, 7, 8):
        server = await start_emulator(seed=seed, **probs)
        for _ in range(24):
            await search(http, server)
        runs.append([r.outcome for r in server.state.requests()])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert {"ok", "server_error", "empty_200", "non_json_200"} <= set(runs[0])


# -- request log and routing ----------------------------------------------------------------


async def test_request_log_records_every_api_request_but_not_images(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    await get_json(http, search_url(emulator), {"q": "owl", "count": "3"})
    spec = next(s for s in emulator.corpus.query_results("owl") if s.fault is None)
    async with http.get(emulator.base_url + "img/" + spec.key) as resp:
        assert resp.status == 200
    await get_json(http, emulator.base_url + "v7.0/images/trending", {}, {})
    log = emulator.state.requests()
    assert [(r.endpoint, r.method, r.status) for r in log] == [
        ("search", "GET", 200),
        ("trending", "GET", 401),
    ]
    assert log[0].params == {"q": "owl", "count": "3"}
    assert log[0].key == KEY
    assert log[0].time <= log[1].time
    assert log[0].wall_time > 1e9
    assert emulator.image_host.requests[spec.key] == 1
    assert emulator.state.statuses() == {200: 1, 401: 1}


async def test_unknown_endpoint_and_wrong_method(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(emulator.base_url + "v7.0/images/nothing", headers=HEADERS) as resp:
        assert resp.status == 404
    async with http.get(emulator.base_url + "v7.0/images/visualsearch", headers=HEADERS) as resp:
        assert resp.status == 405
    assert [r.status for r in emulator.state.requests()] == [404, 405]


async def test_older_bing_path_prefix_is_served(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await get_json(
        http, emulator.base_url + "bing/v7.0/images/search", {"q": "x"}
    )
    assert status == 200
    assert body["queryExpansions"][0]["searchLink"].startswith(
        emulator.base_url + "bing/v7.0/images/search?"
    )


async def test_image_base_url_overrides_content_urls(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await start_emulator(image_base_url="http://images.test:9/")
    _, body, _ = await get_json(http, search_url(server), {"q": "x", "count": "2"})
    assert all(im["contentUrl"].startswith("http://images.test:9/img/") for im in body["value"])


async def test_thumbnail_route_serves_a_picture(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    _, body, _ = await get_json(http, search_url(emulator), {"q": "x", "count": "1"})
    async with http.get(body["value"][0]["thumbnailUrl"]) as resp:
        assert resp.status == 200
        assert (await resp.read())[:3] == b"\xff\xd8\xff"
    async with http.get(body["queryExpansions"][0]["thumbnail"]["thumbnailUrl"]) as resp:
        assert resp.status == 200
    assert len(emulator.state.requests()) == 1  # thumbnails are not API calls
    assert not emulator.image_host.requests  # nor image downloads


async def test_server_lifecycle(http: aiohttp.ClientSession) -> None:
    server = EmulatorServer(EmulatorConfig(corpus=CorpusConfig(results_per_query=10), qps=None))
    with pytest.raises(RuntimeError):
        _ = server.base_url
    async with server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/"
        assert (await search(http, server))[0] == 200
        with pytest.raises(RuntimeError):
            await server.start()
    await server.close()  # closing twice is harmless
    with pytest.raises(aiohttp.ClientConnectionError):
        await search(http, server)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"qps": 0}, "qps"),
        ({"qps": -1.0}, "qps"),
        ({"p_server_error": 1.5}, "p_server_error"),
        ({"p_server_error": 0.6, "p_empty_200": 0.6}, "p_server_error"),
        ({"retry_after_format": "minutes"}, "retry_after_format"),
        ({"monthly_quota": -1}, "monthly_quota"),
        ({"api_latency": -0.1}, "api_latency"),
        ({"keys": frozenset()}, "keys"),
        ({"keys": frozenset({" "})}, "keys"),
        ({"image_base_url": "images.test"}, "image_base_url"),
        ({"page_overlap": -1}, "page_overlap"),
    ],
)
def test_config_validation_names_the_option(kwargs: dict[str, object], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        EmulatorConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.option == option


def orjson_errors(body: bytes) -> list[dict[str, object]]:
    parsed = orjson.loads(body)
    assert parsed["_type"] == "ErrorResponse"
    return list(parsed["errors"])
