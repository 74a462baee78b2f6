"""``--event-loop``: which loop runs a command, and clear errors when the choice cannot be met."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from bingcrawl import eventloop
from bingcrawl.errors import ConfigError

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_runs_the_standard_loop() -> None:
    assert eventloop.resolve("asyncio") == "asyncio"
    assert eventloop.run(_loop_module(), "asyncio").startswith("asyncio")


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop not installed")
def test_auto_and_uvloop_run_uvloop_when_installed() -> None:
    assert eventloop.resolve("auto") == "uvloop"
    assert eventloop.run(_loop_module(), "auto").startswith("uvloop")
    assert eventloop.run(_loop_module(), "uvloop").startswith("uvloop")


def test_auto_falls_back_and_uvloop_fails_clearly_without_uvloop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    assert eventloop.resolve("auto") == "asyncio"
    coro = _loop_module()
    with pytest.raises(ConfigError, match="uvloop is not installed") as info:
        eventloop.run(coro, "uvloop")
    assert info.value.option == "--event-loop"
    assert coro.cr_frame is None  # closed, not left un-awaited


def test_unknown_loop_names_the_option() -> None:
    with pytest.raises(ConfigError) as info:
        eventloop.resolve("trio", option="BINGCRAWL_EVENT_LOOP")
    assert info.value.option == "BINGCRAWL_EVENT_LOOP"
    assert "auto, asyncio, uvloop" in str(info.value)
