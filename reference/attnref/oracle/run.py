"""Running the checks against an implementation: :func:`check_implementation`."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis.errors import Unsatisfiable

from attnref.oracle.cases import cases
from attnref.oracle.checks import Check, Measure, MismatchError, checks_for
from attnref.oracle.examples import DEFAULT_EXAMPLES
from attnref.oracle.observe import observe
from attnref.oracle.protocol import Case, Implementation
from attnref.oracle.report import ClauseResult, Report
from attnspec import clauses
from attnspec.errors import ArgumentError

__all__ = ["DepartureCases", "check_clause", "check_implementation", "replay"]

Progress = Callable[[ClauseResult], None]

DepartureCases = Mapping[str, Callable[[Case], bool]]
"""``{clause: predicate}``: the cases that show an implementation's known departure from
``clause``. They are drawn only for the expected failures (reported there as ``xfail``),
so one documented departure does not fail every other clause whose cases combine the
same features; every other clause is judged on the rest of its domain."""


def _judge(check: Check, impl: Implementation, case: Case) -> Measure:
    """The worst measure of one case; :class:`MismatchError` when it exceeds its allowance.

    The implementation, the truth and the bounds run once (:func:`observe`);
    every judge of the check reads that one observation.
    """
    measures = check.judge(observe(impl, case, gradients=check.gradients))
    if not measures:
        return Measure("nothing to compare", 0.0, 0.0)
    worst = max(measures, key=lambda m: m.ratio)
    if worst.ratio > 1:
        raise MismatchError(worst.describe())
    return worst


def check_clause(
    check: Check,
    clause: str,
    impl: Implementation,
    /,
    *,
    max_examples: int,
    seed_value: int,
    expected_failure: str | None = None,
    save_dir: Path | None = None,
    target: str | None = None,
    departure_cases: DepartureCases | None = None,
) -> ClauseResult:
    """Run one check with Hypothesis and return its verdict.

    The last failing case Hypothesis tries is the shrunk one; it is kept,
    saved as ``.npz`` under ``save_dir`` and named in a reproduce command.
    """
    reason = check.inapplicable(impl)
    if reason is not None:
        return ClauseResult(clause, check.id, "skipped", message=reason)
    tried = 0
    worst: Measure | None = None
    failing: list[tuple[Case, str]] = []

    @settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    @seed(seed_value)
    @given(cases(impl, check.draw))
    def probe(case: Case) -> None:
        nonlocal tried, worst
        # Note: an expected failure is judged on its whole domain, its own departure's cases
        # included; a case that only another departure shows is left out, so that a known
        # failure of another clause cannot stand in as this one's counterexample.
        departures = departure_cases or {}
        own = departures.get(clause) if expected_failure is not None else None
        if own is None or not own(case):
            for departed, shows in departures.items():
                if expected_failure is None or departed != clause:
                    assume(not shows(case))
        supports = getattr(impl, "supports", None)  # declared shapes (targets.ShapeLimit)
        if supports is not None:
            assume(supports(case))
        tried += 1
        try:
            measure = _judge(check, impl, case)
        except MismatchError as mismatch:
            failing.append((case, str(mismatch)))
            raise
        if worst is None or measure.ratio > worst.ratio:
            worst = measure

    try:
        probe()
    except Unsatisfiable:
        message = "no drawn case is within the shapes it declares it supports"
        return ClauseResult(clause, check.id, "skipped", message=message)
    except Exception:
        # Hypothesis re-raises the shrunk MismatchError, or reports flakiness when
        # the same case passed on a re-run (a nondeterministic implementation,
        # such as dropout left on); both are failures of this clause. Any other
        # exception without a recorded failure is the oracle's own bug: loud.
        if not failing:
            raise
    if not failing:
        detail = worst.describe() if worst is not None else ""
        if expected_failure is not None:
            # Note: not finding a counterexample in a sample is no proof of
            # conformance, so an expected failure that did not show is reported
            # as passed with a note rather than failing the run.
            detail = (
                f"expected to fail ({expected_failure}), but no counterexample in {tried} "
                "examples; if it keeps passing with more examples, remove it from the list"
            )
        return ClauseResult(
            clause, check.id, "passed", tried, worst.ratio if worst else 0.0, detail
        )
    case, message = failing[-1]
    path = None
    command = None
    if save_dir is not None:
        # One folder per target, so a run over several targets keeps every case.
        folder = save_dir / re.sub(r"[^\w.-]", "_", target or impl.name)
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / f"{clause}.npz")
        case.save(path)
        command = f"attnspec check {target or impl.name} --clause {clause} --replay {path}"
    if expected_failure is not None:
        return ClauseResult(
            clause,
            check.id,
            "xfail",
            tried,
            float("inf"),
            f"{message} (expected: {expected_failure})",
            path,
            command,
        )
    return ClauseResult(clause, check.id, "failed", tried, float("inf"), message, path, command)


def check_implementation(
    impl: Implementation,
    /,
    *,
    max_examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    clauses_to_check: frozenset[str] | None = None,
    expected_failures: Mapping[str, str] | None = None,
    save_dir: str | Path | None = None,
    target: str | None = None,
    progress: Progress | None = None,
    departure_cases: DepartureCases | None = None,
) -> Report:
    """Check an implementation against every clause that applies to it.

    Parameters
    ----------
    impl
        The implementation (see :class:`~attnref.oracle.protocol.Implementation`).
    max_examples
        Hypothesis examples per clause.
    seed
        Seed of the example generation; the same seed draws the same cases.
    clauses_to_check
        Only these clause IDs (all when ``None``).
    expected_failures
        ``{clause: reason}``: failures of these clauses are reported as
        ``xfail``; one that shows no failure is reported as passed, with a
        note that the list may be stale.
    save_dir
        Where to save shrunk counterexamples (``None``: not saved).
    target
        How the command line names the implementation, for reproduce commands.
    progress
        Called with each clause's result as soon as it is known.
    departure_cases
        See :data:`DepartureCases`; each clause named must also be an
        expected failure.
    """
    expected = dict(expected_failures or {})
    known = set(clauses.ids())
    for clause in departure_cases or {}:
        if clause not in expected:
            raise ArgumentError(
                f"departure_cases names {clause!r}, which is not an expected failure"
            )
    for clause in list(expected) + sorted(clauses_to_check or ()):
        if clause not in known:
            raise ArgumentError(f"{clause!r} is not a clause ID of attnspec (see attnspec.clauses)")
    start = time.perf_counter()
    results = []
    for check, clause in checks_for(impl):
        if clauses_to_check is not None and clause not in clauses_to_check:
            continue
        result = check_clause(
            check,
            clause,
            impl,
            max_examples=max_examples,
            seed_value=seed,
            expected_failure=expected.get(clause),
            save_dir=Path(save_dir) if save_dir is not None else None,
            target=target,
            departure_cases=departure_cases,
        )
        results.append(result)
        if progress is not None:
            progress(result)
    return Report.of(
        impl,
        target=target,
        seed=seed,
        max_examples=max_examples,
        results=results,
        seconds=time.perf_counter() - start,
    )


def replay(impl: Implementation, clause: str, path: str | Path, /) -> ClauseResult:
    """Judge the saved case at ``path`` on ``clause`` once, without Hypothesis."""
    case = Case.load(str(path))
    if case.function != impl.function:
        raise ArgumentError(
            f"{path} holds a case of {case.function}, but {impl.name} implements {impl.function}"
        )
    for check, resolved in checks_for(impl):
        if resolved == clause:
            try:
                measure = _judge(check, impl, case)
            except MismatchError as mismatch:
                return ClauseResult(clause, check.id, "failed", 1, float("inf"), str(mismatch))
            return ClauseResult(clause, check.id, "passed", 1, measure.ratio, measure.describe())
    raise ArgumentError(f"{clause!r} is not checked for {impl.name} ({impl.function})")
