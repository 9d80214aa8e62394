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

from attnref.oracle.checks import MismatchError, context, weights
from attnref.oracle.observe import observe
from attnref.oracle.protocol import Case, Float64Array, Implementation, Output
from attnref.oracle.report import ClauseResult, Status
from attnref.oracle.rounding import round_to

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


class _Computed:
    """``impl`` with its result on the sampled rows already computed (observed, not re-run)."""

    def __init__(self, impl: Implementation, output: Output) -> None:
        self._impl, self._output = impl, output
        self.name, self.framework, self.dtype = impl.name, impl.framework, impl.dtype
        self.device, self.function, self.score_form = impl.device, impl.function, impl.score_form
        self.conventions, self.features = impl.conventions, impl.features

    def forward(self, case: Case, /) -> Output:
        return self._output

    def vjp(self, case: Case, cotangent: Float64Array, /) -> dict[str, Float64Array]:
        raise NotImplementedError("the full-size check judges the forward pass only")


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
    rows_out = replace(
        out,
        context=np.take(out.context, picked, axis=-2),
        weights=None if out.weights is None else np.take(out.weights, picked, axis=-2),
    )
    try:
        observation = observe(_Computed(impl, rows_out), sub, gradients=False)
        measures = context(observation) + weights(observation)
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
