"""Files: every write stays under OUT, names come from content hashes, labels are sanitised,
and no symlink (or hard link) planted in OUT is written through.

Decision for a planted symlink (documented in SECURITY.md): bingcrawl refuses it and never
replaces it. The candidates that would have been written through it fail with
``write_error``; the link and its target are left exactly as they were (bingcrawl does not
delete what it did not write), and the rest of the crawl goes on.

The crawls run the real command line (``main()``, in a thread) against the emulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path

import pytest

from bingcrawl.config import MAX_LABEL_LENGTH, safe_label
from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.corpus import EXTENSIONS, CorpusConfig, ImageSpec
from tests.support.emulator import StartEmulator
from tests.support.hostile import db_rows, run_main

#: Labels an attacker (or a careless queries file) could write, with the query of each.
HOSTILE_LABELS = (
    "../escape",
    "..",
    ".",
    "/etc/cron.d",
    "a/../../b",
    "..\\..\\windows",
    "C:\\Windows\\System32",
    "CON",
    "nul",
    "com1.txt",
    "x" * 300,
    "a\u2215b",  # division slash
    "\uff0e\uff0e\uff0fetc",  # fullwidth "../etc", NFKC-folds to ASCII
    "\u2024\u2024",  # one-dot leaders
    "a\x00b",
    ".hidden",
    "~root",
    "-rf",
    "\u202eevil",  # right-to-left override
    "dir\u2028line",  # a line separator that is not a newline in a file
)

TOP_LEVEL = {"checkpoint.sqlite", "checkpoint.sqlite-wal", "checkpoint.sqlite-shm",
             "checkpoint.sqlite-lock", "manifest.jsonl", "stats.json", "images"}  # fmt: skip
IMAGE_FILE = re.compile(r"[0-9a-f]{16}\.(jpg|png|gif|webp)")

FAST = [
    "--allow-network", "127.0.0.1/32", "--no-progress", "--hash-workers", "0",
    "--timeout", "3", "--retries", "0", "--log-level", "WARNING", "--qps", "50",
    "--near-dup-distance", "0", "--key", "k",
]  # fmt: skip


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> EmulatorServer:
    """A clean corpus where every result is a distinct picture."""
    corpus = CorpusConfig(
        results_per_query=6, fault_rate=0.0, exact_dup_rate=0.0, near_dup_rate=0.0,
        cross_query_rate=0.0,
    )  # fmt: skip
    return await start_emulator(EmulatorConfig(qps=None, corpus=corpus))


def tree(root: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """Every entry below ``root`` (symlinks not followed): kind and content or link target."""
    found: dict[str, tuple[str, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", None)
            else:
                found[rel] = ("file", path.read_bytes())
    return found


def crawl(out: Path, server: EmulatorServer, *args: str) -> int:
    """``bingcrawl crawl ARGS --out OUT`` against ``server`` (blocking)."""
    return run_main(["crawl", *args, "--out", str(out), "--endpoint", server.base_url, *FAST])


def expected_file(spec: ImageSpec, server: EmulatorServer) -> tuple[str, bytes]:
    """Name bingcrawl gives the picture of ``spec`` (from its content hash), and its bytes."""
    data = server.corpus.image_bytes(spec)
    return f"{hashlib.sha256(data).hexdigest()[:16]}.{EXTENSIONS[spec.format]}", data


async def test_hostile_labels_stay_one_safe_directory_under_out(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    lines = [f"{label}\tlabel case {i}" for i, label in enumerate(HOSTILE_LABELS)]
    queries = tmp_path / "queries.tsv"
    queries.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "work" / "out"
    before = tree(tmp_path)
    code = await asyncio.to_thread(
        crawl, out, emulator, "--queries-file", str(queries), "--limit", "2"
    )
    assert code == 0

    expected = {f"label case {i}": safe_label(label, lower=False)
                for i, label in enumerate(HOSTILE_LABELS)}  # fmt: skip
    entries = tree(out)
    assert {rel.split("/")[0] for rel in entries} <= TOP_LEVEL
    for rel, (kind, _) in entries.items():
        parts = rel.split("/")
        if parts[0] != "images" or len(parts) == 1:
            continue
        assert kind != "link", rel
        label = parts[1]
        assert label in expected.values(), rel
        assert len(label) <= MAX_LABEL_LENGTH, rel
        assert label not in (".", ".."), rel
        assert "\x00" not in label, rel
        if len(parts) == 2:
            assert kind == "dir", rel
        else:
            assert len(parts) == 3, rel
            assert kind == "file", rel
            assert IMAGE_FILE.fullmatch(parts[2]), rel
            real = Path(os.path.realpath(out / rel))
            assert real.is_relative_to(os.path.realpath(out))
    rows = db_rows(out / "checkpoint.sqlite", "SELECT query, label, path FROM candidates "
                   "WHERE status = 'stored'")  # fmt: skip
    assert {r["query"] for r in rows} == set(expected)  # every label case stored images
    for r in rows:
        assert r["label"] == expected[r["query"]]
        assert r["path"].startswith(f"images/{r['label']}/")
        assert (out / r["path"]).is_file()
    # nothing was created, changed or removed outside OUT
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith("work/out")}
    assert after == {**before, "work": ("dir", None)}


async def test_planted_symlinks_and_hard_links_are_never_written_through(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"precious")
    (outside / "hard.txt").write_bytes(b"also precious")
    out = tmp_path / "out"
    (out / "images" / "victim").mkdir(parents=True)
    # a whole label directory pointing outside
    (out / "images" / "planted").symlink_to(outside / "dir", target_is_directory=True)
    # the exact file names two pictures of "victim pictures" will get: one a symlink to a file
    # outside, one a hard link to a file outside
    first, second, *_ = emulator.corpus.query_results("victim pictures")
    link_name, _ = expected_file(first, emulator)
    hard_name, hard_data = expected_file(second, emulator)
    (out / "images" / "victim" / link_name).symlink_to(outside / "secret.txt")
    os.link(outside / "hard.txt", out / "images" / "victim" / hard_name)
    queries = tmp_path / "queries.tsv"
    queries.write_text("planted\tplanted pictures\nvictim\tvictim pictures\n", encoding="utf-8")
    outside_before = tree(outside)

    code = await asyncio.to_thread(crawl, out, emulator, "--queries-file", str(queries))
    assert code == 0
    assert tree(outside) == outside_before  # nothing written, created or removed there
    rows = db_rows(out / "checkpoint.sqlite", "SELECT label, status, error_class, path "
                   "FROM candidates")  # fmt: skip
    planted = [r for r in rows if r["label"] == "planted"]
    assert planted
    assert all((r["status"], r["error_class"]) == ("failed", "write_error") for r in planted)
    victim = {r["path"]: r for r in rows if r["label"] == "victim" and r["path"]}
    assert (out / "images" / "victim" / link_name).is_symlink()  # refused, left in place
    assert f"images/victim/{link_name}" not in victim
    # the hard link's name was replaced by a new file: the outside inode kept its bytes
    assert victim[f"images/victim/{hard_name}"]["status"] == "stored"
    assert (out / "images" / "victim" / hard_name).read_bytes() == hard_data
    stored = [r for r in rows if r["label"] == "victim" and r["status"] == "stored"]
    assert len(stored) == 5  # every other picture of the query was stored normally


@pytest.mark.parametrize("name", ["manifest.jsonl", "stats.json", "checkpoint.sqlite-lock"])
async def test_planted_output_file_is_not_written_through(
    emulator: EmulatorServer, tmp_path: Path, name: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(outside / "target")
    code = await asyncio.to_thread(crawl, out, emulator, "cats")
    assert code != 0  # refusing to write an output is an error, not a silent success
    assert tree(outside) == {"target": ("file", b"precious")}
    assert (out / name).is_symlink()


async def test_planted_shard_directory_is_refused(emulator: EmulatorServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "shards").symlink_to(outside, target_is_directory=True)
    code = await asyncio.to_thread(crawl, out, emulator, "cats", "--output-format", "webdataset")
    assert code != 0
    assert list(outside.iterdir()) == []


async def test_planted_images_directory_is_not_followed(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "cats").mkdir(parents=True)
    (outside / "cats" / "0123456789abcdef.jpg").write_bytes(b"someone else's file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "images").symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    await asyncio.to_thread(crawl, out, emulator, "dogs", "--label", "dogs")
    assert tree(outside) == before  # no outside/dogs created, no outside file deleted


async def test_planted_checkpoint_symlink_is_refused(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.sqlite").symlink_to(outside / "victim.sqlite")
    await asyncio.to_thread(crawl, out, emulator, "cats")
    assert list(outside.iterdir()) == []
