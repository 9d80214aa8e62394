"""The oracle's verdicts: one record per clause, gathered in a report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["ClauseResult", "Report", "Status"]

Status = Literal["passed", "failed", "skipped", "xfail"]
"""``xfail``: failed, and listed in the expected failures with a reason."""


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
        ``passed``, ``failed``, ``skipped`` or ``xfail``.
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
        """Whether every clause that is not an expected failure passed or was skipped."""
        return all(r.status in ("passed", "skipped", "xfail") for r in self.results)

    @property
    def failures(self) -> tuple[ClauseResult, ...]:
        """The failed clauses."""
        return tuple(r for r in self.results if r.status == "failed")

    def counts(self) -> dict[str, int]:
        """How many clauses ended in each status."""
        counts = {"passed": 0, "failed": 0, "skipped": 0, "xfail": 0}
        for r in self.results:
            counts[r.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (the schema of ``--json``)."""
        data = asdict(self)
        data["passed"] = self.passed
        data["counts"] = self.counts()
        for r in data["results"]:
            if r["worst_ratio"] == float("inf"):
                r["worst_ratio"] = "inf"
        return data

    def to_json(self, *, indent: int = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def table(self) -> str:
        """A per-clause table for people."""
        width = max((len(r.clause) for r in self.results), default=6)
        lines = [
            f"attnspec check {self.target}: {self.function}, {self.framework} {self.dtype} "
            f"on {self.device}",
            f"conventions: {self.conventions}",
            f"seed {self.seed}, up to {self.max_examples} examples per clause, "
            f"{self.seconds:.1f} s",
            "",
            f"{'clause':<{width}}  {'status':<7}  {'examples':>8}  {'worst':>7}  detail",
        ]
        for r in self.results:
            worst = "-" if r.status == "skipped" else f"{r.worst_ratio:.2g}"
            lines.append(
                f"{r.clause:<{width}}  {r.status:<7}  {r.examples:>8}  {worst:>7}  {r.message}"
            )
            if r.reproduce:
                lines.append(f"{'':<{width}}  reproduce: {r.reproduce}")
        c = self.counts()
        lines.append("")
        lines.append(
            f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, "
            f"{c['xfail']} xfail: {'CONFORMS' if self.passed else 'DOES NOT CONFORM'}"
        )
        return "\n".join(lines)
