"""Error bounds of the property tests, derived from the arithmetic, in one place.

Every bound is ``c * n * u * magnitude`` for a named reason: ``u`` is the unit
roundoff of the dtype the reference computes in (half its machine epsilon: the
relative error of one correctly rounded operation), ``n`` the number of roundings
in a chain, and ``magnitude`` the size of the quantities rounded. The oracles
the tests compare with compute in ``numpy.longdouble`` (or exactly), so their
own error is below every bound here. References: N. J. Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed. (2002), sections 2.2 and 3.1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

TRANSCENDENTAL_ULPS = 4
"""NumPy's exp and tanh are within 4 ulp (8 u) in every dtype; its SIMD float32 loops
document at most 4 ulp, and the float64/float16 loops are better."""


def unit_roundoff(dtype: npt.DTypeLike, /) -> float:
    """``u = eps / 2``: the relative error of one correctly rounded operation."""
    return float(np.finfo(dtype).eps) / 2


def underflow_floor(dtype: npt.DTypeLike, /) -> float:
    """The absolute error of a result that underflows (flush to zero included)."""
    return float(np.finfo(dtype).smallest_normal)


def gamma(n: int, dtype: npt.DTypeLike, /) -> float:
    """``γ_n = n u / (1 - n u)``: the relative error of ``n`` chained roundings (Higham 3.1)."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        return math.inf
    return nu / (1 - nu)


def transcendental(dtype: npt.DTypeLike, /) -> float:
    """Relative error of one ``exp`` or ``tanh`` (see :data:`TRANSCENDENTAL_ULPS`)."""
    return 2 * TRANSCENDENTAL_ULPS * unit_roundoff(dtype)


def dot_bound(
    dtype: npt.DTypeLike, n: int, magnitude: npt.ArrayLike, /, *, extra: int = 0
) -> npt.NDArray[np.longdouble]:
    """|fl(Σ x_i y_i) − Σ x_i y_i| ≤ γ_n Σ|x_i y_i| + n η, ``magnitude`` = Σ|x_i y_i| (Higham 3.5).

    Any summation order and fused multiply-adds are covered; ``η`` is
    :func:`underflow_floor`, the absolute error of a product or sum that underflows
    (Higham 2.1). ``extra`` counts further roundings of the terms (a scale applied
    to one factor, a rounded scale).
    """
    m = max(n, 1) + extra
    size = np.asarray(magnitude, dtype=np.longdouble)
    return np.asarray(gamma(m, dtype) * size + m * underflow_floor(dtype), dtype=np.longdouble)


def softmax_bound(dtype: npt.DTypeLike, tk: int, logit_magnitude: float, /) -> float:
    """Absolute error of each weight of a shifted softmax over ``tk`` keys.

    Reason: rounding the logit ``s + m`` and the shift ``l - max`` perturbs the
    exponent by ``u (|s + m| + |l - max|)``; a weight ``α = e^{-x}/S`` with
    ``S ≥ 1`` absorbs ``α x u ≤ u/e`` from its own shift error and
    ``α Σ α_k x_k u ≤ α tk u`` through the sum; exp adds 8u, the sum ``γ_{tk-1}``
    and the division u, each relative to ``α ≤ 1``; underflow adds the smallest
    normal. ``logit_magnitude`` is the largest ``|s + m|`` over allowed keys when an
    additive mask is rounded into the scores, else 0 (scores are exact inputs).
    """
    u = unit_roundoff(dtype)
    return (
        2 * u * logit_magnitude
        + u * (1 + tk)
        + transcendental(dtype)
        + gamma(max(tk - 1, 1), dtype)
        + u
        + underflow_floor(dtype)
    )


def row_sum_bound(dtype: npt.DTypeLike, tk: int, /) -> float:
    """|Σ_j α_j − 1| for a softmax row: ``γ_{tk+2}``.

    Reason: each ``α_j = n_j / S`` with the same computed ``S = Σ n_j (1 + θ)``,
    ``|θ| ≤ γ_{tk-1}``; the rounding of exp cancels between numerator and ``S``;
    one more ``u`` for each division and one for the test's correctly rounded sum.
    """
    return gamma(tk + 2, dtype)


def softmax_perturbation(delta: float, /) -> float:
    """Absolute change of any softmax weight when every logit moves by at most ``delta``.

    Reason: the ratio of a perturbed weight to the original lies in
    ``[e^{-2δ}, e^{2δ}]`` and the weight is at most 1.
    """
    return math.expm1(2 * delta)


def attention_bounds(
    dtype: npt.DTypeLike,
    /,
    *,
    tk: int,
    d: int,
    score_magnitude: float,
    value_magnitude: float,
) -> tuple[float, float]:
    """Forward error bounds ``(weights, context)`` of one scaled dot-product attention.

    ``score_magnitude`` bounds ``|λ| Σ_k |q_k h_k|`` (the scaled dot products before
    cancellation) and ``value_magnitude`` the largest ``|v|``. Reason: the scores are
    off by ``γ_{d+1} · score_magnitude`` (a dot product and the scale), which moves a
    weight by :func:`softmax_perturbation`, to which the softmax's own rounding
    :func:`softmax_bound` adds; the context ``Σ α_j v_j`` adds ``γ_tk`` relative to
    ``Σ |α_j v_j| ≤ (1 + tk · weights_bound) · value_magnitude`` plus
    ``tk · weights_bound · value_magnitude`` from the weights' error.
    """
    scores = gamma(d + 1, dtype) * score_magnitude
    weights = softmax_perturbation(scores) + softmax_bound(dtype, tk, 0.0)
    spread = tk * weights * value_magnitude
    context = gamma(tk, dtype) * (value_magnitude + spread) + spread
    return weights, context


def tanh_layer_bound(
    dtype: npt.DTypeLike, n: int, pre_magnitude: float, /, *, outer: npt.NDArray[Any] | None = None
) -> float:
    """Absolute error of ``tanh(W x + b)`` (``n`` terms), or of ``v · tanh(...)`` (``outer=|v|``).

    Reason: the pre-activation is a dot product of ``n`` terms (``γ_n`` relative to
    ``pre_magnitude = Σ|W x| + |b|``); tanh is 1-Lipschitz and adds 8u relative to a
    value at most 1. With ``outer`` the ``d_a`` tanh values are summed with weights
    ``|v_a|``: each error scales by ``|v_a|`` and the sum adds ``γ_{d_a} Σ|v_a|``.
    """
    inner = gamma(n, dtype) * pre_magnitude + transcendental(dtype)
    if outer is None:
        return inner
    total = float(np.sum(outer))
    return total * inner + gamma(len(outer), dtype) * total


def assert_within(
    got: npt.ArrayLike, expected: npt.ArrayLike, bound: npt.ArrayLike, /, what: str = ""
) -> None:
    """Assert ``|got - expected| <= bound`` elementwise, compared in extended precision.

    Shapes must agree exactly (no broadcasting of ``got`` against ``expected``); NaN
    anywhere fails. The message names the worst entry, its error and its bound.
    """
    g = np.asarray(got, dtype=np.longdouble)
    e = np.asarray(expected, dtype=np.longdouble)
    assert g.shape == e.shape, f"{what}: shape {g.shape} differs from the expected {e.shape}"
    b = np.broadcast_to(np.asarray(bound, dtype=np.longdouble), g.shape)
    error = np.abs(g - e)
    ok = error <= b
    if not ok.all():
        where = tuple(int(i) for i in np.argwhere(~ok)[0])
        raise AssertionError(
            f"{what}: |got - expected| = {error[where]} exceeds the bound {b[where]} at {where} "
            f"(got {g[where]}, expected {e[where]}); {int((~ok).sum())} of {ok.size} entries"
        )
