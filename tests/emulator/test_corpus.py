"""The corpus: deterministic ranked results whose ground truth every key carries."""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import re
from typing import Any

import imagehash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bingcrawl.emulator.corpus import (
    FAULT_KINDS,
    FORMATS,
    LICENSES,
    VARIANTS,
    Corpus,
    CorpusConfig,
    ImageSpec,
)
from bingcrawl.errors import ConfigError
from bingcrawl.imaging.sniff import sniff_format

SAFE_KEY = re.compile(r"[a-z0-9_./-]+\.(jpg|png|gif|webp)")
EXT = {"jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp"}


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


@pytest.fixture(scope="module")
def results(corpus: Corpus) -> tuple[ImageSpec, ...]:
    return tuple(corpus.query_results("red fox"))


def phash(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as img:
        return int(str(imagehash.phash(img)), 16)


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", -1),
        ("seed", 1.5),
        ("results_per_query", 0),
        ("results_per_query", 200_000),
        ("image_size", "5m"),
        ("fault_rate", 1.5),
        ("exact_dup_rate", -0.1),
        ("near_dup_rate", float("nan")),
        ("cross_query_rate", "0.1"),
        ("fault_rate", 0.6),  # with the other defaults the rates sum past 1
        ("fault_kinds", ("http_404", "teapot")),
        ("fault_kinds", ()),
        ("format_mix", (1.0, 0.0, 0.0)),
        ("format_mix", (0.0, 0.0, 0.0, 0.0)),
        ("format_mix", (1.0, -1.0, 0.0, 1.0)),
        ("cache_bytes", -1),
    ],
)
def test_config_validation_names_the_field(field: str, value: Any) -> None:
    overrides: dict[str, Any] = {field: value}
    if field == "fault_rate" and value == 0.6:
        overrides["exact_dup_rate"] = 0.4
    with pytest.raises(ConfigError) as info:
        CorpusConfig(**overrides)
    assert info.value.option == field


def test_config_accepts_lists_as_tuples() -> None:
    kinds: Any = ["http_404"]
    mix: Any = [1, 0, 0, 0]
    config = CorpusConfig(fault_kinds=kinds, format_mix=mix)
    assert (config.fault_kinds, config.format_mix) == (("http_404",), (1, 0, 0, 0))
    assert hash(config) == hash(CorpusConfig(fault_kinds=("http_404",), format_mix=(1, 0, 0, 0)))


# -- ranked results --------------------------------------------------------------------------


def test_results_are_deterministic_across_instances(results: tuple[ImageSpec, ...]) -> None:
    fresh = Corpus(CorpusConfig())
    assert tuple(fresh.query_results("red fox")) == results
    sample = [s for s in results if s.fault is None][:5]
    assert [fresh.image_bytes(s) for s in sample] == [Corpus().image_bytes(s) for s in sample]


def test_query_is_case_and_space_insensitive(
    corpus: Corpus, results: tuple[ImageSpec, ...]
) -> None:
    assert tuple(corpus.query_results("  Red\tFOX ")) == results
    assert corpus.query_results("red foxes")[0].key != results[0].key


def test_seed_changes_the_corpus(results: tuple[ImageSpec, ...]) -> None:
    other = Corpus(CorpusConfig(seed=1)).query_results("red fox")
    assert [s.key for s in other] != [s.key for s in results]


def test_list_shape(results: tuple[ImageSpec, ...]) -> None:
    assert len(results) == 1000
    assert len({s.key for s in results}) == 1000
    for spec in results:
        assert SAFE_KEY.fullmatch(spec.key), spec.key
        assert spec.key.endswith("." + EXT[spec.format])
        assert spec.variant in VARIANTS
        assert spec.fault is None or spec.fault in FAULT_KINDS
        assert spec.format in FORMATS
        assert spec.license in LICENSES
        assert re.fullmatch(r"[0-9A-F]{6}", spec.color)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.0000000Z", spec.date_published)
        assert re.fullmatch(r"https://[a-z0-9.-]+\.example/\S+", spec.host_page_url)
        assert spec.name.startswith("Red Fox ")
        assert spec.width > 0
        assert spec.height > 0


def test_image_types_follow_formats(results: tuple[ImageSpec, ...]) -> None:
    types = collections.defaultdict(set)
    for spec in results:
        types[spec.format].add(spec.image_type)
    assert types["png"] == {"Transparent"}
    assert types["gif"] == {"AnimatedGif"}
    assert types["jpeg"] == {"Photo", "Clipart", "Line"}


def test_fractions_match_the_config(results: tuple[ImageSpec, ...]) -> None:
    kinds = collections.Counter(
        "fault" if s.fault else "cross" if s.base >> 17 == 0 else s.variant for s in results
    )
    assert 27 <= kinds["fault"] <= 33
    assert 45 <= kinds["mirror"] <= 55
    assert 45 <= kinds["rescaled"] + kinds["recompressed"] + kinds["brightened"] <= 55
    assert 27 <= kinds["cross"] <= 33
    formats = collections.Counter(s.format for s in results if s.variant == "original")
    assert formats["jpeg"] > 700
    assert all(formats[f] > 15 for f in ("png", "gif", "webp"))


def test_fault_kinds_are_cycled_evenly() -> None:
    corpus = Corpus(CorpusConfig(results_per_query=900, fault_rate=0.2))
    counts = collections.Counter(s.fault for s in corpus.query_results("faults") if s.fault)
    assert set(counts) == set(FAULT_KINDS)
    assert max(counts.values()) - min(counts.values()) <= 2


def test_fault_kinds_can_be_restricted() -> None:
    config = CorpusConfig(results_per_query=300, fault_rate=0.3, fault_kinds=("bomb", "http_404"))
    faults = [s for s in Corpus(config).query_results("bombs") if s.fault]
    assert {s.fault for s in faults} == {"bomb", "http_404"}
    assert all(
        s.format == "png" and (s.width, s.height) == (50_000, 50_000)
        for s in faults
        if s.fault == "bomb"
    )


def test_zero_rates_give_only_originals() -> None:
    config = CorpusConfig(
        results_per_query=200, fault_rate=0, exact_dup_rate=0, near_dup_rate=0, cross_query_rate=0
    )
    specs = Corpus(config).query_results("clean")
    assert all(s.fault is None and s.variant == "original" for s in specs)
    assert len({s.base for s in specs}) == 200


def test_format_mix_is_honoured() -> None:
    config = CorpusConfig(results_per_query=100, format_mix=(0, 0, 0, 1))
    originals = [s for s in Corpus(config).query_results("webp only") if s.variant == "original"]
    assert {s.format for s in originals if s.fault is None} == {"webp"}


# -- ground truth ------------------------------------------------------------------------------


def test_spec_round_trips_for_every_key_in_a_fresh_corpus(results: tuple[ImageSpec, ...]) -> None:
    fresh = Corpus(CorpusConfig())
    for spec in results:
        assert fresh.spec(spec.key) == spec


@pytest.mark.parametrize(
    "key",
    [
        "",
        "nothing.jpg",
        "red-fox-000000000000/0001.jpg",  # check digits do not match
        "b/zz.jpg",
        "f/teapot/0000.jpg",
        "f/bomb/0000.jpg",  # the bomb is a png
        "s/00000000000001/1.jpg",
        "../etc/passwd",
    ],
)
def test_unknown_keys(corpus: Corpus, key: str) -> None:
    assert corpus.spec(key) is None


def test_keys_are_bound_to_the_config(results: tuple[ImageSpec, ...]) -> None:
    key = results[0].key
    assert Corpus(CorpusConfig(seed=5)).spec(key) is None
    assert Corpus(CorpusConfig(results_per_query=10)).spec(results[500].key) is None
    wrong_ext = key.rsplit(".", 1)[0] + (".png" if not key.endswith(".png") else ".jpg")
    assert Corpus().spec(wrong_ext) is None
    non_canonical = key.replace("/0000.", "/00000.")
    assert Corpus().spec(non_canonical) is None


def test_mirrors_are_byte_identical_to_their_original(
    corpus: Corpus, results: tuple[ImageSpec, ...]
) -> None:
    originals = {s.base: s for s in results if s.variant == "original" and s.fault is None}
    mirrors = [s for s in results if s.variant == "mirror"]
    assert mirrors
    for mirror in mirrors:
        original = originals[mirror.base]
        assert (mirror.format, mirror.width, mirror.height) == (
            original.format,
            original.width,
            original.height,
        )
        assert corpus.image_bytes(mirror) == corpus.image_bytes(original)


def test_near_duplicates_copy_an_original_of_the_list(
    corpus: Corpus, results: tuple[ImageSpec, ...]
) -> None:
    originals = {s.base: s for s in results if s.variant == "original" and s.fault is None}
    near = [s for s in results if s.variant in ("rescaled", "recompressed", "brightened")]
    assert {s.variant for s in near} == {"rescaled", "recompressed", "brightened"}
    distances = []
    for spec in near[:24]:
        original = originals[spec.base]
        data = corpus.image_bytes(spec)
        assert data != corpus.image_bytes(original)
        assert sniff_format(data) == spec.format
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (spec.width, spec.height)
        distances.append((phash(data) ^ phash(corpus.image_bytes(original))).bit_count())
    # Deliberately spread over 0, 2 and 4 bits (retouched copies), never further.
    assert set(distances) == {0, 2, 4}, distances


def test_distinct_bases_are_perceptually_distinct() -> None:
    corpus = Corpus(CorpusConfig(results_per_query=150))
    specs = corpus.query_results("distinct")
    firsts: dict[int, ImageSpec] = {}
    for spec in specs:
        if spec.fault is None and spec.format == "jpeg":
            firsts.setdefault(spec.base, spec)
    hashes = [phash(corpus.image_bytes(s)) for s in firsts.values()]
    assert len(hashes) > 100
    closest = min((a ^ b).bit_count() for i, a in enumerate(hashes) for b in hashes[i + 1 :])
    assert closest >= 10  # 24+ within the query's own pictures, random-like against the pool


def test_every_served_picture_matches_its_spec() -> None:
    corpus = Corpus(CorpusConfig(results_per_query=80, format_mix=(0.4, 0.2, 0.2, 0.2)))
    for spec in corpus.query_results("matches"):
        if spec.fault is not None:
            continue
        data = corpus.image_bytes(spec)
        assert sniff_format(data) == spec.format
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (spec.width, spec.height)


def test_queries_share_the_cross_query_pool(corpus: Corpus) -> None:
    pools = []
    for q in ("cats", "dogs", "boats", "trains"):
        pools.append({s.base: s for s in corpus.query_results(q) if s.base >> 17 == 0})
    shared = [
        (base, pools[i][base], pools[j][base])
        for i, j in itertools.combinations(range(len(pools)), 2)
        for base in set(pools[i]) & set(pools[j])
    ]
    assert shared, "1000-result queries should share some pool pictures"
    _, a, b = shared[0]
    assert a.key != b.key
    assert (a.format, a.width, a.height) == (b.format, b.width, b.height)
    assert corpus.image_bytes(a) == corpus.image_bytes(b)


# -- other sources ---------------------------------------------------------------------------


def test_similar_is_deterministic_and_mixes_near_duplicates(
    corpus: Corpus, results: tuple[ImageSpec, ...]
) -> None:
    spec = results[0]
    similar = corpus.similar(spec, 20)
    assert tuple(Corpus().similar(spec, 20)) == tuple(similar)
    assert len(similar) == 20
    same = [s for s in similar if s.base == spec.base]
    assert len(same) == 5
    assert all(s.variant in ("rescaled", "recompressed", "brightened") for s in same)
    assert len({s.base for s in similar if s.base != spec.base}) >= 12
    assert all(s.base >> 17 == spec.base >> 17 for s in similar)
    for item in similar:
        assert corpus.spec(item.key) == item
        assert SAFE_KEY.fullmatch(item.key)
    assert corpus.similar(spec, 0) == ()


def test_visual_results_depend_on_the_digest(corpus: Corpus) -> None:
    digest = hashlib.sha256(b"an uploaded image").digest()
    first = corpus.visual_results(digest, 30)
    assert len(first) == 30
    assert tuple(Corpus().visual_results(digest, 30)) == tuple(first)
    other = corpus.visual_results(hashlib.sha256(b"another").digest(), 30)
    assert {s.key for s in first}.isdisjoint(s.key for s in other)
    for spec in first:
        assert corpus.spec(spec.key) == spec
    assert len(corpus.visual_results(digest, 5000)) == 1000


def test_trending_tiles_are_servable_originals(corpus: Corpus) -> None:
    categories = corpus.trending()
    assert len(categories) >= 3
    for title, tiles in categories:
        assert title
        assert tiles
        for text, spec in tiles:
            assert text
            assert spec.fault is None
            assert spec.variant == "original"
            assert corpus.spec(spec.key) == spec
            assert spec in corpus.query_results(text)
    assert Corpus().trending() == categories


def test_fault_url_keys_cover_every_kind(corpus: Corpus) -> None:
    keys = corpus.fault_url_keys()
    assert set(keys) == set(FAULT_KINDS)
    for kind, key in keys.items():
        spec = corpus.spec(key)
        assert spec is not None
        assert spec.fault == kind
        assert SAFE_KEY.fullmatch(key)
    # Every kind has an example even when the config mixes none of them in.
    assert Corpus(CorpusConfig(fault_rate=0)).fault_url_keys() == keys


def test_base_keys_and_base_bytes(corpus: Corpus, results: tuple[ImageSpec, ...]) -> None:
    original = next(
        s for s in results if s.variant == "original" and s.format == "jpeg" and not s.fault
    )
    key = f"b/{original.base:014x}.jpg"
    spec = corpus.spec(key)
    assert spec is not None
    assert (spec.base, spec.variant, spec.fault, spec.format) == (
        original.base,
        "original",
        None,
        "jpeg",
    )
    assert (
        corpus.image_bytes(spec) == corpus.base_bytes(original.base) == corpus.image_bytes(original)
    )
    png = corpus.base_bytes(original.base, "png")
    assert sniff_format(png) == "png"
    with pytest.raises(ValueError, match="tiff"):
        corpus.base_bytes(original.base, "tiff")


def test_fault_specs_still_name_their_picture(corpus: Corpus) -> None:
    spec = corpus.spec(corpus.fault_url_keys()["redirect"])
    assert spec is not None
    assert corpus.image_bytes(spec) == corpus.base_bytes(spec.base)


# -- caching ---------------------------------------------------------------------------------


def test_cache_is_bounded() -> None:
    corpus = Corpus(CorpusConfig(results_per_query=60, cache_bytes=150_000))
    specs = [s for s in corpus.query_results("bounded") if s.fault is None]
    corpus.warm(specs)
    assert 0 < corpus.cache_size <= 150_000
    # Evicted entries are regenerated identically.
    assert corpus.image_bytes(specs[0]) == Corpus().image_bytes(specs[0])


def test_warm_fills_the_cache_and_skips_faults() -> None:
    corpus = Corpus(CorpusConfig(results_per_query=40, fault_rate=0.25))
    specs = corpus.query_results("warm")
    assert all(corpus.cached_bytes(s) is None for s in specs)
    corpus.warm(specs)
    for spec in specs:
        if spec.fault is None:
            assert corpus.cached_bytes(spec) == corpus.image_bytes(spec)
    bomb = corpus.spec(corpus.fault_url_keys()["bomb"])
    assert bomb is not None
    corpus.warm([bomb])
    assert corpus.cached_bytes(bomb) is None


def test_approx_size_is_deterministic_and_plausible(results: tuple[ImageSpec, ...]) -> None:
    corpus = Corpus()
    for spec in results[:50]:
        assert corpus.approx_size(spec) == Corpus().approx_size(spec) > 0
    jpeg = next(s for s in results if s.format == "jpeg" and s.fault is None)
    actual = len(corpus.image_bytes(jpeg))
    assert actual / 2 < corpus.approx_size(jpeg) < actual * 2


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=60))
def test_any_query_text_gives_safe_round_tripping_keys(q: str) -> None:
    corpus = Corpus(CorpusConfig(results_per_query=12))
    specs = corpus.query_results(q)
    assert len(specs) == 12
    for spec in specs:
        assert SAFE_KEY.fullmatch(spec.key), spec.key
        assert corpus.spec(spec.key) == spec
