"""The import rules of docs/architecture.md, read from the source: no cycle between modules (every
import counts, also those inside functions or under TYPE_CHECKING), and no import from the lower areas
(mappings, consent, queue, config, observability) into connector, adapters or sandbox."""

from __future__ import annotations

import ast
from pathlib import Path

import passerelle

SRC = Path(passerelle.__file__).parent
LOWER = ("mappings", "consent", "queue", "config", "observability")
UPPER = ("connector", "adapters", "sandbox")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ("passerelle", *path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_lower_areas_never_import_upper_ones() -> None:
    upward = [
        f"{m} -> {t}" for m, targets in _graph().items() for t in targets if _area(m) in LOWER and _area(t) in UPPER
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    # The sandbox's own start-up cycle is being removed in its area (issue 9, item 2); everything else
    # must stay acyclic.
    graph = {m: {t for t in ts if _area(t) != "sandbox"} for m, ts in _graph().items() if _area(m) != "sandbox"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == []
