"""Logging for humans and for log collectors: text or JSON lines, with context, never a secret.

:func:`configure_logging` installs one handler on the root logger (so aiohttp's and asyncio's
records are formatted the same way as ours) with, in order:

1. a :class:`ContextFilter` that copies the current :func:`log_context` fields onto the
   record, so a line logged by a worker carries the ``run_id`` and ``query`` of the task that
   logged it;
2. a :class:`RedactingFilter` that replaces every secret (the subscription key) by ``***``
   in the rendered message, the exception text, the stack and the context fields;
3. a :class:`JsonFormatter` (one JSON object per line: ``ts`` in ISO 8601 UTC, ``level``,
   ``logger``, ``msg``, the context fields, ``extra=`` fields, ``exc``) or a
   :class:`TextFormatter` (the classic line, context appended as ``key=value``).

Context lives in a :class:`contextvars.ContextVar`, so it follows asyncio the way a request
id should: a task created inside ``with log_context(query=q):`` inherits ``query`` (tasks copy
the context when they are created), and what one task binds is invisible to its siblings::

    bind(run_id=run_id)                       # once per run, before the TaskGroups start
    async def producer(spec):
        with log_context(query=spec.text, label=spec.label):
            ...                               # every line logged here, and by tasks
                                              # created here, carries query and label
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO
from urllib.parse import quote, quote_plus

from bingcrawl.errors import ConfigError

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "ContextFilter",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "bind",
    "configure_logging",
    "current_context",
    "log_context",
    "secret_forms",
]

LogFormat = Literal["text", "json"]

LOG_FORMATS: tuple[str, ...] = ("text", "json")
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Secrets shorter than this are not redacted: replacing every "a" or "42" in every line
#: would wreck the logs while protecting nothing a real subscription key (32 hex) needs.
MIN_SECRET_LENGTH = 4

#: The name of the handler configure_logging installs, so a second call replaces it.
HANDLER_NAME = "bingcrawl"

#: Record attribute holding the context fields (set by ContextFilter).
CONTEXT_ATTR = "bingcrawl_context"

# The value is an immutable mapping replaced on every change, never mutated, so a context
# copied into a task can never be altered from outside that task.
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar(
    "bingcrawl_log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName", CONTEXT_ATTR}


_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def secret_forms(secret: str) -> tuple[str, ...]:
    """Every spelling under which ``secret`` may show up in text, longest first.

    The secret itself and its percent-encoded forms (path-safe, fully encoded, form-encoded,
    each with upper- and lower-case escapes): a server or a proxy that echoes a header in an
    error message often URL-encodes it. Empty for an empty secret.
    """
    if not secret:
        return ()
    forms = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}
    forms |= {_PERCENT_ESCAPE.sub(lambda m: m.group().lower(), f) for f in forms}
    return tuple(sorted(forms, key=len, reverse=True))


def current_context() -> Mapping[str, Any]:
    """The log context fields of the current task (read-only)."""
    return _CONTEXT.get()


def _merged(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    merged = dict(_CONTEXT.get())
    for key, value in fields.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return MappingProxyType(merged)


def bind(**fields: Any) -> None:
    """Add fields to the current context for good (a field set to ``None`` is removed).

    In a task, the binding lasts for the rest of that task and the tasks it creates later;
    at the top of a run (``bind(run_id=...)`` before the TaskGroups start) it covers the run.
    """
    _CONTEXT.set(_merged(fields))


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[Mapping[str, Any]]:
    """Add fields to the context for the duration of the block (``None`` removes a field)."""
    token = _CONTEXT.set(_merged(fields))
    try:
        yield _CONTEXT.get()
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Copy the current log context onto each record (as ``record.bingcrawl_context``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Keep a context attached earlier (e.g. by a QueueHandler in the logging thread).
        if not hasattr(record, CONTEXT_ATTR):
            setattr(record, CONTEXT_ATTR, dict(_CONTEXT.get()))
        return True


class RedactingFilter(logging.Filter):
    """Replace every secret by ``***`` in a record before any formatter sees it.

    The message is rendered (``msg % args``) and then redacted, so a secret passed as an
    argument, inside an object's ``str()`` or inside a URL is caught as surely as one written
    into the format string; ``args`` is then cleared. The exception text and the stack are
    formatted here and redacted too, and so are string context and ``extra=`` fields.
    Percent-encoded forms of a secret are redacted as well.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Redact ``secret`` from now on (ignored if empty or shorter than 4 characters)."""
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        for form in secret_forms(secret):
            if form not in self._secrets:
                self._secrets.append(form)
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        context = getattr(record, CONTEXT_ATTR, None)
        if isinstance(context, dict):
            setattr(record, CONTEXT_ATTR, {k: self._scrub(v) for k, v in context.items()})
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, self._scrub(value))
        return True

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        # Anything else is rendered with str() by the formatters: redact that rendering.
        rendered = str(value)
        redacted = self.redact(rendered)
        return value if redacted == rendered else redacted


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    # (Private attributes are a library's own: Ray stamps every record with _ray_timestamp_ns.)
    return {
        k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and k[:1] != "_"
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context and extra fields, exc.

    The core keys win over a context or extra field of the same name; values that JSON
    cannot hold are written with ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {}
        entry.update(getattr(record, CONTEXT_ATTR, None) or {})
        entry.update(_extra_fields(record))
        ts = datetime.fromtimestamp(record.created, UTC)
        entry["ts"] = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        entry["level"] = record.levelname
        entry["logger"] = record.name
        entry["msg"] = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2025-01-01 12:00:00,000 INFO bingcrawl.x: message [run_id=... query=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = {**(getattr(record, CONTEXT_ATTR, None) or {}), **_extra_fields(record)}
        if not fields:
            return line
        return line + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"


def configure_logging(
    level: str,
    fmt: str = "text",
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str | None] = (),
) -> None:
    """Send every log record to ``stream`` (default: ``sys.stderr`` at call time).

    ``level`` is a level name (case-insensitive), ``fmt`` is ``"text"`` or ``"json"``;
    ``secrets`` (the subscription key) are redacted from every line. Calling it again
    replaces the handler it installed before (e.g. once the key is known) and leaves other
    handlers alone. Raises ConfigError naming ``--log-level`` / ``--log-format``.
    """
    name = level.strip().upper()
    if name not in LOG_LEVELS:
        accepted = ", ".join(LOG_LEVELS)
        raise ConfigError("--log-level", f"unknown level {level!r}; accepted: {accepted}")
    kind = fmt.strip().lower()
    if kind not in LOG_FORMATS:
        accepted = ", ".join(LOG_FORMATS)
        raise ConfigError("--log-format", f"unknown format {fmt!r}; accepted: {accepted}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.set_name(HANDLER_NAME)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(JsonFormatter() if kind == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, name))
