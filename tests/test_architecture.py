"""ARCHITECTURE.md names every module of the crawler, so the map cannot silently go stale."""

from __future__ import annotations

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
