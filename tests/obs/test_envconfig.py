"""BINGCRAWL_<OPTION> variables as argparse defaults: flag > environment > default."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bingcrawl.errors import ConfigError
from bingcrawl.obs.envconfig import (
    apply_env_defaults,
    document_env,
    env_variables,
    parse_bool,
)


class RaisingParser(argparse.ArgumentParser):
    """Like the CLI's parser: usage errors raise instead of exiting."""

    def error(self, message: str):  # type: ignore[no-untyped-def, override]
        raise ConfigError(self.prog, message)


def duration(text: str) -> float:
    value = float(text.rstrip("s"))
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def crawl_parser() -> argparse.ArgumentParser:
    """A parser shaped like `bingcrawl crawl` (positional list, groups, every action kind)."""
    p = RaisingParser(prog="crawl")
    p.add_argument("queries", nargs="*", metavar="QUERY")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--label")
    api = p.add_argument_group("API")
    api.add_argument("--key")
    api.add_argument("--qps", type=float, default=3.0)
    api.add_argument("--limit", type=int, default=100)
    api.add_argument("--max-api-calls", type=int)
    filters = p.add_argument_group("filters")
    filters.add_argument(
        "--safe-search", dest="filter_safeSearch", choices=["Off", "Moderate", "Strict"]
    )
    dl = p.add_argument_group("downloads")
    dl.add_argument("--max-bytes", type=int, default=20 * 1024 * 1024)
    dl.add_argument("--timeout", type=duration, default=30.0)
    dl.add_argument("--allow-network", action="append", default=[], metavar="CIDR")
    dl.add_argument("--hash", dest="hash_algo", default="phash", choices=["phash", "dhash"])
    run = p.add_argument_group("run")
    run.add_argument("--durable", action="store_true")
    run.add_argument("--no-color", dest="color", action="store_false")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    run.add_argument("-v", "--verbose", action="count", default=0)
    run.add_argument("--sizes", nargs="+", type=int)
    return p


def parse(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    parser = crawl_parser()
    apply_env_defaults(parser, env)
    return parser.parse_args(argv)


def test_defaults_without_environment() -> None:
    args = parse(["--out", "o"], {})
    assert args.limit == 100
    assert args.allow_network == []
    assert args.durable is False
    assert args.queries == []


def test_environment_over_default_and_flag_over_environment() -> None:
    env = {"BINGCRAWL_LIMIT": "7", "BINGCRAWL_QPS": "0.5", "BINGCRAWL_LABEL": "cats"}
    from_env = parse(["--out", "o"], env)
    assert from_env.limit == 7
    assert from_env.qps == 0.5
    assert from_env.label == "cats"
    flagged = parse(["--out", "o", "--limit", "9", "--label", "dogs"], env)
    assert flagged.limit == 9
    assert flagged.label == "dogs"
    assert flagged.qps == 0.5  # not given as a flag: still the environment's


def test_types_are_applied_once() -> None:
    env = {
        "BINGCRAWL_OUT": "/data",
        "BINGCRAWL_MAX_BYTES": "1048576",
        "BINGCRAWL_TIMEOUT": "2.5s",
        "BINGCRAWL_MAX_API_CALLS": "40",
    }
    args = parse([], env)
    assert args.out == Path("/data")
    assert isinstance(args.out, Path)
    assert args.max_bytes == 1_048_576
    assert args.timeout == 2.5
    assert args.max_api_calls == 40


def test_required_option_satisfied_by_environment() -> None:
    with pytest.raises(ConfigError, match="--out"):
        parse([], {})
    assert parse([], {"BINGCRAWL_OUT": "/data"}).out == Path("/data")
    assert parse(["--out", "/elsewhere"], {"BINGCRAWL_OUT": "/data"}).out == Path("/elsewhere")


def test_append_list_from_environment_and_flags_replace_it() -> None:
    env = {"BINGCRAWL_ALLOW_NETWORK": "172.29.87.0/24, 10.0.0.0/8 127.0.0.1/32"}
    args = parse(["--out", "o"], env)
    assert list(args.allow_network) == ["172.29.87.0/24", "10.0.0.0/8", "127.0.0.1/32"]
    argv = ["--out", "o", "--allow-network", "192.0.2.0/24", "--allow-network", "::1/128"]
    flagged = parse(argv, env)
    assert flagged.allow_network == ["192.0.2.0/24", "::1/128"]
    # The defaults were not mutated by that parse.
    again = parse(["--out", "o"], env)
    assert list(again.allow_network) == ["172.29.87.0/24", "10.0.0.0/8", "127.0.0.1/32"]


def test_empty_list_variable_clears_the_list() -> None:
    parser = crawl_parser()
    parser.set_defaults(allow_network=["10.0.0.0/8"])
    apply_env_defaults(parser, {"BINGCRAWL_ALLOW_NETWORK": ""})
    assert list(parser.parse_args(["--out", "o"]).allow_network) == []


def test_empty_scalar_counts_as_unset() -> None:
    args = parse(["--out", "o"], {"BINGCRAWL_LIMIT": "", "BINGCRAWL_DURABLE": " "})
    assert args.limit == 100
    assert args.durable is False


def test_positional_queries_split_on_newlines_and_semicolons() -> None:
    env = {"BINGCRAWL_QUERIES": "aston martin;red panda\n  lighthouse at dusk \n\n;"}
    args = parse(["--out", "o"], env)
    assert args.queries == ["aston martin", "red panda", "lighthouse at dusk"]
    assert parse(["--out", "o", "owl"], env).queries == ["owl"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("YES", True), ("On", True),
     ("0", False), ("false", False), ("No", False), ("OFF", False)],
)
def test_booleans(text: str, expected: bool) -> None:
    assert parse_bool(text) is expected
    args = parse(["--out", "o"], {
        "BINGCRAWL_DURABLE": text, "BINGCRAWL_NO_COLOR": text, "BINGCRAWL_PROGRESS": text,
    })
    assert args.durable is expected
    assert args.color is (not expected)  # store_false: "true" means the flag is given
    assert args.progress is expected


def test_boolean_flags_still_win() -> None:
    args = parse(["--out", "o", "--no-progress"], {"BINGCRAWL_PROGRESS": "yes"})
    assert args.progress is False
    args = parse(["--out", "o", "--durable"], {"BINGCRAWL_DURABLE": "0"})
    assert args.durable is True


def test_a_bad_list_item_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse(["--out", "o"], {"BINGCRAWL_SIZES": "64,big,128"})
    assert str(info.value).startswith("BINGCRAWL_SIZES: invalid value 'big' for --sizes")


def test_count_and_nargs_plus() -> None:
    args = parse(["--out", "o"], {"BINGCRAWL_VERBOSE": "2", "BINGCRAWL_SIZES": "64,128 256"})
    assert args.verbose == 2
    assert args.sizes == [64, 128, 256]
    assert parse(["--out", "o", "-v"], {"BINGCRAWL_VERBOSE": "2"}).verbose == 3


def test_choices_are_checked() -> None:
    assert parse(["--out", "o"], {"BINGCRAWL_HASH": "dhash"}).hash_algo == "dhash"
    assert parse(["--out", "o"], {"BINGCRAWL_SAFE_SEARCH": "Strict"}).filter_safeSearch == "Strict"
    with pytest.raises(ConfigError) as info:
        parse(["--out", "o"], {"BINGCRAWL_HASH": "md5"})
    assert info.value.option == "BINGCRAWL_HASH"
    assert "--hash" in str(info.value)
    assert "phash" in str(info.value)


@pytest.mark.parametrize(
    ("var", "value", "flag"),
    [
        ("BINGCRAWL_MAX_BYTES", "20MB", "--max-bytes"),
        ("BINGCRAWL_QPS", "fast", "--qps"),
        ("BINGCRAWL_TIMEOUT", "-1", "--timeout"),
        ("BINGCRAWL_DURABLE", "maybe", "--durable"),
        ("BINGCRAWL_PROGRESS", "2", "--progress"),
        ("BINGCRAWL_VERBOSE", "lots", "--verbose"),
        ("BINGCRAWL_SIZES", "big", "--sizes"),
    ],
)
def test_bad_value_names_variable_and_flag(var: str, value: str, flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(["--out", "o"], {var: value})
    assert info.value.option == var
    message = str(info.value)
    assert message.startswith(f"{var}: ")
    assert flag in message
    assert repr(value) in message


def test_type_raising_config_error_is_renamed() -> None:
    def port(text: str) -> int:
        raise ConfigError("port", "not a port")

    parser = RaisingParser(prog="x")
    parser.add_argument("--metrics-port", type=port)
    with pytest.raises(ConfigError) as info:
        apply_env_defaults(parser, {"BINGCRAWL_METRICS_PORT": "x"})
    assert info.value.option == "BINGCRAWL_METRICS_PORT"
    assert "--metrics-port" in str(info.value)
    assert "not a port" in str(info.value)


def test_exclude_and_prefix() -> None:
    parser = crawl_parser()
    env = {"BINGCRAWL_KEY": "secret", "BINGCRAWL_LIMIT": "5"}
    apply_env_defaults(parser, env, exclude={"--key"})
    args = parser.parse_args(["--out", "o"])
    assert args.key is None
    assert args.limit == 5
    other = crawl_parser()
    apply_env_defaults(other, {"MYAPP_LIMIT": "6", "BINGCRAWL_LIMIT": "5"}, prefix="MYAPP_")
    assert other.parse_args(["--out", "o"]).limit == 6


def test_unrelated_variables_are_ignored() -> None:
    env = {"BINGCRAWL_NOT_AN_OPTION": "x", "PATH": "/bin", "BINGCRAWL_HELP": "1"}
    args = parse(["--out", "o"], env)
    assert args.limit == 100


def test_variables_listing_and_help() -> None:
    parser = crawl_parser()
    variables = env_variables(parser)
    assert variables["BINGCRAWL_MAX_BYTES"] == "--max-bytes"
    assert variables["BINGCRAWL_QUERIES"] == "queries"
    assert variables["BINGCRAWL_HASH"] == "--hash"
    assert "BINGCRAWL_HELP" not in variables
    document_env(parser)
    document_env(parser)  # idempotent
    text = parser.format_help()
    assert "[env: BINGCRAWL_MAX_BYTES]" in text
    assert text.count("[env: BINGCRAWL_LIMIT]") == 1


def test_subparsers_are_configured_one_by_one() -> None:
    top = RaisingParser(prog="bingcrawl")
    top.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO"])
    sub = top.add_subparsers(dest="command", required=True)
    crawl = sub.add_parser("crawl")
    crawl.add_argument("--out", type=Path, required=True)
    env = {"BINGCRAWL_LOG_LEVEL": "DEBUG", "BINGCRAWL_OUT": "/data"}
    apply_env_defaults(top, env)
    apply_env_defaults(crawl, env)
    args = top.parse_args(["crawl"])
    assert args.log_level == "DEBUG"
    assert args.out == Path("/data")


@settings(max_examples=40, deadline=None)
@given(
    queries=st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=";"),
            min_size=1,
        ).filter(lambda q: q.strip() == q and q),
        max_size=6,
    ),
    sep=st.sampled_from([";", "\n", " ;\n"]),
)
def test_query_lists_round_trip(queries: list[str], sep: str) -> None:
    parser = crawl_parser()
    apply_env_defaults(parser, {"BINGCRAWL_QUERIES": sep.join(queries)})
    assert parser.parse_args(["--out", "o"]).queries == queries
