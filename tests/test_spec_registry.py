"""The spec package: its stubs, its clause registry and its independence from the reference."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

import attnspec
from attnspec import clauses

SPEC_ROOT = Path(attnspec.__file__).parent


def test_functions_are_exported_stubs() -> None:
    """Every name in FUNCTIONS is public and is a stub made by ``specifies``."""
    for name in attnspec.FUNCTIONS:
        assert name in attnspec.__all__
        stub = getattr(attnspec, name)
        assert hasattr(stub, "__wrapped__"), name
        assert clauses.for_function(name), f"{name} declares no clause"


def test_every_stub_function_is_listed() -> None:
    """No stub is missing from FUNCTIONS (the list drives the signature tests)."""
    stubs = {c.function for c in clauses.all_clauses() if c.function is not None}
    assert stubs == set(attnspec.FUNCTIONS)


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
def test_calling_a_stub_refuses(name: str) -> None:
    """A stub is a statement, not an implementation: calling it raises."""
    stub = getattr(attnspec, name)
    with pytest.raises(attnspec.SpecificationStubError, match=f"attnref.{name}"):
        stub()


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
def test_stub_docstring_is_normative(name: str) -> None:
    """Each docstring has the math, a paper citation, shapes, errors and its clause IDs."""
    doc = inspect.getdoc(getattr(attnspec, name)) or ""
    assert ".. math::" in doc
    assert re.search(r"(Luong|Bahdanau|Vaswani) et al\. \(\d{4}\)", doc)
    for section in ("Parameters", "Returns", "Raises"):
        assert f"\n{section}\n" in doc, section
    for clause in clauses.for_function(name):
        assert f"``{clause.id}``" in doc, clause.id


def test_clause_ids_are_unique_and_well_formed() -> None:
    """IDs are ``<area>.<statement>`` in kebab case and declared once."""
    ids = clauses.ids()
    assert len(ids) == len(set(ids))
    for clause_id in ids:
        assert re.fullmatch(r"[a-z][a-z0-9-]*(\.[a-z0-9-]+)+", clause_id), clause_id
        assert clauses.get(clause_id).statement.strip()


def test_declaring_a_clause_twice_is_refused() -> None:
    """The registry keeps IDs stable: a second declaration of an ID is an error."""
    with pytest.raises(ValueError, match="declared twice"):
        clauses.declare(clauses.Clause("input.not-mutated", "again"))


def test_every_clause_has_a_level_and_recommended_ones_a_reason() -> None:
    """Each clause is required or recommended; a recommended one says why, a required one not."""
    for clause in clauses.all_clauses():
        assert clause.level in get_args(clauses.Level), clause.id
        if clause.level == "recommended":
            assert clause.reason.strip(), clause.id
        else:
            assert not clause.reason, clause.id


def test_levels_partition_the_registry_and_most_clauses_are_required() -> None:
    """at_level selects by level, in declaration order; recommended clauses are at most 1 in 10."""
    every = tuple(clauses.all_clauses())
    for level in get_args(clauses.Level):
        assert clauses.at_level(level) == tuple(c for c in every if c.level == level)
    recommended = clauses.at_level("recommended")
    assert len(clauses.at_level("required")) + len(recommended) == len(every)
    assert "input.unread-nonfinite" in {c.id for c in recommended}
    assert len(recommended) <= len(every) // 10
    with pytest.raises(ValueError, match="level must be one of required, recommended"):
        clauses.at_level("optional")  # type: ignore[arg-type]


def test_recommended_clause_without_reason_is_refused() -> None:
    """A SHOULD must say why it is not a MUST; the refused clause is not registered."""
    with pytest.raises(ValueError, match="is recommended and needs a reason"):
        clauses.declare(clauses.Clause("input.unexplained", "text", level="recommended"))
    with pytest.raises(ValueError, match="is recommended and needs a reason"):
        clauses.declare(
            clauses.Clause("input.unexplained", "text", level="recommended", reason="  ")
        )
    assert "input.unexplained" not in clauses.ids()


def test_required_clause_with_a_reason_or_an_unknown_level_is_refused() -> None:
    """A reason belongs to recommended clauses only, and a level is one of the two."""
    with pytest.raises(ValueError, match="is required and has a reason"):
        clauses.declare(clauses.Clause("input.explained", "text", reason="why"))
    with pytest.raises(ValueError, match="level must be one of"):
        clauses.declare(clauses.Clause("input.levelless", "text", level="may"))  # type: ignore[arg-type]
    assert not {"input.explained", "input.levelless"} & set(clauses.ids())


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
def test_stub_docstrings_mark_recommended_clauses(name: str) -> None:
    """A recommended clause's line reads ``(recommended)`` and gives its reason; others do not."""
    doc = inspect.getdoc(getattr(attnspec, name)) or ""
    for clause in clauses.for_function(name):
        line = next(x for x in doc.splitlines() if x.startswith(f"- ``{clause.id}`` — "))
        if clause.level == "recommended":
            assert line.startswith(f"- ``{clause.id}`` — (recommended) "), line
            assert line.endswith(" ".join(clause.reason.split())), line
        else:
            assert "(recommended)" not in line, line


def test_malformed_clause_id_is_refused() -> None:
    """IDs without an area, or not in kebab case, are refused."""
    with pytest.raises(ValueError, match="kebab case"):
        clauses.declare(clauses.Clause("NoArea", "text"))


def test_unknown_clause_lookup_names_the_areas() -> None:
    """Looking up an unknown ID says which areas exist."""
    with pytest.raises(KeyError, match=r"known areas: .*distribution"):
        clauses.get("distribution.does-not-exist")


def test_spec_source_never_imports_the_reference() -> None:
    """No module of ``attnspec`` imports ``attnref`` (the spec stands alone)."""
    for path in SPEC_ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "attnref" for n in names), f"{path}: {names}"


def test_importing_the_spec_loads_no_reference_module() -> None:
    """At run time too, ``import attnspec`` pulls in neither attnref nor torch."""
    code = (
        "import sys, attnspec; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'attnref', 'torch'}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_clause_has_a_scope_and_reference_ones_a_reason() -> None:
    """Each clause binds every implementation or the reference alone; the latter says why."""
    for clause in clauses.all_clauses():
        assert clause.scope in get_args(clauses.Scope), clause.id
        if clause.scope == "reference":
            assert clause.scope_reason.strip(), clause.id
        else:
            assert not clause.scope_reason, clause.id
    every = tuple(clauses.all_clauses())
    for scope in get_args(clauses.Scope):
        assert clauses.in_scope(scope) == tuple(c for c in every if c.scope == scope)
    assert "input.finite" in {c.id for c in clauses.in_scope("reference")}
    with pytest.raises(ValueError, match="scope must be one of implementations, reference"):
        clauses.in_scope("kernels")  # type: ignore[arg-type]


def test_reference_clause_without_a_scope_reason_is_refused() -> None:
    """A statement about the reference alone must say why it binds no other implementation."""
    with pytest.raises(ValueError, match="about the reference alone and needs a scope_reason"):
        clauses.declare(clauses.Clause("input.unscoped", "text", "raises", scope="reference"))
    with pytest.raises(ValueError, match="binds every implementation and has a scope_reason"):
        clauses.declare(clauses.Clause("input.unscoped", "text", scope_reason="why"))
    with pytest.raises(ValueError, match="scope must be one of"):
        clauses.declare(clauses.Clause("input.unscoped", "text", scope="kernels"))  # type: ignore[arg-type]
    assert "input.unscoped" not in clauses.ids()


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
def test_stub_docstrings_mark_clauses_about_the_reference_alone(name: str) -> None:
    """A reference-only clause's line reads ``(reference only)`` and gives why; others do not."""
    doc = inspect.getdoc(getattr(attnspec, name)) or ""
    for clause in clauses.for_function(name):
        line = next(x for x in doc.splitlines() if x.startswith(f"- ``{clause.id}`` — "))
        if clause.scope == "reference":
            assert line.startswith(f"- ``{clause.id}`` — (reference only) "), line
            assert " ".join(clause.scope_reason.split()) in line, line
        else:
            assert "(reference only)" not in line, line
