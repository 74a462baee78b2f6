"""Publishers' opt-outs end to end: ``bingcrawl crawl`` of a URL list against the emulator,
whose image host marks some images (headers), serves a robots.txt and a tdmrep.json; what the
checkpoint, the dataset, ``stats.json``, ``status`` and ``export --all`` say about each
excluded image, and how often each origin's files were asked for."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from bingcrawl.emulator.imagehost import ImageHostConfig
from tests.support.crawls import db, read_manifest
from tests.support.emulator import StartEmulator, clean_corpus
from tests.support.hostile import run_main

MARKS = {  # image index -> (query that makes the host send the header, error class)
    0: ("x-robots-tag=noai", "opted_out_x_robots_tag"),
    1: (f"x-robots-tag={quote('bingcrawl: noimageindex')}", "opted_out_x_robots_tag"),
    2: ("tdm-reservation=1", "opted_out_tdmrep"),
    3: (f"content-usage={quote('train-ai=n')}", "opted_out_content_usage"),
    4: (f"content-signal={quote('search=yes, ai-train=no')}", "opted_out_content_signal"),
}
ROBOTS_DENIED = 5  # the image robots.txt disallows
TDMREP_RESERVED = 6  # the image tdmrep.json reserves
N = 12


async def test_every_signal_excludes_and_is_counted_per_host(
    start_emulator: StartEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = clean_corpus()
    server = await start_emulator(corpus=corpus)
    specs = server.corpus.query_results("etiquette")[:N]
    host = server.image_host
    # the emulator's host learns its origin files now that the keys are known
    host.config = ImageHostConfig(
        robots_txt=f"User-agent: bingcrawl\nDisallow: /img/{specs[ROBOTS_DENIED].key}\n",
        tdmrep_json=json.dumps(
            [{"location": f"/img/{specs[TDMREP_RESERVED].key}", "tdm-reservation": 1,
              "tdm-policy": "https://publisher.example/tdm"}]
        ),
    )  # fmt: skip
    base = server.base_url.rstrip("/")
    other = base.replace("127.0.0.1", "localhost")  # a second host (and origin)
    lines = []
    for i, spec in enumerate(specs):
        query = f"?{MARKS[i][0]}" if i in MARKS else ""
        lines.append(f"{base if i % 2 else other}/img/{spec.key}{query}\n")
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(lines))
    out = tmp_path / "out"
    argv = ["crawl", "--urls", str(listing), "--out", str(out), "--endpoint", server.base_url,
            "--allow-network", "127.0.0.1/32", "--no-progress", "--hash-workers", "0",
            "--contact", "mailto:datasets@example.org"]  # fmt: skip
    assert await asyncio.to_thread(run_main, argv) == 0

    rows = {r["url"]: r for r in db(out, "SELECT url, status, error_class, detail FROM candidates")}
    expected = {i: cls for i, (_, cls) in MARKS.items()}
    expected |= {ROBOTS_DENIED: "opted_out_robots_txt", TDMREP_RESERVED: "opted_out_tdmrep"}
    for i, line in enumerate(lines):
        row = rows[line.strip()]
        if i in expected:
            assert (row["status"], row["error_class"]) == ("failed", expected[i]), line
            assert row["detail"]  # the value that excluded it
        else:
            assert row["status"] == "stored", line
    assert "publisher.example/tdm" in rows[lines[TDMREP_RESERVED].strip()]["detail"]
    assert len(read_manifest(out)) == N - len(expected)  # excluded images are not in the dataset
    assert sum(1 for _ in (out / "images").rglob("*.*")) == N - len(expected)
    # robots.txt and tdmrep.json disallowed images were never requested
    assert host.requests[specs[ROBOTS_DENIED].key] == 0
    assert host.requests[specs[TDMREP_RESERVED].key] == 0
    # each origin's files, once per run
    port = server.base_url.rstrip("/").rsplit(":", 1)[1]
    for name in ("127.0.0.1", "localhost"):
        assert host.origin_requests[f"{name}:{port}/robots.txt"] == 1
        assert host.origin_requests[f"{name}:{port}/.well-known/tdmrep.json"] == 1
    # the User-Agent says who crawls and how to reach them
    assert [ua for ua in host.user_agents if "(+mailto:datasets@example.org)" in ua]

    stats = json.loads((out / "stats.json").read_text())
    assert stats["etiquette"]["ignored"] == []
    assert stats["etiquette"]["ignored_by_any_run"] == []
    assert stats["run"]["opted_out"] == len(expected)  # this run's counter, as progress shows
    opted = stats["opted_out"]
    assert opted["x_robots_tag"]["total"] == 2
    assert sum(v["total"] for v in opted.values()) == len(expected)
    by_host: dict[str, int] = {}
    for signal in opted.values():
        for name, n in signal["hosts"].items():
            by_host[name] = by_host.get(name, 0) + n
    odd = sum(1 for i in expected if i % 2)
    assert by_host == {"127.0.0.1": odd, "localhost": len(expected) - odd}

    capsys.readouterr()
    assert await asyncio.to_thread(run_main, ["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "excluded by publishers' opt-outs" in text
    assert "robots_txt: 1 (" in text
    export = tmp_path / "all.csv"
    assert await asyncio.to_thread(
        run_main, ["export", str(out), "--all", "--format", "csv", "-o", str(export)]
    ) == 0
    with export.open(newline="") as fh:
        exported = {r["content_url"]: r for r in csv.DictReader(fh)}
    assert exported[lines[0].strip()]["error_class"] == "opted_out_x_robots_tag"

    # the same command again: nothing excluded is asked for again, and with nothing left
    # to download, no origin either (its files are fetched when an image needs them)
    before, origins_before = dict(host.requests), dict(host.origin_requests)
    assert await asyncio.to_thread(run_main, argv) == 0
    assert dict(host.requests) == before
    assert dict(host.origin_requests) == origins_before

    # --ignore all: the user's call, and every image is stored
    careless = tmp_path / "careless"
    argv_all = [*argv[:4], str(careless), *argv[5:], "--ignore", "all"]
    assert await asyncio.to_thread(run_main, argv_all) == 0
    assert len(read_manifest(careless)) == N
    record = json.loads((careless / "stats.json").read_text())["etiquette"]
    assert record["honoured"] == []
    assert len(record["ignored_by_any_run"]) == 5  # and the checkpoint keeps it for good
    assert dict(host.origin_requests) == origins_before  # not even asked
