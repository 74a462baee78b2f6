"""Tools for hostile-input tests: the CLI in a child process with its peak memory, a scripted
search API, a request-header log for any aiohttp app, and a grep over everything a run left.

Everything listens on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
    #: Peak resident set size in bytes (``wait4`` ru_maxrss: the largest of the process and of
    #: the children it waited for, e.g. hash workers).
    max_rss: int

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


async def run_cli(
    args: Sequence[str],
    *,
    logs: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
) -> CliRun:
    """Run ``python -m bingcrawl ARGS`` to completion without blocking the event loop.

    stdout and stderr go to files under ``logs`` (so a chatty child can never block on a
    full pipe). The child is spawned directly and reaped with ``wait4``, which is what gives
    its peak RSS; a pidfd tells the loop when it exits, so nothing polls.
    """
    logs.mkdir(parents=True, exist_ok=True)
    n = next(_run_numbers)
    out_path, err_path = logs / f"run{n}.stdout", logs / f"run{n}.stderr"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    argv = (sys.executable, "-m", "bingcrawl", *args)
    pid = os.posix_spawn(
        sys.executable,
        argv,
        dict(env) if env is not None else child_env(),
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
        _, status, usage = os.wait4(pid, 0)
    run = CliRun(
        argv=argv,
        code=os.waitstatus_to_exitcode(status),
        stdout=out_path.read_text(encoding="utf-8", errors="replace"),
        stderr=err_path.read_text(encoding="utf-8", errors="replace"),
        max_rss=usage.ru_maxrss * 1024,  # Linux reports KiB
    )
    if timed_out:
        raise AssertionError(f"bingcrawl did not finish in {timeout}s\n{run.describe()}")
    return run


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
    ``count`` with ``nextOffset``. ``answer`` replaces the normal answer when set (e.g. a
    redirect). Extra routes (``routes``) serve whatever else a test needs on the same origin.
    """

    results: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[web.Request], web.StreamResponse] | None = None
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
    """The byte strings a leak of ``secret`` could take in a file or a stream."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote(secret).replace("%20", "+")}
    return sorted({f.encode() for f in forms} | {secret.encode("utf-16-le")})


def files_under(root: Path) -> Iterator[Path]:
    """Every regular file below ``root`` (symlinks not followed)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path


def leaks(secret: str, paths: Iterable[Path], texts: Mapping[str, str] = {}) -> list[str]:
    """Where ``secret`` (in any of :func:`needle_forms`) appears: file paths and text names."""
    needles = needle_forms(secret)
    found = []
    for path in paths:
        data = path.read_bytes()
        if any(n in data for n in needles):
            found.append(str(path))
    for name, text in texts.items():
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
