"""The library's streaming side (issue 14): URLs from any iterable, stored images as an async
iterator, the event stream, and stopping from the caller's code - against the emulator."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bingcrawl
from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.events import (
    ApiResponse,
    Downloaded,
    Event,
    OutcomeRecorded,
    PageCommitted,
    PageReceived,
    QueryDone,
)
from bingcrawl.records import Status
from bingcrawl.urllist import write_url_items
from tests.support.emulator import StartEmulator, clean_corpus

OPTIONS: dict[str, Any] = {"key": "k", "allow_network": ["127.0.0.1/32"], "hash_workers": 0}


def emulator_config(results: int = 30) -> EmulatorConfig:
    """Every image distinct and served, no QPS limit."""
    return EmulatorConfig(qps=None, corpus=clean_corpus(results_per_query=results))


def image_urls(server: EmulatorServer, query: str) -> list[str]:
    return [f"{server.base_url}img/{spec.key}" for spec in server.corpus.query_results(query)]


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


async def test_url_items_from_a_generator_are_crawled_and_resume(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(emulator_config())
    urls = image_urls(server, "python urls")[:12]
    pulled: list[int] = []

    def items() -> Iterator[object]:  # a generator: read once, never held whole
        for i, url in enumerate(urls):
            pulled.append(i)
            if i % 3 == 0:
                yield url
            elif i % 3 == 1:
                yield (url, f"caption {i}")
            else:
                yield {"url": url, "caption": f"caption {i}", "label": "thirds"}

    out = tmp_path / "out"
    async with bingcrawl.stream(out=out, url_items=items(), **OPTIONS) as images:
        stored = [image async for image in images]
    assert pulled == list(range(12))
    assert images.report is not None
    assert images.report.reason == "completed"
    assert len(stored) == images.report.stored == 12
    rows = {row["content_url"]: row for row in manifest(out)}
    assert set(rows) == set(urls)
    for i, url in enumerate(urls):
        assert rows[url]["label"] == ("thirds" if i % 3 == 2 else "urls")
        assert rows[url]["name"] == (None if i % 3 == 0 else f"caption {i}")
    assert server.state.requests() == []  # URL lists need no API call

    # The same items again: the same row, nothing fetched twice; new items: a new row.
    async with bingcrawl.stream(out=out, url_items=iter(urls), **OPTIONS) as again:
        assert [image async for image in again] == []
    more = image_urls(server, "more urls")[:3]
    async with bingcrawl.stream(out=out, url_items=urls + more, **OPTIONS) as extended:
        assert sorted([o.candidate.url async for o in extended]) == sorted(more)


def test_url_items_are_checked_and_named_by_content(tmp_path: Path) -> None:
    with pytest.raises(bingcrawl.ConfigError, match="url_items: item 2 is 42"):
        write_url_items(["http://a.example/1.jpg", 42], tmp_path)  # type: ignore[list-item]
    assert list((tmp_path / "inputs").iterdir()) == []  # nothing half-written is left
    with pytest.raises(bingcrawl.ConfigError, match="url_items: expected an iterable"):
        bingcrawl.make_config(out=tmp_path, url_items="http://a.example/1.jpg", key="k")
    first = write_url_items(["http://a.example/1.jpg"], tmp_path)
    assert write_url_items(iter(["http://a.example/1.jpg"]), tmp_path) == first
    assert write_url_items(["http://a.example/2.jpg"], tmp_path) != first
    assert first.name == "urls.jsonl"
    assert json.loads(first.read_text()) == {"url": "http://a.example/1.jpg"}


async def test_breaking_out_of_the_stream_stops_the_crawl_cleanly(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(emulator_config(results=60))
    out = tmp_path / "out"
    taken = []
    options = {**OPTIONS, "endpoint": server.base_url, "limit": 60, "count": 10}
    async with bingcrawl.stream(["endless"], out, **options) as images:
        async for image in images:
            taken.append(image)
            if len(taken) == 3:
                break
    report = images.report
    assert report is not None
    assert report.reason == "interrupted"
    assert report.stored >= 3  # the three taken, and whatever landed meanwhile
    assert len(manifest(out)) == report.stored  # every stored image is in the manifest
    # The same call resumes and finishes the crawl.
    async with bingcrawl.stream(["endless"], out, **options) as rest:
        more = [image async for image in rest]
    assert rest.report is not None
    assert rest.report.reason == "completed"
    paths = [m["path"] for m in manifest(out)]
    assert len(paths) == len(set(paths)) == report.stored + len(more)
    assert {o.candidate.url for o in taken}.isdisjoint(o.candidate.url for o in more)


async def test_every_stage_reports_to_one_event_stream(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(emulator_config())
    config = bingcrawl.make_config(
        ["events"], tmp_path, endpoint=server.base_url, limit=8, count=5, **OPTIONS
    )
    seen: list[Event] = []
    failing_calls = 0

    def broken(event: Event) -> None:  # a caller's bug never ends the crawl
        nonlocal failing_calls
        failing_calls += 1
        raise ValueError("the caller's bug")

    async with bingcrawl.Crawler(config, on_event=seen.append) as crawler:
        crawler.events.subscribe(broken)  # guarded: a caller's bug never ends the crawl
        report = await crawler.run()
        stored_in_index = len(crawler.dedup)
    kinds = Counter(type(e).__name__ for e in seen)
    outcomes = [e.outcome for e in seen if isinstance(e, OutcomeRecorded)]
    assert sum(o.status is Status.STORED for o in outcomes) == report.stored == 8
    assert kinds["ApiResponse"] == report.api_calls == crawler.counters.api_calls
    assert kinds["PageReceived"] == kinds["PageCommitted"] == crawler.counters.pages
    assert kinds["Downloaded"] == crawler.counters.downloaded
    assert kinds["FileWritten"] == report.stored
    assert kinds["QueryDone"] == 1
    assert sum(e.size for e in seen if isinstance(e, Downloaded)) == crawler.counters.bytes
    assert all(e.status == 200 for e in seen if isinstance(e, ApiResponse))
    # In pipeline order for one page: received, committed, then its downloads.
    first = [type(e) for e in seen if isinstance(e, PageReceived | PageCommitted | Downloaded)]
    assert first[:2] == [PageReceived, PageCommitted]
    assert isinstance(seen[-1], OutcomeRecorded | QueryDone)
    assert failing_calls == len(seen)
    # ... nor half-undoes a write: every stored image stays in the dedup index (review).
    assert stored_in_index == report.stored


def test_url_items_leave_no_file_descriptor_open(tmp_path: Path) -> None:
    fds = Path("/proc/self/fd")
    before = len(list(fds.iterdir()))
    for i in range(20):
        write_url_items([f"http://a.example/{i}.jpg"], tmp_path)
    assert len(list(fds.iterdir())) <= before  # (review: mkstemp's descriptor was dropped)


def test_url_items_refuse_a_symlinked_inputs_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "inputs").symlink_to(elsewhere)
    with pytest.raises(bingcrawl.ConfigError, match="symlink"):
        write_url_items(["http://a.example/1.jpg"], out)
    assert list(elsewhere.iterdir()) == []
