"""Synthetic pictures: deterministic, photo-sized, and perceptually separated by design."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bingcrawl.emulator.synth import (
    MAX_RETOUCH,
    NAMESPACE_BITS,
    SIZE_CLASSES,
    Synthesizer,
    _codebook,
    adjust,
    encode,
    mix_choice,
    rescale,
    stable_hash,
)
from bingcrawl.imaging.sniff import sniff_format

NS = 7 << NAMESPACE_BITS  # an arbitrary query namespace


def phash(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as img:
        return int(str(imagehash.phash(img)), 16)


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def pairwise_min(hashes: list[int]) -> int:
    arr = np.array(hashes, dtype=np.uint64)
    d = np.bitwise_count(arr[:, None] ^ arr[None, :]).astype(int)
    np.fill_diagonal(d, 64)
    return int(d.min())


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer(seed=11)


@pytest.fixture(scope="module")
def namespace_hashes(synth: Synthesizer) -> list[int]:
    """pHash of the JPEG originals of 256 bases of one namespace."""
    return [phash(encode(synth.render(NS + i), "jpeg")) for i in range(256)]


def test_codebook_is_constant_weight_and_far_apart() -> None:
    book = _codebook()
    assert len(book) > 15_000
    assert not book.flags.writeable
    assert set(np.bitwise_count(book).tolist()) == {32}
    assert np.all(book & np.uint64(1))
    assert pairwise_min([int(w) for w in book[:1500]]) >= 24


def test_rendered_hash_is_the_designed_one(synth: Synthesizer, namespace_hashes: list[int]) -> None:
    errors = [distance(h, synth.target_hash(NS + i)) for i, h in enumerate(namespace_hashes)]
    assert max(errors) <= 2, np.bincount(errors)


def test_distinct_bases_of_a_namespace_are_at_least_20_bits_apart(
    namespace_hashes: list[int],
) -> None:
    assert pairwise_min(namespace_hashes) >= 20


def test_bases_of_different_namespaces_do_not_collide(synth: Synthesizer) -> None:
    hashes = [
        synth.target_hash((ns << NAMESPACE_BITS) | i)
        for ns in (0, 2, 3, 99, 12345)
        for i in range(80)
    ]
    assert pairwise_min(hashes) >= 10


def test_render_is_deterministic_and_seeded() -> None:
    a, b, other = Synthesizer(seed=1), Synthesizer(seed=1), Synthesizer(seed=2)
    assert encode(a.render(NS + 5), "jpeg") == encode(b.render(NS + 5), "jpeg")
    assert encode(a.render(NS + 5), "jpeg") != encode(other.render(NS + 5), "jpeg")
    assert a.accent_color(NS + 5) == b.accent_color(NS + 5)
    assert a.dimensions(NS + 5) == b.dimensions(NS + 5)


def test_default_pictures_are_about_30k_jpegs(synth: Synthesizer) -> None:
    sizes, dims = [], set()
    for i in range(40):
        picture = synth.render(NS + 1000 + i)
        data = encode(picture, "jpeg", synth.size_class.quality)
        sizes.append(len(data))
        dims.add(picture.size)
    assert 22_000 <= sum(sizes) / len(sizes) <= 42_000
    assert (480, 360) in dims
    assert all(w * h <= 480 * 360 * 1.05 for w, h in dims)


@pytest.mark.parametrize(
    ("size", "low", "high"), [("200k", 130_000, 320_000), ("1m", 650_000, 1_600_000)]
)
def test_larger_size_classes(size: str, low: int, high: int) -> None:
    synth = Synthesizer(seed=3, image_size=size)
    base = NS + 1  # a 4:3 picture under seed 3 is not required: compare to its own class
    picture = synth.render(base)
    w, h = synth.dimensions(base)
    assert picture.size == (w, h)
    assert w * h >= 480 * 360 * SIZE_CLASSES[size].scale ** 2 * 0.9
    data = encode(picture, "jpeg", SIZE_CLASSES[size].quality)
    assert low <= len(data) <= high
    assert distance(phash(data), synth.target_hash(base)) <= 2


@pytest.mark.parametrize("fmt", ["jpeg", "png", "gif", "webp"])
def test_every_format_encodes_and_keeps_the_hash(synth: Synthesizer, fmt: str) -> None:
    picture = synth.render(NS + 3)
    data = encode(picture, fmt)
    assert sniff_format(data) == fmt
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == picture.size
        if fmt == "png":
            assert img.mode == "RGBA"
            alpha = img.getchannel("A")
            assert alpha.getpixel((0, 0)) == 0
            assert alpha.getpixel((img.width // 2, img.height // 2)) == 255
    assert distance(phash(data), synth.target_hash(NS + 3)) <= 2


def test_encode_rejects_unknown_format(synth: Synthesizer) -> None:
    with pytest.raises(ValueError, match="bmp"):
        encode(synth.render(NS), "bmp")


EDITS = {
    "rescaled 50%": lambda p: encode(rescale(p, (p.width // 2, p.height // 2)), "jpeg"),
    "rescaled 90%": lambda p: encode(rescale(p, (p.width * 9 // 10, p.height * 9 // 10)), "jpeg"),
    "jpeg q40": lambda p: encode(p, "jpeg", 40),
    "jpeg q90": lambda p: encode(p, "jpeg", 90),
    "brightness +10%": lambda p: encode(adjust(p, 1.1, 1.0), "jpeg"),
    "brightness -10%": lambda p: encode(adjust(p, 0.9, 1.0), "jpeg"),
    "contrast +10%": lambda p: encode(adjust(p, 1.0, 1.1), "jpeg"),
    "contrast -10%": lambda p: encode(adjust(p, 1.0, 0.9), "jpeg"),
    "png": lambda p: encode(p, "png"),
    "png -> jpeg": lambda p: encode(
        Image.open(io.BytesIO(encode(p, "png"))).convert("RGB"), "jpeg", 75
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_near_duplicate_edits_stay_near(synth: Synthesizer, edit: str) -> None:
    distances = []
    for i in range(12):
        picture = synth.render(NS + 500 + i)
        original = phash(encode(picture, "jpeg"))
        distances.append(distance(original, phash(EDITS[edit](picture))))
    assert max(distances) <= 4, distances


def test_near_duplicates_are_nearer_than_any_distinct_base(
    synth: Synthesizer, namespace_hashes: list[int]
) -> None:
    picture = synth.render(NS + 0)
    edited = phash(encode(adjust(rescale(picture, (300, 225)), 1.08, 0.92), "jpeg", 50))
    nearest_other = min(distance(edited, h) for h in namespace_hashes[1:])
    assert distance(edited, namespace_hashes[0]) + 10 < nearest_other


@pytest.mark.parametrize("retouch", range(1, MAX_RETOUCH + 1))
def test_retouch_moves_the_hash_by_exactly_two_bits_per_step(
    synth: Synthesizer, namespace_hashes: list[int], retouch: int
) -> None:
    for i in range(10):
        base = NS + i
        assert distance(synth.target_hash(base, retouch), synth.target_hash(base)) == 2 * retouch
        edited = phash(encode(rescale(synth.render(base, retouch), (320, 240)), "jpeg", 60))
        assert distance(edited, synth.target_hash(base, retouch)) <= 1
        others = [h for j, h in enumerate(namespace_hashes) if j != i]
        assert min(distance(edited, h) for h in others) >= 24 - 2 * retouch - 1


def test_retouch_is_nested_and_bounded(synth: Synthesizer) -> None:
    plain, one, two = (synth.target_bits(NS + 9, r) for r in (0, 1, 2))
    assert int((one != two).sum()) == 2
    assert int((plain != two).sum()) == 4
    assert int(two.sum()) == 32
    assert bool(two[0])
    with pytest.raises(ValueError, match="retouch"):
        synth.target_bits(NS, MAX_RETOUCH + 1)


def test_dimensions_cover_several_aspects(synth: Synthesizer) -> None:
    shapes = {synth.dimensions(NS + i) for i in range(200)}
    ratios = {round(w / h, 2) for w, h in shapes}
    assert {1.33, 0.75, 1.0} <= ratios


def test_accent_color_is_hex(synth: Synthesizer) -> None:
    for i in range(20):
        color = synth.accent_color(NS + i)
        assert len(color) == 6
        int(color, 16)


def test_unknown_size_class() -> None:
    with pytest.raises(ValueError, match="5k"):
        Synthesizer(image_size="5k")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.integers(min_value=0), st.text(), st.binary()), max_size=4))
def test_stable_hash_is_a_64_bit_function(parts: list[int | str | bytes]) -> None:
    assert stable_hash(*parts) == stable_hash(*parts)
    assert 0 <= stable_hash(*parts) < 1 << 64


def test_stable_hash_separates_types_and_boundaries() -> None:
    assert len({stable_hash(1), stable_hash("1"), stable_hash(b"1")}) == 3
    assert stable_hash("ab", "c") != stable_hash("a", "bc")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=5).filter(
        lambda w: sum(w) > 0
    ),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_mix_choice_never_picks_a_zero_weight(weights: list[float], unit: float) -> None:
    options = [str(i) for i in range(len(weights))]
    picked = mix_choice(options, weights, unit)
    assert weights[int(picked)] > 0


def test_mix_choice_follows_the_weights() -> None:
    counts = dict.fromkeys("abc", 0)
    for i in range(1000):
        counts[mix_choice("abc", (0.5, 0.3, 0.2), (i + 0.5) / 1000)] += 1
    assert counts == {"a": 500, "b": 300, "c": 200}
