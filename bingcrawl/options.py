"""Every crawl option, defined once, and the one way to turn options into a CrawlConfig.

:func:`add_crawl_options` declares each option (flag, type, default, help) on an argparse
parser: the ``bingcrawl crawl`` command line, the ``BINGCRAWL_<OPTION>`` environment
(:mod:`bingcrawl.obs.envconfig`) and the keyword arguments of :func:`bingcrawl.crawl` are all
derived from those declarations. :func:`build_config` validates them all (filters, markets,
files, ranges) and builds the :class:`~bingcrawl.config.CrawlConfig`, raising
:class:`~bingcrawl.errors.ConfigError` naming the option before any request, whichever way the
options came in. :func:`options_namespace` turns ``crawl()``'s keywords into the same namespace
the command line parses.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import cast

from bingcrawl.config import (
    ENGINES,
    FILTER_FLAGS,
    PARAM_TO_FLAG,
    RESULT_OPTIONS,
    CrawlConfig,
    QuerySpec,
    provider_filters,
)
from bingcrawl.errors import ConfigError, InvalidParameterError
from bingcrawl.records import CONVERT_TO, NEAR_DUP_METHODS, OUTPUT_FORMATS, PROVIDERS

__all__ = [
    "ENDPOINT_ENV",
    "FILTER_FLAGS",
    "KEY_ENV",
    "add_crawl_options",
    "build_config",
    "crawl_parser",
    "option_names",
    "options_namespace",
    "options_reference",
]

KEY_ENV = "BING_SEARCH_V7_SUBSCRIPTION_KEY"
ENDPOINT_ENV = "BING_SEARCH_V7_ENDPOINT"




def _filter_help(param: str) -> str:
    """The help of one filter flag: the API parameter and the values it accepts."""
    from bingcrawl.bing import params as bp

    listed: dict[str, str] = {
        "license": ", ".join(bp.LICENSES),
        "imageType": ", ".join(bp.IMAGE_TYPES),
        "safeSearch": ", ".join(bp.SAFE_SEARCH),
        "mkt": f"a market such as en-US, de-DE, ja-JP ({len(bp.MARKETS)} in the reference)",
        "cc": "a two-letter country code such as US, GB, DE",
        "setLang": "a two-letter language code such as en, de, ja",
        "Accept-Language": "an Accept-Language header value, e.g. 'en-GB,en;q=0.8'",
        "size": ", ".join(bp.SIZES),
        "aspect": ", ".join(bp.ASPECTS),
        "color": ", ".join(bp.COLORS),
        "freshness": ", ".join(bp.FRESHNESS) + " or a YYYY-MM-DD..YYYY-MM-DD range",
        "imageContent": ", ".join(bp.IMAGE_CONTENTS),
        "width": "exact width in pixels",
        "height": "exact height in pixels",
        "minWidth": "pixels",
        "maxWidth": "pixels",
        "minHeight": "pixels",
        "maxHeight": "pixels",
        "minFileSize": f"bytes, at most {bp.MAX_FILE_SIZE}",
        "maxFileSize": f"bytes, at most {bp.MAX_FILE_SIZE}",
    }
    if param in ("license_type", "category"):
        from bingcrawl.providers.openverse import OPTION_PARAMS

        accepted = ", ".join(OPTION_PARAMS[f"--{param.replace('_', '-')}"][1])
        return f"provider openverse only: the `{param}` parameter: {accepted} (comma-separated)"
    return f"the `{param}` parameter: {listed[param]} (case-insensitive)"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def add_crawl_options(p: argparse.ArgumentParser) -> None:
    from bingcrawl.fetch.etiquette import AGENT, SIGNALS
    from bingcrawl.fetch.identity import PROJECT_URL

    p.add_argument(
        "queries", nargs="*", metavar="QUERY", help="search queries (label: the query's slug)"
    )
    p.add_argument("--queries-file", type=Path, help="file of `query` or `label<TAB>query` lines")
    p.add_argument("--out", type=Path, required=True, help="output directory (re-run to resume)")
    p.add_argument(
        "--label",
        help="label (directory) of the queries given on the command line, of --seed-images "
        "and of --urls lists without a label column",
    )
    api = p.add_argument_group("API")
    api.add_argument(
        "--key",
        help=f"the provider's key: Bing's subscription key (or ${KEY_ENV}), Brave's token (or "
        "$BRAVE_SEARCH_API_KEY), SerpApi's (or $SERPAPI_API_KEY); or --key-file",
    )
    api.add_argument("--key-file", type=Path, help="file holding the subscription key")
    api.add_argument(
        "--provider",
        default="bing",
        choices=list(PROVIDERS),
        help="the search service: bing (a key; the default), openverse (openly licensed "
        "images, no key; $OPENVERSE_CLIENT_ID and $OPENVERSE_CLIENT_SECRET raise its limits) "
        "wikimedia (Wikimedia Commons, no key), brave (Brave Search, a key: --key or "
        "$BRAVE_SEARCH_API_KEY) or serpapi (Bing or Google Images through SerpApi, a key: "
        "--key or $SERPAPI_API_KEY)",
    )
    api.add_argument(
        "--serpapi-engine",
        default="bing_images",
        choices=["bing_images", "google_images"],
        help="with --provider serpapi: bing_images (Bing's filters kept) or google_images",
    )
    api.add_argument(
        "--endpoint",
        help=f"the provider's API base URL (default: its public one; Bing also reads "
        f"${ENDPOINT_ENV})",
    )
    api.add_argument(
        "--qps",
        type=float,
        default=None,
        help="API requests per second, never exceeded in any second (a fraction above 1 "
        "rounds down); default: the provider's (bing 3, openverse 0.3: 20 calls a minute is "
        "its anonymous limit, wikimedia 1, brave 1: its free plan, serpapi 1)",
    )
    api.add_argument("--count", type=int, default=150, help="results per page, at most 150")
    api.add_argument(
        "--limit",
        type=int,
        help="images kept per query (default 100; a --urls list is fetched whole unless given)",
    )
    api.add_argument(
        "--max-active-queries",
        type=int,
        default=8,
        help="queries paged at the same time (their pages share one --qps)",
    )
    api.add_argument(
        "--max-api-calls",
        type=int,
        help="API call budget, counted across resumes (default: no budget)",
    )
    api.add_argument(
        "--api-retries",
        type=int,
        default=6,
        help="retries of an API call that failed (5xx, connection); throttling (429) is "
        "waited out without limit",
    )
    add_source_options(p)
    filters = p.add_argument_group("Bing filters (validated before any request)")
    for flag, param in FILTER_FLAGS.items():
        filters.add_argument(
            flag,
            dest=f"filter_{param}",
            metavar=param.upper().replace("-", "_"),
            help=_filter_help(param),
        )
    dl = p.add_argument_group("downloads")
    dl.add_argument(
        "--concurrency",
        type=int,
        default=256,
        help="downloads at the same time, over all hosts (--per-host caps each host)",
    )
    dl.add_argument(
        "--per-host", type=int, default=8, help="downloads at the same time from one host"
    )
    dl.add_argument(
        "--host-rate",
        "--per-host-rate",
        dest="host_rate",
        type=float,
        default=0.0,
        metavar="R",
        help="requests per second to one host at most, evenly spaced (redirects and retries "
        "count; e.g. 1 for one a second; 0, the default: only --per-host limits a host); a "
        "host's robots.txt Crawl-delay or Request-rate can only slow it further",
    )
    dl.add_argument(
        "--max-bytes",
        type=int,
        default=20 * 1024 * 1024,
        help="largest image accepted, in bytes (larger ones fail as too_large)",
    )
    dl.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="total seconds to download one image, all its attempts together (the waits "
        "for the host's turn and between attempts excluded): no URL holds the crawl longer",
    )
    dl.add_argument("--retries", type=int, default=3, help="download retries")
    dl.add_argument(
        "--host-failures",
        type=int,
        default=2,
        metavar="N",
        help="give a host up for 10 minutes after N requests in a row got no answer "
        "(timeouts, refused connections): its other URLs fail at once as host_unresponsive "
        "instead of each waiting out --timeout (default 2; 0: never)",
    )
    dl.add_argument(
        "--allow-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="also allow fetching from this network (repeatable), e.g. 127.0.0.1/32",
    )
    dl.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:ADDRESS",
        help="connect to ADDRESS for HOST without asking DNS, like curl's --resolve "
        "(repeatable; *.example.org for every name under example.org); the address must "
        "still be allowed (--allow-network for private ones)",
    )
    etq = p.add_argument_group(
        "etiquette (publishers' opt-outs, all honoured by default; turning one off is your "
        "responsibility)"
    )
    etq.add_argument(
        "--respect",
        action="append",
        metavar="SIGNALS",
        help="honour only these signals (comma-separated or repeated; all, none): "
        f"{', '.join(SIGNALS)} (default: all)",
    )
    etq.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="SIGNAL",
        help="do not honour this signal (repeatable; all)",
    )
    etq.add_argument(
        "--contact",
        metavar="URL_OR_EMAIL",
        help="how image hosts can reach you, sent in the User-Agent: "
        f"bingcrawl/<version> (+CONTACT); default {PROJECT_URL}, with a warning when "
        "crawling real hosts",
    )
    etq.add_argument(
        "--user-agent",
        metavar="STRING",
        help="the whole User-Agent of image downloads instead of bingcrawl's (robots.txt "
        f"and X-Robots-Tag are still matched as {AGENT!r})",
    )
    hs = p.add_argument_group("hashing and dedup")
    hs.add_argument(
        "--hash",
        dest="hash_algo",
        default="phash",
        choices=["phash", "dhash", "ahash", "whash"],
        help="perceptual hash of the near-duplicate check",
    )
    hs.add_argument(
        "--hash-workers", type=int, help="hash processes (default: CPU count; 0 = a thread)"
    )
    hs.add_argument(
        "--near-dup-distance",
        type=int,
        help="Hamming distance for near duplicates (0 = exact only; default 6)",
    )
    hs.add_argument(
        "--near-dup-method",
        choices=list(NEAR_DUP_METHODS),
        help="regions: hash the picture without flat borders and its centre, each hit "
        "confirmed by the other (catches logos, captions, letterboxing); whole: one hash "
        "of the whole picture (older crawls). Default: the resumed crawl's, else regions",
    )
    hs.add_argument("--max-pixels", type=int, default=64_000_000, help="decompression-bomb limit")
    out = p.add_argument_group("output")
    add_layout_options(out)
    out.add_argument("--shard-size", type=int, default=10_000, help="images per shard")
    out.add_argument(
        "--shard-by",
        default="label",
        choices=["label", "all"],
        help="one shard series per label (default) or one for all",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--engine",
        choices=list(ENGINES),
        help="where downloads and hashing run: local (this process, the default) or ray "
        "(workers across a Ray cluster, one QPS limit and one dedup; pip install "
        "'bingcrawl[ray]')",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --engine ray: the cluster to join (auto: the one running on this node, "
        "or HOST:PORT of its head); default: $RAY_ADDRESS, else start Ray on this machine",
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --engine ray: download/hash workers (default: one per pair of the "
        "cluster's CPUs); --concurrency and --per-host apply to each worker",
    )
    run.add_argument("--durable", action="store_true", help="fsync files and the checkpoint")
    run.add_argument(
        "--min-free",
        type=int,
        metavar="BYTES",
        help="bytes to keep free on the output's filesystem: below it the crawl stops as on a "
        "full disk (exit 5, resumable) (default: 1 GiB or 1 %% of the filesystem, the "
        "smaller; 0: no floor)",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="start over: the previous run's files are moved to OUT/replaced-<time>/",
    )
    run.add_argument(
        "--grace", type=float, default=5.0, help="seconds in-flight downloads get after a signal"
    )
    run.add_argument("--no-progress", action="store_true", help="no live display")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics and /healthz here")
    run.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics server")
    run.add_argument(
        "--stall-after",
        type=float,
        default=600.0,
        help="/healthz answers 503 after this many seconds without progress",
    )


def add_layout_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """How the dataset is laid out (crawl and demo)."""
    p.add_argument(
        "--output-format",
        default="files",
        choices=list(OUTPUT_FORMATS),
        help="files: images/<label>/<sha>.<ext>; webdataset: tar shards in shards/",
    )
    p.add_argument(
        "--convert-to",
        default="keep",
        choices=list(CONVERT_TO),
        help="store every image in one format (re-encoded in the hash workers; images already "
        "in it are kept byte for byte): jpg for torchvision ImageFolder and webdataset "
        "to_tuple('jpg', ...), png to keep transparency; keep: as downloaded",
    )


def add_source_options(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("sources beyond search (each API call counts against the budget)")
    src.add_argument(
        "--expand",
        type=int,
        default=0,
        metavar="DEPTH",
        help="also search query expansions, pivots and similar terms, DEPTH levels deep",
    )
    src.add_argument(
        "--max-queries", type=int, metavar="N", help="with --expand: at most N search queries"
    )
    src.add_argument(
        "--similar",
        type=int,
        default=0,
        metavar="N",
        help="queue up to N visually similar images of every stored image (/images/details)",
    )
    src.add_argument(
        "--seed-images",
        type=Path,
        metavar="DIR",
        help="visual search from every image under DIR (copies of the seeds are not stored)",
    )
    src.add_argument(
        "--crop",
        metavar="TOP,LEFT,BOTTOM,RIGHT",
        help="with --seed-images: search by this region (fractions 0-1 of height / width)",
    )
    src.add_argument(
        "--trending", action="store_true", help="today's trending images, labelled by category"
    )
    src.add_argument(
        "--urls",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="URL list (.txt .csv .tsv .jsonl .parquet) fetched without any API call (repeatable)",
    )
    src.add_argument("--url-col", default="url", help="URL-list column of the URL (default url)")
    src.add_argument(
        "--caption-col", default="caption", help="URL-list column of the caption (default caption)"
    )
    src.add_argument(
        "--label-col", default="label", help="URL-list column of the label (default label)"
    )


def _crop(text: object) -> tuple[float, float, float, float] | None:
    """``--crop TOP,LEFT,BOTTOM,RIGHT`` (or, from Python, a 4-tuple of fractions)."""
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else text
    try:
        top, left, bottom, right = (float(part) for part in parts)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ConfigError(
            "--crop", f"{text!r}: give four fractions TOP,LEFT,BOTTOM,RIGHT, e.g. 0,0,0.5,0.5"
        ) from None
    return top, left, bottom, right


def _check_sources(args: argparse.Namespace, has_queries: bool, filters: Mapping[str, str]) -> None:
    """Checks of the source options that need the file system or the API's market lists."""
    import importlib.util

    from bingcrawl.bing.params import TrendingParams
    from bingcrawl.urllist import url_format

    if args.seed_images is not None and not args.seed_images.is_dir():
        raise ConfigError("--seed-images", f"{args.seed_images} is not a directory")
    for path in args.urls:
        if not path.is_file():
            raise ConfigError("--urls", f"{path} is not a readable file")
        if url_format(path) == "parquet" and importlib.util.find_spec("pyarrow") is None:
            raise ConfigError("--urls", f"{path}: reading parquet needs pyarrow")
    if args.expand and not (has_queries or args.trending):
        raise ConfigError("--expand", "needs queries (or --trending) to expand")
    if args.trending:
        locale = {"mkt": "mkt", "cc": "cc", "setLang": "set_lang", "safeSearch": "safe_search"}
        try:
            TrendingParams(**{attr: filters[k] for k, attr in locale.items() if k in filters})
        except InvalidParameterError as exc:
            flag = PARAM_TO_FLAG.get(exc.parameter.casefold(), exc.parameter)
            raise ConfigError(
                flag, f"{exc.value!r} is not a trending market; accepted: {exc.accepted}"
            ) from None


#: ``--qps`` when none is given, by provider: Bing's S1 tier allows 3 calls a second;
#: Openverse allows an anonymous client 20 a minute (and 200 a day).
DEFAULT_QPS: dict[str, float] = {
    "bing": 3.0,
    "openverse": 0.3,
    "wikimedia": 1.0,
    "brave": 1.0,
    "serpapi": 1.0,
}


def _default_endpoint(provider: str, env: Mapping[str, str]) -> str:
    if provider == "openverse":
        from bingcrawl.providers.openverse import DEFAULT_ENDPOINT as OPENVERSE

        return OPENVERSE
    if provider == "wikimedia":
        from bingcrawl.providers.wikimedia import DEFAULT_ENDPOINT as WIKIMEDIA

        return WIKIMEDIA
    if provider == "brave":
        from bingcrawl.providers.brave import DEFAULT_ENDPOINT as BRAVE

        return BRAVE
    if provider == "serpapi":
        from bingcrawl.providers.serpapi import DEFAULT_ENDPOINT as SERPAPI

        return SERPAPI
    from bingcrawl.config import DEFAULT_ENDPOINT

    return env.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT


#: Where each provider that needs a key finds it when no --key or --key-file is given.
KEY_ENVS: dict[str, str] = {
    "bing": KEY_ENV,
    "brave": "BRAVE_SEARCH_API_KEY",
    "serpapi": "SERPAPI_API_KEY",
}


def _user_agent(whole: str | None, contact: str | None) -> str:
    """``--user-agent`` as given, else bingcrawl's own with ``--contact``."""
    from bingcrawl.fetch.identity import user_agent

    if whole is not None:
        return whole  # DownloadConfig checks it
    if contact is None:
        return user_agent(None)
    text = contact.strip()
    url = text.lower().startswith(("http://", "https://")) and "." in text.split("//", 1)[1]
    mail = re.fullmatch(r"(mailto:)?[^@\s]+@[^@\s]+\.[^@\s]+", text) is not None
    if not (url or mail) or any(c in text for c in "()\r\n\0 "):
        raise ConfigError(
            "--contact",
            f"give a URL (https://...) or an e-mail address where a host's operator can "
            f"reach you, got {contact!r}",
        )
    return user_agent(text)


def _read_key(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    if args.key:
        return str(args.key)
    if args.key_file:
        try:
            return args.key_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(
                "--key-file", f"cannot read {args.key_file}: {exc.strerror}"
            ) from None
    variable = KEY_ENVS.get(args.provider)
    return (env.get(variable) or None) if variable else None


def build_config(
    args: argparse.Namespace,
    env: Mapping[str, str],
    *,
    specs: Iterable[QuerySpec] = (),
    progress: bool | None = None,
) -> CrawlConfig:
    """Resolve options and environment into a validated CrawlConfig (raises ConfigError).

    ``args`` holds every crawl option by its dest (the command line's namespace, or
    :func:`options_namespace`); ``env`` supplies the key and endpoint when no option does.
    ``specs`` are queries with labels of their own (the Python API); ``progress`` overrides
    the live display (default: on when stderr is a terminal and ``--no-progress`` is not set).
    The output directory is proved creatable and writable last, once everything else is
    valid; nothing is created (the crawl makes the directory when it opens).
    """
    from bingcrawl.config import (
        DEFAULT_NEAR_DUP_DISTANCE,
        check_out_dir,
        parse_queries_file,
        safe_label,
    )
    from bingcrawl.fetch.download import DownloadConfig
    from bingcrawl.fetch.etiquette import Etiquette
    from bingcrawl.fetch.netpolicy import NetworkPolicy, parse_resolve

    specs = [*specs, *(QuerySpec.of(q, args.label) for q in args.queries)]
    if args.queries_file:
        try:
            with args.queries_file.open(encoding="utf-8") as fh:
                specs += parse_queries_file(fh)
        except OSError as exc:
            raise ConfigError(
                "--queries-file", f"cannot read {args.queries_file}: {exc.strerror}"
            ) from None
    if not (specs or args.trending or args.seed_images or args.urls):
        raise ConfigError(
            "QUERY",
            "give at least one query, --queries-file, --trending, --seed-images or --urls",
        )
    options = {flag: getattr(args, f"filter_{param}") for flag, param in FILTER_FLAGS.items()}
    canonical = dict(
        provider_filters(
            args.provider, options, count=args.count, serpapi_engine=args.serpapi_engine
        )
    )
    download = DownloadConfig(
        concurrency=args.concurrency,
        per_host=args.per_host,
        host_rate=args.host_rate,
        max_bytes=args.max_bytes,
        timeout=args.timeout,
        retries=args.retries,
        host_failures=args.host_failures,
        policy=NetworkPolicy.from_cidrs(args.allow_network),
        user_agent=_user_agent(args.user_agent, args.contact),
        etiquette=Etiquette.from_options(args.respect, args.ignore),
        resolve=parse_resolve(args.resolve),
    )
    _check_sources(args, bool(specs), canonical)
    key = _read_key(args, env)
    # Only a URL list needs no API (unless --similar asks about its images); Openverse
    # needs no key.
    needs_api = bool(specs or args.trending or args.seed_images or args.similar)
    if not key and needs_api and args.provider in KEY_ENVS:
        raise ConfigError(
            "--key",
            f"a key is needed to search {args.provider} (--key, --key-file or "
            f"${KEY_ENVS[args.provider]}); without one, search openly licensed images with "
            "--provider openverse or wikimedia, or try `bingcrawl demo`",
        )
    config = CrawlConfig(
        out=args.out,
        queries=tuple(specs),
        key=key,
        endpoint=args.endpoint or _default_endpoint(args.provider, env),
        provider=args.provider,
        serpapi_engine=args.serpapi_engine,
        client_id=env.get("OPENVERSE_CLIENT_ID") or None if args.provider == "openverse" else None,
        client_secret=(
            env.get("OPENVERSE_CLIENT_SECRET") or None if args.provider == "openverse" else None
        ),
        filters=tuple(canonical.items()),
        limit=100 if args.limit is None else args.limit,
        url_limit=args.limit,
        label=safe_label(args.label, lower=False) if args.label else None,
        expand_depth=args.expand,
        max_queries=args.max_queries,
        similar=args.similar,
        seed_images=args.seed_images,
        crop=_crop(args.crop),
        trending=args.trending,
        urls_files=tuple(args.urls),
        url_columns=(args.url_col, args.caption_col, args.label_col),
        count=args.count,
        qps=DEFAULT_QPS[args.provider] if args.qps is None else args.qps,
        max_active_queries=args.max_active_queries,
        max_api_calls=args.max_api_calls,
        api_retries=args.api_retries,
        download=download,
        hash_algo=args.hash_algo,
        hash_workers=args.hash_workers,
        near_dup_method=args.near_dup_method,
        min_free=args.min_free,
        near_dup_distance=(
            DEFAULT_NEAR_DUP_DISTANCE if args.near_dup_distance is None else args.near_dup_distance
        ),
        max_pixels=args.max_pixels,
        durable=args.durable,
        fresh=args.fresh,
        progress=(not args.no_progress and sys.stderr.isatty()) if progress is None else progress,
        grace=args.grace,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        stall_after=args.stall_after,
        crash_at=env.get("BINGCRAWL_CRASH_AT") or None,
        output_format=args.output_format,
        convert_to=args.convert_to,
        shard_size=args.shard_size,
        shard_by=args.shard_by,
        engine=args.engine or "local",
        ray_address=args.ray_address,
        workers=args.workers,
    )
    check_out_dir(config.out)  # last, and creates nothing: the crawl makes the directory
    return config



def crawl_parser() -> argparse.ArgumentParser:
    """A parser holding only the crawl options (for their names, types and defaults)."""
    parser = argparse.ArgumentParser(prog="bingcrawl crawl", add_help=False, exit_on_error=False)
    add_crawl_options(parser)
    return parser


def option_names(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Keyword name -> action: a flag's long names with underscores (``--per-host`` ->
    ``per_host``, ``--license`` -> ``license``; an alias too: ``--per-host-rate`` and
    ``--host-rate``); positionals by their dest (``queries``)."""
    names: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.option_strings:
            for flag in sorted(action.option_strings, key=len, reverse=True):
                if flag.startswith("--"):
                    names[flag.lstrip("-").replace("-", "_")] = action
        elif action.dest != argparse.SUPPRESS:
            names[action.dest] = action
    return names


def _coerce(name: str, action: argparse.Action, value: object) -> object:
    """A Python value for an option, converted the way the command line converts text."""
    if value is None:
        return None
    flag = max(action.option_strings, key=len) if action.option_strings else name
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(flag, f"must be True or False, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str | Path) else list(value)  # type: ignore[call-overload]
        return [_convert(flag, action, item) for item in items]
    return _convert(flag, action, value)


def _convert(flag: str, action: argparse.Action, value: object) -> object:
    kind = action.type
    if kind is None or not callable(kind):
        converted: object = str(value) if isinstance(value, Path) else value
    elif kind is Path:
        converted = Path(value)  # type: ignore[arg-type]
    elif isinstance(value, bool) or not isinstance(value, str | int | float | Path):
        raise ConfigError(flag, f"expected a {getattr(kind, '__name__', 'value')}, got {value!r}")
    else:
        try:
            converted = cast(Callable[[object], object], kind)(value)
        except (TypeError, ValueError):
            raise ConfigError(flag, f"invalid value {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(flag, f"invalid choice {converted!r}; choose from {choices}")
    return converted


def options_namespace(
    queries: Iterable[str | QuerySpec], out: str | Path, options: Mapping[str, object]
) -> tuple[argparse.Namespace, list[QuerySpec]]:
    """The namespace ``bingcrawl crawl`` would parse for these keyword options, and the
    queries given as :class:`QuerySpec` (labels of their own). Unknown options raise
    :class:`ConfigError` with the closest known names."""
    parser = crawl_parser()
    names = option_names(parser)
    values = {a.dest: a.default for a in parser._actions if a.dest != argparse.SUPPRESS}
    values["out"] = Path(out)
    for name, value in options.items():
        action = names.get(name)
        if action is None or name in ("out", "queries"):
            close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(name, f"unknown crawl option{hint}")
        values[action.dest] = _coerce(name, action, value)
    specs: list[QuerySpec] = []
    texts: list[str] = []
    if isinstance(queries, str):
        queries = [queries]
    for query in queries:
        if isinstance(query, QuerySpec):
            specs.append(query)
        elif isinstance(query, str):
            texts.append(query)
        else:
            raise ConfigError("queries", f"a query is a str or a QuerySpec, got {query!r}")
    values["queries"] = texts
    return argparse.Namespace(**values), specs


def options_reference() -> str:
    """The crawl options as a Markdown reference (``docs/options.md``), derived from the
    declarations: flag, Python keyword, ``BINGCRAWL_*`` variable, default, whether a
    resumed run must keep it (:data:`~bingcrawl.config.RESULT_OPTIONS`), and the help.

    Regenerate with ``python -m bingcrawl.options > docs/options.md``; a test keeps the file
    equal to this output.
    """
    from bingcrawl.obs.envconfig import env_name

    parser = crawl_parser()
    resume = {flag for flags, _ in RESULT_OPTIONS.values() for flag in flags}
    lines = [
        "# Crawl options",
        "",
        "Generated from `bingcrawl/options.py` by `python -m bingcrawl.options`; do not edit.",
        "Every option is a `bingcrawl crawl` flag, a keyword of `bingcrawl.crawl()` /",
        "`make_config()` / `stream()`, and a `BINGCRAWL_*` variable (flags win over variables,",
        "variables over defaults; the key is read from `--key`, `--key-file` or",
        f"`{KEY_ENV}` instead). **Resume: must match** marks the options that change the",
        "result set: a re-run with another value is refused unless `--fresh` starts over.",
        "",
        "| flag | Python | variable | default | resume | meaning |",
        "|---|---|---|---|---|---|",
    ]
    names = {id(action): name for name, action in option_names(parser).items()}
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        flag = max(action.option_strings, key=len)
        var = env_name(action) if flag != "--key" else None
        default = action.default
        shown = "" if default in (None, [], False) else f"`{default}`"
        text = " ".join((action.help or "").split()).replace("|", "\\|") % {
            "default": default,
            "prog": parser.prog,
        }
        lines.append(
            f"| `{', '.join(action.option_strings)}` | `{names[id(action)]}` | "
            f"{f'`{var}`' if var else ''} | {shown} | "
            f"{'must match' if flag in resume else ''} | {text} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(options_reference())
