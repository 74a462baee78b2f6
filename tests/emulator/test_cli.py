"""The emulator's command line: flags -> config, errors naming flags, and a real child process."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bingcrawl.emulator import CorpusConfig, EmulatorConfig, ImageHostConfig
from bingcrawl.emulator.__main__ import main
from bingcrawl.emulator.cli import (
    add_arguments,
    config_from_args,
    parse_duration,
    parse_format_mix,
)
from bingcrawl.emulator.server import start_emulator_process
from bingcrawl.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_default_flags_give_the_default_config() -> None:
    args = parse()
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert config_from_args(args) == EmulatorConfig()


def test_flags_reach_the_config() -> None:
    config = config_from_args(
        parse(
            "--key", "a", "--key", "b", "--disabled-key", "c", "--qps", "0",
            "--monthly-quota", "100", "--api-latency", "250ms", "--image-latency", "0.5s",
            "--p-server-error", "0.1", "--p-empty-200", "0.2", "--p-non-json-200", "0.05",
            "--retry-after-format", "date", "--http-not-allowed", "--seed", "9",
            "--results-per-query", "300", "--image-size", "200k", "--fault-rate", "0.1",
            "--fault-kinds", "http_404, bomb", "--page-overlap", "0",
            "--image-base-url", "http://img.test/", "--transient-failures", "1",
            "--oversize-bytes", "1000", "--slow-seconds", "2", "--image-retry-after", "3",
            "--format-mix", "jpeg=0.5, webp=0.5", "--cache-mb", "1024",
        )
    )  # fmt: skip
    assert config.keys == frozenset({"a", "b"})
    assert config.disabled_keys == frozenset({"c"})
    assert config.qps is None
    assert config.monthly_quota == 100
    assert config.api_latency == pytest.approx(0.25)
    assert (config.p_server_error, config.p_empty_200, config.p_non_json_200) == (0.1, 0.2, 0.05)
    assert config.retry_after_format == "date"
    assert config.http_not_allowed
    assert config.seed == 9
    assert config.page_overlap == 0
    assert config.image_base_url == "http://img.test/"
    assert config.corpus == CorpusConfig(
        seed=9,
        results_per_query=300,
        image_size="200k",
        fault_rate=0.1,
        fault_kinds=("http_404", "bomb"),
        format_mix=(0.5, 0.0, 0.0, 0.5),
        cache_bytes=1024 * 2**20,
    )
    assert config.images == ImageHostConfig(
        latency=0.5, slow_seconds=2.0, oversize_bytes=1000, transient_failures=1, retry_after=3.0
    )


def test_opt_out_flags_reach_the_image_host(tmp_path: Path) -> None:
    robots = tmp_path / "robots.txt"
    robots.write_text("User-agent: bingcrawl\nDisallow: /img/\n")
    tdm = tmp_path / "tdmrep.json"
    tdm.write_text('[{"location": "/img/*", "tdm-reservation": 1}]')
    config = config_from_args(
        parse("--robots-txt", str(robots), "--robots-status", "503", "--tdmrep-json", str(tdm),
              "--image-header", "X-Robots-Tag: noai",
              "--image-header", "Content-Signal: ai-train=no")
    )  # fmt: skip
    assert config.images.robots_txt == robots.read_text()
    assert config.images.robots_status == 503
    assert config.images.tdmrep_json == tdm.read_text()
    assert config.images.headers == (("X-Robots-Tag", "noai"), ("Content-Signal", "ai-train=no"))
    with pytest.raises(ConfigError) as err:
        config_from_args(parse("--image-header", "no colon"))
    assert err.value.option == "--image-header"
    with pytest.raises(ConfigError) as err:
        config_from_args(parse("--robots-txt", str(tmp_path / "missing.txt")))
    assert err.value.option == "--robots-txt"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--qps", "-1"], "--qps"),
        (["--api-latency", "soon"], "--api-latency"),
        (["--image-latency=-5ms"], "--image-latency"),
        (["--p-server-error", "2"], "--p-server-error"),
        (["--monthly-quota", "-3"], "--monthly-quota"),
        (["--fault-rate", "1.5"], "--fault-rate"),
        (["--fault-kinds", "http_999"], "--fault-kinds"),
        (["--image-size", "5k"], "--image-size"),
        (["--results-per-query", "0"], "--results-per-query"),
        (["--transient-failures", "-1"], "--transient-failures"),
        (["--image-base-url", "img.test"], "--image-base-url"),
        (["--key", " "], "--key"),
        (["--format-mix", "tiff=1"], "--format-mix"),
        (["--format-mix", "jpeg=lots"], "--format-mix"),
        (["--format-mix", "jpeg=-1"], "--format-mix"),
        (["--format-mix", "png=0"], "--format-mix"),
        (["--cache-mb", "-1"], "--cache-mb"),
    ],
)
def test_bad_flags_raise_config_error_naming_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_args(parse(*argv))
    assert info.value.option == flag
    assert str(info.value).startswith(flag + ": ")


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0.0), ("1.5", 1.5), ("2s", 2.0), ("20ms", 0.02)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "mix"),
    [
        ("jpeg", (1.0, 0.0, 0.0, 0.0)),
        ("JPEG=1", (1.0, 0.0, 0.0, 0.0)),
        ("jpeg=0.85,png=0.07,gif=0.04,webp=0.04", CorpusConfig().format_mix),
    ],
)
def test_parse_format_mix(text: str, mix: tuple[float, ...]) -> None:
    assert parse_format_mix(text) == mix


def test_jpeg_only_mix_serves_only_jpeg_originals() -> None:
    from bingcrawl.emulator.corpus import Corpus

    corpus = Corpus(config_from_args(parse("--format-mix", "jpeg", "--fault-rate", "0")).corpus)
    originals = [spec for spec in corpus.query_results("cats") if spec.variant == "original"]
    assert len(originals) > 800
    assert {spec.format for spec in originals} == {"jpeg"}


def test_main_returns_2_on_a_bad_flag_without_serving() -> None:
    assert main(["--qps", "-1", "--port", "0"]) == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_module_serves_until_signalled(signum: signal.Signals) -> None:
    proc, base_url = start_emulator_process(["--results-per-query", "20", "--log-level", "WARNING"])
    try:
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/")
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url + "v7.0/images/search", params={"q": "cat"}) as resp,
        ):
            assert resp.status == 401
            body = await resp.json()
        assert body["errors"][0]["code"] == "InvalidAuthorization"
        proc.send_signal(signum)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


def test_start_emulator_process_reports_a_failed_start() -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        start_emulator_process(["--qps", "-1"])


def test_subprocess_module_help_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bingcrawl.emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "--p-empty-200" in done.stdout
