"""Frozen, validated configuration of a crawl.

The CLI resolves flags, environment and files once into a :class:`CrawlConfig`; nothing deeper
reads ``os.environ``. Every check raises :class:`~bingcrawl.errors.ConfigError` naming the
option, before any request is made.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bingcrawl.bing.params import DEFAULT_ENDPOINT, CropArea
from bingcrawl.errors import ConfigError, InvalidParameterError
from bingcrawl.fetch.download import DownloadConfig
from bingcrawl.records import (
    CONVERT_TO,
    HASH_ALGOS,
    NEAR_DUP_METHODS,
    OUTPUT_FORMATS,
    PROVIDERS,
)
from bingcrawl.urllist import url_format

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_NEAR_DUP_DISTANCE",
    "FILTER_FLAGS",
    "PARAM_TO_FLAG",
    "PROVIDER_ONLY_FLAGS",
    "RESULT_OPTIONS",
    "CrawlConfig",
    "QuerySpec",
    "check_out_dir",
    "parse_queries_file",
    "prepare_out_dir",
    "provider_filters",
    "safe_label",
    "validate_filters",
]

#: Option (CLI flag) -> Bing query parameter, for every filter of the reference.
FILTER_FLAGS: dict[str, str] = {
    "--license": "license",
    "--image-type": "imageType",
    "--safe-search": "safeSearch",
    "--mkt": "mkt",
    "--cc": "cc",
    "--set-lang": "setLang",
    "--accept-language": "Accept-Language",
    "--size": "size",
    "--aspect": "aspect",
    "--color": "color",
    "--freshness": "freshness",
    "--image-content": "imageContent",
    "--width": "width",
    "--height": "height",
    "--min-width": "minWidth",
    "--max-width": "maxWidth",
    "--min-height": "minHeight",
    "--max-height": "maxHeight",
    "--min-file-size": "minFileSize",
    "--max-file-size": "maxFileSize",
    # Openverse's own filters (see bingcrawl.providers.openverse.OPTION_PARAMS).
    "--license-type": "license_type",
    "--category": "category",
}
#: The filter flags only some providers honour, and those providers.
PROVIDER_ONLY_FLAGS: dict[str, tuple[str, ...]] = {
    "--license-type": ("openverse",),
    "--category": ("openverse",),
}
#: Bing query parameter (case-folded) -> the option that sets it, for error messages.
PARAM_TO_FLAG = {v.casefold(): k for k, v in FILTER_FLAGS.items()} | {
    "count": "--count",
    "q": "QUERY",
}


#: Hamming distance (of 64-bit pHashes) at or below which two images are near duplicates.
#: Chosen by measurement (README, "Choosing the near-duplicate distance";
#: ``python -m benchmarks.threshold``): the largest distance that merged no two different
#: pictures among 268 tiles of real photographs and the emulator's corpus (8 merged
#: look-alike tiles; pHash distances are even, so 7 would act as 6). It keeps every
#: rescale, JPEG q40-90, brightness/contrast +-10 % and PNG<->JPEG copy; crops of 2-3 % are
#: the copies it misses.
DEFAULT_NEAR_DUP_DISTANCE = 6

#: Where downloads run: ``local`` (this process) or ``ray`` (a Ray cluster; extra ``[ray]``).
ENGINES: Final = ("local", "ray")

#: Deepest --expand level accepted (each level multiplies the queries by ~20).
MAX_EXPAND_DEPTH = 5
#: Most similar images queued per stored image (--similar).
MAX_SIMILAR = 150
MAX_LABEL_LENGTH = 80
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
_UNSAFE = re.compile(r"[\W]+", re.UNICODE)


def safe_label(text: str, *, lower: bool = True) -> str:
    """A directory name for ``text``: unicode-aware slug, no separators, no ``..``, no NUL.

    Letters and digits of any script are kept; every other run of characters becomes ``_``.
    Reserved device names get a suffix, long labels are cut (with a short hash so that two
    long labels stay distinct), and a label with nothing left is named after its hash.
    """
    norm = unicodedata.normalize("NFKC", text)
    if lower:
        norm = norm.casefold()
    slug = _UNSAFE.sub("_", norm).strip("_.- ")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    if not slug:
        return f"label_{digest}"
    if len(slug) > MAX_LABEL_LENGTH:
        slug = f"{slug[: MAX_LABEL_LENGTH - 9].rstrip('_')}_{digest}"
    if slug.split(".")[0].casefold() in _WINDOWS_RESERVED:
        slug = f"{slug}_"
    return slug


def provider_filters(
    provider: str,
    options: Mapping[str, object],
    *,
    count: int = 150,
    serpapi_engine: str = "bing_images",
) -> tuple[tuple[str, str], ...]:
    """The canonical filters of ``provider`` for the filter options given (flag -> value,
    None for not given). A filter the provider cannot honour, or a value it does not take,
    raises :class:`ConfigError` naming the option and the provider, before any request."""
    given = {flag: value for flag, value in options.items() if value is not None}
    if provider == "wikimedia":
        for flag in given:
            raise ConfigError(flag, "provider wikimedia takes no filter (its search has none)")
        return ()
    if provider == "openverse":
        from bingcrawl.providers.openverse import openverse_filters

        return openverse_filters({flag: str(value) for flag, value in given.items()})
    if provider == "brave":
        from bingcrawl.providers.brave import brave_filters

        return brave_filters({flag: str(value) for flag, value in given.items()})
    if provider == "serpapi":
        from bingcrawl.providers.serpapi import serpapi_filters

        return serpapi_filters(serpapi_engine, {flag: str(v) for flag, v in given.items()})
    for flag in given:
        if provider not in PROVIDER_ONLY_FLAGS.get(flag, (provider,)):
            only = ", ".join(PROVIDER_ONLY_FLAGS[flag])
            raise ConfigError(flag, f"provider {provider} has no such filter (only {only})")
    return validate_filters({FILTER_FLAGS[flag]: v for flag, v in given.items()}, count=count)


def validate_filters(
    filters: Iterable[tuple[str, str]] | Mapping[str, object], *, count: int = 150
) -> tuple[tuple[str, str], ...]:
    """Validate Bing filters (reference spelling, any case of value) and return them in
    canonical form, sorted. Raises :class:`ConfigError` naming the option (``--license``...)
    with the accepted values, so a bad filter fails when the config is built, never inside a
    crawl."""
    from bingcrawl.bing.params import SearchParams

    pairs = filters.items() if isinstance(filters, Mapping) else filters
    given = {str(k): v for k, v in pairs if v is not None}
    try:
        validated = SearchParams.from_mapping({"q": "validation", "count": count, **given})
    except InvalidParameterError as exc:
        flag = PARAM_TO_FLAG.get(exc.parameter.casefold(), exc.parameter)
        raise ConfigError(flag, f"invalid value {exc.value!r}; accepted: {exc.accepted}") from None
    canonical = {k: v for k, v in validated.to_query().items() if k not in ("q", "count", "offset")}
    if validated.accept_language is not None:
        canonical["Accept-Language"] = validated.accept_language
    return tuple(sorted((k, str(v)) for k, v in canonical.items()))


def check_out_dir(out: Path, *, option: str = "--out") -> Path:
    """Prove, without creating anything, that ``out`` can be the output directory: it is a
    directory or can be created in the nearest existing one, which is writable.

    Raises :class:`ConfigError` naming ``option`` (a file, a path under a file, a read-only
    filesystem, no permission). Building a config never touches the disk beyond a probe file
    that deletes itself: :func:`prepare_out_dir` creates the directory when the crawl opens.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(option, f"{out} exists and is not a directory")
    probe_in = out
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        raise ConfigError(option, f"cannot create {out}: {probe_in} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe_in, prefix=".bingcrawl-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(option, f"cannot write to {probe_in}: {exc.strerror or exc}") from None
    return out


def prepare_out_dir(out: Path, *, option: str = "--out") -> Path:
    """Create the output directory if needed and prove it writable, before any request.

    Raises :class:`ConfigError` naming ``option`` when ``out`` is a file, lies under a file,
    cannot be created, or cannot be written (a read-only filesystem, no permission).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(option, f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        # A probe file: the only honest test (access() says yes to root on a full disk, and
        # a directory can be listable but not writable).
        with tempfile.TemporaryFile(dir=out, prefix=".bingcrawl-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(option, f"cannot write to {out}: {reason}") from None
    return out


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """One root query: the search text and the label (directory) its images go to."""

    text: str
    label: str

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ConfigError("QUERY", "a query must not be empty")
        if len(self.text) > 1500:
            raise ConfigError(
                "QUERY", "a query must be at most 1,500 characters (the API's URL limit)"
            )
        if self.label != safe_label(self.label, lower=False):
            raise ConfigError("label", f"{self.label!r} is not a safe directory name")

    @classmethod
    def of(cls, text: str, label: str | None = None) -> QuerySpec:
        """A query whose label defaults to a safe slug of its text."""
        text = " ".join(text.split())
        return cls(text, safe_label(label, lower=False) if label else safe_label(text))


def parse_queries_file(lines: Iterable[str], *, option: str = "--queries-file") -> list[QuerySpec]:
    """Parse ``query`` or ``label<TAB>query`` lines; ``#`` comments and blank lines skipped."""
    specs = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label, sep, text = line.partition("\t")
        if not sep:
            label, text = "", line
        if not text.strip():
            raise ConfigError(option, f"line {number}: empty query")
        specs.append(QuerySpec.of(text, label.strip() or None))
    return specs


@dataclass(frozen=True, slots=True)
class CrawlConfig:
    """Everything a crawl needs, validated. ``key`` never appears in a repr."""

    out: Path
    queries: tuple[QuerySpec, ...] = ()
    key: str | None = field(default=None, repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    #: The search service (one of PROVIDERS); ``endpoint`` is its base URL.
    provider: str = "bing"
    #: OAuth2 client credentials of providers that take them (Openverse), or None.
    client_id: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    #: SerpApi's engine: bing_images (Bing's filters kept) or google_images.
    serpapi_engine: str = "bing_images"
    #: The provider's query parameters applied to every search (Bing: reference spelling;
    #: Openverse: its own), canonical and validated.
    filters: tuple[tuple[str, str], ...] = ()
    limit: int = 100
    count: int = 150
    qps: float = 3.0
    max_active_queries: int = 8
    max_api_calls: int | None = None
    api_retries: int = 6
    api_backoff: float = 1.0  # base of the API's jittered exponential backoff, seconds
    download: DownloadConfig = field(default_factory=DownloadConfig)
    hash_algo: str = "phash"
    hash_workers: int | None = None
    near_dup_distance: int = DEFAULT_NEAR_DUP_DISTANCE
    #: ``regions`` or ``whole`` (:data:`~bingcrawl.records.NEAR_DUP_METHODS`); None: the
    #: method of the crawl being resumed, ``regions`` for a new one (the crawler decides).
    near_dup_method: str | None = None
    max_pixels: int = 64_000_000
    durable: bool = False
    #: Bytes to keep free on OUT's filesystem: below it the crawl stops as on a full disk
    #: (exit 5, resumable). None: 1 GiB or 1 % of the filesystem, the smaller; 0: no floor.
    min_free: int | None = None
    fresh: bool = False
    progress: bool = False
    grace: float = 5.0
    frontier_size: int = 0  # 0 = 2 x concurrency
    user_agent: str | None = None
    metrics_port: int | None = None  # serve Prometheus metrics and /healthz (None: off)
    metrics_host: str = "127.0.0.1"
    stall_after: float = 600.0  # /healthz answers 503 after this long without progress
    crash_at: str | None = None  # test hook: "<point>:<n>", see bingcrawl.engine.crashpoints
    # -- sources beyond search (see bingcrawl.sources) --------------------------------------
    #: Label of seed images and URL lists (default: from the seed directory / the file name).
    label: str | None = None
    #: Follow query expansions, pivots and similar terms this many levels (0: off).
    expand_depth: int = 0
    #: At most this many search queries (roots + expansions); None: only the depth bounds them.
    max_queries: int | None = None
    #: Queue up to this many visually similar images per stored image (0: off).
    similar: int = 0
    #: Directory of local images to run visual search from (None: off).
    seed_images: Path | None = None
    #: Region of the seed images to search by: (top, left, bottom, right) fractions.
    crop: tuple[float, float, float, float] | None = None
    #: Crawl today's trending images, one label per category.
    trending: bool = False
    #: URL lists (txt, csv, tsv, jsonl, parquet) fetched without any API call.
    urls_files: tuple[Path, ...] = ()
    #: --limit for URL lists; None: a URL list is fetched whole (no explicit --limit given).
    url_limit: int | None = None
    #: URL-list column names: url, caption, label (img2dataset's defaults).
    url_columns: tuple[str, str, str] = ("url", "caption", "label")
    output_format: str = "files"  # files (ImageFolder) | webdataset (tar shards)
    convert_to: str = "keep"  # keep | jpg | png: one format for the whole dataset
    shard_size: int = 10_000  # images per webdataset shard
    shard_by: str = "label"  # a shard series per label, or "all" in one series
    # -- the engine (see bingcrawl.cluster) ---------------------------------------------------
    #: ``local`` (this process) or ``ray`` (download/hash workers across a Ray cluster).
    engine: str = "local"
    #: With ``engine="ray"``: the cluster to join (``auto``: the one this node runs in, or the
    #: head's ``HOST:PORT``);
    #: None starts a Ray runtime on this machine for the crawl.
    ray_address: str | None = None
    #: With ``engine="ray"``: download/hash workers (None: one per pair of the cluster's CPUs).
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError("--limit", f"must be >= 1, got {self.limit}")
        if not 1 <= self.count <= 150:
            raise ConfigError("--count", f"must be between 1 and 150, got {self.count}")
        if not (self.qps > 0 and math.isfinite(self.qps)):
            raise ConfigError("--qps", f"must be a positive number, got {self.qps}")
        if self.max_active_queries < 1:
            raise ConfigError("--max-active-queries", "must be >= 1")
        if self.max_api_calls is not None and self.max_api_calls < 0:
            raise ConfigError("--max-api-calls", "must be >= 0")
        if self.hash_algo not in HASH_ALGOS:
            raise ConfigError("--hash", f"must be one of {', '.join(HASH_ALGOS)}")
        if self.hash_workers is not None and self.hash_workers < 0:
            raise ConfigError("--hash-workers", "must be >= 0 (0 hashes in a thread)")
        if not 0 <= self.near_dup_distance <= 32:
            raise ConfigError("--near-dup-distance", "must be between 0 and 32")
        if self.min_free is not None and self.min_free < 0:
            raise ConfigError(
                "--min-free", f"must be >= 0 bytes (0: no floor), got {self.min_free}"
            )
        if self.near_dup_method is not None and self.near_dup_method not in NEAR_DUP_METHODS:
            raise ConfigError(
                "--near-dup-method", f"must be one of {', '.join(NEAR_DUP_METHODS)}"
            )
        if self.max_pixels < 1:
            raise ConfigError("--max-pixels", "must be >= 1")
        if not (self.grace >= 0 and math.isfinite(self.grace)):
            raise ConfigError("--grace", "must be >= 0 seconds")
        if self.frontier_size < 0:
            raise ConfigError("--frontier-size", "must be >= 0")
        if self.convert_to not in CONVERT_TO:
            raise ConfigError("--convert-to", f"must be one of {', '.join(CONVERT_TO)}")
        if self.output_format not in OUTPUT_FORMATS:
            raise ConfigError("--output-format", f"must be one of {', '.join(OUTPUT_FORMATS)}")
        if self.shard_size < 1:
            raise ConfigError("--shard-size", "must be >= 1")
        if self.shard_by not in ("label", "all"):
            raise ConfigError("--shard-by", "must be 'label' or 'all'")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError("--metrics-port", "must be between 0 and 65535")
        if not self.stall_after > 0:
            raise ConfigError("--stall-after", "must be > 0 seconds")
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError("--endpoint", f"must be an http(s) URL, got {self.endpoint!r}")
        self._check_sources()
        self._check_engine()
        if self.provider not in PROVIDERS:
            raise ConfigError("--provider", f"must be one of {', '.join(PROVIDERS)}")
        if self.provider == "openverse":
            from bingcrawl.providers.openverse import check_filters

            check_filters(dict(self.filters))
            self._refuse_bing_only()
        elif self.provider == "wikimedia":
            if self.filters:
                raise ConfigError(self.filters[0][0], "provider wikimedia takes no filter")
            self._refuse_bing_only()
        elif self.provider == "brave":
            from bingcrawl.providers.brave import OPTION_PARAMS

            for param, _ in self.filters:
                if param not in OPTION_PARAMS.values():
                    raise ConfigError(param, "is not a filter Brave takes (provider brave)")
            self._refuse_bing_only()
        elif self.provider == "serpapi":
            from bingcrawl.providers.serpapi import ENGINES

            if self.serpapi_engine not in ENGINES:
                raise ConfigError("--serpapi-engine", f"must be one of {', '.join(ENGINES)}")
            self._refuse_bing_only()
        else:
            canonical = validate_filters(self.filters, count=self.count)
            object.__setattr__(self, "filters", canonical)
        labels: dict[str, str] = {}
        for q in self.queries:
            if labels.setdefault(q.text.casefold(), q.label) != q.label:
                raise ConfigError("QUERY", f"query {q.text!r} is given twice with different labels")

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            choices = ", ".join(ENGINES)
            raise ConfigError("--engine", f"must be one of {choices}, got {self.engine!r}")
        if self.engine == "local":
            if self.ray_address is not None:
                raise ConfigError("--ray-address", "only applies with --engine ray")
            if self.workers is not None:
                raise ConfigError("--workers", "only applies with --engine ray")
            return
        address = self.ray_address
        if address is not None and address != "auto" and not address.startswith("ray://"):
            host, sep, port = address.rpartition(":")
            if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
                raise ConfigError(
                    "--ray-address", f"give auto or the head's HOST:PORT, got {address!r}"
                )
        if self.workers is not None and not 1 <= self.workers <= 4096:
            raise ConfigError("--workers", f"must be between 1 and 4096, got {self.workers}")
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "--engine",
                "ray needs Ray, which is not installed: pip install 'bingcrawl[ray]' "
                "(or use --engine local)",
            )

    def _check_sources(self) -> None:
        if not 0 <= self.expand_depth <= MAX_EXPAND_DEPTH:
            raise ConfigError("--expand", f"must be between 0 and {MAX_EXPAND_DEPTH} levels")
        if self.max_queries is not None:
            if self.max_queries < 1:
                raise ConfigError("--max-queries", "must be >= 1")
            if not self.expand_depth:
                raise ConfigError("--max-queries", "only applies with --expand")
        if not 0 <= self.similar <= MAX_SIMILAR:
            raise ConfigError("--similar", f"must be between 0 and {MAX_SIMILAR}")
        if self.label is not None and self.label != safe_label(self.label, lower=False):
            raise ConfigError("--label", f"{self.label!r} is not a safe directory name")
        if self.crop is not None:
            if self.seed_images is None:
                raise ConfigError("--crop", "only applies to --seed-images")
            if len(self.crop) != 4:
                raise ConfigError("--crop", "give four fractions: top,left,bottom,right")
            try:
                CropArea(*self.crop)
            except InvalidParameterError as exc:
                raise ConfigError(
                    "--crop", f"{exc.parameter} {exc.value!r}: {exc.accepted}"
                ) from None
        for path in self.urls_files:
            url_format(Path(path))
        if self.url_limit is not None and self.url_limit < 1:
            raise ConfigError("--limit", f"must be >= 1, got {self.url_limit}")
        names = ("--url-col", "--caption-col", "--label-col")
        if len(self.url_columns) != 3:
            raise ConfigError("--url-col", "url_columns holds the url, caption and label names")
        for option, name in zip(names, self.url_columns, strict=True):
            if not name.strip():
                raise ConfigError(option, "must not be empty")

    @property
    def queue_size(self) -> int:
        """The frontier's bound."""
        return self.frontier_size or 2 * self.download.concurrency

    def filter_map(self) -> dict[str, str]:
        """The search filters as a dict."""
        return dict(self.filters)

    def _refuse_bing_only(self) -> None:
        """Sources that only Bing's API has (its details, visual search, trending and query
        suggestions) are refused for other providers, before any request."""
        bing_only = {
            "--expand": self.expand_depth > 0,
            "--similar": self.similar > 0,
            "--seed-images": self.seed_images is not None,
            "--trending": self.trending,
        }
        for flag, used in bing_only.items():
            if used:
                raise ConfigError(flag, f"needs --provider bing (not {self.provider})")

    def fingerprint(self) -> dict[str, Any]:
        """The options that change the result set (:data:`RESULT_OPTIONS`); a resumed run
        must match them."""
        found = {key: read(self) for key, (_, read) in RESULT_OPTIONS.items()}
        return {key: value for key, value in found.items() if value is not UNSET}

    @staticmethod
    def filters_from(mapping: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
        """Normalise a mapping of Bing parameters (None values dropped) to ``filters``."""
        return tuple(sorted((k, str(v)) for k, v in mapping.items() if v is not None))


#: A fingerprint entry left out (an option at a value older crawls could not have had).
UNSET: Final = object()

#: The options that change the result set, by fingerprint key: the flags that set it and
#: how a config holds it. A resumed run must give the same values, or start over with
#: ``--fresh``; every other option (concurrency, QPS, a raised ``--limit``...) may change
#: between runs. The keys are stored in every checkpoint: renaming one breaks resuming.
#: The options reference (``bingcrawl.options.options_reference``) marks these flags.
RESULT_OPTIONS: Final[Mapping[str, tuple[tuple[str, ...], Callable[[CrawlConfig], object]]]] = {
    "filters": (tuple(FILTER_FLAGS), lambda c: dict(sorted(c.filters))),
    "hash": (("--hash",), lambda c: c.hash_algo),
    "near_dup_distance": (("--near-dup-distance",), lambda c: c.near_dup_distance),
    # Only for ``regions``: a crawl made before the option existed used ``whole``, and stays
    # resumable (the crawler resumes it with ``whole`` unless told otherwise).
    "near_dup_method": (
        ("--near-dup-method",),
        lambda c: UNSET if c.near_dup_method in (None, "whole") else c.near_dup_method,
    ),
    "max_pixels": (("--max-pixels",), lambda c: c.max_pixels),
    "max_bytes": (("--max-bytes",), lambda c: c.download.max_bytes),
    "output_format": (("--output-format",), lambda c: c.output_format),
    # Only for another provider than Bing: crawls made before providers stay resumable.
    "provider": (("--provider",), lambda c: UNSET if c.provider == "bing" else c.provider),
    "serpapi_engine": (
        ("--serpapi-engine",),
        lambda c: c.serpapi_engine if c.provider == "serpapi" else UNSET,
    ),
    # Only when converting: a crawl made before the option existed stays resumable, and
    # switching a dataset's format half-way is refused like any other option.
    "convert_to": (("--convert-to",), lambda c: UNSET if c.convert_to == "keep" else c.convert_to),
}
