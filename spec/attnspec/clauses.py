"""The clause registry: every normative statement of the spec, with a stable ID.

A clause ID is ``<area>.<statement>`` in lower-case kebab case, for example
``distribution.sums-to-one``. IDs are stable: tests, oracle checks, golden
vectors and expected-failure files cite them, so an ID is never reused for a
different statement. A clause is declared exactly once, either on the stub of
the function it governs (:func:`specifies`) or, for rules that hold for every
function, in :mod:`attnspec.general`.

Requirement levels
    Each clause has a :data:`Level`, in the sense of RFC 2119: a *required*
    clause is a MUST, a *recommended* clause a SHOULD. An implementation
    conforms when it meets every required clause; a recommended clause it
    does not meet is reported as a *finding*, with the clause's reason, and
    does not make it fail. A clause is required unless it says otherwise, and
    a recommended clause always carries its reason: one sentence on why it is
    a SHOULD and not a MUST. Recommended clauses are hardening rules whose
    violation gives no wrong result on ordinary inputs; anything that does is
    required.

Scope
    Each clause has a :data:`Scope`: most bind *every implementation* (the
    reference, its twin and any third-party kernel, which the oracle checks),
    while a few are statements about *the reference alone*, chiefly the
    :mod:`attnspec.errors` types its Python API raises for bad arguments: a
    third-party kernel raises its own framework's errors, and the oracle
    hands it only valid arguments. A clause of the reference's scope always
    carries its ``scope_reason``; the reference's own tests check it, and it
    is the only kind of clause the oracle may leave without a check.

>>> from attnspec import clauses
>>> clauses.get("distribution.sums-to-one").function
'attention_distribution'
>>> "input.not-mutated" in clauses.ids()
True
>>> clauses.get("distribution.sums-to-one").level
'required'
>>> [c.id for c in clauses.at_level("recommended")]
['input.unread-nonfinite', 'value.zero-weight-unread']
>>> clauses.get("input.finite").scope, clauses.get("input.not-mutated").scope
('reference', 'implementations')
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal, ParamSpec, TypeVar, get_args

from attnspec.errors import SpecificationStubError

__all__ = [
    "REFERENCE_ERRORS",
    "Clause",
    "ClauseKind",
    "Level",
    "Scope",
    "all_clauses",
    "at_level",
    "declare",
    "for_function",
    "get",
    "ids",
    "in_scope",
    "specifies",
]

ClauseKind = Literal["rule", "special-case", "raises"]
"""The kind of statement a clause makes (a formula or law, a special case, or an error to raise)."""

Level = Literal["required", "recommended"]
"""How binding a clause is (RFC 2119): ``required`` is a MUST, ``recommended`` a SHOULD."""

Scope = Literal["implementations", "reference"]
"""Whom a clause binds: every implementation (the default), or the reference alone (the
error types of its Python API, an extension only it takes)."""

REFERENCE_ERRORS = (
    "It names the :mod:`attnspec.errors` type that the reference's Python API raises for an "
    "invalid argument: a third-party kernel raises its own framework's errors, and the oracle "
    "hands it valid arguments only."
)
"""The ``scope_reason`` of the clauses that state the reference's errors for bad arguments."""

_ID_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+")

_REGISTRY: dict[str, Clause] = {}

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Clause:
    """One normative statement.

    Attributes
    ----------
    id
        Stable identifier ``<area>.<statement>``.
    statement
        The normative sentence, in reStructuredText (math in ``:math:``).
    kind
        ``"rule"`` (a formula or law), ``"special-case"`` or ``"raises"``.
    function
        Name of the spec function the clause governs, or ``None`` for a rule
        that spans several functions (those of :mod:`attnspec.general` govern
        every function).
    level
        ``"required"`` (MUST: conformance needs it) or ``"recommended"``
        (SHOULD: a failure is a finding, not a non-conformance).
    reason
        Why a recommended clause is a SHOULD and not a MUST, in one sentence;
        empty for a required clause.
    scope
        ``"implementations"`` (every implementation, checked by the oracle)
        or ``"reference"`` (a statement about the reference alone, checked by
        its own tests).
    scope_reason
        Why a clause binds the reference alone, in one sentence; empty for a
        clause that binds every implementation.
    """

    id: str
    statement: str
    kind: ClauseKind = "rule"
    function: str | None = None
    level: Level = "required"
    reason: str = ""
    scope: Scope = "implementations"
    scope_reason: str = ""

    @property
    def area(self) -> str:
        """The part of the ID before the first dot (``score``, ``distribution``...)."""
        return self.id.split(".", 1)[0]

    def text(self) -> str:
        """The statement on one line, marked and followed by the reasons of its level and scope.

        A recommended clause starts ``(recommended)`` and ends with its reason; a
        clause about the reference alone starts ``(reference only)`` and says why
        after the statement.

        >>> from attnspec import clauses
        >>> clauses.get("input.not-mutated").text()
        'No function modifies any of its arguments.'
        >>> clauses.get("input.unread-nonfinite").text().startswith("(recommended) NaN")
        True
        >>> clauses.get("input.finite").text().startswith("(reference only) A NaN")
        True
        """
        marks = []
        notes = []
        if self.scope == "reference":
            marks.append("(reference only)")
            notes.append(f"*About the reference alone:* {' '.join(self.scope_reason.split())}")
        if self.level == "recommended":
            marks.insert(0, "(recommended)")
            notes.append(f"*Recommended, not required:* {' '.join(self.reason.split())}")
        return " ".join([*marks, " ".join(self.statement.split()), *notes])


def _check_qualifier(
    clause_id: str,
    name: str,
    value: str,
    options: tuple[str, ...],
    reason: str,
    /,
    *,
    qualified: str,
    needed: str,
    refused: str,
) -> None:
    """A level or scope: one of its ``options``, with a reason exactly when it is ``qualified``
    (a recommended clause, a clause about the reference alone)."""
    if value not in options:
        raise ValueError(
            f"clause {clause_id!r}: {name} must be one of {', '.join(options)}; got {value!r}"
        )
    if (value == qualified) != bool(reason.strip()):
        raise ValueError(f"clause {clause_id!r} {needed if value == qualified else refused}")


def declare(*clauses: Clause) -> tuple[Clause, ...]:
    """Add clauses to the registry.

    An ID already there or malformed, an unknown level or scope, a recommended
    clause without a reason or a required one with a reason, a clause about the
    reference alone without a ``scope_reason`` or one binding every
    implementation with one is a programming error (:class:`ValueError`).
    """
    for item in clauses:
        if not _ID_PATTERN.fullmatch(item.id):
            raise ValueError(
                f"clause id must be '<area>.<statement>' in kebab case; got {item.id!r}"
            )
        _check_qualifier(
            item.id,
            "level",
            item.level,
            get_args(Level),
            item.reason,
            qualified="recommended",
            needed="is recommended and needs a reason: say why it is a SHOULD and not a MUST",
            refused=(
                "is required and has a reason; a reason says why a clause is only recommended"
            ),
        )
        _check_qualifier(
            item.id,
            "scope",
            item.scope,
            get_args(Scope),
            item.scope_reason,
            qualified="reference",
            needed=(
                "is about the reference alone and needs a scope_reason: say why it binds no "
                "other implementation"
            ),
            refused=(
                "binds every implementation and has a scope_reason; a scope_reason says why a "
                "clause binds the reference alone"
            ),
        )
        if item.id in _REGISTRY:
            raise ValueError(f"clause id {item.id!r} is declared twice")
        _REGISTRY[item.id] = item
    return clauses


def get(clause_id: str, /) -> Clause:
    """Return the clause with this ID.

    Raises
    ------
    KeyError
        If no clause has that ID; the message lists the known areas.
    """
    try:
        return _REGISTRY[clause_id]
    except KeyError:
        areas = sorted({c.area for c in _REGISTRY.values()})
        raise KeyError(f"no clause {clause_id!r}; known areas: {', '.join(areas)}") from None


def ids() -> tuple[str, ...]:
    """All clause IDs, in declaration order."""
    return tuple(_REGISTRY)


def all_clauses() -> Iterator[Clause]:
    """Iterate over every clause, in declaration order."""
    return iter(tuple(_REGISTRY.values()))


def for_function(name: str, /) -> tuple[Clause, ...]:
    """The clauses declared on the stub ``name`` (not the general ones)."""
    return tuple(c for c in _REGISTRY.values() if c.function == name)


def at_level(level: Level, /) -> tuple[Clause, ...]:
    """The clauses of one level (``"required"`` or ``"recommended"``), in declaration order."""
    if level not in get_args(Level):
        raise ValueError(f"level must be one of {', '.join(get_args(Level))}; got {level!r}")
    return tuple(c for c in _REGISTRY.values() if c.level == level)


def in_scope(scope: Scope, /) -> tuple[Clause, ...]:
    """The clauses of one scope (``"implementations"`` or ``"reference"``), in declaration order."""
    if scope not in get_args(Scope):
        raise ValueError(f"scope must be one of {', '.join(get_args(Scope))}; got {scope!r}")
    return tuple(c for c in _REGISTRY.values() if c.scope == scope)


_SECTION_TITLES: dict[ClauseKind, str] = {
    "rule": "Clauses",
    "special-case": "Special cases",
    "raises": "Errors",
}


def _render(clauses: tuple[Clause, ...]) -> str:
    """Docstring sections listing the clauses with their IDs, one section per kind.

    Each line is ``- ``<id>`` — <text>`` (:meth:`Clause.text`: a recommended
    clause, or one about the reference alone, is marked and gives its reason);
    ``docs/_ext/clausedoc.py`` parses that prefix.
    """
    parts: list[str] = []
    for kind, title in _SECTION_TITLES.items():
        items = [c for c in clauses if c.kind == kind]
        if not items:
            continue
        lines = [title, "-" * len(title)]
        lines += [f"- ``{c.id}`` — {c.text()}" for c in items]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def specifies(*clauses: Clause) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Mark a body-less stub as the specification of a function and register its clauses.

    The returned callable keeps the stub's signature (``inspect.signature``
    follows ``__wrapped__``), carries the docstring with the clauses appended
    as sections, and raises :class:`~attnspec.errors.SpecificationStubError`
    when called, so that nobody mistakes a stub for an implementation.
    """

    def decorate(stub: Callable[_P, _R]) -> Callable[_P, _R]:
        name = stub.__name__
        declare(*(replace(c, function=name) for c in clauses))

        @functools.wraps(stub)
        def refuse(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            raise SpecificationStubError(
                f"attnspec.{name} is a specification stub; call attnref.{name} "
                f"(NumPy) or attnref.torch.{name} (PyTorch) to compute it"
            )

        text = inspect.cleandoc(stub.__doc__ or "")
        refuse.__doc__ = f"{text}\n\n{_render(for_function(name))}\n"
        return refuse

    return decorate
