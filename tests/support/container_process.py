"""The container's command run as the container runs it, without Docker.

``ENTRYPOINT`` + compose ``command`` (``bingcrawl ...``, the console script the image
installs), with the Dockerfile's ``ENV`` overlaid by the service's ``environment:`` (only the
endpoint, the network allowance, ``/data`` and the metrics address are replaced by loopback
equivalents), under :data:`REAPER`, a stand-in for the image's PID 1 (tini). A
:class:`Container` is the test's handle on one such start: its output, read as it comes, and
how it ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bingcrawl.cli import build_parser
from bingcrawl.emulator import EmulatorConfig
from bingcrawl.emulator.cli import config_from_args
from tests.support.container import crawler_env, dockerfile_env, final_stage

__all__ = [
    "REAPER",
    "Container",
    "Finished",
    "children_of",
    "dockerfile_healthcheck",
    "emulator_config",
    "entrypoint",
    "free_port",
    "get",
    "json_record",
    "metrics_logged",
    "run_python",
    "service_env",
    "stopping_logged",
]

#: PID 1 of the image is ``tini -- bingcrawl``. This stand-in does tini's part: it forwards
#: SIGTERM/SIGINT to its one child, exits with the child's status (128 + N if killed by
#: signal N) and, as a child subreaper, inherits and reaps whatever the child leaves behind.
#: It waits up to ``linger`` seconds for those orphans to exit on their own, then SIGKILLs the
#: rest (the kernel does that to a container when PID 1 exits) and writes a JSON report.
REAPER = r"""
import ctypes, json, os, select, signal, subprocess, sys, time

report, linger, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
child = subprocess.Popen(argv)
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda s, _: child.send_signal(s))
status = child.wait()

def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""

me = os.getpid()
orphans = {}
for task in os.listdir(f"/proc/{me}/task"):
    with open(f"/proc/{me}/task/{task}/children") as fh:
        orphans.update((int(pid), "") for pid in fh.read().split())
orphans = {pid: cmdline(pid) for pid in orphans}
pending = {os.pidfd_open(pid): pid for pid in orphans}
exited, killed = [], []
deadline = time.monotonic() + linger
while pending and (left := deadline - time.monotonic()) > 0:
    for fd in select.select(list(pending), [], [], left)[0]:
        exited.append(pending.pop(fd))
        os.close(fd)
for fd, pid in pending.items():
    signal.pidfd_send_signal(fd, signal.SIGKILL)
    killed.append(pid)
    os.close(fd)
for pid in orphans:
    os.waitpid(pid, 0)
with open(report, "w") as fh:
    json.dump({"status": status, "orphans": orphans, "exited": exited, "killed": killed}, fh)
sys.exit(128 - status if status < 0 else status)
"""


def entrypoint(command: Iterable[str]) -> list[str]:
    """The image's ENTRYPOINT after ``tini --``, resolved like the image's PATH would."""
    stage = dict(final_stage())
    tini, dashes, program, *args = json.loads(stage["ENTRYPOINT"])
    assert (tini, dashes) == ("tini", "--")
    resolved = shutil.which(program, path=str(Path(sys.executable).parent))
    assert resolved, f"the {program!r} console script is not installed"
    return [resolved, *args, *command]


def free_port() -> int:
    """A loopback TCP port free at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(compose: Mapping[str, Any], endpoint: str, out: Path, port: int) -> dict[str, str]:
    """The crawler container's environment: the image's ENV, then compose's, on loopback."""
    env = {**dockerfile_env(), **crawler_env(compose)}
    loopback = {
        "BING_SEARCH_V7_ENDPOINT": endpoint,
        "BINGCRAWL_ALLOW_NETWORK": "127.0.0.1/32",
        "BINGCRAWL_OUT": str(out),
        "BINGCRAWL_METRICS_HOST": "127.0.0.1",
        "BINGCRAWL_METRICS_PORT": str(port),
    }
    assert loopback.keys() <= env.keys(), "compose no longer sets a variable this test replaces"
    return {**env, **loopback, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


def emulator_config(compose: Mapping[str, Any], *extra: str) -> EmulatorConfig:
    """The compose emulator service's configuration, plus test-only flags."""
    args = build_parser().parse_args([*compose["services"]["emulator"]["command"], *extra])
    return config_from_args(args)


def children_of(pid: int, *, recursive: bool = False) -> dict[int, str]:
    """Live children (or all descendants) of ``pid`` with their command lines, from /proc."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except FileNotFoundError:  # exited meanwhile
                continue
            found[child] = cmd.decode(errors="replace").strip()
            if recursive:
                found.update(children_of(child, recursive=True))
    return found


@dataclass
class Finished:
    """How a container process ended."""

    code: int
    stderr: list[str]
    stdout: str
    report: dict[str, Any]


@dataclass
class Container:
    """The REAPER running ``argv``: the test's handle on one container start."""

    proc: asyncio.subprocess.Process
    report_path: Path
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls, argv: list[str], env: Mapping[str, str], cwd: Path, *, linger: float = 5.0
    ) -> Container:
        report = cwd.parent / f"reaper-{time.monotonic_ns()}.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", REAPER, str(report), str(linger), *argv,
            env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=1 << 20,
        )  # fmt: skip
        container = cls(proc, report)
        assert proc.stdout is not None
        assert proc.stderr is not None
        container.readers = [
            asyncio.create_task(container._read(proc.stderr, container.stderr)),
            asyncio.create_task(container._read(proc.stdout, container.stdout)),
        ]
        return container

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            async with self.changed:
                into.append(raw.decode(errors="replace").rstrip("\n"))
                self.changed.notify_all()

    def records(self) -> list[dict[str, Any]]:
        """The stderr lines that are JSON log records."""
        return [r for r in map(json_record, self.stderr) if r is not None]

    async def wait_for(
        self, predicate: Callable[[Container], bool], what: str, timeout: float = 60.0
    ) -> None:
        """Wait (event-driven, bounded) until ``predicate`` holds for the output so far."""

        def ready() -> bool:
            return predicate(self) or self.proc.returncode is not None

        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(ready), timeout)
            except TimeoutError:
                pytest.fail(f"no {what} within {timeout} s; stderr: {self.stderr[-5:]}")
        if not predicate(self):
            pytest.fail(f"exited {self.proc.returncode} before {what}; stderr: {self.stderr}")

    def child_pid(self) -> int:
        """The pid of the program PID 1 runs (the crawler or the emulator)."""
        [pid] = children_of(self.proc.pid)
        return pid

    async def finish(self, timeout: float = 60.0) -> Finished:
        """Wait for the exit and collect everything."""
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self.readers)
        report = json.loads(self.report_path.read_text()) if self.report_path.exists() else {}
        return Finished(code, list(self.stderr), "\n".join(self.stdout), report)

    async def kill(self) -> None:
        """Cleanup after a failed test: SIGKILL the child (the REAPER then exits)."""
        if self.proc.returncode is None:
            for pid in children_of(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
            await self.finish()


def json_record(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line``, or None if the line is not one (a log record or not)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def metrics_logged(container: Container) -> bool:
    """The crawler has logged that its metrics server listens."""
    return any(str(r.get("msg", "")).startswith("metrics on") for r in container.records())


def stopping_logged(container: Container) -> bool:
    """The crawler has logged that SIGTERM reached it."""
    return any("signal 15" in str(r.get("msg")) for r in container.records())


async def get(url: str) -> tuple[int, str]:
    """GET ``url``: status and body (as text, undecodable bytes replaced)."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, (await resp.read()).decode(errors="replace")


async def run_python(code: str, env: Mapping[str, str]) -> tuple[int, str]:
    """Run ``python -c code`` in exactly ``env``: its exit status and its output (bounded)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def dockerfile_healthcheck() -> str:
    """The Python code of the image's HEALTHCHECK command."""
    [rest] = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    command = json.loads(rest.partition(" CMD ")[2])
    assert command[:2] == ["python", "-c"]
    return str(command[2])
