"""Where a tool's CPU goes: py-spy around a run, and a summary of its samples.

    python -m benchmarks --scenarios main --tools bingcrawl --profile DIR
    python -m benchmarks.profiling DIR/<run>.txt        # summarize a profile again

:func:`profiled` wraps a command line in ``py-spy record --subprocesses --nonblocking``
(sampling, so the tool runs unmodified; idle threads are not sampled, so the samples are
CPU time). :func:`summarize` reads py-spy's raw (collapsed-stack) output and splits it by
process - the tool's own process versus its children (bingcrawl's hash workers) - then
ranks functions by *self* samples (where the CPU is spent) and by *total* samples (which
call paths it is spent under).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["available", "profiled", "summarize"]

_RECORD = re.compile(r"(.*?) (\d+)\n", re.S)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?):\d+\)$")
_PROCESS = re.compile(r'^process (\d+):"')


def available() -> str | None:
    """The py-spy executable, if there is one."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def profiled(argv: Sequence[str], output: Path, *, rate: int = 100) -> list[str]:
    """``argv`` run under py-spy, writing raw collapsed stacks to ``output``."""
    spy = available()
    if spy is None:
        raise RuntimeError("py-spy is not installed")
    return [
        spy, "record", "--rate", str(rate), "--subprocesses", "--nonblocking",
        "--format", "raw", "--output", str(output), "--", *argv,
    ]  # fmt: skip


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    # The last two path parts name the module well enough (package/module.py).
    short = "/".join(Path(match["file"]).parts[-2:])
    return f"{match['func']} ({short})"


def summarize(path: Path, *, top: int = 15) -> dict[str, Any]:
    """Self and total samples per function, for the root process and for its children."""
    text = path.read_text(errors="replace")
    if not text.endswith("\n"):
        text += "\n"
    roles: dict[str, dict[str, Counter[str]]] = {}
    samples: Counter[str] = Counter()
    root_pid: str | None = None
    for match in _RECORD.finditer(text):
        stack, count = match[1], int(match[2])
        frames = stack.split(";")
        pids = [m[1] for f in frames if (m := _PROCESS.match(f))]
        if pids and root_pid is None:
            root_pid = pids[0]
        role = "main" if not pids or pids[-1] == root_pid else "children"
        code = [_frame_name(f) for f in frames if not _PROCESS.match(f)]
        if not code:
            continue
        bucket = roles.setdefault(role, {"self": Counter(), "total": Counter()})
        bucket["self"][code[-1]] += count
        for name in set(code):
            bucket["total"][name] += count
        samples[role] += count
    result: dict[str, Any] = {"samples": dict(samples)}
    for role, bucket in roles.items():
        n = max(samples[role], 1)
        result[role] = {
            kind: [(name, round(c / n, 4)) for name, c in bucket[kind].most_common(top)]
            for kind in ("self", "total")
        }
    return result


def render(summary: dict[str, Any], *, title: str = "") -> str:
    """A profile summary as text: per process role, the top functions by self share."""
    lines = [title] if title else []
    for role in ("main", "children"):
        if role not in summary:
            continue
        n = summary["samples"].get(role, 0)
        lines.append(f"  {role} process{'es' if role == 'children' else ''} ({n} samples), self:")
        lines += [f"    {share:6.1%}  {name}" for name, share in summary[role]["self"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Summarize py-spy raw files given on the command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for path in args.files:
        summary = summarize(path, top=args.top)
        text = json.dumps(summary, indent=1) if args.json else render(summary, title=str(path))
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
