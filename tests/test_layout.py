"""The package layout's import rules, enforced: each folder has one job and imports run one way.

Every module of ``attnspec`` and ``attnref`` is read as source (imports inside
functions included, since an optional dependency is often imported late) and
each import of a project module is checked against :data:`MAY_IMPORT`. The
docs page "How the code is organised" shows this table as it is here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"attnspec": ROOT / "spec" / "attnspec", "attnref": ROOT / "reference" / "attnref"}

# layers
MAY_IMPORT: dict[str, frozenset[str]] = {
    # the specification: stubs, clauses, the vectors' reader; needs only NumPy
    "attnspec": frozenset(),
    # the NumPy reference steps, attnref.masking and the exact VJPs (attnref.vjp)
    "attnref": frozenset({"attnspec"}),
    # the PyTorch twin of the reference
    "attnref.torch": frozenset({"attnspec", "attnref"}),
    # tools for tests: Hypothesis strategies and gradient checks
    "attnref.testing": frozenset({"attnspec", "attnref"}),
    # the exact mpmath truth, the golden-vector generator, the precision report
    "attnref.vectors": frozenset({"attnspec", "attnref"}),
    # the tutorial's toy model, its gradient flow and the demo commands
    "attnref.demo": frozenset({"attnspec", "attnref", "attnref.torch", "attnref.testing"}),
    # the conformance oracle
    "attnref.oracle": frozenset({"attnspec", "attnref", "attnref.torch"}),
    # the console script: dispatches to the oracle and the demo commands
    "attnref.cli": frozenset({"attnref.demo", "attnref.oracle"}),
}
# end of layers


def _layer(module: str) -> str | None:
    """The layer of a dotted module name, or ``None`` for a module outside the project."""
    parts = module.split(".")
    if parts[0] == "attnspec":
        return "attnspec"
    if parts[0] != "attnref":
        return None
    if len(parts) > 1 and f"attnref.{parts[1]}" in MAY_IMPORT:
        return f"attnref.{parts[1]}"
    return "attnref"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            name = ".".join(p for p in parts if p != "__init__")
            found.append((name, path))
    return found


def _imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # "from attnref import demo" imports the subpackage attnref.demo
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = _modules()


def test_every_subpackage_has_a_layer() -> None:
    """A new folder under attnref must be given its place in MAY_IMPORT (and in the docs)."""
    folders = {p.name for p in SOURCES["attnref"].iterdir() if (p / "__init__.py").exists()}
    unplaced = {f"attnref.{f}" for f in folders} - set(MAY_IMPORT)
    assert not unplaced, f"add {sorted(unplaced)} to MAY_IMPORT with what each may import"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_run_one_way(module: str, path: Path) -> None:
    """Each module imports project code only from the layers its own layer may import."""
    own = _layer(module)
    assert own is not None
    allowed = MAY_IMPORT[own] | {own}
    wrong = sorted(
        name
        for name in _imports(path)
        if (layer := _layer(name)) is not None and layer not in allowed
    )
    assert not wrong, f"{module} ({own}) may import only {sorted(allowed)}; it imports {wrong}"


def test_the_rules_have_no_cycle() -> None:
    """The layers form a one-way graph: no layer can reach itself through MAY_IMPORT."""

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(MAY_IMPORT[start])
        while todo:
            layer = todo.pop()
            if layer not in seen:
                seen.add(layer)
                todo.extend(MAY_IMPORT[layer])
        return seen

    assert [layer for layer in MAY_IMPORT if layer in reach(layer)] == []


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The rule test is not vacuous: an oracle import in a reference module is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from attnref.oracle import run\n", encoding="utf-8")
    layers = {_layer(name) for name in _imports(bad)}
    assert "attnref.oracle" in layers
    assert "attnref.oracle" not in MAY_IMPORT["attnref"]
