"""hash_image on real encoded images (made with Pillow here), and HashPool over real processes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import multiprocessing
import os
import signal
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, JpegImagePlugin

from bingcrawl.errors import ConfigError
from bingcrawl.imaging import hashpool
from bingcrawl.imaging.hashing import DRAFT_MIN_SIDE, HASH_ALGOS, hash_batch, hash_image
from bingcrawl.imaging.hashpool import HashPool
from bingcrawl.records import ErrorClass, Hashed, HashFailure

# --------------------------------------------------------------------------- test images


def photo(w: int, h: int, seed: int) -> Image.Image:
    """A photo-like RGB image: smooth colour field, a few shapes, mild texture."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (rng.integers(3, 9), rng.integers(3, 9), 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(5):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        dx, dy = int(rng.integers(w // 10, w // 2)), int(rng.integers(h // 10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([x, y, x + dx, y + dy], fill=colour)
    noise = rng.normal(0, 6, (h, w, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def reference(data: bytes, fn: Callable[..., imagehash.ImageHash] = imagehash.phash) -> int:
    """imagehash on a full Pillow decode, as an int (the hex string imagehash prints)."""
    return int(str(fn(Image.open(io.BytesIO(data)))), 16)


def bits(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def error_class(result: Hashed | HashFailure) -> str | None:
    return result.error_class if isinstance(result, HashFailure) else None


@pytest.fixture(scope="module")
def sample() -> Image.Image:
    return photo(480, 360, seed=1)


# --------------------------------------------------------------------------- hash_image


@pytest.mark.parametrize(
    ("fmt", "ext", "options"),
    [
        ("jpeg", "jpg", {"quality": 90}),
        ("png", "png", {}),
        ("gif", "gif", {}),
        ("webp", "webp", {"quality": 90}),
    ],
)
def test_hashes_each_allowed_format(
    sample: Image.Image, fmt: str, ext: str, options: dict[str, Any]
) -> None:
    data = encode(sample, fmt.upper(), **options)
    result = hash_image(data, draft=False)
    assert isinstance(result, Hashed)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.width, result.height) == (480, 360)
    assert (result.format, result.ext, result.size) == (fmt, ext, len(data))
    # Without draft mode the hash is exactly imagehash's on a full decode.
    assert result.phash == reference(data)
    assert 0 <= result.phash < 2**64


def test_every_algorithm_matches_imagehash(sample: Image.Image) -> None:
    data = encode(sample, "PNG")
    refs = {
        "phash": reference(data, imagehash.phash),
        "dhash": reference(data, imagehash.dhash),
        "ahash": reference(data, imagehash.average_hash),
        "whash": reference(data, lambda im: imagehash.whash(im, image_scale=64)),
    }
    assert set(refs) == set(HASH_ALGOS)
    for algo, expected in refs.items():
        result = hash_image(data, algo=algo)
        assert isinstance(result, Hashed)
        assert result.phash == expected, algo


def test_draft_decoding_keeps_the_phash_and_reports_full_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drafts: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: Any) -> Any:
        out = real_draft(self, mode, size)
        drafts.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    sizes = [(480, 360), (640, 480), (1024, 768), (1600, 1200), (333, 517), (1920, 1080)]
    for seed, (w, h) in enumerate(sizes * 2):
        data = encode(photo(w, h, seed=100 + seed), "JPEG", quality=85)
        drafted, full = hash_image(data, draft=True), hash_image(data, draft=False)
        assert isinstance(drafted, Hashed)
        assert isinstance(full, Hashed)
        assert bits(drafted.phash, full.phash) <= 2, (w, h)
        assert (drafted.width, drafted.height) == (full.width, full.height) == (w, h)
    # Draft mode really decoded smaller images, never below DRAFT_MIN_SIDE.
    assert len(drafts) == len(sizes) * 2
    assert all(min(dw, dh) >= DRAFT_MIN_SIDE for dw, dh in drafts)
    assert sum(dw < 480 for dw, _ in drafts) >= len(sizes)


@pytest.mark.parametrize("draft", [True, False])
@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_detected_in_draft_mode_too(
    sample: Image.Image, draft: bool, progressive: bool
) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = encode(sample, "JPEG", quality=90, progressive=progressive)
    for keep in (len(data) // 10, len(data) // 2, len(data) * 9 // 10, len(data) - 1):
        result = hash_image(data[:keep], draft=draft)
        assert error_class(result) == ErrorClass.TRUNCATED, keep


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP"])
def test_truncated_png_gif_webp(sample: Image.Image, fmt: str) -> None:
    data = encode(sample, fmt)
    for keep in (40, len(data) // 3, len(data) * 9 // 10):
        assert error_class(hash_image(data[:keep])) == ErrorClass.TRUNCATED, keep


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<!DOCTYPE html><html><body>Not found</body></html>",
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>',
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
        b'{"error": "nope"}',
        np.random.default_rng(3).bytes(4096),
    ],
    ids=["empty", "html", "svg-xml", "svg", "json", "random"],
)
def test_bytes_that_are_not_an_image(data: bytes) -> None:
    result = hash_image(data)
    assert isinstance(result, HashFailure)
    assert result.error_class == ErrorClass.NOT_AN_IMAGE
    assert result.detail


def test_corrupt_image_data_is_not_an_image(sample: Image.Image) -> None:
    data = bytearray(encode(sample, "PNG"))
    start = data.find(b"IDAT") + 100
    for k in range(start, start + 300):
        data[k] ^= 0x5A  # scramble the compressed pixels; the file still ends with IEND
    assert error_class(hash_image(bytes(data))) == ErrorClass.NOT_AN_IMAGE


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO"])
def test_raster_formats_outside_the_allow_list(sample: Image.Image, fmt: str) -> None:
    result = hash_image(encode(sample.resize((64, 48)), fmt))
    assert isinstance(result, HashFailure)
    assert result.error_class == ErrorClass.UNSUPPORTED_FORMAT
    assert fmt.lower() in result.detail


def bomb_png() -> bytes:
    """A 468-byte PNG claiming 50,000 x 50,000 1-bit pixels (2.5 GB once decoded)."""
    width = height = 50_000
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compressobj(9)
    idat = rows.compress(b"\x00" * (1 + width // 8) * 64) + rows.flush(zlib.Z_SYNC_FLUSH)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def bomb_jpeg() -> bytes:
    data = bytearray(encode(Image.new("RGB", (64, 48), "red"), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65_000, 65_000)
    return bytes(data)


def bomb_gif_screen() -> bytes:
    data = bytearray(encode(Image.new("P", (64, 48)), "GIF"))
    struct.pack_into("<HH", data, 6, 65_000, 65_000)
    return bytes(data)


def bomb_gif_frame() -> bytes:
    """A 64 x 48 screen whose first frame claims 60,000 x 60,000 pixels."""
    data = bytearray(encode(Image.new("P", (64, 48)), "GIF"))
    struct.pack_into("<HH", data, data.find(b",") + 5, 60_000, 60_000)
    return bytes(data)


def bomb_webp() -> bytes:
    """An extended (VP8X) WebP declaring a 16,384 x 16,384 canvas."""
    lossless = encode(Image.new("RGBA", (64, 48), (1, 2, 3, 4)), "WEBP", lossless=True)
    side = (16_383).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x10\x00\x00\x00" + side + side
    body = b"WEBP" + vp8x + lossless[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("make", [bomb_png, bomb_jpeg, bomb_gif_screen, bomb_gif_frame, bomb_webp])
def test_decompression_bombs_are_refused_without_decoding(
    make: Callable[[], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[object] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    result = hash_image(make())
    assert isinstance(result, HashFailure)
    assert result.error_class == ErrorClass.DECOMPRESSION_BOMB
    assert loads == []  # refused from the header: no pixel was decoded
    # ... and without touching Pillow's or the warnings module's global state.
    assert limit == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == filters


def test_max_pixels_is_the_limit(sample: Image.Image) -> None:
    data = encode(sample, "PNG")
    assert isinstance(hash_image(data, max_pixels=480 * 360), Hashed)
    result = hash_image(data, max_pixels=480 * 360 - 1)
    assert error_class(result) == ErrorClass.DECOMPRESSION_BOMB
    assert isinstance(result, HashFailure)
    assert "172800" in result.detail


def test_transparency_is_composited_over_white(sample: Image.Image) -> None:
    rgba = np.asarray(sample.convert("RGBA")).copy()
    rgba[:180, :, 3] = 0  # top half transparent, with colour hidden under alpha 0
    rgba[:180, :, :3] = np.random.default_rng(0).integers(0, 256, (180, 480, 3))
    transparent = Image.fromarray(rgba)
    white = Image.new("RGBA", transparent.size, (255, 255, 255, 255))
    flattened = Image.alpha_composite(white, transparent).convert("RGB")
    a = hash_image(encode(transparent, "PNG"))
    b = hash_image(encode(flattened, "PNG"))
    assert isinstance(a, Hashed)
    assert isinstance(b, Hashed)
    assert a.phash == b.phash
    # A palette GIF with a transparent index, against the same picture flattened.
    pal = flattened.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    mask = np.asarray(transparent)[:, :, 3] == 0
    arr = np.asarray(pal).copy()
    arr[mask] = 255
    gif = Image.fromarray(arr, mode="P")
    gif.putpalette(pal.getpalette() or [])
    c = hash_image(encode(gif, "GIF", transparency=255))
    assert isinstance(c, Hashed)
    assert bits(c.phash, b.phash) <= 2  # palette quantisation only


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 160 * 120).reshape(120, 160).astype(np.uint16)
    ramp[40:80, 50:110] = 5000
    deep = hash_image(encode(Image.fromarray(ramp), "PNG"))
    shallow = hash_image(encode(Image.fromarray((ramp >> 8).astype(np.uint8)), "PNG"))
    assert isinstance(deep, Hashed)
    assert isinstance(shallow, Hashed)
    assert deep.phash == shallow.phash


def test_exif_orientation_is_applied_before_hashing(sample: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    tagged = hash_image(encode(sample, "PNG", exif=exif.tobytes()))
    upright = hash_image(encode(sample.transpose(Image.Transpose.ROTATE_270), "PNG"))
    assert isinstance(tagged, Hashed)
    assert isinstance(upright, Hashed)
    assert tagged.phash == upright.phash
    assert (tagged.width, tagged.height) == (480, 360)  # the stored pixels' size


def test_hash_batch_keeps_order(sample: Image.Image) -> None:
    items = [encode(sample, "PNG"), b"<html>", encode(sample, "BMP"), encode(sample, "GIF")]
    assert hash_batch(items, "phash", 10**8, True) == [hash_image(i) for i in items]


def test_invalid_options() -> None:
    with pytest.raises(ConfigError, match="algo"):
        hash_image(b"", algo="md5")
    with pytest.raises(ConfigError, match="max_pixels"):
        hash_image(b"", max_pixels=0)


# --------------------------------------------------------------------------- HashPool


@pytest.fixture(scope="module")
def corpus(sample: Image.Image) -> list[bytes]:
    """A mix of good and bad inputs, 40 items."""
    good = [encode(photo(200 + 10 * i, 150, seed=i), "JPEG") for i in range(12)]
    good += [encode(photo(120, 90 + i, seed=50 + i), "PNG") for i in range(8)]
    jpeg = encode(sample, "JPEG")
    bad = [b"<html></html>", jpeg[: len(jpeg) // 2], encode(sample.resize((32, 24)), "BMP")]
    return good + bad + good[:17]


def alive_children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def ignores_sigint(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError("no SigIgn line")


async def test_process_pool_matches_hash_image_and_batches(corpus: list[bytes]) -> None:
    expected = [hash_image(d) for d in corpus]
    async with HashPool(2, batch_size=16) as pool:
        # Entering started both workers and waited for their initializer.
        workers = pool.worker_pids
        assert len(set(workers)) == 2
        assert set(workers) <= alive_children()
        if sys.platform == "linux":
            assert all(ignores_sigint(pid) for pid in workers)
        got = await asyncio.gather(*(pool.hash(d) for d in corpus))
        assert got == expected
        # 40 calls made in one loop iteration leave as 16 + 16 + 8.
        assert (pool.stats.batches, pool.stats.images) == (3, len(corpus))
        for _ in range(5):  # keeps working after many calls, in smaller rounds too
            assert await asyncio.gather(*(pool.hash(d) for d in corpus[:7])) == expected[:7]
        assert await pool.hash(corpus[0]) == expected[0]
        # Ctrl-C reaches the whole process group: the workers must shrug it off.
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        assert await asyncio.gather(*(pool.hash(d) for d in corpus)) == expected
        assert set(workers) <= alive_children()
        assert pool.stats.restarts == 0
    assert not set(workers) & alive_children()  # closing joined the workers


async def test_process_pool_survives_a_killed_worker(corpus: list[bytes]) -> None:
    expected = [hash_image(d) for d in corpus]
    async with HashPool(2, batch_size=8) as pool:
        assert await asyncio.gather(*(pool.hash(d) for d in corpus[:16])) == expected[:16]
        for pid in pool.worker_pids:  # what the OOM killer would do
            # The pool reaps its other workers as soon as it sees one die.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert await asyncio.gather(*(pool.hash(d) for d in corpus)) == expected
        assert pool.stats.restarts == 1
    assert not alive_children() & set(pool.worker_pids)


async def test_a_worker_that_dies_while_starting_fails_the_start_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every spawned interpreter imports sitecustomize from PYTHONPATH first: this one kills
    # the pool's workers (not multiprocessing's resource tracker).
    (tmp_path / "sitecustomize.py").write_text(
        "import os\n"
        "with open('/proc/self/cmdline', 'rb') as fh:\n"
        "    if b'spawn_main' in fh.read():\n"
        "        os._exit(3)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    pool = HashPool(2)
    with pytest.raises(RuntimeError, match="died while starting"):
        # the guard is far below the 120 s start timeout, which would raise "did not start"
        await asyncio.wait_for(pool.__aenter__(), 60)
    with pytest.raises(RuntimeError, match="HashPool is closed"):
        await pool.hash(b"x")  # the failed start closed the pool


async def test_close_lets_batches_in_flight_finish(corpus: list[bytes]) -> None:
    pool = HashPool(1, batch_size=4, max_inflight=2)
    async with pool:
        tasks = [asyncio.ensure_future(pool.hash(d)) for d in corpus[:20]]
        await asyncio.sleep(0)  # every task has queued its image: 2 batches left, 12 wait
        await pool.aclose()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, Hashed | HashFailure)]
    refused = [o for o in outcomes if isinstance(o, RuntimeError)]
    assert (len(done), len(refused)) == (8, 12)
    assert done == [hash_image(d) for d in corpus[:8]]


async def test_thread_mode_never_hashes_on_the_event_loop(
    corpus: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[int] = set()

    def spy(*args: Any) -> list[Hashed | HashFailure]:
        threads.add(threading.get_ident())
        return hash_batch(*args)

    monkeypatch.setattr(hashpool, "hash_batch", spy)
    async with HashPool(0, batch_size=5) as pool:
        got = await asyncio.gather(*(pool.hash(d) for d in corpus))
    assert got == [hash_image(d) for d in corpus]
    assert threads
    assert threading.get_ident() not in threads
    assert pool.stats.batches == 8


async def test_in_flight_batches_are_bounded(corpus: list[bytes]) -> None:
    async with HashPool(0, batch_size=4, max_inflight=1) as pool:
        got = await asyncio.gather(*(pool.hash(d) for d in corpus))
    assert got == [hash_image(d) for d in corpus]
    assert pool.stats.peak_inflight == 1
    # Callers that queued while the only slot was busy left in full batches.
    assert pool.stats.batches == len(corpus) // 4


async def test_a_cancelled_caller_does_not_disturb_the_others(corpus: list[bytes]) -> None:
    async with HashPool(0, batch_size=4) as pool:
        tasks = [asyncio.ensure_future(pool.hash(d)) for d in corpus[:10]]
        tasks[3].cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(outcomes[3], asyncio.CancelledError)
        expected = [hash_image(d) for d in corpus[:10]]
        assert [o for i, o in enumerate(outcomes) if i != 3] == expected[:3] + expected[4:]
        assert await pool.hash(corpus[3]) == expected[3]


async def test_closing_semantics(corpus: list[bytes]) -> None:
    pool = HashPool(0)
    with pytest.raises(RuntimeError, match="new"):
        await pool.hash(corpus[0])
    async with pool:
        assert await pool.hash(corpus[0]) == hash_image(corpus[0])
    await pool.aclose()  # twice: harmless
    with pytest.raises(RuntimeError, match="closed"):
        await pool.hash(corpus[0])
    with pytest.raises(RuntimeError, match="closed"):
        async with pool:
            pass


async def test_waiting_callers_fail_cleanly_on_close(corpus: list[bytes]) -> None:
    pool = HashPool(0, batch_size=16)
    async with pool:
        tasks = [asyncio.ensure_future(pool.hash(d)) for d in corpus[:3]]
        await asyncio.sleep(0)  # queued, not yet flushed to a batch
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)


def test_unclosed_pool_warns() -> None:
    async def leak() -> None:
        pool = HashPool(0)
        await pool.__aenter__()

    with pytest.warns(ResourceWarning, match="unclosed"):
        asyncio.run(leak())


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"workers": -1}, "workers"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_inflight": 0}, "max_inflight"),
        ({"algo": "sha1"}, "algo"),
        ({"max_pixels": 0}, "max_pixels"),
        ({"start_method": "fork"}, "start_method"),
    ],
)
def test_pool_config_is_validated(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        HashPool(**options)
    assert info.value.option == option


def test_pool_defaults() -> None:
    pool = HashPool()
    assert pool.config.workers == (os.cpu_count() or 1)
    assert pool.config.max_inflight == 2 * pool.config.workers
    assert pool.config.batch_size == 16


def hanging_batch(
    items: list[bytes], algo: str, max_pixels: int, draft: bool, convert_to: str, method: str
) -> list[Any]:
    """The pool's batch function, except that the bytes ``b"hang"`` hang the decoder (as a
    pathological file can); runs in the spawned workers, so it lives at module level."""
    if b"hang" in items:
        threading.Event().wait()
    return hash_batch(items, algo, max_pixels, draft, convert_to, method)


async def test_an_image_that_hangs_the_decoder_fails_and_the_rest_hash(
    corpus: list[bytes],
) -> None:
    # Decoding had no time limit: one pathological file held a worker (and the crawl's
    # shutdown) forever.
    # One good image shares the hung batch: the pool gives a batch decode_timeout plus 1 s
    # per image before it calls it hung, so each image more costs a second of waiting.
    expected = [hash_image(d) for d in corpus[:1]]
    async with HashPool(1, batch_size=2, decode_timeout=0.2, batch_fn=hanging_batch) as pool:
        got = await asyncio.gather(*(pool.hash(d) for d in [*corpus[:1], b"hang"]))
        assert got[:1] == expected  # the good image of the hung batch was retried alone
        assert isinstance(got[1], HashFailure)
        assert got[1].error_class == ErrorClass.DECODE_TIMEOUT
        assert await pool.hash(corpus[0]) == expected[0]  # and the pool works on
        first = set(pool.worker_pids)
    assert not first & alive_children()


async def test_close_does_not_wait_forever_for_a_hung_decoder(corpus: list[bytes]) -> None:
    pool = HashPool(1, decode_timeout=3600, close_timeout=0.2, batch_fn=hanging_batch)
    await pool.__aenter__()
    hung = asyncio.ensure_future(pool.hash(b"hang"))
    while pool.stats.batches == 0:  # yield (no clock) until the batch has left for a worker
        await asyncio.sleep(0)
    await pool.aclose()  # returns although the batch never ends: its worker is killed
    assert hung.done()
    assert not set(pool.worker_pids) & alive_children()


# -- --convert-to (issue 13, item 14) --------------------------------------------------------


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(mode: str = "RGB", size: tuple[int, int] = (96, 64)) -> Image.Image:
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for x in range(size[0]):
        draw.line([(x, 0), (x, size[1])], fill=(x * 2 % 256, 90, 255 - x * 2 % 256))
    draw.ellipse((10, 10, 40, 40), fill=(250, 250, 0))
    return img if mode == "RGB" else img.convert(mode)


def _decoded(result: Hashed | HashFailure) -> Image.Image:
    assert isinstance(result, Hashed), result
    assert result.body is not None
    assert hashlib.sha256(result.body).hexdigest() == result.sha256
    assert result.size == len(result.body)
    img = Image.open(io.BytesIO(result.body))
    img.load()
    assert (img.width, img.height) == (result.width, result.height)
    return img


def test_an_animated_gif_becomes_its_first_frame_as_jpeg() -> None:
    frames = [_gradient().convert("P"), Image.new("P", (96, 64), 3)]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    kept = hash_image(data)
    result = hash_image(data, convert_to="jpg")
    img = _decoded(result)
    assert img.format == "JPEG"
    assert isinstance(result, Hashed)
    assert isinstance(kept, Hashed)
    assert (result.format, result.ext) == ("jpeg", "jpg")
    assert result.phash == kept.phash  # near-duplicates are judged on the downloaded picture
    assert img.getpixel((25, 25))[0] > 200  # the first frame (the yellow disc), not the second


def test_transparency_goes_over_white_for_jpeg_and_stays_for_png() -> None:
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 30))
    data = _encode(rgba, "PNG")
    jpg = _decoded(hash_image(data, convert_to="jpg"))
    assert jpg.mode == "RGB"
    assert all(v > 240 for v in jpg.getpixel((35, 15)))  # white, not the hidden red
    assert jpg.getpixel((5, 15))[2] > 200
    webp = _encode(rgba, "WEBP", lossless=True)
    png = _decoded(hash_image(webp, convert_to="png"))
    assert png.format == "PNG"
    assert png.mode == "RGBA"
    assert png.getpixel((35, 15))[3] == 0


def test_a_palette_image_with_a_transparent_index() -> None:
    img = _gradient().convert("P")
    data = _encode(img, "GIF", transparency=0)
    assert _decoded(hash_image(data, convert_to="jpg")).mode == "RGB"


def test_cmyk_and_16_bit_become_8_bit() -> None:
    cmyk = _encode(_gradient().convert("CMYK"), "JPEG", quality=90)
    assert _decoded(hash_image(cmyk, convert_to="png")).mode == "RGB"
    deep = Image.new("I;16", (64, 48))
    deep.frombytes((np.arange(64 * 48, dtype="<u2") * 20).tobytes())
    data = _encode(deep, "PNG")
    assert _decoded(hash_image(data, convert_to="jpg")).mode == "L"


def test_exif_orientation_is_applied_to_the_pixels() -> None:
    img = _gradient(size=(80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    data = _encode(img, "PNG", exif=exif)
    converted = _decoded(hash_image(data, convert_to="jpg"))
    assert converted.size == (40, 80)  # upright: the tag does not survive the conversion


def test_an_image_already_in_the_target_format_is_kept_byte_for_byte() -> None:
    data = _encode(_gradient(), "JPEG", quality=80)
    result = hash_image(data, convert_to="jpg")
    assert result == hash_image(data)
    assert isinstance(result, Hashed)
    assert result.body is None
    assert result.sha256 == hashlib.sha256(data).hexdigest()


def test_a_broken_image_is_still_a_failure_when_converting() -> None:
    data = _encode(_gradient(), "PNG")
    assert isinstance(hash_image(data[: len(data) // 2], convert_to="jpg"), HashFailure)
    assert isinstance(hash_image(b"<html>no</html>", convert_to="png"), HashFailure)
    with pytest.raises(ConfigError, match="--convert-to"):
        hash_image(data, convert_to="tiff")


async def test_the_pool_converts_in_its_workers() -> None:
    data = _encode(_gradient().convert("P"), "GIF")
    async with HashPool(1, convert_to="jpg") as pool:
        result = await pool.hash(data)
    assert _decoded(result).format == "JPEG"


# -- the regions method (issue 17) ------------------------------------------------------------


def _scene(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A textured picture (circles of many shades over a gradient), no flat border."""
    w, h = size
    img = _gradient(size=size)
    draw = ImageDraw.Draw(img)
    for i in range(40):
        x, y = (i * 37) % w, (i * 53) % h
        draw.ellipse((x, y, x + 25, y + 18), fill=((i * 61) % 256, (i * 23) % 256, (i * 97) % 256))
    return img


def _hashed(data: bytes, **kw: Any) -> Hashed:
    result = hash_image(data, **kw)
    assert isinstance(result, Hashed), result
    return result


def test_whole_is_the_imagehash_phash_of_the_picture_and_has_no_centre() -> None:
    img = _scene()
    data = _encode(img, "PNG")
    whole = _hashed(data, method="whole")
    expected = int(str(imagehash.phash(img.convert("L"))), 16)
    assert (whole.phash, whole.centre) == (expected, None)
    # Without flat borders, regions' frame hash is close to it (hashed from a reduced copy)
    regions = _hashed(data)
    assert regions.centre is not None
    assert (regions.phash ^ whole.phash).bit_count() <= 6


def test_letterbox_and_padding_are_trimmed_before_hashing() -> None:
    img = _scene()
    plain = _hashed(_encode(img, "PNG"))
    for colour in ((0, 0, 0), (255, 255, 255)):
        boxed = Image.new("RGB", (320, 360), colour)
        boxed.paste(img, (0, 60))
        padded = Image.new("RGB", (420, 240), colour)
        padded.paste(img, (50, 0))
        for copy in (boxed, padded):
            found = _hashed(_encode(copy, "PNG"))
            assert (found.phash ^ plain.phash).bit_count() <= 4, colour
            assert found.centre is not None
            assert plain.centre is not None
            assert (found.centre ^ plain.centre).bit_count() <= 4, colour
            # the whole picture's hash is another picture's
            whole = _hashed(_encode(copy, "PNG"), method="whole")
            plain_whole = _hashed(_encode(img, "PNG"), method="whole")
            assert (whole.phash ^ plain_whole.phash).bit_count() > 10


def test_trim_box_keeps_pictures_without_flat_borders_and_blank_ones_whole() -> None:
    from bingcrawl.imaging.hashing import trim_box

    scene = _scene().convert("L")
    assert trim_box(scene) == (0, 0, 320, 240)
    assert trim_box(Image.new("L", (200, 100), 128)) == (0, 0, 200, 100)
    framed = Image.new("L", (200, 100), 255)
    framed.paste(scene.resize((160, 80)), (20, 10))
    assert trim_box(framed) == (20, 10, 180, 90)
    # a border thinner than 3 % of the side is JPEG noise's business, not a frame
    thin = Image.new("L", (200, 100), 255)
    thin.paste(scene.resize((198, 98)), (1, 1))
    assert trim_box(thin) == (0, 0, 200, 100)


def test_a_corner_logo_leaves_the_centre_hash_unchanged() -> None:
    img = _scene()
    logo = img.copy()
    ImageDraw.Draw(logo).rectangle((230, 0, 320, 40), fill=(200, 20, 20))
    a = _hashed(_encode(img, "PNG"))
    b = _hashed(_encode(logo, "PNG"))
    assert a.centre == b.centre
    assert a.phash != b.phash


def test_small_pictures_get_no_centre_hash() -> None:
    from bingcrawl.imaging.hashing import MIN_CENTRE_SIDE

    small = _hashed(_encode(_scene((MIN_CENTRE_SIDE + 40, MIN_CENTRE_SIDE - 1)), "PNG"))
    assert small.centre is None
    large = _hashed(_encode(_scene((MIN_CENTRE_SIDE + 40, MIN_CENTRE_SIDE)), "PNG"))
    assert large.centre is not None


def test_an_unknown_method_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match="--near-dup-method"):
        hash_image(b"", method="halves")
    with pytest.raises(ConfigError, match="--near-dup-method"):
        HashPool(0, method="halves")
