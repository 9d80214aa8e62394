"""The oracle's verdicts: one record per clause, gathered in a report.

A clause's status says what its check found; its level
(:data:`attnspec.clauses.Level`) says what that means for the verdict. An
implementation *conforms* when no required clause failed. A recommended
clause that failed keeps the status ``failed`` but is a *finding*: the report
lists it, with the clause's reason for being only recommended, and the
verdict stays CONFORMS.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from attnspec import clauses
from attnspec.clauses import Level

__all__ = ["ClauseResult", "Report", "Status"]

Status = Literal["passed", "failed", "skipped", "xfail"]
"""``xfail``: failed, and listed in the expected failures with a reason. A
``failed`` recommended clause is a finding (:attr:`ClauseResult.finding`)."""


@dataclass(frozen=True)
class ClauseResult:
    """The verdict on one clause.

    Attributes
    ----------
    clause
        The clause ID.
    check
        The check's readable ID (``sdpa/distribution.masked-zero``).
    status
        ``passed``, ``failed``, ``skipped`` or ``xfail``; a ``failed``
        recommended clause is a finding (:attr:`finding`), not a
        non-conformance.
    examples
        How many cases were tried (shrinking included).
    worst_ratio
        The largest error / allowance seen (at most 1 for a pass).
    message
        Why it failed, was skipped or is expected to fail; the worst
        comparison for a pass.
    counterexample
        Path of the saved ``.npz`` of the shrunk failing case, if saved.
    reproduce
        A command that re-runs exactly that failure.
    """

    clause: str
    check: str
    status: Status
    examples: int = 0
    worst_ratio: float = 0.0
    message: str = ""
    counterexample: str | None = None
    reproduce: str | None = None

    @property
    def level(self) -> Level:
        """The clause's level in the registry: ``required`` or ``recommended``."""
        return clauses.get(self.clause).level

    @property
    def finding(self) -> bool:
        """Whether a recommended clause failed: reported, but no bar to conformance."""
        return self.status == "failed" and self.level == "recommended"


@dataclass(frozen=True)
class Report:
    """Everything the oracle found about one implementation."""

    target: str
    function: str
    framework: str
    dtype: str
    device: str
    conventions: str
    features: tuple[str, ...]
    seed: int
    max_examples: int
    results: tuple[ClauseResult, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether the implementation conforms: no required clause failed.

        Skips, expected failures (``xfail``) and findings (failed recommended
        clauses) are allowed.
        """
        return not self.failures

    @property
    def failures(self) -> tuple[ClauseResult, ...]:
        """The failed required clauses: each one makes the implementation not conform."""
        return tuple(r for r in self.results if r.status == "failed" and not r.finding)

    @property
    def findings(self) -> tuple[ClauseResult, ...]:
        """The failed recommended clauses: reported, but the verdict does not depend on them."""
        return tuple(r for r in self.results if r.finding)

    @property
    def verdict(self) -> str:
        """``CONFORMS`` or ``DOES NOT CONFORM``, followed by the findings if any.

        For example ``CONFORMS (1 recommended finding: input.unread-nonfinite)``.
        """
        verdict = "CONFORMS" if self.passed else "DOES NOT CONFORM"
        found = self.findings
        if not found:
            return verdict
        noun = "finding" if len(found) == 1 else "findings"
        names = ", ".join(r.clause for r in found)
        return f"{verdict} ({len(found)} recommended {noun}: {names})"

    def counts(self) -> dict[str, int]:
        """How many clauses ended in each status, every clause counted once.

        ``failed`` counts the failed required clauses and ``findings`` the
        failed recommended ones.
        """
        counts = {"passed": 0, "failed": 0, "skipped": 0, "xfail": 0, "findings": 0}
        for r in self.results:
            counts["findings" if r.finding else r.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (the schema of ``--json``).

        Each result carries its ``level``; ``findings`` lists the failed
        recommended clauses with the oracle's message and the clause's reason
        for being only recommended.
        """
        data = asdict(self)
        data["passed"] = self.passed
        data["counts"] = self.counts()
        for r, result in zip(data["results"], self.results, strict=True):
            r["level"] = result.level
            if r["worst_ratio"] == float("inf"):
                r["worst_ratio"] = "inf"
        data["findings"] = [
            {"clause": r.clause, "message": r.message, "reason": clauses.get(r.clause).reason}
            for r in self.findings
        ]
        return data

    def to_json(self, *, indent: int = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def table(self) -> str:
        """A per-clause table for people."""
        width = max((len(r.clause) for r in self.results), default=6)
        level_width = len("recommended")
        lines = [
            f"attnspec check {self.target}: {self.function}, {self.framework} {self.dtype} "
            f"on {self.device}",
            f"conventions: {self.conventions}",
            f"seed {self.seed}, up to {self.max_examples} examples per clause, "
            f"{self.seconds:.1f} s",
            "",
            f"{'clause':<{width}}  {'level':<{level_width}}  {'status':<7}  {'examples':>8}  "
            f"{'worst':>7}  detail",
        ]
        for r in self.results:
            worst = "-" if r.status == "skipped" else f"{r.worst_ratio:.2g}"
            lines.append(
                f"{r.clause:<{width}}  {r.level:<{level_width}}  {r.status:<7}  "
                f"{r.examples:>8}  {worst:>7}  {r.message}"
            )
            if r.reproduce:
                lines.append(f"{'':<{width}}  reproduce: {r.reproduce}")
        if self.findings:
            lines.append("")
            lines.append("findings (recommended clauses not met; they do not decide the verdict):")
            lines += [f"  {r.clause}: {clauses.get(r.clause).reason}" for r in self.findings]
        c = self.counts()
        lines.append("")
        lines.append(
            f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, "
            f"{c['xfail']} xfail: {self.verdict}"
        )
        return "\n".join(lines)
