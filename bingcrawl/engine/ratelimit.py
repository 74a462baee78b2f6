"""One rate limiter for every API call, and the retry policy around each call.

:class:`RateLimiter` is a no-burst limiter: grants are spaced evenly, so no 1-second window
ever holds more than ``qps`` grants (``floor(qps)`` for a fractional rate above 1: a window
holds whole calls), with a 5 % margin for network jitter between our clock and the server's.
``pause(seconds)`` parks *every* caller (a 429's Retry-After applies to the subscription key,
not to the one producer that was refused).

:class:`ApiGate` wraps each API call, in this order, per attempt:

1. the budget check and reservation (``--max-api-calls``, counted across resumes), with no
   await, so callers queued together cannot overspend;
2. the durable count of the call (the :class:`Ledger`, i.e. the checkpoint), *before* the
   grant: however slow the checkpoint's writer is, it can never hold granted calls back and
   release them together;
3. the grant from the limiter, then the request, with nothing awaited in between: requests
   leave spaced as the grants were (and a call waiting out a 429's pause is sent after it).

The retry policy around it:

* 429 -> shared pause for Retry-After (or a backoff when absent), then retry; an empty 200 is
  throttling too (never "end of results"). Throttling is the API asking us to slow down, not
  failing: a 429 with Retry-After is waited out for as long as it lasts; ``--api-retries``
  does not bound it (a 3-day crawl must not end because of a minute of 429s;
  ``--max-api-calls`` and Ctrl-C still do). Throttled answers without Retry-After (empty or
  HTML 200s) back off up to ``backoff_max`` and are waited out up to
  :attr:`RetryPolicy.max_blind_throttles` in a row: an endpoint that never answers anything
  else is not throttling, and its call is given up (the query is retried by the next run);
* 5xx and connection errors -> jittered exponential backoff, at most ``--api-retries`` times,
  then the last error is raised;
* anything else (401/403/400/410/404) -> raised to the caller at once.

A connection that was never made (refused, DNS failure, connect timeout) sent nothing: the
call is refunded, in the budget and in the ledger. The clock and the sleep function are
injectable so the tests run without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bingcrawl.errors import (
    ApiConnectionError,
    ConfigError,
    QuotaExceededError,
    ServerError,
    ThrottledError,
)

__all__ = ["ApiGate", "Ledger", "Limiter", "RateLimiter", "RetryPolicy", "grant_interval"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def grant_interval(qps: float, margin: float) -> float:
    """Seconds between grants so that no 1-second window holds more than ``qps`` of them.

    Evenly spaced grants ``i`` apart put ``floor(1 / i) + 1`` of them in a closed 1-second
    window, so a window holds at most ``n = floor(qps)`` grants once ``i > 1 / n``; the margin
    stretches that a little more. Below 1 QPS the spacing is simply ``1 / qps`` (stretched).
    Example: ``--qps 2.5`` gives 0.525 s (2 calls in any second), not 0.42 s (3 calls).
    """
    rate = qps if qps < 1 else math.floor(qps)
    return (1.0 + margin) / rate


class Limiter(Protocol):
    """What :class:`ApiGate` needs of a limiter: :class:`RateLimiter` in this process, or a
    proxy of one shared by a cluster (``bingcrawl.cluster``)."""

    qps: float

    async def acquire(self) -> None:
        """Wait for the next grant."""

    def paused_for(self) -> float:
        """Seconds left of the current shared pause (0 when none)."""

    def pause(self, seconds: float) -> None:
        """Give no grant for ``seconds`` from now (extends, never shortens, a pause)."""


class RateLimiter:
    """A FIFO, no-burst limiter: at most ``qps`` grants in any 1-second window.

    ``margin`` stretches the spacing (5 % by default), which keeps the server's view of the
    rate under its limit even when requests reach it with some jitter. See
    :func:`grant_interval` for a fractional ``qps``.
    """

    def __init__(
        self,
        qps: float,
        *,
        margin: float = 0.05,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (qps > 0 and math.isfinite(qps)):
            raise ConfigError("--qps", f"must be a positive number, got {qps!r}")
        if not 0 <= margin < 1:
            raise ConfigError("margin", f"must be in [0, 1), got {margin!r}")
        self.qps = qps
        self.interval = grant_interval(qps, margin)
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf
        self._pause_until = -math.inf
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def acquire(self) -> None:
        """Wait for the next grant. Callers are served in arrival order."""
        async with self._lock:
            while True:
                now = self._now()
                ready = max(self._next, self._pause_until)
                if now >= ready:
                    break
                await self._sleep(ready - now)
            self._next = now + self.interval

    def paused_for(self) -> float:
        """Seconds left of the current shared pause (0 when none)."""
        return max(0.0, self._pause_until - self._now())

    def pause(self, seconds: float) -> None:
        """Give no grant for ``seconds`` from now (extends, never shortens, a pause)."""
        until = self._now() + max(0.0, seconds)
        if until > self._pause_until:
            self._pause_until = until
            log.info("API paused for %.2f s (all producers wait)", seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How API calls are retried: bounded attempts, full-jitter exponential backoff."""

    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0

    @property
    def max_blind_throttles(self) -> int:
        """Throttled answers *without* a Retry-After (empty or HTML 200s) in a row that are
        waited out before a call gives up: 3 x ``max_retries`` (at least 10), about ten
        minutes of capped backoff by default. A 429 with Retry-After is always waited out."""
        return max(10, 3 * self.max_retries)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError("--api-retries", "must be >= 0")
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise ConfigError("backoff", "need 0 < backoff_base <= backoff_max")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return rng.uniform(cap / 2, cap)


class Ledger(Protocol):
    """Where :class:`ApiGate` counts calls durably (the checkpoint)."""

    async def count_sent(self, endpoint: str) -> None:
        """Count one call as sent, durably, before it is sent."""

    def refund(self, endpoint: str) -> None:
        """Take back a counted call that never left (its connection was never made)."""


class ApiGate:
    """Every API call of every source goes through :meth:`call`.

    ``calls_before`` is the number of API calls already spent by earlier runs of the same
    crawl (from the checkpoint); ``max_calls`` the ``--max-api-calls`` budget (None = no
    budget); ``ledger`` counts every call durably before it is sent (see the module
    docstring for the order). ``throttled_now`` is True while a throttling spell lasts.
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        policy: RetryPolicy | None = None,
        max_calls: int | None = None,
        calls_before: int = 0,
        ledger: Ledger | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limiter = limiter
        self.policy = policy or RetryPolicy()
        self.max_calls = max_calls
        self.calls = calls_before
        self.ledger = ledger
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.throttled = 0
        self.retried = 0
        self.refunded = 0
        self._throttle_streak = 0
        self._blind_streak = 0

    @property
    def throttled_now(self) -> bool:
        """True between a throttled answer and the next successful call."""
        return self._throttle_streak > 0

    def _reserve(self) -> None:
        if self.max_calls is not None and self.calls >= self.max_calls:
            raise QuotaExceededError(
                f"--max-api-calls budget of {self.max_calls} calls is spent", code="MaxApiCalls"
            )
        self.calls += 1

    def budget_left(self) -> int | None:
        """API calls left in the ``--max-api-calls`` budget (None when unlimited)."""
        return None if self.max_calls is None else max(0, self.max_calls - self.calls)

    async def call(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` (one HTTP request) under the limiter and the retry policy.

        ``fn`` must send its request before its first await that can wait (everything it
        needs, e.g. an upload's bytes, is prepared before :meth:`call`).
        """
        failures = 0
        while True:
            self._reserve()  # no await between the budget check and the reservation
            counted = False
            try:
                if self.ledger is not None:
                    await self.ledger.count_sent(endpoint)
                    counted = True
                await self.limiter.acquire()
            except BaseException:
                # Not sent (cancelled while waiting for the grant, e.g. by Ctrl-C during a
                # long Retry-After): the budget and the ledger get the call back.
                self.calls -= 1
                if counted and self.ledger is not None:
                    try:
                        self.ledger.refund(endpoint)
                    except Exception:  # the checkpoint is closing: an over-count, harmless
                        log.debug("could not refund an unsent %s call", endpoint)
                raise
            try:
                result = await fn()
            except ThrottledError as exc:
                self.throttled += 1
                self._throttle_streak += 1
                delay = exc.retry_after
                if delay is None:  # empty 200: no Retry-After, back off with jitter
                    self._blind_streak += 1
                    if self._blind_streak > self.policy.max_blind_throttles:
                        # An endpoint that only ever answers an empty or HTML 200 may not be
                        # throttling at all: give this call up (its query is retried next run).
                        raise
                    delay = self.policy.backoff(self._throttle_streak, self._rng)
                log.warning(
                    "%s throttled (%s); every producer waits %.2f s (throttled %d times in a row)",
                    endpoint, exc, delay, self._throttle_streak,
                )  # fmt: skip
                self.limiter.pause(delay)
            except ApiConnectionError as exc:
                if not exc.sent:
                    self._refund(endpoint)
                failures += 1
                if failures > self.policy.max_retries:
                    raise
                await self._back_off(endpoint, exc, failures)
            except ServerError as exc:
                failures += 1
                if failures > self.policy.max_retries:
                    raise
                await self._back_off(endpoint, exc, failures)
            else:
                self._throttle_streak = self._blind_streak = 0
                return result
            self.retried += 1

    def _refund(self, endpoint: str) -> None:
        self.calls -= 1
        self.refunded += 1
        if self.ledger is not None:
            self.ledger.refund(endpoint)

    async def _back_off(self, endpoint: str, exc: Exception, failures: int) -> None:
        delay = self.policy.backoff(failures, self._rng)
        log.warning("%s failed (%s); retry %d in %.2f s", endpoint, exc, failures, delay)
        await self._sleep(delay)
