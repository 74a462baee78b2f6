"""ARCHITECTURE.md names every module of the crawler, so the map cannot silently go stale."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_is_on_the_map() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    package = ROOT / "bingcrawl"
    missing = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if path.stem in ("__init__", "__main__"):
            continue
        if rel.parts[0] in ("emulator", "bing", "obs"):  # mapped as whole packages
            if f"`{rel.parts[0]}/`" not in text:
                missing.append(f"{rel.parts[0]}/")
            continue
        if f"{path.stem}.py" not in text:
            missing.append(str(rel))
    assert missing == []


# -- layers: who may import whom ---------------------------------------------------------------

#: For each part of the package (a subpackage, or a top-level module), the parts it may
#: import. Lower parts never import higher ones; the emulator uses only what any client of
#: the API could (the error tree, the record vocabularies, byte sniffing).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "records": set(),
    "eventloop": {"errors"},
    "events": {"records"},
    "urllist": {"errors"},
    "obs": {"errors", "records", "events"},
    "bing": {"errors", "records", "obs"},
    "providers": {"errors", "records", "obs", "bing"},
    "imaging": {"errors", "records"},
    "fetch": {"errors", "records", "imaging"},
    "dedup": {"errors", "records"},
    "store": {"errors", "records"},
    "config": {"errors", "records", "bing", "providers", "fetch", "urllist"},
    "sources": {
        "errors", "records", "events", "obs", "bing", "providers", "config", "store", "urllist",
    },
    "engine": {
        "errors", "records", "events", "obs", "config", "dedup", "fetch", "imaging", "store",
        "sources",
    },
    "cluster": {
        "errors", "records", "events", "obs", "config", "dedup", "fetch", "imaging", "store",
        "engine",
    },
    "emulator": {"errors", "records", "eventloop", "imaging"},
    "options": {"errors", "records", "bing", "providers", "config", "fetch", "urllist", "obs"},
    "api": {"errors", "records", "eventloop", "config", "engine", "options", "urllist"},
    "cli": {
        "errors", "records", "eventloop", "events", "obs", "bing", "config", "fetch", "store",
        "engine", "options", "emulator", "urllist", "__init__",
    },
    "__main__": {"cli"},
    "__init__": {"api", "config", "engine", "errors", "events", "records"},
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's imports of bingcrawl modules: module level, in functions and under
    ``TYPE_CHECKING`` alike (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    modules = {_module_name(p): p for p in (ROOT / "bingcrawl").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("bingcrawl")}
            elif isinstance(node, ast.ImportFrom) and node.module:
                if not node.module.startswith("bingcrawl"):
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
        graph[name] = found - {name}
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_import_goes_down_the_layers() -> None:
    wrong = []
    for module, imported in sorted(_imports().items()):
        part = _part(module)
        assert part in ALLOWED, f"{module}: a new part of the package; give it its layer"
        for target in sorted(imported):
            other = _part(target)
            if other != part and other not in ALLOWED[part]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components over the module graph; the package root's lazy
    # re-exports (PEP 562 __getattr__) are left out: nothing imports the root itself.
    graph = {m: {t for t in ts if t != "bingcrawl"} for m, ts in _imports().items()}
    graph.pop("bingcrawl", None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


# -- options: declared once, the reference and the fingerprint derived ---------------------------


def test_the_options_reference_is_generated_from_the_declarations() -> None:
    from bingcrawl.options import options_reference

    text = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert text == options_reference(), "regenerate: python -m bingcrawl.options > docs/options.md"


def test_the_fingerprint_is_the_result_options() -> None:
    from bingcrawl.config import RESULT_OPTIONS, CrawlConfig
    from bingcrawl.options import crawl_parser

    flags = {f for action in crawl_parser()._actions for f in action.option_strings}
    for key, (declared, _) in RESULT_OPTIONS.items():
        assert set(declared) <= flags, key
    config = CrawlConfig(out=Path("x"), filters=(("license", "Public"),), convert_to="jpg")
    assert config.fingerprint() == {
        "filters": {"license": "Public"}, "hash": "phash", "near_dup_distance": 6,
        "max_pixels": 64_000_000, "max_bytes": 20 * 1024 * 1024, "output_format": "files",
        "convert_to": "jpg",
    }  # fmt: skip
    # The keys are stored in every checkpoint: an older crawl (no convert_to) still matches.
    assert "convert_to" not in CrawlConfig(out=Path("x")).fingerprint()
