"""Sphinx extension: every clause of :mod:`attnspec.clauses` visible, anchored and linkable.

Markup it adds
    ``:clause:`distribution.sums-to-one``` links to a clause by its ID (an unknown
    ID is a broken reference, so ``sphinx-build -n`` fails on it).
    ``.. clause-list::`` with ``:area:`` and ``:function:`` (a function name, or
    ``none`` for rules that govern several functions) lists the selected clauses,
    each with its anchor; it is the home of the clauses no stub renders.
    ``.. clause-index::`` is the index of every clause, grouped by area, each ID
    linking to its home, with its level (required or recommended).
    ``.. vector-cases:: <function>`` tables the golden vectors of one spec
    function (:mod:`attnspec.vectors`) with the clauses each case exercises.

Docstrings
    The stubs' generated *Clauses*, *Special cases* and *Errors* sections list
    ``- ``<id>`` — statement`` lines (:func:`attnspec.clauses.specifies`; a
    recommended clause's statement starts with ``(recommended)`` and ends with
    its reason, one about the reference alone starts with ``(reference only)``
    and says why, :meth:`attnspec.clauses.Clause.text`); on the stub's own page
    each such ID becomes the clause's anchor. Anywhere else in an autodoc
    docstring, a literal that is exactly a clause ID becomes a link.

Levels and scopes
    Wherever a clause is listed, a recommended (SHOULD) clause is marked as such
    and followed by its reason; a clause with no mark is required (MUST). A
    clause about the reference alone (:data:`attnspec.clauses.Scope`) is marked
    *reference only* and followed by why; an unmarked one binds every
    implementation.

Checks
    When the build has read every page, each clause of the registry must have
    exactly one anchor; a clause without one is a warning (an error under ``-W``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from docutils.nodes import Node, system_message
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole

from attnspec import clauses

logger = logging.getLogger(__name__)

OBJECT_TYPE = "clause"
"""The object type of the standard domain under which clauses are recorded."""

_KIND_TITLES = {"rule": "rule", "special-case": "special case", "raises": "error"}

# A line of a generated clause section: "- ``<id>`` — <statement>" (any indent).
_SECTION_LINE = re.compile(r"^(\s*)- ``([a-z0-9.-]+)`` — ")
# A literal anywhere else in a docstring.
_LITERAL = re.compile(r"``([a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+)``")


def anchor(clause_id: str) -> str:
    """The HTML id of a clause's anchor (``clause-score.dot``)."""
    return f"clause-{clause_id}"


def statement(clause: clauses.Clause) -> str:
    """The clause's statement on one line, without its level."""
    return " ".join(clause.statement.split())


def reason(clause: clauses.Clause) -> str:
    """The notes after a statement: why it binds the reference alone, why it is recommended.

    `` *About the reference alone:* <scope_reason>`` for a clause about the reference
    alone, then `` *Recommended, not required:* <reason>`` for a recommended clause;
    nothing for a required clause that binds every implementation.
    """
    notes = ""
    if clause.scope == "reference":
        notes += f" *About the reference alone:* {' '.join(clause.scope_reason.split())}"
    if clause.level == "recommended":
        notes += f" *Recommended, not required:* {' '.join(clause.reason.split())}"
    return notes


def _plain(text: str) -> str:
    """Plain text (a golden case's description) escaped for reStructuredText, on one line."""
    for char in ("\\", "*", "`", "|", "_"):
        text = text.replace(char, f"\\{char}")
    return " ".join(text.split())


def _known() -> frozenset[str]:
    return frozenset(clauses.ids())


def _linked(text: str) -> str:
    """``text`` with each literal that is exactly a clause ID turned into a link to it."""
    known = _known()
    return _LITERAL.sub(
        lambda m: f":clause:`{m.group(1)}`" if m.group(1) in known else m.group(0), text
    )


class ClauseAnchorRole(SphinxRole):
    """``:clause-anchor:`id```: the home of a clause, its ID shown with a permalink."""

    def run(self) -> tuple[list[Node], list[system_message]]:
        clause_id = self.text
        if clause_id not in _known():
            message = self.inliner.reporter.error(
                f"clause-anchor: {clause_id!r} is not a clause ID of attnspec", line=self.lineno
            )
            return [nodes.literal(self.rawtext, clause_id)], [message]
        target = anchor(clause_id)
        std = self.env.get_domain("std")
        std.note_object(OBJECT_TYPE, clause_id, target, location=self.get_location())  # type: ignore[attr-defined]
        index = addnodes.index(entries=[("single", f"{clause_id} (clause)", target, "", None)])
        permalink = nodes.reference(
            "", "¶", refuri=f"#{target}", classes=["headerlink"], reftitle="Link to this clause"
        )
        wrapper = nodes.inline("", "", ids=[target], classes=["clause-anchor"])
        wrapper += nodes.literal(clause_id, clause_id)
        wrapper += permalink
        return [index, wrapper], []


def _selected(area: str | None, function: str | None) -> Iterator[clauses.Clause]:
    for clause in clauses.all_clauses():
        if area is not None and clause.area != area:
            continue
        if function == "none" and clause.function is not None:
            continue
        if function not in (None, "none") and clause.function != function:
            continue
        yield clause


def _parsed_in_attnspec(
    directive: SphinxDirective, text: str, *, allow_section_headings: bool = False
) -> list[Node]:
    """Parse generated text as if inside module ``attnspec``.

    Clause statements refer to the stubs by their short names (``:func:`score_dot```),
    as the stubs' own docstrings do, so they resolve wherever the list appears.
    """
    context = directive.env.ref_context
    saved = context.get("py:module")
    context["py:module"] = "attnspec"
    try:
        return directive.parse_text_to_nodes(text, allow_section_headings=allow_section_headings)
    finally:
        if saved is None:
            context.pop("py:module", None)
        else:
            context["py:module"] = saved


class ClauseListDirective(SphinxDirective):
    """``.. clause-list::``: the selected clauses, each anchored here, as a bullet list."""

    has_content = False
    option_spec = {  # noqa: RUF012 (docutils reads this class attribute)
        "area": directives.unchanged_required,
        "function": directives.unchanged_required,
    }

    def run(self) -> list[Node]:
        area = self.options.get("area")
        function = self.options.get("function")
        selected = list(_selected(area, function))
        if not selected:
            logger.warning(
                "clause-list selects no clause (area=%r, function=%r)",
                area,
                function,
                location=self.get_location(),
            )
            return []
        lines = [
            f"- :clause-anchor:`{c.id}` ({_KIND_TITLES[c.kind]}"
            f"{', recommended' if c.level == 'recommended' else ''}"
            f"{', reference only' if c.scope == 'reference' else ''}) — "
            f"{_linked(statement(c) + reason(c))}"
            for c in selected
        ]
        return _parsed_in_attnspec(self, "\n".join(lines))


class ClauseIndexDirective(SphinxDirective):
    """``.. clause-index::``: every clause, one table per area, each ID linked to its home."""

    has_content = False

    def run(self) -> list[Node]:
        every = list(clauses.all_clauses())
        counts = {kind: sum(c.kind == kind for c in every) for kind in _KIND_TITLES}
        recommended = clauses.at_level("recommended")
        areas: dict[str, list[clauses.Clause]] = {}
        for clause in every:
            areas.setdefault(clause.area, []).append(clause)
        lines = [
            f"The registry holds {len(every)} clauses in {len(areas)} areas: "
            f"{counts['rule']} rules, {counts['special-case']} special cases and "
            f"{counts['raises']} errors to raise. {len(every) - len(recommended)} are "
            f"required (MUST) and {len(recommended)} recommended (SHOULD): "
            f"{', '.join(f':clause:`{c.id}`' for c in recommended)}. "
            f"{len(clauses.in_scope('reference'))} are statements about the reference alone "
            "(marked *reference only*), chiefly the errors of its Python API; the oracle checks "
            "every other clause on any implementation.",
            "",
        ]
        for area, members in areas.items():
            title = f"``{area}``"
            lines += [title, "~" * len(title), ""]
            lines += [
                ".. list-table::",
                "   :header-rows: 1",
                "   :widths: 24 10 11 16 39",
                "   :class: clause-index",
                "",
                "   * - Clause",
                "     - Kind",
                "     - Level",
                "     - Governs",
                "     - Statement",
            ]
            for c in members:
                governs = (
                    f":func:`~attnspec.{c.function}`"
                    if c.function
                    else "every function"
                    if c.area == "input"
                    else f"every {c.area} function"
                )
                if c.scope == "reference":
                    governs += ", in the reference only"
                lines += [
                    f"   * - :clause:`{c.id}`",
                    f"     - {_KIND_TITLES[c.kind]}",
                    f"     - {'**recommended**' if c.level == 'recommended' else 'required'}",
                    f"     - {governs}",
                    f"     - {_linked(statement(c) + reason(c))}",
                ]
            lines.append("")
        return _parsed_in_attnspec(self, "\n".join(lines), allow_section_headings=True)


class VectorCasesDirective(SphinxDirective):
    """``.. vector-cases:: <function>``: the golden cases of a function and their clauses."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[Node]:
        from attnspec import vectors

        function = self.arguments[0]
        try:
            cases = vectors.load_cases(function)
        except KeyError as error:
            logger.warning("vector-cases: %s", error, location=self.get_location())
            return []
        lines = [
            f"``attnspec/vectors/{function}.json`` holds {len(cases)} cases, each checked "
            "against the NumPy reference by the test suite.",
            "",
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 30 40 30",
            "   :class: vector-cases",
            "",
            "   * - Case",
            "     - Clauses",
            "     - What it pins down",
        ]
        for case in cases:
            cited = ", ".join(f":clause:`{c}`" for c in case.clauses)
            raises = f"raises :class:`~attnspec.errors.{case.raises}`" if case.raises else ""
            what = _plain(case.description) if case.description else ""
            if raises:
                what = f"{what}: {raises}" if what else raises
            what = what or "—"
            lines += [
                f"   * - ``{case.id.split('/', 1)[1]}``",
                f"     - {cited}",
                f"     - {what}",
            ]
        return self.parse_text_to_nodes("\n".join(lines))


def link_clause_ids(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Anchor the IDs of a stub's own clause sections; link clause IDs elsewhere."""
    own = {c.id for c in clauses.all_clauses() if name == f"attnspec.{c.function}"}
    for i, line in enumerate(lines):
        match = _SECTION_LINE.match(line)
        if match and match.group(2) in own:
            indent, clause_id = match.group(1), match.group(2)
            rest = _linked(line[match.end() :])
            lines[i] = f"{indent}- :clause-anchor:`{clause_id}` — {rest}"
            continue
        lines[i] = _linked(line)


def check_every_clause_anchored(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about each clause of the registry that has no anchor anywhere in the docs."""
    objects = env.get_domain("std").objects  # type: ignore[attr-defined]
    for clause_id in clauses.ids():
        if (OBJECT_TYPE, clause_id) not in objects:
            logger.warning(
                "clause %s has no anchor: render its stub with autodoc or add a clause-list",
                clause_id,
            )


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the role, the directives, the docstring hook and the consistency check."""
    app.add_object_type(
        OBJECT_TYPE,
        OBJECT_TYPE,
        indextemplate="",
        ref_nodeclass=nodes.literal,
        objname="attnspec clause",
    )
    app.add_role("clause-anchor", ClauseAnchorRole())
    app.add_directive("clause-list", ClauseListDirective)
    app.add_directive("clause-index", ClauseIndexDirective)
    app.add_directive("vector-cases", VectorCasesDirective)
    # After napoleon (priority 500) has turned the sections into rubrics.
    app.connect("autodoc-process-docstring", link_clause_ids, priority=600)
    app.connect("env-check-consistency", check_every_clause_anchored)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
