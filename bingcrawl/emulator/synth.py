"""Synthetic, photo-like pictures whose perceptual hashes are far apart by construction.

Every picture is identified by a *base* id and rendered deterministically from ``(seed, base)``:
smooth colour gradients, a horizon, a few soft shapes and a film-grain texture. Rendering works
on a small canvas with numpy, then Pillow upsamples it and adds grain in C, so one 480x360
picture costs a few milliseconds.

Why the hashes are separated: ``imagehash.phash`` keeps the signs (against their median) of the
8x8 lowest DCT frequencies of a 32x32 grey thumbnail. With distinct coefficients, exactly 32 of
the 64 sit above the median, and the DC term is always one of them. The renderer therefore
*prescribes* those 64 low frequencies: it projects the composed luminance onto the same cosine
basis and adds the correction that sets every coefficient to ``+-A`` (never near the median).
The prescribed sign patterns are weight-32 codewords of the extended BCH [64, 18, 22] code, so
two pictures of one namespace (the bases of one query: ``base >> 17``) differ in at least 24
bits. Each namespace permutes the 63 non-DC positions its own way, so pictures of different
namespaces look like independent random hashes (about 32 bits apart) instead of colliding.
Near-duplicate edits (rescale, recompression, brightness/contrast, format change) keep the low
frequencies, so their hashes equal the original's; a *retouch* (``render(base, retouch=k)``)
inverts ``k`` designated sign pairs, putting a copy exactly ``2k`` bits away, so the corpus
can spread its near duplicates over small non-zero distances on purpose.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops

__all__ = [
    "MAX_RETOUCH",
    "NAMESPACE_BITS",
    "SIZE_CLASSES",
    "ByteSpread",
    "SizeClass",
    "Synthesizer",
    "adjust",
    "encode",
    "mix_choice",
    "rescale",
    "stable_hash",
]

#: A base id is ``(namespace << NAMESPACE_BITS) | index``; hashes are well separated inside
#: one namespace (see the module docstring).
NAMESPACE_BITS = 17

#: Most (set, clear) pHash bit pairs a retouched near-duplicate swaps (see target_bits).
MAX_RETOUCH = 2

_CANVAS_WIDTH = 128  # numpy works on a canvas about this wide; Pillow upsamples it
_GRAIN_MARGIN = 64  # the grain tile is larger than the picture so each base can shift it
_GRAIN_TILE = 1024  # largest grain tile of a class whose pictures vary (repeated to cover)
_NORMAL = statistics.NormalDist()
_PNG_BORDER = 2  # PNGs get a fully transparent border this wide (a real alpha channel)


@dataclass(frozen=True, slots=True)
class ByteSpread:
    """Per-picture JPEG sizes that vary like those of the images a web search finds.

    Each picture gets a target size, lognormal over the bases (``median`` bytes, ``sigma``)
    and clamped to ``[low, high]``; its dimensions are then scaled so that its JPEG lands
    near the target, by the size model ``bytes = per_pixel * pixels + per_edge *
    sqrt(pixels)`` (measured for the class's quality and grain; the second term is the
    shapes' edges). ``margin`` keeps the clamped targets that far inside ``[low, high]``,
    so that the model's error (within +-3 % mostly, 6 % at worst) cannot push a picture out.
    """

    median: int
    sigma: float
    low: int
    high: int
    per_pixel: float
    per_edge: float
    margin: float = 0.06

    def estimate(self, pixels: int) -> float:
        """The size model's JPEG bytes for a picture of ``pixels`` pixels."""
        return self.per_pixel * pixels + self.per_edge * math.sqrt(pixels)

    def target(self, unit: float) -> float:
        """The target byte size at ``unit`` in (0, 1) of the lognormal, clamped."""
        z = _NORMAL.inv_cdf(unit)
        size = self.median * math.exp(self.sigma * z)
        return min(max(size, self.low * (1 + self.margin)), self.high * (1 - self.margin))

    def pixels(self, size: float) -> float:
        """The pixel count whose JPEG the size model puts at ``size`` bytes."""
        a, b = self.per_pixel, self.per_edge
        root = (-b + math.sqrt(b * b + 4.0 * a * size)) / (2.0 * a)
        return root * root


@dataclass(frozen=True, slots=True)
class SizeClass:
    """How large pictures of one ``image_size`` option are.

    ``scale`` multiplies the 480x360-class dimensions, ``quality`` is the JPEG quality of
    originals, ``grain`` the amplitude of the texture (it mostly decides the JPEG size).
    With a ``spread`` the dimensions vary per picture instead (see :class:`ByteSpread`).
    """

    scale: float
    quality: int
    grain: int
    spread: ByteSpread | None = None


#: ``image_size`` option -> size class; grain and quality are tuned so that the JPEG
#: originals land near the advertised size. ``web`` varies per picture like the finds of a
#: web search: lognormal, median 100 KB, sigma 1 (a tenth of the pictures over ~360 KB),
#: 10 KB to 2 MB (about 250x190 to 4,800x2,700 pixels).
SIZE_CLASSES: dict[str, SizeClass] = {
    "30k": SizeClass(scale=1.0, quality=85, grain=8),
    "200k": SizeClass(scale=2.1334, quality=90, grain=9),
    "1m": SizeClass(scale=4.2667, quality=93, grain=10),
    "web": SizeClass(
        scale=1.0,
        quality=85,
        grain=8,
        spread=ByteSpread(
            median=100_000,
            sigma=1.0,
            low=10_000,
            high=2_000_000,
            per_pixel=0.1555,
            per_edge=11.5,
        ),
    ),
}

#: (width, height, weight) of the 480x360-class aspect ratios: mostly 4:3, some portrait,
#: wide and square pictures so that size and aspect filters have something to select.
_ASPECTS: tuple[tuple[int, int, int], ...] = (
    (480, 360, 12),
    (360, 480, 3),
    (510, 340, 2),
    (560, 315, 2),
    (416, 416, 1),
)


def stable_hash(*parts: int | str | bytes) -> int:
    """A 64-bit hash of ``parts`` that is stable across processes and Python versions."""
    chunks = []
    for part in parts:
        if isinstance(part, bytes):
            tag, data = b"b", part
        elif isinstance(part, int):
            tag, data = b"i", str(part).encode()
        else:
            tag, data = b"s", part.encode("utf-8", "surrogatepass")
        # Type tag and length prefix: ("ab", "c") and ("a", "bc") or 1 and "1" never collide.
        chunks.append(tag + len(data).to_bytes(4, "big") + data)
    return int.from_bytes(hashlib.blake2b(b"".join(chunks), digest_size=8).digest(), "big")


def _unit(*parts: int | str | bytes) -> float:
    """A deterministic float in [0, 1) from ``parts``."""
    return stable_hash(*parts) / 2.0**64


@functools.cache
def _codebook() -> npt.NDArray[np.uint64]:
    """Weight-32 codewords of the extended BCH [64, 18, 22] code with bit 0 set.

    Bit 0 plays the DC coefficient, which is always above the median. Built once per process
    (about 30 ms); the returned array is read-only.
    """
    # Generator polynomial of the primitive narrow-sense BCH(63, 18) code, designed distance
    # 21 (roots alpha^1..alpha^20 over GF(64), x^6 + x + 1); bit i is the x^i coefficient.
    generator = 0x2F30B529D3D5
    rows = []
    for i in range(18):
        word = generator << i
        word |= (word.bit_count() & 1) << 63  # overall parity: extends d = 21 to 22
        rows.append(word)
    messages = np.arange(1 << 18, dtype=np.uint64)
    words = np.zeros(1 << 18, dtype=np.uint64)
    for i, row in enumerate(rows):
        bit = (messages >> np.uint64(i)) & np.uint64(1)
        words ^= bit * np.uint64(row)
    keep = (np.bitwise_count(words) == 32) & ((words & np.uint64(1)) == 1)
    book = np.ascontiguousarray(words[keep])
    book.setflags(write=False)
    return book


def _falloff(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The logistic step 1 / (1 + e^x), written with tanh so large ``x`` cannot overflow."""
    out: npt.NDArray[np.float32] = 0.5 - 0.5 * np.tanh(0.5 * x)
    return out


@functools.cache
def _cosines(n: int) -> npt.NDArray[np.float32]:
    """The 8 lowest DCT-II basis vectors sampled at ``n`` pixel centres (8 x n)."""
    u = (np.arange(n) + 0.5) / n
    basis = np.cos(np.pi * np.outer(np.arange(8), u)).astype(np.float32)
    basis.setflags(write=False)
    return basis


class Synthesizer:
    """Deterministic renderer of the pictures of one corpus (``seed``, ``image_size``).

    Instances are cheap apart from a grain tile (a few MB for the larger size classes) and
    safe to share between threads: they hold no mutable state after construction.
    """

    def __init__(self, seed: int = 0, image_size: str = "30k") -> None:
        if image_size not in SIZE_CLASSES:
            raise ValueError(f"unknown image_size {image_size!r}")
        self.seed = seed
        self.image_size = image_size
        self.size_class = SIZE_CLASSES[image_size]
        if self.size_class.spread is None:
            max_w = max(round(w * self.size_class.scale) for w, _, _ in _ASPECTS)
            max_h = max(round(h * self.size_class.scale) for _, h, _ in _ASPECTS)
        else:  # pictures up to ~5,000 px wide: a tile, repeated over the larger ones
            max_w = max_h = _GRAIN_TILE
        rng = np.random.default_rng([seed, 0x6E0153])
        g = self.size_class.grain
        grain = rng.integers(
            128 - g, 128 + g + 1, size=(max_h + _GRAIN_MARGIN, max_w + _GRAIN_MARGIN)
        )
        self._grain = Image.fromarray(grain.astype(np.uint8), "L").convert("RGB")

    # -- cheap traits (no rendering) -------------------------------------------------------

    def dimensions(self, base: int) -> tuple[int, int]:
        """The (width, height) of the original picture of ``base``."""
        total = sum(weight for _, _, weight in _ASPECTS)
        pick = stable_hash(self.seed, "aspect", base) % total
        for w, h, weight in _ASPECTS:
            if pick < weight:
                scale = self.size_class.scale
                spread = self.size_class.spread
                if spread is not None:
                    target = self.target_bytes(base)
                    scale *= math.sqrt(spread.pixels(target) / (w * h))
                return max(16, round(w * scale)), max(16, round(h * scale))
            pick -= weight
        raise AssertionError("unreachable")  # pragma: no cover

    def target_bytes(self, base: int) -> float:
        """The JPEG size the original of ``base`` is made to have, for a class with a
        :class:`ByteSpread` (``web``); 0.0 for the fixed-size classes."""
        spread = self.size_class.spread
        if spread is None:
            return 0.0
        return spread.target((stable_hash(self.seed, "bytes", base) + 0.5) / 2.0**64)

    def accent_color(self, base: int) -> str:
        """The dominant colour of ``base`` as 6 hex digits (the API's ``accentColor``)."""
        y, cb, cr = self._tone(base)
        rgb = (y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb)
        return "".join(f"{min(max(round(c), 0), 255):02X}" for c in rgb)

    def target_bits(self, base: int, retouch: int = 0) -> npt.NDArray[np.bool_]:
        """The 64 pHash bits ``base`` is rendered to have, in ``imagehash`` row-major order.

        ``retouch`` swaps that many (set, clear) bit pairs: a retouched copy of the picture
        is ``2 * retouch`` bits from the original and still at least 24 - 2 * retouch from
        every other picture of the namespace.
        """
        if not 0 <= retouch <= MAX_RETOUCH:
            raise ValueError(f"retouch must be in 0..{MAX_RETOUCH}, got {retouch}")
        book = _codebook()
        namespace, index = base >> NAMESPACE_BITS, base & ((1 << NAMESPACE_BITS) - 1)
        block, position = divmod(index, len(book))
        word = int(book[position])
        bits = np.array([(word >> i) & 1 for i in range(64)], dtype=bool)
        perm = np.random.default_rng([self.seed, namespace, block, 0xC0DE]).permutation(63)
        out = np.empty(64, dtype=bool)
        out[0] = True
        out[1:] = bits[1:][perm]
        if retouch:
            # Nested choices: retouch 2 keeps retouch 1's swap and adds one.
            rng = np.random.default_rng([self.seed, namespace, index, 0x7E7])
            ones = rng.permutation(np.flatnonzero(out[1:]) + 1)[:retouch]
            zeros = rng.permutation(np.flatnonzero(~out[1:]) + 1)[:retouch]
            out[ones] = False
            out[zeros] = True
        return out

    def target_hash(self, base: int, retouch: int = 0) -> int:
        """:meth:`target_bits` as the integer ``int(str(imagehash.phash(img)), 16)`` gives."""
        value = 0
        for bit in self.target_bits(base, retouch):
            value = (value << 1) | int(bit)
        return value

    def _tone(self, base: int) -> tuple[float, float, float]:
        """Mean luminance and chroma of ``base`` (shared by the renderer and accent_color)."""
        h = stable_hash(self.seed, "tone", base)
        y = 105.0 + 45.0 * (h & 0xFFFF) / 0x10000
        cb = -30.0 + 60.0 * ((h >> 16) & 0xFFFF) / 0x10000
        cr = -30.0 + 60.0 * ((h >> 32) & 0xFFFF) / 0x10000
        return y, cb, cr

    # -- rendering -------------------------------------------------------------------------

    def render(self, base: int, retouch: int = 0) -> Image.Image:
        """Render the picture of ``base`` (an RGB image of :meth:`dimensions`).

        ``retouch`` > 0 renders a lightly edited copy: the same scene with a few of its
        broadest light/dark patterns inverted, ``2 * retouch`` pHash bits away.
        """
        width, height = self.dimensions(base)
        cw = _CANVAS_WIDTH
        ch = max(8, round(cw * height / width))
        rng = np.random.default_rng([self.seed, base >> 32, base & 0xFFFFFFFF])
        mean_y, mean_cb, mean_cr = self._tone(base)

        yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        yy = (yy + 0.5) / ch
        xx = (xx + 0.5) / cw
        lum = np.full((ch, cw), mean_y, dtype=np.float32)
        cb = np.full((ch, cw), mean_cb, dtype=np.float32)
        cr = np.full((ch, cw), mean_cr, dtype=np.float32)

        # A tilted, soft horizon separating two colour regions ("sky" and "ground").
        level = rng.uniform(0.3, 0.75) + rng.uniform(-0.15, 0.15) * (xx - 0.5)
        sky = _falloff((yy - level) * rng.uniform(12.0, 40.0))
        cb += sky * rng.uniform(-35.0, 35.0)
        cr += sky * rng.uniform(-35.0, 35.0)
        lum += sky * rng.uniform(-20.0, 30.0)
        cb += rng.uniform(-15.0, 15.0) * (xx - 0.5)
        cr += rng.uniform(-15.0, 15.0) * (yy - 0.5)

        # A few soft ellipses; their low frequencies are overwritten below, their edges stay.
        aspect = width / height
        for _ in range(int(rng.integers(3, 7))):
            cy, cx = rng.uniform(0.05, 0.95, 2)
            ry, rx = rng.uniform(0.05, 0.28, 2)
            theta = rng.uniform(0.0, np.pi)
            dy, dx = yy - cy, (xx - cx) * aspect
            a = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
            b = (dy * np.cos(theta) - dx * np.sin(theta)) / ry
            mask = _falloff((np.sqrt(a * a + b * b) - 1.0) * rng.uniform(5.0, 25.0))
            lum += mask * rng.uniform(-35.0, 35.0)
            cb += mask * rng.uniform(-45.0, 45.0)
            cr += mask * rng.uniform(-45.0, 45.0)

        lum += self._low_frequency_correction(self.target_bits(base, retouch), lum, rng)
        rgb = np.stack(
            (lum + 1.402 * cr, lum - 0.344136 * cb - 0.714136 * cr, lum + 1.772 * cb), axis=-1
        )
        canvas = Image.fromarray(np.clip(rgb, 0.0, 255.0).astype(np.uint8), "RGB")
        picture = canvas.resize((width, height), Image.Resampling.BILINEAR)
        gx = int(rng.integers(0, _GRAIN_MARGIN))
        gy = int(rng.integers(0, _GRAIN_MARGIN))
        return ImageChops.add(picture, self._grain_of(gx, gy, width, height), 1.0, -128)

    def _grain_of(self, gx: int, gy: int, width: int, height: int) -> Image.Image:
        """The grain texture of a picture: the tile from ``(gx, gy)``, repeated as needed."""
        tile_w = self._grain.width - _GRAIN_MARGIN
        tile_h = self._grain.height - _GRAIN_MARGIN
        if width <= tile_w and height <= tile_h:  # always so for the fixed-size classes
            return self._grain.crop((gx, gy, gx + width, gy + height))
        period = self._grain.crop((gx, gy, gx + tile_w, gy + tile_h))
        grain = Image.new("RGB", (width, height))
        for y in range(0, height, tile_h):
            for x in range(0, width, tile_w):
                grain.paste(period, (x, y))
        return grain

    @staticmethod
    def _low_frequency_correction(
        bits: npt.NDArray[np.bool_], lum: npt.NDArray[np.float32], rng: np.random.Generator
    ) -> npt.NDArray[np.float32]:
        """The field that sets the 8x8 lowest cosine coefficients of ``lum`` to the targets.

        The canvas cosines are orthogonal, so one projection gives the exact correction; the
        targets are ``+-amplitude`` with a 1/f fall-off that keeps the look natural.
        """
        ch, cw = lum.shape
        cy, cx = _cosines(ch), _cosines(cw)
        i, j = np.divmod(np.arange(64), 8)
        amplitude = 6.0 * (1.0 + 2.0 / np.maximum(i + j, 1)) * rng.uniform(0.85, 1.3, 64)
        target = np.where(bits, amplitude, -amplitude).reshape(8, 8)
        target[0, 0] = 0.0  # the DC is the mean luminance, already set
        coeffs = (cy @ lum @ cx.T) * (4.0 / (ch * cw))
        coeffs[0, :] /= 2.0
        coeffs[:, 0] /= 2.0
        delta = (target - coeffs).astype(np.float32)
        delta[0, 0] = 0.0
        correction: npt.NDArray[np.float32] = cy.T @ delta @ cx
        return correction


# -- edits and encoders ---------------------------------------------------------------------


def rescale(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A downscaled copy of ``picture`` (what a site serving a smaller rendition does)."""
    return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def adjust(picture: Image.Image, brightness: float, contrast: float) -> Image.Image:
    """``picture`` with brightness and contrast scaled by the given factors (1.0 = same)."""
    lut: list[int] = []
    for _ in range(3):
        lut.extend(
            min(max(round(((v - 128.0) * contrast + 128.0) * brightness), 0), 255)
            for v in range(256)
        )
    return picture.point(lut)


@functools.lru_cache(maxsize=32)
def _png_alpha(size: tuple[int, int]) -> Image.Image:
    """Opaque alpha with a transparent border (real transparency the pHash ignores)."""
    alpha = Image.new("L", size, 0)
    w, h = size
    if w > 2 * _PNG_BORDER and h > 2 * _PNG_BORDER:
        alpha.paste(255, (_PNG_BORDER, _PNG_BORDER, w - _PNG_BORDER, h - _PNG_BORDER))
    return alpha


def encode(picture: Image.Image, fmt: str, quality: int = 85) -> bytes:
    """Encode ``picture`` as ``fmt`` (jpeg, png, gif or webp); ``quality`` is for jpeg/webp.

    PNGs carry an alpha channel with a transparent border (the corpus labels them
    ``Transparent``); GIFs are single-frame with an adaptive palette.
    """
    out = io.BytesIO()
    if fmt == "jpeg":
        picture.save(out, "JPEG", quality=quality)
    elif fmt == "png":
        rgba = picture.convert("RGBA")
        rgba.putalpha(_png_alpha(picture.size))
        rgba.save(out, "PNG", compress_level=1)
    elif fmt == "gif":
        picture.quantize(256, method=Image.Quantize.FASTOCTREE).save(out, "GIF")
    elif fmt == "webp":
        picture.save(out, "WEBP", quality=min(quality, 90), method=4)
    else:
        raise ValueError(f"unsupported format {fmt!r}")
    return out.getvalue()


def mix_choice(options: Sequence[str], weights: Sequence[float], unit: float) -> str:
    """Pick from ``options`` by ``weights`` (any positive total) with ``unit`` in [0, 1).

    An option of weight 0 is never picked, even when rounding leaves ``unit`` past the end.
    """
    total = float(sum(weights))
    acc = 0.0
    last = options[-1]
    for option, weight in zip(options, weights, strict=True):
        if weight <= 0:
            continue
        last = option
        acc += weight / total
        if unit < acc:
            return option
    return last
