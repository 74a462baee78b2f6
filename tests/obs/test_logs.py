"""JSON / text log lines, contextvars context across tasks, and secret redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from bingcrawl.errors import ConfigError
from bingcrawl.obs.logs import (
    HANDLER_NAME,
    RedactingFilter,
    bind,
    configure_logging,
    current_context,
    log_context,
)

SENTINEL = "k3y-SENTINEL-0123456789abcdef"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A stream holding what our handler writes; the root logger restored afterwards."""
    root = logging.getLogger()
    level = root.level
    buf = io.StringIO()
    yield buf
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_line_has_core_fields(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=stream)
    logging.getLogger("bingcrawl.test").info("stored %d images in %s", 3, "red panda")
    logging.getLogger("bingcrawl.test").debug("not shown at INFO")
    [entry] = lines(stream)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "bingcrawl.test"
    assert entry["msg"] == "stored 3 images in red panda"
    ts = str(entry["ts"])
    assert ts.endswith("Z")
    parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    assert parsed.utcoffset() is not None
    assert parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_json_extra_fields_and_exception(stream: io.StringIO) -> None:
    configure_logging("DEBUG", "json", stream=stream)
    log = logging.getLogger("bingcrawl.test")
    try:
        raise ValueError("broken page")
    except ValueError:
        log.exception("page failed", extra={"offset": 150, "path": object()})
    [entry] = lines(stream)
    assert entry["offset"] == 150
    assert isinstance(entry["path"], str)  # not JSON-serialisable: written with str()
    assert "ValueError: broken page" in str(entry["exc"])
    assert "Traceback" in str(entry["exc"])


def test_core_keys_win_over_context(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    with log_context(msg="not the message", level="nope", query="q"):
        logging.getLogger("x").warning("the message")
    [entry] = lines(stream)
    assert entry["msg"] == "the message"
    assert entry["level"] == "WARNING"
    assert entry["query"] == "q"


async def test_context_follows_tasks_and_stays_in_them(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("bingcrawl.producer")

    async def worker(n: int) -> None:
        # Inherited from the producer's context when the task was created.
        log.info("worker %d", n)

    async def producer(query: str, label: str) -> None:
        with log_context(query=query, label=label):
            async with asyncio.TaskGroup() as tg:
                for n in range(2):
                    tg.create_task(worker(n))
            bind(page=1)  # lasts for this task only
            log.info("page done")

    with log_context(run_id="run-1"):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(producer("red panda", "red_panda"))
            tg.create_task(producer("aston martin", "aston_martin"))
        log.info("run done")
    log.info("after the run")

    entries = lines(stream)
    workers = [e for e in entries if str(e["msg"]).startswith("worker")]
    assert len(workers) == 4
    assert {(e["query"], e["label"]) for e in workers} == {
        ("red panda", "red_panda"),
        ("aston martin", "aston_martin"),
    }
    assert all(e["run_id"] == "run-1" for e in workers)
    pages = [e for e in entries if e["msg"] == "page done"]
    assert {e["query"] for e in pages} == {"red panda", "aston martin"}
    assert all(e["page"] == 1 for e in pages)
    [run_done] = [e for e in entries if e["msg"] == "run done"]
    assert run_done["run_id"] == "run-1"
    assert "query" not in run_done
    assert "page" not in run_done
    [after] = [e for e in entries if e["msg"] == "after the run"]
    assert "run_id" not in after


async def test_context_reaches_threads() -> None:
    with log_context(run_id="r"):
        seen = await asyncio.to_thread(lambda: dict(current_context()))
    assert seen == {"run_id": "r"}
    assert dict(current_context()) == {}


def test_none_removes_a_field() -> None:
    with log_context(query="a", label="b"), log_context(query=None):
        assert dict(current_context()) == {"label": "b"}


def test_text_format_appends_context(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream=stream)
    with log_context(run_id="r1", query="red panda"):
        logging.getLogger("bingcrawl.t").info("hello %s", "world")
    line = stream.getvalue().strip()
    assert " INFO bingcrawl.t: hello world [run_id=r1 query=red panda]" in line


def test_redaction_in_message_args_and_exception(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream, secrets=[SENTINEL])
    log = logging.getLogger("bingcrawl.client")
    log.info("key in the format string: " + SENTINEL)
    log.info("key as an argument: %s", SENTINEL)
    log.info("key inside an object: %r", {"headers": {"Ocp-Apim-Subscription-Key": SENTINEL}})
    log.info("key as a mapping argument: %(key)s", {"key": SENTINEL})
    log.info("inside a URL: %s", f"https://h/search?q=x&key={SENTINEL}&count=5")
    try:
        raise RuntimeError(f"refused key {SENTINEL}")
    except RuntimeError:
        log.exception("request failed")
    with log_context(url=f"https://x/?subscription-key={SENTINEL}"):
        log.warning("with context", extra={"header": SENTINEL})
    text = stream.getvalue()
    assert SENTINEL not in text
    entries = lines(stream)
    assert len(entries) == 7
    assert all("***" in json.dumps(e) for e in entries)
    assert entries[0]["msg"] == "key in the format string: ***"
    assert entries[1]["msg"] == "key as an argument: ***"
    assert "RuntimeError: refused key ***" in str(entries[5]["exc"])
    assert entries[6]["url"] == "https://x/?subscription-key=***"
    assert entries[6]["header"] == "***"


def test_redaction_of_percent_encoded_secret() -> None:
    secret = "a b/c?d"
    flt = RedactingFilter([secret])
    assert flt.redact("q=a%20b%2Fc%3Fd&x=1") == "q=***&x=1"
    assert flt.redact("plain a b/c?d") == "plain ***"


def test_short_or_empty_secrets_are_ignored() -> None:
    flt = RedactingFilter(["", None, "ab"])
    assert flt.redact("ab cd") == "ab cd"


def test_redaction_covers_other_handlers_records(stream: io.StringIO) -> None:
    # The filter edits the record itself, so another handler attached to the root logger
    # (pytest's caplog, a file handler) never sees the key either.
    other = io.StringIO()
    extra_handler = logging.StreamHandler(other)
    root = logging.getLogger()
    configure_logging("INFO", "text", stream=stream, secrets=[SENTINEL])
    root.addHandler(extra_handler)
    try:
        logging.getLogger("x").error("bad key %s", SENTINEL)
    finally:
        root.removeHandler(extra_handler)
    assert SENTINEL not in stream.getvalue()
    assert "bad key ***" in stream.getvalue()


def test_configure_twice_replaces_our_handler_only(stream: io.StringIO) -> None:
    other = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(other)
    try:
        configure_logging("INFO", "text", stream=io.StringIO())
        configure_logging("WARNING", "json", stream=stream, secrets=[SENTINEL])
        ours = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
        assert len(ours) == 1
        assert other in root.handlers
        assert root.level == logging.WARNING
        logging.getLogger("x").warning("k=%s", SENTINEL)
        assert lines(stream)[0]["msg"] == "k=***"
    finally:
        root.removeHandler(other)


@pytest.mark.parametrize(
    ("level", "fmt", "option"),
    [("LOUD", "json", "--log-level"), ("INFO", "xml", "--log-format")],
)
def test_bad_level_or_format_names_the_option(level: str, fmt: str, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        configure_logging(level, fmt, stream=io.StringIO())
    assert info.value.option == option


def test_the_command_line_leaves_no_context_behind(tmp_path: Path) -> None:
    # main() binds a run id for its own log lines; a caller (a test, a program that runs two
    # crawls) must not inherit it.
    from bingcrawl.cli import main
    from bingcrawl.obs.logs import current_context

    (tmp_path / "file").write_text("")
    # Refused by build_config, after the run id is bound.
    assert main(["crawl", "x", "--out", str(tmp_path / "file" / "o")], env={}) == 2
    assert "run_id" not in current_context()
