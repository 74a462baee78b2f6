"""The ``bingcrawl`` command line: thin. Flags -> config -> library; errors -> exit codes.

Exit codes (a contract): 0 done; 2 usage or configuration error (before any request);
3 authentication refused; 4 quota or --max-api-calls exhausted (resumable); 130 / 143
interrupted by SIGINT / SIGTERM after a clean checkpoint (resumable); 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bingcrawl import __version__, eventloop
from bingcrawl.errors import BingCrawlError, ConfigError, Interrupted, InvalidParameterError
from bingcrawl.eventloop import EVENT_LOOPS
from bingcrawl.obs.envconfig import apply_env_defaults
from bingcrawl.obs.logs import bind, configure_logging

__all__ = ["FILTER_FLAGS", "build_config", "main"]

log = logging.getLogger("bingcrawl")

#: CLI flag -> Bing query parameter, for every filter of the reference.
FILTER_FLAGS: dict[str, str] = {
    "--license": "license",
    "--image-type": "imageType",
    "--safe-search": "safeSearch",
    "--mkt": "mkt",
    "--cc": "cc",
    "--set-lang": "setLang",
    "--accept-language": "Accept-Language",
    "--size": "size",
    "--aspect": "aspect",
    "--color": "color",
    "--freshness": "freshness",
    "--image-content": "imageContent",
    "--width": "width",
    "--height": "height",
    "--min-width": "minWidth",
    "--max-width": "maxWidth",
    "--min-height": "minHeight",
    "--max-height": "maxHeight",
    "--min-file-size": "minFileSize",
    "--max-file-size": "maxFileSize",
}
_PARAM_TO_FLAG = {v.casefold(): k for k, v in FILTER_FLAGS.items()} | {
    "count": "--count",
    "q": "QUERY",
}

KEY_ENV = "BING_SEARCH_V7_SUBSCRIPTION_KEY"
ENDPOINT_ENV = "BING_SEARCH_V7_ENDPOINT"


_KEY_ARG = re.compile(r"(--key[= ])\S+")


class UsageError(ConfigError):
    """A command line argparse refused; shown as argparse shows it (usage, then the error)."""

    def __init__(self, prog: str, usage: str, message: str) -> None:
        self.usage = usage
        super().__init__(prog, message)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2, usage and the message) instead of exiting."""

    def error(self, message: str) -> Any:
        # argparse echoes unrecognised arguments: never a key given where none is expected.
        raise UsageError(self.prog, self.format_usage(), _KEY_ARG.sub(r"\1***", message))


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
    return f"the `{param}` parameter: {listed[param]} (case-insensitive)"


class _HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default (unless its help already says it, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        default = action.default
        if (
            "default" not in help
            and default not in (None, False, [], argparse.SUPPRESS)
            and action.option_strings
        ):
            help += " (default: %(default)s)"
        return help


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _add_crawl_options(p: argparse.ArgumentParser) -> None:
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
    api.add_argument("--key", help=f"subscription key (or ${KEY_ENV}, or --key-file)")
    api.add_argument("--key-file", type=Path, help="file holding the subscription key")
    api.add_argument("--endpoint", help=f"API base URL (or ${ENDPOINT_ENV})")
    api.add_argument(
        "--qps",
        type=float,
        default=3.0,
        help="API requests per second, never exceeded in any second (a fraction above 1 "
        "rounds down)",
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
    _add_source_options(p)
    filters = p.add_argument_group("Bing filters (validated before any request)")
    for flag, param in FILTER_FLAGS.items():
        filters.add_argument(
            flag,
            dest=f"filter_{param}",
            metavar=param.upper().replace("-", "_"),
            help=_filter_help(param),
        )
    dl = p.add_argument_group("downloads")
    dl.add_argument("--concurrency", type=int, default=64, help="downloads at the same time")
    dl.add_argument(
        "--per-host", type=int, default=8, help="downloads at the same time from one host"
    )
    dl.add_argument(
        "--max-bytes",
        type=int,
        default=20 * 1024 * 1024,
        help="largest image accepted, in bytes (larger ones fail as too_large)",
    )
    dl.add_argument(
        "--timeout", type=float, default=30.0, help="total seconds per download attempt"
    )
    dl.add_argument("--retries", type=int, default=3, help="download retries")
    dl.add_argument(
        "--allow-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="also allow fetching from this network (repeatable), e.g. 127.0.0.1/32",
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
    hs.add_argument("--max-pixels", type=int, default=64_000_000, help="decompression-bomb limit")
    out = p.add_argument_group("output")
    _add_layout_options(out)
    out.add_argument("--shard-size", type=int, default=10_000, help="images per shard")
    out.add_argument(
        "--shard-by",
        default="label",
        choices=["label", "all"],
        help="one shard series per label (default) or one for all",
    )
    run = p.add_argument_group("run")
    run.add_argument("--durable", action="store_true", help="fsync files and the checkpoint")
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


def _add_layout_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """How the dataset is laid out (crawl and demo)."""
    p.add_argument(
        "--output-format",
        default="files",
        choices=["files", "webdataset"],
        help="files: images/<label>/<sha>.<ext>; webdataset: tar shards in shards/",
    )
    p.add_argument(
        "--convert-to",
        default="keep",
        choices=["keep", "jpg", "png"],
        help="store every image in one format (re-encoded in the hash workers; images already "
        "in it are kept byte for byte): jpg for torchvision ImageFolder and webdataset "
        "to_tuple('jpg', ...), png to keep transparency; keep: as downloaded",
    )


def _add_source_options(p: argparse.ArgumentParser) -> None:
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


def _crop(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        top, left, bottom, right = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            "--crop", f"{text!r}: give four fractions TOP,LEFT,BOTTOM,RIGHT, e.g. 0,0,0.5,0.5"
        ) from None
    return top, left, bottom, right


def _check_sources(args: argparse.Namespace, has_queries: bool, filters: Mapping[str, str]) -> None:
    """Checks of the source options that need the file system or the API's market lists."""
    import importlib.util

    from bingcrawl.bing.params import TrendingParams
    from bingcrawl.sources.urlfile import url_format

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
            flag = _PARAM_TO_FLAG.get(exc.parameter.casefold(), exc.parameter)
            raise ConfigError(
                flag, f"{exc.value!r} is not a trending market; accepted: {exc.accepted}"
            ) from None


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = _Parser(
        prog="bingcrawl", description="Image-search queries in, a clean image dataset out."
    )
    parser.add_argument("--version", action="version", version=f"bingcrawl {__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="least severe log lines shown",
    )
    common.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text, or json: one object per line, with run and query context",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, parents=[common], formatter_class=_HelpFormatter
        )

    def add_event_loop(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--event-loop",
            default="auto",
            choices=EVENT_LOOPS,
            help="auto (default): uvloop when installed, else asyncio's own loop",
        )

    crawl = add("crawl", "crawl images (re-run the same command to resume)")
    _add_crawl_options(crawl)
    add_event_loop(crawl)
    parser.set_defaults(_crawl_parser=crawl)
    st = add("status", "progress per query, from the checkpoint (safe next to a running crawl)")
    st.add_argument("dir", type=Path, metavar="DIR", help="the crawl's --out directory")
    st.add_argument("--json", action="store_true", help="JSON instead of a table")
    ex = add("export", "the manifest, every candidate, or the duplicate clusters, as a file")
    ex.add_argument("dir", type=Path, metavar="DIR", help="the crawl's --out directory")
    ex.add_argument(
        "--format",
        dest="fmt",
        default="jsonl",
        choices=["jsonl", "csv", "parquet"],
        help="file format (parquet needs pyarrow)",
    )
    ex.add_argument("--all", action="store_true", help="every candidate with its status")
    ex.add_argument(
        "--duplicates", action="store_true", help="duplicate clusters, stored image first"
    )
    ex.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="destination file, or - for stdout (jsonl and csv) (default: "
        "DIR/export/<manifest|candidates|duplicates>.<format>; the crawl's own "
        "DIR/manifest.jsonl is never overwritten)",
    )
    em = add("emulator", "a Bing Image Search v7 emulator with an image host")
    from bingcrawl.emulator.cli import add_arguments as add_emulator_arguments

    add_emulator_arguments(em)  # --event-loop included
    demo = add(
        "demo",
        "the whole job offline: the built-in emulator (synthetic pictures, injected faults) "
        "crawled in one process",
    )
    demo.add_argument("--out", type=Path, default=Path("bingcrawl-demo"), help="output directory")
    demo.add_argument("--limit", type=int, default=60, help="images kept per query")
    _add_layout_options(demo)
    demo.add_argument("--no-progress", action="store_true", help="no live display")
    add_event_loop(demo)
    return parser


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
    return env.get(KEY_ENV) or None


def build_config(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """Resolve flags and environment into a validated CrawlConfig (raises ConfigError)."""
    from bingcrawl.bing.params import SearchParams
    from bingcrawl.config import (
        DEFAULT_ENDPOINT,
        DEFAULT_NEAR_DUP_DISTANCE,
        CrawlConfig,
        QuerySpec,
        parse_queries_file,
        prepare_out_dir,
        safe_label,
    )
    from bingcrawl.pipeline.download import DownloadConfig
    from bingcrawl.pipeline.netpolicy import NetworkPolicy

    specs = [QuerySpec.of(q, args.label) for q in args.queries]
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
    filters = {param: getattr(args, f"filter_{param}") for param in FILTER_FLAGS.values()}
    filters = {k: v for k, v in filters.items() if v is not None}
    try:
        validated = SearchParams.from_mapping({"q": "validation", "count": args.count, **filters})
    except InvalidParameterError as exc:
        flag = _PARAM_TO_FLAG.get(exc.parameter.casefold(), exc.parameter)
        raise ConfigError(flag, f"invalid value {exc.value!r}; accepted: {exc.accepted}") from None
    canonical = {k: v for k, v in validated.to_query().items() if k not in ("q", "count", "offset")}
    if validated.accept_language is not None:
        canonical["Accept-Language"] = validated.accept_language
    download = DownloadConfig(
        concurrency=args.concurrency,
        per_host=args.per_host,
        max_bytes=args.max_bytes,
        timeout=args.timeout,
        retries=args.retries,
        policy=NetworkPolicy.from_cidrs(args.allow_network),
    )
    _check_sources(args, bool(specs), canonical)
    key = _read_key(args, env)
    # Only a URL list needs no API (unless --similar asks about its images).
    needs_api = bool(specs or args.trending or args.seed_images or args.similar)
    if not key and needs_api:
        raise ConfigError(
            "--key",
            f"a subscription key is needed to search (--key, --key-file or ${KEY_ENV}); "
            "without one, try `bingcrawl demo`",
        )
    config = CrawlConfig(
        out=args.out,
        queries=tuple(specs),
        key=key,
        endpoint=args.endpoint or env.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT,
        filters=CrawlConfig.filters_from(canonical),
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
        qps=args.qps,
        max_active_queries=args.max_active_queries,
        max_api_calls=args.max_api_calls,
        api_retries=args.api_retries,
        download=download,
        hash_algo=args.hash_algo,
        hash_workers=args.hash_workers,
        near_dup_distance=(
            DEFAULT_NEAR_DUP_DISTANCE if args.near_dup_distance is None else args.near_dup_distance
        ),
        max_pixels=args.max_pixels,
        durable=args.durable,
        fresh=args.fresh,
        progress=not args.no_progress and sys.stderr.isatty(),
        grace=args.grace,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        stall_after=args.stall_after,
        crash_at=env.get("BINGCRAWL_CRASH_AT") or None,
        output_format=args.output_format,
        convert_to=args.convert_to,
        shard_size=args.shard_size,
        shard_by=args.shard_by,
    )
    prepare_out_dir(config.out)  # last: a bad option leaves no directory behind
    return config


async def run_crawl(config: Any) -> dict[str, Any]:
    """Run a crawl with signal handling: SIGINT / SIGTERM stop it cleanly."""
    from bingcrawl.obs.metrics import MetricsServer
    from bingcrawl.pipeline.crawler import Crawler

    loop = asyncio.get_running_loop()
    # Signal handlers can only be installed from the main thread (library users who run a
    # crawl in another thread handle signals themselves).
    signals = (
        (signal.SIGINT, signal.SIGTERM)
        if threading.current_thread() is threading.main_thread()
        else ()
    )
    async with contextlib.AsyncExitStack() as stack:
        crawler = Crawler(config)
        # Installed before the crawler opens and removed only after it closed: a signal while
        # it opens stops it before any request, and one while a finished crawl writes its
        # files does not turn the completed run into an interruption (130/143).
        for signum in signals:
            loop.add_signal_handler(signum, crawler.request_stop, signum)
            stack.callback(loop.remove_signal_handler, signum)
        await stack.enter_async_context(crawler)
        if config.metrics_port is not None:
            await stack.enter_async_context(
                MetricsServer(
                    crawler,
                    config.metrics_host,
                    config.metrics_port,
                    stall_after=config.stall_after,
                )
            )
        report = await crawler.run()
    return report.stats


def _print_summary(stats: Mapping[str, Any], out: Path, output_format: str) -> None:
    from bingcrawl.pipeline.progress import summary_table

    print(summary_table(dict(stats.get("run", stats))))
    if output_format == "webdataset":
        print(f"shards:   {out / 'shards'}")
    else:
        print(f"images:   {out / 'images'}")
    print(f"manifest: {out / 'manifest.jsonl'}")


async def _demo(args: argparse.Namespace) -> int:
    from bingcrawl.config import CrawlConfig, QuerySpec, prepare_out_dir
    from bingcrawl.emulator import EmulatorConfig, EmulatorServer
    from bingcrawl.pipeline.download import DownloadConfig
    from bingcrawl.pipeline.netpolicy import NetworkPolicy

    prepare_out_dir(args.out)
    async with EmulatorServer(EmulatorConfig(qps=10.0)) as server:
        print(
            f"bingcrawl demo: the built-in emulator serves at {server.base_url}: a Bing v7 API "
            "and image hosts with synthetic pictures and injected faults (broken, slow, "
            "oversized and fake images, throttling). The failures this crawl reports are "
            "those faults, handled as a real crawl would handle them.",
            file=sys.stderr,
            flush=True,
        )
        config = CrawlConfig(
            out=args.out,
            output_format=args.output_format,
            convert_to=args.convert_to,
            queries=tuple(
                QuerySpec.of(q) for q in ("aston martin", "red panda", "lighthouse at dusk")
            ),
            key="demo-key",
            endpoint=server.base_url,
            limit=args.limit,
            qps=8.0,
            # The emulator's image host has slow and stalling fault URLs: short timeouts keep
            # the demo's tail short (a real crawl keeps the defaults).
            download=DownloadConfig(
                concurrency=32,
                timeout=3.0,
                retries=1,
                throughput_grace=1.0,
                policy=NetworkPolicy.from_cidrs(["127.0.0.1/32"]),
            ),
            filters=(("license", "Public"),),
            progress=not args.no_progress and sys.stderr.isatty(),
            grace=2.0,
        )
        stats = await run_crawl(config)
    _print_summary(stats, args.out, args.output_format)
    print(
        "(demo: the pictures are synthetic and the failures above are injected faults; "
        "point `bingcrawl crawl --endpoint` at a real service for real images)",
        file=sys.stderr,
    )
    return 0


def _require_checkpoint(directory: Path) -> None:
    if not (directory / "checkpoint.sqlite").is_file():
        raise ConfigError("DIR", f"{directory} holds no bingcrawl checkpoint")


async def _status(args: argparse.Namespace) -> int:
    from bingcrawl.store.checkpoint import Checkpoint

    _require_checkpoint(args.dir)
    async with await Checkpoint.open(args.dir, read_only=True) as checkpoint:
        summary = await checkpoint.status_summary()
    print(summary.to_json() if args.json else summary.render_text())
    return 0


def _export(args: argparse.Namespace) -> int:
    from bingcrawl.store.output import export

    _require_checkpoint(args.dir)
    to_stdout = args.output == "-"
    result = export(
        args.dir,
        fmt=args.fmt,
        all_candidates=args.all,
        duplicates=args.duplicates,
        dest=sys.stdout.buffer
        if to_stdout
        else (None if args.output is None else Path(args.output)),
    )
    # stdout carries data only: the summary is talk, for stderr.
    where = "stdout" if result.path is None else str(result.path)
    print(f"{result.rows} rows -> {where}", file=sys.stderr)
    return 0


def _report(log_format: str | None, level: int, message: str) -> None:
    """The last word of a run, one line on stderr: ``bingcrawl: error: --opt: ...``. In json
    log mode it is a log record instead (one JSON object, like every other line)."""
    if log_format == "json":
        log.log(level, "%s", message)
    else:
        print(f"bingcrawl: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    env = os.environ if env is None else env
    log_format: str | None = None
    try:
        parser = build_parser()
        # Every crawl option can come from BINGCRAWL_<OPTION>; flags win over the environment.
        # The key is excluded: it comes from --key, --key-file or BING_SEARCH_V7_SUBSCRIPTION_KEY.
        apply_env_defaults(parser.get_default("_crawl_parser"), env, exclude={"--key"})
        args = parser.parse_args(argv)
        configure_logging(args.log_level, args.log_format)
        log_format = args.log_format
        if args.command == "crawl":
            # One run id on every log line of this run, the first ones included.
            bind(run_id=uuid.uuid4().hex[:12])
            config = build_config(args, env)
            configure_logging(args.log_level, args.log_format, secrets=[config.key])
            stats = eventloop.run(run_crawl(config), args.event_loop)
            _print_summary(stats, config.out, config.output_format)
            return 0
        if args.command == "demo":
            return eventloop.run(_demo(args), args.event_loop)
        if args.command == "status":
            return asyncio.run(_status(args))
        if args.command == "export":
            return _export(args)
        if args.command == "emulator":
            from bingcrawl.emulator.cli import run as run_emulator

            return eventloop.run(run_emulator(args), args.event_loop)
        raise ConfigError("command", f"unknown command {args.command!r}")
    except Interrupted as exc:
        _report(log_format, logging.WARNING, f"{exc}; checkpoint is consistent, re-run to resume")
        return exc.code
    except UsageError as exc:
        # As argparse prints it: the usage, then `bingcrawl crawl: error: ...`.
        print(f"{exc.usage}{exc.option}: error: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    except BingCrawlError as exc:
        _report(log_format, logging.ERROR, f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
