"""Loopback network pieces for the download, policy and security tests: a raw TCP server
(scripted replies, or a canary that must never be reached) and scripted DNS resolvers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["CANARY_HOST", "NumericResolver", "RawServer", "ScriptedResolver"]

CANARY_HOST = "127.0.0.2"


class RawServer:
    """A bare TCP server: counts connections and answers each with a fixed byte string.

    With ``reply=None`` it closes every connection at once (a canary). Otherwise it reads
    the request head and writes ``reply`` verbatim, then closes: enough to script broken
    HTTP responses aiohttp's own server refuses to produce.
    """

    def __init__(self, host: str, reply: bytes | None = None) -> None:
        self.host = host
        self.reply = reply
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.reply is not None:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(self.reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client may hang up first; the count is what matters
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@dataclass
class ScriptedResolver(AbstractResolver):
    """A DNS resolver whose answers are scripted per host name, call after call.

    ``answers[name]`` is a list of answers (each a list of IPs); call ``n`` gets answer
    ``min(n, len - 1)``, so ``[["127.0.0.1"], ["127.0.0.2"]]`` rebinds after the first lookup.
    """

    answers: dict[str, list[list[str]]]
    calls: list[str] = field(default_factory=list)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        seq = self.answers.get(host)
        if not seq:
            raise socket.gaierror(socket.EAI_NONAME, f"unknown host {host}")
        n = sum(1 for h in self.calls if h == host)
        self.calls.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in seq[min(n, len(seq) - 1)]
        ]

    async def close(self) -> None:
        pass


class NumericResolver(AbstractResolver):
    """Resolves numeric hosts the way the system resolver does, and never asks DNS.

    ``getaddrinfo`` with ``AI_NUMERICHOST`` reads legacy forms such as ``0x7f.0.0.2``, which
    is exactly what a real resolver would hand aiohttp for them; names fail.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
        return [
            ResolveResult(
                hostname=host,
                host=str(sockaddr[0]),
                port=port,
                family=fam,
                proto=proto,
                flags=socket.AI_NUMERICHOST,
            )
            for fam, _, proto, _, sockaddr in infos
        ]

    async def close(self) -> None:
        pass
