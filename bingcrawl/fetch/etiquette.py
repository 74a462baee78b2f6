"""Publishers' opt-outs and robots.txt: what a crawler that sites can trust honours.

Every signal is honoured by default; ``--ignore SIGNAL`` (or ``--respect`` with a shorter
list) turns one off, and doing so is the user's responsibility. The names, and the error
class an image it excludes gets (its outcome is ``failed``, never retried; ``detail`` quotes
the value that excluded it):

==================  ===========================  ==============================================
signal              error class                  what excludes an image
==================  ===========================  ==============================================
``robots.txt``      ``opted_out_robots_txt``     its URL is disallowed for our agent token by
                                                 the origin's ``/robots.txt`` (RFC 9309,
                                                 parsed by protego, Scrapy's parser)
``x-robots-tag``    ``opted_out_x_robots_tag``   an ``X-Robots-Tag`` header with ``noai``,
                                                 ``noimageai``, ``noindex``, ``noimageindex``
                                                 or ``none``, for every agent or for ours
                                                 (``bingcrawl: noai``)
``tdmrep``          ``opted_out_tdmrep``         W3C TDMRep: a ``tdm-reservation: 1`` header,
                                                 or a rule of the origin's
                                                 ``/.well-known/tdmrep.json`` whose
                                                 ``location`` matches with reservation 1
``content-usage``   ``opted_out_content_usage``  IETF aipref ``Content-Usage``: ``train-ai=n``
                                                 (or ``tdm=n`` with no ``train-ai``), or
                                                 ``train-genai=n`` (a dataset's later use is
                                                 not the crawler's to know), as a header or a
                                                 line of our robots.txt group
``content-signal``  ``opted_out_content_signal`` ``Content-Signal: ai-train=no``, as a header
                                                 or as a line of the robots.txt group that
                                                 applies to us (Cloudflare's managed robots.txt
                                                 says it there)
==================  ===========================  ==============================================

The agent token matched in robots.txt groups and in ``X-Robots-Tag: <agent>: ...`` is
:data:`AGENT` (``bingcrawl``), case-insensitively, whatever the User-Agent string says.

robots.txt and tdmrep.json are fetched once per origin (scheme, host, port) and kept for
:attr:`Etiquette.ttl` (24 h, as RFC 9309 allows), in an LRU of :data:`MAX_ORIGINS` origins.
What a robots.txt answer means (RFC 9309 section 2.3.1): 2xx, its rules; 4xx, no rules
(everything allowed); 5xx or 429, the origin is held back for :attr:`Etiquette.retry_after`
seconds, then asked again: its images fail as ``robots_unavailable``, not as an opt-out (an
outage is not a publisher's wish). An origin that cannot be reached (connection refused, DNS,
a timeout, a refused address) counts as allowed, for the same while: the RFC says "assume
complete disallow", but an image host that does not answer for its robots.txt will not
answer for the image either. A file that cannot be had when it is due again keeps the rules
already known (RFC 9309 section 2.4). Time spent waiting for a connection does not count
against a file's timeout. ``Crawl-delay`` and ``Request-rate`` for our agent become
that host's request interval (at most :attr:`Etiquette.max_delay`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from protego import Protego
from yarl import URL

from bingcrawl.errors import ConfigError
from bingcrawl.records import OPTED_OUT, ErrorClass

__all__ = [
    "AGENT",
    "MAX_ORIGINS",
    "OPTED_OUT",
    "SIGNALS",
    "Etiquette",
    "OriginPolicies",
    "OriginPolicy",
    "PathPattern",
    "PolicyFetch",
    "content_signal_opt_out",
    "content_usage_opt_out",
    "error_class",
    "header_opt_out",
    "robots_group_lines",
    "signal_name",
    "signal_of",
    "tdm_header_opt_out",
    "tdmrep_rules",
    "x_robots_opt_out",
]

log = logging.getLogger(__name__)

#: The product token matched against robots.txt groups and ``X-Robots-Tag: <agent>:``.
AGENT: Final = "bingcrawl"
#: Every signal, by the name ``--respect`` / ``--ignore`` take.
SIGNALS: Final = ("robots.txt", "x-robots-tag", "tdmrep", "content-usage", "content-signal")
#: Origins whose robots.txt and tdmrep.json are kept at once (least recently used go first).
MAX_ORIGINS: Final = 8192
#: Bytes of a robots.txt read (RFC 9309: at least 500 KiB) or of a tdmrep.json.
MAX_POLICY_BYTES: Final = 512 * 1024

_XRT_OPT_OUT: Final = frozenset({"noai", "noimageai", "noindex", "noimageindex", "none"})
# X-Robots-Tag rules that carry a value after a colon: "unavailable_after: <date>" is a rule,
# not an agent named unavailable_after.
_XRT_VALUED: Final = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]+")


def error_class(signal: str) -> str:
    """The error class of an image ``signal`` excluded (``robots.txt`` ->
    ``opted_out_robots_txt``)."""
    return OPTED_OUT + signal.replace(".", "_").replace("-", "_")


def signal_of(error: str | None) -> str | None:
    """The signal an error class names, or None if it is not an opt-out."""
    if not error or not error.startswith(OPTED_OUT):
        return None
    return signal_name(error)


@dataclass(frozen=True, slots=True)
class Etiquette:
    """Which signals are honoured, as whom, and how long an origin's answers are kept."""

    respect: frozenset[str] = frozenset(SIGNALS)
    agent: str = AGENT
    #: Seconds a robots.txt / tdmrep.json answer is kept.
    ttl: float = 24 * 3600.0
    #: Seconds an origin stays disallowed after its robots.txt answered 5xx / 429 (or stays
    #: allowed after it could not be reached) before it is asked again.
    retry_after: float = 600.0
    #: Total seconds for one robots.txt or tdmrep.json fetch, redirects included.
    timeout: float = 10.0
    #: Longest request interval a robots.txt ``Crawl-delay`` / ``Request-rate`` sets.
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        respect = frozenset(self.respect)
        unknown = sorted(respect - set(SIGNALS))
        if unknown:
            raise ConfigError(
                "--respect", f"unknown signals {unknown}; known: {', '.join(SIGNALS)}"
            )
        object.__setattr__(self, "respect", respect)
        if not isinstance(self.agent, str) or not _TOKEN.fullmatch(self.agent):
            raise ConfigError(
                "agent", f"must be a product token (letters, digits, -_.), got {self.agent!r}"
            )
        for name in ("ttl", "retry_after", "timeout", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(name, f"must be a number > 0, got {value!r}")

    @classmethod
    def from_options(
        cls, respect: Sequence[str] | None = None, ignore: Sequence[str] = ()
    ) -> Etiquette:
        """``--respect`` (comma-separated or repeated; ``all`` / ``none``; default all)
        minus ``--ignore`` (comma-separated or repeated; ``all``). A signal named by both is
        refused: which one was meant cannot be known."""
        kept, named = (set(SIGNALS), set()) if respect is None else _names(
            "--respect", respect, none=True
        )
        dropped, named_dropped = _names("--ignore", ignore, none=False)
        if both := named & named_dropped:
            raise ConfigError(
                "--ignore", f"{', '.join(sorted(both))} is also given to --respect: keep one"
            )
        return cls(respect=frozenset(kept - dropped))

    @property
    def ignored(self) -> tuple[str, ...]:
        """The signals not honoured, in :data:`SIGNALS` order."""
        return tuple(s for s in SIGNALS if s not in self.respect)

    @property
    def needs_origin(self) -> bool:
        """Whether an origin's files are fetched at all (robots.txt also carries
        ``Content-Signal`` and ``Content-Usage`` lines)."""
        return bool(self.respect & {"robots.txt", "tdmrep", "content-signal", "content-usage"})


def signal_name(text: str) -> str | None:
    """The signal a name means, in any of the forms the crawl prints it: ``robots.txt``,
    ``robots_txt`` (status, stats.json) or ``opted_out_robots_txt`` (an error class); case
    and ``-`` / ``_`` do not matter. None if it names none."""
    name = text.strip().lower().replace("_", "-")
    name = name.removeprefix("opted-out-")
    for signal in SIGNALS:
        if name == signal or name == signal.replace(".", "-"):
            return signal
    return None


def _names(option: str, values: Iterable[str], *, none: bool) -> tuple[set[str], set[str]]:
    """The signals an option's values mean, and those of them named one by one (not
    through ``all``)."""
    names: set[str] = set()
    named: set[str] = set()
    keywords = "all, none" if none else "all"
    for value in values:
        for piece in str(value).split(","):
            name = piece.strip().lower()
            if name == "all":
                names |= set(SIGNALS)
            elif not name or (none and name == "none"):
                continue
            elif (signal := signal_name(name)) is not None:
                names.add(signal)
                named.add(signal)
            else:
                hint = " (to honour every signal, leave --ignore out)" if name == "none" else ""
                raise ConfigError(
                    option,
                    f"unknown signal {name!r}; known: {', '.join(SIGNALS)}, {keywords}{hint}",
                )
    return names, named


# ------------------------------------------------------------------------ response headers


class _Headers(Protocol):
    def getall(self, key: str, default: list[str]) -> list[str]: ...


def x_robots_opt_out(values: Iterable[str], agent: str = AGENT) -> str | None:
    """The ``X-Robots-Tag`` rule that opts out, quoted, or None.

    Each header line is a comma-separated list of rules, optionally after ``<agent>:``,
    which scopes the rules that follow it (to the end of the line) to that agent; rules for
    another agent are ignored.
    """
    ours = agent.lower()
    for value in values:
        scope: str | None = None  # the agent the rules apply to, as written
        for part in value.split(","):
            rule = part.strip()
            head, colon, tail = rule.partition(":")
            name = head.strip()
            if colon and name.lower() not in _XRT_VALUED and _TOKEN.fullmatch(name):
                scope, rule = name, tail.strip()
            if scope is not None and scope.lower() != ours:
                continue
            if rule.lower() in _XRT_OPT_OUT:
                where = f"{scope}: " if scope else ""
                return f"X-Robots-Tag: {where}{rule}"  # quoted as the publisher wrote it
    return None


def _dictionary(values: Iterable[str]) -> dict[str, str]:
    """A structured-field style dictionary (``a=b, c=d;param``), keys lowercased, values
    unquoted and lowercased; a later key wins."""
    found: dict[str, str] = {}
    for value in values:
        for member in value.split(","):
            item = member.split(";", 1)[0].strip()
            key, eq, raw = item.partition("=")
            key = key.strip().lower()
            if key:
                found[key] = raw.strip().strip('"').lower() if eq else "?1"
    return found


def content_usage_opt_out(values: Iterable[str]) -> str | None:
    """The aipref ``Content-Usage`` preference that opts out, quoted, or None."""
    prefs = _dictionary(values)
    if "train-ai" in prefs:
        if prefs["train-ai"] == "n":
            return "Content-Usage: train-ai=n"
    elif prefs.get("tdm") == "n":
        return "Content-Usage: tdm=n"
    if prefs.get("train-genai") == "n":
        return "Content-Usage: train-genai=n"
    return None


def content_signal_opt_out(values: Iterable[str]) -> str | None:
    """The ``Content-Signal`` that opts out (``ai-train=no``), quoted, or None."""
    if _dictionary(values).get("ai-train") == "no":
        return "Content-Signal: ai-train=no"
    return None


def tdm_header_opt_out(values: Iterable[str]) -> str | None:
    """A TDMRep ``tdm-reservation: 1`` header, quoted, or None."""
    for value in values:
        if value.strip() == "1":
            return "tdm-reservation: 1"
    return None


def robots_group_lines(text: str, key: str, agent: str = AGENT) -> str | None:
    """The ``key:`` lines (``content-signal``, ``content-usage``) of the robots.txt group that
    applies to ``agent`` (the group naming it, else the ``*`` group), joined, or None.
    protego keeps no unknown lines, so the groups are read here the way RFC 9309 forms them:
    consecutive ``User-agent`` lines open a group, the lines after them belong to it."""
    ours, wanted = agent.lower(), key.lower()
    found: dict[str, list[str]] = {}
    named: set[str] = set()  # every agent a group names
    group: list[str] = []
    in_agents = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == "user-agent":
            group = [*group, value.lower()] if in_agents else [value.lower()]
            named.add(value.lower())
            in_agents = True
            continue
        in_agents = False
        if name == wanted:
            for member in group:
                found.setdefault(member, []).append(value)
    lines = found.get(ours) if ours in named else found.get("*")
    return ", ".join(lines) if lines else None


def header_opt_out(headers: _Headers, etiquette: Etiquette) -> tuple[str, str] | None:
    """``(signal, detail)`` of the first honoured header that opts the response out."""
    checks: tuple[tuple[str, str, Callable[[list[str]], str | None]], ...] = (
        ("x-robots-tag", "X-Robots-Tag", lambda v: x_robots_opt_out(v, etiquette.agent)),
        ("tdmrep", "tdm-reservation", tdm_header_opt_out),
        ("content-usage", "Content-Usage", content_usage_opt_out),
        ("content-signal", "Content-Signal", content_signal_opt_out),
    )
    for signal, header, check in checks:
        if signal in etiquette.respect:
            values = headers.getall(header, [])
            if values and (detail := check(values)) is not None:
                return signal, detail
    return None


# ------------------------------------------------------------------------ per-origin files


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A robots.txt-style path pattern: ``*`` any run of characters, a final ``$`` the end of
    the path, otherwise a prefix. Matched greedily piece by piece with ``str.find``: linear
    in the path, whatever the pattern (a regular expression of many ``*`` backtracks for
    seconds on a hostile file)."""

    pieces: tuple[str, ...]
    anchored: bool

    @classmethod
    def parse(cls, pattern: str) -> PathPattern:
        anchored = pattern.endswith("$")
        body = pattern[:-1] if anchored else pattern
        return cls(tuple(body.split("*")), anchored)

    def matches(self, path: str) -> bool:
        first, *rest = self.pieces
        if not path.startswith(first):
            return False
        if not rest:
            return not self.anchored or path == first
        at = len(first)
        for piece in rest[:-1]:
            found = path.find(piece, at)
            if found < 0:
                return False
            at = found + len(piece)
        last = rest[-1]
        if self.anchored:
            return path.endswith(last) and len(path) - len(last) >= at
        return path.find(last, at) >= 0


#: Rules of a tdmrep.json kept (the rest ignored): a hostile file cannot make every image
#: check thousands of them.
MAX_TDM_RULES: Final = 1000


@dataclass(frozen=True, slots=True)
class _TdmRule:
    location: str
    pattern: PathPattern
    reserved: bool
    policy: str | None


def tdmrep_rules(body: bytes) -> list[_TdmRule]:
    """The rules of a ``/.well-known/tdmrep.json`` (an array of ``{"location",
    "tdm-reservation", "tdm-policy"}``); anything malformed is skipped, a file that is not a
    JSON array has none."""
    try:
        data = json.loads(body.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):  # ("[[[[..." nests past the parser's recursion)
        return []
    rules: list[_TdmRule] = []
    for item in data if isinstance(data, list) else []:
        if len(rules) >= MAX_TDM_RULES:
            break
        if not isinstance(item, dict):
            continue
        location, reserved = item.get("location"), item.get("tdm-reservation")
        if not isinstance(location, str) or reserved not in (0, 1, "0", "1"):
            continue
        path = location if location.startswith("/") else "/" + location
        policy = item.get("tdm-policy")
        rules.append(
            _TdmRule(location, PathPattern.parse(path), str(reserved) == "1",
                     policy if isinstance(policy, str) else None)
        )  # fmt: skip
    return rules


@dataclass(slots=True)
class OriginPolicy:
    """What an origin's robots.txt and tdmrep.json say, until ``expires`` (monotonic)."""

    expires: float
    robots: Protego | None = None
    #: Why every URL is held back (robots.txt answered 5xx / 429), or None.
    unavailable: str | None = None
    tdm_rules: list[_TdmRule] = field(default_factory=list)
    #: Seconds between two requests to the host, from robots.txt (0: none asked).
    delay: float = 0.0
    #: ``(signal, detail)`` of robots.txt's own opt-out lines for our group
    #: (``Content-Signal``, ``Content-Usage``).
    robots_opt_outs: tuple[tuple[str, str], ...] = ()
    #: Bytes of the files it was read from (the cache's budget counts them).
    size: int = 0

    def refusal(self, url: URL, etiquette: Etiquette) -> tuple[str, str] | None:
        """``(error class, detail)`` if the origin's files exclude ``url``: an opt-out
        (``opted_out_<signal>``), or ``robots_unavailable`` while robots.txt answers 5xx."""
        if "robots.txt" in etiquette.respect:
            if self.unavailable is not None:
                return ErrorClass.ROBOTS_UNAVAILABLE, self.unavailable
            if self.robots is not None and not self.robots.can_fetch(str(url), etiquette.agent):
                return error_class("robots.txt"), (
                    f"robots.txt disallows {url.path_qs} for {etiquette.agent}"
                )
        for signal, detail in self.robots_opt_outs:
            if signal in etiquette.respect:
                return error_class(signal), f"robots.txt {detail}"
        if "tdmrep" in etiquette.respect:
            path = url.raw_path_qs
            for rule in self.tdm_rules:
                if rule.pattern.matches(path):
                    if rule.reserved:
                        policy = f" (policy {rule.policy})" if rule.policy else ""
                        return error_class("tdmrep"), (
                            f"tdmrep.json: tdm-reservation 1 for {rule.location}{policy}"
                        )
                    break  # the first rule that matches decides
        return None


#: Fetches one file of an origin: ``(status, body)``, or None when it could not be reached.
PolicyFetch = Callable[[URL], Awaitable[tuple[int, bytes] | None]]


#: What the cache of origins may hold, estimated from the files' sizes (protego keeps about
#: 32 bytes per byte of a long robots.txt): a few origins with 512 KiB files evict the rest.
MAX_CACHE_BYTES: Final = 128 * 1024 * 1024
_BYTES_PER_BYTE: Final = 32
_ORIGIN_OVERHEAD: Final = 2048


class OriginPolicies:
    """Each origin's robots.txt and tdmrep.json, fetched once (concurrent askers share the
    fetch), parsed in a thread, and kept for the etiquette's ``ttl`` in an LRU bounded by
    ``max_origins`` and by :data:`MAX_CACHE_BYTES`.

    A file that cannot be had when it is due again (unreachable, 5xx, 429) keeps the rules
    already known for ``retry_after`` more seconds (RFC 9309 section 2.4 allows a cached copy);
    an origin asked about for the first time gets what the module docstring says.
    """

    def __init__(
        self,
        etiquette: Etiquette,
        fetch: PolicyFetch,
        *,
        max_origins: int = MAX_ORIGINS,
        max_bytes: int = MAX_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.etiquette = etiquette
        self._fetch = fetch
        self._max = max_origins
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._known: collections.OrderedDict[str, OriginPolicy] = collections.OrderedDict()
        self._pending: dict[str, asyncio.Future[OriginPolicy]] = {}
        #: Files fetched, by kind (``robots.txt``, ``tdmrep.json``): the run's request count.
        self.fetched: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._known)

    async def policy(self, url: URL) -> OriginPolicy:
        """The policy of ``url``'s origin, fetched if not known (or expired)."""
        origin = str(url.origin())
        known = self._known.get(origin)
        if known is not None and known.expires > self._clock():
            self._known.move_to_end(origin)
            return known
        pending = self._pending.get(origin)
        if pending is None:
            pending = self._pending[origin] = asyncio.ensure_future(self._load(url.origin()))
            pending.add_done_callback(functools.partial(self._settled, origin))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this asker was cancelled
            # the shared load was (the downloader closing): nothing is known, nothing cached
            return OriginPolicy(expires=0.0)

    def _settled(self, origin: str, _done: asyncio.Future[OriginPolicy]) -> None:
        self._pending.pop(origin, None)

    def close(self) -> None:
        """Cancel the loads still under way (their askers get an empty policy)."""
        for pending in list(self._pending.values()):
            pending.cancel()

    async def _load(self, origin: URL) -> OriginPolicy:
        etiquette = self.etiquette
        robots_wanted = bool(etiquette.respect & {"robots.txt", "content-signal", "content-usage"})
        tdm_wanted = "tdmrep" in etiquette.respect
        robots_answer, tdm_answer = await asyncio.gather(
            self._get(origin / "robots.txt", "robots.txt") if robots_wanted else _none(),
            self._get(origin.with_path("/.well-known/tdmrep.json"), "tdmrep.json")
            if tdm_wanted else _none(),
        )  # fmt: skip
        key = str(origin)
        previous = self._known.get(key)
        now = self._clock()
        try:
            # protego and json on a 512 KiB file take up to a second: not on the event loop
            policy = await asyncio.to_thread(
                self._read, origin, robots_answer if robots_wanted else None,
                tdm_answer if tdm_wanted else None, previous, now,
            )  # fmt: skip
        except Exception as exc:  # a parser's bug must not stop a crawl
            log.warning("the robots.txt / tdmrep.json of %s could not be read: %s", origin, exc)
            policy = OriginPolicy(expires=now + etiquette.retry_after)
        if previous is not None:
            self._bytes -= previous.size
        self._known[key] = policy
        self._known.move_to_end(key)
        self._bytes += policy.size
        while len(self._known) > 1 and (
            len(self._known) > self._max or self._bytes > self._max_bytes
        ):
            _, evicted = self._known.popitem(last=False)
            self._bytes -= evicted.size
        return policy

    def _read(
        self,
        origin: URL,
        robots_answer: tuple[int, bytes] | None,
        tdm_answer: tuple[int, bytes] | None,
        previous: OriginPolicy | None,
        now: float,
    ) -> OriginPolicy:
        etiquette = self.etiquette
        policy = OriginPolicy(expires=now + etiquette.ttl)
        size = 0
        if "robots.txt" in etiquette.respect or robots_answer is not None:
            size += self._read_robots(policy, origin, robots_answer, previous, now)
        if "tdmrep" in etiquette.respect:
            if tdm_answer is None or tdm_answer[0] >= 500 or tdm_answer[0] == 429:
                # Not had now: the rules known, if any, for a while more; asked again soon.
                policy.tdm_rules = previous.tdm_rules if previous is not None else []
                policy.expires = min(policy.expires, now + etiquette.retry_after)
            elif 200 <= tdm_answer[0] < 300:
                policy.tdm_rules = tdmrep_rules(tdm_answer[1])
                size += len(tdm_answer[1])
        policy.size = _ORIGIN_OVERHEAD + _BYTES_PER_BYTE * size
        return policy

    def _read_robots(
        self,
        policy: OriginPolicy,
        origin: URL,
        answer: tuple[int, bytes] | None,
        previous: OriginPolicy | None,
        now: float,
    ) -> int:
        """Fill ``policy`` from a robots.txt answer; the bytes read."""
        etiquette = self.etiquette
        failed = answer is None or answer[0] >= 500 or answer[0] == 429
        if failed:
            policy.expires = min(policy.expires, now + etiquette.retry_after)
            if previous is not None and previous.robots is not None:
                # RFC 9309 2.4: the cached copy stands while the file cannot be had.
                policy.robots, policy.delay = previous.robots, previous.delay
                policy.robots_opt_outs = previous.robots_opt_outs
                return 0
        if answer is None:
            return 0  # unreachable: allowed (see the module docstring)
        status, body = answer
        if failed:
            policy.unavailable = (
                f"robots.txt answered HTTP {status}: {origin} is held back for now (RFC 9309)"
            )
            return 0
        if not 200 <= status < 300:
            return 0  # 4xx (and redirects that ran out): no rules
        text = body.decode("utf-8", errors="replace")
        opt_outs = []
        signal = robots_group_lines(text, "content-signal", etiquette.agent)
        if signal is not None and (detail := content_signal_opt_out([signal])) is not None:
            opt_outs.append(("content-signal", detail))
        usage = robots_group_lines(text, "content-usage", etiquette.agent)
        if usage is not None and (detail := content_usage_opt_out([usage])) is not None:
            opt_outs.append(("content-usage", detail))
        policy.robots_opt_outs = tuple(opt_outs)
        if "robots.txt" not in etiquette.respect:
            return len(body)  # fetched for its opt-out lines only
        policy.robots = Protego.parse(text)
        delays = [policy.robots.crawl_delay(etiquette.agent) or 0.0]
        rate = policy.robots.request_rate(etiquette.agent)
        if rate is not None and rate.requests > 0:
            delays.append(rate.seconds / rate.requests)
        policy.delay = min(max(delays), etiquette.max_delay)
        return len(body)

    async def _get(self, url: URL, kind: str) -> tuple[int, bytes] | None:
        self.fetched[kind] += 1
        try:
            return await self._fetch(url)
        except Exception as exc:  # a fetch's bug must not end the crawl: unreachable
            log.warning("%s could not be fetched: %s", url, exc)
            return None


async def _none() -> None:
    return None
