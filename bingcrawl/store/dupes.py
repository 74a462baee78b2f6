"""``bingcrawl dupes``: audit the near-duplicate decisions of a crawl.

Every rejected near duplicate is a pair: the stored image it was judged a copy of, and the
candidate that was not stored, with the hash that matched (``frame`` or ``centre``, see
:mod:`bingcrawl.dedup.index`) and its Hamming distance. :func:`dupes_summary` counts them by
hash and distance; :func:`write_dupes_html` writes one self-contained page that shows the
pairs side by side, farthest first (the doubtful ones), for a quick look by eye.

The stored image is shown from its file (a relative link, so the page works when OUT is
moved or served as it is); the rejected copy was never stored, so it is shown from its
source URL, which the browser fetches when the page is opened (a copy that has gone from the
web shows as a broken image). Images stored in webdataset shards, and seed images of a
visual search (never stored), are shown from their URLs too, or named when they have none.
"""

from __future__ import annotations

import html
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bingcrawl.store.atomic import atomic_open
from bingcrawl.store.output import EXPORT_DIR, DbSource, snapshot

__all__ = ["DUPES_PAGE", "DupePair", "DupesResult", "dupes_summary", "write_dupes_html"]

#: The page's name under ``OUT/export/`` when no ``--output`` is given.
DUPES_PAGE = "dupes.html"

# How a duplicate was found; rows of older crawls have no match_kind, but a copy with other
# bytes than the image it duplicates was a near one (the ``whole`` method's frame hash).
_KIND = (
    "COALESCE({t}match_kind, "
    "CASE WHEN {t}sha256 = {t}duplicate_of THEN 'exact' ELSE 'frame' END)"
)

# The duplicates, with the stored image each names (a seed image of a visual search has no
# stored row), farthest first.
_PAIRS = (
    "SELECT d.id, d.url, d.label, d.query, d.host_page_url, d.distance, "
    f"{_KIND.format(t='d.')}, "
    "d.duplicate_of, s.url, s.path, s.shard_end, s.label, s.width, s.height, d.width, d.height "
    "FROM candidates d LEFT JOIN candidates s "
    "ON s.sha256 = d.duplicate_of AND s.status = 'stored' "
    "WHERE d.status = 'duplicate' {where} ORDER BY d.distance DESC, d.id LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class DupePair:
    """A rejected duplicate and the stored image it duplicates (``kept_*``)."""

    id: int
    url: str
    label: str
    query: str
    host_page_url: str | None
    distance: int
    match: str
    kept_sha256: str
    kept_url: str | None
    kept_path: str | None  # None: not a file of its own (a shard member, or a seed image)
    kept_label: str | None
    kept_size: tuple[int, int] | None
    size: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class DupesResult:
    """Where the page went and how many pairs it shows (of ``total`` that qualified)."""

    path: Path
    pairs: int
    total: int


def _pairs(conn: sqlite3.Connection, *, exact: bool, limit: int) -> Iterator[DupePair]:
    where = "" if exact else "AND d.sha256 IS NOT d.duplicate_of"
    for row in conn.execute(_PAIRS.format(where=where), (limit,)):
        in_file = row[9] is not None and row[10] is None
        yield DupePair(
            id=row[0],
            url=row[1],
            label=row[2],
            query=row[3],
            host_page_url=row[4],
            distance=row[5] or 0,
            match=row[6],
            kept_sha256=row[7],
            kept_url=row[8],
            kept_path=row[9] if in_file else None,
            kept_label=row[11],
            kept_size=(row[12], row[13]) if row[12] is not None else None,
            size=(row[14], row[15]) if row[14] is not None else None,
        )


def dupes_summary(source: DbSource) -> dict[str, dict[int, int]]:
    """Rejected duplicates counted by the hash that matched, then by Hamming distance."""
    counts: dict[str, dict[int, int]] = {}
    with snapshot(source) as conn:
        rows = conn.execute(
            f"SELECT {_KIND.format(t='')}, COALESCE(distance, 0), COUNT(*) FROM candidates "
            "WHERE status = 'duplicate' "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        for kind, distance, n in rows:
            counts.setdefault(kind, {})[distance] = n
    return counts


def render_summary(counts: dict[str, dict[int, int]]) -> str:
    """The summary as a few lines of text."""
    if not counts:
        return "no duplicates rejected"
    lines = []
    for kind, by_distance in counts.items():
        total = sum(by_distance.values())
        spread = ", ".join(f"{d}: {n}" for d, n in by_distance.items())
        lines.append(f"{kind:7s} {total:8d}   by distance: {spread}")
    return "\n".join(lines)


def write_dupes_html(
    out: Path | str,
    *,
    dest: Path | None = None,
    exact: bool = False,
    limit: int = 1000,
    source: DbSource | None = None,
) -> DupesResult:
    """Write the page of duplicate pairs (near ones; ``exact`` adds byte-identical copies),
    at most ``limit`` of them, farthest first; by default to ``OUT/export/dupes.html``."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    out = Path(out)
    target = dest if dest is not None else out / EXPORT_DIR / DUPES_PAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    # Links to the stored files are relative to the page, wherever it is written.
    to_out = Path(os.path.relpath(out.resolve(), target.parent.resolve()))
    with snapshot(source if source is not None else out) as conn:
        pairs = list(_pairs(conn, exact=exact, limit=limit))
        where = "" if exact else " AND sha256 IS NOT duplicate_of"
        total = conn.execute(
            f"SELECT COUNT(*) FROM candidates WHERE status = 'duplicate'{where}"
        ).fetchone()[0]
    page = _page(out, pairs, total, to_out)
    with atomic_open(target.parent, target.name) as fh:
        fh.write(page.encode())
    return DupesResult(path=target, pairs=len(pairs), total=total)


def _img(src: str | None, alt: str) -> str:
    if not src:
        return f'<div class="none">{html.escape(alt)}</div>'
    return (
        f'<a href="{html.escape(src)}"><img src="{html.escape(src)}" loading="lazy" '
        f'alt="{html.escape(alt)}" referrerpolicy="no-referrer"></a>'
    )


def _link(url: str | None, text: str) -> str:
    if not url:
        return html.escape(text)
    return f'<a href="{html.escape(url)}">{html.escape(text)}</a>'


def _page(out: Path, pairs: list[DupePair], total: int, to_out: Path) -> str:
    rows = []
    for p in pairs:
        if p.kept_path is not None:
            kept_src: str | None = (to_out / p.kept_path).as_posix()
        else:
            kept_src = p.kept_url
        kept_alt = "a seed image (not stored)" if p.kept_label is None else "stored image"
        kept_size = f"{p.kept_size[0]}x{p.kept_size[1]}" if p.kept_size else ""
        size = f" {p.size[0]}x{p.size[1]}" if p.size else ""
        rows.append(
            "<tr>"
            f"<td>{_img(kept_src, kept_alt)}<div>{html.escape(p.kept_label or 'seed')} "
            f"{kept_size}<br><code>{p.kept_sha256[:16]}</code></div></td>"
            f"<td>{_img(p.url, 'rejected copy')}<div>{_link(p.url, 'source')} · "
            f"{_link(p.host_page_url, 'page')}{size}<br>{html.escape(p.label)}: "
            f"{html.escape(p.query)}</div></td>"
            f'<td class="m">{html.escape(p.match)}<br>{p.distance} bits<br>#{p.id}</td>'
            "</tr>"
        )
    shown = f"{len(pairs)} of {total}" if len(pairs) < total else f"{total}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>bingcrawl duplicates: {html.escape(out.name)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; }}
td {{ border-top: 1px solid #ccc; padding: 6px; vertical-align: top; }}
img {{ max-width: 240px; max-height: 240px; display: block; }}
.none {{ width: 240px; height: 60px; background: #eee; color: #555; padding: 4px; }}
.m {{ text-align: center; white-space: nowrap; }}
code {{ color: #555; }}
</style></head><body>
<h1>Duplicates of {html.escape(str(out))}</h1>
<p>{shown} rejected copies, farthest first: the stored image (left) and the copy that was
not stored (right), with the hash that matched (frame: the picture without flat borders;
centre: its centre) and the Hamming distance. A rejected copy was never stored: it is loaded
from its source URL, and shows as a broken image where that source is gone (an emulator that
has stopped, a page taken down).</p>
<table>
<tr><th>stored</th><th>rejected as its copy</th><th>match</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
