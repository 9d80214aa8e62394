"""The oracle's verdicts: one record per clause, gathered in a report.

A clause's status says what its check found; its level
(:data:`attnspec.clauses.Level`) says what that means for the verdict. An
implementation *conforms* when no required clause failed. A recommended
clause that failed keeps the status ``failed`` but is a *finding*: the report
lists it, with the clause's reason for being only recommended, and the
verdict stays CONFORMS.

A report is read in seconds: :meth:`Report.table` starts with the verdict,
then gives one line per *cause* (:meth:`Report.causes`). Failures that share
a signature are one cause: the same exception raised in several clauses,
errors at the rounding level of a narrower dtype in every value clause that
fails (a kernel computing float64 in float32), NaN in several clauses. A
failure that a declarable convention would explain names the ``--declare``
that expresses it. :meth:`Report.to_dict` is the same report for machines,
described by :data:`REPORT_SCHEMA`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from attnspec import clauses
from attnspec.clauses import Level

if TYPE_CHECKING:
    from attnref.oracle.protocol import Implementation

__all__ = [
    "REPORT_SCHEMA",
    "SCHEMA_ID",
    "Cause",
    "ClauseResult",
    "FullSizeRun",
    "Mode",
    "Report",
    "Status",
    "Symptom",
    "SymptomKind",
    "document",
    "summary_table",
]

Status = Literal["passed", "failed", "skipped", "xfail"]
"""``xfail``: failed, and listed in the expected failures with a reason. A
``failed`` recommended clause is a finding (:attr:`ClauseResult.finding`)."""

Mode = Literal["drawn", "vectors", "full-size"]
"""How the cases were chosen: drawn by Hypothesis, the golden vectors
(``--vectors``), or one full-size case per clause judged on sampled rows
(``--full-size``)."""

SymptomKind = Literal["error", "nan", "infinite", "raised", "other"]
"""What a failure was: an ``error`` above its allowance (a number), ``nan`` or
``infinite`` values where the spec gives a number, an exception ``raised`` by
the implementation, or ``other`` (a wrong shape or dtype, a mutated argument...)."""

# The oracle's wording of a failure (attnref.oracle.checks): read back, so that a report
# says how far off a failure was. tests/test_oracle_report.py pins the wording.
_ERROR = re.compile(r"^(?P<what>[^:]+): error (?P<error>\S+) (?:>|<=) allowed (?P<allowed>\S+)")
_NAN = re.compile(r"^(?P<what>[^:]+): NaN at ")
_INFINITE = re.compile(r"^(?P<what>[^:]+): infinite at ")
_RAISED = re.compile(r"^(?:vjp )?raised (?P<what>\w+)")
_SHAPE = re.compile(r"shape \((?P<got>[\d, ]*)\), the spec gives \((?P<want>[\d, ]*)\)")


def _finite(x: float | None) -> float | None:
    """``x`` for JSON: ``None`` where it is not a finite number."""
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Symptom:
    """What a failure message says went wrong, read from the oracle's wording.

    Attributes
    ----------
    kind
        See :data:`SymptomKind`.
    what
        The quantity compared (``context``, ``d/dquery``...) or, for
        ``raised``, the exception's class name; empty when not said.
    error, allowed
        For ``error``: the error found and the error allowed.
    """

    kind: SymptomKind
    what: str = ""
    error: float | None = None
    allowed: float | None = None

    @classmethod
    def of(cls, message: str, /) -> Symptom:
        """The symptom a failure message describes.

        >>> Symptom.of("context: error 3e-08 > allowed 1.5e-15").ratio
        20000000.0
        >>> Symptom.of("context: NaN at 2 of 8 positions where the spec gives a number").kind
        'nan'
        """
        if m := _ERROR.match(message):
            try:
                error, allowed = float(m["error"]), float(m["allowed"])
            except ValueError:
                return cls("other")
            return cls("error", m["what"], error, allowed)
        if m := _NAN.match(message):
            return cls("nan", m["what"])
        if m := _INFINITE.match(message):
            return cls("infinite", m["what"])
        if m := _RAISED.match(message):
            return cls("raised", m["what"])
        return cls("other")

    @property
    def ratio(self) -> float | None:
        """``error / allowed``: infinite when nothing was allowed, ``None`` when not a number."""
        if self.error is None or self.allowed is None:
            return None
        if self.allowed == 0:
            return 0.0 if self.error == 0 else math.inf
        return self.error / self.allowed


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
        The largest error / allowance seen (at most 1 for a pass; infinite
        for a failure, whose :attr:`ratio` reads the number from the message).
    message
        Why it failed, was skipped or is expected to fail; the worst
        comparison for a pass.
    counterexample
        Path of the saved ``.npz`` of the shrunk failing case, if saved.
    reproduce
        A command that re-runs exactly that failure.
    hint
        What was found to explain the failure: ``attnspec check`` replays
        the counterexample with each convention that could explain it
        declared, and names the one that makes it pass. ``None``: not
        examined (the report then says what *may* explain it); ``""``:
        examined, and no declaration explains it.
    """

    clause: str
    check: str
    status: Status
    examples: int = 0
    worst_ratio: float = 0.0
    message: str = ""
    counterexample: str | None = None
    reproduce: str | None = None
    hint: str | None = None

    @property
    def level(self) -> Level:
        """The clause's level in the registry: ``required`` or ``recommended``."""
        return clauses.get(self.clause).level

    @property
    def finding(self) -> bool:
        """Whether a recommended clause failed: reported, but no bar to conformance."""
        return self.status == "failed" and self.level == "recommended"

    @property
    def symptom(self) -> Symptom | None:
        """What went wrong, for a failure or an expected failure; ``None`` otherwise."""
        if self.status not in ("failed", "xfail"):
            return None
        return Symptom.of(self.message)

    @property
    def ratio(self) -> float | None:
        """The worst error / allowance as a number, or ``None`` where there is none.

        For a pass, :attr:`worst_ratio`; for a failure, the ratio of the
        failing comparison (infinite when nothing was allowed); ``None`` for
        a skip and for failures that are not a number (NaN, an exception).
        """
        if self.status == "skipped":
            return None
        symptom = self.symptom
        if symptom is None:
            return self.worst_ratio
        return symptom.ratio

    def worst_text(self) -> str:
        """The ``worst`` column of the table: the ratio, ``NaN``, ``inf``, ``raised`` or ``-``."""
        ratio = self.ratio
        if ratio is not None:
            return "inf" if math.isinf(ratio) else f"{ratio:.2g}"
        symptom = self.symptom
        if symptom is None:
            return "-"
        return {"nan": "NaN", "infinite": "inf", "raised": "raised"}.get(symptom.kind, "-")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: numbers as numbers, ``None`` where there is none."""
        data = asdict(self)
        symptom = self.symptom
        data["worst_ratio"] = _finite(self.ratio)
        data["level"] = self.level
        data["symptom"] = None if symptom is None else symptom.kind
        data["error"] = _finite(None if symptom is None else symptom.error)
        data["allowed"] = _finite(None if symptom is None else symptom.allowed)
        return data


@dataclass(frozen=True)
class Cause:
    """One reason why one or more required clauses failed.

    Attributes
    ----------
    summary
        One line: what went wrong, and where.
    clauses
        The failed clauses it explains.
    hint
        What may explain it, or the ``--declare`` that expresses a
        legitimate convention; ``None`` when there is nothing to add.
    reproduce
        The reproduce command of its first clause, if any.
    """

    summary: str
    clauses: tuple[str, ...]
    hint: str | None = None
    reproduce: str | None = None


@dataclass(frozen=True)
class FullSizeRun:
    """What one full-size case cost (``attnspec check --full-size``).

    Attributes
    ----------
    clause
        The clause judged on it.
    shape
        ``[B, H, T, d]`` of the query, keys and values.
    rows_judged
        Query rows compared with the extended-precision truth.
    implementation_seconds, judging_seconds
        Time of the implementation's call, and of the truth and comparison.
    peak_memory_bytes, memory_of
        The peak memory once the call is done, and whose: the device's peak
        allocation during the call (``cuda:0``), or the peak resident memory
        of the whole ``process`` so far on the CPU; ``None`` when not measured.
    """

    clause: str
    shape: tuple[int, ...]
    rows_judged: int
    implementation_seconds: float
    judging_seconds: float
    peak_memory_bytes: int | None = None
    memory_of: str = "process"


def _clause_list(names: Sequence[str], limit: int = 4) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def _swapped_layout(message: str) -> bool:
    """Whether a shape mismatch is the heads and positions axes swapped."""
    m = _SHAPE.search(message)
    if m is None:
        return False
    got = [int(x) for x in m["got"].split(",") if x.strip()]
    want = [int(x) for x in m["want"].split(",") if x.strip()]
    return len(want) == 4 and got != want and got == [want[0], want[2], want[1], want[3]]


def _hint(result: ClauseResult, layout: str) -> str | None:
    """What would explain this one failure: the hint found by replaying it, else a guess."""
    if result.hint is not None:
        return result.hint or None
    symptom = result.symptom
    kind = symptom.kind if symptom else "other"
    clause = result.clause
    if clause == "distribution.fully-masked-row":
        if kind == "nan":
            return (
                "a fully masked row gives NaN; if that is its documented behaviour, "
                "declare it: --declare fully_masked_row=nan"
            )
        if kind == "raised":
            return (
                "it raises on a fully masked row; if that is its documented behaviour, "
                "declare it: --declare fully_masked_row=raises"
            )
        if kind == "error":
            return (
                "a fully masked row gives a number other than zero; if it is the mean of "
                "the values (JAX, Keras), declare it: --declare fully_masked_row=uniform"
            )
    if clause in ("sdpa.causal-top-left", "sdpa.causal-bottom-right") and kind == "error":
        other = "bottom_right" if clause.endswith("top-left") else "top_left"
        return (
            f"if its causal mask is aligned {other.replace('_', '-')} when Tq != Tk, "
            f"declare it: --declare causal_alignment={other}"
        )
    if _swapped_layout(result.message):
        other = "BTHD" if layout != "BTHD" else "BHTD"
        return f"its result has the heads and positions axes swapped: declare --layout {other}"
    if "result dtype" in result.message:
        return "it returns another dtype than its inputs': does it compute in another dtype?"
    return None


_CONTRASTS: tuple[tuple[str, str, str], ...] = (
    (
        "score.scale-applied",
        "sdpa.default-scale",
        "right with the default scale, wrong with an explicit one: is its scale argument used?",
    ),
    (
        "distribution.additive-mask",
        "distribution.mask-polarity",
        "right with boolean masks, wrong with additive ones: does it add a float mask to "
        "the scores?",
    ),
    (
        "sdpa.causal-with-mask",
        "sdpa.causal-top-left",
        "right with the causal flag or a mask alone, wrong with both: does it combine them?",
    ),
    (
        "input.gradient",
        "sdpa.formula",
        "its forward pass is right and its gradients are not: look at its backward pass",
    ),
)
"""``(failed, passed, question)``: a clause failing beside a related one passing points at
one feature."""


_NARROWER = {
    "float64": (1e-4, "does it compute in float32 (a float32 softmax or accumulation)?"),
    "float32": (3e-2, "does it compute in float16 or bfloat16?"),
}
"""For a dtype, the largest error that still looks like a narrower dtype's rounding on
inputs of order 1, and the question to ask; errors of a real bug are of order 1."""


def _precision_group(report: Report, failed: list[ClauseResult]) -> tuple[list[ClauseResult], str]:
    """The failures whose errors sit at a narrower dtype's rounding level, and the question.

    Only for float64 and float32 kernels: errors of 1e-8 in a float64 kernel
    on inputs of order 1 are float32 rounding, while a real bug's are of order
    1. In float16 and bfloat16 a shrunk counterexample of a real bug can fail
    by a small factor too, so the size alone says nothing there.
    """
    if report.dtype not in _NARROWER:
        return [], ""
    errors = [(r, s) for r in failed if (s := r.symptom) is not None and s.kind == "error"]
    largest, question = _NARROWER[report.dtype]
    group = [r for r, s in errors if s.error is not None and 0 < s.error <= largest]
    return group, question


def _normalised(message: str) -> str:
    """A message with its numbers blanked, so that one exception on other shapes matches."""
    return re.sub(r"\d+", "#", message)


def _numbers(results: Sequence[ClauseResult]) -> str:
    """``errors ≈ 1e-08 (up to 3.9e-08), 2.7e+06 to 5.8e+06 times the allowance``."""
    symptoms = [r.symptom for r in results if r.symptom and r.symptom.error is not None]
    errors = sorted(s.error for s in symptoms if s.error is not None)
    largest, typical = errors[-1], errors[len(errors) // 2]
    ratios = [x for s in symptoms if (x := s.ratio) is not None and math.isfinite(x)]
    size = f"errors ≈ {typical:.0e} (up to {largest:.2g})"
    if not ratios:
        return f"{size} where none is allowed"
    low, high = min(ratios), max(ratios)
    times = f"{low:.2g}" if f"{low:.2g}" == f"{high:.2g}" else f"{low:.2g} to {high:.2g}"
    return f"{size}, {times} times the allowance"


@dataclass(frozen=True)
class Report:
    """Everything the oracle found about one implementation.

    Attributes
    ----------
    mode
        How the cases were chosen (:data:`Mode`).
    full_size
        With ``mode="full-size"``, what each full-size case cost.
    """

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
    mode: Mode = "drawn"
    full_size: tuple[FullSizeRun, ...] = ()

    @classmethod
    def of(
        cls,
        impl: Implementation,
        /,
        *,
        target: str | None,
        seed: int,
        max_examples: int,
        results: Sequence[ClauseResult],
        seconds: float = 0.0,
        mode: Mode = "drawn",
        full_size: Sequence[FullSizeRun] = (),
    ) -> Report:
        """The report of ``impl``: what it is, as it describes itself, and what was found."""
        return cls(
            target=target or impl.name,
            function=impl.function,
            framework=impl.framework,
            dtype=impl.dtype,
            device=impl.device,
            conventions=impl.conventions.describe(),
            features=tuple(sorted(impl.features)),
            seed=seed,
            max_examples=max_examples,
            results=tuple(results),
            seconds=seconds,
            mode=mode,
            full_size=tuple(full_size),
        )

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

    def _layout(self) -> str:
        return "BTHD" if "layout=BTHD" in self.conventions else "BHTD"

    def causes(self) -> tuple[Cause, ...]:
        """The failed required clauses, grouped by what they have in common.

        In order: the same exception (numbers aside) raised in several
        clauses; the same other failure in several clauses (one golden
        vector); the failures that a replay found an explanation for
        (:attr:`ClauseResult.hint`), grouped by it; among those not examined,
        errors at the rounding level of a narrower dtype in several value
        clauses (a float64 kernel computing in float32); NaN in several
        clauses; wrong values in several clauses, with the
        feature they point at when a related clause passed; then every
        other failure on its own line.
        """
        left = list(self.failures)
        found: list[Cause] = []

        def take(group: list[ClauseResult], summary: str, hint: str | None) -> None:
            for r in group:
                left.remove(r)
            reproduce = next((r.reproduce for r in group if r.reproduce), None)
            found.append(Cause(summary, tuple(r.clause for r in group), hint, reproduce))

        raised: dict[str, list[ClauseResult]] = {}
        for r in left:
            if r.symptom and r.symptom.kind == "raised":
                raised.setdefault(_normalised(r.message), []).append(r)
        for group in raised.values():
            if len(group) >= 2:
                every = "every clause" if len(group) == len(self.failures) else "several clauses"
                take(
                    group,
                    f"{group[0].message} (the same exception in {len(group)} clauses: "
                    f"{_clause_list([r.clause for r in group])})",
                    f"the call itself fails in {every}: look at the signature, the dtype and "
                    "device it is given, or declare the shapes it supports (--shape-limit)",
                )
        same: dict[str, list[ClauseResult]] = {}
        for r in left:
            same.setdefault(r.message, []).append(r)
        for message, group in same.items():
            if len(group) >= 2 and not (group[0].symptom and group[0].symptom.kind == "error"):
                take(
                    group,
                    f"{message} (the same failure in {len(group)} clauses: "
                    f"{_clause_list([r.clause for r in group])})",
                    "one golden vector exercises all of them, so it cannot tell which broke"
                    if self.mode == "vectors"
                    else None,
                )
        explained: dict[str, list[ClauseResult]] = {}
        for r in left:
            if r.hint:
                explained.setdefault(r.hint, []).append(r)
        for hint, group in explained.items():
            if len(group) == 1:
                take(group, f"{group[0].clause}: {group[0].message}", hint)
                continue
            numbers = all(r.symptom and r.symptom.kind == "error" for r in group)
            detail = f"; {_numbers(group)}" if numbers else ""
            take(
                group,
                f"{len(group)} clauses ({_clause_list([r.clause for r in group])}){detail}",
                hint,
            )
        # The guess from the errors' size alone, for failures no replay examined.
        unexamined = [r for r in left if r.hint is None]
        group, question = _precision_group(self, unexamined)
        dtype_failure = [r for r in unexamined if "result dtype" in r.message]
        valued = [r for r in left if r.symptom and r.symptom.kind == "error"]
        if len(group) >= 2:
            every = "all" if len(group) == len(valued) else f"{len(group)} of the"
            take(
                group + dtype_failure,
                f"{_numbers(group)}, in {every} {len(valued)} failing value clauses "
                f"({_clause_list([r.clause for r in group + dtype_failure])})",
                f"errors at a narrower dtype's rounding level, not a wrong formula: {question}",
            )
        nans = [r for r in left if r.symptom and r.symptom.kind == "nan"]
        if len(nans) >= 2:
            hints = [h for r in nans if (h := _hint(r, self._layout()))]
            take(
                nans,
                f"NaN where the spec gives a number, in {len(nans)} clauses "
                f"({_clause_list([r.clause for r in nans])})",
                hints[0] if hints else None,
            )
        wrong = [r for r in left if r.symptom and r.symptom.kind == "error"]
        if len(wrong) >= 2:
            status = {r.clause: r.status for r in self.results}
            pointer = next(
                (
                    question
                    for failed, passed, question in _CONTRASTS
                    if failed in {r.clause for r in wrong} and status.get(passed) == "passed"
                ),
                None,
            )
            if pointer is None and any(c.hint for c in found):
                pointer = (
                    "every clause draws the features it offers in combination, so the "
                    "convention found above may explain these too: declare it and check again"
                )
            take(
                wrong,
                f"wrong values in {len(wrong)} clauses "
                f"({_clause_list([r.clause for r in wrong])}); {_numbers(wrong)}",
                pointer or "the first clause's counterexample is the smallest place to start",
            )
        for r in list(left):
            take([r], f"{r.clause}: {r.message}", _hint(r, self._layout()))
        return tuple(found)

    def headline(self) -> str:
        """The first line: the target and the verdict, with how many clauses decided it."""
        c = self.counts()
        required = sum(1 for r in self.results if r.level == "required" and r.status != "skipped")
        if self.passed:
            detail = f"{c['passed']} passed"
            if c["xfail"]:
                detail += f", {c['xfail']} expected failures"
        else:
            detail = f"{c['failed']} of {required} required clauses failed"
        if c["findings"]:
            noun = "finding" if c["findings"] == 1 else "findings"
            detail += f", {c['findings']} recommended {noun}"
        word = "CONFORMS" if self.passed else "DOES NOT CONFORM"
        return f"{self.target}: {word} ({detail})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (one report of the schema :data:`REPORT_SCHEMA`).

        Each result carries its ``level``, its ``worst_ratio`` as a number
        (``None`` where there is none: a skip, NaN, an exception, an
        allowance of exactly 0) and its ``symptom``; ``findings`` lists the
        failed recommended clauses with the oracle's message and the
        clause's reason for being only recommended; ``causes`` groups the
        failed required clauses as :meth:`causes` does.
        """
        data = asdict(self)
        data["results"] = [r.to_dict() for r in self.results]
        data["full_size"] = [asdict(run) | {"shape": list(run.shape)} for run in self.full_size]
        data["features"] = list(self.features)
        data["passed"] = self.passed
        data["verdict"] = self.verdict
        data["counts"] = self.counts()
        data["findings"] = [
            {"clause": r.clause, "message": r.message, "reason": clauses.get(r.clause).reason}
            for r in self.findings
        ]
        data["causes"] = [asdict(c) | {"clauses": list(c.clauses)} for c in self.causes()]
        return data

    def to_json(self, *, indent: int = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def _header(self) -> list[str]:
        if self.mode == "vectors":
            run = f"the golden vectors (fixed cases), {self.seconds:.1f} s"
        elif self.mode == "full-size":
            run = f"one full-size case per clause, seed {self.seed}, {self.seconds:.1f} s"
        else:
            run = (
                f"seed {self.seed}, up to {self.max_examples} examples per clause, "
                f"{self.seconds:.1f} s"
            )
        return [
            f"  {self.function}, {self.framework} {self.dtype} on {self.device}; {run}",
            f"  conventions: {self.conventions}",
        ]

    def table(self) -> str:
        """The report for people: the verdict, the causes, then one row per clause."""
        lines = [self.headline(), *self._header()]
        causes = self.causes()
        if causes:
            lines.append("")
            lines.append("causes:")
            for number, cause in enumerate(causes, 1):
                lines.append(f"  {number}. {cause.summary}")
                if cause.hint:
                    lines.append(f"     {cause.hint}")
                if cause.reproduce:
                    lines.append(f"     reproduce: {cause.reproduce}")
        width = max((len(r.clause) for r in self.results), default=6)
        level_width = len("recommended")
        lines += [
            "",
            f"{'clause':<{width}}  {'level':<{level_width}}  {'status':<7}  {'examples':>8}  "
            f"{'worst':>7}  detail",
        ]
        for r in self.results:
            lines.append(
                f"{r.clause:<{width}}  {r.level:<{level_width}}  {r.status:<7}  "
                f"{r.examples:>8}  {r.worst_text():>7}  {r.message}"
            )
            # A required failure's command is under its cause; the others' are here.
            if r.reproduce and (r.status != "failed" or r.finding):
                lines.append(f"{'':<{width}}  reproduce: {r.reproduce}")
        for run in self.full_size:
            memory = (
                "not measured"
                if run.peak_memory_bytes is None
                else f"{run.peak_memory_bytes / 2**20:.0f} MiB ({run.memory_of})"
            )
            lines.append(
                f"{'':<{width}}  {run.clause}: shape {list(run.shape)}, {run.rows_judged} rows "
                f"judged; implementation {run.implementation_seconds:.2f} s, judging "
                f"{run.judging_seconds:.2f} s, peak memory {memory}"
            )
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


def summary_table(reports: Sequence[Report], /) -> str:
    """One row per report and the overall verdict: the end of a run over several targets."""
    width = max([len("target"), *(len(r.target) for r in reports)])
    lines = [
        f"{'target':<{width}}  {'dtype':<8}  {'verdict':<16}  passed  failed  skipped  xfail  "
        "findings  seconds"
    ]
    for r in reports:
        c = r.counts()
        word = "CONFORMS" if r.passed else "DOES NOT CONFORM"
        lines.append(
            f"{r.target:<{width}}  {r.dtype:<8}  {word:<16}  {c['passed']:>6}  {c['failed']:>6}  "
            f"{c['skipped']:>7}  {c['xfail']:>5}  {c['findings']:>8}  {r.seconds:>7.1f}"
        )
    conforming = sum(r.passed for r in reports)
    lines.append("")
    lines.append(f"{conforming} of {len(reports)} targets conform")
    return "\n".join(lines)


def document(reports: Sequence[Report], /, *, exit_status: int) -> dict[str, Any]:
    """The whole JSON document of ``attnspec check --json`` (:data:`REPORT_SCHEMA`)."""
    return {
        "schema": SCHEMA_ID,
        "passed": all(r.passed for r in reports),
        "exit_status": exit_status,
        "reports": [r.to_dict() for r in reports],
    }


SCHEMA_ID = "https://attnspec.invalid/schemas/check-report/1"
"""The ``$id`` of :data:`REPORT_SCHEMA`, also written as the document's ``schema``."""

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRING_OR_NULL = {"type": ["string", "null"]}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "attnspec check report",
    "description": (
        "What `attnspec check --json` writes: one report per target checked. Numbers are "
        "JSON numbers; null stands where there is none (no ratio for a skip, NaN or an "
        "exception; no saved counterexample)."
    ),
    "type": "object",
    "required": ["schema", "passed", "exit_status", "reports"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "passed": {"type": "boolean", "description": "every report conforms"},
        "exit_status": {"enum": [0, 1], "description": "0 every target conforms, 1 otherwise"},
        "reports": {"type": "array", "items": {"$ref": "#/$defs/report"}},
    },
    "$defs": {
        "report": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "target",
                "function",
                "framework",
                "dtype",
                "device",
                "conventions",
                "features",
                "seed",
                "max_examples",
                "results",
                "seconds",
                "mode",
                "full_size",
                "passed",
                "verdict",
                "counts",
                "findings",
                "causes",
            ],
            "properties": {
                "target": {"type": "string"},
                "function": {"type": "string", "description": "the spec function checked"},
                "framework": {"type": "string"},
                "dtype": {"enum": ["float64", "float32", "float16", "bfloat16"]},
                "device": {"type": "string"},
                "conventions": {"type": "string", "description": "declared ones marked"},
                "features": {"type": "array", "items": {"type": "string"}},
                "seed": {"type": "integer"},
                "max_examples": {"type": "integer", "minimum": 0},
                "results": {"type": "array", "items": {"$ref": "#/$defs/result"}},
                "seconds": {"type": "number", "minimum": 0},
                "mode": {"enum": ["drawn", "vectors", "full-size"]},
                "full_size": {"type": "array", "items": {"$ref": "#/$defs/full_size"}},
                "passed": {"type": "boolean", "description": "no required clause failed"},
                "verdict": {"type": "string"},
                "counts": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["passed", "failed", "skipped", "xfail", "findings"],
                    "properties": {
                        k: {"type": "integer", "minimum": 0}
                        for k in ("passed", "failed", "skipped", "xfail", "findings")
                    },
                },
                "findings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["clause", "message", "reason"],
                        "properties": {
                            "clause": {"type": "string"},
                            "message": {"type": "string"},
                            "reason": {"type": "string"},
                        },
                    },
                },
                "causes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["summary", "clauses", "hint", "reproduce"],
                        "properties": {
                            "summary": {"type": "string"},
                            "clauses": {"type": "array", "items": {"type": "string"}},
                            "hint": _STRING_OR_NULL,
                            "reproduce": _STRING_OR_NULL,
                        },
                    },
                },
            },
        },
        "result": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "clause",
                "check",
                "status",
                "level",
                "examples",
                "worst_ratio",
                "message",
                "symptom",
                "error",
                "allowed",
                "counterexample",
                "reproduce",
                "hint",
            ],
            "properties": {
                "clause": {"type": "string"},
                "check": {"type": "string"},
                "status": {"enum": ["passed", "failed", "skipped", "xfail"]},
                "level": {"enum": ["required", "recommended"]},
                "examples": {"type": "integer", "minimum": 0},
                "worst_ratio": _NUMBER_OR_NULL | {"description": "error / allowed, finite"},
                "message": {"type": "string"},
                "symptom": {"enum": ["error", "nan", "infinite", "raised", "other", None]},
                "error": _NUMBER_OR_NULL,
                "allowed": _NUMBER_OR_NULL,
                "counterexample": _STRING_OR_NULL,
                "reproduce": _STRING_OR_NULL,
                "hint": _STRING_OR_NULL
                | {"description": "what explains it, found by replaying; '' none found"},
            },
        },
        "full_size": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "clause",
                "shape",
                "rows_judged",
                "implementation_seconds",
                "judging_seconds",
                "peak_memory_bytes",
                "memory_of",
            ],
            "properties": {
                "clause": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "rows_judged": {"type": "integer", "minimum": 1},
                "implementation_seconds": {"type": "number", "minimum": 0},
                "judging_seconds": {"type": "number", "minimum": 0},
                "peak_memory_bytes": {"type": ["integer", "null"]},
                "memory_of": {"type": "string", "description": "a device, or 'process'"},
            },
        },
    },
}
"""The JSON Schema (draft 2020-12) of ``attnspec check --json``; ``attnspec check
--json-schema`` prints it."""
