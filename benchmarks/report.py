"""Summaries, ratios, target checks and the text table of a harness run.

Rows of one ``(scenario, point)`` form a group; within a group each tool's runs are reduced
to medians, and every tool's images/s is divided by the references' (img2dataset at its best
thread count, img2dataset without re-encoding, the bare aiohttp loop, the seed blog loop) -
figures measured in the same run, on the same URLs, against the same emulator.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from benchmarks.tools import Row

__all__ = ["REFERENCES", "TARGETS", "render_markdown", "render_table", "summarize"]

#: Ratio column -> the tool name it divides by.
REFERENCES = {
    "x_img2dataset": "img2dataset",
    "x_img2dataset_noreencode": "img2dataset (no reencode)",
    "x_bare": "bare aiohttp loop",
    "x_seed": "seed blog loop",
    # bingcrawl's own default against its former near-duplicate method (one hash per image)
    "x_whole": "bingcrawl (whole dedup)",
    # ... and against itself honouring no publisher's opt-out (--ignore all)
    "x_careless": "bingcrawl (no etiquette)",
}

#: (name, metric path, comparison, bound) checked on the summary.
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("images/s vs img2dataset (resize_mode=no)", "main:bingcrawl:x_img2dataset", ">=", 2.0),
    (
        "webdataset vs img2dataset (resize_mode=no)",
        "main:bingcrawl (webdataset):x_img2dataset",
        ">=",
        2.0,
    ),
    (
        "images/s vs img2dataset (no reencoding)",
        "main:bingcrawl:x_img2dataset_noreencode",
        ">=",
        1.0,
    ),
    (
        "webdataset vs img2dataset (no reencoding)",
        "main:bingcrawl (webdataset):x_img2dataset_noreencode",
        ">=",
        1.0,
    ),
    ("network: images/s vs img2dataset (best)", "network:bingcrawl:x_img2dataset_best", ">=", 2.0),
    # The last 1 %: --timeout (30 s) + the backoff before its 3 retries (0.5 + 1 + 2 s).
    ("network: seconds after 99 % of images", "network:bingcrawl:tail_s", "<=", 33.5),
    ("images/s vs seed blog loop", "main:bingcrawl:x_seed", ">=", 50.0),
    ("images/s vs bare aiohttp loop", "main:bingcrawl:x_bare", ">=", 0.7),
    ("images/s, regions dedup vs whole", "main:bingcrawl:x_whole", ">=", 0.9),
    ("images/s, etiquette vs --ignore all", "main:bingcrawl:x_careless", ">=", 0.95),
    ("images/s with webdataset output", "main:bingcrawl (webdataset):images_per_s", ">=", 1000.0),
    ("peak RSS MB at concurrency 256", "rss256", "<=", 300.0),
    ("RSS growth 10k -> 100k candidates", "memory_growth", "<=", 0.10),
    ("event-loop lag p99 ms", "main:bingcrawl:loop_lag_p99_ms", "<", 50.0),
    ("network: event-loop lag p99 ms", "network:bingcrawl:loop_lag_p99_ms", "<", 50.0),
)

_MEDIAN_FIELDS = (
    "stored",
    "images_per_s",
    "wall_images_per_s",
    "wall_s",
    "cpu_s_per_image",
    "emulator_cpu_s_per_image",
    "emulator_busy",
    "peak_rss_mb",
    "children_peak_rss_mb",
    "tree_peak_rss_mb",
    "rss_end_mb",
    "loop_lag_p99_ms",
    "time_to_first_image_s",
    "t99_s",
    "tail_s",
    "api_calls",
    "api_calls_per_s",
)


def _median(values: Iterable[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.median(nums) if nums else None


def _group_key(row: Row) -> tuple[str, str]:
    return row.scenario, row.point


def summarize(rows: Sequence[Row]) -> dict[str, Any]:
    """Medians per (scenario, point, tool, settings), ratios, memory growth and targets."""
    groups: dict[tuple[str, str], dict[tuple[str, str], list[Row]]] = {}
    for row in rows:
        groups.setdefault(_group_key(row), {}).setdefault((row.tool, row.settings), []).append(row)
    entries: list[dict[str, Any]] = []
    for (scenario, point), tools in groups.items():
        group_entries = []
        for (tool, settings), runs in tools.items():
            ok = [r for r in runs if r.status == "ok"]
            entry: dict[str, Any] = {
                "scenario": scenario,
                "point": point,
                "tool": tool,
                "settings": settings,
                "urls": runs[0].urls,
                "runs": len(ok),
                "status": "ok" if ok else runs[0].status,
            }
            for name in _MEDIAN_FIELDS:
                entry[name] = _median(getattr(r, name) for r in ok)
            if ok:
                entry["images_per_s_all"] = [r.images_per_s for r in ok]
                entry["steady_images_per_s"] = _median(
                    r.extra.get("steady_images_per_s") for r in ok
                )
            group_entries.append(entry)
        for column, reference in REFERENCES.items():
            refs = [e["images_per_s"] for e in group_entries
                    if e["tool"] == reference and e["images_per_s"]]  # fmt: skip
            best = max(refs, default=None)
            for e in group_entries:
                e[column] = e["images_per_s"] / best if best and e["images_per_s"] else None
        # img2dataset's best mode, whichever it is (the network scenario runs one).
        peers = [e["images_per_s"] for e in group_entries
                 if e["tool"] in ("img2dataset", "img2dataset (no reencode)")
                 and e["images_per_s"]]  # fmt: skip
        best_peer = max(peers, default=None)
        for e in group_entries:
            e["x_img2dataset_best"] = (
                e["images_per_s"] / best_peer if best_peer and e["images_per_s"] else None
            )
        entries.extend(group_entries)
    summary: dict[str, Any] = {"entries": entries}
    summary["memory"] = _memory(entries)
    summary["targets"] = _targets(entries, summary["memory"])
    return summary


def _memory(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    points = [e for e in entries if e["scenario"] == "memory" and e["status"] == "ok"]
    points.sort(key=lambda e: e["urls"])
    result: dict[str, Any] = {
        "points": [
            {
                k: e[k]
                for k in (
                    "point",
                    "urls",
                    "stored",
                    "peak_rss_mb",
                    "rss_end_mb",
                    "children_peak_rss_mb",
                    "tree_peak_rss_mb",
                )
            }
            for e in points
        ]
    }
    if len(points) >= 2 and points[0]["peak_rss_mb"]:
        result["peak_rss_growth"] = points[-1]["peak_rss_mb"] / points[0]["peak_rss_mb"] - 1
        if points[0]["rss_end_mb"]:
            result["end_rss_growth"] = points[-1]["rss_end_mb"] / points[0]["rss_end_mb"] - 1
    return result


def _lookup(entries: Sequence[dict[str, Any]], memory: dict[str, Any], path: str) -> Any:
    if path == "memory_growth":
        return memory.get("peak_rss_growth")
    if path == "rss256":
        for scenario, point in (("concurrency", "c=256"), ("main", "target")):
            for e in entries:
                if (e["scenario"], e["point"], e["tool"]) == (scenario, point, "bingcrawl"):
                    if scenario == "main" and e["settings"] != "c=256":
                        continue
                    return e["peak_rss_mb"]
        return None
    scenario, tool, field = path.split(":")
    for e in entries:
        if e["scenario"] == scenario and e["point"] == "target" and e["tool"] == tool:
            return e.get(field)
    return None


def _targets(entries: Sequence[dict[str, Any]], memory: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for name, path, op, bound in TARGETS:
        value = _lookup(entries, memory, path)
        met = None
        if isinstance(value, int | float):
            met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
        checks.append({"target": name, "value": value, "bound": f"{op} {bound:g}", "met": met})
    return checks


def _fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


_COLUMNS = (
    ("scenario", "scenario"),
    ("point", "point"),
    ("tool", "tool"),
    ("settings", "settings"),
    ("stored", "stored/URLs"),
    ("images_per_s", "img/s"),
    ("x_img2dataset", "x i2d"),
    ("x_img2dataset_noreencode", "x i2d-nr"),
    ("x_bare", "x bare"),
    ("cpu_s_per_image", "CPU ms/img"),
    ("emulator_cpu_s_per_image", "emu ms/img"),
    ("peak_rss_mb", "RSS MB"),
    ("loop_lag_p99_ms", "lag p99 ms"),
    ("time_to_first_image_s", "1st img s"),
    ("tail_s", "after 99% s"),
    ("api_calls_per_s", "API/s"),
)


def _cell(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if entry["status"] != "ok" and key not in ("scenario", "point", "tool", "settings"):
        return entry["status"] if key == "stored" else ""
    if key == "stored":
        return f"{_fmt(value)}/{entry['urls']}" if value is not None else "-"
    if key.startswith("x_"):
        return _fmt(value, 2, "x")
    if key in ("cpu_s_per_image", "emulator_cpu_s_per_image"):
        return _fmt(value * 1000 if value is not None else None, 2)
    if key == "peak_rss_mb":
        kids = entry.get("children_peak_rss_mb")
        return f"{_fmt(value)}" + (f" (+{kids:.0f})" if kids else "")
    if key == "images_per_s":
        return _fmt(value, 0 if (value or 0) >= 100 else 1)
    if key in ("loop_lag_p99_ms", "time_to_first_image_s", "api_calls_per_s", "tail_s"):
        return _fmt(value, 1 if key != "time_to_first_image_s" else 2)
    return _fmt(value)


def render_table(result: dict[str, Any]) -> str:
    """The summary as a fixed-width text table, then the target checks."""
    entries = result["summary"]["entries"]
    header = [title for _, title in _COLUMNS]
    body = [[_cell(e, key) for key, _ in _COLUMNS] for e in entries]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    memory = result["summary"]["memory"]
    if "peak_rss_growth" in memory:
        lines.append("")
        lines.append(
            f"memory: peak RSS growth {memory['peak_rss_growth']:+.1%}, RSS at end "
            f"{memory.get('end_rss_growth', 0.0):+.1%}, from {memory['points'][0]['urls']} to "
            f"{memory['points'][-1]['urls']} candidates"
        )
    lines.append("")
    quick = bool(result.get("options", {}).get("is_quick"))
    lines.append("targets (--quick: tiny sizes, not a measurement):" if quick else "targets:")
    for t in result["summary"]["targets"]:
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        value = t["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"  {t['target']:<40} {shown:>10} (target {t['bound']}): {mark}")
    return "\n".join(lines)


def _point_order(point: str) -> float:
    """Numeric order of curve points: ``c=8``, ``50 ms``, ``30k``, ``1m``."""
    text = point.removeprefix("c=").removesuffix(" ms")
    scale = {"k": 1e3, "m": 1e6}.get(text[-1:], 1.0)
    try:
        return float(text.rstrip("km")) * scale
    except ValueError:
        return float("inf")


def _md_rate(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


_Cell = Callable[[dict[str, Any]], str]

#: The comparison tables of :func:`render_markdown`: scenario -> (column title, cell) pairs.
_TABLES: dict[str, tuple[tuple[str, _Cell], ...]] = {
    "main": (
        ("tool", lambda e: e["tool"]),
        ("settings", lambda e: e["settings"]),
        ("images/s", lambda e: _md_rate(e["images_per_s"])),
        ("x img2dataset", lambda e: _fmt(e["x_img2dataset"], 2, "x")),
        ("x img2dataset (no reencode)", lambda e: _fmt(e["x_img2dataset_noreencode"], 2, "x")),
        ("x bare loop", lambda e: _fmt(e["x_bare"], 2, "x")),
        ("client CPU ms/img", lambda e: _fmt((e["cpu_s_per_image"] or 0) * 1000, 2)),
        ("peak RSS MB (+ children)",
         lambda e: f"{_fmt(e['peak_rss_mb'])} (+{_fmt(e['children_peak_rss_mb'])})"),
        ("loop lag p99 ms", lambda e: _fmt(e["loop_lag_p99_ms"], 0)),
        ("first image s", lambda e: _fmt(e["time_to_first_image_s"], 1)),
    ),
    "network": (
        ("tool", lambda e: e["tool"]),
        ("settings", lambda e: e["settings"]),
        ("stored / URLs", lambda e: f"{_fmt(e['stored'])} / {e['urls']:,}"),
        ("images/s (whole run)", lambda e: _md_rate(e["images_per_s"])),
        ("x img2dataset (best)", lambda e: _fmt(e["x_img2dataset_best"], 2, "x")),
        ("99 % at s", lambda e: _fmt(e["t99_s"], 1)),
        ("after 99 % s", lambda e: _fmt(e["tail_s"], 1)),
        ("steady images/s", lambda e: _md_rate(e.get("steady_images_per_s"))),
        ("client CPU ms/img", lambda e: _fmt((e["cpu_s_per_image"] or 0) * 1000, 2)),
        ("peak RSS MB (+ children)",
         lambda e: f"{_fmt(e['peak_rss_mb'])} (+{_fmt(e['children_peak_rss_mb'])})"),
        ("loop lag p99 ms", lambda e: _fmt(e["loop_lag_p99_ms"], 0)),
    ),
}  # fmt: skip


def _md_row(entry: dict[str, Any], table: tuple[tuple[str, _Cell], ...]) -> str:
    if entry["status"] != "ok":
        return f"| {entry['tool']} | {entry['settings']} | {entry['status']} " + "|" * (
            len(table) - 2
        )
    return "| " + " | ".join(cell(entry) for _, cell in table) + " |"


def render_markdown(result: dict[str, Any]) -> str:
    """The main comparison, the curves, memory and the targets as Markdown tables."""
    entries = [e for e in result["summary"]["entries"] if e["point"] != "tuning"]
    lines = [f"`{result.get('command', 'python -m benchmarks')}`", ""]
    for scenario, table in _TABLES.items():
        rows = [e for e in entries if e["scenario"] == scenario]
        if not rows:
            continue
        lines += ["| " + " | ".join(title for title, _ in table) + " |",
                  "|---|---|" + "---:|" * (len(table) - 2), *(_md_row(e, table) for e in rows),
                  ""]  # fmt: skip
    for scenario in ("concurrency", "latency", "size"):
        rows = [e for e in entries if e["scenario"] == scenario and e["status"] == "ok"]
        if not rows:
            continue
        points = sorted(dict.fromkeys(e["point"] for e in rows), key=_point_order)
        tools = list(dict.fromkeys(e["tool"] for e in rows))
        lines += ["", f"| {scenario} | " + " | ".join(points) + " |"]
        lines.append("|---|" + "---:|" * len(points))
        for tool in tools:
            cells = []
            for point in points:
                found = [e for e in rows if e["tool"] == tool and e["point"] == point]
                cells.append(_md_rate(found[0]["images_per_s"]) if found else "-")
            lines.append(f"| {tool} images/s | " + " | ".join(cells) + " |")
    memory = result["summary"]["memory"]
    if memory.get("points"):
        lines += ["", "| candidates | stored | peak RSS MB | RSS at end MB | hash worker MB |"]
        lines.append("|---:|---:|---:|---:|---:|")
        for p in memory["points"]:
            lines.append(
                f"| {p['urls']:,} | {p['stored']:,.0f} | {_fmt(p['peak_rss_mb'])} | "
                f"{_fmt(p['rss_end_mb'])} | {_fmt(p['children_peak_rss_mb'])} |"
            )
    lines += ["", "| target | measured | bound | met |", "|---|---:|---|---|"]
    for t in result["summary"]["targets"]:
        value = t["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {shown} | {t['bound']} | {met} |")
    return "\n".join(lines)
