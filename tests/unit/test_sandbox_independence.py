"""The sandbox shares no code with the gateway: it imports no other ``passerelle`` area."""

from __future__ import annotations

import ast
from pathlib import Path

import passerelle.sandbox

PACKAGE = Path(passerelle.sandbox.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_sandbox_imports_only_itself_from_passerelle() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 5
    for module in modules:
        ours = {n for n in _imports(module) if n == "passerelle" or n.startswith("passerelle.")}
        assert all(n.startswith("passerelle.sandbox") for n in ours), (module.name, ours)


def test_templates_are_package_data() -> None:
    names = {p.name for p in (PACKAGE / "templates").glob("*.html")}
    assert {"index.html", "patient.html"} <= names
