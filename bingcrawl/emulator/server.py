"""Run the emulator: in this event loop (:class:`EmulatorServer`) or in a child process.

``EmulatorServer`` is what tests and ``bingcrawl demo`` use: real HTTP on loopback, a free
port, and direct access to the application's state as ground truth. Benchmarks use
:func:`start_emulator_process` so the emulator's CPU work does not share the client's loop.
"""

from __future__ import annotations

import contextlib
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Self

from aiohttp import web

from bingcrawl.emulator.app import create_app
from bingcrawl.emulator.config import EmulatorConfig
from bingcrawl.emulator.corpus import Corpus
from bingcrawl.emulator.imagehost import ImageHost
from bingcrawl.emulator.state import CORPUS, IMAGE_HOST, STATE, EmulatorState

__all__ = [
    "LISTENING_PREFIX",
    "EmulatorServer",
    "emulator_process",
    "start_emulator_process",
    "stop_emulator_process",
]

#: The first line ``python -m bingcrawl.emulator`` writes to stdout, followed by its URL.
LISTENING_PREFIX = "listening on "

#: The request-line limit: aiohttp's default (8190) would refuse long URLs with its own 400
#: before the emulator could answer them with the reference's 404.
_MAX_LINE = 64 * 1024

#: Grace period for in-flight requests on close. aiohttp's default (60 s) would let one
#: stalled fault stream (slow_drip, huge_chunked) hold a test's teardown for a minute.
_SHUTDOWN_TIMEOUT = 1.0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EmulatorServer:
    """The emulator served on ``host:port`` (port 0: a free one) for the life of a context.

    ``async with EmulatorServer(config) as server:`` then use ``server.base_url``
    (``"http://127.0.0.1:PORT/"``, the API endpoint and the image origin), and
    ``server.state`` / ``server.image_host.requests`` as ground truth. Closing twice is
    harmless; a server is started once.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.host = host
        self._requested_port = port
        self.app: web.Application = create_app(self.config, clock=clock, wall_clock=wall_clock)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._started = False

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        return f"<EmulatorServer {where}>"

    @property
    def state(self) -> EmulatorState:
        """The request log and counters (see :class:`EmulatorState`)."""
        return self.app[STATE]

    @property
    def corpus(self) -> Corpus:
        """The corpus behind every answer: ground truth of each image URL."""
        return self.app[CORPUS]

    @property
    def image_host(self) -> ImageHost:
        """The image host (``requests`` counts downloads per image key)."""
        return self.app[IMAGE_HOST]

    @property
    def port(self) -> int:
        """The bound TCP port (after start)."""
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/``: the API endpoint and the origin of image URLs."""
        return f"http://{_url_host(self.host)}:{self.port}/"

    async def start(self) -> None:
        """Bind and start serving."""
        if self._started:
            raise RuntimeError("an EmulatorServer is started only once")
        self._started = True
        runner = web.AppRunner(
            self.app,
            access_log=None,
            max_line_size=_MAX_LINE,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self._requested_port, reuse_address=True)
            await site.start()
        except BaseException:
            await self.close()
            raise
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving; harmless when already closed."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def start_emulator_process(
    config_args: Sequence[str],
    *,
    python: str = sys.executable,
    timeout: float = 60.0,
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m bingcrawl.emulator [config_args]`` and return ``(process, base_url)``.

    ``--port 0`` is added unless ``config_args`` names a port. The URL is read from the
    child's first stdout line; the caller owns the process (:func:`stop_emulator_process`).
    Raises ``RuntimeError`` if the child exits or stays silent for ``timeout`` seconds.
    """
    args = list(config_args)
    if "--port" not in args and not any(a.startswith("--port=") for a in args):
        args += ["--port", "0"]
    proc = subprocess.Popen(
        [python, "-m", "bingcrawl.emulator", *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    if proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives a pipe
        raise RuntimeError("no stdout pipe")
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith(LISTENING_PREFIX):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(
            f"the emulator process did not start (exit status {proc.returncode}, "
            f"first line {line!r})"
        )
    return proc, line[len(LISTENING_PREFIX) :].strip()


@contextlib.contextmanager
def emulator_process(config_args: Sequence[str], *, timeout: float = 60.0) -> Iterator[str]:
    """Run the emulator in a child process for the ``with`` block; yields its base URL.

    The child is terminated (then killed if it lingers) and its pipe closed on exit.
    """
    proc, base_url = start_emulator_process(config_args, timeout=timeout)
    try:
        yield base_url
    finally:
        stop_emulator_process(proc)


def stop_emulator_process(proc: subprocess.Popen[str], *, grace: float = 10.0) -> None:
    """Terminate a child from :func:`start_emulator_process`, kill it if it lingers past
    ``grace`` seconds, and close its pipe."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
