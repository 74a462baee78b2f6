"""One rate limiter for every API call, and the retry policy around each call.

:class:`RateLimiter` is a no-burst limiter: grants are spaced ``(1 + margin) / qps`` apart,
so no 1-second window ever holds more than ``qps`` grants, with room for a little network
jitter between our clock and the server's. ``pause(seconds)`` parks *every* caller (a 429's
Retry-After applies to the subscription key, not to the one producer that was refused).

:class:`ApiGate` wraps each API call: budget check (``--max-api-calls``, counted across
resumes), a grant from the limiter, the call, accounting, and the retry policy:

* 429 -> shared pause for Retry-After (or a backoff when absent), then retry;
* a 200 with an empty body is throttling -> shared pause with jittered backoff, then retry
  the same request (never "end of results");
* 5xx and connection errors -> jittered exponential backoff, retry;
* anything else (401/403/400/410/404) -> raised to the caller at once.

Retries are bounded; the last error is raised when they run out. The clock and the sleep
function are injectable so the tests run without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bingcrawl.errors import (
    ApiConnectionError,
    ConfigError,
    QuotaExceededError,
    ServerError,
    ThrottledError,
)

__all__ = ["ApiGate", "RateLimiter", "RetryPolicy"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """A FIFO, no-burst limiter: at most ``qps`` grants in any 1-second window.

    ``margin`` stretches the spacing (5 % by default), which keeps the server's view of the
    rate under its limit even when requests reach it with some jitter.
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
        self.interval = (1.0 + margin) / qps
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

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError("--api-retries", "must be >= 0")
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise ConfigError("backoff", "need 0 < backoff_base <= backoff_max")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return rng.uniform(cap / 2, cap)


class ApiGate:
    """Every API call of every source goes through :meth:`call`.

    ``calls_before`` is the number of API calls already spent by earlier runs of the same
    crawl (from the checkpoint); ``max_calls`` the ``--max-api-calls`` budget (None = no
    budget). ``on_call`` is told of every request that was sent (for accounting).
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        policy: RetryPolicy | None = None,
        max_calls: int | None = None,
        calls_before: int = 0,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limiter = limiter
        self.policy = policy or RetryPolicy()
        self.max_calls = max_calls
        self.calls = calls_before
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.throttled = 0
        self.retried = 0

    def _check_budget(self) -> None:
        if self.max_calls is not None and self.calls >= self.max_calls:
            raise QuotaExceededError(
                f"--max-api-calls budget of {self.max_calls} calls is spent", code="MaxApiCalls"
            )

    def budget_left(self) -> int | None:
        """API calls left in the ``--max-api-calls`` budget (None when unlimited)."""
        return None if self.max_calls is None else max(0, self.max_calls - self.calls)

    async def call(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` (one HTTP request) under the limiter and the retry policy."""
        attempt = 0
        while True:
            self._check_budget()
            await self.limiter.acquire()
            # Checked again once the grant is ours: callers that queued on the limiter
            # together all passed the first check.
            self._check_budget()
            self.calls += 1
            try:
                return await fn()
            except ThrottledError as exc:
                self.throttled += 1
                attempt += 1
                if attempt > self.policy.max_retries:
                    raise
                delay = exc.retry_after
                if delay is None:  # empty 200: no Retry-After, back off with jitter
                    delay = self.policy.backoff(attempt, self._rng)
                log.warning("%s throttled (%s); every producer waits %.2f s", endpoint, exc, delay)
                self.limiter.pause(delay)
            except (ServerError, ApiConnectionError) as exc:
                attempt += 1
                if attempt > self.policy.max_retries:
                    raise
                delay = self.policy.backoff(attempt, self._rng)
                log.warning("%s failed (%s); retry %d in %.2f s", endpoint, exc, attempt, delay)
                await self._sleep(delay)
            self.retried += 1
