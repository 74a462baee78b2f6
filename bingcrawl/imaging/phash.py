"""pHash exactly as ``imagehash.phash`` computes it, bit for bit, for a fraction of its CPU.

``imagehash.phash`` resizes the picture to 32 x 32 greyscale with Pillow's Lanczos filter,
takes scipy's unnormalised DCT-II over both axes, keeps the top-left 8 x 8 coefficients and
sets a bit for each one above their median. :func:`phash` computes the same thing; the
hashes are identical (``tests/imaging/test_phash.py`` compares them with imagehash on ~800
pictures of every kind, size and mode; a one-off comparison of ``hash_image`` before and after
on 14,895 files - the benchmark's pictures, real photographs with their edited copies,
generated edge cases - found no difference). One hash costs 20-40 us instead of ~100 us
(measured on the benchmark's regions, 50-120 px), and no worker imports scipy (~0.2 s of CPU
each).

Decisions worth knowing:

* **The resize is Pillow's arithmetic with cached weights.** Pillow recomputes its Lanczos
  weights on every call (two libm ``sin`` per tap, ~1,600 taps for a 32 x 32 resize): most
  of the 35-60 us a resize from ~100 px costs. The weights depend only on the input length,
  so :func:`_weights` asks Pillow for them once per length (see there) and caches them.
  The two passes are then matrix products in float64 of integers whose sums stay below
  2**53, so exact in any summation order, each followed by Pillow's rounding (``+ 2**21``,
  ``>> 22``, clipped to 0..255), in Pillow's pass order (vertical first for a picture much
  taller than wide) - ``ImagingResampleInner`` and the 8-bit passes of ``Resample.c``.
  Inputs longer than :data:`MAX_SIDE` use Pillow's resize (the hashers see such inputs
  only with ``--near-dup-method whole``), so at most 256 lengths are cached (8 MiB).
* **A self-check guards the copy.** The first call compares the resize with Pillow's on a
  fixed set of pictures of awkward sizes; if any pixel differs (a Pillow release that
  changed its resampling), every resize goes through Pillow from then on, with a warning.
* **The DCT is a matrix product**, ``C @ P @ C.T`` with the 8 x 32 rows of the DCT-II
  matrix that the 8 x 8 corner needs. Its coefficients equal scipy's up to float rounding
  (at most 7e-11 on the benchmark's pictures, on values up to ~1e6), so a bit can differ
  only when a coefficient lies within that rounding of the median: a true tie, as in a
  flat picture, whose AC coefficients are all zero and whose bits scipy's rounding noise
  decides. When any coefficient lies within :data:`TIE` of the median, the hash is
  computed by imagehash itself (scipy imported then, once per process). On the benchmark's
  10,000 hashes the closest coefficient was 0.03 from the median: no picture with content
  goes that way.
* **Matrix products are kept small** (:data:`_BLAS_CHUNK` multiply-adds per call, rows or
  columns in chunks): OpenBLAS hands larger products to its thread pool, measured at
  1.5-2.5 ms instead of 45 us for one 180 x 240 pass on a busy 2-core machine.
"""

from __future__ import annotations

import functools
import logging
from typing import Final

import imagehash
import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["MAX_SIDE", "TIE", "phash", "phash_pixels", "reference_phash"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: imagehash's defaults: an 8 x 8 hash from a 32 x 32 picture (hash_size x highfreq_factor).
HASH: Final = 8
SIDE: Final = 32
#: Inputs with a longer side use Pillow's resize (see the module docstring).
MAX_SIDE: Final = 256
#: A coefficient this close to the median makes the hash imagehash's own (a tie).
TIE: Final = 1e-6

_PRECISION: Final = 22  # Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2
_ONE: Final = float(1 << _PRECISION)
_HALF: Final = float(1 << (_PRECISION - 1))
_SCALE: Final = 1.0 / _ONE  # exact: a power of two
_BLAS_CHUNK: Final = 1 << 18

# DCT-II rows 0..7 over 32 samples, unnormalised as scipy.fftpack.dct: 2 cos(pi k (2n + 1) / 64).
_DCT: Final[FloatArray] = 2.0 * np.cos(
    np.pi * np.arange(HASH)[:, None] * (2 * np.arange(SIDE)[None, :] + 1) / (2 * SIDE)
)
_DCT_T: Final[FloatArray] = np.ascontiguousarray(_DCT.T)


def phash(img: Image.Image) -> int:
    """The 64-bit pHash of ``img`` as an int, first bit most significant: the bits of
    ``imagehash.phash(img)``, identical (see the module docstring)."""
    return phash_pixels(np.asarray(img if img.mode == "L" else img.convert("L")))


def phash_pixels(pixels: npt.NDArray[np.uint8]) -> int:
    """:func:`phash` of an 8-bit greyscale picture given as a (height, width) array (a view,
    such as a crop, is fine)."""
    h, w = pixels.shape
    if 0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE and _resize_is_exact():
        small = _resize(pixels)
    else:
        resized = Image.fromarray(pixels).resize((SIDE, SIDE), Image.Resampling.LANCZOS)
        small = np.asarray(resized, dtype=np.float64)
    low = (_DCT @ small @ _DCT_T).ravel()
    ordered = np.sort(low)
    median = (ordered[31] + ordered[32]) / 2
    if float(np.abs(low - median).min()) <= TIE:
        return reference_phash(Image.fromarray(np.ascontiguousarray(pixels)))
    return int.from_bytes(np.packbits(low > median).tobytes(), "big")


def reference_phash(img: Image.Image) -> int:
    """``imagehash.phash(img)`` as an int (first bit most significant): the reference."""
    bits = np.asarray(imagehash.phash(img).hash, dtype=bool).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


# --------------------------------------------------------------------------- the resize


@functools.lru_cache(maxsize=MAX_SIDE)
def _weights(size: int) -> tuple[FloatArray, int, int]:
    """Pillow's fixed-point Lanczos weights from ``size`` samples to :data:`SIDE`, read from
    Pillow itself.

    Returns a (size x SIDE) matrix (row i: the weight of input i in each output) and the
    first and one-past-last input sample any output reads. Pillow resizes a 32-bit integer
    picture with the same weights as an 8-bit one (``precompute_coeffs``), kept as doubles,
    and rounds each output half away from zero - what ``normalize_coeffs_8bpc`` does to the
    weights of an 8-bit resize. So resizing the width of a (size x size) picture holding
    2**22 on its diagonal (products and sums of it are exact) gives, in row i, input i's
    fixed-point weights: one C call, 0.04-0.35 ms a length, at most 64 KiB cached a length.
    """
    eye = np.zeros((size, size), dtype=np.int32)
    np.fill_diagonal(eye, 1 << _PRECISION)
    probe = Image.fromarray(eye).resize((SIDE, size), Image.Resampling.LANCZOS)
    matrix = np.asarray(probe, dtype=np.float64)
    read = np.flatnonzero(matrix.any(axis=1))
    matrix.setflags(write=False)
    return matrix, int(read[0]), int(read[-1]) + 1


def _product(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a @ b`` in calls of at most :data:`_BLAS_CHUNK` multiply-adds (see the docstring)."""
    m, k = a.shape
    n = b.shape[1]
    if m * k * n <= _BLAS_CHUNK:
        return a @ b
    if m >= n:
        step = max(1, _BLAS_CHUNK // (k * n))
        return np.concatenate([a[i : i + step] @ b for i in range(0, m, step)])
    step = max(1, _BLAS_CHUNK // (m * k))
    return np.concatenate([a @ b[:, j : j + step] for j in range(0, n, step)], axis=1)


def _rounded(sums: FloatArray) -> FloatArray:
    """Pillow's ``clip8``: (sum + 2**21) >> 22, clipped to 0..255 (in place, exact)."""
    sums += _HALF
    sums *= _SCALE
    np.floor(sums, out=sums)
    return np.clip(sums, 0.0, 255.0, out=sums)


def _resize(pixels: npt.NDArray[np.uint8]) -> FloatArray:
    """``Image.resize((32, 32), LANCZOS)`` of an 8-bit greyscale picture, as float64
    (``ImagingResampleInner``: which passes, in which order, on which rows)."""
    h, w = pixels.shape
    x = pixels.astype(np.float64)
    if h > SIDE and h - SIDE > (w - SIDE) * 2:  # much taller than wide: vertical first
        x = _rounded(_product(_weights(h)[0].T, x))
        return _rounded(_product(x, _weights(w)[0])) if w != SIDE else x
    if w != SIDE:
        if h != SIDE:
            vertical, first, last = _weights(h)
            x = _rounded(_product(x[first:last], _weights(w)[0]))
            return _rounded(_product(vertical[first:last].T, x))
        return _rounded(_product(x, _weights(w)[0]))
    if h != SIDE:
        return _rounded(_product(_weights(h)[0].T, x))
    return x


# Sizes the self-check resizes (w, h): upscales, 1-pixel sides, exact multiples, both pass
# orders, the longest accepted side, and the regions method's usual inputs.
_CHECK_SIZES: Final = (
    (1, 1), (5, 77), (31, 33), (32, 200), (200, 32), (33, 255), (45, 256), (64, 48),
    (85, 64), (120, 90), (90, 120), (100, 57), (256, 256), (97, 131), (255, 7),
)  # fmt: skip


@functools.cache
def _resize_is_exact() -> bool:
    """True if :func:`_resize` matches Pillow's resize on :data:`_CHECK_SIZES` (once a process)."""
    rng = np.random.default_rng(20240601)
    for w, h in _CHECK_SIZES:
        for pixels in (
            rng.integers(0, 256, (h, w), dtype=np.uint8),
            ((np.add.outer(np.arange(h), 3 * np.arange(w)) * 7) % 256).astype(np.uint8),
        ):
            ours = _resize(pixels)
            small = Image.fromarray(pixels, "L").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
            if not np.array_equal(ours, np.asarray(small)):
                logger.warning(
                    "this Pillow resizes differently from bingcrawl's copy of its Lanczos "
                    "filter; pHash falls back to Pillow's resize (same hashes, more CPU)"
                )
                return False
    return True
