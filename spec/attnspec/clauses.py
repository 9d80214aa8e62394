"""The clause registry: every normative statement of the spec, with a stable ID.

A clause ID is ``<area>.<statement>`` in lower-case kebab case, for example
``distribution.sums-to-one``. IDs are stable: tests, oracle checks, golden
vectors and expected-failure files cite them, so an ID is never reused for a
different statement. A clause is declared exactly once, either on the stub of
the function it governs (:func:`specifies`) or, for rules that hold for every
function, in :mod:`attnspec.general`.

>>> from attnspec import clauses
>>> clauses.get("distribution.sums-to-one").function
'attention_distribution'
>>> "input.not-mutated" in clauses.ids()
True
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, ParamSpec, TypeVar

from attnspec.errors import SpecificationStubError

__all__ = [
    "Clause",
    "ClauseKind",
    "all_clauses",
    "declare",
    "for_function",
    "get",
    "ids",
    "specifies",
]

ClauseKind = Literal["rule", "special-case", "raises"]
"""The kind of statement a clause makes (a formula or law, a special case, or an error to raise)."""

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
    """

    id: str
    statement: str
    kind: ClauseKind = "rule"
    function: str | None = None

    @property
    def area(self) -> str:
        """The part of the ID before the first dot (``score``, ``distribution``...)."""
        return self.id.split(".", 1)[0]


def declare(*clauses: Clause) -> tuple[Clause, ...]:
    """Add clauses to the registry; an ID already there or malformed is a programming error."""
    for item in clauses:
        if not _ID_PATTERN.fullmatch(item.id):
            raise ValueError(
                f"clause id must be '<area>.<statement>' in kebab case; got {item.id!r}"
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


_SECTION_TITLES: dict[ClauseKind, str] = {
    "rule": "Clauses",
    "special-case": "Special cases",
    "raises": "Errors",
}


def _render(clauses: tuple[Clause, ...]) -> str:
    """Docstring sections listing the clauses with their IDs, one section per kind."""
    parts: list[str] = []
    for kind, title in _SECTION_TITLES.items():
        items = [c for c in clauses if c.kind == kind]
        if not items:
            continue
        lines = [title, "-" * len(title)]
        for c in items:
            body = " ".join(c.statement.split())
            lines.append(f"- ``{c.id}`` — {body}")
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
        declare(*(Clause(c.id, c.statement, c.kind, name) for c in clauses))

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
