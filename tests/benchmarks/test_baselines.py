"""The baselines against a real emulator on loopback: they fetch what they should."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from benchmarks.baselines import bare_aiohttp, seed_blog
from benchmarks.urlset import EmulatorSpec, UrlSet
from bingcrawl.emulator import EmulatorConfig
from tests.support.emulator import StartEmulator

SPEC = EmulatorSpec(image_latency=0.0, api_latency=0.0, results_per_query=50)


async def served(urls: list[str]) -> dict[str, str]:
    import aiohttp

    out = {}
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url) as r:
                out[url] = hashlib.sha256(await r.read()).hexdigest()
    return out


async def test_bare_loop_writes_every_body(start_emulator: StartEmulator, tmp_path: Path) -> None:
    server = await start_emulator(EmulatorConfig(corpus=SPEC.corpus_config(), qps=None))
    urls = UrlSet(server.base_url, SPEC, 1).urls()[:30]
    missing = f"{server.base_url}img/does-not-exist.jpg"
    counts = await bare_aiohttp.fetch_all([*urls, missing], tmp_path, concurrency=8)
    truth = await served(urls)
    assert counts == {"ok": 30, "failed": 1}
    files = sorted(tmp_path.iterdir())
    assert len(files) == 30
    written = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    for i, url in enumerate(urls):
        assert written[f"{i:07d}{Path(url).suffix}"] == truth[url]


async def test_seed_loop_pages_with_a_sleep_and_names_files_from_urls(
    start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(seed_blog, "_sleep", slept.append)
    server = await start_emulator(EmulatorConfig(corpus=SPEC.corpus_config(), qps=None))
    expected = UrlSet(server.base_url, SPEC, 1).urls()
    # The loop is blocking by design (urllib): run it off this event loop.
    urls, pages = await asyncio.to_thread(seed_blog.collect, server.base_url, "k", "bench 0", 45)
    written = await asyncio.to_thread(seed_blog.download, urls[:5], tmp_path)
    truth = await served(urls[:5])
    # The post keeps what each page says, including the few results a page repeats.
    assert len(urls) == 45
    assert urls[:35] == expected[:35]
    assert set(urls) <= set(expected)
    assert pages == 2  # 35 results by default per page, no count sent
    assert slept == [1.0, 1.0]  # one second after every page
    assert written == 5
    for url in urls[:5]:
        path = tmp_path / seed_blog.file_name(url)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == truth[url]


def test_seed_file_names_are_the_posts() -> None:
    assert seed_blog.file_name("https://h/x/pexels-photo.jpeg?auto=compress&w=1") == (
        "pexels-photo.jpeg"
    )
    assert seed_blog.file_name("https://c.pxhere.com/photos/5d/car-1277324.jpg!d") == (
        "car-1277324.jpg"
    )
