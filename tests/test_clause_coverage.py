"""Every clause of the spec is checked by a test and by the oracle, and every test cites real
clauses.

The oracle rule
---------------
Every clause that binds every implementation has an oracle check
(:func:`attnref.oracle.checks.clauses_checked`), so that any third-party
implementation can be held to it; the clauses without one are exactly those the
spec marks as statements about the reference alone (``scope="reference"``, each
with its ``scope_reason``), and no marked clause has a check.

The citation rule
-----------------
The suite is every ``*.py`` file under ``tests/``; a *test docstring* is the
docstring of a function whose name starts with ``test`` (at module level or in a
class). A *token* has the shape of a clause ID, ``<area>.<statement>`` in
lower-case kebab case (``distribution.sums-to-one``), is not part of a longer
word (no letter, digit, ``_`` or ``-`` touches it), and its area (the part
before the first dot) is an area of the registry (``score``, ``distribution``,
...): ``np.float16`` or ``attnref.torch`` are prose, not citations. A docstring
*cites* a token when the token

1. stands in the docstring's *leading list*: the docstring starts with one or
   more tokens separated by ``,``, ``/``, ``;``, ``&`` or the word ``and``
   (``"local.window, local.window-softmax: ..."``), or
2. is the whole content of an inline literal, ````distribution.stable```` or
   ```distribution.stable```, anywhere in the docstring.

A clause is *covered* when some test docstring cites it. The suite fails if a
registered clause is cited nowhere, or if a docstring cites a token of a known
area that is not a registered clause (a typo, or a clause that was renamed).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from attnref.oracle.checks import CHECKS, clauses_checked
from attnspec import clauses

TESTS = Path(__file__).parent
TOKEN = re.compile(
    r"(?<![\w.-])[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+(?![\w-])"
    r"(?!\.[a-z0-9])"
)
SEPARATOR = re.compile(r"\s*(?:,|/|;|&|\band\b)\s*")
LITERAL = re.compile(r"``([^`]+)``|(?<!`)`([^`]+)`(?!`)")


def areas() -> frozenset[str]:
    """The areas of the registered clause IDs."""
    return frozenset(clause_id.split(".", 1)[0] for clause_id in clauses.ids())


def cited(docstring: str, known_areas: frozenset[str], /) -> list[str]:
    """The clause IDs a docstring cites, in order, by the rule of this module."""
    found: list[str] = []
    text = docstring.lstrip()
    position = 0
    while True:
        token = TOKEN.match(text, position)
        if token is None:
            break
        found.append(token.group())
        position = token.end()
        separator = SEPARATOR.match(text, position)
        if separator is None or TOKEN.match(text, separator.end()) is None:
            break
        position = separator.end()
    for literal in LITERAL.finditer(docstring):
        content = (literal.group(1) or literal.group(2)).strip()
        if TOKEN.fullmatch(content):
            found.append(content)
    return [t for t in found if t.split(".", 1)[0] in known_areas]


def test_docstrings() -> Iterator[tuple[str, str]]:
    """``(where, docstring)`` for every test function of the suite."""
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test"
            ):
                doc = ast.get_docstring(node)
                if doc:
                    yield f"{path.relative_to(TESTS)}::{node.name}", doc


test_docstrings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def citations() -> dict[str, list[str]]:
    """Clause ID -> the tests citing it (IDs of unknown clauses included)."""
    known = areas()
    result: dict[str, list[str]] = {}
    for where, doc in test_docstrings():
        for clause_id in cited(doc, known):
            result.setdefault(clause_id, []).append(where)
    return result


def test_every_clause_is_cited_by_a_test() -> None:
    """Each registered clause ID is cited by at least one test docstring."""
    found = citations()
    missing = [clause_id for clause_id in clauses.ids() if clause_id not in found]
    assert not missing, f"clauses no test cites: {', '.join(missing)}"


def test_every_citation_names_a_registered_clause() -> None:
    """No test docstring cites an ID of a known area that the registry does not have."""
    registered = set(clauses.ids())
    unknown = {c: where for c, where in citations().items() if c not in registered}
    assert not unknown, f"citations of unknown clauses: {unknown}"


KNOWN = frozenset({"distribution", "local", "score", "sdpa", "value"})

RULE_CASES: dict[str, tuple[str, list[str]]] = {
    "leading id with a colon": (
        "distribution.sums-to-one: rows sum to one.",
        ["distribution.sums-to-one"],
    ),
    "leading list with commas and 'and'": (
        "local.window, local.window-softmax and value.linear: ...",
        ["local.window", "local.window-softmax", "value.linear"],
    ),
    "leading list with a slash": (
        "sdpa.causal-top-left / sdpa.causal-bottom-right for Tq = 2.",
        ["sdpa.causal-top-left", "sdpa.causal-bottom-right"],
    ),
    "id after prose is not cited": ("Checks distribution.stable here.", []),
    "id in a double-backtick literal": (
        "Checks ``distribution.stable`` here.",
        ["distribution.stable"],
    ),
    "id in a single-backtick literal": ("See `value.linear`.", ["value.linear"]),
    "literal with more than an id": ("Uses ``value.shape[-2]``.", []),
    "unknown area is prose": ("attnref.torch.<name> has the signature.", []),
    "module path in a literal is prose": ("Uses ``np.float16``.", []),
    "typo of a known area's clause is kept": ("score.dott: typo.", ["score.dott"]),
    "token glued to a word is not an id": ("score.dot_product: ...", []),
    "leading whitespace is skipped": ("\n   value.linear: ...", ["value.linear"]),
    "list stops at the first non-id": (
        "value.linear, then score.dot: ...",
        ["value.linear"],
    ),
}


@pytest.mark.parametrize("case", list(RULE_CASES), ids=list(RULE_CASES))
def test_the_citation_rule(case: str) -> None:
    """The extractor follows the rule of the module docstring, case by case."""
    docstring, expected = RULE_CASES[case]
    assert cited(docstring, KNOWN) == expected


# Clauses of the kind "rule" the spec may mark as about the reference alone; every other
# such mark is on an error ("raises") clause. A new entry needs a reviewer's eye: a rule
# that says what an implementation computes must get an oracle check instead.
REFERENCE_RULES = {
    "input.float-dtype": "the oracle's precondition, and the reference's error for others",
    "input.complex-extension": "an optional extension only the reference takes",
}


def test_every_clause_without_an_oracle_check_is_about_the_reference_alone() -> None:
    """The clauses no oracle check enforces are those marked, with a reason, as reference-only."""
    checked = clauses_checked()
    unchecked = [c for c in clauses.all_clauses() if c.id not in checked]
    unmarked = [c.id for c in unchecked if c.scope != "reference"]
    assert not unmarked, f"clauses with no oracle check that bind every implementation: {unmarked}"
    assert all(c.scope_reason.strip() for c in unchecked)
    listed = ", ".join(c.id for c in unchecked)
    assert {c.id for c in unchecked} == {c.id for c in clauses.in_scope("reference")}, listed


def test_no_clause_about_the_reference_alone_has_an_oracle_check() -> None:
    """A mark of the reference's scope is not a way to hide a check: no marked clause has one."""
    checked = clauses_checked()
    both = [c.id for c in clauses.in_scope("reference") if c.id in checked]
    assert not both, f"marked as about the reference alone, yet checked by the oracle: {both}"


def test_only_errors_and_reviewed_rules_are_about_the_reference_alone() -> None:
    """Every reference-only clause is an error to raise, or one of the rules reviewed here."""
    odd = [
        c.id
        for c in clauses.in_scope("reference")
        if c.kind != "raises" and c.id not in REFERENCE_RULES
    ]
    assert not odd, f"rules marked as about the reference alone without review: {odd}"
    assert set(REFERENCE_RULES) <= {c.id for c in clauses.in_scope("reference")}


def test_every_oracle_check_cites_a_clause_that_binds_implementations() -> None:
    """Each check of the catalogue enforces a registered clause of every implementation."""
    for clause_id in clauses_checked():
        assert clauses.get(clause_id).scope == "implementations", clause_id
    assert {c.function for c in CHECKS} >= {"scaled_dot_product_attention", "attention"}


def test_the_oracle_knows_every_spec_function() -> None:
    """Each function of the spec is one the oracle can check (its Function literal is
    written out for the type checker, so this keeps it in step with attnspec.FUNCTIONS)."""
    import attnspec
    from attnref.oracle.protocol import STEPS

    composites = {"scaled_dot_product_attention", "attention"}
    assert set(STEPS) | composites == set(attnspec.FUNCTIONS)
    assert not set(STEPS) & composites
