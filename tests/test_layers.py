"""The import structure between the apps: each imports only from the floors below it.

    portal  ←  governance  ←  audit  ←  incidents  ←  config

and `mcpgov` (the enforcer) imports none of them. Every module is parsed with `ast`, so lazy
imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# mcpgov is the basement: every app may use the enforcer's schema; it imports none of them.
FLOORS = ["mcpgov", "portal", "governance", "audit", "incidents", "config"]
RANK = {app: i for i, app in enumerate(FLOORS)}
PACKAGES = FLOORS


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def app_imports() -> list[tuple[str, str, str]]:
    """(importing app, imported app, "file:line") for every import from one of our packages to another."""
    edges = []
    for app in PACKAGES:
        for path in sorted((ROOT / app).rglob("*.py")):
            for line, name in imported_modules(path):
                target = name.split(".")[0]
                if target in PACKAGES and target != app:
                    edges.append((app, target, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def test_the_parser_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "portal" / "sub"
    pkg.mkdir(parents=True)
    module = pkg / "mod.py"
    module.write_text(
        "def f():\n    from audit.models import X\n    from ..pages import y\n    import incidents\n"
    )
    assert [name for _, name in imported_modules(module, tmp_path)] == [
        "audit.models",
        "portal.pages",
        "incidents",
    ]


def test_no_app_imports_from_a_floor_above_it():
    upward = [
        f"{where}: {app} imports {target}" for app, target, where in app_imports() if RANK[target] > RANK[app]
    ]
    assert upward == []


def test_mcpgov_imports_none_of_the_portal_apps():
    assert [
        f"{where}: mcpgov imports {target}" for app, target, where in app_imports() if app == "mcpgov"
    ] == []


def test_no_import_cycle_between_apps():
    graph: dict[str, set[str]] = {app: set() for app in PACKAGES}
    for app, target, _ in app_imports():
        graph[app].add(target)
    state: dict[str, str] = {}

    def visit(app: str, trail: list[str]) -> None:
        state[app] = "open"
        for target in sorted(graph[app]):
            if state.get(target) == "open":
                pytest.fail(f"import cycle: {' -> '.join([*trail, app, target])}")
            if target not in state:
                visit(target, [*trail, app])
        state[app] = "done"

    for app in PACKAGES:
        if app not in state:
            visit(app, [])
