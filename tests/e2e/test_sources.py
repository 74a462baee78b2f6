"""Every source beyond search, end to end against the emulator over loopback.

Query expansion, similar images, visual search from seed images, trending and URL lists:
what each puts in the checkpoint and the dataset, compared with the emulator's ground truth;
that a re-run asks the API nothing it already answered; that every call of every source is
paced by the one limiter and counted against ``--max-api-calls``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bingcrawl.config import CrawlConfig, safe_label
from bingcrawl.emulator import EmulatorServer
from bingcrawl.engine.crawler import Crawler
from bingcrawl.errors import QuotaExceededError
from bingcrawl.sources.base import norm_query
from tests.support.crawls import crawl_config, db, key_of, read_manifest
from tests.support.emulator import StartEmulator, clean_corpus
from tests.support.emulator_api import first_page_suggestions


def api_total(out: Path) -> int:
    """API calls the checkpoint accounted for, across runs."""
    return int(db(out, "SELECT coalesce(sum(count), 0) AS n FROM api_calls")[0]["n"])


async def crawl(config: CrawlConfig) -> None:
    """One run of the crawl."""
    async with Crawler(config) as crawler:
        await crawler.run()


def png(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small, distinct PNG."""
    rng = random.Random(seed)
    img = Image.new("RGB", size)
    img.putdata(
        [(rng.randrange(256), rng.randrange(256), rng.randrange(256))] * (size[0] * size[1])
    )
    for x in range(0, size[0], 4):
        for y in range(size[1]):
            img.putpixel((x, y), (rng.randrange(256), 0, 0))
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


async def fetch(server: EmulatorServer, key: str) -> bytes:
    """What the emulator serves for an image key."""
    async with aiohttp.ClientSession() as session, session.get(f"{server.base_url}img/{key}") as r:
        assert r.status == 200
        return await r.read()


# -- query expansion -------------------------------------------------------------------------


async def test_expand_is_breadth_first_deduplicated_and_capped(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus())
    suggested = await first_page_suggestions(server, "red panda")
    server.state.log.clear()
    config = crawl_config(
        server, tmp_path, ["red panda"], limit=1, count=5, expand_depth=2, max_queries=22
    )
    await crawl(config)

    rows = db(tmp_path, "SELECT * FROM queries ORDER BY id")
    assert len(rows) == 22  # --max-queries counts the root too
    root = rows[0]
    assert (root["source"], root["depth"], root["text"]) == ("search", 0, "red panda")
    by_id = {r["id"]: r for r in rows}
    level1 = [r for r in rows if r["depth"] == 1]
    level2 = [r for r in rows if r["depth"] == 2]
    assert level1
    assert level2
    assert len(level1) + len(level2) == 21
    # level 1 is the root's first-page suggestions, in order, without repeats
    expected: list[str] = []
    for text in suggested:
        if norm_query(text) not in {norm_query(t) for t in ["red panda", *expected]}:
            expected.append(text)
    assert [r["text"] for r in level1] == expected
    # breadth first: every level-1 query was known before any level-2 one
    assert max(r["id"] for r in level1) < min(r["id"] for r in level2)
    for row in level1 + level2:
        assert row["source"] == "expand"
        assert row["label"] == "red_panda"  # inherited from the root
        assert row["root_id"] == root["id"]
        assert by_id[row["parent_id"]]["depth"] == row["depth"] - 1
    # no two queries the same, whatever the case and spacing
    assert len({r["norm"] for r in rows}) == len(rows)
    # every query was searched, and no query more than its pages need
    searched = [r.params for r in server.state.requests(endpoint="search")]
    assert {p["q"] for p in searched} == {r["text"] for r in rows}
    assert set(Counter((p["q"], p["offset"]) for p in searched).values()) == {1}
    # the manifest records source and parent
    manifest = read_manifest(tmp_path)
    text_of = {r["text"]: r for r in rows}
    for image in manifest:
        row = text_of[image["query"]]
        assert image["source"] == row["source"]
        assert image["label"] == "red_panda"
        parent = by_id.get(row["parent_id"])
        assert image["parent"] == (parent["text"] if parent is not None else None)
    assert set(Counter(m["query"] for m in manifest).values()) == {1}  # --limit per query


async def test_raising_expand_later_expands_what_was_crawled(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus())
    suggested = await first_page_suggestions(server, "lighthouse at dusk")
    server.state.log.clear()
    base = crawl_config(server, tmp_path, ["lighthouse at dusk"], limit=1, count=5)
    await crawl(base)
    assert len(server.state.requests(endpoint="search")) == 1

    await crawl(dataclasses.replace(base, expand_depth=1))
    rows = db(tmp_path, "SELECT * FROM queries WHERE source = 'expand'")
    expected = {norm_query(t) for t in suggested}
    assert {r["norm"] for r in rows} == expected - {norm_query("lighthouse at dusk")}
    assert all(r["state"] in ("done", "exhausted") for r in rows)

    # a third run of the same command has nothing left to ask
    before = len(server.state.requests())
    await crawl(dataclasses.replace(base, expand_depth=1))
    assert len(server.state.requests()) == before
    assert api_total(tmp_path) == before


# -- similar images ----------------------------------------------------------------------------


async def test_similar_asks_once_per_stored_image(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(), details_similar_count=8)
    config = crawl_config(server, tmp_path, ["red panda"], limit=4, count=10, similar=3)
    await crawl(config)

    stored = [m for m in read_manifest(tmp_path) if m["source"] == "search"]
    assert len(stored) == 4
    details = server.state.requests(endpoint="details")
    assert len(details) == 4
    assert all(r.params["modules"] == "SimilarImages" for r in details)
    tokens = {r.params["insightsToken"] for r in details}
    assert len(tokens) == 4
    similar = db(tmp_path, "SELECT * FROM candidates WHERE source = 'similar'")
    for image in stored:
        spec = server.corpus.spec(key_of(image["content_url"]))
        assert spec is not None
        truth = [s.key for s in server.corpus.similar(spec, 8)][:3]
        mine = [r for r in similar if r["parent"] == image["sha256"]]
        assert sorted(key_of(r["url"]) for r in mine) == sorted(truth)
        assert {(r["label"], r["query"]) for r in mine} == {("red_panda", "red panda")}
    rows = db(tmp_path, "SELECT * FROM queries WHERE source = 'similar'")
    assert len(rows) == 4
    assert {r["state"] for r in rows} == {"exhausted"}
    assert {r["norm"] for r in rows} == {m["sha256"] for m in stored}
    assert any(m["source"] == "similar" for m in read_manifest(tmp_path))

    before = len(server.state.requests())
    await crawl(config)
    assert len(server.state.requests()) == before  # nothing asked twice


async def test_insights_tokens_are_kept_only_for_similar(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """Bing's insights token (~155 bytes a row) serves only --similar: a crawl without it
    keeps none; with it, the stored images keep theirs (see the test above for its use)."""
    server = await start_emulator(corpus=clean_corpus())
    await crawl(crawl_config(server, tmp_path / "plain", ["red panda"], limit=4, count=10))
    tokens = db(tmp_path / "plain", "SELECT insights_token FROM candidates")
    assert tokens
    assert {r["insights_token"] for r in tokens} == {None}
    await crawl(crawl_config(server, tmp_path / "similar", ["red panda"], limit=4, count=10,
                             similar=1))  # fmt: skip
    stored = db(tmp_path / "similar", "SELECT insights_token FROM candidates "
                "WHERE status = 'stored' AND source = 'search'")  # fmt: skip
    assert stored
    assert all(r["insights_token"] for r in stored)


async def test_similar_keeps_only_the_rows_still_to_ask(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """--similar registers one row per stored image: a resumed crawl does not load the rows
    already asked (O(active) memory, not O(stored)), yet downloads what they left pending,
    and a run lets go of each row once its candidates have their outcomes."""
    server = await start_emulator(corpus=clean_corpus(), details_similar_count=8)
    config = crawl_config(server, tmp_path, ["red panda"], limit=4, count=10, similar=3)
    async with Crawler(config) as crawler:
        await crawler.run()
        similar_ids = {r["id"] for r in db(tmp_path, "SELECT id FROM queries "
                                                     "WHERE source = 'similar'")}  # fmt: skip
        assert len(similar_ids) == 4
        assert not similar_ids & set(crawler.queries)  # all let go by the end of the run
    # A stop before the similar candidates were downloaded: their rows are asked
    # (exhausted), the candidates pending.
    conn = sqlite3.connect(tmp_path / "checkpoint.sqlite")
    reset = conn.execute(
        "UPDATE candidates SET status = 'pending', sha256 = NULL, phash = NULL, path = NULL, "
        "bytes = NULL, duplicate_of = NULL, distance = NULL, unlisted = NULL "
        "WHERE source = 'similar' AND status IN ('stored', 'duplicate')"
    ).rowcount
    conn.execute("DELETE FROM meta WHERE key = 'manifest_committed'")  # (rows taken back)
    conn.commit()
    conn.close()
    assert reset
    for f in (tmp_path / "images").rglob("*.*"):
        if f.name not in {Path(m["path"]).name for m in read_manifest(tmp_path)
                          if m["source"] != "similar"}:  # fmt: skip
            f.unlink()
    details = len(server.state.requests(endpoint="details"))
    async with Crawler(config) as crawler:
        await crawler.run()
        assert not similar_ids & set(crawler.queries)
    assert len(server.state.requests(endpoint="details")) == details  # nothing asked again
    statuses = db(tmp_path, "SELECT status FROM candidates WHERE source = 'similar'")
    assert "pending" not in {r["status"] for r in statuses}
    assert sum(m["source"] == "similar" for m in read_manifest(tmp_path)) > 0


async def test_similar_of_url_list_images_asks_by_url(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(), details_similar_count=4)
    specs = server.corpus.query_results("some urls")[:3]
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"{server.base_url}img/{s.key}\n" for s in specs))
    out = tmp_path / "out"
    config = crawl_config(server, out, [], urls_files=(listing,), similar=2)
    await crawl(config)
    details = server.state.requests(endpoint="details")
    assert sorted(r.params["imgUrl"] for r in details) == sorted(
        f"{server.base_url}img/{s.key}" for s in specs
    )
    similar = db(out, "SELECT * FROM candidates WHERE source = 'similar'")
    assert len(similar) == 6
    assert {r["label"] for r in similar} == {"urls"}


# -- visual search from seed images ------------------------------------------------------------


async def test_visual_search_pages_results_and_rejects_copies_of_the_seeds(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(), similar_results=40)
    seeds = tmp_path / "seeds"
    (seeds / "cats").mkdir(parents=True)
    b = png(1)
    (seeds / "cats" / "b.png").write_bytes(b)
    (seeds / "notes.txt").write_text("not an image")  # skipped, not fatal
    results_b = server.corpus.visual_results(hashlib.sha256(b).digest(), 40)
    copy = results_b[5]  # seed "a" is a copy of one of b's results
    a = await fetch(server, copy.key)
    (seeds / "cats" / "a.jpg").write_bytes(a)
    sha_a, sha_b = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()

    out = tmp_path / "out"
    config = crawl_config(server, out, [], seed_images=seeds, count=15, limit=1000)
    await crawl(config)

    rows = db(out, "SELECT * FROM queries ORDER BY id")
    assert [(r["source"], r["text"], r["label"], r["norm"]) for r in rows] == [
        ("visual", "cats/a.jpg", "cats", sha_a),
        ("visual", "cats/b.png", "cats", sha_b),
    ]
    row_b = rows[1]
    got = db(out, "SELECT url, status, duplicate_of, parent FROM candidates WHERE query_id = ?",
             row_b["id"])  # fmt: skip
    assert sorted(key_of(r["url"]) for r in got) == sorted(s.key for s in results_b)
    assert {r["parent"] for r in got} == {sha_b}
    dup = next(r for r in got if key_of(r["url"]) == copy.key)
    assert (dup["status"], dup["duplicate_of"]) == ("duplicate", sha_a)
    manifest = read_manifest(out)
    assert sha_a not in {m["sha256"] for m in manifest}
    assert {m["source"] for m in manifest} == {"visual"}
    assert {m["label"] for m in manifest} == {"cats"}
    assert {m["query"] for m in manifest} == {"cats/a.jpg", "cats/b.png"}
    # paged by offset: 0, 15, 30 and the empty page at 40, for each seed
    visual = server.state.requests(endpoint="visualsearch")
    assert sorted(r.params["offset"] for r in visual) == sorted(["0", "15", "30", "40"] * 2)

    before = len(server.state.requests())
    await crawl(config)
    assert len(server.state.requests()) == before


async def test_crop_and_label_are_sent(start_emulator: StartEmulator, tmp_path: Path) -> None:
    server = await start_emulator(corpus=clean_corpus(), similar_results=10)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    b = png(2)
    (seeds / "b.png").write_bytes(b)
    crop = (0.0, 0.0, 0.5, 0.5)
    out = tmp_path / "out"
    await crawl(crawl_config(server, out, [], seed_images=seeds, crop=crop, label="Mine", count=20))
    digest = hashlib.sha256(hashlib.sha256(b).digest() + repr(crop).encode()).digest()
    cropped = {s.key for s in server.corpus.visual_results(digest, 10)}
    whole = {s.key for s in server.corpus.visual_results(hashlib.sha256(b).digest(), 10)}
    assert cropped != whole
    got = db(out, "SELECT url, label FROM candidates")
    assert {key_of(r["url"]) for r in got} == cropped
    assert {r["label"] for r in got} == {"Mine"}


# -- trending ------------------------------------------------------------------------------------


async def test_trending_tiles_by_category_and_their_queries_expanded(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(), qps=12.0)
    config = crawl_config(
        server, tmp_path, [], trending=True, expand_depth=1, limit=1, count=3, qps=10.0
    )
    await crawl(config)

    truth = server.corpus.trending()
    rows = db(tmp_path, "SELECT * FROM queries ORDER BY id")
    categories = [r for r in rows if r["source"] == "trending"]
    assert [(r["text"], r["label"]) for r in categories] == [
        (title, safe_label(title)) for title, _ in truth
    ]
    label_of = {r["id"]: r["label"] for r in categories}
    tiles = db(tmp_path, "SELECT * FROM candidates WHERE source = 'trending'")
    assert sorted(key_of(r["url"]) for r in tiles) == sorted(
        spec.key for _, specs in truth for _, spec in specs
    )
    for title, specs in truth:
        for text, spec in specs:
            tile = next(r for r in tiles if key_of(r["url"]) == spec.key)
            assert (tile["label"], tile["query"], tile["parent"]) == (
                safe_label(title),
                text,
                title,
            )
    # every tile's query was searched as an expansion under its category
    expanded = [r for r in rows if r["source"] == "expand"]
    assert sorted(r["text"] for r in expanded) == sorted(t for _, s in truth for t, _ in s)
    for row in expanded:
        assert row["label"] == label_of[row["parent_id"]]
    assert len(server.state.requests(endpoint="trending")) == 1
    assert {r.params["q"] for r in server.state.requests(endpoint="search")} == {
        r["text"] for r in expanded
    }
    assert server.state.statuses().get(429, 0) == 0  # one limiter for every endpoint

    before = len(server.state.requests())
    await crawl(config)
    assert len(server.state.requests()) == before


# -- URL lists -------------------------------------------------------------------------------


async def test_url_list_needs_no_api_and_is_not_cut_by_the_default_limit(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(results_per_query=110))
    specs = server.corpus.query_results("url list")
    listing = tmp_path / "my list.jsonl"
    lines = []
    for i, spec in enumerate(specs):
        record: dict[str, Any] = {"url": f"{server.base_url}img/{spec.key}", "caption": f"c{i}"}
        if i % 3 == 0:
            record["label"] = "dogs"
        lines.append(json.dumps(record))
        if i % 50 == 0:
            lines.append("{broken")
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    config = dataclasses.replace(crawl_config(server, out, [], urls_files=(listing,)), key=None)
    assert config.limit == 100
    assert config.url_limit is None
    await crawl(config)

    assert server.state.requests() == []  # no API call at all
    manifest = read_manifest(out)
    assert len(manifest) == 110
    for image in manifest:
        i = int(image["name"][1:])
        assert image["content_url"] == f"{server.base_url}img/{specs[i].key}"
        assert image["label"] == ("dogs" if i % 3 == 0 else "my_list")
        assert (image["source"], image["query"]) == ("urls", "my list.jsonl")
    row = db(out, "SELECT * FROM queries")[0]
    assert (row["state"], row["results"]) == ("exhausted", 110)

    limited = tmp_path / "limited"
    await crawl(dataclasses.replace(config, out=limited, url_limit=5))
    assert len(read_manifest(limited)) == 5


# -- one limiter, one budget -------------------------------------------------------------------


async def test_every_source_spends_the_one_api_budget(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(), similar_results=10)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "s.png").write_bytes(png(3))
    out = tmp_path / "out"
    config = crawl_config(
        server,
        out,
        ["red panda"],
        expand_depth=1,
        trending=True,
        seed_images=seeds,
        similar=1,
        limit=1,
        count=5,
        max_api_calls=5,
    )
    with pytest.raises(QuotaExceededError):
        await crawl(config)
    assert len(server.state.requests()) == 5
    assert api_total(out) == 5
    endpoints = {r.endpoint for r in server.state.requests()}
    assert endpoints >= {"search", "trending", "visualsearch"}

    with pytest.raises(QuotaExceededError):
        await crawl(dataclasses.replace(config, max_api_calls=12))
    assert len(server.state.requests()) == 12  # the budget counts across runs
    assert api_total(out) == 12
