"""``python -m bingcrawl.emulator``: serve the Bing v7 emulator until SIGINT / SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bingcrawl import eventloop
from bingcrawl.emulator.cli import add_arguments, run
from bingcrawl.errors import BingCrawlError

logger = logging.getLogger("bingcrawl.emulator")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve, and return the exit status (2 for a bad flag)."""
    parser = argparse.ArgumentParser(
        prog="python -m bingcrawl.emulator",
        description="Bing Image Search API v7 emulator with a fault-injecting image host.",
    )
    add_arguments(parser)
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level on stderr (default INFO)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        return eventloop.run(run(args), args.event_loop)
    except BingCrawlError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    except OSError as exc:
        logger.error("cannot serve on %s:%s: %s", args.host, args.port, exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
