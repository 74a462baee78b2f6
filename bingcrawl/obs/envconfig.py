"""Configuration by environment: every option of an argparse parser as ``BINGCRAWL_<OPTION>``.

:func:`apply_env_defaults` walks a parser's actions (argument groups included) and turns each
``BINGCRAWL_<OPTION>`` variable into that option's *default*, so the precedence is the one
users expect: a flag on the command line wins over the environment, which wins over the
built-in default. The variable of ``--max-bytes`` is ``BINGCRAWL_MAX_BYTES`` (the first long
flag, upper-cased, dashes to underscores); a positional argument uses its name
(``BINGCRAWL_QUERIES``). Values are converted and checked here, once, with the option's own
``type`` and ``choices``; a bad value raises :class:`~bingcrawl.errors.ConfigError` naming
both the variable and the flag, before any request.

How values are read:

- ``store_true`` / ``store_false`` / ``store_const``: ``1 true yes on`` means "as if the flag
  were given", ``0 false no off`` means "as if it were not"; ``--x/--no-x``
  (``BooleanOptionalAction``) takes the boolean itself; ``count`` takes an integer.
- ``append`` / ``extend`` and list ``nargs`` options: a comma-, semicolon- or
  whitespace-separated list (``BINGCRAWL_ALLOW_NETWORK="10.0.0.0/8, 127.0.0.1/32"``). The same
  flag given on the command line *replaces* the environment's list, it does not extend it.
- list positionals: one item per line or ``;``-separated, since items (queries) hold spaces:
  ``BINGCRAWL_QUERIES="red panda;aston martin"``.
- an empty variable counts as unset, except for a list, where it means the empty list (so
  ``BINGCRAWL_ALLOW_NETWORK=`` clears a list a compose file sets).
- a required option (``--out``) is satisfied by its variable (``BINGCRAWL_OUT=/data``).

Subcommands: call it on each subparser that should read the environment (e.g. the top-level
parser for ``--log-level`` and the ``crawl`` subparser); subparser actions are not descended.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from bingcrawl.errors import ConfigError

__all__ = [
    "DEFAULT_PREFIX",
    "apply_env_defaults",
    "document_env",
    "env_name",
    "env_variables",
    "parse_bool",
]

DEFAULT_PREFIX = "BINGCRAWL_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_OPTION_SPLIT = re.compile(r"[,;\s]+")
_POSITIONAL_SPLIT = re.compile(r"[\n;]")
_LIST_NARGS = (argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE, argparse.REMAINDER)

# Actions that take no value from the environment.
_SKIPPED = (
    argparse._HelpAction,
    argparse._VersionAction,
    argparse._SubParsersAction,
    argparse._AppendConstAction,
)
_FLAG_ACTIONS = (argparse._StoreConstAction,)  # store_true / store_false subclass it


class _EnvList(list[Any]):
    """A list default from the environment that a repeated flag replaces instead of extending.

    argparse's append action copies the current value (``copy.copy``) before appending the
    flag's value; answering that copy with an empty list makes the first ``--allow-network``
    on the command line start a fresh list, so flags win over the environment here too.
    """

    def __copy__(self) -> list[Any]:
        return []


def parse_bool(text: str, *, option: str = "value") -> bool:
    """``1 true yes on`` -> True, ``0 false no off`` -> False (any case); ConfigError else."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(option, f"not a boolean: {text!r} (use 1/true/yes/on or 0/false/no/off)")


def _flag(action: argparse.Action) -> str | None:
    """The option's display name: its first long flag, or a positional's dest."""
    if not action.option_strings:
        return action.dest
    for option in action.option_strings:
        if option.startswith("--"):
            return option
    return None


def env_name(action: argparse.Action, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The variable that configures ``action`` (None if it has no long flag or takes no value)."""
    if isinstance(action, _SKIPPED) or action.dest == argparse.SUPPRESS:
        return None
    flag = _flag(action)
    if flag is None:
        return None
    return prefix + flag.lstrip("-").upper().replace("-", "_")


def env_variables(parser: argparse.ArgumentParser, prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """Every variable ``parser`` reads, mapped to the flag (or positional name) it sets."""
    found: dict[str, str] = {}
    for action in parser._actions:
        name = env_name(action, prefix)
        flag = _flag(action)
        if name is not None and flag is not None:
            found.setdefault(name, flag)
    return found


def document_env(parser: argparse.ArgumentParser, prefix: str = DEFAULT_PREFIX) -> None:
    """Append ``[env: BINGCRAWL_X]`` to the help of every option that reads a variable."""
    for action in parser._actions:
        name = env_name(action, prefix)
        if name is None or action.help == argparse.SUPPRESS:
            continue
        note = f"[env: {name}]"
        if action.help and note not in action.help:
            action.help = f"{action.help} {note}"
        elif not action.help:
            action.help = note


def _converter(action: argparse.Action) -> Callable[[str], Any]:
    kind = action.type
    if kind is None or not callable(kind):
        return str
    return kind


class _Reader:
    """Converts one variable's text for one action, raising ConfigError naming both."""

    def __init__(self, var: str, flag: str, action: argparse.Action) -> None:
        self.var = var
        self.flag = flag
        self.action = action

    def fail(self, raw: str, reason: str) -> ConfigError:
        return ConfigError(self.var, f"invalid value {raw!r} for {self.flag}: {reason}")

    def one(self, raw: str) -> Any:
        convert = _converter(self.action)
        try:
            value = convert(raw)
        except ConfigError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise self.fail(raw, reason) from None
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            name = getattr(convert, "__name__", repr(convert))
            raise self.fail(raw, str(exc) or f"not a valid {name}") from None
        choices = self.action.choices
        if choices is not None and value not in choices:
            accepted = ", ".join(map(str, choices))
            raise self.fail(raw, f"accepted: {accepted}")
        return value

    def items(self, raw: str) -> list[str]:
        splitter = _OPTION_SPLIT if self.action.option_strings else _POSITIONAL_SPLIT
        return [part.strip() for part in splitter.split(raw) if part.strip()]

    def boolean(self, raw: str) -> bool:
        try:
            return parse_bool(raw, option=self.var)
        except ConfigError:
            raise self.fail(raw, "not a boolean (use 1/true/yes/on or 0/false/no/off)") from None


def _is_list(action: argparse.Action) -> bool:
    return action.nargs in _LIST_NARGS or isinstance(action.nargs, int)


def _value(reader: _Reader, action: argparse.Action, raw: str) -> tuple[bool, Any]:
    """(has_value, default) for one variable; (False, None) means "treat as unset"."""
    empty = not raw.strip()
    if isinstance(action, argparse.BooleanOptionalAction):
        return (False, None) if empty else (True, reader.boolean(raw))
    if isinstance(action, _FLAG_ACTIONS):
        if empty:
            return False, None
        return True, (action.const if reader.boolean(raw) else action.default)
    if isinstance(action, argparse._CountAction):
        if empty:
            return False, None
        try:
            count = int(raw.strip())
        except ValueError:
            raise reader.fail(raw, "not an integer") from None
        if count < 0:
            raise reader.fail(raw, "must be >= 0")
        return True, count
    if isinstance(action, argparse._AppendAction | argparse._ExtendAction):
        return True, _EnvList(reader.one(item) for item in reader.items(raw))
    if _is_list(action):
        values = [reader.one(item) for item in reader.items(raw)]
        nargs = action.nargs
        if isinstance(nargs, int) and len(values) != nargs:
            raise reader.fail(raw, f"expected {nargs} values, got {len(values)}")
        if nargs == argparse.ONE_OR_MORE and not values:
            return False, None
        return True, values
    if empty:
        return False, None
    value = reader.one(raw.strip())
    if isinstance(value, str):
        # argparse converts a string default itself when the flag is absent: hand it the raw
        # text, already checked above, so the option's type is applied exactly once.
        return True, raw.strip()
    return True, value


def apply_env_defaults(
    parser: argparse.ArgumentParser,
    env: Mapping[str, str],
    prefix: str = DEFAULT_PREFIX,
    *,
    exclude: Collection[str] = (),
) -> None:
    """Make every ``<prefix><OPTION>`` variable in ``env`` the default of its option.

    ``exclude`` names options to leave alone (by flag, dest or variable), e.g. ``--key``,
    whose secret the CLI reads from ``BING_SEARCH_V7_SUBSCRIPTION_KEY`` after ``--key-file``.
    Options made satisfied by a variable stop being required. Raises ConfigError (naming
    the variable and the flag) for a value the option's type or choices refuse.
    """
    for action in parser._actions:
        var = env_name(action, prefix)
        flag = _flag(action)
        if var is None or flag is None or var not in env:
            continue
        if {var, flag, action.dest} & set(exclude):
            continue
        has_value, default = _value(_Reader(var, flag, action), action, env[var])
        if not has_value:
            continue
        action.default = default
        # set_defaults also records the value on the parser, where it outranks action.default
        # for a dest shared by several actions.
        parser.set_defaults(**{action.dest: default})
        action.required = False
