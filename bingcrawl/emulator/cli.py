"""``bingcrawl emulator`` / ``python -m bingcrawl.emulator``: flags -> EmulatorConfig -> server.

The lead's ``bingcrawl`` command and this package's ``__main__`` share these functions:
:func:`add_arguments` declares the flags, :func:`config_from_args` turns them into a
validated :class:`EmulatorConfig` (a :class:`~bingcrawl.errors.ConfigError` names the flag),
and :func:`run` serves until SIGINT or SIGTERM.

Durations (``--api-latency``, ``--image-latency``, ``--slow-seconds``,
``--image-retry-after``, ``--host-latency``, ``--host-latency-p99``) are seconds, with an
optional ``s`` or ``ms`` suffix: ``0.25``, ``0.25s`` and ``250ms`` are the same. ``--qps 0``
means no QPS limit.

``--network web`` makes the image host behave per ``Host`` name like the web
(:class:`~bingcrawl.emulator.network.NetworkProfile`, seeded by ``--seed``): each host its
own latency (lognormal, median ``--host-latency``, 1 % of hosts slower than
``--host-latency-p99``; ``--image-latency`` is then not used), 1 % of hosts hanging, 1 %
dripping their bodies, 3 % of the URLs failing. ``--image-size web`` gives pictures of
10 KB to 2 MB around a median of 100 KB to go with it.

On start, :func:`run` writes exactly one line to stdout, ``listening on http://HOST:PORT/``,
and flushes it, so a parent process can read the bound port (see
:func:`bingcrawl.emulator.server.start_emulator_process`); everything else goes to logging.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from bingcrawl.emulator.config import EmulatorConfig
from bingcrawl.emulator.corpus import FORMATS, CorpusConfig
from bingcrawl.emulator.imagehost import ImageHostConfig
from bingcrawl.emulator.network import NetworkProfile
from bingcrawl.emulator.server import LISTENING_PREFIX, EmulatorServer
from bingcrawl.errors import ConfigError
from bingcrawl.eventloop import EVENT_LOOPS

__all__ = [
    "NETWORKS",
    "add_arguments",
    "config_from_args",
    "parse_duration",
    "parse_format_mix",
    "run",
]

logger = logging.getLogger(__name__)

#: Config fields whose flag is not simply ``--field-name``.
_FLAG_OVERRIDES = {
    "latency": "--image-latency",
    "retry_after": "--image-retry-after",
    "keys": "--key",
    "disabled_keys": "--disabled-key",
    "cache_bytes": "--cache-mb",
    "latency_median": "--host-latency",
    "latency_p99": "--host-latency-p99",
    "drip_max": "--drip-max",
}

#: NetworkProfile field -> the dest and name of its duration flag (``--network web`` only).
_NETWORK_FLAGS = {
    "latency_median": ("host_latency", "--host-latency"),
    "latency_p99": ("host_latency_p99", "--host-latency-p99"),
    "drip_max": ("drip_max", "--drip-max"),
}

#: The choices of ``--network``: one host (``none``) or a web of hosts (``web``).
NETWORKS: tuple[str, ...] = ("none", "web")


def _flag(field: str) -> str:
    name = field.rsplit(".", 1)[-1].lstrip("-")
    return _FLAG_OVERRIDES.get(name, "--" + name.replace("_", "-"))


def parse_duration(text: str, flag: str = "duration") -> float:
    """Seconds from ``"1.5"``, ``"1.5s"`` or ``"1500ms"``; ConfigError naming ``flag``."""
    raw = text.strip().lower()
    scale = 1.0
    if raw.endswith("ms"):
        raw, scale = raw[:-2], 0.001
    elif raw.endswith("s"):
        raw = raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise ConfigError(flag, f"not a duration: {text!r} (e.g. 0.5, 0.5s, 500ms)") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(flag, f"must be a finite duration >= 0, got {text!r}")
    return value


def parse_format_mix(text: str) -> tuple[float, float, float, float]:
    """``"jpeg=0.9,png=0.1"`` -> weights in :data:`FORMATS` order; ConfigError naming the flag."""
    weights = dict.fromkeys(FORMATS, 0.0)
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if name not in weights:
            raise ConfigError(
                "--format-mix", f"unknown format {name!r} in {text!r}; known: {', '.join(FORMATS)}"
            )
        try:
            weights[name] = float(value) if sep else 1.0
        except ValueError:
            raise ConfigError("--format-mix", f"not a weight: {value!r} in {text!r}") from None
    jpeg, png, gif, webp = (weights[f] for f in FORMATS)
    return jpeg, png, gif, webp


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the emulator's flags on ``parser``."""
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=8000, help="port to bind; 0 = any free port")
    net.add_argument(
        "--image-base-url",
        help="origin written into contentUrl (default: the origin each request was sent to)",
    )
    net.add_argument(
        "--event-loop",
        default="auto",
        choices=EVENT_LOOPS,
        help="auto (default): uvloop when installed, else asyncio's own loop",
    )

    api = parser.add_argument_group("API behaviour")
    api.add_argument(
        "--key",
        action="append",
        metavar="KEY",
        help="accepted subscription key (repeatable; default: any non-empty key)",
    )
    api.add_argument(
        "--disabled-key",
        action="append",
        metavar="KEY",
        help="key answered 403 InsufficientAuthorization (repeatable)",
    )
    api.add_argument(
        "--qps",
        type=float,
        default=3.0,
        help="queries per second per key, sliding window (default 3; 0 = unlimited)",
    )
    api.add_argument(
        "--retry-after-format",
        choices=("seconds", "date"),
        default="seconds",
        help="how 429 Retry-After is written (default seconds)",
    )
    api.add_argument(
        "--monthly-quota",
        type=int,
        metavar="CALLS",
        help="billable calls per key before 403 RateLimitExceeded",
    )
    api.add_argument(
        "--api-latency",
        default="0",
        metavar="DURATION",
        help="delay of every API response (e.g. 0.05 or 50ms)",
    )
    api.add_argument(
        "--p-server-error",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a 500 ServerError",
    )
    api.add_argument(
        "--p-empty-200",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a 200 with an empty body (DoS throttling)",
    )
    api.add_argument(
        "--p-non-json-200",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a 200 with an HTML body",
    )
    api.add_argument(
        "--http-not-allowed", action="store_true", help="answer every API call 410 HttpNotAllowed"
    )
    api.add_argument(
        "--page-overlap",
        type=int,
        default=3,
        metavar="N",
        help="most results a page repeats from the previous one (default 3)",
    )
    api.add_argument(
        "--seed", type=int, default=0, help="seed of the corpus and of the fault draws (default 0)"
    )

    corpus = parser.add_argument_group("corpus")
    corpus.add_argument(
        "--results-per-query", type=int, default=1000, metavar="N", help="results each query has"
    )
    corpus.add_argument(
        "--image-size",
        default="30k",
        help="30k, 200k or 1m (about that many bytes a JPEG; default 30k), or web: each "
        "picture its own size, 10 KB to 2 MB, lognormal around a median of 100 KB",
    )
    corpus.add_argument(
        "--fault-rate",
        type=float,
        default=0.03,
        metavar="F",
        help="fraction of results with a faulty image URL (default 0.03)",
    )
    corpus.add_argument(
        "--fault-kinds",
        metavar="KIND,...",
        help="comma-separated fault kinds to mix in (default: all)",
    )
    corpus.add_argument(
        "--exact-dup-rate", type=float, default=0.05, metavar="F",
        help="share of results that are byte-identical copies of another",
    )  # fmt: skip
    corpus.add_argument(
        "--near-dup-rate", type=float, default=0.05, metavar="F",
        help="share of results that are edited copies (resized, re-encoded) of another",
    )  # fmt: skip
    corpus.add_argument(
        "--cross-query-rate", type=float, default=0.03, metavar="F",
        help="share of results that also appear under another query",
    )  # fmt: skip
    corpus.add_argument(
        "--format-mix",
        metavar="FMT=W,...",
        help="weights of the original pictures' formats, e.g. jpeg=1 (JPEG only) or "
        "jpeg=0.85,png=0.07,gif=0.04,webp=0.04 (the default); unnamed formats weigh 0",
    )
    corpus.add_argument(
        "--warm",
        action="append",
        default=[],
        metavar="QUERY",
        help="render this query's images before serving (repeatable; benchmarks use it so "
        "the emulator's own rendering does not limit what is measured)",
    )
    corpus.add_argument(
        "--warm-count", type=int, default=300, metavar="N", help="results warmed per --warm query"
    )
    corpus.add_argument(
        "--cache-mb",
        type=int,
        default=256,
        metavar="MB",
        help="bound of the rendered-image cache (default 256; warming 20,000 images of 30 kB "
        "needs ~650)",
    )

    images = parser.add_argument_group("image host")
    images.add_argument(
        "--image-latency",
        default="0",
        metavar="DURATION",
        help="delay before every image response (e.g. 0.02 or 20ms; not with --network web)",
    )
    images.add_argument(
        "--network",
        default="none",
        metavar="{none,web}",
        help="none (default): one host, --image-latency for every image; web: behave per Host "
        "name (many names may point here) like the web: each host its own latency "
        "(--host-latency, --host-latency-p99) instead of --image-latency, 1 %% of hosts never "
        "answer, 1 %% drip their bodies at 2 KB/s (for up to 120 s), 3 %% of the URLs fail "
        "(404, 403, 500, or a 503 to the first request only); seeded by --seed",
    )
    images.add_argument(
        "--host-latency",
        metavar="DURATION",
        help="with --network web: the median of the hosts' latencies (default 200ms)",
    )
    images.add_argument(
        "--host-latency-p99",
        metavar="DURATION",
        help="with --network web: the latency 1 %% of the hosts exceed (default 5s; the "
        "hosts' latencies are lognormal)",
    )
    images.add_argument(
        "--drip-max",
        metavar="DURATION",
        help="with --network web: how long a dripping host trickles a body before it sends "
        "the rest at once (default 120s; a real one may never stop)",
    )
    images.add_argument(
        "--slow-seconds",
        default="30",
        metavar="DURATION",
        help="how long slow_headers / slow_drip faults stall (default 30)",
    )
    images.add_argument(
        "--transient-failures",
        type=int,
        default=2,
        metavar="N",
        help="503s a transient_503 URL answers before the image (default 2)",
    )
    images.add_argument(
        "--oversize-bytes",
        type=int,
        default=25 * 1024 * 1024,
        metavar="N",
        help="body size of the oversize faults (default 25 MiB)",
    )
    images.add_argument(
        "--image-retry-after",
        default="1",
        metavar="DURATION",
        help="Retry-After of the transient_503 fault and of --network web's 503s (default 1)",
    )
    images.add_argument(
        "--robots-txt",
        type=Path,
        metavar="FILE",
        help="serve this file as /robots.txt (default: 404, no rules)",
    )
    images.add_argument(
        "--robots-status",
        type=int,
        default=200,
        metavar="STATUS",
        help="HTTP status of /robots.txt (e.g. 503: an origin that cannot say)",
    )
    images.add_argument(
        "--tdmrep-json",
        type=Path,
        metavar="FILE",
        help="serve this file as /.well-known/tdmrep.json (default: 404)",
    )
    images.add_argument(
        "--image-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="send this header with every image, e.g. 'X-Robots-Tag: noai' (repeatable); an "
        "image URL's query can ask for one of X-Robots-Tag, tdm-reservation, tdm-policy, "
        "Content-Usage, Content-Signal too, URL-encoded: /img/KEY?content-usage=train-ai%%3Dn",
    )


def _read_text(path: Path | None, flag: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(flag, f"cannot read {path}: {exc}") from None


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or any(c in text for c in "\r\n"):
        raise ConfigError("--image-header", f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _network(args: argparse.Namespace) -> NetworkProfile | None:
    """The network profile of ``--network`` and its latency flags (None for ``none``)."""
    choice = str(getattr(args, "network", None) or "none").strip().lower()
    if choice not in NETWORKS:
        raise ConfigError("--network", f"must be one of {', '.join(NETWORKS)}, got {choice!r}")
    given = {
        name: (flag, text)
        for name, (dest, flag) in _NETWORK_FLAGS.items()
        if (text := getattr(args, dest, None)) is not None
    }
    if choice == "none":
        for flag, _ in given.values():
            raise ConfigError(flag, "applies only with --network web")
        return None
    durations: dict[str, Any] = {
        name: parse_duration(text, flag) for name, (flag, text) in given.items()
    }
    return NetworkProfile(seed=args.seed, **durations)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Build the validated configuration; a bad value raises ConfigError naming its flag."""
    try:
        corpus_kw: dict[str, Any] = {
            "seed": args.seed,
            "results_per_query": args.results_per_query,
            "image_size": args.image_size,
            "fault_rate": args.fault_rate,
            "exact_dup_rate": args.exact_dup_rate,
            "near_dup_rate": args.near_dup_rate,
            "cross_query_rate": args.cross_query_rate,
            "cache_bytes": args.cache_mb * 2**20,
        }
        if args.format_mix is not None:
            corpus_kw["format_mix"] = parse_format_mix(args.format_mix)
        if args.fault_kinds is not None:
            kinds = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
            corpus_kw["fault_kinds"] = kinds
        images = ImageHostConfig(
            latency=parse_duration(args.image_latency, "--image-latency"),
            slow_seconds=parse_duration(args.slow_seconds, "--slow-seconds"),
            oversize_bytes=args.oversize_bytes,
            transient_failures=args.transient_failures,
            retry_after=parse_duration(args.image_retry_after, "--image-retry-after"),
            robots_txt=_read_text(args.robots_txt, "--robots-txt"),
            robots_status=args.robots_status,
            tdmrep_json=_read_text(args.tdmrep_json, "--tdmrep-json"),
            headers=tuple(_header(h) for h in args.image_header),
            network=_network(args),
        )
        return EmulatorConfig(
            corpus=CorpusConfig(**corpus_kw),
            images=images,
            keys=frozenset(args.key) if args.key else None,
            disabled_keys=frozenset(args.disabled_key or ()),
            qps=args.qps if args.qps else None,
            retry_after_format=args.retry_after_format,
            monthly_quota=args.monthly_quota,
            api_latency=parse_duration(args.api_latency, "--api-latency"),
            p_server_error=args.p_server_error,
            p_empty_200=args.p_empty_200,
            p_non_json_200=args.p_non_json_200,
            http_not_allowed=args.http_not_allowed,
            seed=args.seed,
            image_base_url=args.image_base_url,
            page_overlap=args.page_overlap,
        )
    except ConfigError as exc:
        if exc.option.startswith("--"):
            raise
        message = str(exc).split(": ", 1)[-1]
        raise ConfigError(_flag(exc.option), message) from exc


async def run(args: argparse.Namespace) -> int:
    """Serve the emulator until SIGINT or SIGTERM; return 0 after a clean stop.

    Raises ConfigError (before binding) for a bad flag and OSError if the address is taken.
    """
    config = config_from_args(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with EmulatorServer(config, host=args.host, port=args.port) as server:
            for query in args.warm:
                results = server.corpus.query_results(query)[: args.warm_count]
                await asyncio.to_thread(server.corpus.warm, results)
            sys.stdout.write(f"{LISTENING_PREFIX}{server.base_url}\n")
            sys.stdout.flush()
            logger.info("Bing v7 emulator serving at %s (Ctrl-C to stop)", server.base_url)
            await stop.wait()
            logger.info("stopping; %d API requests served", len(server.state.log))
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 0
