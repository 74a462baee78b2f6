"""The bingcrawl error tree.

Every error the library raises on purpose is a :class:`BingCrawlError`. The CLI maps an
error to its process exit code once, through the ``exit_code`` class attribute, so the
library never calls ``sys.exit`` itself::

    BingCrawlError                     exit 1    base class
    ├── ConfigError (ValueError)       exit 2    bad option or configuration, before any request
    │   ├── InvalidParameterError                a Bing parameter failed client-side validation
    │   └── ResumeMismatchError                  OUT holds a crawl with a different result set
    ├── CheckpointError                exit 1    checkpoint unreadable, newer, or a write failed
    ├── ApiError                       exit 1    the search API answered with an error
    │   ├── AuthenticationError        exit 3    401 InvalidAuthorization, 403 Insufficient...
    │   ├── QuotaExceededError         exit 4    403 RateLimitExceeded, or --max-api-calls spent
    │   ├── ThrottledError                       429, or a 200 with an empty / non-JSON body
    │   ├── InvalidRequestError                  400 ParameterMissing / ParameterInvalidValue
    │   ├── HttpNotAllowedError                  410 HttpNotAllowed
    │   ├── NotFoundError                        404 (e.g. a URL over 2,048 characters)
    │   └── ServerError                          5xx ServerError
    │       └── ResponseFormatError              a 200 whose JSON is not the documented object
    ├── ApiConnectionError (OSError)   exit 6    DNS failure, refused or reset, timeout
    ├── IncompleteCrawlError           exit 6    queries left unfinished by API errors
    ├── StorageError (OSError)         exit 5    disk full, quota, I/O error: stopped, resumable
    ├── BlockedAddressError (OSError)            the network policy refused an address (SSRF)
    ├── UnsafePathError (OSError)                a write would leave OUT or follow a symlink
    └── Interrupted                    130/143   SIGINT / SIGTERM after a clean checkpoint

Download failures are never exceptions that escape a worker: they are data (an ``Outcome``
with an ``error_class``), see :mod:`bingcrawl.records`. ``BlockedAddressError`` and
``UnsafePathError`` are raised inside the downloader and the writer and end up as such data.

Secrets: no error message or repr ever contains the subscription key; the client redacts it
before building any error (see :func:`redact`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "AuthenticationError",
    "BingCrawlError",
    "BlockedAddressError",
    "CheckpointError",
    "ConfigError",
    "HttpNotAllowedError",
    "IncompleteCrawlError",
    "Interrupted",
    "InvalidParameterError",
    "InvalidRequestError",
    "NotFoundError",
    "QuotaExceededError",
    "ResponseFormatError",
    "ResumeMismatchError",
    "ServerError",
    "StorageError",
    "ThrottledError",
    "UnsafePathError",
    "parse_retry_after",
    "redact",
]

#: Retry-After values above this many seconds are capped: a hostile or broken server must
#: not be able to park the crawl for a day.
MAX_RETRY_AFTER = 300.0


class BingCrawlError(Exception):
    """Base class of every error bingcrawl raises on purpose."""

    exit_code: ClassVar[int] = 1


class ConfigError(BingCrawlError, ValueError):
    """An invalid option or configuration; always raised before any network request.

    ``option`` names the offending option (a CLI flag such as ``--qps`` or a parameter name).
    """

    exit_code: ClassVar[int] = 2

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")


class InvalidParameterError(ConfigError):
    """A Bing query parameter failed client-side validation.

    ``accepted`` lists the accepted values (or describes the accepted range).
    """

    def __init__(self, parameter: str, value: object, accepted: str) -> None:
        self.parameter = parameter
        self.value = value
        self.accepted = accepted
        super().__init__(parameter, f"invalid value {value!r}; accepted: {accepted}")


class ResumeMismatchError(ConfigError):
    """OUT already holds a crawl whose result-set options differ from this run's."""

    def __init__(self, differences: dict[str, tuple[object, object]]) -> None:
        self.differences = differences
        detail = "; ".join(
            f"{k}: was {old!r}, now {new!r}" for k, (old, new) in differences.items()
        )
        super().__init__(
            "--out",
            "the output directory holds a crawl made with different options "
            f"({detail}); use the same options to resume, or --fresh to start over",
        )


class CheckpointError(BingCrawlError):
    """The checkpoint cannot be used (corrupt, or written by a newer bingcrawl)."""


class ApiError(BingCrawlError):
    """The search API answered with an error status or an ErrorResponse body."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        sub_code: str | None = None,
        parameter: str | None = None,
        value: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.sub_code = sub_code
        self.parameter = parameter
        self.value = value
        self.trace_id = trace_id
        super().__init__(message)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"sub_code={self.sub_code!r}, message={str(self)!r})"
        )


class AuthenticationError(ApiError):
    """The key was refused: 401 InvalidAuthorization or 403 InsufficientAuthorization."""

    exit_code: ClassVar[int] = 3


class QuotaExceededError(ApiError):
    """The monthly quota (403 RateLimitExceeded) or the --max-api-calls budget is exhausted."""

    exit_code: ClassVar[int] = 4


class ThrottledError(ApiError):
    """The API asked us to slow down: 429, or a 200 with an empty / non-JSON body.

    ``retry_after`` is the server's Retry-After in seconds (capped at ``MAX_RETRY_AFTER``),
    or ``None`` when the server gave none (the empty-200 case).
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class InvalidRequestError(ApiError):
    """400 InvalidRequest; ``parameter`` / ``value`` name what the server refused."""


class HttpNotAllowedError(ApiError):
    """410 HttpNotAllowed: the request used http instead of https."""


class NotFoundError(ApiError):
    """404: the endpoint does not exist (or the URL exceeded 2,048 characters)."""


class ServerError(ApiError):
    """5xx ServerError (UnexpectedError, ResourceError, NotImplemented)."""


class ResponseFormatError(ServerError):
    """A successful response whose JSON is not the object the endpoint documents."""


class ApiConnectionError(BingCrawlError, OSError):
    """The API could not be reached: DNS failure, refused or reset connection, timeout.

    ``sent`` is False when no connection was ever made (refused, DNS failure, TLS or connect
    timeout): nothing reached the API, so the call is not counted. Raised out of a crawl when
    the API stays unreachable: the crawl stops asking, finishes its downloads and exits 6;
    nothing is marked failed, and a re-run resumes where it stopped.
    """

    exit_code: ClassVar[int] = 6

    def __init__(self, *args: object, sent: bool = True) -> None:
        self.sent = sent
        super().__init__(*args)


class IncompleteCrawlError(BingCrawlError):
    """The crawl ended with queries left unfinished by API errors that a re-run may not meet
    (5xx that outlasted ``--api-retries``); those queries are retried by the next run."""

    exit_code: ClassVar[int] = 6


class StorageError(BingCrawlError, OSError):
    """The output's filesystem refused a write for a reason that is not the image's fault:
    a full disk (ENOSPC), a quota (EDQUOT), an I/O error (EIO), too many open files
    (EMFILE/ENFILE), a read-only filesystem (EROFS), a file-size limit (EFBIG). The crawl
    stops cleanly: the image stays pending, and a re-run resumes once the cause is fixed.
    Exit 5. Its text is one sentence for a person: what happened and what to do."""

    exit_code: ClassVar[int] = 5

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())


class BlockedAddressError(BingCrawlError, OSError):
    """The network policy refused to connect to ``address`` (the SSRF guard).

    An ``OSError`` so that aiohttp's connector treats it like any failed connect attempt
    (and tries the next resolved address); the downloader finds it in the exception chain.
    """

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"connection to {address} refused by network policy: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.address, self.reason))


class UnsafePathError(BingCrawlError, OSError):
    """A path would escape OUT or go through a symlink; nothing was written."""


class Interrupted(BingCrawlError):
    """The crawl stopped on SIGINT / SIGTERM after writing a clean checkpoint."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")

    @property
    def code(self) -> int:
        """The conventional exit status: 128 + the signal number (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header (delta-seconds or an HTTP date) into seconds.

    Returns ``None`` for a missing or unparseable value; negative values become 0 and large
    ones are capped at ``MAX_RETRY_AFTER``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    seconds: float
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
