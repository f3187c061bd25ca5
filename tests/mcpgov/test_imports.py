"""The enforcer's import structure: no cycle between mcpgov modules, and no Django import anywhere in them.

Read statically from the source (every import, module-level or inside a function; imports under
``if TYPE_CHECKING:`` are for the type checker only and never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import mcpgov

PACKAGE = Path(mcpgov.__file__).parent


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST) -> list[str]:
    """Absolute names imported anywhere in ``tree`` (``from mcpgov import x`` yields ``mcpgov.x``)."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in node.orelse:  # type: ignore[attr-defined]
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(mcpgov module -> mcpgov modules it imports, mcpgov module -> every name it imports)``."""
    modules = {f"mcpgov.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {"mcpgov"}
    graph: dict[str, set[str]] = {}
    names: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        module = "mcpgov" if path.stem == "__init__" else f"mcpgov.{path.stem}"
        imported = set(_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))))
        names[module] = imported
        graph[module] = {name for name in imported if name in modules and name not in ("mcpgov", module)}
    return graph, names


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, …, a]``, or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_mcpgov_has_no_import_cycle():
    graph, _ = import_graph()
    # the graph is real: the call path, the portal conversation and start-up are separate modules
    assert {"mcpgov.gateway", "mcpgov.gate", "mcpgov.fast_stdio"} <= graph["mcpgov.serve"]
    assert "mcpgov.control" in graph["mcpgov.gateway"]
    assert "mcpgov.gateway" not in graph["mcpgov.fast_stdio"]  # only for the type checker
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in mcpgov: " + " -> ".join(cycle or ())


def test_no_mcpgov_module_imports_django_even_lazily():
    _, names = import_graph()
    assert len(names) >= 15
    offenders = {
        m: sorted(n for n in imported if n == "django" or n.startswith("django."))
        for m, imported in names.items()
    }
    assert {m: n for m, n in offenders.items() if n} == {}
