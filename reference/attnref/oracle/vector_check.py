"""Checking an implementation against the golden vectors (``attnspec check TARGET --vectors``).

The vectors (:mod:`attnspec.vectors`) hold exact answers, correctly rounded
from an arbitrary-precision evaluation, with their own tolerance rule (a few
ulps times each number's condition). This check runs the implementation on
every vector case of its function that it can take (its dtype, features,
declared conventions and shapes) and judges the outputs by that rule. Cases
of bad calls are left out (the oracle demands no exception types of third
parties), and so are gradients: a vector's VJP is for cotangents on both the
context and the weights, while implementations give the context's only.

The vectors state rules for float64 and float32 only: their inputs are not
representable in float16 or bfloat16, and rounding them would change the
exact answers. An implementation in another dtype cannot be judged by them,
which :func:`check_vectors` says with an error instead of a report of skips.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from attnref.oracle.conventions import RESTRICTIONS, Feature
from attnref.oracle.expected import fully_masked_rows
from attnref.oracle.protocol import Case, Implementation
from attnref.oracle.report import ClauseResult, Report
from attnref.oracle.run import DepartureCases
from attnspec import clauses, vectors
from attnspec.errors import ArgumentError

__all__ = ["check_vectors", "judged_dtypes", "require_rules"]

_SEQUENCE_NAMES = {
    "scaled_dot_product_attention": ("query", "key", "value"),
    "attention": ("query", "keys", "values"),
}


_SCORE_PARAMETERS = frozenset({"W_a", "W_q", "W_k", "v_a"})
"""Options of ``attention`` that are weight arrays; the oracle's cases carry them as arrays."""


def _needs(case: vectors.VectorCase) -> frozenset[Feature]:
    """The features an implementation must offer to take this vector case."""
    needs: set[Feature] = set()
    options = case.options
    mask = options.get("mask")
    if mask is not None:
        needs.add("bool_mask" if np.asarray(mask).dtype == np.bool_ else "additive_mask")
    if "scale" in options:
        needs.add("scale")
    if options.get("is_causal"):
        needs.add("causal_with_mask" if mask is not None else "causal")
    if options.get("enable_gqa"):
        needs.add("gqa")
    # the restrictions by the spec's keyword names (an implementation that does not take
    # one would silently compute another function)
    needs |= {f for f in RESTRICTIONS if options.get(f) is not None}
    if options.get("sinks") is not None:
        needs.add("sinks")
    if options.get("return_lse"):
        needs.add("lse")
    return frozenset(needs)


def _lifted(a: Any, rank: int) -> Any:
    """``a`` with leading axes of size 1 up to ``rank`` (the adapters' ``[B, H, T, d]``)."""
    x = np.asarray(a)
    return x.reshape((1,) * (rank - x.ndim) + x.shape) if x.ndim < rank else x


def _why_not(impl: Implementation, case: vectors.VectorCase) -> str | None:
    """Why ``impl`` cannot take this vector case, or ``None``."""
    if case.raises is not None:
        return "a bad call"
    if impl.dtype not in case.dtypes:
        return f"inputs not representable in {impl.dtype}"
    if any(np.iscomplexobj(a) for a in case.inputs.values()):
        return "complex inputs"
    missing = _needs(case) - impl.features
    if missing:
        return f"needs {', '.join(sorted(missing))}"
    alignment = case.options.get("causal_alignment", "top_left")
    if case.options.get("is_causal") and alignment != impl.conventions.causal_alignment:
        return f"{alignment} causal alignment"
    _, key_name, value_name = _SEQUENCE_NAMES[impl.function]
    d_k, d_v = np.shape(case.inputs[key_name])[-1], np.shape(case.inputs[value_name])[-1]
    if "distinct_value_dim" not in impl.features and d_v != d_k:
        return "values of another feature size"
    form = impl.score_form
    if impl.function == "attention":
        if form is None or case.options.get("score", "dot") != form.kind:
            return "another score kind"
        for name, value in case.options.items():
            if name not in _SCORE_PARAMETERS or name in form.free:
                continue
            a = np.asarray(value)
            fixed = np.eye(*a.shape) if a.ndim == 2 else np.ones(a.shape)
            if not np.array_equal(a, fixed):
                return f"a {name} the implementation fixes otherwise"
    supports = getattr(impl, "supports", None)  # declared shapes (targets.ShapeLimit)
    if supports is not None and not supports(_case(impl, case)[0]):
        return "outside the shapes it declares it supports"
    return None


def require_rules(impl: Implementation, /) -> None:
    """Check that the vectors can judge ``impl``'s dtype.

    Raises
    ------
    ArgumentError
        If they have no tolerance rule for it (float16 and bfloat16).
    """
    judged = judged_dtypes(impl.function)
    if impl.dtype not in judged:
        raise ArgumentError(
            f"the golden vectors have tolerance rules for {' and '.join(judged)} only, so they "
            f"cannot judge a {impl.dtype} implementation; check it on drawn cases (without "
            "--vectors)"
        )


def judged_dtypes(function: str, /) -> tuple[str, ...]:
    """The dtypes the golden vectors of ``function`` have tolerance rules for."""
    found = {d for case in vectors.load_cases(function) for d in case.tolerance}
    return tuple(d for d in ("float64", "float32", "float16", "bfloat16") if d in found)


def _case(impl: Implementation, case: vectors.VectorCase) -> tuple[Case, int]:
    """The vector case as an oracle case of rank 4 (SDPA) or 3, and the original rank."""
    names = _SEQUENCE_NAMES[impl.function]
    rank = 4 if impl.function == "scaled_dot_product_attention" else 3
    original = np.asarray(case.inputs[names[0]]).ndim
    arrays = {n: _lifted(np.asarray(case.inputs[n], dtype=np.float64), rank) for n in names}
    arrays.update({n: np.asarray(a) for n, a in case.options.items() if n in _SCORE_PARAMETERS})
    if case.options.get("sinks") is not None:
        # the oracle's cases hold the sinks among the arrays (they are differentiated), and
        # an implementation offering "lse" is asked for it whatever the vector's call says
        arrays["sinks"] = np.asarray(case.options["sinks"], dtype=np.float64)
    dropped = {"mask", "causal_alignment", "sinks", "return_lse", *_SCORE_PARAMETERS}
    options = {k: v for k, v in case.options.items() if k not in dropped}
    mask = case.options.get("mask")
    return Case(
        impl.function, arrays, None if mask is None else _lifted(mask, rank), options
    ), original


def check_vectors(
    impl: Implementation,
    /,
    *,
    expected_failures: Mapping[str, str] | None = None,
    target: str | None = None,
    clauses_to_check: frozenset[str] | None = None,
    departure_cases: DepartureCases | None = None,
) -> Report:
    """Run ``impl`` on every golden vector it can take; one record per clause exercised.

    ``expected_failures`` (``{clause: reason}``) turns those clauses' failures
    into ``xfail``, as in :func:`~attnref.oracle.run.check_implementation`;
    ``clauses_to_check`` keeps only the vectors and records of those clauses;
    a vector that shows one of the ``departure_cases`` of an expected failure
    is evidence of that departure only.

    Raises
    ------
    ArgumentError
        If the vectors have no tolerance rule for ``impl``'s dtype (they
        cannot judge it), a clause ID is unknown, or no vector of the clauses
        asked for can be run on ``impl``.
    """
    require_rules(impl)
    known = set(clauses.ids())
    for clause in sorted(clauses_to_check or ()):
        if clause not in known:
            raise ArgumentError(f"{clause!r} is not a clause ID of attnspec (see attnspec.clauses)")
    expected = dict(expected_failures or {})
    start = time.perf_counter()
    tried: dict[str, int] = defaultdict(int)
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for vector in vectors.load_cases(impl.function):
        if clauses_to_check is not None and not set(vector.clauses) & clauses_to_check:
            continue
        reason = _why_not(impl, vector)
        if reason is not None:
            for clause in vector.clauses:
                skipped.setdefault(clause, f"{vector.id}: {reason}")
            continue
        case, original_rank = _case(impl, vector)
        if (
            impl.conventions.fully_masked_row != "zero"
            and fully_masked_rows(case, impl.conventions).any()
        ):
            continue
        verdict = _judge(impl, vector, case, original_rank)
        for clause in vector.clauses:
            tried[clause] += 1
        if verdict is None:
            continue
        # Note: a vector lists first the clause it was written for, then every clause
        # it also exercises. Its failure is evidence against each of them (it cannot
        # tell which broke), so none of them may pass on it; but the failure of a
        # vector written for an expected failure or a recommended clause (NaN poison:
        # input.unread-nonfinite) is that known departure or finding, confined to its
        # clause, as departure_cases confine a drawn one.
        primary = vector.clauses[0]
        confined = primary in expected or clauses.get(primary).level == "recommended"
        blamed = (primary,) if confined else vector.clauses
        departed = tuple(
            d for d, shows in (departure_cases or {}).items() if d in expected and shows(case)
        )
        if departed:
            blamed = departed  # a declared departure's case (a refused scale of 0)
        for clause in blamed:
            failures.setdefault(clause, f"{vector.id}: {verdict}")
    results = []
    for clause in sorted(set(tried) | set(skipped)):
        if clauses_to_check is not None and clause not in clauses_to_check:
            continue
        if clause in failures and clause in expected:
            message = f"{failures[clause]} (expected: {expected[clause]})"
            results.append(
                ClauseResult(clause, "vectors", "xfail", tried[clause], float("inf"), message)
            )
        elif clause in failures:
            results.append(
                ClauseResult(
                    clause, "vectors", "failed", tried[clause], float("inf"), failures[clause]
                )
            )
        elif tried[clause]:
            results.append(
                ClauseResult(
                    clause, "vectors", "passed", tried[clause], 0.0, "within the vectors' rule"
                )
            )
        else:
            results.append(ClauseResult(clause, "vectors", "skipped", 0, 0.0, skipped[clause]))
    if not any(r.status != "skipped" for r in results):
        asked = "" if clauses_to_check is None else f" of {', '.join(sorted(clauses_to_check))}"
        why = sorted(set(skipped.values()))[:3]
        raise ArgumentError(
            f"no golden vector{asked} can be run on {impl.name}"
            + (f" ({'; '.join(why)})" if why else "")
            + ", so they cannot judge it"
        )
    return Report.of(
        impl,
        target=target,
        seed=0,
        max_examples=0,
        results=results,
        seconds=time.perf_counter() - start,
        mode="vectors",
    )


def _judge(
    impl: Implementation, vector: vectors.VectorCase, case: Case, original_rank: int
) -> str | None:
    """``None`` when the outputs meet the rule, else what is wrong."""
    try:
        out = impl.forward(case)
    except Exception as error:
        return f"raised {type(error).__name__}: {error}"
    assert vector.outputs is not None
    rule = vector.tolerance[impl.dtype]
    pairs = [("context", out.context, vector.outputs[0], original_rank)]
    if out.weights is not None:
        pairs.append(("weights", out.weights, vector.outputs[1], original_rank))
    if out.lse is not None and len(vector.outputs) == 3:
        pairs.append(("lse", out.lse, vector.outputs[2], original_rank - 1))
    for what, got, expected, rank in pairs:
        squeezed = got.reshape(got.shape[got.ndim - rank :])
        ok = vectors.within_tolerance(squeezed, expected, rule)
        if not ok.all():
            if squeezed.shape != expected.value.shape:
                return f"{what}: shape {squeezed.shape}, the vector gives {expected.value.shape}"
            where = tuple(int(i) for i in np.argwhere(~ok)[0])
            return (
                f"{what}{list(where)}: got {squeezed[where]!r}, expected {expected.value[where]!r}"
            )
    return None
