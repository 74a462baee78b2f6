"""img2dataset on the benchmark's URL list (a peer; needs the ``bench-peers`` extra).

    python -m benchmarks.baselines.img2dataset_run --urls urls.txt --out DIR --result FILE
        [--processes 2] [--threads 64] [--shard-size N] [--disable-all-reencoding]

``img2dataset.download`` with ``resize_mode="no"``, ``output_format="files"``, ``input_format
="txt"``, ``retries=0``, ``timeout`` 30 s (``--timeout``; a per-socket-operation timeout in
``urllib``) and its other defaults (sha256 computed, EXIF extracted), on
``--processes`` processes of ``--threads`` threads. ``--disable-all-reencoding`` is its
fastest mode (bytes written as downloaded, nothing decoded). The shard size defaults to a
quarter of the list per process so both processes have work until the end
(``--shards-per-process``: on the network scenario one, since every shard waits for its
slowest download).

Offline by construction: the caller sets ``NO_ALBUMENTATIONS_UPDATE=1`` (albumentations checks
PyPI for updates on import otherwise) and wandb stays disabled.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

from benchmarks import hostmap
from benchmarks.measure import write_result

# At import, not in main(): img2dataset's processes are spawned and import this module again.
hostmap.install_from_env()


def main(argv: list[str] | None = None) -> int:
    """Run img2dataset and write the result file (its success count from its stats files)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines.img2dataset_run")
    p.add_argument("--urls", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=0)
    p.add_argument(
        "--shards-per-process",
        type=int,
        default=4,
        help="without --shard-size: the list in this many shards per process (a shard ends "
        "with its slowest download: 1 waits for the slowest host once per process)",
    )
    p.add_argument("--disable-all-reencoding", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0, help="img2dataset's timeout")
    args = p.parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    # The peer's import is part of its start-up, so it happens here (untyped: Any).
    download = importlib.import_module("img2dataset").download

    n = sum(1 for line in args.urls.read_text().splitlines() if line.strip())
    shard = args.shard_size or max(1, math.ceil(n / (args.shards_per_process * args.processes)))
    t0 = time.time()
    # img2dataset reports progress with print(); the harness discards stdout anyway.
    with contextlib.redirect_stdout(io.StringIO()):
        download(
            url_list=str(args.urls),
            output_folder=str(args.out),
            processes_count=args.processes,
            thread_count=args.threads,
            resize_mode="no",
            input_format="txt",
            output_format="files",
            number_sample_per_shard=shard,
            disable_all_reencoding=args.disable_all_reencoding,
            retries=0,
            timeout=args.timeout,
            enable_wandb=False,
        )
    successes = failures = 0
    for stats in args.out.glob("*_stats.json"):
        data = json.loads(stats.read_text())
        successes += int(data.get("successes", 0))
        failures += int(data.get("failed_to_download", 0)) + int(data.get("failed_to_resize", 0))
    result = {
        "successes": successes,
        "failures": failures,
        "shard_size": shard,
        "threads": args.threads,
        "processes": args.processes,
        "disable_all_reencoding": args.disable_all_reencoding,
        "timeout": args.timeout,
        "wall_s": round(time.time() - t0, 3),
    }
    write_result(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
