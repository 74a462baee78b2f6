"""Atomic, confined writes: complete files or none, never outside OUT, never via symlinks."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from bingcrawl.errors import BingCrawlError
from bingcrawl.store import UnsafePathError, atomic_open, atomic_write_bytes
from bingcrawl.store.atomic import ImageFileWriter


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.mark.parametrize("durable", [False, True])
def test_writes_creates_dirs_and_replaces(tmp_path: Path, durable: bool) -> None:
    path = atomic_write_bytes(tmp_path, "images/cat/0123456789abcdef.jpg", b"one", durable=durable)
    assert path == tmp_path / "images" / "cat" / "0123456789abcdef.jpg"
    assert path.read_bytes() == b"one"
    atomic_write_bytes(tmp_path, "images/cat/0123456789abcdef.jpg", b"two", durable=durable)
    assert path.read_bytes() == b"two"
    assert _all_files(tmp_path) == ["images/cat/0123456789abcdef.jpg"]  # no temp files left


def test_failure_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path, "manifest.jsonl", b"old\n")

    def write_then_fail() -> None:
        with atomic_open(tmp_path, "manifest.jsonl") as fh:
            fh.write(b"new, half written")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert (tmp_path / "manifest.jsonl").read_bytes() == b"old\n"
    assert _all_files(tmp_path) == ["manifest.jsonl"]


@pytest.mark.parametrize(
    "name",
    [
        "../escape.jpg",
        "images/../../escape.jpg",
        "images/./x.jpg",
        "/etc/passwd",
        "images//x.jpg",
        "images/cat/",
        "",
        "images/a\x00b.jpg",
        "..",
    ],
)
def test_paths_outside_the_root_are_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "out"
    root.mkdir()
    with pytest.raises(UnsafePathError):
        atomic_write_bytes(root, name, b"x")
    assert _all_files(tmp_path) == []


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "images").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symlink"):
        atomic_write_bytes(root, "images/cat/0123456789abcdef.jpg", b"x")
    assert list(elsewhere.iterdir()) == []


def test_symlink_at_the_destination_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "images" / "cat").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (root / "images" / "cat" / "0123456789abcdef.jpg").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        atomic_write_bytes(root, "images/cat/0123456789abcdef.jpg", b"x")
    assert victim.read_text() == "precious"


def test_file_in_place_of_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").write_text("a file, not a directory")
    with pytest.raises(UnsafePathError):
        atomic_write_bytes(tmp_path, "images/cat/x.jpg", b"x")


def test_root_may_itself_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    atomic_write_bytes(link, "images/cat/x.jpg", b"x")
    assert (real / "images" / "cat" / "x.jpg").read_bytes() == b"x"


def test_unsafe_path_error_is_both_a_bingcrawl_error_and_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError) as info:
        atomic_write_bytes(tmp_path, "../x", b"x")
    assert isinstance(info.value, BingCrawlError)
    assert isinstance(info.value, OSError)
    assert info.value.filename == "../x"


def test_permissions_follow_umask(tmp_path: Path) -> None:
    path = atomic_write_bytes(tmp_path, "images/cat/x.jpg", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 & ~umask


def test_image_writer_keeps_a_bounded_number_of_directories_open(tmp_path: Path) -> None:
    # One handle per label, kept forever, ran into the 1,024 open-files limit at ~1,018
    # labels ("Too many open files" for every later image).
    writer = ImageFileWriter(tmp_path, max_open_dirs=8)
    try:
        for i in range(40):
            writer.write(f"label{i:02d}", "0123456789abcdef.jpg", b"x" * i)
            assert writer.open_dirs <= 8
        # a label evicted earlier is simply opened again
        writer.write("label00", "fedcba9876543210.jpg", b"again")
    finally:
        writer.close()
    assert writer.open_dirs == 0
    assert (tmp_path / "images/label00/fedcba9876543210.jpg").read_bytes() == b"again"
    assert len(list((tmp_path / "images").iterdir())) == 40


async def test_image_writer_writes_bursts_of_puts_from_one_thread(tmp_path: Path) -> None:
    writer = ImageFileWriter(tmp_path)
    threads: set[int] = set()
    write = writer.write

    def spy(label: str, name: str, data: bytes) -> str:
        threads.add(threading.get_ident())
        return write(label, name, data)

    writer.write = spy  # type: ignore[method-assign]
    try:
        names = [f"{i:016x}.jpg" for i in range(50)]
        paths = await asyncio.gather(*(writer.put("cat", n, n.encode()) for n in names))
        assert paths == [f"images/cat/{n}" for n in names]
        # one more burst after the thread went idle, and a write queued from another thread
        assert await writer.put("dog", "00000000000000aa.jpg", b"late") == (
            "images/dog/00000000000000aa.jpg"
        )
        assert writer.submit("dog", "00000000000000bb.jpg", b"sub").result(5) == (
            "images/dog/00000000000000bb.jpg"
        )
    finally:
        writer.close()
    assert len(threads) == 1
    assert threading.get_ident() not in threads
    assert all((tmp_path / "images/cat" / n).read_bytes() == n.encode() for n in names)
    assert len(_all_files(tmp_path)) == 52  # no temp file left behind


async def test_a_failed_write_fails_its_caller_only(tmp_path: Path) -> None:
    writer = ImageFileWriter(tmp_path)
    try:
        results = await asyncio.gather(
            writer.put("cat", "0000000000000001.jpg", b"one"),
            writer.put("cat", "../escape.jpg", b"bad"),
            writer.put("cat", "0000000000000002.jpg", b"two"),
            return_exceptions=True,
        )
    finally:
        writer.close()
    assert results[0] == "images/cat/0000000000000001.jpg"
    assert isinstance(results[1], UnsafePathError)
    assert results[2] == "images/cat/0000000000000002.jpg"
    assert _all_files(tmp_path) == [
        "images/cat/0000000000000001.jpg",
        "images/cat/0000000000000002.jpg",
    ]


async def test_close_finishes_queued_writes_and_refuses_new_ones(tmp_path: Path) -> None:
    writer = ImageFileWriter(tmp_path)
    release = threading.Event()
    write = writer.write

    def slow(label: str, name: str, data: bytes) -> str:
        release.wait(5)
        return write(label, name, data)

    writer.write = slow  # type: ignore[method-assign]
    queued = [asyncio.ensure_future(writer.put("cat", f"{i:016x}.jpg", b"x")) for i in range(5)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.to_thread(writer.close)
    assert len(_all_files(tmp_path)) == 5
    assert len(await asyncio.gather(*queued)) == 5
    with pytest.raises(RuntimeError, match="closed"):
        await writer.put("cat", "00000000000000ff.jpg", b"x")
    writer.close()  # idempotent


async def test_a_caller_cancelled_before_its_write_started_cancels_it(tmp_path: Path) -> None:
    writer = ImageFileWriter(tmp_path)
    started, release = threading.Event(), threading.Event()
    write = writer.write

    def blocking(label: str, name: str, data: bytes) -> str:
        started.set()
        release.wait(5)
        return write(label, name, data)

    writer.write = blocking  # type: ignore[method-assign]
    try:
        first = asyncio.ensure_future(writer.put("cat", "0000000000000001.jpg", b"one"))
        await asyncio.to_thread(started.wait, 5)  # the thread is inside the first write
        second = asyncio.ensure_future(writer.put("cat", "0000000000000002.jpg", b"two"))
        await asyncio.sleep(0)
        second.cancel()
        release.set()
        assert await first == "images/cat/0000000000000001.jpg"
        with pytest.raises(asyncio.CancelledError):
            await second
    finally:
        await asyncio.to_thread(writer.close)
    assert _all_files(tmp_path) == ["images/cat/0000000000000001.jpg"]
