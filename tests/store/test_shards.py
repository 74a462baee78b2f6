"""Shard appends: every byte of a member is written before it counts (a short write used to
be recorded as stored, leaving a torn member)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from bingcrawl.store import shards


def test_an_append_that_the_os_writes_in_pieces_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwrite = os.pwrite

    def short_pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        return real_pwrite(fd, bytes(data[:1000]), offset)  # at most 1,000 bytes a call

    monkeypatch.setattr(shards.os, "pwrite", short_pwrite)
    writer = shards.ShardWriter(tmp_path, shard_size=10, group_by="all", durable=False)
    try:
        body = os.urandom(50_000)
        placed = writer.submit("cat", "0123456789abcdef", "jpg", body, {"k": 1}).result()
    finally:
        writer.close()
    shard = tmp_path / placed.path
    assert shard.stat().st_size == placed.end + 1024  # the member, then the end-of-archive
    with tarfile.open(shard) as tar:
        member = tar.extractfile("0123456789abcdef.jpg")
        assert member is not None
        assert member.read() == body


def test_a_write_that_makes_no_progress_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards.os, "pwrite", lambda fd, data, offset: 0)
    writer = shards.ShardWriter(tmp_path, shard_size=10, group_by="all", durable=False)
    try:
        with pytest.raises(OSError, match="no progress"):
            writer.submit("cat", "0123456789abcdef", "jpg", b"x" * 100, {}).result()
    finally:
        writer.close()
