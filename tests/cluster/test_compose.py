"""docker-compose.ray.yml, checked without a Docker engine (there is none on the build
machines): the topology it declares, who holds the key, the shared volume, and that every
command it runs is one the installed Ray and bingcrawl accept."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bingcrawl.cli import build_config, build_parser
from bingcrawl.obs.envconfig import apply_env_defaults
from tests.support.container import ROOT, compose_file, crawler_env, subparser

pytest.importorskip("ray", reason="the Ray engine's tests need the [ray] extra")

RAY = Path(sys.executable).parent / "ray"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_file("docker-compose.ray.yml")


def test_a_head_two_workers_the_emulator_and_the_driver(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"emulator", "ray-head", "ray-worker", "crawler", "status"}
    assert services["ray-worker"]["deploy"]["replicas"] == 2
    assert "--head" in services["ray-head"]["command"]
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    # One image with the [ray] extra, the one pyproject declares.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "ray" in extras
    for name in ("ray-head", "ray-worker", "crawler", "emulator"):
        assert services[name]["image"] == "bingcrawl:ray"
        assert services[name]["build"]["args"]["EXTRAS"] == "[ray]"


def test_the_workers_and_the_driver_share_the_dataset(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("ray-worker", "crawler"):
        assert "dataset:/data" in services[name]["volumes"]
    assert crawler_env(compose)["BINGCRAWL_OUT"] == "/data"


def test_only_the_driver_holds_the_key(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "BING_SEARCH_V7_SUBSCRIPTION_KEY" in services["crawler"]["environment"]
    for name in ("ray-head", "ray-worker", "emulator"):
        env = services[name].get("environment") or {}
        assert not any("KEY" in k for k in env), name
        assert "env_file" not in services[name]
    # never on a command line (Ray keeps a driver's command line in its job table)
    assert "--key" not in " ".join(map(str, services["crawler"]["entrypoint"]))


def test_ray_accepts_every_flag_the_nodes_start_with(compose: dict[str, Any]) -> None:
    help_text = subprocess.run(
        [str(RAY), "start", "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    known = set(re.findall(r"(--[a-z][a-z-]+)", help_text))
    services = compose["services"]
    commands = [services["ray-head"]["command"], services["ray-worker"]["command"]]
    # the driver's node: `ray start ...` inside its sh -c
    script = services["crawler"]["entrypoint"][4]
    commands.append(script.split("&&")[0].split()[1:])
    for command in commands:
        assert command[0] == "start"
        for arg in command[1:]:
            assert arg.split("=")[0] in known, arg
    assert services["ray-head"]["healthcheck"]["test"][1:3] == ["ray", "status"]


def test_the_driver_execs_the_crawl_on_a_joined_cluster(compose: dict[str, Any]) -> None:
    crawler = compose["services"]["crawler"]
    entry = crawler["entrypoint"]
    assert entry[:2] == ["tini", "--"]
    assert entry[4].endswith('exec bingcrawl "$$@"')  # (SIGTERM reaches bingcrawl, not sh)
    env = crawler_env(compose)
    parser = build_parser()
    crawl = subparser(parser, "crawl")
    apply_env_defaults(parser, env)
    apply_env_defaults(crawl, env, exclude={"--key"})
    config = build_config(parser.parse_args(list(crawler["command"])), env)
    assert config.engine == "ray"
    assert config.ray_address == "auto"
    assert config.key == "demo-key"
    assert config.download.policy.is_allowed("172.29.88.5")
