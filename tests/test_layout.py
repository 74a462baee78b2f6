"""The suite's own layout (issue 14): helpers shared by tests live in tests/support.

No module under tests/ imports a test module or a conftest.py (whose helpers would be
reachable only by knowing which test happens to define them), and a conftest.py holds
fixtures only (its helpers go to tests/support, where every test can import them).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, relative imports resolved against its package."""
    package = path.relative_to(TESTS.parent).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append(module)
            # `from tests.obs import test_container` imports a module too
            found += [f"{module}.{alias.name}" for alias in node.names]
    return found


def test_no_test_module_or_conftest_is_imported() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for module in _imported_modules(path):
            last = module.rsplit(".", 1)[-1]
            if module.startswith("tests.") and (last == "conftest" or last.startswith("test_")):
                offenders.append(f"{path.relative_to(TESTS.parent)} imports {module}")
    assert offenders == []


def test_conftest_files_hold_fixtures_only() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("conftest.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body[1:]:  # after the module docstring
            if isinstance(node, ast.Import | ast.ImportFrom):
                continue
            fixture = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                "fixture" in ast.unparse(d) for d in node.decorator_list
            )
            if not fixture:
                name = getattr(node, "name", type(node).__name__)
                offenders.append(f"{path.relative_to(TESTS.parent)}:{node.lineno} {name}")
    assert offenders == []
