r"""The test suite's error bounds: every tolerance a test compares with, derived, in one module.

This is the tests' tolerance home; the other three are the oracle's
(:mod:`attnref.oracle.tolerance`), the golden vectors' (``TOLERANCE`` in
:mod:`attnref.vectors.golden`) and the gradient checks' (``SETTINGS`` in
:mod:`attnref.testing.gradcheck`); the docs page "Tolerances" lists all four.
No test writes a tolerance as a literal: it calls one of the functions below
with the sizes and magnitudes of its case.

The arithmetic (N. J. Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., 2002, sections 2.1-2.2 and 3.1-3.5): one correctly
rounded operation has relative error at most the unit roundoff
:math:`u = \varepsilon / 2`; ``n`` chained roundings at most
:math:`\gamma_n = n u / (1 - n u)`; a sum or dot product of ``n`` terms in any
order (fused multiply-adds included) is within :math:`\gamma_n \sum |x_i y_i|`
of the exact value -- relative to the magnitudes of the terms, not of the
result, so cancellation is covered. A result that underflows may also be off
absolutely by the smallest *normal* number: that covers gradual underflow
(off by at most half the smallest subnormal) and flush-to-zero alike
(:func:`underflow_floor`).

Two kinds of comparison use these facts:

Against an extended-precision or exact oracle (property tests, closed forms)
    Only the implementation under test rounds: :func:`dot_bound`,
    :func:`softmax_bound`, :func:`row_sum_bound`, :func:`attention_bounds`,
    :func:`tanh_layer_bound`, compared by :func:`assert_within`.
Between two float64 implementations of one formula (the twin tests)
    Both sides round: :func:`bound` gives ``c * n * (eps * scale + floor)`` with
    a constant ``c`` per kind of computation, each with its reason in
    :data:`RULES`.

Errors in the logits of a softmax are amplified by :func:`softmax_perturbation`,
an exact bound rather than a first-order one, so that large logits (``1e300``)
are covered honestly: when the logits themselves may differ by more than a
unit the bound becomes vacuous instead of passing a false check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

EPS = float(np.finfo(np.float64).eps)
"""Machine epsilon of float64, twice its unit roundoff ``u``."""


def unit_roundoff(dtype: npt.DTypeLike, /) -> float:
    """``u = eps / 2``: the relative error of one correctly rounded operation."""
    return float(np.finfo(dtype).eps) / 2


def underflow_floor(dtype: npt.DTypeLike, /) -> float:
    """The absolute error of a result that underflows: the smallest normal number.

    With gradual underflow a rounding is off by at most half the smallest
    subnormal; with flush-to-zero (some SIMD loops, some backends) by up to the
    smallest normal. The larger covers both and is still far below any error
    a test means to catch.
    """
    return float(np.finfo(dtype).smallest_normal)


def gamma(n: int, dtype: npt.DTypeLike, /) -> float:
    """``γ_n = n u / (1 - n u)``: the relative error of ``n`` chained roundings (Higham 3.1)."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma_{n} is unbounded in {np.dtype(dtype).name}: n u = {nu} >= 1")
    return nu / (1 - nu)


# --- against an extended-precision or exact oracle -----------------------------------------

TRANSCENDENTAL_ULPS = 4
"""NumPy's exp and tanh are within 4 ulp (8 u) in every dtype; its SIMD float32 loops
document at most 4 ulp, and the float64/float16 loops are better."""


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


def softmax_perturbation(delta: npt.ArrayLike, /) -> npt.NDArray[np.float64]:
    """How much any softmax weight may move, relative to itself, when every logit of its
    row moves by at most ``delta`` (elementwise for an array).

    Reason: each numerator :math:`e^{x_j}` and the denominator move by a factor
    in ``[e^{-δ}, e^{δ}]``, so the ratio of a perturbed weight to the original
    lies in ``[e^{-2δ}, e^{2δ}]``: the weight moves by at most ``α (e^{2δ} - 1)``,
    and since ``α <= 1`` that is also an absolute bound. Exact, not first order;
    ``inf`` when the logits may differ by hundreds (the check is then vacuous,
    not false).
    """
    d = np.asarray(delta, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.asarray(np.expm1(2 * d))


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
    weights = float(softmax_perturbation(scores)) + softmax_bound(dtype, tk, 0.0)
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


# --- between two float64 implementations of one formula ------------------------------------

Kind = Literal["sum", "softmax", "elementwise", "exact"]


@dataclass(frozen=True)
class Rule:
    """The constant ``c`` of one kind of computation and why it suffices."""

    c: float
    reason: str


RULES: dict[Kind, Rule] = {
    "sum": Rule(
        2.0,
        "a sum or dot product of n terms in any order: each side is within "
        "gamma_n <= 1.01 n u of the exact value relative to sum |terms|, so the two "
        "within about n eps; c = 2 covers the products' own roundings and one final "
        "scaling or bias addition.",
    ),
    "softmax": Rule(
        4.0,
        "weights in [0, 1] from identical logits over n keys: exp (1 ulp), the n-term "
        "sum and the division give at most (n + 2) u relative error per side, so "
        "(n + 2) eps for the two; c n >= n + 2 for every n >= 1 with room to spare.",
    ),
    "elementwise": Rule(
        2.0,
        "a chain of n elementwise operations each within 1 ulp (exp, tanh, sigmoid, "
        "products) and with derivative at most 1 in magnitude along the chain, so each "
        "side is within n eps relative to scale; c = 2 for the two sides.",
    ),
    "exact": Rule(
        0.0,
        "copies and rearrangements (concatenation, broadcasting, repeated heads), and "
        "dot products of integers whose partial sums stay below 2**53: no rounding.",
    ),
}
"""The constant ``c`` per kind of computation, each with its one-line reason."""


def bound(kind: Kind, n: int, scale: npt.ArrayLike, /) -> npt.NDArray[np.float64]:
    """``c * n * (eps * scale + floor)``: the largest difference two implementations may show.

    ``n`` is the number of roundings along the longest chain (at least 1);
    ``scale`` is elementwise (an array bounds each element separately);
    :func:`underflow_floor` covers results that underflow.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1 (the number of roundings); got {n}")
    magnitude = EPS * np.asarray(scale, dtype=np.float64) + underflow_floor(np.float64)
    return np.asarray(RULES[kind].c * n * magnitude)
