"""The bingcrawl emulator with a larger image cache, for benchmarks that warm more images.

    python -m benchmarks.warm_emulator --cache-mb 1024 [bingcrawl emulator flags]

The same server and flags as ``python -m bingcrawl.emulator`` (:mod:`bingcrawl.emulator.cli`)
with one more, ``--cache-mb``: the bound of the corpus's image cache (256 MB there). A run
that warms 20,000 30 kB images needs ~650 MB; with the default cache the first ones would be
evicted, then rendered again while they are measured (~3 ms of emulator CPU each).
:func:`start` spawns it and returns ``(process, base_url)`` like
:func:`bingcrawl.emulator.server.start_emulator_process`; stop it with
:func:`bingcrawl.emulator.server.stop_emulator_process`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import selectors
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bingcrawl import eventloop
from bingcrawl.emulator.cli import add_arguments, config_from_args
from bingcrawl.emulator.config import EmulatorConfig
from bingcrawl.emulator.server import LISTENING_PREFIX, EmulatorServer

__all__ = ["main", "start"]

log = logging.getLogger("benchmarks.warm_emulator")


async def _serve(config: EmulatorConfig, args: argparse.Namespace) -> int:
    """:func:`bingcrawl.emulator.cli.run`, with the config given."""
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
            log.info("warmed %d queries: %d MB cached", len(args.warm),
                     server.corpus.cache_size // 2**20)  # fmt: skip
            sys.stdout.write(f"{LISTENING_PREFIX}{server.base_url}\n")
            sys.stdout.flush()
            await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_emulator")
    add_arguments(parser)
    parser.add_argument("--cache-mb", type=int, default=1024, help="image cache (default 1024)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")  # fmt: skip
    config = config_from_args(args)
    config = replace(config, corpus=replace(config.corpus, cache_bytes=args.cache_mb * 2**20))
    return eventloop.run(_serve(config, args), args.event_loop)


def start(
    config_args: Sequence[str], *, cache_mb: int = 1024, timeout: float = 600.0
) -> tuple[subprocess.Popen[str], str]:
    """Start the emulator (``config_args``: its flags; ``--port 0`` unless one is named)
    and return ``(process, base_url)`` once it has warmed its images and listens."""
    args = [*config_args, "--cache-mb", str(cache_mb)]
    if "--port" not in args:
        args += ["--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.warm_emulator", *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,  # where `benchmarks` is importable
    )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith(LISTENING_PREFIX):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"the emulator did not start (exit {proc.returncode}, {line!r})")
    return proc, line[len(LISTENING_PREFIX) :].strip()


if __name__ == "__main__":
    sys.exit(main())
