"""The image host as a web of many hosts: traits per Host name, errors per key, the ``web``
picture sizes and the flags, over real loopback HTTP against the emulator."""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Callable

import aiohttp
import pytest

from bingcrawl.emulator import EmulatorServer, ImageHostConfig
from bingcrawl.emulator.cli import add_arguments, config_from_args
from bingcrawl.emulator.corpus import Corpus, CorpusConfig
from bingcrawl.emulator.network import (
    BEHAVIOURS,
    ERROR_STATUSES,
    HostTraits,
    NetworkProfile,
    host_name,
)
from bingcrawl.emulator.server import start_emulator_process
from bingcrawl.emulator.synth import NAMESPACE_BITS, SIZE_CLASSES, Synthesizer, encode
from bingcrawl.errors import ConfigError
from tests.support.emulator import StartEmulator

#: Tiny latencies: the served tests wait a millisecond or two per request.
QUICK = NetworkProfile(seed=5, latency_median=0.001, latency_p99=0.002)
SHORT = aiohttp.ClientTimeout(total=0.3)  # a client's deadline, not a sleep


def names(n: int) -> list[str]:
    return [f"h{i:05d}.web.test" for i in range(n)]


def base_key(i: int) -> str:
    """The URL key of an original JPEG: served by any corpus, never a corpus fault."""
    return f"b/{(9 << NAMESPACE_BITS) + i:014x}.jpg"


def hosts_of(profile: NetworkProfile, behaviour: str, count: int) -> list[str]:
    found = (n for n in names(100_000) if profile.host(n).behaviour == behaviour)
    return [next(found) for _ in range(count)]


def first_host(profile: NetworkProfile, behaviour: str) -> str:
    return hosts_of(profile, behaviour, 1)[0]


def first_key(profile: NetworkProfile, want: Callable[[int | None], bool]) -> str:
    return next(base_key(i) for i in range(100_000) if want(profile.error(base_key(i))))


# -- the profile: pure functions of (seed, name) and (seed, key) ---------------------------------


def test_host_traits_are_deterministic_and_shared_as_configured() -> None:
    profile = NetworkProfile(seed=3)
    hosts = names(20_000)
    traits = [profile.host(n) for n in hosts]
    assert traits == [NetworkProfile(seed=3).host(n) for n in hosts]  # a fresh cache agrees
    assert traits != [NetworkProfile(seed=4).host(n) for n in hosts]
    assert {t.behaviour for t in traits} == set(BEHAVIOURS)
    share = {b: sum(t.behaviour == b for t in traits) / len(traits) for b in BEHAVIOURS}
    assert share["hang"] == pytest.approx(0.01, abs=0.0025)
    assert share["drip"] == pytest.approx(0.01 * 0.99, abs=0.0025)
    latencies = [t.latency for t in traits]
    assert statistics.median(latencies) == pytest.approx(0.2, rel=0.1)
    assert sum(x > 5.0 for x in latencies) / len(latencies) == pytest.approx(0.01, abs=0.0025)
    assert min(latencies) > 0
    assert profile.sigma == pytest.approx(1.3835, abs=1e-3)  # ln(25) / 2.3263


def test_hang_wins_over_drip_and_shares_can_be_everything() -> None:
    both = NetworkProfile(hang_share=1.0, drip_share=1.0)
    assert {both.host(n).behaviour for n in names(200)} == {"hang"}
    drip = NetworkProfile(hang_share=0.0, drip_share=1.0)
    assert {drip.host(n).behaviour for n in names(200)} == {"drip"}
    calm = NetworkProfile(hang_share=0.0, drip_share=0.0, latency_median=0.0, latency_p99=0.0)
    assert {calm.host(n) for n in names(200)} == {HostTraits(latency=0.0, behaviour="normal")}


def test_error_statuses_are_split_per_key() -> None:
    profile = NetworkProfile(seed=1)
    keys = [base_key(i) for i in range(60_000)]
    errors = [profile.error(k) for k in keys]
    assert errors == [NetworkProfile(seed=1).error(k) for k in keys]
    failing = [e for e in errors if e is not None]
    assert len(failing) / len(keys) == pytest.approx(0.03, abs=0.004)
    for status, share in ERROR_STATUSES:
        assert failing.count(status) / len(failing) == pytest.approx(share, abs=0.05), status
    assert NetworkProfile(error_share=0.0).error(keys[0]) is None
    assert {NetworkProfile(error_share=1.0).error(k) for k in keys[:400]} == {404, 403, 500, 503}


def test_delay_is_the_host_latency_jittered_per_key() -> None:
    profile = NetworkProfile(seed=2, jitter=0.25)
    name = "h00042.web.test"
    latency = profile.host(name).latency
    delays = [profile.delay(name, base_key(i)) for i in range(2000)]
    assert all(0.75 * latency <= d <= 1.25 * latency for d in delays)
    assert statistics.mean(delays) == pytest.approx(latency, rel=0.03)
    assert max(delays) - min(delays) > 0.4 * latency  # spread over the whole range
    assert delays[:50] == [profile.delay(name, base_key(i)) for i in range(50)]
    steady = NetworkProfile(seed=2, jitter=0.0)
    assert {steady.delay(name, base_key(i)) for i in range(50)} == {latency}


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("H0042.Web.Test:8080", "h0042.web.test"),
        ("h0042.web.test", "h0042.web.test"),
        ("h0042.web.test.:80", "h0042.web.test"),
        ("127.0.0.1:4321", "127.0.0.1"),
        ("[::1]:80", "[::1]"),
        ("[::1]", "[::1]"),
    ],
)
def test_host_name_strips_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        ({"seed": -1}, "seed"),
        ({"latency_median": -0.1}, "latency_median"),
        ({"latency_median": float("inf")}, "latency_median"),
        ({"latency_median": 0.0, "latency_p99": 1.0}, "latency_median"),
        ({"latency_median": 1.0, "latency_p99": 0.5}, "latency_p99"),
        ({"hang_share": 1.5}, "hang_share"),
        ({"drip_share": -0.1}, "drip_share"),
        ({"error_share": "lots"}, "error_share"),
        ({"jitter": 2.0}, "jitter"),
        ({"drip_rate": 0}, "drip_rate"),
        ({"drip_rate": 1.5}, "drip_rate"),
        ({"drip_max": -1.0}, "drip_max"),
    ],
)
def test_profile_validation_names_the_field(fields: dict[str, object], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        NetworkProfile(**fields)  # type: ignore[arg-type]
    assert info.value.option == option


def test_image_host_config_takes_only_a_profile() -> None:
    assert ImageHostConfig(network=QUICK).network is QUICK
    with pytest.raises(ConfigError) as info:
        ImageHostConfig(network="web")  # type: ignore[arg-type]
    assert info.value.option == "network"


def test_profiles_compare_by_value_not_by_their_cache() -> None:
    used = NetworkProfile(seed=7)
    used.host("h1.web.test")
    assert used == NetworkProfile(seed=7)
    assert hash(used) == hash(NetworkProfile(seed=7))
    assert "_hosts" not in repr(used)


# -- served: each Host name its own server --------------------------------------------------


async def serve(start_emulator: StartEmulator, profile: NetworkProfile) -> EmulatorServer:
    return await start_emulator(images=ImageHostConfig(network=profile))


async def test_a_key_behaves_per_host_name(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await serve(start_emulator, QUICK)
    hang, normal = first_host(QUICK, "hang"), first_host(QUICK, "normal")
    key = first_key(QUICK, lambda status: status is None)
    url = f"{server.base_url}img/{key}"
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(url, headers={"Host": f"{hang}:80"}, timeout=SHORT) as resp:
            pytest.fail(f"a hanging host answered {resp.status}")
    async with http.get(url, headers={"Host": normal.upper()}) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/jpeg"
        body = await resp.read()
    host = server.image_host
    spec = server.corpus.spec(key)
    assert spec is not None
    assert body == server.corpus.image_bytes(spec)
    await asyncio.wait_for(host.wait_idle(), 10)  # the hung handler noticed its client left
    assert host.network_requests == {"hang": 1, "normal": 1}
    assert host.requests[key] == 2
    assert host.bytes_sent == len(body)


async def test_a_hanging_host_still_answers_its_origin_files(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await serve(start_emulator, QUICK)
    hang = first_host(QUICK, "hang")
    for path in ("robots.txt", ".well-known/tdmrep.json"):
        async with http.get(server.base_url + path, headers={"Host": hang}, timeout=SHORT) as r:
            assert r.status == 404
    assert server.image_host.origin_requests[f"{hang}/robots.txt"] == 1
    assert server.image_host.network_requests == {}


async def test_transient_503_then_the_image(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await serve(start_emulator, QUICK)
    normal = first_host(QUICK, "normal")
    key = first_key(QUICK, lambda status: status == 503)
    url = f"{server.base_url}img/{key}"
    statuses = []
    for _ in range(3):
        async with http.get(url, headers={"Host": normal}) as resp:
            statuses.append(resp.status)
            body = await resp.read()
            if resp.status == 503:
                assert resp.headers["Retry-After"] == "1"
                assert resp.content_type == "text/html"
    assert statuses == [503, 200, 200]
    spec = server.corpus.spec(key)
    assert spec is not None
    assert body == server.corpus.image_bytes(spec)
    assert server.image_host.network_requests == {"error_503": 1, "normal": 2}


@pytest.mark.parametrize("status", [404, 403, 500])
async def test_permanent_errors_on_every_host(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, status: int
) -> None:
    server = await serve(start_emulator, QUICK)
    key = first_key(QUICK, lambda s: s == status)
    hosts = [*hosts_of(QUICK, "normal", 2), first_host(QUICK, "drip")]
    for name in (*hosts, hosts[0]):
        async with http.get(f"{server.base_url}img/{key}", headers={"Host": name}) as resp:
            assert resp.status == status
            assert resp.content_type == "text/html"
            assert str(status) in await resp.text()
    assert server.image_host.network_requests == {f"error_{status}": 4}


async def dripping(
    start_emulator: StartEmulator, *, drip_rate: int, drip_max: float
) -> tuple[EmulatorServer, str, str, bytes]:
    """An emulator with a dripping host: (server, the host's name, a key without an error,
    its picture's bytes)."""
    profile = NetworkProfile(
        seed=5, latency_median=0.001, latency_p99=0.002, drip_rate=drip_rate, drip_max=drip_max
    )
    server = await serve(start_emulator, profile)
    key = first_key(profile, lambda status: status is None)
    spec = server.corpus.spec(key)
    assert spec is not None
    return server, first_host(profile, "drip"), key, server.corpus.image_bytes(spec)


async def test_a_dripping_host_trickles_then_stops_when_the_client_leaves(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server, drip, key, full = await dripping(start_emulator, drip_rate=400, drip_max=60.0)
    async with http.get(f"{server.base_url}img/{key}", headers={"Host": drip}) as resp:
        assert resp.status == 200
        assert resp.content_length == len(full)
        pieces = [await resp.content.readany() for _ in range(3)]
        # 100 bytes a piece, one piece each 0.25 s: 8 pieces at once would take a 2 s stall.
        assert all(0 < len(piece) <= 800 for piece in pieces), [len(p) for p in pieces]
        assert b"".join(pieces) == full[: sum(map(len, pieces))]
    host = server.image_host
    await asyncio.wait_for(host.wait_idle(), 10)
    assert host.bytes_sent < len(full) // 2
    assert host.network_requests == {"drip": 1}


async def test_a_dripping_body_arrives_whole_after_drip_max(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server, drip, key, full = await dripping(start_emulator, drip_rate=4000, drip_max=0.05)
    url = f"{server.base_url}img/{key}"
    async with http.get(url, headers={"Host": drip}) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/jpeg"
        body = await resp.read()
    assert body == full
    async with http.head(url, headers={"Host": drip}) as resp:
        assert resp.content_length == len(body)
        assert await resp.read() == b""
    host = server.image_host
    assert host.bytes_sent == len(body)
    assert host.network_requests == {"drip": 2}


async def test_corpus_faults_and_unknown_keys_still_apply(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    profile = NetworkProfile(seed=5, latency_median=0.001, latency_p99=0.002, error_share=0.0)
    server = await serve(start_emulator, profile)
    normal = first_host(profile, "normal")
    faults = server.corpus.fault_url_keys()
    for key, status in ((faults["http_404"], 404), (faults["http_500"], 500), ("nope.jpg", 404)):
        async with http.get(f"{server.base_url}img/{key}", headers={"Host": normal}) as resp:
            assert resp.status == status
    url = f"{server.base_url}img/{faults['redirect']}"
    async with http.get(url, headers={"Host": normal}, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"].startswith(f"http://{normal}/img/b/")
    assert server.image_host.network_requests == {"normal": 4}


async def test_the_global_latency_is_not_added(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    server = await start_emulator(images=ImageHostConfig(latency=60.0, network=QUICK))
    key = first_key(QUICK, lambda status: status is None)
    normal = first_host(QUICK, "normal")
    url = f"{server.base_url}img/{key}"
    async with http.get(url, headers={"Host": normal}, timeout=aiohttp.ClientTimeout(30)) as r:
        assert r.status == 200


# -- the ``web`` picture sizes ------------------------------------------------------------------


def test_web_pictures_vary_between_10_kb_and_2_mb() -> None:
    synth = Synthesizer(seed=2, image_size="web")
    corpus = Corpus(CorpusConfig(seed=2, image_size="web"))
    sizes, dims = [], set()
    for i in range(50):
        base = (3 << NAMESPACE_BITS) + i
        picture = synth.render(base)
        assert picture.size == synth.dimensions(base)
        data = encode(picture, "jpeg", SIZE_CLASSES["web"].quality)
        assert data == corpus.base_bytes(base)
        sizes.append(len(data))
        dims.add(picture.size)
        assert len(data) == pytest.approx(synth.target_bytes(base), rel=0.08)
        spec = corpus.spec(f"b/{base:014x}.jpg")
        assert spec is not None
        assert 0.7 < corpus.approx_size(spec) / len(data) < 1.3
    assert all(10_000 <= s <= 2_000_000 for s in sizes), sorted(sizes)
    assert 30_000 < statistics.median(sizes) < 300_000  # 50 draws: see the targets' test
    assert max(sizes) > 4 * min(sizes)
    assert len(dims) > 40


def test_web_targets_are_lognormal_and_clamped() -> None:
    synth = Synthesizer(seed=0, image_size="web")
    targets = [synth.target_bytes((4 << NAMESPACE_BITS) + i) for i in range(20_000)]
    assert statistics.median(targets) == pytest.approx(100_000, rel=0.05)
    assert sorted(targets)[int(0.9 * len(targets))] == pytest.approx(360_000, rel=0.1)
    assert min(targets) >= 10_000
    assert max(targets) <= 2_000_000
    assert Synthesizer(seed=0).target_bytes(5) == 0.0  # fixed-size classes have no target


def test_the_largest_web_picture_is_covered_by_grain() -> None:
    synth = Synthesizer(seed=0, image_size="web")
    base = next(
        (4 << NAMESPACE_BITS) + i
        for i in range(20_000)
        if synth.target_bytes((4 << NAMESPACE_BITS) + i) > 1_800_000
    )
    picture = synth.render(base)
    width, height = picture.size
    assert width > 1024 + 64 or height > 1024 + 64  # larger than the grain tile
    # The grain reaches the far corner: no flat (grain-free) block there.
    corner = picture.crop((width - 32, height - 32, width, height)).convert("L")
    low, high = corner.getextrema()
    assert high - low >= 8


# -- flags -----------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_network_flags_reach_the_config() -> None:
    assert config_from_args(parse()).images.network is None
    config = config_from_args(
        parse("--network", "web", "--seed", "4", "--host-latency", "50ms",
              "--host-latency-p99", "2s", "--image-size", "web", "--drip-max", "30s")
    )  # fmt: skip
    assert config.images.network == NetworkProfile(
        seed=4, latency_median=0.05, latency_p99=2.0, drip_max=30.0
    )
    assert config.corpus.image_size == "web"
    assert config_from_args(parse("--network", "WEB")).images.network == NetworkProfile()
    assert config_from_args(parse("--network", "none")).images.network is None


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--network", "lan"], "--network"),
        (["--network", "web", "--host-latency", "soon"], "--host-latency"),
        (["--network", "web", "--host-latency", "0"], "--host-latency"),
        (["--network", "web", "--host-latency-p99", "10ms"], "--host-latency-p99"),
        (["--network", "web", "--host-latency-p99=-1s"], "--host-latency-p99"),
        (["--host-latency", "1s"], "--host-latency"),
        (["--host-latency-p99", "1s"], "--host-latency-p99"),
        (["--drip-max", "1s"], "--drip-max"),
        (["--network", "web", "--drip-max", "-1"], "--drip-max"),
        (["--network", "web", "--seed", "-2"], "--seed"),
        (["--image-size", "webby"], "--image-size"),
    ],
)
def test_bad_network_flags_name_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_args(parse(*argv))
    assert info.value.option == flag
    assert str(info.value).startswith(flag + ": ")


async def test_the_module_serves_a_web_of_hosts(http: aiohttp.ClientSession) -> None:
    profile = NetworkProfile(seed=6, latency_median=0.001, latency_p99=0.002)
    proc, base_url = start_emulator_process(
        ["--network", "web", "--seed", "6", "--host-latency", "1ms", "--host-latency-p99", "2ms",
         "--results-per-query", "20", "--log-level", "WARNING"]
    )  # fmt: skip
    try:
        normal = first_host(profile, "normal")
        ok = first_key(profile, lambda status: status is None)
        gone = first_key(profile, lambda status: status == 404)
        async with http.get(f"{base_url}img/{ok}", headers={"Host": normal}) as resp:
            assert resp.status == 200
            assert resp.content_type == "image/jpeg"
        async with http.get(f"{base_url}img/{gone}", headers={"Host": normal}) as resp:
            assert resp.status == 404
        hang = first_host(profile, "hang")
        with pytest.raises(asyncio.TimeoutError):
            await http.get(f"{base_url}img/{ok}", headers={"Host": hang}, timeout=SHORT)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
        if proc.stdout is not None:
            proc.stdout.close()
