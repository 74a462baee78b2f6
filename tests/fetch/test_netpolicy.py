"""The network policy (SSRF guard): address rules, URL pre-check, and the connect-time check.

The wire tests use a policy that allows only 127.0.0.1/32 and a canary listening on
127.0.0.2: a refused address must never reach ``connect()``, so the canary counts zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from bingcrawl import eventloop
from bingcrawl.errors import ConfigError
from bingcrawl.fetch.netpolicy import (
    BlockedAddressError,
    NetworkPolicy,
    PolicyResolver,
    check_url,
    guarded_socket_factory,
    make_connector,
    parse_ipv4_literal,
    url_refusal,
)
from tests.support.net import CANARY_HOST, NumericResolver, RawServer, ScriptedResolver

BLOCKED_URLS = [
    # 127.0.0.2 (loopback) in every written form
    "http://127.0.0.2/",
    "https://127.0.0.2:8443/a.jpg",
    "http://2130706434/",
    "http://0177.0.0.2/",
    "http://0177.0000.0000.0002/",
    "http://0x7f.0.0.2/",
    "http://0X7F.0x0.0x0.0x2/",
    "http://0x7f000002/",
    "http://017700000002/",
    "http://127.2/",
    "http://127.0.2/",
    "http://0x7f.2/",
    "http://127.0.0.2./",
    "http://127.0.0.2../",
    "http://[::ffff:127.0.0.2]/",
    "http://[::ffff:7f00:2]/",
    "http://[0:0:0:0:0:ffff:127.0.0.2]/",
    "http://[::127.0.0.2]/",
    "http://[64:ff9b::127.0.0.2]/",
    "http://[2002:7f00:2::]/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    # cloud metadata, private, CGNAT and friends
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://[::ffff:169.254.169.254]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://0/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "http://[64:ff9b:1::a00:1]/",
    "http://[2002:c0a8:101::]/",  # 6to4 of 192.168.1.1
]

BAD_URLS = [
    "ftp://example.com/a.jpg",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "data:image/png;base64,AAAA",
    "gopher://127.0.0.1:70/",
    "//example.com/a.jpg",
    "not a url",
    "http://user:pass@example.com/a.jpg",
    "http://user@example.com/a.jpg",
    "http:///a.jpg",
    "http://exa mple.com/",
    "http://1.2.3.4.5/",
    "http://example.123/",
    "http://08.0.0.1/",
    "http://[::1/",
    "http://example.com:99999/",
    "http://0x08.0x08.0x08.0x08/",  # 8.8.8.8, allowed, but aiohttp refuses the legacy form
    "http://134744072/",
]

ALLOWED_URLS = [
    "http://example.com/a.jpg",
    "https://images.example.org:8443/x.png?size=large#frag",
    "http://8.8.8.8/x.jpg",
    "http://[2606:4700:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",
    "http://[2002:808:808::]/",
    "http://bücher.example/",
    "http://under_score.example.com/",
    "http://localhost/",  # a name: judged by what it resolves to, at connect time
    "http://EXAMPLE.com./",
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
def test_blocked_urls_are_refused(url: str, dl_policy: NetworkPolicy) -> None:
    assert check_url(url) == "blocked_address"
    refusal = url_refusal(url, dl_policy)
    assert refusal is not None
    assert refusal.error_class == "blocked_address"
    assert refusal.detail


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_urls_are_refused(url: str) -> None:
    assert check_url(url) == "bad_url"


@pytest.mark.parametrize("url", ALLOWED_URLS)
def test_public_urls_pass(url: str) -> None:
    assert check_url(url) is None


def test_allow_list_admits_the_emulator(dl_policy: NetworkPolicy) -> None:
    assert check_url("http://127.0.0.1:8000/img.jpg", dl_policy) is None
    assert check_url("http://[::ffff:127.0.0.1]:8000/", dl_policy) is None
    assert check_url("http://127.0.0.1:8000/img.jpg") == "blocked_address"
    assert check_url("http://127.0.0.2:8000/", dl_policy) == "blocked_address"
    # Allowed address, but a legacy spelling aiohttp would refuse anyway.
    assert check_url("http://127.1:8000/", dl_policy) == "bad_url"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),
        ("2002:808:808::1", True),
        ("192.0.0.1", False),
        ("192.88.99.1", False),
        ("100.127.255.255", False),
        ("100.128.0.0", True),
        ("172.32.0.1", True),
        ("172.31.255.255", False),
        ("198.20.0.1", True),
        ("198.19.255.255", False),
        ("::ffff:10.0.0.1", False),
        ("::a00:1", False),
        ("2001:2::1", False),
        ("2001:db8:ffff::1", False),
        ("3fff::1", False),
        ("100::1", False),
        ("5f00::1", False),
        ("4000::1", False),
    ],
)
def test_default_policy_table(address: str, allowed: bool) -> None:
    policy = NetworkPolicy()
    assert policy.is_allowed(address) is allowed
    assert policy.is_allowed(ipaddress.ip_address(address)) is allowed
    assert (policy.blocked_reason(address) is None) is allowed


def test_allow_networks_extend_the_default() -> None:
    policy = NetworkPolicy.from_cidrs(["10.0.0.0/8", "fd00::/8", " 127.0.0.1 "])
    assert policy.is_allowed("10.1.2.3")
    assert policy.is_allowed("::ffff:10.1.2.3")  # judged by the IPv4 it carries
    assert policy.is_allowed("fd00::2")
    assert policy.is_allowed("127.0.0.1")
    assert not policy.is_allowed("127.0.0.2")
    assert not policy.is_allowed("fc00::1")
    assert not policy.is_allowed("192.168.1.1")


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "300.0.0.0/8", "foo", "", "10.0.0.0/33", "::1/129"])
def test_from_cidrs_rejects_bad_values(cidr: str) -> None:
    with pytest.raises(ConfigError) as info:
        NetworkPolicy.from_cidrs([cidr])
    assert info.value.option == "--allow-network"
    assert repr(cidr) in str(info.value)


def test_policy_rejects_non_networks() -> None:
    with pytest.raises(ConfigError, match="--allow-network"):
        NetworkPolicy(allow=("10.0.0.0/8",))  # type: ignore[arg-type]


_ENCODERS = st.sampled_from(["dec", "oct", "hex", "HEX"])


def _encode(value: int, how: str) -> str:
    if how == "oct":
        return "0" + format(value, "o")
    if how == "hex":
        return f"0x{value:x}"
    if how == "HEX":
        return f"0X{value:X}"
    return str(value)


@settings(max_examples=150, deadline=None)
@given(
    number=st.integers(0, 2**32 - 1),
    parts=st.integers(1, 4),
    hows=st.lists(_ENCODERS, min_size=4, max_size=4),
    trailing_dot=st.booleans(),
)
def test_every_ipv4_spelling_is_judged_by_its_address(
    number: int, parts: int, hows: list[str], trailing_dot: bool
) -> None:
    raw = number.to_bytes(4, "big")
    values = [*raw[: parts - 1], int.from_bytes(raw[parts - 1 :], "big")]
    host = ".".join(_encode(v, how) for v, how in zip(values, hows, strict=False))
    host += "." if trailing_dot else ""
    address = ipaddress.IPv4Address(number)
    assert parse_ipv4_literal(host) == address

    verdict = check_url(f"http://{host}/x.jpg")
    if not NetworkPolicy().is_allowed(address):
        assert verdict == "blocked_address"
    elif host.rstrip(".") == str(address):
        assert verdict is None
    else:
        assert verdict == "bad_url"


@pytest.mark.parametrize(
    "sockaddr",
    [
        (socket.AF_INET, ("127.0.0.2", 80)),
        (socket.AF_INET, ("169.254.169.254", 80)),
        (socket.AF_INET, ("10.0.0.1", 443)),
        (socket.AF_INET6, ("::1", 80, 0, 0)),
        (socket.AF_INET6, ("::ffff:127.0.0.2", 80, 0, 0)),
        (socket.AF_INET6, ("64:ff9b::a9fe:a9fe", 80, 0, 0)),
        (socket.AF_INET6, ("2002:a00:1::", 80, 0, 0)),
        (socket.AF_INET6, ("fe80::1", 80, 0, 2)),
        (socket.AF_INET6, ("fd00::2", 80, 0, 0)),
    ],
)
def test_socket_factory_refuses_blocked_addresses(
    sockaddr: tuple[int, tuple[object, ...]], dl_policy: NetworkPolicy
) -> None:
    family, addr = sockaddr
    factory = guarded_socket_factory(dl_policy)
    with pytest.raises(BlockedAddressError) as info:
        factory((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr))
    assert info.value.address == addr[0]
    assert isinstance(info.value, OSError)


def test_socket_factory_creates_sockets_for_allowed_addresses(dl_policy: NetworkPolicy) -> None:
    factory = guarded_socket_factory(dl_policy)
    sock = factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80)))
    with sock:
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM


async def test_policy_resolver_filters_answers(dl_policy: NetworkPolicy) -> None:
    inner = ScriptedResolver(
        {
            "mixed.test": [["127.0.0.2", "127.0.0.1", "10.0.0.1", "::1"]],
            "private.test": [["127.0.0.2", "::1"]],
            "empty.test": [[]],
        }
    )
    resolver = PolicyResolver(inner, dl_policy)
    kept = await resolver.resolve("mixed.test", 80)
    assert [r["host"] for r in kept] == ["127.0.0.1"]
    with pytest.raises(BlockedAddressError) as info:
        await resolver.resolve("private.test", 80)
    assert "127.0.0.2" in str(info.value)
    assert "::1" in str(info.value)
    with pytest.raises(OSError, match="no addresses"):
        await resolver.resolve("empty.test", 80)


# --------------------------------------------------------------------------- on the wire


def _ok_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    return app


@pytest.fixture
async def dl_ok_server() -> AsyncIterator[TestServer]:
    server = TestServer(_ok_app(), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@contextlib.asynccontextmanager
async def _twin() -> AsyncIterator[tuple[TestServer, RawServer]]:
    """An OK server on 127.0.0.1:P and a canary on 127.0.0.2:P (same port, as DNS gives)."""
    for _ in range(20):
        canary = RawServer(CANARY_HOST)
        await canary.start()
        server = TestServer(_ok_app(), host="127.0.0.1", port=canary.port)
        try:
            await server.start_server()
        except OSError:
            await canary.close()
            continue
        try:
            yield server, canary
        finally:
            await server.close()
            await canary.close()
        return
    pytest.fail("could not bind a port on both 127.0.0.1 and 127.0.0.2")


@pytest.fixture
async def dl_twin() -> AsyncIterator[tuple[TestServer, RawServer]]:
    """:func:`_twin` as a fixture."""
    async with _twin() as twin:
        yield twin


def _blocked_in_chain(exc: BaseException) -> bool:
    seen: list[BaseException | None] = [exc, exc.__cause__, getattr(exc, "os_error", None)]
    return any(isinstance(e, BlockedAddressError) for e in seen)


LOOPBACK_LITERALS = [
    "127.0.0.2",
    "2130706434",
    "0177.0.0.2",
    "0x7f.0.0.2",
    "0x7f.2",
    "127.2",
    "0x7f000002",
    "[::ffff:127.0.0.2]",
    "[::ffff:7f00:2]",
    "[0:0:0:0:0:ffff:7f00:2]",
]


@pytest.mark.parametrize("host", LOOPBACK_LITERALS)
async def test_literals_are_refused_at_connect_time(
    host: str, dl_policy: NetworkPolicy, dl_canary: RawServer
) -> None:
    """Bypass the URL check: the connector alone must keep 127.0.0.2 unreachable."""
    resolver = NumericResolver()
    connector = make_connector(dl_policy, limit=4, limit_per_host=2, resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientError) as info:
            async with session.get(f"http://{host}:{dl_canary.port}/"):
                pass
    # aiohttp itself refuses some legacy spellings; everything else is our BlockedAddressError.
    assert _blocked_in_chain(info.value) or isinstance(info.value, aiohttp.InvalidURL)
    assert dl_canary.connections == 0


async def test_ipv6_loopback_refused_at_connect_time(dl_policy: NetworkPolicy) -> None:
    canary6 = RawServer("::1")
    await canary6.start()
    try:
        connector = make_connector(
            dl_policy, limit=4, limit_per_host=2, resolver=ScriptedResolver({})
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                async with session.get(canary6.url()):
                    pass
        assert _blocked_in_chain(info.value)
        assert canary6.connections == 0
    finally:
        await canary6.close()


async def test_ip_literal_never_reaches_the_resolver_but_is_still_checked(
    dl_policy: NetworkPolicy, dl_canary: RawServer, dl_ok_server: TestServer
) -> None:
    resolver = ScriptedResolver({})
    connector = make_connector(dl_policy, limit=4, limit_per_host=2, resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            async with session.get(dl_canary.url()):
                pass
        async with session.get(dl_ok_server.make_url("/fine")) as resp:
            assert await resp.text() == "ok"
    assert _blocked_in_chain(info.value)
    assert resolver.calls == []
    assert dl_canary.connections == 0


async def test_dns_rebinding_is_refused_at_connect_time(
    dl_policy: NetworkPolicy, dl_twin: tuple[TestServer, RawServer]
) -> None:
    server, canary = dl_twin
    resolver = ScriptedResolver({"rebind.test": [["127.0.0.1"], [CANARY_HOST]]})
    connector = make_connector(
        dl_policy, limit=4, limit_per_host=2, resolver=resolver, use_dns_cache=False
    )
    url = f"http://rebind.test:{server.port}/x"
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url, headers={"Connection": "close"}) as resp:
            assert await resp.text() == "ok"
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            async with session.get(url):
                pass
    assert _blocked_in_chain(info.value)
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert canary.connections == 0


async def _socket_factory_alone(
    policy: NetworkPolicy, twin: tuple[TestServer, RawServer]
) -> tuple[int, BaseException, int]:
    """First fetch (allowed address) status, second fetch's error, canary connections."""
    server, canary = twin
    resolver = ScriptedResolver({"rebind.test": [["127.0.0.1"], [CANARY_HOST, CANARY_HOST]]})
    connector = aiohttp.TCPConnector(
        resolver=resolver,
        use_dns_cache=False,
        socket_factory=guarded_socket_factory(policy),
    )
    url = f"http://rebind.test:{server.port}/x"
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url, headers={"Connection": "close"}) as resp:
            status = resp.status
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            async with session.get(url):
                pass
    return status, info.value, canary.connections


async def test_socket_factory_alone_stops_rebinding(
    dl_policy: NetworkPolicy, dl_twin: tuple[TestServer, RawServer]
) -> None:
    """Without the filtering resolver, the connect-time hook is still enough."""
    status, error, connections = await _socket_factory_alone(dl_policy, dl_twin)
    assert status == 200
    assert _blocked_in_chain(error)
    assert connections == 0


def test_socket_factory_alone_stops_rebinding_on_uvloop(dl_policy: NetworkPolicy) -> None:
    """The same on uvloop, the CLI's default loop: its transports take the guarded socket."""
    pytest.importorskip("uvloop")

    async def scenario() -> tuple[str, tuple[int, BaseException, int]]:
        async with _twin() as twin:
            loop = type(asyncio.get_running_loop()).__module__
            return loop, await _socket_factory_alone(dl_policy, twin)

    loop, (status, error, connections) = eventloop.run(scenario(), "uvloop")
    assert loop.startswith("uvloop")
    assert status == 200
    assert _blocked_in_chain(error)
    assert connections == 0


async def test_mixed_answer_connects_only_to_the_allowed_address(
    dl_policy: NetworkPolicy, dl_twin: tuple[TestServer, RawServer]
) -> None:
    server, canary = dl_twin
    resolver = ScriptedResolver({"mixed.test": [[CANARY_HOST, "127.0.0.1", CANARY_HOST]]})
    connector = make_connector(dl_policy, limit=4, limit_per_host=2, resolver=resolver)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://mixed.test:{server.port}/x") as resp,
    ):
        assert await resp.text() == "ok"
    assert canary.connections == 0


async def test_canary_sees_unguarded_connections(dl_canary: RawServer) -> None:
    """Control: the canary does count a connection when nothing guards it."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(dl_canary.url()):
                pass
    assert dl_canary.connections >= 1
