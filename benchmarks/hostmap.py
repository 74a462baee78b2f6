"""Many host names on one loopback emulator: the name map every tool of a run uses.

The ``network`` scenario spreads its URLs over thousands of names under ``web.test`` (a
reserved top-level domain: no real DNS server answers it), all served by one emulator on
127.0.0.1 that behaves per ``Host`` header. Each tool is told to connect those names to
127.0.0.1 without asking DNS: bingcrawl with its own ``--resolve``, the bare loop with the
same resolver, and the peers (img2dataset, icrawler: ``urllib`` / ``requests``, both through
``socket.getaddrinfo``) by :func:`install_from_env`, which their wrappers call at import so
that img2dataset's spawned processes run it too. Only names of the map are rewritten, and only
to loopback addresses: nothing leaves the machine.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

from bingcrawl.fetch.netpolicy import StaticResolver, parse_resolve

__all__ = ["ENV", "install_from_env", "pairs_from_env", "resolve_value"]

#: The environment variable carrying the map (``--resolve`` syntax, comma-separated).
ENV = "BENCHMARK_RESOLVE"

_installed = False


def resolve_value(domain: str, address: str = "127.0.0.1") -> str:
    """The ``--resolve`` value sending every name under ``domain`` to ``address``."""
    return f"*.{domain}:{address}"


def pairs_from_env() -> tuple[tuple[str, str], ...]:
    """The map of :data:`ENV` as :func:`~bingcrawl.fetch.netpolicy.parse_resolve` pairs
    (empty when unset); an address outside loopback is refused."""
    pairs = parse_resolve(v for v in os.environ.get(ENV, "").split(",") if v)
    for _, address in pairs:
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"{ENV}: {address} is not a loopback address")
    return pairs


def install_from_env() -> bool:
    """Make ``socket.getaddrinfo`` answer the names of :data:`ENV` (once per process)."""
    global _installed
    if _installed:
        return True
    pairs = pairs_from_env()
    if not pairs:
        return False
    lookup = StaticResolver(pairs).lookup
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        mapped = lookup(host) if isinstance(host, str) else None
        return original(mapped or host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    _installed = True
    return True
