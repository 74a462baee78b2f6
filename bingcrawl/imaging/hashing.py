"""Decode, validate and hash image bytes, in worker processes.

:func:`hash_image` is the whole job for one image: sha256 of the bytes, format sniffed from the
magic number, a pixel-count guard checked *before* anything is decoded, a full decode that
detects truncation, and a 64-bit perceptual hash. It is pure and picklable, so
:class:`HashPool` can run it (in batches, :func:`hash_batch`) in a process pool while the event
loop keeps downloading.

Decisions worth knowing:

* The format's ``ImageFile`` class is constructed directly instead of calling
  ``PIL.Image.open``: ``open`` runs Pillow's process-global ``MAX_IMAGE_PIXELS`` check, which
  warns (an error under a strict warnings policy) or raises for sizes we want to judge against a
  per-call ``max_pixels``, and the only knob is global state. The plugin class parses the header
  only, so the size is checked before a single pixel is decoded. WebP is checked from its RIFF
  header even earlier, because libwebp allocates the whole canvas when the decoder is created.
* JPEG draft mode (DCT-domain downscaling by 2, 4 or 8 in libjpeg) keeps both sides of the
  decoded image at least :data:`DRAFT_MIN_SIDE` pixels, four times the 32 x 32 working size of
  pHash. Measured on 240 synthetic JPEGs (250 x 180 to 4000 x 3000, quality 60-95): 82 % of
  hashes identical to a full decode, 15 % differ by 2 bits, 2.5 % by 4 bits - the same
  distribution as re-encoding the image at 5 quality points lower - for a 2-5x faster decode.
  libjpeg still reads every scan in draft mode, so truncation is detected as in a full decode.
* Transparent pixels are composited over white (how most pages show a transparent logo), so the
  hash does not depend on the colour values hidden under alpha 0. 16-bit greyscale is scaled,
  not clipped. The EXIF orientation is applied before hashing, so a photo and a copy rotated by
  its EXIF tag hash alike; ``width`` and ``height`` stay those of the stored pixels.
* With the ``regions`` near-duplicate method (the default) each picture gets two hashes, as
  copies on the web are edited: ``phash`` of the picture with its flat borders trimmed
  (letterbox bars and padding: rows or columns from an edge whose pixels are 99 % within 3
  grey levels of the edge's colour, at least 3 % of the side; see :func:`trim_box`), and
  ``centre``, of the trimmed picture's centre (20 % margins on every side), which a corner
  logo or a caption bar does not touch. A picture without flat borders hashes as the
  ``whole`` method hashes it, except from a copy reduced to a short side of 64 px or more
  (:func:`_region_hashes`). Measured: the same CPU per image as ``whole`` on web-sized
  pictures (+19 % on 256 px ones, whose second hash costs as much as the first), and on real
  photographs edited as the web edits them (``python -m benchmarks.threshold``) recall rises
  by 19-20 points, with as few merges of distinct pictures (README, "Near duplicates").
* pHash (the default ``algo``) is :func:`bingcrawl.imaging.phash.phash_pixels`: the bits of
  ``imagehash.phash``, identical (tests compare them with imagehash on hundreds of pictures of
  every mode and size, and :func:`hash_image` with the imagehash pipeline it replaced), for
  about a third of its CPU and without scipy in the workers (its import was ~0.2 s of CPU per
  worker). Measured on the benchmark's pictures: 680 -> ~580 us per image for decode and
  both hashes (the JPEG decode itself is ~380 us of it; the regions and their two hashes
  220 -> 115 us). The hashers take pixel arrays: the two regions are numpy views of one
  reduced picture, not Pillow crops copied again into arrays. The other algorithms are
  imagehash's, on the same regions.
* ``whash`` runs at a fixed 64 x 64 scale: imagehash's default scale depends on the decoded
  size, which would make the hash depend on resolution and on draft mode.
* ``convert_to`` (``--convert-to jpg|png``) re-encodes, in the same worker, every image not
  already in the target format, so a dataset has one format for readers that expect one
  (torchvision's ``ImageFolder`` skips ``.gif``; webdataset's ``to_tuple("jpg", ...)``). An
  image already in the target format is stored byte for byte. A converted image is decoded
  in full (no draft), its EXIF orientation applied to the pixels (the tag does not survive),
  its first frame taken (animated GIF), transparency composited over white for JPEG (PNG
  keeps it), CMYK and 16-bit made 8-bit RGB / greyscale for JPEG; the ICC profile is kept.
  JPEG is written at quality :data:`JPEG_QUALITY` with 4:4:4 chroma. The stored file's
  sha256 (its name and the exact-dedup key) is that of the converted bytes; the perceptual
  hash is the downloaded picture's, so near-duplicate detection is unchanged.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import io
import logging
import os
import signal
import struct
import sys
import warnings
from collections.abc import Callable, Sequence
from multiprocessing.queues import Queue
from types import MappingProxyType
from typing import Final

import imagehash
import numpy as np
import numpy.typing as npt
from PIL import GifImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin

from bingcrawl.errors import ConfigError
from bingcrawl.imaging.phash import phash_pixels
from bingcrawl.imaging.sniff import ALLOWED_FORMATS, EXTENSIONS, SNIFF_BYTES, sniff_format
from bingcrawl.records import (
    CONVERT_TO,
    HASH_ALGOS,
    NEAR_DUP_METHODS,
    ErrorClass,
    Hashed,
    HashFailure,
)

try:
    from PIL import WebPImagePlugin
except ImportError:  # Pillow built without libwebp: WebP bytes become unsupported_format
    WebPImagePlugin = None  # type: ignore[assignment]

__all__ = [
    "CONVERT_TO",
    "DEFAULT_MAX_PIXELS",
    "DRAFT_MIN_SIDE",
    "HASH_ALGOS",
    "JPEG_QUALITY",
    "NEAR_DUP_METHODS",
    "convert_image",
    "hash_batch",
    "hash_image",
    "trim_box",
    "worker_initializer",
]

logger = logging.getLogger(__name__)


#: JPEG quality of a converted image (visually lossless for training; ~3x smaller than PNG).
JPEG_QUALITY: Final = 95

_TARGET_FORMAT: Final = MappingProxyType({"jpg": "jpeg", "png": "png"})

#: Default pixel budget: 64 megapixels (8000 x 8000), about 256 MB once decoded as RGBA.
DEFAULT_MAX_PIXELS: Final = 64_000_000

#: JPEG draft decoding keeps both sides at least this long (4x pHash's 32 px working size).
DRAFT_MIN_SIDE: Final = 128

#: Short side (pixels) the ``regions`` method reduces a picture to before hashing it.
REGION_SIDE: Final = 64
#: Pictures with a shorter side than this (as stored, in pixels) get no ``centre`` hash: the
#: centre of a thumbnail is too few pixels to tell look-alikes apart (measured: on 128-pixel
#: tiles, centre hashes merged 2-10x more distinct pictures than the whole picture's hash).
MIN_CENTRE_SIDE: Final = 160
#: Margin of the ``centre`` region on each side, as a fraction of the trimmed picture's side.
CENTRE_MARGIN: Final = 0.2
# Flat borders (trim_box): a row or column belongs to a border when this share of its pixels
# is within _BORDER_TOLERANCE grey levels of the edge's colour; a border is trimmed when it
# is at least _BORDER_MIN of the side, and at most _BORDER_MAX of it is looked at.
_BORDER_SHARE: Final = 0.99
_BORDER_TOLERANCE: Final = 3
_BORDER_MIN: Final = 0.03
_BORDER_MAX: Final = 0.35

_DETAIL_MAX = 160
_MASK64 = (1 << 64) - 1

#: A greyscale picture as the hashers take it: a (height, width) uint8 array (crops: views).
Pixels = npt.NDArray[np.uint8]


def _imagehash(fn: Callable[[Image.Image], imagehash.ImageHash]) -> Callable[[Pixels], int]:
    """An imagehash hasher of a greyscale pixel array, returning the hash as an int."""

    def hasher(pixels: Pixels) -> int:
        return _to_int(fn(Image.fromarray(np.ascontiguousarray(pixels))))

    return hasher


# Each algorithm's hasher: greyscale pixels (a (height, width) uint8 array, crops are views)
# -> 64-bit int. pHash is bingcrawl's bit-identical copy of imagehash's
# (bingcrawl.imaging.phash: the same bits for a fraction of the CPU).
_HASHERS: Final[MappingProxyType[str, Callable[[Pixels], int]]] = MappingProxyType(
    {
        "phash": phash_pixels,
        "dhash": _imagehash(imagehash.dhash),
        "ahash": _imagehash(imagehash.average_hash),
        "whash": _imagehash(functools.partial(imagehash.whash, image_scale=64)),
    }
)

_OPENERS: Final[MappingProxyType[str, Callable[[io.BytesIO], ImageFile.ImageFile]]] = (
    MappingProxyType(
        {
            "jpeg": JpegImagePlugin.JpegImageFile,
            "png": PngImagePlugin.PngImageFile,
            "gif": GifImagePlugin.GifImageFile,
            **({"webp": WebPImagePlugin.WebPImageFile} if WebPImagePlugin is not None else {}),
        }
    )
)

# Values of the EXIF Orientation tag and the transpose that shows the image upright.
_ORIENTATION: Final = MappingProxyType(
    {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
)
_EXIF_ORIENTATION_TAG: Final = 0x0112

# Messages Pillow (and struct) use when the data ran out.
_TRUNCATION_HINTS: Final = ("truncated", "requires a buffer", "incomplete", "no more images")


class _Rejected(Exception):
    """Internal: the bytes were refused with a given error class (never escapes this module)."""

    def __init__(self, error_class: str, detail: str) -> None:
        super().__init__(detail)
        self.error_class, self.detail = error_class, detail


# --------------------------------------------------------------------------- pure functions


def hash_image(
    data: bytes,
    *,
    algo: str = "phash",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
    convert_to: str = "keep",
    method: str = "regions",
) -> Hashed | HashFailure:
    """Validate, decode and hash the bytes of one image.

    Returns :class:`~bingcrawl.records.Hashed` for a decodable JPEG, PNG, GIF (first frame) or
    WebP image, else :class:`~bingcrawl.records.HashFailure` with ``not_an_image`` (HTML, SVG,
    random or corrupt bytes), ``unsupported_format`` (BMP, TIFF, ...), ``decompression_bomb``
    (more than ``max_pixels`` pixels, checked before decoding) or ``truncated``. A bad file never
    raises; an unknown ``algo`` or a non-positive ``max_pixels`` raises
    :class:`~bingcrawl.errors.ConfigError`. With ``convert_to`` ``jpg`` or ``png``, an image
    in another format comes back re-encoded (see :func:`convert_image` and the module
    docstring); one that cannot be re-encoded fails as ``not_an_image``. ``method`` is the
    near-duplicate method (:data:`NEAR_DUP_METHODS`): ``regions`` also sets ``centre``.
    """
    if method not in NEAR_DUP_METHODS:
        raise ConfigError(
            "--near-dup-method", f"unknown {method!r}; choose one of {NEAR_DUP_METHODS}"
        )
    if convert_to not in CONVERT_TO:
        raise ConfigError("--convert-to", f"unknown {convert_to!r}; choose one of {CONVERT_TO}")
    hasher = _HASHERS.get(algo)
    if hasher is None:
        raise ConfigError("algo", f"unknown hash algorithm {algo!r}; choose one of {HASH_ALGOS}")
    if max_pixels < 1:
        raise ConfigError("max_pixels", f"must be a positive number of pixels, got {max_pixels}")
    data = bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    fmt = sniff_format(data[:SNIFF_BYTES])
    if fmt is None:
        return HashFailure(ErrorClass.NOT_AN_IMAGE, _describe_unknown(data))
    if fmt not in ALLOWED_FORMATS:
        return HashFailure(ErrorClass.UNSUPPORTED_FORMAT, f"{fmt} is not an allowed format")
    if fmt not in _OPENERS:
        return HashFailure(ErrorClass.UNSUPPORTED_FORMAT, f"this Pillow cannot decode {fmt}")
    try:
        width, height, phash, centre = _decode_and_hash(
            data, fmt, max_pixels, draft, hasher, regions=method == "regions"
        )
    except _Rejected as exc:
        return HashFailure(exc.error_class, exc.detail)
    target = _TARGET_FORMAT.get(convert_to)
    if target is None or target == fmt:
        return Hashed(
            digest, phash, width, height, format=fmt, ext=EXTENSIONS[fmt], size=len(data),
            centre=centre,
        )  # fmt: skip
    try:
        body, width, height = convert_image(data, target)
    except Exception as exc:  # a picture that decoded for hashing but cannot be re-encoded
        return HashFailure(
            ErrorClass.NOT_AN_IMAGE, f"cannot convert to {convert_to}: {_short(exc)}"
        )
    return Hashed(
        hashlib.sha256(body).hexdigest(), phash, width, height, format=target,
        ext=EXTENSIONS[target], size=len(body), body=body, centre=centre,
    )  # fmt: skip


def hash_batch(
    items: Sequence[bytes],
    algo: str,
    max_pixels: int,
    draft: bool,
    convert_to: str = "keep",
    method: str = "regions",
) -> list[Hashed | HashFailure]:
    """Hash several images (what one :class:`HashPool` task runs); results keep the input order."""
    return [
        hash_image(
            item,
            algo=algo,
            max_pixels=max_pixels,
            draft=draft,
            convert_to=convert_to,
            method=method,
        )
        for item in items
    ]


def convert_image(data: bytes, target: str) -> tuple[bytes, int, int]:
    """Re-encode a decodable image as ``target`` (``jpeg`` or ``png``): (bytes, width, height).

    Called only after :func:`hash_image` accepted the bytes (format allowed, size within
    ``max_pixels``), so the full decode here is bounded. See the module docstring for what
    happens to frames, orientation, transparency, CMYK and 16-bit pictures.
    """
    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)  # the first frame of an animation
        icc = img.info.get("icc_profile")
        picture = _oriented(img)
        picture = _for_jpeg(picture) if target == "jpeg" else _for_png(picture)
        buf = io.BytesIO()
        options: dict[str, object] = {"icc_profile": icc} if icc else {}
        if target == "jpeg":
            picture.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0, **options)
        else:
            picture.save(buf, "PNG", **options)
        return buf.getvalue(), picture.width, picture.height


def _oriented(img: Image.Image) -> Image.Image:
    """The decoded first frame, turned upright by its EXIF orientation (best effort)."""
    img.load()
    frame = img.copy()  # detached from the file (and from the other frames)
    return _upright(frame, img)


def _for_jpeg(img: Image.Image) -> Image.Image:
    """8-bit RGB or greyscale, transparency composited over white (JPEG has no alpha)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _to_gray(img)
    if img.has_transparency_data:
        return _over_white(img).convert("RGB")
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("RGB")  # P, 1, CMYK, YCbCr, LA without alpha data, ...


def _for_png(img: Image.Image) -> Image.Image:
    """A mode PNG stores; transparency and 16-bit greyscale are kept."""
    if img.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"):
        return img
    if img.has_transparency_data:
        return img.convert("RGBA")
    return img.convert("RGB")  # CMYK, YCbCr, F, ...


def worker_initializer(ready: Queue[int] | None = None) -> None:
    """Prepare a hash worker process (the ``initializer`` of :class:`HashPool`'s executor).

    SIGINT is ignored: Ctrl-C reaches the whole process group, and the parent decides how to
    stop (checkpoint, then shut the pool down); a worker dying on it would break the pool and
    lose the batches in flight. The warning filters are process-wide, which is safe only here, in
    a process that does nothing else: Pillow's DecompressionBombWarning becomes an error (so
    :func:`hash_image` reports it), and Pillow's advisory UserWarnings (corrupt EXIF, ...) are
    dropped instead of spamming stderr - the image is judged by whether its pixels decode.
    On Linux the worker also asks the kernel to kill it when its parent dies (a ``kill -9`` of
    the crawler would otherwise leave workers behind, blocked on their pipe). Last, the
    worker's pid goes to ``ready``: the pool knows the worker is set up.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    warnings.simplefilter("ignore", UserWarning)
    if ready is not None:
        ready.put(os.getpid())


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl: the pool's own shutdown still reaps workers
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _decode_and_hash(
    data: bytes,
    fmt: str,
    max_pixels: int,
    draft: bool,
    hasher: Callable[[Pixels], int],
    *,
    regions: bool,
) -> tuple[int, int, int, int | None]:
    """Decode ``data`` to upright greyscale and hash it: (width, height, hash, centre hash).

    With ``regions`` the hash is of the picture with its flat borders trimmed and the centre
    hash of the trimmed picture's centre; otherwise of the whole picture, and no centre hash.
    """
    if fmt == "webp":
        _check_webp_header(data, max_pixels)
    try:
        img = _OPENERS[fmt](io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            raise _Rejected(
                ErrorClass.DECOMPRESSION_BOMB,
                f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}",
            )
        if draft and fmt == "jpeg":
            # Decode straight to luma at the smallest 1/2, 1/4 or 1/8 scale that keeps both
            # sides >= DRAFT_MIN_SIDE (Pillow picks the scale from the requested size).
            img.draft("L", (DRAFT_MIN_SIDE, DRAFT_MIN_SIDE))
        img.load()
        gray = _upright(_to_gray(_shrink(img)), img)
        if regions:
            phash, centre = _region_hashes(
                gray, hasher, centre=min(width, height) >= MIN_CENTRE_SIDE
            )
        else:
            phash, centre = hasher(np.asarray(gray)), None
    except _Rejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _Rejected(ErrorClass.DECOMPRESSION_BOMB, _short(exc)) from exc
    except MemoryError as exc:
        raise _Rejected(ErrorClass.DECOMPRESSION_BOMB, "ran out of memory while decoding") from exc
    except Exception as exc:
        # Failure is data here: whatever a malformed file makes a Pillow plugin raise
        # (OSError, SyntaxError, struct.error, ValueError, ...), the worker reports it.
        raise _Rejected(_classify(exc, data, fmt), _short(exc)) from exc
    return width, height, phash, centre


def trim_box(gray: Image.Image) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of ``gray`` without its flat borders.

    A flat border is a run of rows (or columns) from an edge in which 99 % of the pixels are
    within 3 grey levels of the edge's median: letterbox bars, padding, a plain frame. Runs
    shorter than 3 % of the side are kept (JPEG noise along an edge), and a run that reaches
    35 % of the side is no border (a blank or near-blank picture): that side is kept.
    The tolerance is tight on purpose: a looser one trims smooth sky or sand, and then a
    copy with other contrast is trimmed elsewhere than its original.
    """
    return _trim_pixels(np.asarray(gray))


def _trim_pixels(pixels: Pixels) -> tuple[int, int, int, int]:
    """:func:`trim_box` of greyscale pixels (a (height, width) uint8 array)."""
    h, w = pixels.shape
    if h < 8 or w < 8:
        return 0, 0, w, h
    a = pixels.astype(np.int16)

    def run(lines: npt.NDArray[np.int16], side: int) -> int:
        # The flat rows at the start of ``lines`` (the rows from one edge inward). Most
        # pictures' edge row is not flat: that is decided on the sorted row (its median and
        # how many pixels lie within the tolerance of it) for a few microseconds.
        row = np.sort(lines[0])
        edge = int(row[row.size // 2])
        within = np.searchsorted(row, edge + _BORDER_TOLERANCE, "right") - np.searchsorted(
            row, edge - _BORDER_TOLERANCE, "left"
        )
        if within < _BORDER_SHARE * row.size:
            return 0
        lines = lines[: max(1, int(side * _BORDER_MAX))]
        flat = (np.abs(lines - edge) <= _BORDER_TOLERANCE).mean(axis=1) >= _BORDER_SHARE
        if flat.all():
            return 0  # flat as far as we look: a blank picture, not a border
        n = int(np.argmin(flat))
        return n if n >= _BORDER_MIN * side else 0

    top, bottom = run(a, h), run(a[::-1], h)
    left, right = run(a.T, w), run(a.T[::-1], w)
    return left, top, w - right, h - bottom


def _region_hashes(
    gray: Image.Image, hasher: Callable[[Pixels], int], *, centre: bool
) -> tuple[int, int | None]:
    """The hash of the trimmed picture and of its centre (see :func:`trim_box`).

    Both are taken from a copy box-reduced to a short side of at least :data:`REGION_SIDE`
    pixels: the hashers' Lanczos resize costs in proportion to the pixels it reads (172 us
    from 240 x 180, most of a pHash's cost), and a 32 x 32 hash needs no more. Measured on
    the evaluation set, hashing the centre from the decoded picture instead found as many
    copies and merged as few pictures, for 6-8 % more CPU on small pictures. Without
    ``centre`` (a small picture: :data:`MIN_CENTRE_SIDE`) the centre hash is None. The
    reduced copy becomes one pixel array and both regions are views of it (crops of the
    picture copied twice more, each then copied into an array of its own, before).
    """
    factor = max(1, min(gray.size) // REGION_SIDE)
    pixels: Pixels = np.asarray(gray.reduce(factor) if factor > 1 else gray)
    left, top, right, bottom = _trim_pixels(pixels)
    frame = pixels[top:bottom, left:right]
    if not centre:
        return hasher(frame), None
    mx = round((right - left) * CENTRE_MARGIN)
    my = round((bottom - top) * CENTRE_MARGIN)
    middle = frame[my : frame.shape[0] - my, mx : frame.shape[1] - mx]
    return hasher(frame), hasher(middle)


#: Decoded pictures larger than this (longest side) are box-reduced before conversion: a
#: 64 MP RGBA PNG would otherwise cost several copies of 256 MB while it is made grey.
SHRINK_ABOVE = 1024


def _shrink(img: Image.Image) -> Image.Image:
    """A box-reduced copy of a large decoded picture (the hash looks at 32x32 anyway)."""
    factor = max(img.size) // SHRINK_ABOVE
    if factor < 2 or img.mode in ("P", "1"):  # palette images: reduced as indices, wrongly
        return img
    try:
        return img.reduce(factor)
    except ValueError:  # a mode reduce() does not support: convert at full size instead
        return img


def _check_webp_header(data: bytes, max_pixels: int) -> None:
    """Check a WebP file's RIFF length and canvas size before libwebp allocates the canvas."""
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > len(data):
        raise _Rejected(
            ErrorClass.TRUNCATED, f"RIFF header announces {riff_size + 8} bytes, got {len(data)}"
        )
    size = _webp_canvas(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise _Rejected(
            ErrorClass.DECOMPRESSION_BOMB,
            f"{size[0]}x{size[1]} is {size[0] * size[1]} pixels, over the limit of {max_pixels}",
        )


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first WebP chunk (VP8X, VP8L or VP8), or None if unreadable."""
    chunk = data[12:16]
    try:
        if chunk == b"VP8X":
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return w, h
        if chunk == b"VP8L":
            (bits,) = struct.unpack_from("<I", data, 21)
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8 ":
            w, h = struct.unpack_from("<HH", data, 26)
            return w & 0x3FFF, h & 0x3FFF
    except struct.error:
        return None
    return None


def _to_gray(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit greyscale, compositing transparency over white."""
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img)
        if mode.startswith("I;16") or (mode == "I" and arr.size and int(arr.max()) > 255):
            arr = np.clip(arr, 0, 0xFFFF).astype(np.uint32) >> 8
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if img.has_transparency_data:
        return _over_white(img).convert("L")
    if mode == "L":
        return img
    if mode in ("1", "P", "RGB", "RGBX"):
        return img.convert("L")
    return img.convert("RGB").convert("L")


def _orientation(source: Image.Image) -> Image.Transpose | None:
    """The transpose that shows ``source`` upright by its EXIF tag (None: none, or unreadable)."""
    try:
        orientation = source.getexif().get(_EXIF_ORIENTATION_TAG)
    except Exception as exc:
        # A broken EXIF block must not cost us an otherwise good image: use it as stored.
        logger.debug("ignoring unreadable EXIF: %s", _short(exc))
        return None
    return _ORIENTATION.get(orientation) if isinstance(orientation, int) else None


def _upright(gray: Image.Image, source: Image.Image) -> Image.Image:
    """Apply the EXIF orientation of ``source`` to ``gray`` (best effort)."""
    method = _orientation(source)
    return gray.transpose(method) if method is not None else gray


def _over_white(img: Image.Image) -> Image.Image:
    """``img`` composited over white (RGBA): what a page shows of a transparent picture."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba)


def _to_int(h: imagehash.ImageHash) -> int:
    """The hash bits as an unsigned int, first bit most significant (= imagehash's hex)."""
    bits = np.asarray(h.hash, dtype=bool).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big") & _MASK64


def _classify(exc: BaseException, data: bytes, fmt: str) -> str:
    """TRUNCATED when the error or the file's missing end marker says the data was cut."""
    text = str(exc).lower()
    if isinstance(exc, EOFError | struct.error) or any(h in text for h in _TRUNCATION_HINTS):
        return ErrorClass.TRUNCATED
    if "decompressed data too large" in text:
        return ErrorClass.DECOMPRESSION_BOMB
    if not _has_end_marker(data, fmt):
        return ErrorClass.TRUNCATED
    return ErrorClass.NOT_AN_IMAGE


def _has_end_marker(data: bytes, fmt: str) -> bool:
    tail = data[-64:]
    if fmt == "jpeg":
        return tail.rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")
    if fmt == "png":
        return b"IEND" in tail
    if fmt == "gif":
        return tail.rstrip(b"\x00").endswith(b";")
    return True  # WebP: the RIFF length was checked before decoding


def _describe_unknown(data: bytes) -> str:
    if not data:
        return "empty body"
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML document, not an image"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:1024].lower()):
        return "SVG (vector) image, not a raster image"
    if head.startswith((b"{", b"[")):
        return "JSON or text document, not an image"
    return f"unrecognised bytes {data[:8].hex()}..."


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."
