"""The typed records that pass between pipeline stages.

``sources --Candidate--> frontier --Candidate--> download --Fetched--> hash pool --Hashed-->
dedup --Outcome--> store``

Raw JSON stops at the API client and raw aiohttp responses stop in the download worker: every
stage boundary carries one of these frozen, slotted dataclasses. A failed download is data (an
``Outcome`` with ``status == FAILED`` and an ``error_class``), never an exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

#: File extension of each image format bingcrawl keeps (the one home of jpeg -> jpg).
EXTENSIONS: Final[dict[str, str]] = {"jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp"}

#: Perceptual hash algorithms (all 64-bit), for ``--hash``.
HASH_ALGOS: Final[tuple[str, ...]] = ("phash", "dhash", "ahash", "whash")

#: ``--near-dup-method`` values. ``regions`` (the default): two hashes per picture, one of the
#: picture with flat borders (letterbox, padding) trimmed and one of its centre, each hit
#: confirmed by the other hash (see :mod:`bingcrawl.dedup.index`). ``whole``: one hash of the
#: whole picture, the method of crawls made before ``regions`` existed.
NEAR_DUP_METHODS: Final[tuple[str, ...]] = ("regions", "whole")

#: How a duplicate was recognised: ``exact`` (same sha256), or the hash that matched within
#: ``--near-dup-distance``: ``frame`` (the trimmed picture; with ``whole``, the picture) or
#: ``centre``.
MATCH_KINDS: Final[tuple[str, ...]] = ("exact", "frame", "centre")

#: Prefix of the error class of an image a publisher's opt-out excluded (its outcome is
#: ``failed``, never retried): ``opted_out_robots_txt``, ``opted_out_x_robots_tag``, ...
#: (:mod:`bingcrawl.fetch.etiquette`).
OPTED_OUT: Final = "opted_out_"

#: A query row's states, in the order reports list them.
QUERY_STATES: Final[tuple[str, ...]] = ("active", "exhausted", "failed", "done")

#: ``--convert-to`` values: keep the downloaded format, or store every image as jpg or png.
CONVERT_TO: Final[tuple[str, ...]] = ("keep", "jpg", "png")

#: ``--provider`` values: the search services a crawl can page (``bingcrawl.providers``).
PROVIDERS: Final[tuple[str, ...]] = ("bing", "openverse", "wikimedia", "brave", "serpapi")

#: ``--output-format`` values: one file per image, or webdataset tar shards.
OUTPUT_FORMATS: Final[tuple[str, ...]] = ("files", "webdataset")

__all__ = [
    "CONVERT_TO",
    "EXTENSIONS",
    "HASH_ALGOS",
    "MATCH_KINDS",
    "NEAR_DUP_METHODS",
    "OPTED_OUT",
    "OUTPUT_FORMATS",
    "PROVIDERS",
    "QUERY_STATES",
    "Candidate",
    "DownloadFailure",
    "ErrorClass",
    "Fetched",
    "HashFailure",
    "Hashed",
    "Outcome",
    "Source",
    "Status",
]


class Source(enum.StrEnum):
    """Where a candidate came from (the manifest's ``source`` field)."""

    SEARCH = "search"
    EXPAND = "expand"
    SIMILAR = "similar"
    VISUAL = "visual"
    TRENDING = "trending"
    URLS = "urls"


class Status(enum.StrEnum):
    """The final (or current) state of a candidate in the checkpoint."""

    PENDING = "pending"  # known, not yet downloaded
    INFLIGHT = "inflight"  # handed to a worker; re-queued at start-up after a crash
    STORED = "stored"  # file in place ("done")
    DUPLICATE = "duplicate"  # exact or near duplicate of a stored image
    FAILED = "failed"  # see error_class
    SKIPPED = "skipped"  # not needed: the query already had --limit stored images


class ErrorClass(enum.StrEnum):
    """Why a candidate failed. ``http_<status>`` classes are built with :meth:`http`."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset, DNS failure
    TOO_LARGE = "too_large"  # Content-Length or streamed bytes over --max-bytes
    NOT_AN_IMAGE = "not_an_image"  # bytes are not an allowed raster format (HTML, SVG, ...)
    TRUNCATED = "truncated"  # body shorter than announced, or the image data is cut
    DECOMPRESSION_BOMB = "decompression_bomb"  # too many pixels
    UNSUPPORTED_FORMAT = "unsupported_format"  # a raster format outside the allow-list
    BLOCKED_ADDRESS = "blocked_address"  # network policy refused the address (SSRF guard)
    BAD_URL = "bad_url"  # not http(s), unparseable
    TOO_MANY_REDIRECTS = "too_many_redirects"
    BAD_ENCODING = "bad_encoding"  # a compressed Content-Encoding we refuse
    TOO_SLOW = "too_slow"  # below the minimum throughput (slow drip)
    WRITE_ERROR = "write_error"  # the file could not be written under OUT
    DECODE_TIMEOUT = "decode_timeout"  # decoding hung (a pathological file): workers killed
    WORKER_LOST = "worker_lost"  # the worker handling it died every time (--engine ray)
    ROBOTS_UNAVAILABLE = "robots_unavailable"  # its origin's robots.txt answered 5xx / 429
    HOST_UNRESPONSIVE = "host_unresponsive"  # its host stopped answering: given up a while

    @staticmethod
    def http(status: int) -> str:
        """The error class of an HTTP status that ended a download, e.g. ``http_404``."""
        return f"http_{status}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One image URL to fetch, with the metadata the manifest keeps.

    ``id`` is the checkpoint row id (0 before the candidate is recorded). ``query`` is the
    text of the query that produced it (for expanded queries the expansion; ``parent`` names
    the query it was expanded from). ``license`` is the license filter the query used.
    """

    url: str
    label: str
    query: str
    source: Source = Source.SEARCH
    id: int = 0
    query_id: int = 0
    image_id: str | None = None
    name: str | None = None
    host_page_url: str | None = None
    thumbnail_url: str | None = None
    insights_token: str | None = None
    encoding_format: str | None = None
    reported_width: int | None = None
    reported_height: int | None = None
    license: str | None = None
    parent: str | None = None
    #: Where the image's own license is stated, who made it and a ready credit line, as the
    #: provider gave them (Openverse); None where it gives none (Bing).
    license_url: str | None = None
    creator: str | None = None
    attribution: str | None = None
    #: The search service that found it (``bing``, ``openverse``); None for URL lists.
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """The bytes of a successful download. ``final_url`` is the URL after redirects."""

    candidate: Candidate
    body: bytes
    final_url: str
    content_type: str | None
    status: int
    attempts: int
    elapsed: float


@dataclass(frozen=True, slots=True)
class DownloadFailure:
    """A download that ended without usable bytes."""

    candidate: Candidate
    error_class: str
    detail: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Hashed:
    """What the hash pool learned from the bytes of one image.

    ``format`` is the decoded format in lower case (``jpeg``, ``png``, ``gif``, ``webp``) and
    ``ext`` the file extension that goes with it. ``phash`` is the 64-bit perceptual hash as
    an unsigned int (always of the downloaded picture, converted or not): with the ``regions``
    method, of the picture with its flat borders trimmed, and ``centre`` is the hash of the
    trimmed picture's centre; with ``whole``, of the whole picture, and ``centre`` is None.
    """

    sha256: str
    phash: int
    width: int
    height: int
    format: str
    ext: str
    size: int
    #: The bytes to store when ``--convert-to`` re-encoded the image (then ``sha256``,
    #: ``format``, ``ext``, ``size``, ``width`` and ``height`` describe them); None when the
    #: downloaded bytes are stored as they are.
    body: bytes | None = None
    centre: int | None = None


@dataclass(frozen=True, slots=True)
class HashFailure:
    """The hash pool refused the bytes (``error_class`` from :class:`ErrorClass`)."""

    error_class: str
    detail: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final word on one candidate, as the store records it.

    For ``STORED``: ``path`` is relative to OUT. For ``DUPLICATE``: ``duplicate_of`` is the
    sha256 of the stored image, ``distance`` the Hamming distance (0 for exact copies) and
    ``match`` which hash matched (one of :data:`MATCH_KINDS`).
    For ``FAILED``: ``error_class`` and ``detail``. With webdataset output ``path`` is the tar
    shard and ``shard_offset`` / ``shard_end`` the byte range of the image's members in it.
    """

    candidate: Candidate
    status: Status
    attempts: int = 0
    error_class: str | None = None
    detail: str | None = None
    sha256: str | None = None
    phash: int | None = None
    centre: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    size: int | None = None
    path: str | None = None
    duplicate_of: str | None = None
    distance: int | None = None
    match: str | None = None
    fetched_at: float | None = None
    shard_offset: int | None = None
    shard_end: int | None = None
