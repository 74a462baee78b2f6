"""Dockerfile, docker-compose.yml, .dockerignore and .env.example, checked without a Docker engine.

The compose file is parsed (PyYAML), its ``${VAR:-default}`` values interpolated as Compose
does with an empty environment, and the result is fed to the real ``bingcrawl`` parsers: the
crawler's environment must build a valid CrawlConfig, the emulator's command a valid emulator
config. The health-check commands of both services are run for real against local servers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.cli import build_config, build_parser
from bingcrawl.emulator import EmulatorConfig
from bingcrawl.obs.envconfig import apply_env_defaults, env_variables
from bingcrawl.obs.metrics import MetricsServer, MetricsSnapshot
from tests.support.container import (
    ROOT,
    compose_file,
    crawler_env,
    dockerfile,
    dockerfile_env,
    final_stage,
    interpolate,
    seconds,
    subparser,
)
from tests.support.emulator import StartEmulator

#: Variables for Compose itself (interpolation only), not for bingcrawl.
COMPOSE_ONLY = {"METRICS_PUBLISH_PORT"}
#: Read by the CLI directly, with flags (--key, --key-file, --endpoint) taking precedence.
BING_VARS = {"BING_SEARCH_V7_SUBSCRIPTION_KEY", "BING_SEARCH_V7_ENDPOINT"}

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # Only the compose tests need PyYAML; the Dockerfile tests run without it.
    return compose_file()


# -- docker-compose.yml -------------------------------------------------------------------


def test_services_image_and_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"emulator", "crawler", "status"}
    assert services["emulator"]["image"] == services["crawler"]["image"]
    assert services["emulator"]["build"] == services["crawler"]["build"] == "."
    assert services["crawler"]["depends_on"] == {"emulator": {"condition": "service_healthy"}}
    assert "depends_on" not in services["emulator"]


def test_status_is_a_tool_that_starts_nothing_else(compose: dict[str, Any]) -> None:
    # `docker compose run --rm crawler status /data` used to start the emulator first (the
    # crawler depends on it); the status service reads the volume alone.
    status = compose["services"]["status"]
    assert status["profiles"] == ["tools"]  # not started by `up`
    assert "depends_on" not in status
    assert status["image"] == compose["services"]["crawler"]["image"]
    assert "dataset:/data" in status["volumes"]
    args = build_parser().parse_args(status["command"])
    assert (args.command, str(args.dir)) == ("status", "/data")


def test_readme_and_compose_say_what_up_does() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    header = (ROOT / "docker-compose.yml").read_text(encoding="utf-8").split("\nname:", 1)[0]
    for text in (readme, header):
        assert "up --build --exit-code-from crawler" in text  # returns when the crawler exits
        assert "run --rm status" in text
        assert "run --rm crawler status" not in text
    # the build pulls a base image and packages: only the built image runs offline
    assert "emulator + crawler, fully offline" not in readme
    assert "Building\nneeds the network once" in readme


def test_the_license_file_matches_pyproject() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = "MIT"' in pyproject


def test_emulator_command_is_valid_for_the_real_cli(compose: dict[str, Any]) -> None:
    from bingcrawl.emulator.cli import config_from_args

    command = compose["services"]["emulator"]["command"]
    args = build_parser().parse_args(command)
    assert args.command == "emulator"
    assert args.host == "0.0.0.0"
    assert args.port == 8000
    assert isinstance(config_from_args(args), EmulatorConfig)
    health = compose["services"]["emulator"]["healthcheck"]
    assert health["test"][0] == "CMD"
    assert seconds(health["interval"]) > 0
    assert health["retries"] >= 3


def test_crawler_restart_stop_volume_and_port(compose: dict[str, Any]) -> None:
    crawler = compose["services"]["crawler"]
    assert crawler["restart"].split(":")[0] == "on-failure"
    assert crawler.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert seconds(crawler["stop_grace_period"]) >= 10
    assert "dataset:/data" in crawler["volumes"]
    assert "dataset" in compose["volumes"]
    env = crawler_env(compose)
    assert env["BINGCRAWL_OUT"] == "/data"
    [port] = crawler["ports"]
    host_ip, _, container_port = interpolate(port, {}).split(":")
    assert host_ip == "127.0.0.1"  # published on the host's loopback only
    assert container_port == env["BINGCRAWL_METRICS_PORT"] == "9100"
    assert env["BINGCRAWL_METRICS_HOST"] == "0.0.0.0"
    assert env["BINGCRAWL_LOG_FORMAT"] == "json"


def test_crawler_defaults_crawl_the_emulator_offline(compose: dict[str, Any]) -> None:
    env = crawler_env(compose)
    assert env["BING_SEARCH_V7_ENDPOINT"] == "http://emulator:8000/"
    assert env["BING_SEARCH_V7_SUBSCRIPTION_KEY"] == "demo-key"
    [subnet] = [c["subnet"] for c in compose["networks"]["default"]["ipam"]["config"]]
    assert env["BINGCRAWL_ALLOW_NETWORK"] == subnet
    assert ipaddress.ip_network(subnet).is_private


def test_env_file_overrides(compose: dict[str, Any]) -> None:
    real = crawler_env(
        compose,
        {
            "BING_SEARCH_V7_ENDPOINT": "https://api.bing.microsoft.com/",
            "BING_SEARCH_V7_SUBSCRIPTION_KEY": "0123456789abcdef",
            "BINGCRAWL_ALLOW_NETWORK": "",
            "BINGCRAWL_QUERIES": "owl",
        },
    )
    assert real["BING_SEARCH_V7_ENDPOINT"] == "https://api.bing.microsoft.com/"
    assert real["BING_SEARCH_V7_SUBSCRIPTION_KEY"] == "0123456789abcdef"
    assert real["BINGCRAWL_ALLOW_NETWORK"] == ""  # set empty: the private network is gone
    assert real["BINGCRAWL_QUERIES"] == "owl"


def test_crawler_environment_builds_a_valid_crawl_config(compose: dict[str, Any]) -> None:
    env = crawler_env(compose)
    parser = build_parser()
    crawl = subparser(parser, "crawl")
    apply_env_defaults(parser, env)
    apply_env_defaults(crawl, env, exclude={"--key"})
    args = parser.parse_args(list(compose["services"]["crawler"]["command"]))
    config = build_config(args, env)
    assert config.out == Path("/data")
    assert [q.text for q in config.queries] == ["aston martin", "red panda", "lighthouse at dusk"]
    assert config.endpoint == "http://emulator:8000/"
    assert config.key == "demo-key"
    assert config.limit == int(env["BINGCRAWL_LIMIT"])
    assert config.download.policy.is_allowed("172.29.87.2")
    assert not config.download.policy.is_allowed("10.1.2.3")
    # For a real endpoint, an empty BINGCRAWL_ALLOW_NETWORK leaves only public addresses.
    real = crawler_env(compose, {"BINGCRAWL_ALLOW_NETWORK": ""})
    crawl_real = subparser(build_parser(), "crawl")
    apply_env_defaults(crawl_real, real, exclude={"--key"})
    real_args = crawl_real.parse_args([])
    assert list(real_args.allow_network) == []


def test_every_variable_is_a_real_option(compose: dict[str, Any]) -> None:
    parser = build_parser()
    known = env_variables(parser) | env_variables(subparser(parser, "crawl"))
    used = set(crawler_env(compose)) | set(dockerfile_env()) | set(env_example_vars())
    used |= set(_VARIABLE.findall((ROOT / "docker-compose.yml").read_text()))
    unknown = {
        v
        for v in used
        if v not in known and v not in COMPOSE_ONLY | BING_VARS and v.startswith("BINGCRAWL_")
    }
    assert not unknown, f"not options of `bingcrawl crawl`: {sorted(unknown)}"
    stray = {v for v in used if not v.startswith("BINGCRAWL_")} - COMPOSE_ONLY - BING_VARS
    assert stray <= {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


def test_env_example_documents_every_interpolated_variable() -> None:
    interpolated = set(_VARIABLE.findall((ROOT / "docker-compose.yml").read_text()))
    assert interpolated <= set(env_example_vars())


async def test_emulator_healthcheck_command_succeeds(
    start_emulator: StartEmulator, compose: dict[str, Any]
) -> None:
    test = compose["services"]["emulator"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    server = await start_emulator(EmulatorConfig())
    code = test[3].replace(":8000/", f":{server.port}/")
    assert code != test[3]
    status, out = await run_python(code, {})
    assert status == 0, out
    assert out.startswith("healthy")


# -- Dockerfile ---------------------------------------------------------------------------


def test_base_image_and_stages() -> None:
    steps = dockerfile()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip wheel" in runs
    assert "--no-index" in runs  # runtime installs the built wheels, nothing else


def test_runtime_runs_as_numeric_non_root_user() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "no USER in the runtime stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # Nothing runs as root after the switch.
    words = [word for word, _ in final_stage()]
    assert "RUN" not in words[words.index("USER") :]


def test_pid1_signals_and_entrypoint() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["tini", "--", "bingcrawl"]
    assert json.loads(stage["CMD"]) == ["crawl"]
    assert stage["STOPSIGNAL"] == "SIGTERM"
    runs = " ".join(rest for word, rest in final_stage() if word == "RUN")
    assert re.search(r"apt-get install .*\btini\b", runs)


def test_volume_env_and_port() -> None:
    stage = final_stage()
    assert ("VOLUME", "/data") in stage
    assert ("EXPOSE", "9100") in stage
    env = dockerfile_env()
    assert env["BINGCRAWL_OUT"] == "/data"
    assert env["BINGCRAWL_METRICS_PORT"] == "9100"
    assert env["BINGCRAWL_LOG_FORMAT"] == "json"
    assert env["PYTHONUNBUFFERED"] == "1"


def healthcheck_command() -> list[str]:
    [rest] = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    options, _, command = rest.partition(" CMD ")
    assert "--interval=" in options
    assert "--start-period=" in options
    parsed = json.loads(command)
    assert isinstance(parsed, list)
    return parsed


async def test_dockerfile_healthcheck_probes_healthz() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    clock = [1000.0]
    snapshot = MetricsSnapshot(last_progress=1000.0)

    class Source:
        def metrics_snapshot(self) -> MetricsSnapshot:
            return snapshot

    async with MetricsServer(Source(), stall_after=60.0, clock=lambda: clock[0]) as server:
        env = {"BINGCRAWL_METRICS_PORT": str(server.port)}
        healthy, out = await run_python(command[2], env)
        clock[0] = 2000.0
        stalled, stalled_out = await run_python(command[2], env)
    assert healthy == 0, out
    assert stalled == 1, stalled_out
    assert "503" in stalled_out


async def run_python(code: str, env: Mapping[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


# -- .dockerignore and .env.example --------------------------------------------------------


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            verdict = not negate
    return verdict


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("pyproject.toml", False),
        ("README.md", False),
        ("bingcrawl/cli.py", False),
        ("bingcrawl/obs/metrics.py", False),
        (".env", True),
        (".git/config", True),
        ("tests/obs/test_container.py", True),
        ("benchmarks/crawl_bench.py", True),
        ("bingcrawl/__pycache__/cli.cpython-311.pyc", True),
        ("data/checkpoint.sqlite", True),
    ],
)
def test_dockerignore(path: str, excluded: bool) -> None:
    assert ignored(path) is excluded


def env_example_vars() -> list[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return re.findall(r"^#?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE)


def test_env_example_is_a_working_env_file(compose: dict[str, Any]) -> None:
    active = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            active[name] = value
    assert active["BING_SEARCH_V7_SUBSCRIPTION_KEY"] == "demo-key"
    env = crawler_env(compose, active)
    crawl = subparser(build_parser(), "crawl")
    apply_env_defaults(crawl, env, exclude={"--key"})
    args = crawl.parse_args([])
    assert args.queries == ["aston martin", "red panda", "lighthouse at dusk"]
