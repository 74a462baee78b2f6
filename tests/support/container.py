"""What the image and the compose file declare, read without a Docker engine.

The Dockerfile is read as (INSTRUCTION, arguments) pairs and docker-compose.yml is parsed with
PyYAML, its ``${VAR:-default}`` values interpolated as Compose does. The container tests check
these declarations (tests/obs/test_container.py) and run what they declare
(tests/obs/test_container_*.py, with :mod:`tests.support.container_process`).
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ROOT",
    "compose_file",
    "crawler_env",
    "dockerfile",
    "dockerfile_env",
    "final_stage",
    "interpolate",
    "seconds",
    "subparser",
]

#: The repository's root: where the Dockerfile, docker-compose.yml and the README are.
ROOT = Path(__file__).resolve().parents[2]

_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} (unset or empty) and ${VAR-default} (unset)."""

    def one(match: re.Match[str]) -> str:
        name, op, default = match["name"], match["op"], match["default"] or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return _INTERPOLATION.sub(one, value)


def seconds(duration: str) -> float:
    """A Compose duration (``1m30s``, ``500ms``, ``10s``) in seconds."""
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def compose_file(name: str = "docker-compose.yml") -> dict[str, Any]:
    """docker-compose.yml (or ``name``), parsed. Only the compose tests need PyYAML (a test
    extra): the calling test is skipped, with the reason, where it is missing."""
    yaml = pytest.importorskip("yaml", reason="PyYAML (test extra) parses docker-compose.yml")
    data = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def crawler_env(compose: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The crawler service's ``environment:``, interpolated with ``env`` (an .env file)."""
    raw = compose["services"]["crawler"]["environment"]
    return {k: interpolate(str(v), env or {}) for k, v in raw.items()}


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (``crawl``) of the CLI's ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise AssertionError("no subcommands")


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image's last stage (from its ``FROM`` on)."""
    steps = dockerfile()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def dockerfile_env() -> dict[str, str]:
    """The ``ENV`` variables the runtime stage sets."""
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            for part in shlex.split(rest):
                name, _, value = part.partition("=")
                env[name] = value
    return env
