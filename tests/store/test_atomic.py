"""Atomic, confined writes: complete files or none, never outside OUT, never via symlinks."""

from __future__ import annotations

import os
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
