"""The emulator's deterministic image corpus and its ground truth.

A :class:`Corpus` answers "which images does query *q* return, in which order, and what is
each one really?" without storing anything: every result is derived from ``(config, query,
rank)``, and every URL key describes itself well enough that :meth:`Corpus.spec` rebuilds the
ground truth from the key alone, in any process with the same configuration.

URL keys (the path after ``/img/``), each ending with the extension of its format::

    <slug>-<namespace:9 hex><check:3 hex>/<rank:04d>.<ext>   rank of a query or visual search
    b/<base:014x>.<ext>                                       original picture of a base
    s/<base:014x>/<i:04d>.<ext>                               i-th "similar" result of a base
    f/<fault kind>/<i:04d>.<ext>                              fault example (fault_url_keys)

Composition of a query's ranked results: rank ``r`` falls into a category by the Weyl sequence
``frac(r / phi + offset)``, so every window of ranks holds close to the configured fractions
(faults, exact mirrors, near duplicates, cross-query pictures, originals), and the fault kinds
are cycled evenly through the fault slots. Mirrors and near duplicates copy a picture that is
an original elsewhere in the same list (usually at an earlier rank); near duplicates are
rescaled, recompressed (JPEG quality 40-90 or PNG) or brightness/contrast-shifted copies, a
third each at pHash distance 0, 2 and 4 from their original (see ``synth.MAX_RETOUCH``).
Cross-query results draw from a pool of shared pictures that every query dips into, so crawls
of different queries see the same images.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bingcrawl.emulator.synth import (
    MAX_RETOUCH,
    NAMESPACE_BITS,
    SIZE_CLASSES,
    Synthesizer,
    adjust,
    encode,
    mix_choice,
    rescale,
    stable_hash,
)
from bingcrawl.errors import ConfigError
from bingcrawl.records import EXTENSIONS

__all__ = [
    "BOMB_SIZE",
    "EXTENSIONS",
    "FAULT_KINDS",
    "FORMATS",
    "LICENSES",
    "MIME_TYPES",
    "SUCCESS_FAULTS",
    "VARIANTS",
    "Corpus",
    "CorpusConfig",
    "ImageSpec",
    "normalize_query",
]

#: Every fault an image URL can have (see :mod:`bingcrawl.emulator.imagehost`).
FAULT_KINDS: tuple[str, ...] = (
    "http_404",
    "http_500",
    "transient_503",
    "slow_headers",
    "slow_drip",
    "truncated_body",
    "truncated_image",
    "html_as_jpeg",
    "svg_as_jpeg",
    "random_bytes",
    "bomb",
    "oversize",
    "oversize_chunked",
    "huge_chunked",
    "gzip_bomb",
    "redirect",
    "redirect_loop",
    "wrong_content_type",
)

#: Faults after which a correct client still stores the picture (``slow_headers`` and
#: ``slow_drip`` also deliver it, but only to a client that waits ``slow_seconds``).
SUCCESS_FAULTS: frozenset[str] = frozenset({"transient_503", "redirect", "wrong_content_type"})

#: Faults whose URL would deliver a picture to a patient enough client.
_PICTURE_FAULTS = SUCCESS_FAULTS | {"slow_headers", "slow_drip"}

FORMATS: tuple[str, ...] = ("jpeg", "png", "gif", "webp")
VARIANTS: tuple[str, ...] = ("original", "mirror", "rescaled", "recompressed", "brightened")
LICENSES: tuple[str, ...] = ("Public", "Share", "ShareCommercially", "Modify", "ModifyCommercially")
MIME_TYPES: dict[str, str] = {f: f"image/{f}" for f in FORMATS}

#: (width, height) of the decompression-bomb PNG.
BOMB_SIZE = (50_000, 50_000)

_FORMAT_OF_EXT = {ext: fmt for fmt, ext in EXTENSIONS.items()}
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0
_NAMESPACES = 1 << 36
_FAULT_NAMESPACE = 1  # namespace of the fault examples; 0 is the shared cross-query pool
_POOL_SIZE = 400
_MAX_RESULTS = 100_000  # ranks must fit the 17-bit index of a base id
_QUERY_CACHE = 64  # result lists kept (~0.5 MB each at 1000 results)
_EPOCH = datetime(2012, 1, 1, tzinfo=UTC)
_SPAN_SECONDS = int((datetime(2025, 8, 1, tzinfo=UTC) - _EPOCH).total_seconds())
_SITES = (
    "www.pixelmeadow.example",
    "photos.northwind.example",
    "blog.tinyrabbit.example",
    "img.contoso-images.example",
    "gallery.fabrikam.example",
    "news.adatum.example",
    "www.wideworld-travel.example",
    "forum.litware.example",
)
_DESCRIPTORS = ("photo", "close-up", "wallpaper", "stock photo", "HD picture", "image", "in nature")
_QUERY_KEY = re.compile(r"([a-z0-9-]{1,40})-([0-9a-f]{9})([0-9a-f]{3})/(\d{4,6})\.([a-z]{3,4})")
_BASE_KEY = re.compile(r"b/([0-9a-f]{14})\.([a-z]{3,4})")
_SIMILAR_KEY = re.compile(r"s/([0-9a-f]{14})/(\d{4})\.([a-z]{3,4})")
_FAULT_KEY = re.compile(r"f/([a-z0-9_]+)/(\d{4})\.([a-z]{3,4})")

_TRENDING: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Popular now", ("northern lights", "red panda", "autumn forest", "city skyline night")),
    ("Animals", ("snow leopard", "hummingbird", "sea turtle", "golden retriever puppy")),
    ("Food and drink", ("sourdough bread", "ramen", "latte art", "strawberry cake")),
    ("Travel", ("santorini", "machu picchu", "kyoto temple", "iceland waterfall")),
)


def normalize_query(q: str) -> str:
    """The form under which two query strings are the same query (case and spaces ignored)."""
    return " ".join(q.casefold().split())


def _slug(norm: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", norm).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:40].strip("-")
    return slug or "q"


@dataclass(frozen=True, slots=True)
class CorpusConfig:
    """What the emulated search engine's image collection looks like.

    ``seed`` selects the corpus (pictures, ranks, metadata); ``results_per_query`` is the
    length of every query's ranked list; ``image_size`` is ``30k`` (480x360-class JPEGs of
    ~30 KB), ``200k``, ``1m`` or ``web`` (JPEGs of 10 KB to 2 MB, lognormal around a median
    of 100 KB, as a web search finds them). The four rates are fractions of each list: faulty URLs
    (kinds from ``fault_kinds``, cycled evenly), byte-identical mirrors, near duplicates and
    pictures from the pool shared by all queries; they must sum to at most 1. ``format_mix``
    weighs jpeg, png, gif and webp for original pictures. ``cache_bytes`` bounds the LRU of
    generated image bytes.
    """

    seed: int = 0
    results_per_query: int = 1000
    image_size: str = "30k"
    fault_rate: float = 0.03
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    exact_dup_rate: float = 0.05
    near_dup_rate: float = 0.05
    cross_query_rate: float = 0.03
    format_mix: tuple[float, float, float, float] = (0.85, 0.07, 0.04, 0.04)
    cache_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", f"must be a non-negative integer, got {self.seed!r}")
        rpq = self.results_per_query
        if isinstance(rpq, bool) or not isinstance(rpq, int) or not 1 <= rpq <= _MAX_RESULTS:
            raise ConfigError("results_per_query", f"must be an integer in 1..{_MAX_RESULTS}")
        if self.image_size not in SIZE_CLASSES:
            raise ConfigError("image_size", f"must be one of {', '.join(SIZE_CLASSES)}")
        rates = ("fault_rate", "exact_dup_rate", "near_dup_rate", "cross_query_rate")
        for name in rates:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"must be a fraction in [0, 1], got {value!r}")
        if sum(getattr(self, name) for name in rates) > 1.0 + 1e-9:
            raise ConfigError("fault_rate", f"the sum of {', '.join(rates)} must not exceed 1")
        object.__setattr__(self, "fault_kinds", tuple(self.fault_kinds))
        unknown = [k for k in self.fault_kinds if k not in FAULT_KINDS]
        if unknown:
            raise ConfigError("fault_kinds", f"unknown fault kinds {unknown}; known: {FAULT_KINDS}")
        if self.fault_rate > 0 and not self.fault_kinds:
            raise ConfigError("fault_kinds", "must name at least one kind when fault_rate > 0")
        object.__setattr__(self, "format_mix", tuple(self.format_mix))
        mix = self.format_mix
        if (
            len(mix) != len(FORMATS)
            or any(not isinstance(w, int | float) or not 0.0 <= w < math.inf for w in mix)
            or sum(mix) <= 0
        ):
            raise ConfigError("format_mix", "must be 4 non-negative weights (jpeg, png, gif, webp)")
        if isinstance(self.cache_bytes, bool) or not isinstance(self.cache_bytes, int):
            raise ConfigError("cache_bytes", "must be an integer")
        if self.cache_bytes < 0:
            raise ConfigError("cache_bytes", "must not be negative")


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """Ground truth of one image URL (``/img/<key>``).

    ``base`` identifies the picture: equal bases are the same picture (an exact or near
    duplicate). It is ``(namespace << 17) | index``: one namespace per query, 0 for the pool
    shared by all queries. ``variant`` says how these bytes derive from the picture
    (``original``, ``mirror`` = byte-identical to the original, ``rescaled``,
    ``recompressed``, ``brightened``); ``fault`` names the URL's fault, if any. ``format``,
    ``width`` and ``height`` describe the real bytes (the nominal picture for faults; the
    bomb reports its real, huge size). The rest is API metadata: ``name`` (title),
    ``host_page_url`` (on a ``.example`` host, never fetched), ``license`` (a Bing license
    filter value it satisfies), ``image_type`` (``Photo``, ``Clipart``, ``Line``,
    ``Transparent`` for PNG, ``AnimatedGif`` for GIF), ``color`` (accent colour, 6 hex
    digits) and ``date_published`` (ISO 8601, Bing's format).
    """

    key: str
    base: int
    variant: str
    fault: str | None
    format: str
    width: int
    height: int
    name: str
    host_page_url: str
    license: str
    image_type: str
    color: str
    date_published: str

    @property
    def ext(self) -> str:
        """The file extension of :attr:`format` (``jpg`` for jpeg)."""
        return EXTENSIONS[self.format]


class _LruBytes:
    """A thread-safe LRU of byte strings bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[object, ...], value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._items[key] = value
            self.size += len(value)
            while self.size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.size -= len(evicted)


class Corpus:
    """The emulated image collection: ranked results per query and their ground truth.

    Everything is a pure function of the configuration; the only state is bounded caches
    (generated bytes, recent query lists), guarded by locks so that a benchmark can warm the
    corpus from a thread while a server reads it.
    """

    def __init__(self, config: CorpusConfig | None = None) -> None:
        self.config = config if config is not None else CorpusConfig()
        self.synth = Synthesizer(self.config.seed, self.config.image_size)
        self._bytes = _LruBytes(self.config.cache_bytes)
        self._queries: OrderedDict[int, tuple[ImageSpec, ...]] = OrderedDict()
        self._queries_lock = threading.Lock()
        rates = (
            self.config.fault_rate,
            self.config.exact_dup_rate,
            self.config.near_dup_rate,
            self.config.cross_query_rate,
        )
        self._bounds = tuple(sum(rates[: i + 1]) for i in range(len(rates)))

    # -- ranked results ------------------------------------------------------------------

    def query_results(self, q: str) -> Sequence[ImageSpec]:
        """The ranked results of ``q`` (``results_per_query`` of them), same for equal queries."""
        norm = normalize_query(q)
        return self._results(_slug(norm), 2 + stable_hash("query", norm) % (_NAMESPACES - 2))

    def visual_results(self, digest: bytes, n: int) -> Sequence[ImageSpec]:
        """Up to ``n`` results of a visual search for the image (or URL/token) with ``digest``."""
        namespace = 2 + stable_hash("visual", digest) % (_NAMESPACES - 2)
        return self._results("visual-search", namespace)[: max(n, 0)]

    def similar(self, spec: ImageSpec, n: int) -> Sequence[ImageSpec]:
        """``n`` "visually similar" results of ``spec``: other pictures of the same namespace,
        with every fourth one a near-duplicate variant of ``spec.base`` itself."""
        return tuple(self._similar_spec(spec.base, i) for i in range(min(max(n, 0), 10_000)))

    def trending(self) -> Sequence[tuple[str, Sequence[tuple[str, ImageSpec]]]]:
        """Trending categories: ``(title, [(query text, tile picture spec), ...])``."""
        categories = []
        for title, queries in _TRENDING:
            tiles = []
            for text in queries:
                norm = normalize_query(text)
                slug, ns = _slug(norm), 2 + stable_hash("query", norm) % (_NAMESPACES - 2)
                for rank in range(self.config.results_per_query):
                    spec = self._query_spec(slug, ns, rank)
                    if spec.fault is None and spec.variant == "original":
                        tiles.append((text, spec))
                        break
            categories.append((title, tuple(tiles)))
        return tuple(categories)

    def fault_url_keys(self) -> dict[str, str]:
        """One URL key per fault kind (all of :data:`FAULT_KINDS`, whatever the config mixes in)."""
        return {kind: f"f/{kind}/0000.{'png' if kind == 'bomb' else 'jpg'}" for kind in FAULT_KINDS}

    def spec(self, key: str) -> ImageSpec | None:
        """The ground truth of URL key ``key``, or ``None`` for a key this corpus never makes."""
        spec = self._parse(key)
        return spec if spec is not None and spec.key == key else None

    # -- bytes ---------------------------------------------------------------------------

    def image_bytes(self, spec: ImageSpec) -> bytes:
        """The body served for ``spec``; for a fault spec, the picture it would have served."""
        key = self._bytes_key(spec)
        data = self._bytes.get(key)
        if data is None:
            data = self._generate(key)
            self._bytes.put(key, data)
        return data

    def cached_bytes(self, spec: ImageSpec) -> bytes | None:
        """:meth:`image_bytes` if already generated and cached, else ``None`` (never renders)."""
        return self._bytes.get(self._bytes_key(spec))

    def base_bytes(self, base: int, fmt: str = "jpeg") -> bytes:
        """The original picture of ``base`` encoded as ``fmt``."""
        if fmt not in FORMATS:
            raise ValueError(f"unsupported format {fmt!r}")
        key: tuple[object, ...] = ("original", base, fmt)
        data = self._bytes.get(key)
        if data is None:
            data = self._generate(key)
            self._bytes.put(key, data)
        return data

    def warm(self, specs: Iterable[ImageSpec]) -> None:
        """Generate (and cache) the bytes of every spec that serves a picture."""
        for spec in specs:
            if spec.fault is None or spec.fault in _PICTURE_FAULTS:
                self.image_bytes(spec)

    def approx_size(self, spec: ImageSpec) -> int:
        """A deterministic estimate of the byte size of ``spec``'s picture (for ``contentSize``)."""
        per_pixel = {"jpeg": 0.19, "png": 1.6, "gif": 0.55, "webp": 0.18}[spec.format]
        if spec.fault == "bomb":
            return 310_000
        jitter = 0.85 + 0.3 * (stable_hash(self.config.seed, "size", spec.key) / 2.0**64)
        pixels = spec.width * spec.height
        spread = self.synth.size_class.spread
        if spread is not None and spec.format == "jpeg":  # the measured model of the class
            return max(1, round(spread.estimate(pixels) * jitter))
        return max(1, round(pixels * per_pixel * jitter))

    @property
    def cache_size(self) -> int:
        """Bytes currently held by the image cache."""
        return self._bytes.size

    def _bytes_key(self, spec: ImageSpec) -> tuple[object, ...]:
        if spec.fault is not None or spec.variant in ("original", "mirror"):
            fmt = spec.format if spec.fault is None else "jpeg"
            return ("original", spec.base, fmt)
        quality, brightness, contrast, retouch = self._variant_params(spec.key)
        if spec.variant == "rescaled":
            return ("rescaled", spec.base, retouch, spec.width, spec.height)
        if spec.variant == "recompressed":
            return ("recompressed", spec.base, retouch, spec.format, quality)
        return ("brightened", spec.base, retouch, brightness, contrast)

    def _generate(self, key: tuple[object, ...]) -> bytes:
        kind, base = key[0], key[1]
        assert isinstance(base, int)
        quality = self.synth.size_class.quality
        if kind == "original":
            return encode(self.synth.render(base), str(key[2]), quality)
        picture = self.synth.render(base, retouch=int(str(key[2])))
        if kind == "rescaled":
            size = (int(str(key[3])), int(str(key[4])))
            return encode(rescale(picture, size), "jpeg", quality)
        if kind == "recompressed":
            return encode(picture, str(key[3]), int(str(key[4])))
        brightness, contrast = float(str(key[3])), float(str(key[4]))
        return encode(adjust(picture, brightness, contrast), "jpeg", quality)

    def _variant_params(self, key: str) -> tuple[int, float, float, int]:
        """JPEG quality, brightness and contrast factors and retouch of a near duplicate.

        The retouch (0..MAX_RETOUCH swapped hash-bit pairs) puts near duplicates at pHash
        distances 0, 2 and 4 from their original, so that dedup has to measure distance
        rather than compare hashes for equality.
        """
        h = stable_hash(self.config.seed, "variant-params", key)
        quality = 40 + h % 51
        if quality == self.synth.size_class.quality:
            quality -= 5
        shift = 0.03 + 0.07 * ((h >> 8) & 0xFFFF) / 0x10000
        sign = 1.0 if (h >> 24) & 1 else -1.0
        contrast = 0.9 + 0.2 * ((h >> 25) & 0xFFFF) / 0x10000
        retouch = (h >> 41) % (MAX_RETOUCH + 1)
        return quality, round(1.0 + sign * shift, 3), round(contrast, 3), retouch

    # -- composition ---------------------------------------------------------------------

    def _results(self, slug: str, namespace: int) -> tuple[ImageSpec, ...]:
        with self._queries_lock:
            cached = self._queries.get(namespace)
            if cached is not None:
                self._queries.move_to_end(namespace)
                return cached
        results = tuple(
            self._query_spec(slug, namespace, rank) for rank in range(self.config.results_per_query)
        )
        with self._queries_lock:
            self._queries[namespace] = results
            while len(self._queries) > _QUERY_CACHE:
                self._queries.popitem(last=False)
        return results

    def _category(self, namespace: int, rank: int) -> tuple[str, float]:
        """The category of a rank and its position in [0, 1) (``u`` of the Weyl sequence)."""
        u = (rank * _INV_PHI + stable_hash(self.config.seed, "offset", namespace) / 2.0**64) % 1.0
        names = ("fault", "mirror", "near", "cross")
        for name, bound in zip(names, self._bounds, strict=True):
            if u < bound:
                return name, u
        return "original", u

    def _source_rank(self, namespace: int, rank: int) -> int | None:
        """An original rank of the same list for a mirror or near duplicate to copy."""
        total = self.config.results_per_query
        for attempt in range(32):
            h = stable_hash(self.config.seed, "source", namespace, rank, attempt)
            candidate = h % rank if rank > 0 and attempt < 24 else h % total
            if candidate != rank and self._category(namespace, candidate)[0] == "original":
                return candidate
        return None

    def _original_format(self, namespace: int, index: int) -> str:
        u = stable_hash(self.config.seed, "format", namespace, index) / 2.0**64
        return mix_choice(FORMATS, self.config.format_mix, u)

    def _query_spec(self, slug: str, namespace: int, rank: int) -> ImageSpec:
        check = stable_hash(self.config.seed, "check", slug, namespace) % 0x1000
        prefix = f"{slug}-{namespace:09x}{check:03x}/{rank:04d}"
        own_base = (namespace << NAMESPACE_BITS) | rank
        category, u = self._category(namespace, rank)
        if category in ("mirror", "near"):
            source = self._source_rank(namespace, rank)
            if source is None:
                category = "original"
        if category == "fault":
            kinds = self.config.fault_kinds
            kind = kinds[min(int(u / self.config.fault_rate * len(kinds)), len(kinds) - 1)]
            return self._fault_spec(prefix, own_base, kind, slug)
        if category == "cross":
            pool_base = stable_hash(self.config.seed, "pool", namespace, rank) % _POOL_SIZE
            fmt = self._original_format(0, pool_base)
            return self._make(prefix, pool_base, "original", None, fmt, slug)
        if category == "original":
            fmt = self._original_format(namespace, rank)
            return self._make(prefix, own_base, "original", None, fmt, slug)
        assert source is not None
        source_base = (namespace << NAMESPACE_BITS) | source
        if category == "mirror":
            fmt = self._original_format(namespace, source)
            return self._make(prefix, source_base, "mirror", None, fmt, slug)
        return self._near_spec(prefix, source_base, slug)

    def _near_spec(self, prefix: str, base: int, slug: str) -> ImageSpec:
        h = stable_hash(self.config.seed, "variant", prefix)
        variant = ("rescaled", "recompressed", "brightened")[h % 3]
        if variant == "rescaled":
            factor = 0.5 + 0.4 * ((h >> 8) % 1000) / 1000.0
            w, h0 = self.synth.dimensions(base)
            size = (max(1, round(w * factor)), max(1, round(h0 * factor)))
            return self._make(prefix, base, variant, None, "jpeg", slug, size)
        fmt = "png" if variant == "recompressed" and (h >> 8) % 10 < 3 else "jpeg"
        return self._make(prefix, base, variant, None, fmt, slug)

    def _fault_spec(self, prefix: str, base: int, kind: str, slug: str) -> ImageSpec:
        if kind == "bomb":
            return self._make(prefix, base, "original", kind, "png", slug, BOMB_SIZE)
        return self._make(prefix, base, "original", kind, "jpeg", slug)

    def _similar_spec(self, base: int, i: int) -> ImageSpec:
        prefix = f"s/{base:014x}/{i:04d}"
        namespace, index = base >> NAMESPACE_BITS, base & ((1 << NAMESPACE_BITS) - 1)
        if i % 4 == 3:
            return self._near_spec(prefix, base, "related")
        span = _POOL_SIZE if namespace == 0 else self.config.results_per_query
        other = stable_hash(self.config.seed, "similar", base, i) % max(span, 2)
        if other == index:
            other = (other + 1) % max(span, 2)
        other_base = (namespace << NAMESPACE_BITS) | other
        fmt = self._original_format(namespace, other)
        return self._make(prefix, other_base, "original", None, fmt, "related")

    def _make(
        self,
        prefix: str,
        base: int,
        variant: str,
        fault: str | None,
        fmt: str,
        slug: str,
        size: tuple[int, int] | None = None,
    ) -> ImageSpec:
        seed = self.config.seed
        width, height = size if size is not None else self.synth.dimensions(base)
        title = " ".join(word.capitalize() for word in slug.split("-"))
        url_hash = stable_hash(seed, "url", prefix)  # one hash, split: this runs per result
        descriptor = _DESCRIPTORS[url_hash % len(_DESCRIPTORS)]
        site = _SITES[(url_hash >> 8) % len(_SITES)]
        page = (url_hash >> 16) % 1_000_000
        seconds = ((url_hash >> 32) * _SPAN_SECONDS) >> 32
        base_hash = stable_hash(seed, "kind", base)
        license_ = mix_choice(LICENSES, (10, 35, 20, 20, 15), (base_hash & 0xFFFFFF) / 0x1000000)
        if fmt == "png":
            image_type = "Transparent"
        elif fmt == "gif":
            image_type = "AnimatedGif"
        else:
            u = (base_hash >> 32) / 2.0**32
            image_type = "Photo" if u < 0.8 else "Clipart" if u < 0.92 else "Line"
        published = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        return ImageSpec(
            key=f"{prefix}.{EXTENSIONS[fmt]}",
            base=base,
            variant=variant,
            fault=fault,
            format=fmt,
            width=width,
            height=height,
            name=f"{title} {descriptor}",
            host_page_url=f"https://{site}/{slug}/{page:06d}.html",
            license=license_,
            image_type=image_type,
            color=self.synth.accent_color(base),
            date_published=published,
        )

    def _parse(self, key: str) -> ImageSpec | None:
        if m := _QUERY_KEY.fullmatch(key):
            slug, namespace, rank = m[1], int(m[2], 16), int(m[4])
            check = stable_hash(self.config.seed, "check", slug, namespace) % 0x1000
            if int(m[3], 16) != check or rank >= self.config.results_per_query:
                return None
            return self._query_spec(slug, namespace, rank)
        if m := _BASE_KEY.fullmatch(key):
            fmt = _FORMAT_OF_EXT.get(m[2])
            if fmt is None:
                return None
            base = int(m[1], 16)
            if base >= 1 << 53:
                return None
            return self._make(f"b/{base:014x}", base, "original", None, fmt, "picture")
        if m := _SIMILAR_KEY.fullmatch(key):
            return self._similar_spec(int(m[1], 16), int(m[2]))
        if m := _FAULT_KEY.fullmatch(key):
            kind, index = m[1], int(m[2])
            if kind not in FAULT_KINDS:
                return None
            base = (_FAULT_NAMESPACE << NAMESPACE_BITS) | index
            return self._fault_spec(f"f/{kind}/{index:04d}", base, kind, "fault-example")
        return None
