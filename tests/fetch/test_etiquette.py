"""Publishers' opt-outs: the header rules, robots.txt and tdmrep.json per origin, per-host
rates and holds; parsing on its own, then the downloader against the emulator's image host
over loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from bingcrawl.emulator.corpus import Corpus, CorpusConfig
from bingcrawl.emulator.imagehost import ImageHost, ImageHostConfig
from bingcrawl.errors import ConfigError
from bingcrawl.fetch.download import DEFAULT_USER_AGENT, DownloadConfig, Downloader
from bingcrawl.fetch.etiquette import (
    MAX_TDM_RULES,
    SIGNALS,
    Etiquette,
    OriginPolicies,
    OriginPolicy,
    PathPattern,
    content_signal_opt_out,
    content_usage_opt_out,
    error_class,
    header_opt_out,
    robots_group_lines,
    signal_of,
    tdm_header_opt_out,
    tdmrep_rules,
    x_robots_opt_out,
)
from bingcrawl.fetch.identity import user_agent
from bingcrawl.fetch.netpolicy import NetworkPolicy
from bingcrawl.records import Candidate, DownloadFailure, Fetched

# ------------------------------------------------------------------------------ the rules


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["noai"], "X-Robots-Tag: noai"),
        (["noindex, nofollow"], "X-Robots-Tag: noindex"),
        (["NoImageIndex"], "X-Robots-Tag: NoImageIndex"),  # quoted as written
        (["none"], "X-Robots-Tag: none"),
        (["noimageai"], "X-Robots-Tag: noimageai"),
        (["all"], None),
        (["nofollow", "noarchive"], None),
        (["googlebot: noindex"], None),  # another agent's rule
        (["bingcrawl: noimageai"], "X-Robots-Tag: bingcrawl: noimageai"),
        (["BingCrawl: NOAI"], "X-Robots-Tag: BingCrawl: NOAI"),
        (["bingcrawl: nofollow, noai"], "X-Robots-Tag: bingcrawl: noai"),  # the scope goes on
        (["otherbot: noindex, bingcrawl: noai"], "X-Robots-Tag: bingcrawl: noai"),
        (["bingcrawl: nofollow", "otherbot: noai"], None),  # a scope ends with its line
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], None),  # a rule, not an agent
        (["max-image-preview:none"], None),
        ([], None),
    ],
)
def test_x_robots_tag(values: list[str], expected: str | None) -> None:
    assert x_robots_opt_out(values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["train-ai=n"], "Content-Usage: train-ai=n"),
        (["tdm=n"], "Content-Usage: tdm=n"),
        (["tdm=n, train-ai=y"], None),  # the more specific preference wins
        (["train-ai=y, train-genai=n"], "Content-Usage: train-genai=n"),
        (['search=y, train-ai="n";q=1'], "Content-Usage: train-ai=n"),
        (["train-ai=y"], None),
        (["search=n"], None),
    ],
)
def test_content_usage(values: list[str], expected: str | None) -> None:
    assert content_usage_opt_out(values) == expected


def test_content_signal_and_the_tdm_header() -> None:
    assert content_signal_opt_out(["search=yes, ai-train=no"]) == "Content-Signal: ai-train=no"
    assert content_signal_opt_out(["ai-train=yes", "ai-input=no"]) is None
    assert tdm_header_opt_out([" 1 "]) == "tdm-reservation: 1"
    assert tdm_header_opt_out(["0"]) is None


def test_only_honoured_signals_exclude() -> None:
    headers = CIMultiDict([("Content-Signal", "ai-train=no"), ("X-Robots-Tag", "noai")])
    assert header_opt_out(headers, Etiquette()) == ("x-robots-tag", "X-Robots-Tag: noai")
    without_xrt = Etiquette.from_options(ignore=["x-robots-tag"])
    assert header_opt_out(headers, without_xrt) == (
        "content-signal",
        "Content-Signal: ai-train=no",
    )
    assert header_opt_out(headers, Etiquette.from_options(respect=["none"])) is None


def test_error_classes_name_their_signal() -> None:
    assert error_class("robots.txt") == "opted_out_robots_txt"
    assert error_class("x-robots-tag") == "opted_out_x_robots_tag"
    assert {signal_of(error_class(s)) for s in SIGNALS} == set(SIGNALS)
    assert signal_of("http_404") is None


def test_signal_options() -> None:
    assert Etiquette.from_options().respect == frozenset(SIGNALS)
    assert Etiquette.from_options(ignore=["robots.txt", "tdmrep"]).respect == frozenset(
        {"x-robots-tag", "content-usage", "content-signal"}
    )
    assert Etiquette.from_options(respect=["x-robots-tag,TDMREP"]).respect == frozenset(
        {"x-robots-tag", "tdmrep"}
    )
    assert not Etiquette.from_options(ignore=["all"]).respect
    assert not Etiquette.from_options(respect=["none"]).needs_origin
    with pytest.raises(ConfigError, match="unknown signal 'robots'") as err:
        Etiquette.from_options(ignore=["robots"])
    assert err.value.option == "--ignore"
    # the names status and stats.json print, and error classes, are understood too
    assert Etiquette.from_options(ignore=["robots_txt", "OPTED_OUT_X_ROBOTS_TAG"]).ignored == (
        "robots.txt", "x-robots-tag",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="is also given to --respect") as err:
        Etiquette.from_options(respect=["robots.txt,tdmrep"], ignore=["robots_txt"])
    assert err.value.option == "--ignore"
    with pytest.raises(ConfigError, match="leave --ignore out") as err:
        Etiquette.from_options(ignore=["none"])
    with pytest.raises(ConfigError) as err:
        Etiquette.from_options(respect=["noai"])
    assert err.value.option == "--respect"


def test_the_user_agent_says_who_is_crawling() -> None:
    assert DEFAULT_USER_AGENT.startswith("bingcrawl/")
    assert DEFAULT_USER_AGENT.endswith("(+https://pypi.org/project/bingcrawl/)")
    assert user_agent("mailto:me@example.org").endswith("(+mailto:me@example.org)")
    assert "Mozilla" not in DEFAULT_USER_AGENT


def test_tdmrep_rules_first_match_decides() -> None:
    rules = tdmrep_rules(
        b'[{"location": "/img/free/*", "tdm-reservation": 0},'
        b' {"location": "/img/*.jpg$", "tdm-reservation": 1, "tdm-policy": "https://p.example/"},'
        b' {"location": 7}, "junk"]'
    )
    assert [r.location for r in rules] == ["/img/free/*", "/img/*.jpg$"]
    policy = OriginPolicy(expires=1.0, tdm_rules=rules)
    etiquette = Etiquette()
    base = URL("http://h.example")
    assert policy.refusal(base / "img/free/a.jpg", etiquette) is None
    refused = policy.refusal(base / "img/b.jpg", etiquette)
    assert refused is not None
    assert refused[0] == "opted_out_tdmrep"
    assert "https://p.example/" in refused[1]
    assert policy.refusal(base / "img/b.png", etiquette) is None  # "$": the path ends there
    assert tdmrep_rules(b"{not json") == []
    assert tdmrep_rules(b'{"location": "/"}') == []


# ---------------------------------------------------------------------- origins, cached


@dataclass
class FakeOrigin:
    """Answers robots.txt / tdmrep.json fetches from a script, counting them."""

    robots: tuple[int, bytes] | None = (404, b"")
    tdmrep: tuple[int, bytes] | None = (404, b"")
    asked: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def __call__(self, url: URL) -> tuple[int, bytes] | None:
        self.asked.append(str(url))
        if self.gate is not None:
            await self.gate.wait()
        return self.robots if url.path == "/robots.txt" else self.tdmrep


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


async def test_an_origin_is_asked_once_however_many_ask_at_once() -> None:
    origin = FakeOrigin(robots=(200, b"User-agent: *\nDisallow: /private/\n"), gate=asyncio.Event())
    policies = OriginPolicies(Etiquette(), origin)
    urls = [URL(f"http://h.example/img/{i}.jpg") for i in range(20)]
    waiting = [asyncio.ensure_future(policies.policy(u)) for u in urls]
    await asyncio.sleep(0)
    origin.gate.set()  # type: ignore[union-attr]
    found = await asyncio.gather(*waiting)
    assert len({id(p) for p in found}) == 1
    assert sorted(origin.asked) == [
        "http://h.example/.well-known/tdmrep.json",
        "http://h.example/robots.txt",
    ]
    assert policies.fetched == {"robots.txt": 1, "tdmrep.json": 1}
    assert found[0].refusal(URL("http://h.example/private/x.jpg"), Etiquette()) == (
        "opted_out_robots_txt",
        "robots.txt disallows /private/x.jpg for bingcrawl",
    )
    await policies.policy(URL("http://h.example:8080/a.jpg"))  # another port: another origin
    assert len(origin.asked) == 4


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ((404, b""), None),  # no robots.txt: no rules
        ((403, b""), None),  # 4xx: unavailable, everything allowed (RFC 9309)
        (None, None),  # unreachable: allowed (see the module docstring)
        ((503, b""), "robots_unavailable"),  # 5xx: held back for a while, not an opt-out
        ((429, b""), "robots_unavailable"),
        ((200, b"User-agent: bingcrawl\nDisallow: /\n"), "opted_out_robots_txt"),
        ((200, b"User-agent: otherbot\nDisallow: /\n"), None),
        ((200, b"\xff\xfe garbage \x00\n"), None),
    ],
)
async def test_what_a_robots_answer_means(
    answer: tuple[int, bytes] | None, refused: str | None
) -> None:
    clock = Clock()
    origin = FakeOrigin(robots=answer)
    etiquette = Etiquette(retry_after=600.0, ttl=86_400.0)
    policies = OriginPolicies(etiquette, origin, clock=clock)
    url = URL("http://h.example/img/a.jpg")
    decision = (await policies.policy(url)).refusal(url, etiquette)
    assert (decision[0] if decision else None) == refused
    # a server error or no answer is asked again after retry_after; rules last the ttl
    clock.now += 601.0
    await policies.policy(url)
    retried = answer is None or answer[0] >= 429
    assert origin.asked.count("http://h.example/robots.txt") == (2 if retried else 1)
    clock.now += 86_400.0
    await policies.policy(url)
    assert origin.asked.count("http://h.example/robots.txt") == (3 if retried else 2)


async def test_crawl_delay_and_request_rate_become_the_hosts_interval() -> None:
    robots = b"User-agent: *\nCrawl-delay: 2\n\nUser-agent: bingcrawl\nRequest-rate: 1/5\n"
    policies = OriginPolicies(Etiquette(max_delay=60.0), FakeOrigin(robots=(200, robots)))
    assert (await policies.policy(URL("http://a.example/x"))).delay == 5.0  # our group only
    greedy = OriginPolicies(
        Etiquette(max_delay=30.0), FakeOrigin(robots=(200, b"User-agent: *\nCrawl-delay: 9999\n"))
    )
    assert (await greedy.policy(URL("http://b.example/x"))).delay == 30.0


async def test_the_origins_kept_are_bounded() -> None:
    origin = FakeOrigin()
    policies = OriginPolicies(Etiquette(respect=frozenset({"robots.txt"})), origin, max_origins=2)
    for host in ("a", "b", "a", "c", "a", "b"):
        await policies.policy(URL(f"http://{host}.example/x.jpg"))
    assert len(policies) == 2
    # a stays recently used; b was evicted by c, so it is asked again at the end
    assert [URL(u).host for u in origin.asked] == ["a.example", "b.example", "c.example",
                                                   "b.example"]  # fmt: skip


# ------------------------------------------------------------- the downloader, over loopback


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(CorpusConfig(results_per_query=40, fault_rate=0.0, exact_dup_rate=0.0,
                               near_dup_rate=0.0, cross_query_rate=0.0))  # fmt: skip


Serve = Callable[..., Awaitable[tuple[str, ImageHost]]]


@pytest.fixture
async def serve(corpus: Corpus) -> AsyncIterator[Serve]:
    """``await serve(**ImageHostConfig fields)`` -> (port, host) on loopback."""
    servers: list[TestServer] = []

    async def start(**config: Any) -> tuple[str, ImageHost]:
        host = ImageHost(corpus, ImageHostConfig(**config))
        app = web.Application()
        app.add_routes(host.routes())
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.port), host

    yield start
    for server in servers:
        await server.close()


def _keys(corpus: Corpus, n: int) -> list[str]:
    return [spec.key for spec in corpus.query_results("etiquette")[:n]]


@dataclass
class GatedSleep:
    """The downloader's sleep: each call advances the holds' clock once released."""

    clock: Clock
    released: asyncio.Event = field(default_factory=asyncio.Event)
    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.released.wait()
        self.clock.now += delay


def _downloader(etiquette: Etiquette | None = None, **kw: Any) -> Downloader:
    config = DownloadConfig(
        policy=NetworkPolicy.from_cidrs(["127.0.0.1/32"]),
        retries=kw.pop("retries", 0),
        backoff_base=0.01,
        backoff_max=5.0,
        etiquette=etiquette or Etiquette(),
    )
    return Downloader(config, rng=random.Random(1), **kw)


def _candidate(url: str) -> Candidate:
    return Candidate(url=url, label="x", query="x")


async def test_each_header_signal_excludes_its_image(corpus: Corpus, serve: Serve) -> None:
    port, host = await serve()
    keys = _keys(corpus, 6)
    marked = {
        keys[0]: ("x-robots-tag", "noimageai", "X-Robots-Tag: noimageai"),
        keys[1]: ("x-robots-tag", "bingcrawl: noai", "X-Robots-Tag: bingcrawl: noai"),
        keys[2]: ("tdm-reservation", "1", "tdm-reservation: 1"),
        keys[3]: ("content-usage", "train-ai=n", "Content-Usage: train-ai=n"),
        keys[4]: ("content-signal", "ai-train=no", "Content-Signal: ai-train=no"),
    }
    signal_of_header = {"tdm-reservation": "tdmrep"}
    async with _downloader() as downloader:
        for key, (header, value, detail) in marked.items():
            url = f"http://127.0.0.1:{port}/img/{key}?{header}={quote(value)}"
            result = await downloader.fetch(_candidate(url))
            assert isinstance(result, DownloadFailure), key
            assert result.error_class == error_class(signal_of_header.get(header, header))
            assert result.detail == detail
            assert result.attempts == 1  # final: never retried
        other = f"http://127.0.0.1:{port}/img/{keys[5]}?x-robots-tag=googlebot%3A%20noai"
        assert isinstance(await downloader.fetch(_candidate(other)), Fetched)
    async with _downloader(Etiquette.from_options(respect=["none"])) as careless:
        key = keys[0]
        url = f"http://127.0.0.1:{port}/img/{key}?x-robots-tag=noimageai"
        assert isinstance(await careless.fetch(_candidate(url)), Fetched)
    assert host.origin_requests[f"127.0.0.1:{port}/robots.txt"] == 1  # the careless one: none


async def test_robots_and_tdmrep_are_fetched_once_per_origin_and_honoured(
    corpus: Corpus, serve: Serve
) -> None:
    keys = _keys(corpus, 12)
    port, host = await serve(
        # our group replaces the "*" one: everything is allowed to us but one image
        robots_txt="User-agent: *\nDisallow: /\n\n"
        f"User-agent: bingcrawl\nDisallow: /img/{keys[1]}\nCrawl-delay: 0.01\n",
        tdmrep_json=f'[{{"location": "/img/{keys[2]}", "tdm-reservation": 1}}]',
    )
    async with _downloader() as downloader:
        names = ("127.0.0.1", "localhost")  # two hosts: two origins
        urls = [f"http://{name}:{port}/img/{k}" for k in keys for name in names]
        results = await asyncio.gather(*(downloader.fetch(_candidate(u)) for u in urls))
        assert downloader.host_interval("127.0.0.1") == pytest.approx(0.01)
    by_url = dict(zip(urls, results, strict=True))
    for name in ("127.0.0.1", "localhost"):
        robots = by_url[f"http://{name}:{port}/img/{keys[1]}"]
        assert isinstance(robots, DownloadFailure)
        assert robots.error_class == "opted_out_robots_txt"
        tdm = by_url[f"http://{name}:{port}/img/{keys[2]}"]
        assert isinstance(tdm, DownloadFailure)
        assert tdm.error_class == "opted_out_tdmrep"
        assert all(isinstance(by_url[f"http://{name}:{port}/img/{k}"], Fetched) for k in keys[3:])
        # one request of each file per origin, however many images and at once
        assert host.origin_requests[f"{name}:{port}/robots.txt"] == 1
        assert host.origin_requests[f"{name}:{port}/.well-known/tdmrep.json"] == 1
    assert host.requests[keys[1]] == 0
    assert host.requests[keys[2]] == 0
    assert all(r.attempts == 0 for r in results if isinstance(r, DownloadFailure))  # none sent
    assert downloader.origins is not None
    assert downloader.origins.fetched == {"robots.txt": 2, "tdmrep.json": 2}


async def test_a_robots_server_error_holds_the_origin_back(corpus: Corpus, serve: Serve) -> None:
    port, host = await serve(robots_txt="User-agent: *\nAllow: /\n", robots_status=503)
    key = _keys(corpus, 1)[0]
    async with _downloader() as downloader:
        result = await downloader.fetch(_candidate(f"http://127.0.0.1:{port}/img/{key}"))
    assert isinstance(result, DownloadFailure)
    assert result.error_class == "robots_unavailable"  # an outage, not an opt-out
    assert "HTTP 503" in result.detail
    assert host.requests[key] == 0


async def test_policy_files_obey_the_network_policy(serve: Serve) -> None:
    async with _downloader() as downloader:
        # 10.0.0.1 is not allowed: refused before any connection, so "unreachable"
        assert await downloader._fetch_policy_file(URL("http://10.0.0.1/robots.txt")) is None


async def test_a_host_that_answers_503_is_held_back_without_slowing_the_others(
    corpus: Corpus, serve: Serve
) -> None:
    port, host = await serve(transient_failures=1, retry_after=2.0)
    busy_key = corpus.fault_url_keys()["transient_503"]
    keys = _keys(corpus, 4)
    clock = Clock()
    sleep = GatedSleep(clock)
    downloader = _downloader(retries=2, sleep=sleep, clock=clock)  # holds: the sleeps' time
    async with downloader:
        first = asyncio.ensure_future(
            downloader.fetch(_candidate(f"http://localhost:{port}/img/{busy_key}"))
        )
        while not sleep.delays:  # its 503 came back: it waits its backoff
            await asyncio.sleep(0)
        assert sleep.delays[0] >= 2.0  # at least the Retry-After
        assert downloader.holds.remaining("localhost") > 0
        second = asyncio.ensure_future(
            downloader.fetch(_candidate(f"http://localhost:{port}/img/{keys[0]}"))
        )
        while len(sleep.delays) < 2:  # the same host: held back before any request
            await asyncio.sleep(0)
        others = await asyncio.gather(
            *(downloader.fetch(_candidate(f"http://127.0.0.1:{port}/img/{k}")) for k in keys[1:])
        )
        assert all(isinstance(r, Fetched) for r in others)  # another host: not slowed
        assert host.requests[keys[0]] == 0
        sleep.released.set()
        assert isinstance(await first, Fetched)
        assert isinstance(await second, Fetched)
    assert host.requests[busy_key] == 2
    assert host.requests[keys[0]] == 1
    assert downloader.holds.held == {"localhost": 1}


# ------------------------------------------------------------------ options and the warning


def test_options_reach_the_downloader(tmp_path: Any) -> None:
    import bingcrawl
    from bingcrawl.engine.crawler import contact_warning

    config = bingcrawl.make_config(
        ["cats"], tmp_path, key="k", ignore=["robots.txt"], contact="https://me.example/bot",
        per_host_rate=2.0,
    )  # fmt: skip
    assert config.download.etiquette.respect == frozenset(SIGNALS) - {"robots.txt"}
    assert config.download.user_agent.endswith("(+https://me.example/bot)")
    assert config.download.host_rate == 2.0
    assert contact_warning(config) is None
    plain = bingcrawl.make_config(["cats"], tmp_path, key="k", host_rate=1.0)  # the old name
    assert plain.download.host_rate == 1.0
    assert plain.download.etiquette.respect == frozenset(SIGNALS)
    warning = contact_warning(plain)  # Bing's real endpoint, and no contact
    assert warning is not None
    assert "--contact" in warning
    local = bingcrawl.make_config(["cats"], tmp_path, key="k", endpoint="http://127.0.0.1:9/")
    assert contact_warning(local) is None  # the emulator
    own = bingcrawl.make_config(["cats"], tmp_path, key="k", user_agent="MyLab-crawler/2")
    assert own.download.user_agent == "MyLab-crawler/2"
    assert contact_warning(own) is None
    with pytest.raises(ConfigError) as err:
        bingcrawl.make_config(["cats"], tmp_path, key="k", respect="x-robots-tag,noai")
    assert err.value.option == "--respect"
    for bad in ("me (the boss)", "example.org", "", "https://"):
        with pytest.raises(ConfigError, match=r"URL .* or an e-mail address") as err:
            bingcrawl.make_config(["cats"], tmp_path, key="k", contact=bad)
        assert err.value.option == "--contact"
    for good in ("me@example.org", "mailto:me@example.org", "https://lab.example/bot"):
        config = bingcrawl.make_config(["cats"], tmp_path, key="k", contact=good)
        assert config.download.user_agent.endswith(f"(+{good})")
    emulated = bingcrawl.make_config(
        ["cats"], tmp_path, urls=[], key="k", allow_network=["127.0.0.1/32"]
    )
    assert contact_warning(emulated) is None  # may fetch from loopback: the emulator


@pytest.mark.parametrize(
    ("robots", "expected"),
    [
        ("User-agent: *\nContent-Signal: search=yes, ai-train=no\nAllow: /\n",
         "search=yes, ai-train=no"),
        ("User-agent: *\nContent-Signal: ai-train=no\n\nUser-agent: bingcrawl\nAllow: /\n",
         None),  # our own group says nothing: the "*" group does not apply to us
        ("User-agent: otherbot\nUser-agent: BingCrawl\nContent-Signal: ai-train=no # us\n",
         "ai-train=no"),
        ("User-agent: *\nDisallow: /x\n", None),
    ],
)  # fmt: skip
def test_content_signal_in_robots_txt(robots: str, expected: str | None) -> None:
    assert robots_group_lines(robots, "content-signal") == expected


@pytest.mark.parametrize(
    ("line", "signal", "detail"),
    [
        ("Content-Signal: search=yes, ai-train=no", "content-signal",
         "robots.txt Content-Signal: ai-train=no"),
        ("Content-Usage: train-ai=n", "content-usage", "robots.txt Content-Usage: train-ai=n"),
    ],
)  # fmt: skip
async def test_opt_out_lines_of_robots_txt_exclude_the_origin(
    line: str, signal: str, detail: str
) -> None:
    robots = f"User-agent: *\n{line}\nAllow: /\n".encode()
    policies = OriginPolicies(Etiquette(), FakeOrigin(robots=(200, robots)))
    url = URL("http://cf.example/img/a.jpg")
    policy = await policies.policy(url)
    assert policy.refusal(url, Etiquette()) == (error_class(signal), detail)
    assert policy.refusal(url, Etiquette.from_options(ignore=[signal])) is None


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/img/", "/img/a.jpg", True),
        ("/img/", "/im", False),
        ("/img/*.jpg", "/img/x/y.jpg", True),
        ("/img/*.jpg$", "/img/x/y.jpg?z", False),
        ("/img/*.jpg$", "/img/.jpg", True),
        ("/a*b*c$", "/abc", True),
        ("/a*b*c$", "/acb", False),
        ("/a*bc$", "/abc", True),
        ("/a*bb$", "/ab", False),  # the last piece may not overlap an earlier one
        ("*", "/anything", True),
        ("/exact$", "/exact", True),
        ("/exact$", "/exactly", False),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    assert PathPattern.parse(pattern).matches(path) is expected


def test_hostile_tdmrep_files_cost_nothing_but_their_rules() -> None:
    assert tdmrep_rules(b"[" * 100_000) == []  # nests past json's recursion: no rules
    many = b"[" + b",".join(b'{"location": "/x%d", "tdm-reservation": 1}' % i
                            for i in range(5000)) + b"]"  # fmt: skip
    assert len(tdmrep_rules(many)) == MAX_TDM_RULES
    # a wildcard pattern that made a regular expression backtrack for a minute: linear now
    greedy = PathPattern.parse("/" + "*a" * 30 + "*X")
    assert not greedy.matches("/" + "a" * 5000)


async def test_a_file_that_cannot_be_had_again_keeps_the_known_rules() -> None:
    clock = Clock()
    etiquette = Etiquette(retry_after=600.0, ttl=3600.0)
    origin = FakeOrigin(
        robots=(200, b"User-agent: *\nDisallow: /private/\n"),
        tdmrep=(200, b'[{"location": "/img/*", "tdm-reservation": 1}]'),
    )
    policies = OriginPolicies(etiquette, origin, clock=clock)
    private, image = URL("http://h.example/private/a.jpg"), URL("http://h.example/img/b.jpg")
    first = await policies.policy(private)
    assert first.refusal(private, etiquette) is not None
    origin.robots, origin.tdmrep = (503, b""), None  # the origin fails when asked again
    clock.now += 3601.0
    again = await policies.policy(private)
    assert again.unavailable is None  # the cached copy stands (RFC 9309 2.4) ...
    refused = again.refusal(private, etiquette)
    assert refused is not None
    assert refused[0] == "opted_out_robots_txt"
    refused = again.refusal(image, etiquette)
    assert refused is not None
    assert refused[0] == "opted_out_tdmrep"
    assert again.expires == clock.now + 600.0  # ... and it is asked again soon


async def test_a_failed_tdmrep_is_asked_again_soon() -> None:
    clock = Clock()
    policies = OriginPolicies(Etiquette(retry_after=600.0), FakeOrigin(tdmrep=None), clock=clock)
    policy = await policies.policy(URL("http://h.example/x"))
    assert policy.expires == clock.now + 600.0


async def test_closing_gives_waiting_askers_an_empty_policy_not_a_cancellation() -> None:
    origin = FakeOrigin(gate=asyncio.Event())
    policies = OriginPolicies(Etiquette(), origin)
    asking = asyncio.ensure_future(policies.policy(URL("http://h.example/x")))
    while not origin.asked:
        await asyncio.sleep(0)
    policies.close()
    policy = await asking
    assert policy.expires == 0.0
    assert policy.refusal(URL("http://h.example/x"), Etiquette()) is None
    assert len(policies) == 0


async def test_a_compressed_robots_txt_is_read(tmp_path: Any) -> None:
    import gzip

    body = gzip.compress(b"User-agent: *\nDisallow: /private/\n")

    async def robots(_request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def image(_request: web.Request) -> web.Response:
        return web.Response(body=b"not reached")

    app = web.Application()
    app.add_routes([web.get("/robots.txt", robots), web.get("/private/{x}", image)])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with _downloader() as downloader:
            result = await downloader.fetch(
                _candidate(f"http://127.0.0.1:{server.port}/private/a.jpg")
            )
    finally:
        await server.close()
    assert isinstance(result, DownloadFailure)
    assert result.error_class == "opted_out_robots_txt"


async def test_a_fetch_that_raises_counts_as_unreachable() -> None:
    async def broken(url: URL) -> tuple[int, bytes] | None:
        raise RuntimeError("a bug in the fetch")

    policies = OriginPolicies(Etiquette(retry_after=600.0), broken, clock=Clock())
    policy = await policies.policy(URL("http://h.example/x"))
    assert policy.refusal(URL("http://h.example/x"), Etiquette()) is None
    assert policy.expires == 100.0 + 600.0  # asked again soon
