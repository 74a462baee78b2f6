"""The ``bingcrawl`` command line: thin. Flags -> config -> library; errors -> exit codes.

Exit codes (a contract): 0 done; 2 usage or configuration error (before any request);
3 authentication refused; 4 quota or --max-api-calls exhausted (resumable); 5 the output's
filesystem refused a write (disk full, quota, I/O error; resumable); 6 the API could not be
reached, or queries stopped on API errors (resumable); 130 / 143 interrupted by SIGINT /
SIGTERM after a clean checkpoint (resumable); 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
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
from bingcrawl.errors import BingCrawlError, ConfigError, Interrupted
from bingcrawl.eventloop import EVENT_LOOPS
from bingcrawl.obs.envconfig import apply_env_defaults
from bingcrawl.obs.logs import bind, configure_logging
from bingcrawl.options import (
    FILTER_FLAGS,
    add_crawl_options,
    add_layout_options,
    build_config,
)

__all__ = ["FILTER_FLAGS", "build_config", "main"]

log = logging.getLogger("bingcrawl")

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
    add_crawl_options(crawl)
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
        "--license",
        metavar="CODES",
        help="only rows under these licenses, comma-separated (by,by-sa,cc0...; the first word "
        "of a row's license, any case)",
    )
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
    cr = add("credits", "the attribution file of a dataset: each image's license and credit")
    cr.add_argument("dir", type=Path, metavar="DIR", help="the crawl's --out directory")
    cr.add_argument(
        "--format", dest="fmt", default="md", choices=["md", "csv"], help="Markdown or CSV"
    )
    cr.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="destination file, or - for stdout (default: DIR/CREDITS.md or DIR/CREDITS.csv)",
    )
    du = add("dupes", "audit the rejected near duplicates: counts, or a page of pairs (--html)")
    du.add_argument("dir", type=Path, metavar="DIR", help="the crawl's --out directory")
    du.add_argument(
        "--html",
        action="store_true",
        help="write a page showing each stored image beside the copies rejected as its "
        "duplicates, farthest first",
    )
    du.add_argument("--exact", action="store_true", help="byte-identical copies too (--html)")
    du.add_argument(
        "--limit", type=int, default=1000, metavar="N", help="pairs on the page (default 1000)"
    )
    du.add_argument(
        "--output", "-o", metavar="FILE", help="the page's file (default: DIR/export/dupes.html)"
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
    add_layout_options(demo)
    demo.add_argument("--no-progress", action="store_true", help="no live display")
    add_event_loop(demo)
    return parser


async def run_crawl(config: Any) -> dict[str, Any]:
    """Run a crawl with signal handling: SIGINT / SIGTERM stop it cleanly."""
    from bingcrawl.engine.crawler import Crawler
    from bingcrawl.obs.metrics import MetricsServer

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
        received: list[int] = []

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) >= 3:
                # A third Ctrl-C: the user wants out now, even if a write hangs. The
                # checkpoint is crash-safe (WAL); the next run repairs what is half-done.
                log.warning("third signal: exiting at once")
                os._exit(128 + signum)
            crawler.request_stop(signum)

        # Installed before the crawler opens and removed only after it closed: a signal while
        # it opens stops it before any request, and one while a finished crawl writes its
        # files does not turn the completed run into an interruption (130/143).
        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
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
    from bingcrawl.obs.progress import summary_table

    print(summary_table(dict(stats.get("run", stats))))
    if output_format == "webdataset":
        print(f"shards:   {out / 'shards'}")
    else:
        print(f"images:   {out / 'images'}")
    print(f"manifest: {out / 'manifest.jsonl'}")


async def _demo(args: argparse.Namespace) -> int:
    from bingcrawl.config import CrawlConfig, QuerySpec, prepare_out_dir
    from bingcrawl.emulator import EmulatorConfig, EmulatorServer
    from bingcrawl.fetch.download import DownloadConfig
    from bingcrawl.fetch.netpolicy import NetworkPolicy

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
        licenses=None if args.license is None else args.license.split(","),
        dest=sys.stdout.buffer
        if to_stdout
        else (None if args.output is None else Path(args.output)),
    )
    # stdout carries data only: the summary is talk, for stderr.
    where = "stdout" if result.path is None else str(result.path)
    print(f"{result.rows} rows -> {where}", file=sys.stderr)
    return 0


def _dupes(args: argparse.Namespace) -> int:
    from bingcrawl.store.dupes import dupes_summary, render_summary, write_dupes_html

    _require_checkpoint(args.dir)
    if args.limit < 1:
        raise ConfigError("--limit", f"must be >= 1, got {args.limit}")
    if not args.html:
        if args.output is not None or args.exact:
            raise ConfigError("--html", "--output and --exact shape the page: add --html")
        print(render_summary(dupes_summary(args.dir)))
        return 0
    result = write_dupes_html(
        args.dir,
        dest=None if args.output is None else Path(args.output),
        exact=args.exact,
        limit=args.limit,
    )
    print(f"{result.pairs} of {result.total} duplicate pairs -> {result.path}", file=sys.stderr)
    return 0


def _credits(args: argparse.Namespace) -> int:
    from bingcrawl.store.credits import write_credits

    _require_checkpoint(args.dir)
    to_stdout = args.output == "-"
    dest = sys.stdout.buffer if to_stdout else (None if args.output is None else Path(args.output))
    result = write_credits(args.dir, fmt=args.fmt, dest=dest)
    where = "stdout" if result.path is None else str(result.path)
    print(f"credits of {result.rows} images -> {where}", file=sys.stderr)
    return 0


def _report(log_format: str | None, level: int, message: str) -> None:
    """The last word of a run, one line on stderr: ``bingcrawl: error: --opt: ...``. In json
    log mode it is a log record instead (one JSON object, like every other line)."""
    if log_format == "json":
        log.log(level, "%s", message)
    else:
        print(f"bingcrawl: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit status.

    It runs in a copy of the caller's context: the run id it binds for its log lines does
    not stay on the caller's (a test, or a program calling ``main`` twice).
    """
    return contextvars.copy_context().run(_main, argv, env)


def _main(argv: Sequence[str] | None, env: Mapping[str, str] | None) -> int:
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
        if args.command == "credits":
            return _credits(args)
        if args.command == "dupes":
            return _dupes(args)
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
