"""Checking an implementation at full size: long sequences and wide heads in float64.

Every row of attention's output depends on its own query and on all keys
and values, never on other queries. So at a size where the truth cannot be
computed whole in extended precision (``Tq = Tk = 4096``, ``d = 128``,
``B·H = 8`` is 137 billion extended-precision multiply-adds), the oracle runs
the implementation on the whole case and judges a sample of its rows: the
truth and the naive witnesses are evaluated on those rows only, which is
exact for them. The rows sampled include the first and the last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from attnref.oracle.checks import Measure, MismatchError, compare
from attnref.oracle.expected import evaluate
from attnref.oracle.protocol import Case, Implementation
from attnref.oracle.report import ClauseResult, Status
from attnref.oracle.rounding import round_to
from attnref.oracle.witnesses import naive_evaluations

__all__ = ["LargeRun", "check_large", "large_case"]


def large_case(
    impl: Implementation, /, *, batch: int, heads: int, length: int, d: int, seed: int = 0
) -> Case:
    """A random SDPA case of shape ``[batch, heads, length, d]``, in ``impl``'s dtype."""
    rng = np.random.default_rng(seed)
    shape = (batch, heads, length, d)
    arrays = {
        n: round_to(impl.dtype, rng.standard_normal(shape)) for n in ("query", "key", "value")
    }
    return Case("scaled_dot_product_attention", arrays)


def _rows(case: Case, rows: np.ndarray) -> Case:
    """The same case restricted to some query rows (exact: rows are independent)."""
    arrays = dict(case.arrays)
    arrays["query"] = np.take(case.arrays["query"], rows, axis=-2)
    return replace(case, arrays=arrays)


@dataclass(frozen=True)
class LargeRun:
    """The verdict of a full-size check and what it cost."""

    result: ClauseResult
    shape: tuple[int, ...]
    rows_judged: int
    implementation_seconds: float
    judging_seconds: float


def check_large(
    impl: Implementation,
    /,
    *,
    batch: int = 1,
    heads: int = 8,
    length: int = 4096,
    d: int = 128,
    rows: int = 16,
    seed: int = 0,
) -> LargeRun:
    """Check ``sdpa.formula`` on one full-size case, judging ``rows`` sampled query rows."""
    case = large_case(impl, batch=batch, heads=heads, length=length, d=d, seed=seed)
    picked = np.unique(
        np.concatenate([[0, length - 1], np.random.default_rng(seed).integers(0, length, rows)])
    )[:rows]
    start = time.perf_counter()
    out = impl.forward(case)
    middle = time.perf_counter()
    sub = _rows(case, picked)
    truth = evaluate(sub, impl.conventions)
    naive = naive_evaluations(sub, impl.conventions, impl.dtype)
    measures: list[Measure] = []
    try:
        actual = np.take(out.context, picked, axis=-2)
        measures.append(
            compare("context", actual, truth.context, [n.context for n in naive], impl.dtype)
        )
        if out.weights is not None:
            weights = np.take(out.weights, picked, axis=-2)
            witnesses = [n.weights for n in naive]
            measures.append(compare("weights", weights, truth.weights, witnesses, impl.dtype))
        worst = max(measures, key=lambda m: m.ratio)
        status: Status = "passed" if worst.ratio <= 1 else "failed"
        result = ClauseResult(
            "sdpa.formula", "sdpa/large", status, 1, worst.ratio, worst.describe()
        )
    except MismatchError as mismatch:
        result = ClauseResult(
            "sdpa.formula", "sdpa/large", "failed", 1, float("inf"), str(mismatch)
        )
    end = time.perf_counter()
    return LargeRun(result, (batch, heads, length, d), len(picked), middle - start, end - middle)
