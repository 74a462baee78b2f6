"""``python -m benchmarks``: bingcrawl against its baselines and peers, on the same URLs.

    python -m benchmarks [--quick] [--scenarios main,network,concurrency,latency,size,memory]
                         [--tools bingcrawl,webdataset,search,bare,seed,img2dataset,icrawler]
                         [--repeats 3] [--json out.json] [--keep DIR] [--peers-python PY]
                         [--profile DIR] [--tracemalloc N] [--memory-points 10,100]
                         [--markdown out.md] [--from-json earlier.json]

The emulator runs in a separate process (warmed, so its rendering does not bound the
measurement); each tool runs as a child process, one at a time. Printed: a table of medians
(images/s, ratios to img2dataset, to img2dataset without re-encoding and to the bare aiohttp
loop, client CPU per image, emulator CPU per image, peak RSS of the tool and of its largest
child, event-loop lag p99, time to first stored image, API calls/s) and the targets. ``--json``
writes every run, the summary and the options. ``--quick`` is the small form CI runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import SCENARIOS, TOOLS, Options, run_benchmarks
from benchmarks.profiling import render as render_profile
from benchmarks.report import render_markdown, render_table


def _csv(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    """The harness's command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI): seconds, not minutes")
    p.add_argument("--scenarios", type=_csv(SCENARIOS), help="comma-separated (default: all)")
    p.add_argument("--tools", type=_csv(TOOLS), help="comma-separated (default: all)")
    p.add_argument("--repeats", type=int, help="runs of the main scenario (median reported)")
    p.add_argument("--urls", type=int, help="URLs of the main scenario (whole queries)")
    p.add_argument("--concurrency", type=int, help="download concurrency of the main scenario")
    p.add_argument("--concurrency-points", type=_ints, help="e.g. 8,64,512")
    p.add_argument("--img2dataset-threads", type=_ints, help="thread counts tried (best kept)")
    p.add_argument("--icrawler-threads", type=_ints, help="thread counts tried (best kept)")
    p.add_argument("--image-latency", type=float, help="seconds, main scenario (default 0.05)")
    p.add_argument("--qps", type=float, help="API queries per second (crawler and emulator)")
    p.add_argument(
        "--format-mix",
        metavar="FMT=W,...",
        help="image formats of every scenario, as the emulator's --format-mix (default jpeg; "
        "jpeg=0.85,png=0.07,gif=0.04,webp=0.04 is the emulator's own mix)",
    )
    p.add_argument("--memory-points", type=_ints, help="queries x 1000 candidates, e.g. 10,100")
    net = p.add_argument_group("network scenario")
    net.add_argument("--network-urls", type=int, help="URLs (whole queries; default 6000)")
    net.add_argument("--network-hosts", type=int, help="host names (default 1200)")
    net.add_argument("--network-concurrency", type=int, help="bingcrawl's --concurrency (512)")
    net.add_argument("--network-per-host", type=int, help="bingcrawl's --per-host (default 8)")
    net.add_argument(
        "--network-img2dataset-threads", type=_ints, help="thread counts tried (128,256,512)"
    )
    net.add_argument(
        "--host-latency", type=float, help="median host latency, seconds (default 0.2)"
    )
    net.add_argument(
        "--host-latency-p99", type=float, help="1 %% of hosts are slower (default 5.0)"
    )
    p.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="N",
        help="trace bingcrawl's allocations, print the N top lines (slow: memory questions only)",
    )
    p.add_argument(
        "--child-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set in every tool's environment (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )
    p.add_argument("--json", type=Path, help="write every run and the summary here")
    p.add_argument("--markdown", type=Path, help="write the summary as Markdown tables here")
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="run nothing: print the table (and --markdown) of an earlier --json",
    )
    p.add_argument("--keep", type=Path, help="keep every run's output under this directory")
    p.add_argument("--peers-python", help="interpreter that has img2dataset / icrawler")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run bingcrawl under py-spy, keep the raw profiles in DIR, print the top functions",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log each run as it starts")
    return p


_PASS_THROUGH = (
    "scenarios", "tools", "repeats", "concurrency", "memory_points", "concurrency_points",
    "img2dataset_threads", "icrawler_threads", "image_latency", "qps", "format_mix",
    "network_hosts", "network_concurrency", "network_per_host", "network_img2dataset_threads",
    "host_latency", "host_latency_p99",
)  # fmt: skip


def options_from(args: argparse.Namespace) -> Options:
    """Resolve flags into :class:`Options`."""
    kw: dict[str, object] = {}
    # Flags named as Options fields pass through when given (None: not given; (): empty list).
    for name in _PASS_THROUGH:
        value = getattr(args, name)
        if value is not None and value != ():
            kw[name] = value
    per_query = (Options.quick() if args.quick else Options()).results_per_query
    if args.urls is not None:
        kw["main_queries"] = max(1, -(-args.urls // per_query))
    if args.network_urls is not None:
        kw["network_queries"] = max(1, -(-args.network_urls // per_query))
    return Options.quick(**kw) if args.quick else Options(**kw)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Run the harness; 0 when every run succeeded, 1 if any failed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        sys.stdout.write(render_table(result) + "\n")
        if args.markdown:
            args.markdown.write_text(render_markdown(result) + "\n")
        return 0
    options = options_from(args)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    result = run_benchmarks(
        options,
        workdir=args.keep,
        keep=args.keep is not None,
        peers_python=args.peers_python,
        profile_dir=args.profile,
        tracemalloc=args.tracemalloc,
        child_env=dict(item.split("=", 1) for item in args.child_env if "=" in item),
    )
    result["command"] = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    sys.stdout.write(render_table(result) + "\n")
    for row in result["rows"]:
        if "profile" in row["extra"]:
            title = f"\nprofile: {row['scenario']} {row['point']} {row['tool']} {row['settings']}"
            sys.stdout.write(render_profile(row["extra"]["profile"], title=title) + "\n")
        if "tracemalloc" in row["extra"]:
            traced = row["extra"]["tracemalloc"]
            sys.stdout.write(
                f"\ntracemalloc: {row['scenario']} {row['point']} {row['tool']}: peak "
                f"{traced['peak_mib']} MiB, largest snapshot {traced['largest_snapshot_mib']} MiB\n"
            )
            for top in traced["top"]:
                where, kib, count = top["where"], top["kib"], top["count"]
                sys.stdout.write(f"  {kib:>10,.0f} KiB {count:>8}  {where}\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(render_markdown(result) + "\n")
    failed = [r for r in result["rows"] if str(r["status"]).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
