"""Near duplicates as the web makes them, end to end: copies of a picture with letterbox bars,
a corner logo or a caption bar, served by a real local server and crawled from a URL list.

The ``regions`` method (the default) rejects every copy and says which hash matched; the
``whole`` method (one hash of the whole picture, the former default) stores the letterboxed
copy as a new picture. A crawl made before the methods existed resumes with ``whole``, and
asking it for ``regions`` is refused before any request, naming the option.
"""

from __future__ import annotations

import dataclasses
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image, ImageDraw

from bingcrawl.cli import main as cli_main
from bingcrawl.config import CrawlConfig
from bingcrawl.emulator.corpus import Corpus, CorpusConfig
from bingcrawl.engine.crawler import Crawler
from bingcrawl.errors import ConfigError
from bingcrawl.store.dupes import dupes_summary, write_dupes_html
from bingcrawl.store.output import export
from tests.support.crawls import crawl_config, db, read_manifest


async def crawl(config: CrawlConfig) -> None:
    """One run of the crawl."""
    async with Crawler(config) as crawler:
        await crawler.run()


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _pictures() -> list[Image.Image]:
    """Two distinct pictures of the emulator's corpus, decoded (320 x 240 and up)."""
    corpus = Corpus(CorpusConfig(seed=7, fault_rate=0.0, exact_dup_rate=0.0, near_dup_rate=0.0))
    specs = [s for s in corpus.query_results("harbour at dusk") if s.format == "jpeg"][:2]
    pictures = []
    for spec in specs:
        with Image.open(io.BytesIO(corpus.image_bytes(spec))) as img:
            pictures.append(img.convert("RGB"))
    return pictures


def _letterboxed(img: Image.Image) -> Image.Image:
    w, h = img.size
    out = Image.new("RGB", (w, int(h * 1.4)), (0, 0, 0))
    out.paste(img, (0, (out.height - h) // 2))
    return out


def _logo(img: Image.Image) -> Image.Image:
    out = img.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    draw.rounded_rectangle((w - w // 4 - 4, 4, w - 4, 4 + h // 8), radius=6, fill=(200, 30, 40))
    draw.text((w - w // 4, 8), "(c) stock", fill=(255, 255, 255))
    return out


def _caption(img: Image.Image) -> Image.Image:
    out = img.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, h - h // 12, w, h), fill=(255, 255, 255))
    draw.text((6, h - h // 12 + 2), "when the harbour is calm", fill=(0, 0, 0))
    return out


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Path]:
    """A local image host serving an original, its edited copies and a distinct picture,
    and a URL list naming them (the original first)."""
    original, other = _pictures()
    files = {
        "original.jpg": _jpeg(original),
        "letterbox.jpg": _jpeg(_letterboxed(original)),
        "logo.jpg": _jpeg(_logo(original)),
        "caption.jpg": _jpeg(_caption(original)),
        "other.jpg": _jpeg(other),
    }

    async def serve(request: web.Request) -> web.Response:
        body = files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"http://127.0.0.1:{server.port}/{name}\n" for name in files))
    try:
        yield listing
    finally:
        await server.close()


def _config(listing: Path, out: Path, **kw: Any) -> CrawlConfig:
    server = type("Host", (), {"base_url": "http://127.0.0.1:9/"})()  # no API call is made
    base = crawl_config(server, out, [], urls_files=(listing,), concurrency=1, per_host=1, **kw)
    return dataclasses.replace(base, key=None, near_dup_distance=6)


def _by_name(out: Path) -> dict[str, sqlite3.Row]:
    return {row["url"].rsplit("/", 1)[1]: row for row in db(out, "SELECT * FROM candidates")}


async def test_regions_rejects_letterboxed_logo_and_captioned_copies(
    site: Path, tmp_path: Path
) -> None:
    listing = site
    out = tmp_path / "regions"
    await crawl(_config(listing, out))

    rows = _by_name(out)
    assert {n for n, r in rows.items() if r["status"] == "stored"} == {"original.jpg", "other.jpg"}
    original = rows["original.jpg"]
    for copy in ("letterbox.jpg", "logo.jpg", "caption.jpg"):
        row = rows[copy]
        assert (row["status"], row["duplicate_of"]) == ("duplicate", original["sha256"]), copy
        assert row["match_kind"] in ("frame", "centre"), copy
        assert 0 <= row["distance"] <= 6, copy
    # Letterbox bars are trimmed before hashing: the copy's frame is the original's picture.
    assert rows["letterbox.jpg"]["match_kind"] == "frame"
    assert original["centre_hash"] is not None  # 320 px and up: a centre hash

    # The audit trail: the export names the hash, the page shows both sides of each pair.
    dupes = out / "dupes.jsonl"
    export(out, duplicates=True, dest=dupes)
    exported = [orjson.loads(line) for line in dupes.read_bytes().splitlines()]
    assert [r["role"] for r in exported] == ["stored", "duplicate", "duplicate", "duplicate"]
    assert {r["match"] for r in exported[1:]} <= {"frame", "centre"}
    counts = dupes_summary(out)
    assert sum(n for kind in counts.values() for n in kind.values()) == 3
    page = write_dupes_html(out)
    html = page.path.read_text()
    assert (page.pairs, page.total) == (3, 3)
    assert html.count('alt="stored image"') == 3
    assert f"../{original['path']}" in html  # the stored file, relative to the page
    for copy in ("letterbox.jpg", "logo.jpg", "caption.jpg"):
        assert rows[copy]["url"] in html


async def test_whole_stores_the_letterboxed_copy_as_a_new_picture(
    site: Path, tmp_path: Path
) -> None:
    listing = site
    out = tmp_path / "whole"
    await crawl(_config(listing, out, near_dup_method="whole"))
    rows = _by_name(out)
    assert rows["letterbox.jpg"]["status"] == "stored"
    assert rows["original.jpg"]["centre_hash"] is None  # one hash per picture
    assert len(read_manifest(out)) >= 3


async def test_a_crawl_keeps_its_method_and_refuses_another(
    site: Path, tmp_path: Path
) -> None:
    listing = site
    out = tmp_path / "old"
    await crawl(_config(listing, out, near_dup_method="whole"))
    # What a crawl made before the option existed looks like: no method in its fingerprint.
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    with conn:
        (stored,) = conn.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        fingerprint = orjson.loads(stored)
        assert "near_dup_method" not in fingerprint  # whole is the absent value
    conn.close()

    # Resumed without the option: it keeps whole (the letterboxed copy stays stored).
    await crawl(_config(listing, out))
    assert _by_name(out)["letterbox.jpg"]["status"] == "stored"

    with pytest.raises(ConfigError, match="--near-dup-method") as info:
        await crawl(_config(listing, out, near_dup_method="regions"))
    assert "'whole'" in str(info.value)
    assert "--fresh" in str(info.value)

    # --fresh starts over with the asked method.
    await crawl(_config(listing, out, near_dup_method="regions", fresh=True))
    assert _by_name(out)["letterbox.jpg"]["status"] == "duplicate"


async def test_dupes_command_prints_counts_and_writes_the_page(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = site
    out = tmp_path / "out"
    await crawl(_config(listing, out))
    capsys.readouterr()
    assert cli_main(["dupes", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sum(int(line.split()[1]) for line in printed.splitlines()) == 3
    page = tmp_path / "pairs" / "page.html"
    assert cli_main(["dupes", str(out), "--html", "--exact", "-o", str(page)]) == 0
    assert page.read_text().count('alt="rejected copy"') == 3
    assert "3 of 3 duplicate pairs ->" in capsys.readouterr().err
    # --output shapes the page: without --html it is a usage error
    assert cli_main(["dupes", str(out), "-o", str(page)]) == 2
    assert "--html" in capsys.readouterr().err


async def test_the_page_shows_images_in_shards_from_their_urls(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    await crawl(_config(site, out, output_format="webdataset"))
    rows = _by_name(out)
    page = write_dupes_html(out, dest=tmp_path / "page.html")
    html = page.path.read_text()
    assert page.pairs == 3
    # a shard member has no file of its own: the stored side is its source URL
    assert html.count(f'src="{rows["original.jpg"]["url"]}"') == 3
    assert "shards/" not in html
