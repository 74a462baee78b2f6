"""Bombs hidden in an image's metadata: a small PNG whose text (zTXt) and colour-profile (iCCP)
chunks each inflate to 512 MiB. The pixel check cannot see them; Pillow's own chunk limits
must stop them before they are inflated, and the image must fail as a bomb, not be stored.

(Pixel bombs, truncation, formats and HTML/SVG are proven in tests/imaging/test_hashing.py
and, end to end, in test_hostile_crawl.py.)"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image

from bingcrawl.imaging.hashing import hash_image
from bingcrawl.records import HashFailure

MiB = 1024 * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _zeros_deflated(size: int) -> bytes:
    """A zlib stream of ``size`` zero bytes, built without compressing them all: after a full
    flush the compressor forgets its history, so every later 1 MiB block compresses to the
    same bytes. (The trailer's checksum is wrong; a reader that stops at its limit, as it
    must, never gets there.)"""
    comp = zlib.compressobj(9)
    block = bytes(MiB)
    first = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    return first + repeat * (size // MiB - 1) + comp.flush()


@pytest.fixture(scope="module")
def metadata_bomb() -> bytes:
    """A valid 64 x 64 PNG carrying two chunks that inflate to 512 MiB each."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, "PNG")
    png = buf.getvalue()
    z = _zeros_deflated(512 * MiB)
    header_end = 8 + 25  # signature + IHDR chunk
    extra = _chunk(b"zTXt", b"Comment\x00\x00" + z) + _chunk(b"iCCP", b"icc\x00\x00" + z)
    return png[:header_end] + extra + png[header_end:]


def test_metadata_bomb_fails_without_being_inflated(metadata_bomb: bytes) -> None:
    assert len(metadata_bomb) < 2 * MiB
    tracemalloc.start()
    try:
        result = hash_image(metadata_bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(result, HashFailure)
    assert result.error_class == "decompression_bomb"
    assert peak < 16 * MiB, (
        f"{peak / MiB:.0f} MiB allocated while judging a {len(metadata_bomb)} B file"
    )
