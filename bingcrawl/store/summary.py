"""Progress of a crawl, read from its checkpoint: ``bingcrawl status DIR [--json]``."""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import orjson

from bingcrawl.records import OPTED_OUT, Status
from bingcrawl.store.schema import CHECKPOINT_NAME, connect_readonly

__all__ = ["ApiCallCount", "QueryStatus", "StatusSummary", "build_summary", "read_summary"]

#: Status columns of the text table, in pipeline order.
_STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
_TEXT_WIDTH = 40
#: Hosts listed per opt-out signal (the most excluded first; the rest are summed).
OPTED_OUT_HOSTS = 20


@dataclass(frozen=True, slots=True)
class QueryStatus:
    """One query's progress; ``counts`` maps candidate status -> number of candidates."""

    id: int
    source: str
    label: str
    text: str
    state: str
    next_offset: int
    pages: int
    results: int
    error: str | None
    counts: Mapping[str, int]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "source": self.source,
            "label": self.label,
            "text": self.text,
            "state": self.state,
            "next_offset": self.next_offset,
            "pages": self.pages,
            "results": self.results,
            "error": self.error,
            "candidates": dict(self.counts),
        }


@dataclass(frozen=True, slots=True)
class ApiCallCount:
    """How many API calls one endpoint answered with one HTTP status."""

    endpoint: str
    status: int
    count: int


@dataclass(frozen=True, slots=True)
class StatusSummary:
    """Everything ``bingcrawl status`` shows: per query, totals, errors, API calls."""

    queries: tuple[QueryStatus, ...]
    totals: Mapping[str, int]
    errors: Mapping[str, int]
    api_calls: tuple[ApiCallCount, ...]
    #: API calls answered today (UTC): what a provider's daily budget counts.
    api_calls_today: int = 0
    #: Images publishers' opt-outs excluded: signal (the error class without ``opted_out_``,
    #: e.g. ``robots_txt``) -> host -> images, the :data:`OPTED_OUT_HOSTS` hosts with most,
    #: the others summed under ``(other hosts)``.
    opted_out: Mapping[str, Mapping[str, int]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def api_calls_total(self) -> int:
        """All API calls recorded on this OUT."""
        return sum(c.count for c in self.api_calls)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (``status --json``)."""
        return {
            "queries": [q.to_dict() for q in self.queries],
            "totals": dict(self.totals),
            "errors": dict(self.errors),
            "opted_out": self.opted_out_dict(),
            "api_calls": {
                "total": self.api_calls_total,
                "today_utc": self.api_calls_today,
                "by_endpoint": [
                    {"endpoint": c.endpoint, "status": c.status, "count": c.count}
                    for c in self.api_calls
                ],
            },
        }

    def opted_out_dict(self) -> dict[str, dict[str, object]]:
        """``{signal: {"total": n, "hosts": {host: n}}}`` (stats.json, ``status --json``)."""
        return {
            signal: {"total": sum(hosts.values()), "hosts": dict(hosts)}
            for signal, hosts in self.opted_out.items()
        }

    def to_json(self) -> str:
        """The summary as indented JSON text."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()

    def render_text(self) -> str:
        """A plain-text table: one row per query, then totals, errors and API calls."""
        header = [
            "ID",
            "SOURCE",
            "LABEL",
            "QUERY",
            "STATE",
            "OFFSET",
            "PAGES",
            *(s.upper() for s in _STATUSES),
        ]
        table = [header]
        for q in self.queries:
            table.append(
                [
                    str(q.id),
                    q.source,
                    _cell(q.label),
                    _cell(q.text),
                    q.state,
                    str(q.next_offset),
                    str(q.pages),
                    *(str(q.counts.get(s, 0)) for s in _STATUSES),
                ]
            )
        table.append(
            [
                "",
                "",
                "",
                "TOTAL",
                "",
                "",
                str(sum(q.pages for q in self.queries)),
                *(str(self.totals.get(s, 0)) for s in _STATUSES),
            ]
        )
        numeric = {0, *range(5, len(header))}
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
            for row in table
        ]
        if self.errors:
            lines.append("")
            lines.append("failures by error class:")
            lines.extend(f"  {name}: {n}" for name, n in self.errors.items())
        if self.opted_out:
            lines.append("")
            lines.append("excluded by publishers' opt-outs (not stored, not retried):")
            for signal, hosts in self.opted_out.items():
                shown = ", ".join(f"{_cell(h)} {n}" for h, n in list(hosts.items())[:5])
                more = " ..." if len(hosts) > 5 else ""
                lines.append(f"  {signal}: {sum(hosts.values())} ({shown}{more})")
        lines.append("")
        lines.append(f"API calls: {self.api_calls_total} ({self.api_calls_today} today, UTC)")
        lines.extend(f"  {c.endpoint} {c.status}: {c.count}" for c in self.api_calls)
        failed = [q for q in self.queries if q.error]
        if failed:
            lines.append("")
            lines.append("query errors:")
            lines.extend(f"  #{q.id} {_cell(q.text)}: {_cell(q.error or '', 200)}" for q in failed)
        return "\n".join(lines) + "\n"


def _cell(text: str, width: int = _TEXT_WIDTH) -> str:
    # Query texts come from users and from the API: keep control characters from breaking
    # (or forging) table lines, and long texts from pushing the numbers off screen.
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def build_summary(conn: sqlite3.Connection) -> StatusSummary:
    """Read a :class:`StatusSummary` through ``conn`` (in autocommit mode) in one snapshot."""
    if conn.in_transaction:
        return _build(conn)
    conn.execute("BEGIN")
    try:
        return _build(conn)
    finally:
        conn.execute("COMMIT")


def _build(conn: sqlite3.Connection) -> StatusSummary:
    per_query: dict[int, dict[str, int]] = {}
    for qid, status, n in conn.execute(
        "SELECT query_id, status, count(*) FROM candidates GROUP BY query_id, status"
    ):
        per_query.setdefault(qid, {})[status] = n
    queries = tuple(
        QueryStatus(
            id=row[0],
            source=row[1],
            label=row[2],
            text=row[3],
            state=row[4],
            next_offset=row[5],
            pages=row[6],
            results=row[7],
            error=row[8],
            counts=MappingProxyType(per_query.get(row[0], {})),
        )
        for row in conn.execute(
            "SELECT id, source, label, text, state, next_offset, pages, results, error "
            "FROM queries ORDER BY id"
        )
    )
    totals: dict[str, int] = {}
    for counts in per_query.values():
        for status, n in counts.items():
            totals[status] = totals.get(status, 0) + n
    errors = dict(
        conn.execute(
            # A scan of the failed rows' small covering index, not a table lookup per row.
            "SELECT coalesce(error_class, 'unknown'), count(*) FROM candidates "
            "INDEXED BY idx_candidates_failed WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    )
    api = tuple(
        ApiCallCount(endpoint, status, count)
        for endpoint, status, count in conn.execute(
            "SELECT endpoint, status, count FROM api_calls ORDER BY endpoint, status"
        )
    )
    (today,) = conn.execute(
        "SELECT coalesce(sum(count), 0) FROM api_calls_daily WHERE day = date('now')"
    ).fetchone()
    return StatusSummary(
        queries=queries,
        totals=MappingProxyType(totals),
        errors=MappingProxyType(errors),
        api_calls=api,
        api_calls_today=int(today),
        opted_out=_opted_out(conn),
    )


def _opted_out(conn: sqlite3.Connection) -> Mapping[str, Mapping[str, int]]:
    """Opted-out images by signal and host: the failed rows' index finds them (a range of
    error classes), their URLs name the host."""
    found: dict[str, Counter[str]] = {}
    upper = OPTED_OUT[:-1] + chr(ord(OPTED_OUT[-1]) + 1)
    for error, url in conn.execute(
        "SELECT error_class, url FROM candidates INDEXED BY idx_candidates_failed "
        "WHERE status = 'failed' AND error_class >= ? AND error_class < ?",
        (OPTED_OUT, upper),
    ):
        try:
            host = urllib.parse.urlsplit(url).hostname or "?"
        except ValueError:
            host = "?"
        found.setdefault(error[len(OPTED_OUT) :], Counter())[host] += 1
    result: dict[str, Mapping[str, int]] = {}
    for signal in sorted(found):
        ranked = sorted(found[signal].items(), key=lambda item: (-item[1], item[0]))
        hosts = dict(ranked[:OPTED_OUT_HOSTS])
        if rest := sum(n for _, n in ranked[OPTED_OUT_HOSTS:]):
            hosts["(other hosts)"] = rest
        result[signal] = MappingProxyType(hosts)
    return MappingProxyType(result)


def read_summary(out: Path) -> StatusSummary:
    """Blocking helper for ``bingcrawl status DIR``: read-only, safe next to a running crawl."""
    conn = connect_readonly(Path(out) / CHECKPOINT_NAME)
    try:
        return build_summary(conn)
    finally:
        conn.close()
