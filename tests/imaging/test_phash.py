"""bingcrawl's pHash is imagehash's, bit for bit: on pictures of every kind, size and mode,
through :func:`hash_image` end to end, and in each of its parts (resize, ties, self-check).

imagehash stays the reference: every expected value here is computed by it (on Pillow's own
crops and resizes), never by the code under test.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw

from bingcrawl.imaging import hashing, phash
from bingcrawl.imaging.hashing import (
    CENTRE_MARGIN,
    DRAFT_MIN_SIDE,
    MIN_CENTRE_SIDE,
    REGION_SIDE,
    hash_image,
    trim_box,
)
from bingcrawl.records import Hashed

MODES = ("L", "RGB", "RGBA", "LA", "P", "CMYK", "I;16", "I", "1", "F")


def reference(img: Image.Image) -> int:
    """imagehash.phash as the int imagehash prints (its hex string)."""
    return int(str(imagehash.phash(img)), 16)


def content(kind: str, w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """An RGB picture of one kind: the smooth, textured, flat and symmetric cases."""
    if kind == "noise":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if kind == "photo":
        field = rng.integers(0, 256, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3))
        img = Image.fromarray(field.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            box = (x, y, x + int(rng.integers(1, w + 1)), y + int(rng.integers(1, h + 1)))
            draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        noise = rng.normal(0, 5, (h, w, 3))
        return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
    if kind == "flat":  # every AC coefficient is 0: a tie at the median
        return Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    if kind == "gradient":
        ramp = np.add.outer(np.arange(h) * 3, np.arange(w) * 5) % 256
        return Image.fromarray(np.stack([ramp] * 3, axis=-1).astype(np.uint8))
    if kind == "mirror":  # left-right symmetric: odd horizontal coefficients are 0
        half = rng.integers(0, 256, (h, (w + 1) // 2, 3), dtype=np.uint8)
        return Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1)[:, :w])
    if kind == "checker":
        cells = (np.add.outer(np.arange(h) // 4, np.arange(w) // 4) % 2) * 255
        return Image.fromarray(np.stack([cells] * 3, axis=-1).astype(np.uint8))
    if kind == "bars":  # letterbox: flat bands above and below a picture
        img = Image.new("RGB", (w, h), (0, 0, 0))
        inner = content("photo", w, max(1, h * 3 // 4), rng)
        img.paste(inner, (0, (h - inner.height) // 2))
        return img
    raise AssertionError(kind)


KINDS = ("photo", "noise", "flat", "gradient", "mirror", "checker", "bars")


def pictures(n: int, seed: int) -> Iterator[tuple[str, Image.Image]]:
    """``n`` pictures of every kind, sizes from 1 px to past MAX_SIDE, every mode."""
    rng = np.random.default_rng(seed)
    fixed = [(1, 1), (1, 40), (40, 1), (2, 2), (7, 5), (31, 33), (32, 32), (33, 32),
             (32, 200), (200, 32), (64, 64), (255, 256), (256, 256), (257, 80), (80, 257),
             (600, 20)]  # fmt: skip
    for i in range(n):
        if i < len(fixed):
            w, h = fixed[i]
        else:
            w, h = (int(x) for x in rng.integers(1, 320, 2))
        kind = KINDS[i % len(KINDS)]
        mode = MODES[(i // len(KINDS)) % len(MODES)]
        img = content(kind, w, h, rng)
        if mode in ("I;16", "I", "F"):
            img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
            img = img if mode == "I;16" else img.convert(mode)
        elif mode != "RGB":
            img = img.convert(mode)
        yield f"{kind} {w}x{h} {mode}", img


def test_phash_is_imagehash_on_pictures_of_every_kind_size_and_mode() -> None:
    checked = 0
    for name, img in pictures(700, seed=7):
        assert phash.phash(img) == reference(img), name
        checked += 1
    assert checked == 700


def test_the_resize_is_pillows_for_every_length_up_to_max_side() -> None:
    rng = np.random.default_rng(3)
    assert phash._resize_is_exact()
    for side in range(1, phash.MAX_SIDE + 1):
        other = int(rng.integers(1, phash.MAX_SIDE + 1))
        for h, w in ((side, other), (other, side)):
            pixels = rng.integers(0, 256, (h, w), dtype=np.uint8)
            small = Image.fromarray(pixels).resize((32, 32), Image.Resampling.LANCZOS)
            assert np.array_equal(phash._resize(pixels), np.asarray(small)), (w, h)


def test_views_hash_like_the_crops_they_stand_for() -> None:
    img = content("photo", 150, 110, np.random.default_rng(5)).convert("L")
    pixels = np.asarray(img)
    view = pixels[9:101, 17:133]
    assert not view.flags.c_contiguous
    assert phash.phash_pixels(view) == reference(img.crop((17, 9, 133, 101)))


def test_ties_are_decided_by_imagehash_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = phash.reference_phash

    def spy(img: Image.Image) -> int:
        calls.append(img.size)
        return real(img)

    monkeypatch.setattr(phash, "reference_phash", spy)
    flat = Image.new("L", (90, 70), 128)
    assert phash.phash(flat) == reference(flat)
    assert calls == [(90, 70)]
    textured = content("photo", 90, 70, np.random.default_rng(1)).convert("L")
    assert phash.phash(textured) == reference(textured)
    assert calls == [(90, 70)]  # a picture with content never needs it


def test_a_pillow_that_resizes_otherwise_is_used_as_it_is(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = phash._resize

    def off_by_one(pixels: Any) -> Any:
        out = real(pixels)
        out[0, 0] = (out[0, 0] + 1) % 256
        return out

    phash._resize_is_exact.cache_clear()
    monkeypatch.setattr(phash, "_resize", off_by_one)
    try:
        with caplog.at_level(logging.WARNING, logger="bingcrawl.imaging.phash"):
            for name, img in pictures(60, seed=11):
                assert phash.phash(img) == reference(img), name
        assert "falls back to Pillow's resize" in caplog.text
    finally:
        phash._resize_is_exact.cache_clear()


def test_large_products_are_cut_into_small_ones_with_the_same_result() -> None:
    rng = np.random.default_rng(2)
    for shape_a, shape_b in (((700, 256), (256, 32)), ((32, 256), (256, 700)), ((5, 9), (9, 3))):
        a = rng.integers(-300, 300, shape_a).astype(np.float64)
        b = rng.integers(-(2**22), 2**22, shape_b).astype(np.float64)
        assert np.array_equal(phash._product(a, b), a @ b)


# --------------------------------------------------------------------------- end to end


def old_region_hashes(gray: Image.Image, *, centre: bool) -> tuple[int, int | None]:
    """What hash_image computed before bingcrawl had its own pHash: imagehash on Pillow
    crops of the reduced picture (the pre-change ``_region_hashes``, verbatim in effect)."""
    factor = max(1, min(gray.size) // REGION_SIDE)
    small = gray.reduce(factor) if factor > 1 else gray
    left, top, right, bottom = box = trim_box(small)
    frame = small if box == (0, 0, *small.size) else small.crop(box)
    if not centre:
        return reference(frame), None
    mx = round((right - left) * CENTRE_MARGIN)
    my = round((bottom - top) * CENTRE_MARGIN)
    middle = frame.crop((mx, my, frame.width - mx, frame.height - my))
    return reference(frame), reference(middle)


def decoded_gray(data: bytes) -> tuple[Image.Image, tuple[int, int]]:
    """The upright greyscale picture hash_image hashes (its own decode, draft included)."""
    img = Image.open(io.BytesIO(data))
    size = img.size
    if img.format == "JPEG":
        img.draft("L", (DRAFT_MIN_SIDE, DRAFT_MIN_SIDE))
    img.load()
    return hashing._upright(hashing._to_gray(hashing._shrink(img)), img), size


def encoded(seed: int) -> Iterator[tuple[str, bytes]]:
    """Files of every allowed format, with EXIF orientations, CMYK, 16-bit, palettes,
    transparency, tiny and large pictures."""
    rng = np.random.default_rng(seed)
    sizes = [(1, 1), (3, 2), (8, 8), (40, 30), (159, 161), (160, 160), (480, 360), (360, 480),
             (1100, 300), (2100, 1400), (77, 333)]  # fmt: skip
    for i in range(len(sizes) * 6):
        w, h = sizes[i % len(sizes)]
        kind = KINDS[(i // len(sizes) + i) % len(KINDS)]
        img = content(kind, w, h, rng)
        variant = i % 9
        buf = io.BytesIO()
        if variant == 0:
            img.save(buf, "JPEG", quality=85)
        elif variant == 1:
            exif = Image.Exif()
            exif[0x0112] = int(rng.integers(2, 9))
            img.save(buf, "JPEG", quality=90, exif=exif)
        elif variant == 2:
            img.convert("CMYK").save(buf, "JPEG", quality=80)
        elif variant == 3:
            img.convert("L").save(buf, "JPEG", quality=75, progressive=True)
        elif variant == 4:
            rgba = img.convert("RGBA")
            rgba.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
            rgba.save(buf, "PNG")
        elif variant == 5:
            Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257).save(buf, "PNG")
        elif variant == 6:
            img.convert("P").save(buf, "GIF")
        elif variant == 7:
            img.save(buf, "WEBP", quality=80)
        else:
            img.convert("P").save(buf, "PNG", transparency=0)
        yield f"{kind} {w}x{h} variant {variant}", buf.getvalue()


@pytest.fixture(scope="module")
def files() -> list[tuple[str, bytes]]:
    return list(encoded(seed=23))


@pytest.mark.parametrize("method", ["regions", "whole"])
def test_hash_image_gives_the_hashes_imagehash_gives(
    method: str, files: list[tuple[str, bytes]]
) -> None:
    checked = 0
    for name, data in files:
        result = hash_image(data, method=method)
        assert isinstance(result, Hashed), (name, result)
        gray, (width, height) = decoded_gray(data)
        if method == "whole":
            expected = (reference(gray), None)
        else:
            expected = old_region_hashes(gray, centre=min(width, height) >= MIN_CENTRE_SIDE)
        assert (result.phash, result.centre) == expected, name
        checked += 1
    assert checked == 66


def test_other_algorithms_hash_the_same_regions(files: list[tuple[str, bytes]]) -> None:
    algos: dict[str, Callable[[Image.Image], imagehash.ImageHash]] = {
        "dhash": imagehash.dhash,
        "ahash": imagehash.average_hash,
    }
    for name, data in files[:22]:
        gray, _ = decoded_gray(data)
        factor = max(1, min(gray.size) // REGION_SIDE)
        small = gray.reduce(factor) if factor > 1 else gray
        frame = small.crop(trim_box(small))
        for algo, fn in algos.items():
            result = hash_image(data, algo=algo, method="regions")
            assert isinstance(result, Hashed), (name, result)
            assert result.phash == int(str(fn(frame)), 16), (name, algo)
