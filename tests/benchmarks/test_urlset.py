"""The URL set the harness computes is exactly what the emulator's search returns and serves."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import aiohttp
from yarl import URL

from benchmarks.urlset import EmulatorSpec, UrlSet, query_texts
from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from tests.support.emulator import StartEmulator


async def search_urls(server: EmulatorServer, query: str) -> list[str]:
    """Every contentUrl of ``query``, paged through the API as a client would."""
    urls: list[str] = []
    offset = 0
    async with aiohttp.ClientSession(headers={"Ocp-Apim-Subscription-Key": "k"}) as session:
        while True:
            params = {"q": query, "count": "150", "offset": str(offset)}
            async with session.get(f"{server.base_url}v7.0/images/search", params=params) as r:
                assert r.status == 200
                page = await r.json()
            urls += [v["contentUrl"] for v in page["value"] if v["contentUrl"] not in urls]
            if not page["value"] or page["nextOffset"] <= offset:
                return urls
            offset = page["nextOffset"]


async def test_urls_are_the_search_results_and_are_served(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    spec = EmulatorSpec(image_latency=0.0, api_latency=0.0, results_per_query=40)
    config = EmulatorConfig(corpus=spec.corpus_config(), qps=None)
    server = await start_emulator(config)
    urlset = UrlSet(server.base_url, spec, queries=2)
    urls = urlset.urls()
    assert len(urls) == len(urlset) == 80
    assert len(set(urls)) == 80
    found = []
    for q in urlset.query_list:
        found += await search_urls(server, q)
    assert found == urls
    # No faults and no duplicates: every URL is a distinct image.
    digests = set()
    async with aiohttp.ClientSession() as session:
        for url in urls[:20]:
            async with session.get(url) as r:
                assert r.status == 200
                digests.add(hashlib.sha256(await r.read()).hexdigest())
    assert len(digests) == 20
    files = urlset.write(tmp_path / "list")
    assert files["txt"].read_text().splitlines() == urls
    assert files["csv"].read_text().splitlines()[0] == "url"
    assert files["queries"].read_text().splitlines() == query_texts(2)


def test_emulator_flags_follow_the_spec() -> None:
    spec = EmulatorSpec(image_latency=0.2, image_size="1m", results_per_query=200,
                        unique_share=0.25, warm_queries=2)  # fmt: skip
    args = spec.args()
    assert args[args.index("--image-latency") + 1] == "0.2"
    assert args[args.index("--image-size") + 1] == "1m"
    assert args[args.index("--cross-query-rate") + 1] == "0.75"
    assert args[args.index("--fault-rate") + 1] == "0"
    assert args.count("--warm") == 2
    assert "25% unique" in spec.label()


def test_network_urls_spread_over_host_names_with_a_few_popular_ones() -> None:
    spec = EmulatorSpec(results_per_query=1000, image_size="web", network="web")
    urlset = UrlSet("http://127.0.0.1:8123/", spec, queries=6, hosts=1200, host_skew=0.5)
    urls = urlset.urls()
    assert len(urls) == 6000
    hosts = Counter(URL(u).host for u in urls)
    assert all(URL(u).port == 8123 and URL(u).path.startswith("/img/") for u in urls)
    assert all(h is not None and h.endswith(".web.test") for h in hosts)
    assert 900 < len(hosts) <= 1200  # most of the 1,200 names get at least one URL
    top = hosts.most_common(1)[0][1]
    assert 40 < top < 200  # Zipf 0.5: the most popular host has ~1.5 % of the URLs
    assert urls == urlset.urls()  # the same draw in every run
    # The keys are those of the one-host set, in the same order.
    plain = UrlSet("http://127.0.0.1:8123/", spec, queries=6).urls()
    assert [URL(u).path for u in urls] == [URL(u).path for u in plain]
    args = spec.args()
    assert args[args.index("--network") + 1] == "web"
    assert args[args.index("--host-latency") + 1] == "0.2"
    assert "web network" in spec.label()
