"""The source options: refused with exit 2 naming the option, before any request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bingcrawl.cli import build_config, build_parser, main
from bingcrawl.config import CrawlConfig
from bingcrawl.errors import ConfigError


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    urls = tmp_path / "urls.csv"
    urls.write_text("url\nhttp://127.0.0.1:9/1.jpg\n")  # loopback, closed, never allowed
    return {"seeds": seeds, "urls": urls, "out": tmp_path / "out"}


# The endpoint is a closed port: an option that slipped through would fail differently.
BASE = ["--endpoint", "http://127.0.0.1:9/", "--no-progress"]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--key", "k"], "QUERY"),  # no source at all
        (["cats", "--expand", "9", "--key", "k"], "--expand"),
        (["cats", "--expand", "-1", "--key", "k"], "--expand"),
        (["cats", "--max-queries", "5", "--key", "k"], "--max-queries"),
        (["cats", "--expand", "1", "--max-queries", "0", "--key", "k"], "--max-queries"),
        (["--urls", "{urls}", "--expand", "1"], "--expand"),  # nothing to expand
        (["cats", "--similar", "-2", "--key", "k"], "--similar"),
        (["cats", "--similar", "500", "--key", "k"], "--similar"),
        (["cats", "--crop", "0,0,0.5,0.5", "--key", "k"], "--crop"),  # no --seed-images
        (["--seed-images", "{seeds}", "--crop", "0,0,0.5", "--key", "k"], "--crop"),
        (["--seed-images", "{seeds}", "--crop", "0.6,0,0.5,1", "--key", "k"], "--crop"),
        (["--seed-images", "{out}/missing", "--key", "k"], "--seed-images"),
        (["--seed-images", "{seeds}"], "--key"),  # visual search needs the API
        (["--trending"], "--key"),
        (["--urls", "{urls}", "--similar", "3"], "--key"),  # similar asks the API
        (["--trending", "--mkt", "de-DE", "--key", "k"], "--mkt"),  # not a trending market
        (["--urls", "{out}/missing.txt"], "--urls"),
        (["--urls", "{urls}.xlsx"], "--urls"),
        (["--urls", "{urls}", "--limit", "0"], "--limit"),
        (["--urls", "{urls}", "--url-col", " "], "--url-col"),
    ],
)
def test_bad_source_options_exit_2_naming_the_option(
    inputs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    option: str,
) -> None:
    if "{urls}.xlsx" in argv:
        (inputs["urls"].parent / "urls.csv.xlsx").write_text("x")
    args = [a.format(**inputs) for a in argv]
    code = main(["crawl", *args, "--out", str(inputs["out"]), *BASE], env={})
    assert code == 2
    err = capsys.readouterr().err
    assert f"{option}:" in err or f"{option} " in err, err
    assert not inputs["out"].exists()  # refused before anything was done


def config_of(argv: list[str]) -> CrawlConfig:
    parser = build_parser()
    config: CrawlConfig = build_config(parser.parse_args(["crawl", *argv]), {})
    return config


def test_flags_map_onto_the_config(inputs: dict[str, Path]) -> None:
    config = config_of(
        [
            "red panda", "--out", str(inputs["out"]), "--key", "k", "--expand", "2",
            "--max-queries", "40", "--similar", "5", "--seed-images", str(inputs["seeds"]),
            "--crop", "0.1,0.2,0.9,1", "--trending", "--mkt", "en-US", "--urls",
            str(inputs["urls"]), "--urls", str(inputs["urls"]), "--url-col", "URL",
            "--caption-col", "TEXT", "--label-col", "class", "--label", "Pets",
        ]
    )  # fmt: skip
    assert config.expand_depth == 2
    assert config.max_queries == 40
    assert config.similar == 5
    assert config.seed_images == inputs["seeds"]
    assert config.crop == (0.1, 0.2, 0.9, 1.0)
    assert config.trending
    assert config.urls_files == (inputs["urls"], inputs["urls"])
    assert config.url_columns == ("URL", "TEXT", "class")
    assert config.label == "Pets"
    assert config.queries[0].label == "Pets"
    # no explicit --limit: 100 per query, URL lists whole
    assert (config.limit, config.url_limit) == (100, None)


def test_an_explicit_limit_also_bounds_url_lists(inputs: dict[str, Path]) -> None:
    config = config_of(["--urls", str(inputs["urls"]), "--out", str(inputs["out"]), "--limit", "7"])
    assert (config.limit, config.url_limit, config.key) == (7, 7, None)


def test_source_only_runs_need_no_query(inputs: dict[str, Path]) -> None:
    for argv in (
        ["--trending", "--key", "k"],
        ["--seed-images", str(inputs["seeds"]), "--key", "k"],
        ["--urls", str(inputs["urls"])],
    ):
        config = config_of([*argv, "--out", str(inputs["out"])])
        assert config.queries == ()


@pytest.mark.parametrize(
    ("kw", "option"),
    [
        ({"expand_depth": 6}, "--expand"),
        ({"max_queries": 3}, "--max-queries"),
        ({"similar": -1}, "--similar"),
        ({"crop": (0.0, 0.0, 1.0, 1.0)}, "--crop"),
        ({"urls_files": (Path("a.doc"),)}, "--urls"),
        ({"url_limit": 0}, "--limit"),
        ({"label": "a/b"}, "--label"),
        ({"url_columns": ("url", "", "label")}, "--caption-col"),
    ],
)
def test_config_validates_the_source_fields(
    tmp_path: Path, kw: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        CrawlConfig(out=tmp_path, **kw)
    assert exc.value.option == option
