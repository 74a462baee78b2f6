"""The download worker: a :class:`Candidate` in, its bytes (:class:`Fetched`) or a
:class:`DownloadFailure` out.

Image hosts are strangers, so every defence is on by default:

* the network policy (:mod:`bingcrawl.fetch.netpolicy`) is checked on every redirect hop
  and again on the address actually connected, after DNS;
* bodies are streamed under a running byte cap (``Content-Length`` is checked first), with
  ``Accept-Encoding: identity`` and compressed encodings refused, so nothing is ever inflated;
* nothing can hang: socket connect and read timeouts, one total deadline per image for all
  its attempts (time spent waiting for the host's turn or a connection slot does not count),
  and a minimum throughput so a slow drip cannot hold a worker for the whole deadline;
* a host that stops answering is given up for a while (:class:`HostBreaker`), so its other
  URLs fail at once instead of each waiting out its timeouts;
* content is identified by its first bytes, never by ``Content-Type``: HTML or SVG served as
  ``image/jpeg`` is dropped after its first chunk, a JPEG served as ``text/html`` is kept;
* transient failures (``retry_statuses``, connection errors, timeouts, truncated bodies) are
  retried with capped, full-jitter exponential backoff that honours ``Retry-After``.

Failures are data: :meth:`Downloader.fetch` never raises for network or HTTP trouble.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import zlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace, TracebackType
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver
from aiolimiter import AsyncLimiter
from multidict import CIMultiDictProxy
from yarl import URL

from bingcrawl.errors import ConfigError, parse_retry_after
from bingcrawl.fetch.etiquette import (
    MAX_POLICY_BYTES,
    Etiquette,
    OriginPolicies,
    error_class,
    header_opt_out,
)
from bingcrawl.fetch.identity import user_agent
from bingcrawl.fetch.netpolicy import (
    BlockedAddressError,
    NetworkPolicy,
    make_connector,
    parse_resolve,
    url_refusal,
)
from bingcrawl.imaging.sniff import ALLOWED_FORMATS, SNIFF_BYTES, sniff_format
from bingcrawl.records import Candidate, DownloadFailure, ErrorClass, Fetched

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "DEFAULT_USER_AGENT",
    "HOLD_STATUSES",
    "DownloadConfig",
    "Downloader",
    "HostBreaker",
    "HostHolds",
    "HostRates",
]

logger = logging.getLogger(__name__)

_MiB = 1024 * 1024

#: The User-Agent of image downloads when neither ``--user-agent`` nor ``--contact`` is given.
DEFAULT_USER_AGENT = user_agent()

#: Statuses worth another attempt (Scrapy's RETRY_HTTP_CODES, minus 522/524/etc.).
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses that hold back every request to the host that sent them, not only the retry.
HOLD_STATUSES: frozenset[int] = frozenset({429, 503})

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_OK_STATUSES = frozenset({200, 203})
_PERMANENT_DNS_ERRORS = frozenset(
    {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
)
_ACCEPT = "image/webp,image/png,image/jpeg,image/gif;q=0.9,image/*;q=0.8,*/*;q=0.5"

Sleep = Callable[[float], Awaitable[None]]


def _require_int(option: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(option, f"must be an integer >= {minimum}, got {value!r}")


def _require_number(option: str, value: object, *, allow_zero: bool) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(option, f"must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    """How images are downloaded; every field maps to a CLI option named in its errors.

    ``timeout`` is the total deadline of one image, its attempts and redirect hops together
    (waiting for the host's turn or a free connection, and the backoff between attempts,
    excluded): a retry gets what the attempts before it left, so no URL holds the crawl
    longer than ``timeout`` plus its backoff; ``connect_timeout`` bounds each TCP/TLS connect and
    ``read_timeout`` each socket read. After ``throughput_grace`` seconds of body, a transfer
    slower than ``min_throughput`` bytes/s on average is abandoned as ``too_slow`` (0
    disables). ``retries`` is the number of attempts after the first; backoff before retry
    ``n`` is uniform in ``[0, min(backoff_max, backoff_base * 2**(n-1))]``, at least the
    server's ``Retry-After`` and never more than ``backoff_max``. ``formats`` are the sniffed
    formats kept (others fail as ``unsupported_format`` without downloading the rest).
    ``host_rate`` caps the requests per second sent to one host (every redirect hop and retry
    counts; 0: no cap beyond ``per_host``), evenly spaced, never in a burst; a host's
    robots.txt ``Crawl-delay`` / ``Request-rate`` can only make its interval longer. A host
    that answers 429 or 503 gets no request from any worker until its backoff (at least its
    ``Retry-After``, at most ``backoff_max``) is over; other hosts are not slowed.
    ``etiquette`` says which publishers' opt-outs are honoured
    (:mod:`bingcrawl.fetch.etiquette`).
    """

    concurrency: int = 256
    per_host: int = 8
    host_rate: float = 0.0
    #: Hosts that ask for fewer downloads at a time than ``per_host``: (host, limit) pairs.
    #: Wikimedia's robot policy asks for two at a time from its file host.
    host_limits: tuple[tuple[str, int], ...] = (("upload.wikimedia.org", 2),)
    max_bytes: int = 20 * _MiB
    timeout: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 15.0
    min_throughput: float = 4096.0
    throughput_grace: float = 5.0
    retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    max_redirects: int = 5
    user_agent: str = DEFAULT_USER_AGENT
    formats: frozenset[str] = ALLOWED_FORMATS
    send_referer: bool = True
    policy: NetworkPolicy = field(default_factory=NetworkPolicy)
    etiquette: Etiquette = field(default_factory=Etiquette)
    #: ``--resolve``: (name or ``*.domain``, address) pairs answered without DNS.
    resolve: tuple[tuple[str, str], ...] = ()
    #: ``--host-failures``: requests in a row without an answer that give a host up
    #: (:class:`HostBreaker`; 0: never).
    host_failures: int = 2

    def __post_init__(self) -> None:
        _require_int("--concurrency", self.concurrency, 1)
        _require_int("--per-host", self.per_host, 1)
        _require_number("--host-rate", self.host_rate, allow_zero=True)
        for host, limit in self.host_limits:
            _require_int(f"host limit of {host}", limit, 1)
        _require_int("--max-bytes", self.max_bytes, 1)
        _require_number("--timeout", self.timeout, allow_zero=False)
        _require_number("--connect-timeout", self.connect_timeout, allow_zero=False)
        _require_number("--read-timeout", self.read_timeout, allow_zero=False)
        _require_number("--min-throughput", self.min_throughput, allow_zero=True)
        _require_number("--throughput-grace", self.throughput_grace, allow_zero=True)
        _require_int("--retries", self.retries, 0)
        _require_int("--host-failures", self.host_failures, 0)
        _require_number("--backoff-base", self.backoff_base, allow_zero=True)
        _require_number("--backoff-max", self.backoff_max, allow_zero=True)
        if self.backoff_max < self.backoff_base:
            raise ConfigError("--backoff-max", "must be >= --backoff-base")
        if not isinstance(self.retry_statuses, frozenset) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 400 <= s <= 599
            for s in self.retry_statuses
        ):
            raise ConfigError("--retry-status", "must be a frozenset of HTTP statuses 400-599")
        _require_int("--max-redirects", self.max_redirects, 0)
        if not isinstance(self.user_agent, str) or not self.user_agent.strip():
            raise ConfigError("--user-agent", "must be a non-empty string")
        if any(c in self.user_agent for c in "\r\n\0"):
            raise ConfigError("--user-agent", "must not contain CR, LF or NUL")
        if not isinstance(self.formats, frozenset) or not self.formats:
            raise ConfigError("--formats", "must be a non-empty frozenset of format names")
        unknown = self.formats - ALLOWED_FORMATS
        if unknown:
            raise ConfigError(
                "--formats",
                f"unknown formats {sorted(unknown)}; accepted: {sorted(ALLOWED_FORMATS)}",
            )
        if not isinstance(self.policy, NetworkPolicy):
            raise ConfigError("--allow-network", "policy must be a NetworkPolicy")
        if not isinstance(self.etiquette, Etiquette):
            raise ConfigError("--respect", "etiquette must be an Etiquette")
        if not isinstance(self.resolve, tuple) or parse_resolve(
            f"{name}:{address}" for name, address in self.resolve
        ) != self.resolve:
            raise ConfigError("--resolve", "must be (host, address) pairs from parse_resolve")


@dataclass(slots=True)
class _Failure:
    error_class: str
    detail: str
    retryable: bool = False
    retry_after: float | None = None
    #: The host that answered with a status of HOLD_STATUSES (to hold back), else None.
    hold: str | None = None
    #: False when nothing was requested (the origin's robots.txt / tdmrep.json refused the
    #: URL itself): the attempt does not count.
    sent: bool = True


@dataclass(slots=True)
class _Body:
    body: bytes
    final_url: str
    content_type: str | None
    status: int


class HostRates:
    """``--host-rate``: at most ``rate`` requests per second to any one host, evenly spaced;
    a host's own interval (:meth:`set_interval`, from its robots.txt) can make it slower.

    One :class:`aiolimiter.AsyncLimiter` per host with a capacity of one request that drains
    in the host's interval: a leaky bucket with no burst, fair to its waiters in order. A
    crawl over millions of hosts keeps only the limiters that still matter: once the table
    reaches ``sweep_at`` hosts, those with an empty bucket *and* nobody waiting on them are
    dropped (such a limiter is the same as a new one; one with waiters is not: dropping it
    would let a new request go beside the queued ones).
    """

    __slots__ = ("_intervals", "_limits", "_next_sweep", "_sweep_at", "_waiting", "rate")

    def __init__(self, rate: float, *, sweep_at: int = 4096) -> None:
        self.rate = rate
        self._limits: dict[str, AsyncLimiter] = {}
        self._intervals: dict[str, float] = {}  # hosts that asked for a longer interval
        self._waiting: dict[str, int] = {}  # requests waiting for their turn, by host
        self._sweep_at = self._next_sweep = sweep_at

    @property
    def enabled(self) -> bool:
        return self.rate > 0 or bool(self._intervals)

    def __len__(self) -> int:
        return len(self._limits)

    def interval(self, host: str) -> float:
        """Seconds between two requests to ``host`` (0: no limit)."""
        own = self._intervals.get(host, 0.0)
        return max(own, 1.0 / self.rate) if self.rate > 0 else own

    def set_interval(self, host: str, seconds: float) -> None:
        """``host`` asked for at least ``seconds`` between requests (robots.txt)."""
        if seconds <= 0 or self._intervals.get(host) == seconds:
            return
        self._intervals[host] = seconds
        limiter = self._limits.get(host)
        if limiter is not None and host not in self._waiting:
            del self._limits[host]  # the next request makes one at the new interval

    async def wait(self, host: str) -> None:
        """Return when a request to ``host`` may be sent (at once if it is its turn)."""
        limiter = self._limits.get(host)
        if limiter is None:
            interval = self.interval(host)
            if interval <= 0:
                return
            if len(self._limits) >= self._next_sweep:
                self._sweep()
            limiter = self._limits[host] = AsyncLimiter(1, interval)
        self._waiting[host] = self._waiting.get(host, 0) + 1
        try:
            await limiter.acquire()
        finally:
            left = self._waiting[host] - 1
            if left:
                self._waiting[host] = left
            else:
                del self._waiting[host]

    def _sweep(self) -> None:
        self._limits = {
            h: lim
            for h, lim in self._limits.items()
            if h in self._waiting or not lim.has_capacity()
        }
        # Sweep again once the table has doubled from what is still busy: amortised O(1).
        self._next_sweep = max(self._sweep_at, 2 * len(self._limits))


class HostHolds:
    """Hosts that answered 429 or 503: no request goes to one until its hold is over.

    The request that got the answer waits its backoff anyway; the hold makes every other
    worker with a URL of that host wait too, so the host sees a pause, not the same rate
    from the others. Hosts that did not answer so are not slowed. Expired holds are swept
    once the table doubles.
    """

    __slots__ = ("_clock", "_next_sweep", "_until", "held")

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock
        self._next_sweep = 1024
        #: Holds started, by host (stats).
        self.held: dict[str, int] = {}

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def hold(self, host: str, seconds: float) -> None:
        """No request to ``host`` for ``seconds`` from now (a longer hold is kept)."""
        if seconds <= 0:
            return
        until = self._now() + seconds
        if until > self._until.get(host, 0.0):
            self._until[host] = until
        self.held[host] = self.held.get(host, 0) + 1
        if len(self._until) >= self._next_sweep:
            now = self._now()
            self._until = {h: t for h, t in self._until.items() if t > now}
            self._next_sweep = max(1024, 2 * len(self._until))

    def remaining(self, host: str) -> float:
        """Seconds before a request to ``host`` may go (0: now)."""
        until = self._until.get(host)
        return 0.0 if until is None else max(0.0, until - self._now())

    async def wait(self, host: str, sleep: Sleep) -> None:
        """Return once ``host`` is not held (a hold made meanwhile is waited out too)."""
        while (left := self.remaining(host)) > 0:
            await sleep(left)
        self._until.pop(host, None)


class HostSlots:
    """At most ``per_host`` requests at a time to one host (``caps`` lower it for some),
    first come first served.

    The downloader takes a host's slot before it asks aiohttp for a connection, so a request
    that had to wait for its turn looks at the host again once it has it (a host given up
    meanwhile is not asked). A host is remembered only while it has requests under way or
    waiting, so the table stays the size of the crawl's working set.
    """

    __slots__ = ("_busy", "_caps", "_per_host", "_waiters")

    def __init__(self, per_host: int, caps: Mapping[str, int] | None = None) -> None:
        self._per_host = per_host
        self._caps = dict(caps or {})
        self._busy: dict[str, int] = {}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._busy)

    def busy(self, host: str) -> int:
        """Requests under way to ``host``."""
        return self._busy.get(host, 0)

    def waiting(self, host: str) -> int:
        """Requests waiting for a slot of ``host``."""
        return len(self._waiters.get(host, ()))

    async def acquire(self, host: str) -> None:
        """Wait for a slot of ``host`` (give it back with :meth:`release`)."""
        busy = self._busy.get(host, 0)
        if busy < self._caps.get(host, self._per_host) and host not in self._waiters:
            self._busy[host] = busy + 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(host, deque()).append(waiter)
        try:
            await waiter  # release() hands its slot over: the count does not change
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(host)  # handed a slot while being cancelled: pass it on
            else:
                self._forget(host, waiter)
            raise

    def release(self, host: str) -> None:
        """Give back a slot of ``host``: to the first waiter, if any."""
        waiters = self._waiters.get(host)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                if not waiters:
                    del self._waiters[host]
                waiter.set_result(None)
                return
        self._waiters.pop(host, None)
        busy = self._busy.get(host, 0) - 1
        if busy > 0:
            self._busy[host] = busy
        else:
            self._busy.pop(host, None)

    def _forget(self, host: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(host)
        if waiters is not None:
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters:
                del self._waiters[host]


class HostBreaker:
    """Hosts that stopped answering: their other URLs fail at once instead of each waiting
    out its timeouts.

    A request is *answered* when a status line comes back (any status: a 404 is an answer).
    A request that got none (connect or read timeout, the attempt's deadline before a status,
    refused or reset connection) counts against its host only if the host answered nothing
    at all while it waited: a busy host with a few slow URLs keeps answering the others, and
    is never given up for them. ``threshold`` such requests in a row give the host up for
    ``cooldown`` seconds: its URLs fail as ``host_unresponsive`` without a request (the
    requests under way then are not retried: they keep the error that gave the host up).
    After the cool-down requests go again; a single one without an answer gives the host up
    again. A timeout is retried only on a host that has answered before in this run: a host
    that accepted a connection and sent nothing for ``--read-timeout`` seconds is unlikely to
    answer the same request a few seconds later, and its retries are what made the slowest
    hosts the crawl's tail.

    Memory is bounded: at most ``max_hosts`` hosts are remembered (the oldest forgotten).
    """

    __slots__ = ("_clock", "_hosts", "cooldown", "given_up", "max_hosts", "threshold")

    def __init__(
        self,
        threshold: int = 2,
        cooldown: float = 600.0,
        *,
        clock: Callable[[], float] | None = None,
        max_hosts: int = 100_000,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_hosts = max_hosts
        self._clock = clock
        # host -> [time of its last answer (-inf: none), failures in a row, given up until
        # (0: not)]
        self._hosts: OrderedDict[str, list[float]] = OrderedDict()
        #: Times each host was given up (stats).
        self.given_up: dict[str, int] = {}

    def now(self) -> float:
        """The breaker's clock (the running loop's, unless one was given)."""
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _entry(self, host: str) -> list[float]:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = [_NEVER, 0.0, 0.0]
            if len(self._hosts) > self.max_hosts:
                self._hosts.popitem(last=False)
        return entry

    def answered(self, host: str) -> None:
        """A status line came back from ``host``."""
        entry = self._entry(host)
        entry[0], entry[1], entry[2] = self.now(), 0.0, 0.0

    def unanswered(self, host: str, since: float) -> None:
        """A request to ``host`` sent at ``since`` (:meth:`now`) got no status line."""
        if self.threshold <= 0:
            return
        entry = self._entry(host)
        if entry[0] >= since:
            return  # the host answered others meanwhile: it is alive, this URL is slow
        entry[1] += 1
        now = self.now()
        if entry[1] >= self.threshold and entry[2] <= now:
            entry[2] = now + self.cooldown
            self.given_up[host] = self.given_up.get(host, 0) + 1

    def has_answered(self, host: str) -> bool:
        """True if ``host`` answered a request in this run (as far as remembered)."""
        entry = self._hosts.get(host)
        return entry is not None and entry[0] > _NEVER

    def refusal(self, host: str) -> str | None:
        """Why no request should go to ``host`` now, or ``None``."""
        entry = self._hosts.get(host)
        if entry is None or not entry[2]:
            return None
        if entry[2] > self.now():
            return (
                f"{host} did not answer {int(entry[1])} requests in a row; given up for "
                f"{self.cooldown:g}s"
            )
        entry[1], entry[2] = self.threshold - 1, 0.0  # the cool-down is over: one try
        return None


_NEVER = float("-inf")


class _Deadline:
    """One attempt's total deadline, paused while the request queues for a connection.

    Waiting for a slot (``--per-host``, ``--concurrency``) says nothing about the server, so
    it must not eat into the attempt's deadline. aiohttp's connection-queued trace signals
    call :meth:`pause` and :meth:`resume`.
    """

    __slots__ = ("_loop", "_remaining", "_timeout", "answered", "host", "sent_at")

    def __init__(self, timeout: asyncio.Timeout, loop: asyncio.AbstractEventLoop) -> None:
        self._timeout = timeout
        self._loop = loop
        self._remaining: float | None = None
        #: The host of the hop under way, when its request went (the breaker's clock) and
        #: whether its status line came back.
        self.host = ""
        self.sent_at = 0.0
        self.answered = False

    def pause(self) -> None:
        when = self._timeout.when()
        if when is None or self._timeout.expired():
            return
        self._remaining = max(0.0, when - self._loop.time())
        self._timeout.reschedule(None)

    def resume(self) -> None:
        if self._remaining is None or self._timeout.expired():
            return
        self._timeout.reschedule(self._loop.time() + self._remaining)
        self._remaining = None

    def left(self) -> float:
        """Seconds the attempt had left when it ended (0 once expired)."""
        if self._timeout.expired():
            return 0.0
        if self._remaining is not None:
            return self._remaining
        when = self._timeout.when()
        return 0.0 if when is None else max(0.0, when - self._loop.time())


async def _on_queued_start(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    deadline = ctx.trace_request_ctx
    if isinstance(deadline, _Deadline):
        deadline.pause()


async def _on_queued_end(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    deadline = ctx.trace_request_ctx
    if isinstance(deadline, _Deadline):
        deadline.resume()


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, BaseException):
            stack.append(os_error)
        stack.extend((current.__cause__, current.__context__))


def _classify(exc: BaseException) -> _Failure:
    """Map an exception from one request to an error class and whether to retry."""
    for link in _exception_chain(exc):
        if isinstance(link, BlockedAddressError):
            return _Failure(ErrorClass.BLOCKED_ADDRESS, str(link))
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.InvalidURL):
        return _Failure(ErrorClass.BAD_URL, detail)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _Failure(ErrorClass.TRUNCATED, detail, retryable=True)
    if isinstance(exc, aiohttp.ClientSSLError):
        return _Failure(ErrorClass.CONNECTION, detail)  # a bad certificate will not heal
    if isinstance(exc, TimeoutError):
        return _Failure(ErrorClass.TIMEOUT, detail, retryable=True)
    if isinstance(exc, aiohttp.ClientResponseError):
        return _Failure(ErrorClass.CONNECTION, f"invalid HTTP response: {detail}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # "No such name" will not change in a few seconds; SERVFAIL / EAI_AGAIN may.
        cause = exc.os_error
        permanent = isinstance(cause, socket.gaierror) and cause.errno in _PERMANENT_DNS_ERRORS
        return _Failure(ErrorClass.CONNECTION, f"DNS: {detail}", retryable=not permanent)
    return _Failure(ErrorClass.CONNECTION, detail, retryable=True)


def _counts_as_no_answer(exc: BaseException, failure: _Failure) -> bool:
    """A timeout or a refused / reset connection (not DNS, TLS or the network policy)."""
    if failure.error_class == ErrorClass.TIMEOUT:
        return True
    return failure.error_class == ErrorClass.CONNECTION and not isinstance(
        exc, aiohttp.ClientConnectorDNSError | aiohttp.ClientSSLError | aiohttp.ClientResponseError
    )


async def _policy_body(resp: aiohttp.ClientResponse) -> tuple[int, bytes] | None:
    """The body of a 2xx robots.txt / tdmrep.json, inflated (gzip, deflate) to at most
    MAX_POLICY_BYTES; None if it is in a coding we do not read (then the origin counts as
    unreachable: allowed, and asked again before long)."""
    codings = [c for c in _codings(resp.headers, "Content-Encoding") if c not in ("", "identity")]
    if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
        return None
    raw = bytearray()
    async for chunk in resp.content.iter_any():
        raw += chunk
        if len(raw) >= MAX_POLICY_BYTES:
            resp.close()
            break
    if not codings:
        return resp.status, bytes(raw[:MAX_POLICY_BYTES])
    # 47: a gzip or zlib header, detected; raw deflate (some servers' "deflate") as a fallback
    for wbits in (47, -15):
        try:
            inflated = zlib.decompressobj(wbits).decompress(bytes(raw), MAX_POLICY_BYTES)
        except zlib.error:
            continue
        return resp.status, inflated
    return None


def _codings(headers: CIMultiDictProxy[str], name: str) -> list[str]:
    """The codings a ``Content-Encoding`` / ``Transfer-Encoding`` header lists, lowercased."""
    return [c.strip().lower() for v in headers.getall(name, ()) for c in v.split(",")]


def _encoding_refusal(headers: CIMultiDictProxy[str]) -> str | None:
    """Name any content or transfer coding we would have to decode (we never inflate)."""
    for name, harmless in (
        ("Content-Encoding", {"", "identity"}),
        ("Transfer-Encoding", {"", "identity", "chunked"}),
    ):
        refused = set(_codings(headers, name)) - harmless
        if refused:
            return f"{name}: {', '.join(sorted(refused))} (compressed bodies are refused)"
    return None


class Downloader:
    """Downloads candidates over one ``aiohttp.ClientSession`` reserved for images.

    Use as an async context manager; :meth:`fetch` is safe to call from many tasks at once.
    ``rng`` drives the backoff jitter and ``sleep`` the waits between attempts (both
    injectable for deterministic tests); ``resolver`` replaces aiohttp's DNS resolver (the
    network policy applies to its answers all the same). Closing twice is harmless;
    reopening is refused.
    """

    def __init__(
        self,
        config: DownloadConfig,
        *,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        resolver: AbstractResolver | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._config = config
        self._rng = rng if rng is not None else random.Random()
        self._host_limits = HostRates(config.host_rate)
        self._holds = HostHolds(clock)
        self._breaker = HostBreaker(config.host_failures, clock=clock)
        # Each origin's robots.txt and tdmrep.json (None when neither is honoured).
        self._origins = (
            OriginPolicies(config.etiquette, self._fetch_policy_file)
            if config.etiquette.needs_origin
            else None
        )
        # --per-host, lower for hosts with their own limit.
        self._slots = HostSlots(config.per_host, dict(config.host_limits))
        self._sleep = sleep
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # identity: a compressed body would have to be inflated before its size is known.
        self._headers: dict[str, str] = {
            "User-Agent": config.user_agent,
            "Accept": _ACCEPT,
            "Accept-Encoding": "identity",
        }

    @property
    def config(self) -> DownloadConfig:
        """The configuration this downloader was built with."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has run."""
        return self._closed

    @property
    def origins(self) -> OriginPolicies | None:
        """The origins' robots.txt / tdmrep.json seen so far (None: neither is honoured)."""
        return self._origins

    @property
    def holds(self) -> HostHolds:
        """The hosts held back after a 429 / 503."""
        return self._holds

    @property
    def breaker(self) -> HostBreaker:
        """The hosts given up after requests without an answer."""
        return self._breaker

    def host_interval(self, host: str) -> float:
        """Seconds between two requests to ``host`` (``--host-rate``, its robots.txt)."""
        return self._host_limits.interval(host)

    async def __aenter__(self) -> Self:
        if self._closed or self._session is not None:
            raise RuntimeError("a Downloader can be opened only once")
        cfg = self._config
        connector = make_connector(
            cfg.policy,
            limit=cfg.concurrency,
            limit_per_host=cfg.per_host,
            resolver=self._resolver,
            resolve=cfg.resolve,
        )
        trace = aiohttp.TraceConfig()
        trace.on_connection_queued_start.append(_on_queued_start)
        trace.on_connection_queued_end.append(_on_queued_end)
        self._session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=True,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=None,  # would include queueing for a slot; the deadline covers it
                sock_connect=cfg.connect_timeout,
                sock_read=cfg.read_timeout,
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # an environment proxy would sidestep the connect-time check
            trace_configs=[trace],
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections (idempotent)."""
        self._closed = True
        if self._origins is not None:
            self._origins.close()
        session, self._session = self._session, None
        if session is not None and not session.closed:
            # Shielded: a cancelled crawl must still release its sockets.
            await asyncio.shield(session.close())

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Full jitter: uniform in ``[0, min(backoff_max, backoff_base * 2**(attempt-1))]``,
        raised to the server's ``retry_after`` if that is longer, capped at ``backoff_max``.
        """
        cfg = self._config
        ceiling = min(cfg.backoff_max, cfg.backoff_base * 2.0 ** min(max(attempt - 1, 0), 64))
        delay = self._rng.uniform(0.0, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, cfg.backoff_max)

    async def fetch(self, candidate: Candidate) -> Fetched | DownloadFailure:
        """Download ``candidate.url``; failures come back as :class:`DownloadFailure`.

        ``attempts`` counts the attempts started (0 when the URL was refused before any);
        ``elapsed`` spans all of them, backoff included. Transient failures (statuses in
        ``retry_statuses``, connection errors except unknown host names, timeouts, truncated
        bodies) are retried up to ``retries`` times; ``too_slow``, ``too_large``, content
        and policy refusals are final.
        """
        session = self._session
        if session is None:
            raise RuntimeError("Downloader is not open (use 'async with Downloader(...)')")
        cfg = self._config
        loop = asyncio.get_running_loop()
        started = loop.time()
        refusal = url_refusal(candidate.url, cfg.policy)
        if refusal is not None:
            return self._failed(candidate, _Failure(*refusal), 0)
        url = URL(candidate.url)
        headers = dict(self._headers)
        referer = candidate.host_page_url
        if cfg.send_referer and referer and url_refusal(referer, cfg.policy) is None:
            # yarl's form is ASCII and percent-encoded: safe as a header value.
            headers["Referer"] = str(URL(referer).with_fragment(None))
        attempts = 0
        budget = cfg.timeout  # for all the attempts together
        while True:
            attempts += 1
            result, budget = await self._attempt(session, url, headers, budget)
            if isinstance(result, _Body):
                return Fetched(
                    candidate=candidate,
                    body=result.body,
                    final_url=result.final_url,
                    content_type=result.content_type,
                    status=result.status,
                    attempts=attempts,
                    elapsed=loop.time() - started,
                )
            if result.retryable and attempts <= cfg.retries and budget <= 0:
                result.detail += f" (not retried: the {cfg.timeout:g}s of --timeout are spent)"
                result.retryable = False
            if not result.retryable or attempts > cfg.retries:
                if result.hold is not None:  # the last attempt: the others still see the pause
                    self._holds.hold(result.hold, self.backoff_delay(attempts, result.retry_after))
                return self._failed(candidate, result, attempts if result.sent else attempts - 1)
            delay = self.backoff_delay(attempts, result.retry_after)
            if result.hold is not None:
                self._holds.hold(result.hold, delay)
            logger.debug(
                "retrying %s in %.2fs after %s (%s)",
                candidate.url, delay, result.error_class, result.detail,
            )
            await self._sleep(delay)

    @staticmethod
    def _failed(candidate: Candidate, failure: _Failure, attempts: int) -> DownloadFailure:
        logger.debug("download failed: %s: %s (%s)", candidate.url, failure.error_class,
                     failure.detail)
        return DownloadFailure(
            candidate=candidate,
            error_class=str(failure.error_class),
            detail=failure.detail,
            attempts=attempts,
        )

    async def _attempt(
        self, session: aiohttp.ClientSession, url: URL, headers: dict[str, str], budget: float
    ) -> tuple[_Body | _Failure, float]:
        """One attempt: the request, every redirect hop and the body, under one deadline of
        ``budget`` seconds (waits for the host's turn excluded); also the seconds left."""
        loop = asyncio.get_running_loop()
        deadline: _Deadline | None = None
        try:
            async with asyncio.timeout(budget) as timeout:
                deadline = _Deadline(timeout, loop)
                result = await self._follow(session, url, headers, deadline)
            return result, deadline.left()
        except TimeoutError:
            # Only the deadline gets here: _follow classifies every other timeout itself.
            failure = _Failure(
                ErrorClass.TIMEOUT,
                f"no complete response within the {self._config.timeout:g}s deadline",
                retryable=True,
            )
            if deadline is not None and deadline.host and not deadline.answered:
                return self._no_answer(deadline, failure), 0.0
            return failure, 0.0

    def _no_answer(self, deadline: _Deadline, failure: _Failure) -> _Failure:
        """Count the request of ``deadline``'s hop, which got no status line; it is not
        retried when its host is now given up, nor when it timed out on a host that never
        answered."""
        breaker, host = self._breaker, deadline.host
        breaker.unanswered(host, deadline.sent_at)
        if not failure.retryable:
            return failure
        if breaker.refusal(host) is not None:
            failure.retryable = False
            failure.detail += f" ({host} given up: no answer to {breaker.threshold} in a row)"
        elif failure.error_class == ErrorClass.TIMEOUT and not breaker.has_answered(host):
            failure.retryable = False
            failure.detail += f" (not retried: {host} has not answered yet)"
        return failure

    async def _follow(
        self,
        session: aiohttp.ClientSession,
        url: URL,
        headers: dict[str, str],
        deadline: _Deadline,
    ) -> _Body | _Failure:
        cfg = self._config
        current = url
        seen = {url.with_fragment(None)}
        redirects = 0
        while True:
            refusal = url_refusal(current, cfg.policy)
            if refusal is not None:
                return _Failure(refusal.error_class, f"{refusal.detail} (at {current})")
            host = current.host or ""
            given_up = self._breaker.refusal(host)
            if given_up is not None:
                return _Failure(ErrorClass.HOST_UNRESPONSIVE, given_up, sent=redirects > 0)
            if self._origins is not None:
                deadline.pause()  # the origin's files are not the image's time
                try:
                    policy = await self._origins.policy(current)
                finally:
                    deadline.resume()
                refused = policy.refusal(current, cfg.etiquette)
                if refused is not None:
                    return _Failure(*refused, sent=redirects > 0)
                if policy.delay > 0:
                    self._host_limits.set_interval(host, policy.delay)
            if self._host_limits.enabled:
                # Waiting for the host's turn says nothing about the server: not on the clock.
                deadline.pause()
                await self._host_limits.wait(host)
                deadline.resume()
            if self._holds.remaining(host) > 0:  # (after any wait for the host's turn)
                deadline.pause()
                await self._holds.wait(host, self._sleep)
                deadline.resume()
            deadline.pause()  # (the same for the host's turn under --per-host)
            await self._slots.acquire(host)
            deadline.resume()
            given_up = self._breaker.refusal(host)  # (given up while this one waited?)
            if given_up is not None:
                self._slots.release(host)
                return _Failure(ErrorClass.HOST_UNRESPONSIVE, given_up, sent=redirects > 0)
            deadline.host, deadline.answered = host, False
            deadline.sent_at = self._breaker.now()
            try:
                async with session.get(
                    current,
                    headers=headers,
                    allow_redirects=False,
                    trace_request_ctx=deadline,
                ) as resp:
                    deadline.answered = True
                    self._breaker.answered(host)
                    if resp.status not in _REDIRECT_STATUSES:
                        return await self._read(resp, current)
                    target = self._redirect_target(resp, current)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failure = _classify(exc)
                if deadline.answered or not _counts_as_no_answer(exc, failure):
                    return failure
                return self._no_answer(deadline, failure)
            finally:
                self._slots.release(host)
            if isinstance(target, _Failure):
                return target
            redirects += 1
            if redirects > cfg.max_redirects:
                return _Failure(
                    ErrorClass.TOO_MANY_REDIRECTS, f"more than {cfg.max_redirects} redirects"
                )
            key = target.with_fragment(None)
            if key in seen:
                return _Failure(ErrorClass.TOO_MANY_REDIRECTS, f"redirect loop back to {key}")
            seen.add(key)
            current = target

    @staticmethod
    def _redirect_target(resp: aiohttp.ClientResponse, current: URL) -> URL | _Failure:
        location = resp.headers.get("Location")
        if not location:
            return _Failure(
                ErrorClass.http(resp.status), f"HTTP {resp.status} without a Location header"
            )
        try:
            return current.join(URL(location))
        except ValueError as exc:
            return _Failure(ErrorClass.BAD_URL, f"invalid redirect Location {location!r}: {exc}")

    async def _read(self, resp: aiohttp.ClientResponse, url: URL) -> _Body | _Failure:
        """Check the response head, then stream the body under the byte cap and watchdog."""
        cfg = self._config
        status = resp.status
        if status not in _OK_STATUSES:
            retryable = status in cfg.retry_statuses
            retry_after = parse_retry_after(resp.headers.get("Retry-After")) if retryable else None
            return _Failure(
                ErrorClass.http(status), f"HTTP {status} {resp.reason or ''}".rstrip(),
                retryable=retryable, retry_after=retry_after,
                hold=url.host if status in HOLD_STATUSES else None,
            )
        opted_out = header_opt_out(resp.headers, cfg.etiquette)
        if opted_out is not None:
            resp.close()  # its body is not wanted
            return _Failure(error_class(opted_out[0]), opted_out[1])
        encoding = _encoding_refusal(resp.headers)
        if encoding is not None:
            resp.close()
            return _Failure(ErrorClass.BAD_ENCODING, encoding)
        length = resp.content_length
        if length is not None and length > cfg.max_bytes:
            resp.close()
            return _Failure(
                ErrorClass.TOO_LARGE, f"Content-Length {length} exceeds {cfg.max_bytes} bytes"
            )

        loop = asyncio.get_running_loop()
        started = loop.time()
        chunks: list[bytes] = []
        total = 0
        sniffed = False
        watchdog = asyncio.timeout(None)
        try:
            async with watchdog:
                if cfg.min_throughput > 0:
                    watchdog.reschedule(started + cfg.throughput_grace)
                async for chunk in resp.content.iter_any():
                    total += len(chunk)
                    if total > cfg.max_bytes:
                        resp.close()
                        return _Failure(
                            ErrorClass.TOO_LARGE, f"body exceeds {cfg.max_bytes} bytes"
                        )
                    chunks.append(chunk)
                    if not sniffed and total >= SNIFF_BYTES:
                        sniffed = True
                        head = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                        refused = self._sniff(head)
                        if refused is not None:
                            resp.close()
                            return refused
                    if cfg.min_throughput > 0:
                        # The moment the average rate would fall below the minimum.
                        watchdog.reschedule(
                            started + max(cfg.throughput_grace, total / cfg.min_throughput)
                        )
        except TimeoutError:
            if not watchdog.expired():
                raise
            resp.close()
            return _Failure(
                ErrorClass.TOO_SLOW,
                f"{total} bytes in {loop.time() - started:.1f}s, "
                f"below {cfg.min_throughput:g} bytes/s",
            )
        body = b"".join(chunks)
        if not sniffed:
            refused = self._sniff(body)
            if refused is not None:
                return refused
        if length is not None and total < length:
            return _Failure(
                ErrorClass.TRUNCATED, f"{total} of {length} bytes received", retryable=True
            )
        return _Body(body, str(url), resp.headers.get("Content-Type"), status)

    async def _fetch_policy_file(self, url: URL) -> tuple[int, bytes] | None:
        """``(status, body)`` of an origin's robots.txt or tdmrep.json (at most
        :data:`~bingcrawl.fetch.etiquette.MAX_POLICY_BYTES`, the rest ignored; a gzip or
        deflate body is inflated up to that much, never more), following up to 5 redirects
        under the network policy; None if it could not be reached. Its timeout, like an
        image's deadline, does not count the wait for a connection slot."""
        session = self._session
        cfg = self._config
        if session is None:
            return None
        headers = {"User-Agent": cfg.user_agent, "Accept-Encoding": "identity"}
        loop = asyncio.get_running_loop()
        current = url
        try:
            async with asyncio.timeout(cfg.etiquette.timeout) as timeout:
                deadline = _Deadline(timeout, loop)
                for _hop in range(6):
                    if url_refusal(current, cfg.policy) is not None:
                        return None
                    async with session.get(
                        current, headers=headers, allow_redirects=False,
                        trace_request_ctx=deadline,
                    ) as resp:  # fmt: skip
                        if resp.status not in _REDIRECT_STATUSES:
                            if not 200 <= resp.status < 300:
                                return resp.status, b""
                            return await _policy_body(resp)
                        target = self._redirect_target(resp, current)
                    if isinstance(target, _Failure):
                        return None
                    current = target
                return 404, b""  # more than 5 redirects: unavailable (RFC 9309 2.3.1.2)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RuntimeError) as exc:
            # (RuntimeError: the session closed under it at the end of a crawl)
            logger.debug("%s could not be fetched: %s", url, exc)
            return None

    def _sniff(self, head: bytes) -> _Failure | None:
        """Refuse bytes that are not an accepted raster format, from their first bytes."""
        if not head:
            return _Failure(ErrorClass.NOT_AN_IMAGE, "empty body")
        fmt = sniff_format(head[:SNIFF_BYTES])
        if fmt is None:
            return _Failure(
                ErrorClass.NOT_AN_IMAGE, f"not a raster image (starts {head[:SNIFF_BYTES]!r})"
            )
        if fmt not in self._config.formats:
            return _Failure(ErrorClass.UNSUPPORTED_FORMAT, f"{fmt} is not an accepted format")
        return None
