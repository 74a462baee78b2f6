"""Configuration of the Bing Image Search v7 emulator: one frozen, validated value.

The emulator's *service behaviour* (keys, QPS window, monthly quota, injected faults) lives
here; what the corpus contains and how image hosts misbehave live in
:class:`~bingcrawl.emulator.corpus.CorpusConfig` and
:class:`~bingcrawl.emulator.imagehost.ImageHostConfig`, nested as ``corpus`` and ``images``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from bingcrawl.emulator.corpus import CorpusConfig
from bingcrawl.emulator.imagehost import ImageHostConfig
from bingcrawl.errors import ConfigError

__all__ = [
    "MAX_COUNT",
    "MAX_UPLOAD_BYTES",
    "EmulatorConfig",
    "RetryAfterFormat",
]

#: The reference's maximum ``count`` for /images/search.
MAX_COUNT = 150

#: The reference's upload limit for /images/visualsearch and POST /images/details ("1 MB"),
#: read as the larger binary megabyte so that a client aiming at either reading passes.
MAX_UPLOAD_BYTES = 1024 * 1024

RetryAfterFormat = Literal["seconds", "date"]


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything that shapes the emulator's API behaviour.

    Probabilities are drawn from one :class:`random.Random` seeded with ``seed``, one draw per
    API request that gets past authentication, throttling and quota, so a given sequence of
    requests meets the same sequence of faults on every run.
    """

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    images: ImageHostConfig = field(default_factory=ImageHostConfig)
    #: Accepted subscription keys; ``None`` accepts any non-empty key.
    keys: frozenset[str] | None = None
    #: Keys answered with 403 InsufficientAuthorization / AuthorizationDisabled.
    disabled_keys: frozenset[str] = frozenset()
    #: Requests per second per key over a sliding window (``None``: unlimited). For an integer
    #: ``qps`` the window is exactly one second; otherwise ``max(1, floor(qps))`` requests are
    #: allowed per ``max(1, floor(qps)) / qps`` seconds, which keeps the long-run rate.
    qps: float | None = 3.0
    #: How the 429 Retry-After header is written: delta-seconds or an HTTP date.
    retry_after_format: RetryAfterFormat = "seconds"
    #: Billable calls allowed per key before 403 RateLimitExceeded (``None``: no quota).
    monthly_quota: int | None = None
    #: Seconds every API response is delayed by (the service's own processing time).
    api_latency: float = 0.0
    #: Probability of a 500 ServerError / UnexpectedError.
    p_server_error: float = 0.0
    #: Probability of a 200 with an empty body (the reference's denial-of-service throttle).
    p_empty_200: float = 0.0
    #: Probability of a 200 with an HTML body (a proxy or maintenance page).
    p_non_json_200: float = 0.0
    #: Answer every API call with 410 HttpNotAllowed (the reference's https-only rule).
    http_not_allowed: bool = False
    #: Seed of the fault draws (the corpus has its own seed in ``corpus.seed``).
    seed: int = 0
    #: Origin used in ``contentUrl``; ``None`` uses the origin the request was sent to.
    image_base_url: str | None = None
    #: Most results a page repeats from the end of the previous one (see ``nextOffset``).
    page_overlap: int = 3
    #: Longer request URLs are answered 404, as the reference says.
    max_url_length: int = 2048
    #: Largest accepted image upload, in bytes.
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    #: Largest accepted side of an uploaded image, in pixels (``None``: not checked).
    max_upload_side: int | None = 1500
    #: Visually similar images available per image (details and visual search).
    similar_results: int = 300
    #: Visually similar images returned by /images/details.
    details_similar_count: int = 50
    #: Most entries kept in the request log (oldest dropped first).
    log_limit: int = 200_000

    def __post_init__(self) -> None:
        if not isinstance(self.corpus, CorpusConfig):
            raise ConfigError("corpus", "must be a CorpusConfig")
        if not isinstance(self.images, ImageHostConfig):
            raise ConfigError("images", "must be an ImageHostConfig")
        if self.keys is not None:
            _check_keys("keys", self.keys)
            if not self.keys:
                raise ConfigError("keys", "must not be empty (use None to accept any key)")
        _check_keys("disabled_keys", self.disabled_keys)
        if self.qps is not None and not (math.isfinite(self.qps) and self.qps > 0):
            raise ConfigError("qps", f"must be a positive number or None, got {self.qps!r}")
        if self.retry_after_format not in ("seconds", "date"):
            raise ConfigError(
                "retry_after_format",
                f"must be 'seconds' or 'date', got {self.retry_after_format!r}",
            )
        if self.monthly_quota is not None and self.monthly_quota < 0:
            raise ConfigError("monthly_quota", f"must be >= 0 or None, got {self.monthly_quota!r}")
        if not (math.isfinite(self.api_latency) and self.api_latency >= 0):
            raise ConfigError("api_latency", f"must be >= 0 seconds, got {self.api_latency!r}")
        total = 0.0
        for name in ("p_server_error", "p_empty_200", "p_non_json_200"):
            p = getattr(self, name)
            if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
                raise ConfigError(name, f"must be a probability in [0, 1], got {p!r}")
            total += p
        if total > 1.0:
            raise ConfigError("p_server_error", "the fault probabilities must add up to <= 1")
        if self.image_base_url is not None and not self.image_base_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                "image_base_url", f"must be an http(s) URL, got {self.image_base_url!r}"
            )
        _check_int("page_overlap", self.page_overlap, 0)
        _check_int("max_url_length", self.max_url_length, 64)
        _check_int("max_upload_bytes", self.max_upload_bytes, 1)
        if self.max_upload_side is not None:
            _check_int("max_upload_side", self.max_upload_side, 1)
        _check_int("similar_results", self.similar_results, 0)
        _check_int("details_similar_count", self.details_similar_count, 0)
        _check_int("log_limit", self.log_limit, 1)

    @property
    def window(self) -> tuple[int, float] | None:
        """The QPS rule as ``(requests, seconds)``: at most that many per sliding window."""
        if self.qps is None:
            return None
        slots = max(1, math.floor(self.qps))
        return slots, slots / self.qps


def _check_keys(option: str, keys: frozenset[str]) -> None:
    if not isinstance(keys, frozenset):
        raise ConfigError(option, "must be a frozenset of strings")
    for key in keys:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(option, "keys must be non-empty strings")


def _check_int(option: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(option, f"must be an integer >= {minimum}, got {value!r}")
