"""Tools for hostile-input tests: the CLI in a child process with its peak memory, a scripted
search API, a request-header log for any aiohttp app, and a grep over everything a run left.

Everything listens on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from aiohttp import web
from multidict import CIMultiDict

KEY_HEADER = "Ocp-Apim-Subscription-Key"

#: Environment variables a child crawl must not inherit from whoever runs the tests.
_OWN_PREFIXES = ("BING_", "BINGCRAWL_")


@dataclass(frozen=True, slots=True)
class CliRun:
    """One finished ``python -m bingcrawl`` child process."""

    argv: tuple[str, ...]
    code: int  # exit status; -N when killed by signal N
    stdout: str
    stderr: str
    #: Peak resident set size of the bingcrawl process, in bytes (its ``VmHWM`` at exit; see
    #: :data:`_PROBE`); ``None`` when it did not exit normally (e.g. killed).
    max_rss: int | None

    def describe(self) -> str:
        """For assertion messages."""
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without bingcrawl's own variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


_run_numbers = itertools.count()

#: Runs ``python -m bingcrawl`` and, at exit, writes the process's own peak RSS (``VmHWM``, in
#: KiB) to the file named by $SECURITY_TEST_HWM_FILE. Not ``wait4``'s ``ru_maxrss``: Linux
#: carries the peak of the pre-exec address space over exec, and a child spawned by a test
#: process (posix_spawn shares the parent's memory until exec; fork copies it) would report
#: the test process's own peak, hundreds of MiB in a full test session. VmHWM belongs to the
#: address space exec created, so it is the crawler's alone (threads included; hash worker
#: processes are not: the memory test runs with --hash-workers 0).
_PROBE = """\
import atexit, os, runpy

def _report_peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["SECURITY_TEST_HWM_FILE"], "w") as out:
        out.write(peak)

atexit.register(_report_peak)
runpy.run_module("bingcrawl", run_name="__main__", alter_sys=True)
"""


async def run_cli(
    args: Sequence[str],
    *,
    logs: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
) -> CliRun:
    """Run ``python -m bingcrawl ARGS`` (through :data:`_PROBE`, which records its peak RSS)
    to completion without blocking the event loop.

    stdout and stderr go to files under ``logs`` (so a chatty child can never block on a
    full pipe). A pidfd tells the loop when the child exits, so nothing polls.
    """
    logs.mkdir(parents=True, exist_ok=True)
    n = next(_run_numbers)
    out_path, err_path = logs / f"run{n}.stdout", logs / f"run{n}.stderr"
    hwm_path = logs / f"run{n}.hwm"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    argv = (sys.executable, "-c", _PROBE, *args)
    child_environment = dict(env) if env is not None else child_env()
    child_environment["SECURITY_TEST_HWM_FILE"] = str(hwm_path)
    pid = os.posix_spawn(
        sys.executable,
        argv,
        child_environment,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(out_path), flags, 0o600),
            (os.POSIX_SPAWN_OPEN, 2, str(err_path), flags, 0o600),
        ],
    )
    pidfd = os.pidfd_open(pid)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await exited
    except TimeoutError:
        timed_out = True
        os.kill(pid, signal.SIGKILL)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        # Reaps the child at once: it has exited (or was just killed).
        _, status = os.waitpid(pid, 0)
    run = CliRun(
        argv=("bingcrawl", *args),
        code=os.waitstatus_to_exitcode(status),
        stdout=out_path.read_text(encoding="utf-8", errors="replace"),
        stderr=err_path.read_text(encoding="utf-8", errors="replace"),
        max_rss=int(hwm_path.read_text()) * 1024 if hwm_path.exists() else None,
    )
    if timed_out:
        raise AssertionError(f"bingcrawl did not finish in {timeout}s\n{run.describe()}")
    return run


def run_main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run the CLI in this process (call it in a thread: it runs its own event loop).

    The logging handler the CLI installs on the root logger is removed afterwards, so later
    tests do not write to a stream that pytest has closed.
    """
    from bingcrawl.cli import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main(list(argv), env=dict(env or {}))
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


# --------------------------------------------------------------------------- header log


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request an app answered."""

    method: str
    path_qs: str
    headers: CIMultiDict[str]
    status: int


@dataclass
class HeaderLog:
    """Records every request an aiohttp application answers, headers included.

    ``attach(app)`` before the app starts (``on_response_prepare`` sees every response,
    streamed ones and error pages included).
    """

    requests: list[SeenRequest] = field(default_factory=list)

    def attach(self, app: web.Application) -> None:
        """Start logging ``app``'s requests."""
        app.on_response_prepare.append(self._record)

    async def _record(self, request: web.Request, response: web.StreamResponse) -> None:
        self.requests.append(
            SeenRequest(request.method, request.path_qs, CIMultiDict(request.headers),
                        response.status)
        )  # fmt: skip

    def matching(self, predicate: Callable[[SeenRequest], bool]) -> list[SeenRequest]:
        """The requests for which ``predicate`` is true."""
        return [r for r in self.requests if predicate(r)]


# --------------------------------------------------------------------------- scripted API


@dataclass
class ScriptedApi:
    """A minimal Bing Image Search v7 endpoint serving a fixed list of results.

    ``results`` are the ``value`` items (at least ``contentUrl``); pages follow ``offset`` and
    ``count`` with ``nextOffset``. ``script`` answers the first requests, one each, in order
    (``None``: the normal answer); ``answer``, when set, answers every later one (e.g. a
    redirect). Extra routes (``routes``)
    serve whatever else a test needs on the same origin.
    """

    results: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[web.Request], web.StreamResponse] | None = None
    script: list[Callable[[web.Request], web.StreamResponse] | None] = field(default_factory=list)
    routes: list[web.RouteDef] = field(default_factory=list)
    log: HeaderLog = field(default_factory=HeaderLog)

    def app(self) -> web.Application:
        """The application (headers of every request go to ``log``)."""
        app = web.Application()
        app.router.add_get("/v7.0/images/search", self._search)
        app.add_routes(self.routes)
        self.log.attach(app)
        return app

    async def _search(self, request: web.Request) -> web.StreamResponse:
        scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            return scripted(request)
        if self.answer is not None:
            return self.answer(request)
        offset = int(request.query.get("offset", "0"))
        count = int(request.query.get("count", "35"))
        page = self.results[offset : offset + count]
        body = {
            "_type": "Images",
            "totalEstimatedMatches": len(self.results),
            "nextOffset": offset + len(page),
            "value": page,
        }
        return web.json_response(body)


def api_error(status: int, code: str, **headers: str) -> Callable[[web.Request], web.Response]:
    """An answer: ``status`` with an ErrorResponse body of ``code``."""
    body = {"_type": "ErrorResponse", "errors": [{"code": code, "message": f"scripted {code}"}]}
    return lambda _request: web.json_response(body, status=status, headers=headers)


def raw_answer(
    status: int, body: bytes, content_type: str
) -> Callable[[web.Request], web.Response]:
    """An answer: ``status`` with ``body`` as is."""
    return lambda _request: web.Response(status=status, body=body, content_type=content_type)


def image_item(url: str, n: int, **extra: Any) -> dict[str, Any]:
    """A search result for ``url``."""
    return {
        "contentUrl": url,
        "imageId": f"{n:040X}",
        "name": f"result {n}",
        "encodingFormat": "jpeg",
        **extra,
    }


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1") -> Any:
    """Serve ``app`` on ``host`` and a free port for the block; yields ``http://host:port``."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- outputs


def needle_forms(secret: str) -> list[bytes]:
    """The byte strings a leak of ``secret`` could take in a file or a stream (built here,
    independently of the redaction code under test)."""
    forms = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}
    forms |= {re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), f) for f in forms}
    return sorted({f.encode() for f in forms} | {secret.encode("utf-16-le")})


def files_under(root: Path) -> Iterator[Path]:
    """Every regular file below ``root`` (symlinks not followed)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path


def leaks(secret: str, paths: Iterable[Path], texts: Mapping[str, str] | None = None) -> list[str]:
    """Where ``secret`` (in any of :func:`needle_forms`) appears: file paths and text names."""
    needles = needle_forms(secret)
    found = []
    for path in paths:
        data = path.read_bytes()
        if path.suffix == ".parquet":
            # Parquet pages may be compressed: search the decoded rows as well as the bytes.
            import pyarrow.parquet as pq

            data += repr(pq.read_table(path).to_pylist()).encode("utf-8", "surrogateescape")
        if any(n in data for n in needles):
            found.append(str(path))
    for name, text in (texts or {}).items():
        data = text.encode("utf-8", "surrogateescape")
        if any(n in data for n in needles):
            found.append(name)
    return found


def db_rows(db: Path, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    """Rows of a read-only query on a checkpoint."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()
