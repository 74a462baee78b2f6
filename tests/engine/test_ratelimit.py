"""The API rate limiter and retry gate, on a virtual clock (no real waiting)."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from bingcrawl.engine.ratelimit import ApiGate, RateLimiter, RetryPolicy
from bingcrawl.errors import (
    ApiConnectionError,
    AuthenticationError,
    ConfigError,
    QuotaExceededError,
    ServerError,
    ThrottledError,
)
from bingcrawl.store import Checkpoint


class VirtualClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most grants that fall in any closed window of ``window`` seconds."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t <= start + window))
    return best


@pytest.mark.parametrize("qps", [1, 3, 10, 50])
async def test_never_more_than_qps_in_any_window(qps: int) -> None:
    clock = VirtualClock()
    limiter = RateLimiter(qps, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def caller() -> None:
        for _ in range(10):
            await limiter.acquire()
            times.append(clock.now)

    await asyncio.gather(*(caller() for _ in range(4)))
    assert len(times) == 40
    assert max_in_window(sorted(times)) <= qps
    # ... and close to the limit: the margin costs 5 %, nothing more.
    rate = (len(times) - 1) / (max(times) - min(times))
    assert rate >= 0.94 * qps


async def test_no_burst_after_idle() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 100  # idle for a long time: a token bucket would now allow a burst
    grants = []
    for _ in range(5):
        await limiter.acquire()
        grants.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert all(g >= 1.0 / 5 for g in gaps)


async def test_pause_holds_every_caller() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    paused_at = clock.now
    limiter.pause(2.5)
    limiter.pause(1.0)  # a shorter pause never shortens the longer one
    times: list[float] = []

    async def caller() -> None:
        await limiter.acquire()
        times.append(clock.now)

    await asyncio.gather(*(caller() for _ in range(3)))
    assert min(times) >= paused_at + 2.5


@pytest.mark.parametrize("qps", [0, -1, float("inf"), float("nan")])
def test_bad_qps_names_the_option(qps: float) -> None:
    with pytest.raises(ConfigError, match="--qps"):
        RateLimiter(qps)


def make_gate(clock: VirtualClock, **kw: object) -> ApiGate:
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    return ApiGate(limiter, rng=random.Random(1), sleep=clock.sleep, **kw)  # type: ignore[arg-type]


async def test_429_pauses_for_retry_after_then_succeeds() -> None:
    clock = VirtualClock()
    gate = make_gate(clock)
    sent: list[float] = []

    async def call() -> str:
        sent.append(clock.now)
        if len(sent) == 1:
            raise ThrottledError("429", retry_after=3.0, status=429)
        return "ok"

    assert await gate.call("search", call) == "ok"
    assert sent[1] - sent[0] >= 3.0
    assert gate.calls == 2
    assert gate.throttled == 1


async def test_empty_200_backs_off_and_retries_same_request() -> None:
    clock = VirtualClock()
    gate = make_gate(clock)
    attempts = 0

    async def call() -> int:
        nonlocal attempts
        attempts += 1
        if attempts < 4:
            raise ThrottledError("empty 200", retry_after=None, status=200)
        return attempts

    assert await gate.call("search", call) == 4
    # the gate waited between attempts (pause grows with the attempt number)
    assert clock.now - 1000.0 >= 0.5 + 1.0 + 2.0


async def test_server_errors_are_bounded() -> None:
    clock = VirtualClock()
    gate = make_gate(clock, policy=RetryPolicy(max_retries=2))
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise ServerError("boom", status=500)

    with pytest.raises(ServerError):
        await gate.call("search", call)
    assert calls == 3


async def test_auth_errors_are_not_retried() -> None:
    clock = VirtualClock()
    gate = make_gate(clock)
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise AuthenticationError("no", status=401)

    with pytest.raises(AuthenticationError):
        await gate.call("search", call)
    assert calls == 1


async def test_budget_counts_earlier_runs() -> None:
    clock = VirtualClock()
    gate = make_gate(clock, max_calls=5, calls_before=3)
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1

    await gate.call("search", call)
    await gate.call("search", call)
    assert gate.budget_left() == 0
    with pytest.raises(QuotaExceededError, match="max-api-calls"):
        await gate.call("search", call)
    assert calls == 2


async def test_budget_holds_for_callers_queued_together() -> None:
    clock = VirtualClock()
    gate = make_gate(clock, max_calls=5)
    sent = 0

    async def call() -> None:
        nonlocal sent
        sent += 1

    results = await asyncio.gather(
        *(gate.call("search", call) for _ in range(9)), return_exceptions=True
    )
    assert sent == 5
    assert sum(isinstance(r, QuotaExceededError) for r in results) == 4


# -- regressions of issue 13 ---------------------------------------------------------------


@pytest.mark.parametrize(("qps", "most"), [(2.5, 2), (1.5, 1), (3.9, 3), (0.5, 1)])
async def test_fractional_qps_never_exceeds_qps_in_any_window(qps: float, most: int) -> None:
    # --qps 2.5 with the 5 % margin used to space grants 0.42 s apart: 3 in one second.
    clock = VirtualClock()
    limiter = RateLimiter(qps, clock=clock, sleep=clock.sleep)
    times: list[float] = []
    for _ in range(12):
        await limiter.acquire()
        times.append(clock.now)
    assert max_in_window(times) == most


class StalledLedger:
    """A ledger whose durable commit is held until the test releases it (a slow writer)."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.release = asyncio.Event()
        self.counted: list[float] = []
        self.refunds = 0

    async def count_sent(self, endpoint: str) -> None:
        await self.release.wait()
        self.counted.append(self.clock.now)

    def refund(self, endpoint: str) -> None:
        self.refunds += 1


async def test_a_stalled_ledger_never_releases_calls_together() -> None:
    # The durable count comes before the grant: calls that queued behind a slow commit are
    # still sent one grant interval apart (they used to leave in the same instant).
    clock = VirtualClock()
    ledger = StalledLedger(clock)
    gate = make_gate(clock, ledger=ledger)
    sent: list[float] = []

    async def call() -> None:
        sent.append(clock.now)

    callers = [asyncio.create_task(gate.call("search", call)) for _ in range(5)]
    await asyncio.sleep(0)  # every caller reaches the ledger and waits there
    await clock.sleep(3.0)  # the stall: virtual time passes with nothing sent
    assert sent == []
    ledger.release.set()
    await asyncio.gather(*callers)
    assert len(sent) == 5
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= gate.limiter.interval - 1e-9
    assert len(ledger.counted) == 5


async def test_a_call_waiting_for_its_grant_is_not_sent_inside_a_retry_after() -> None:
    clock = VirtualClock()
    gate = make_gate(clock)
    sent: list[tuple[str, float]] = []

    async def first() -> None:
        sent.append(("first", clock.now))
        if len(sent) == 1:
            raise ThrottledError("429", retry_after=5.0, status=429)

    async def second() -> None:
        sent.append(("second", clock.now))

    await asyncio.gather(gate.call("search", first), gate.call("search", second))
    throttled_at = sent[0][1]
    assert all(t >= throttled_at + 5.0 for _, t in sent[1:])


async def test_throttling_longer_than_the_retries_is_waited_out() -> None:
    # Ten 429s in a row with --api-retries 2 used to raise ThrottledError and end the crawl.
    clock = VirtualClock()
    gate = make_gate(clock, policy=RetryPolicy(max_retries=2, backoff_max=8.0))
    attempts = 0

    async def call() -> str:
        nonlocal attempts
        attempts += 1
        if attempts <= 10:
            raise ThrottledError("empty 200", retry_after=None, status=200)
        return "ok"

    assert await gate.call("search", call) == "ok"
    assert attempts == 11
    assert gate.throttled == 10
    assert not gate.throttled_now
    # the backoff grew, and stayed capped at backoff_max
    assert max(clock.sleeps) <= 8.0 + 1e-9


async def test_a_connection_never_made_is_refunded() -> None:
    clock = VirtualClock()
    ledger = StalledLedger(clock)
    ledger.release.set()
    gate = make_gate(clock, ledger=ledger, policy=RetryPolicy(max_retries=2))

    async def refused() -> None:
        raise ApiConnectionError("search: cannot reach the API (refused)", sent=False)

    with pytest.raises(ApiConnectionError):
        await gate.call("search", refused)
    assert gate.calls == 0  # three attempts, none of them an API call
    assert ledger.refunds == 3

    async def reset() -> None:
        raise ApiConnectionError("search: connection reset", sent=True)

    with pytest.raises(ApiConnectionError):
        await gate.call("search", reset)
    assert gate.calls == 3  # a reset connection may have reached the API: counted
    assert ledger.refunds == 3


async def test_the_checkpoint_writer_stalled_does_not_bunch_requests(tmp_path: Path) -> None:
    # The real ledger: the checkpoint, its one writer thread held by a slow transaction.
    clock = VirtualClock()
    async with await Checkpoint.open(tmp_path) as checkpoint:
        gate = make_gate(clock, ledger=checkpoint)
        writer = checkpoint._w()
        held = threading.Event()
        entered = asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow_transaction(conn: sqlite3.Connection) -> None:
            loop.call_soon_threadsafe(entered.set)
            held.wait(30)

        stall = asyncio.create_task(writer.call(slow_transaction, what="a slow transaction"))
        await entered.wait()
        sent: list[float] = []

        async def call() -> None:
            sent.append(clock.now)

        callers = [asyncio.create_task(gate.call("search", call)) for _ in range(4)]
        await clock.sleep(2.0)
        assert sent == []
        held.set()
        await stall
        await asyncio.gather(*callers)
        assert checkpoint.api_calls_total == 4
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(sent) == 4
    assert min(gaps) >= gate.limiter.interval - 1e-9


async def test_an_endpoint_that_only_answers_blank_pages_is_given_up() -> None:
    # An HTML or empty 200 forever (a wrong endpoint, a captive portal) used to be waited on
    # for ever once throttling stopped counting against --api-retries.
    clock = VirtualClock()
    gate = make_gate(clock, policy=RetryPolicy(max_retries=2, backoff_max=8.0))
    attempts = 0

    async def call() -> None:
        nonlocal attempts
        attempts += 1
        raise ThrottledError("HTML 200", retry_after=None, status=200)

    with pytest.raises(ThrottledError):
        await gate.call("search", call)
    assert attempts == RetryPolicy(max_retries=2).max_blind_throttles + 1 == 11


async def test_a_call_cancelled_while_waiting_for_its_grant_is_refunded() -> None:
    clock = VirtualClock()
    ledger = StalledLedger(clock)
    ledger.release.set()
    gate = make_gate(clock, ledger=ledger)
    gate.limiter.pause(3600)  # a long Retry-After: the call waits for its grant
    sent = False

    async def call() -> None:
        nonlocal sent
        sent = True

    waiting = asyncio.create_task(gate.call("search", call))
    while not ledger.counted:  # yield (no clock) until the call is counted and waiting
        await asyncio.sleep(0)
    waiting.cancel()  # Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not sent
    assert (gate.calls, ledger.refunds) == (0, 1)
