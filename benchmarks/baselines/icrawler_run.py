"""icrawler's URL-list crawler on the benchmark's URL list (a peer; ``bench-peers`` extra).

    python -m benchmarks.baselines.icrawler_run --urls urls.txt --out DIR --result FILE
                                               [--threads 32]

``icrawler.builtin.UrlListCrawler`` (a feeder thread, a parser thread, ``--threads`` download
threads on one ``requests`` session) with logging at ERROR: its per-image INFO line would
otherwise be part of the measurement. Its ``ImageDownloader`` opens every image with Pillow
(header only) before writing it. Its threads poll their queues (2 s for the parser, 5 s for the
downloaders by default; 1 s here, the shortest that cannot end a worker early, since the whole
list is queued at once) and the crawler checks them once a second, so a run ends a second or
two after the last image: the harness's steady-state rate (first to last stored file) leaves
that tail out; the wall rate keeps it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from benchmarks import hostmap
from benchmarks.measure import write_result

hostmap.install_from_env()  # the network scenario's host names (requests asks getaddrinfo)


def main(argv: list[str] | None = None) -> int:
    """Run icrawler and write the result file."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines.icrawler_run")
    p.add_argument("--urls", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--threads", type=int, default=32)
    args = p.parse_args(argv)
    # The peer's import is part of its start-up, so it happens here.
    crawler_base = importlib.import_module("icrawler").Crawler
    url_list_crawler = importlib.import_module("icrawler.builtin").UrlListCrawler

    n = sum(1 for line in args.urls.read_text().splitlines() if line.strip())
    t0 = time.time()
    crawler = url_list_crawler(
        downloader_threads=args.threads,
        storage={"root_dir": str(args.out)},
        log_level=logging.ERROR,
    )
    # UrlListCrawler.crawl with shorter queue polls (its own crawl() does not forward them).
    crawler_base.crawl(
        crawler,
        feeder_kwargs={"url_list": str(args.urls)},
        parser_kwargs={"queue_timeout": 1},
        downloader_kwargs={"max_num": n, "queue_timeout": 1},
    )
    result = {"threads": args.threads, "wall_s": round(time.time() - t0, 3)}
    write_result(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
