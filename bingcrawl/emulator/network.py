"""A "realistic web" for the image host: every host name behaves like a server of its own.

A benchmark serves thousands of image URLs under many host names (``h0042.web.test``), all
resolved to one emulator on one port; with a :class:`NetworkProfile` in
:attr:`ImageHostConfig.network <bingcrawl.emulator.imagehost.ImageHostConfig.network>` the
image host answers each request the way the host named by its ``Host`` header would
(:func:`host_name`: port stripped, lowercased). Everything is a pure function of the
profile's ``seed`` and the names, so two runs meet the same web:

* each host has a *latency*, lognormal over the hosts: median ``latency_median``, and 1 % of
  the hosts slower than ``latency_p99`` (sigma = ln(p99 / median) / 2.3263); a request waits
  that latency times a factor uniform in ``[1 - jitter, 1 + jitter]``, fixed per URL key
  (:meth:`NetworkProfile.delay`);
* ``hang_share`` of the hosts accept connections and never answer (``hang``), and
  ``drip_share`` of the others send their headers, then the body at ``drip_rate`` bytes per
  second for at most ``drip_max`` seconds, then the rest at once (``drip``); the rest are
  ``normal`` (:meth:`NetworkProfile.host`);
* ``error_share`` of the URL keys answer with an error, on whichever host: 404 (40 % of
  them), 403, 500 and 503 (20 % each) (:meth:`NetworkProfile.error`). 404, 403 and 500 are
  permanent; a 503 is transient: the image host answers it (with ``Retry-After``) to the
  first request of its key only.

The profile knows nothing of HTTP; :mod:`bingcrawl.emulator.imagehost` applies it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from bingcrawl.emulator.synth import stable_hash
from bingcrawl.errors import ConfigError

__all__ = [
    "BEHAVIOURS",
    "ERROR_STATUSES",
    "TRANSIENT_STATUS",
    "HostTraits",
    "NetworkProfile",
    "host_name",
]

#: What a host does with a request: answers (``normal``), never answers (``hang``), or
#: trickles its bodies (``drip``).
BEHAVIOURS: tuple[str, ...] = ("normal", "hang", "drip")

#: The error statuses of :meth:`NetworkProfile.error` and their shares of the failing keys.
ERROR_STATUSES: tuple[tuple[int, float], ...] = ((404, 0.4), (403, 0.2), (500, 0.2), (503, 0.2))

#: The error status answered to the first request of its key only.
TRANSIENT_STATUS = 503

#: The z-score of the 99th percentile of the standard normal distribution.
_Z99 = 2.3263478740408408  # statistics.NormalDist().inv_cdf(0.99)
_UNIT = 2.0**64
_NORMAL = statistics.NormalDist()
_HOST_CACHE = 1 << 16  # host traits kept per profile before the cache starts afresh


def _unit(*parts: int | str) -> float:
    """A deterministic float in the open interval (0, 1) from ``parts``."""
    return (stable_hash(*parts) + 0.5) / _UNIT


def host_name(header: str) -> str:
    """The host name of a ``Host`` header: the port stripped, lowercased, no trailing dot.

    ``"H0042.Web.Test:8080"`` -> ``"h0042.web.test"``; ``"[::1]:80"`` -> ``"[::1]"``.
    """
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end >= 0 else text
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit():
        text = name
    return text.rstrip(".") or text


@dataclass(frozen=True, slots=True)
class HostTraits:
    """What one host name is like: its ``latency`` (seconds, before the per-request jitter)
    and its ``behaviour``, one of :data:`BEHAVIOURS`."""

    latency: float
    behaviour: str


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """The web the image host plays (see the module docstring); frozen and validated.

    ``seed`` selects the web (which hosts are slow, hang or drip, which keys fail);
    ``latency_median`` and ``latency_p99`` (seconds) shape the hosts' lognormal latencies;
    ``hang_share`` is a fraction of the hosts, ``drip_share`` a fraction of those that do not
    hang (drawn independently: a host drawn for both hangs), ``error_share`` a fraction of
    the URL keys; ``drip_rate`` is the bytes per second of a dripping body and ``drip_max``
    the seconds after which the rest of it is sent at once; ``jitter`` spreads each request's
    delay uniformly over ``[1 - jitter, 1 + jitter]`` times its host's latency.
    """

    seed: int = 0
    latency_median: float = 0.2
    latency_p99: float = 5.0
    hang_share: float = 0.01
    drip_share: float = 0.01
    error_share: float = 0.03
    drip_rate: int = 2048
    drip_max: float = 120.0
    jitter: float = 0.25
    #: Host traits computed so far (by name); not part of the value.
    _hosts: dict[str, HostTraits] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", f"must be a non-negative integer, got {self.seed!r}")
        for name in ("latency_median", "latency_p99", "drip_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(name, f"must be a number of seconds, got {value!r}")
            if not 0.0 <= value < math.inf:
                raise ConfigError(name, f"must be a finite number of seconds >= 0, got {value!r}")
        if self.latency_p99 < self.latency_median:
            raise ConfigError(
                "latency_p99",
                f"must be at least the median ({self.latency_median:g} s), "
                f"got {self.latency_p99:g} s",
            )
        if self.latency_p99 > 0 and self.latency_median == 0:
            raise ConfigError(
                "latency_median", "must be > 0 when latency_p99 is (a lognormal needs a median)"
            )
        for name in ("hang_share", "drip_share", "error_share", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(name, f"must be a fraction in [0, 1], got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"must be a fraction in [0, 1], got {value!r}")
        rate = self.drip_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ConfigError("drip_rate", f"must be an integer >= 1 (bytes/s), got {rate!r}")

    @property
    def sigma(self) -> float:
        """The sigma of the hosts' lognormal latency: ``ln(p99 / median) / 2.3263``."""
        if self.latency_median <= 0:
            return 0.0
        return math.log(self.latency_p99 / self.latency_median) / _Z99

    def host(self, name: str) -> HostTraits:
        """The traits of host ``name`` (a pure function of ``seed`` and ``name``, cached)."""
        traits = self._hosts.get(name)
        if traits is None:
            traits = self._traits(name)
            if len(self._hosts) >= _HOST_CACHE:
                self._hosts.clear()
            self._hosts[name] = traits
        return traits

    def _traits(self, name: str) -> HostTraits:
        z = _NORMAL.inv_cdf(_unit(self.seed, "latency", name))
        latency = self.latency_median * math.exp(self.sigma * z)
        # Independent draws, hang first: hang_share of all hosts hang, drip_share of the
        # others drip.
        if _unit(self.seed, "hang", name) < self.hang_share:
            behaviour = "hang"
        elif _unit(self.seed, "drip", name) < self.drip_share:
            behaviour = "drip"
        else:
            behaviour = "normal"
        return HostTraits(latency=latency, behaviour=behaviour)

    def error(self, key: str) -> int | None:
        """The error status URL key ``key`` answers on every host, or ``None`` (the image).

        ``error_share`` of the keys fail: 404 (40 %), 403, 500 or 503 (20 % each); a pure
        function of ``seed`` and ``key``. Whether a 503 is still due (only the first request
        of its key gets it) is the image host's state, not the profile's.
        """
        if _unit(self.seed, "error", key) >= self.error_share:
            return None
        u = _unit(self.seed, "error-status", key)
        acc = 0.0
        for status, share in ERROR_STATUSES:
            acc += share
            if u < acc:
                return status
        return ERROR_STATUSES[-1][0]

    def delay(self, name: str, key: str) -> float:
        """Seconds a request of ``key`` on host ``name`` waits before its answer: the host's
        latency times a factor uniform in ``[1 - jitter, 1 + jitter]``, fixed per key."""
        factor = 1.0 + self.jitter * (2.0 * _unit(self.seed, "jitter", key) - 1.0)
        return self.host(name).latency * factor
