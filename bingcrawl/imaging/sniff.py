"""Identify an image format from its first bytes, never from a Content-Type header.

The download worker sniffs the first chunk so it can drop HTML, SVG or JSON early without
downloading the rest; the hash pool decodes and validates properly later.
"""

from __future__ import annotations

from bingcrawl.records import EXTENSIONS

__all__ = ["ALLOWED_FORMATS", "EXTENSIONS", "SNIFF_BYTES", "sniff_format"]

#: Raster formats bingcrawl stores, by the lower-case name Pillow gives them.
ALLOWED_FORMATS: frozenset[str] = frozenset({"jpeg", "png", "gif", "webp"})

#: File extension for each allowed format.

#: How many leading bytes :func:`sniff_format` needs.
SNIFF_BYTES = 16

_BMP = b"BM"
_TIFF = (b"II*\x00", b"MM\x00*")


def sniff_format(head: bytes) -> str | None:
    """Return the format named by the magic number at the start of ``head``.

    Returns one of ``jpeg``, ``png``, ``gif``, ``webp`` (allowed), ``bmp``, ``tiff``, ``ico``,
    ``avif``/``heif`` (recognised raster formats outside the allow-list), or ``None`` when the
    bytes are not a recognised raster image (HTML, SVG, JSON, random bytes, too short).
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in _TIFF:
        return "tiff"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ico"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1"):
            return "heif"
    if head.startswith(_BMP) and len(head) >= 14:
        return "bmp"
    return None
