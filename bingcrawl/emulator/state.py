"""The emulator's mutable state: request log, per-key counters, QPS windows, fault draws.

One :class:`EmulatorState` belongs to one application (``app[STATE]``). Tests read it as
ground truth: every API request is logged with the emulator's own monotonic and wall-clock
timestamps, so "no request arrived before Retry-After elapsed" or "the client kept to 3 QPS"
are checked against what the server saw, not against the client's opinion of itself.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from bingcrawl.emulator.config import EmulatorConfig

if TYPE_CHECKING:
    from bingcrawl.emulator.corpus import Corpus
    from bingcrawl.emulator.imagehost import ImageHost

__all__ = [
    "CONFIG",
    "CORPUS",
    "IMAGE_HOST",
    "STATE",
    "ApiRequest",
    "EmulatorState",
]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One API request as the emulator saw it.

    ``time`` is the arrival time on the state's monotonic clock (``time.monotonic`` unless a
    test injected another), ``wall_time`` the arrival time as a Unix timestamp. ``outcome``
    says which rule answered: ``ok``, ``unauthorized``, ``disabled``, ``redundant_auth``,
    ``http_not_allowed``, ``throttled``, ``quota``, ``url_too_long``, ``server_error``,
    ``empty_200``, ``non_json_200``, ``invalid_request`` or ``not_found``.
    """

    time: float
    wall_time: float
    endpoint: str
    method: str
    key: str | None
    status: int
    outcome: str
    params: Mapping[str, str]
    client_id: str | None


@dataclass(slots=True, repr=False)
class EmulatorState:
    """Mutable state of one emulator application; see the module docstring."""

    config: EmulatorConfig
    clock: Clock = time.monotonic
    wall_clock: Clock = time.time
    log: deque[ApiRequest] = field(init=False)
    #: Billable calls per key: requests that passed authentication and the QPS window.
    calls: Counter[str] = field(default_factory=Counter)
    #: 429 answers per key.
    throttled: Counter[str] = field(default_factory=Counter)
    #: Requests to the ``/th`` thumbnail route, by image key or query text.
    thumbnails: Counter[str] = field(default_factory=Counter)
    _windows: dict[str, list[float]] = field(default_factory=dict)
    _rng: random.Random = field(init=False)
    _serial: int = 0

    def __post_init__(self) -> None:
        self.log = deque(maxlen=self.config.log_limit)
        self._rng = random.Random(self.config.seed)

    def __repr__(self) -> str:
        return f"<EmulatorState {len(self.log)} API requests logged>"

    # -- ground truth for tests -------------------------------------------------------------

    def requests(
        self,
        *,
        endpoint: str | None = None,
        key: str | None = None,
        status: int | None = None,
    ) -> list[ApiRequest]:
        """Logged API requests, oldest first, optionally filtered."""
        return [
            r
            for r in self.log
            if (endpoint is None or r.endpoint == endpoint)
            and (key is None or r.key == key)
            and (status is None or r.status == status)
        ]

    def max_in_window(
        self, seconds: float = 1.0, *, key: str | None = None, endpoint: str | None = None
    ) -> int:
        """The most logged requests that arrived within any ``seconds``-long window.

        A client that keeps to ``N`` queries per second never exceeds ``N`` here for
        ``seconds=1.0`` (whatever the emulator answered them).
        """
        times = sorted(r.time for r in self.requests(key=key, endpoint=endpoint))
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - seconds:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def statuses(self, *, endpoint: str | None = None) -> Counter[int]:
        """How many logged API requests ended with each HTTP status."""
        return Counter(r.status for r in self.requests(endpoint=endpoint))

    # -- service rules (called by the middleware) --------------------------------------------

    def next_serial(self) -> int:
        """A per-application request number (used for trace ids)."""
        self._serial += 1
        return self._serial

    def admit(self, key: str, arrived: float) -> float | None:
        """Apply the sliding QPS window to a request of ``key`` that arrived at ``arrived``.

        Returns ``None`` and records the request when a slot is free; otherwise returns the
        seconds until the oldest request in the window leaves it. Refused requests do not
        occupy a slot, so a client that keeps knocking is not locked out forever.
        """
        rule = self.config.window
        if rule is None:
            return None
        slots, seconds = rule
        # Requests are judged by arrival time (not by when api_latency let them through), and
        # kept sorted because concurrent requests may reach this point slightly out of order.
        times = self._windows.setdefault(key, [])
        del times[: bisect.bisect_right(times, arrived - seconds)]
        hi = bisect.bisect_right(times, arrived)
        if hi >= slots:
            return times[hi - slots] + seconds - arrived
        bisect.insort(times, arrived)
        return None

    def over_quota(self, key: str) -> bool:
        """Count one billable call of ``key``; True if it is beyond the monthly quota."""
        quota = self.config.monthly_quota
        if quota is not None and self.calls[key] >= quota:
            return True
        self.calls[key] += 1
        return False

    def draw_fault(self) -> str | None:
        """Draw this request's injected fault: ``server_error``, ``empty_200``, ``non_json_200``."""
        cfg = self.config
        if not (cfg.p_server_error or cfg.p_empty_200 or cfg.p_non_json_200):
            return None
        u = self._rng.random()
        for name, p in (
            ("server_error", cfg.p_server_error),
            ("empty_200", cfg.p_empty_200),
            ("non_json_200", cfg.p_non_json_200),
        ):
            if u < p:
                return name
            u -= p
        return None

    def record(self, entry: ApiRequest) -> None:
        """Append one request to the log and count a 429."""
        self.log.append(entry)
        if entry.outcome == "throttled" and entry.key is not None:
            self.throttled[entry.key] += 1


def retry_after_seconds(wait: float) -> int:
    """The Retry-After delta for a wait: rounded up, at least one second."""
    return max(1, math.ceil(wait - 1e-9))


CONFIG = web.AppKey("bingcrawl.emulator.config", EmulatorConfig)
STATE = web.AppKey("bingcrawl.emulator.state", EmulatorState)
CORPUS: web.AppKey[Corpus] = web.AppKey("bingcrawl.emulator.corpus")
IMAGE_HOST: web.AppKey[ImageHost] = web.AppKey("bingcrawl.emulator.image_host")
