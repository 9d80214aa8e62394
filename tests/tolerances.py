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
    :func:`tanh_layer_bound`, :func:`log_sum_exp_bound`, :func:`sink_share_bound`,
    :func:`weight_relative_bound` and :func:`cap_derivative_bound` (the gradient with
    respect to a softcap, against mpmath), compared by :func:`assert_within`.
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

import math
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


def log_sum_exp_bound(
    dtype: npt.DTypeLike, n: int, lse_magnitude: npt.ArrayLike, /, *, logit_magnitude: float = 0.0
) -> npt.NDArray[np.float64]:
    """Absolute error of a shifted log-sum-exp ``2 t + log Σ_j exp(2 (h_j - t))`` over ``n``
    terms (``lse.stable``), against the exact value for the logits it is given.

    Reason: the largest term is ``exp(0) = 1``, so the sum ``S >= 1``. Rounding a centred
    half-logit ``x_j = h_j - t`` moves its exponent by ``2 u |x_j|``, and since
    ``e^{2x} |x| <= 1/(2e)`` for ``x <= 0`` that moves ``log S`` by at most ``u/e`` per term
    (``n u`` in all); exp adds ``transcendental`` relative to each term and the sum
    ``γ_{n-1}``, both relative to ``S``; terms that underflow are off by the smallest normal,
    ``n`` of them relative to ``S >= 1``; log rounds relative to ``log S <= log n`` (NumPy's
    and PyTorch's log keep the 4 ulp of :data:`TRANSCENDENTAL_ULPS`); the final addition
    ``2 t + log S`` rounds once, ``u |l|`` with ``lse_magnitude`` bounding ``|l|``. With an
    additive mask rounded into the logits, each moves by ``u |s + m|`` (and so does ``l``,
    which is 1-Lipschitz in the largest logit move): ``logit_magnitude`` is the largest
    ``|s + m|`` then, else 0.
    """
    u = unit_roundoff(dtype)
    terms = max(n, 1)
    relative = terms * u + transcendental(dtype) + gamma(max(terms - 1, 1), dtype)
    inner = relative / (1 - relative) + terms * underflow_floor(dtype)  # |log(1 + x)| <= x/(1-x)
    rounded = transcendental(dtype) * math.log(terms + 1) + u * logit_magnitude + inner
    size = np.abs(np.asarray(lse_magnitude, dtype=np.float64))
    return np.asarray(rounded + u * size + underflow_floor(dtype))


def sink_share_bound(
    dtype: npt.DTypeLike, n: int, share: npt.ArrayLike, sink: npt.ArrayLike, lse: npt.ArrayLike, /
) -> npt.NDArray[np.float64]:
    """``|Σ_j α_j - (1 - exp(σ - l))|`` for a softmax row whose denominator also holds a sink
    (``sdpa.sinks``), with ``α`` and ``l`` as computed and ``share = exp(σ - l)`` evaluated
    exactly from them; ``n`` counts the sink among the terms.

    Reason: the weights and the sink's share have the same computed denominator ``S``, so
    ``Σ α_j + e_σ / S = 1`` up to the sum's ``γ_{n-1}``, a division ``u`` per weight and the
    test's one rounding: :func:`row_sum_bound`. The share recomputed from the returned
    ``l = 2 t + log S`` differs from ``e_σ / S`` by the rounding of ``l`` (``u |l|`` and
    log's ``transcendental`` relative to ``log S <= log 2n``), of the sink's centred logit
    ``σ - 2t`` (``u |σ - 2t| <= u (|σ| + |l| + log 2n)``) and exp's rounding of ``e_σ``
    (twice ``transcendental``, as ``1/(1 - x) <= e^{2x}``): relative to the share, through
    ``expm1``; terms that underflow add the smallest normal each.
    """
    u = unit_roundoff(dtype)
    logs = math.log(2 * max(n, 1))
    size = np.abs(np.asarray(sink, dtype=np.float64)) + 2 * np.abs(np.asarray(lse, np.float64))
    exponent = u * (size + logs) + transcendental(dtype) * (logs + 2)
    moved = np.asarray(share, dtype=np.float64) * np.expm1(exponent)
    return np.asarray(row_sum_bound(dtype, n) + moved + n * underflow_floor(dtype))


def weight_relative_bound(
    dtype: npt.DTypeLike, n: int, exponent_error: npt.ArrayLike, /
) -> npt.NDArray[np.float64]:
    """Relative error of every weight of a shifted softmax over ``n`` terms whose exponents are
    each off by at most ``exponent_error`` (elementwise for an array, one entry per row).

    Reason: the numerator and every term of the denominator move by a factor in
    ``[e^{-ε}, e^{ε}]`` (:func:`softmax_perturbation`, ``e^{2ε}`` for their ratio); exp
    rounds the numerator and each denominator term (``transcendental``), the sum adds
    ``γ_{n-1}`` and the division ``u``; each factor ``1 ± x`` is at most ``e^{x/(1-x)}``,
    so the product stays an exact bound through ``expm1``.
    """
    x = 2 * transcendental(dtype) + gamma(max(n - 1, 1), dtype) + unit_roundoff(dtype)
    eps = np.asarray(exponent_error, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.asarray(np.expm1(2 * eps + 1.5 * x))


CAP_SERIES_ROUNDINGS = 45
"""Roundings along the series of the cap's derivative for ``|u| <= 1/2``
(:func:`attnref.vjp._cap_derivative`): each of its 9 terms takes 4 from the previous
(two products, a division of two exact integers' product, a halving that is exact), 36 for
the last; the sum of 9 positive terms adds 9; its truncation is below ``u`` relative."""


def cap_derivative_bound(
    *,
    u: npt.NDArray[Any],
    u_error: npt.NDArray[Any],
    bars: npt.NDArray[Any],
    bar_error: npt.NDArray[Any],
) -> float:
    r"""Absolute error of the derivative of ``c tanh(s / c)`` attention with respect to the cap
    :math:`c`, :math:`\bar c = \sum \bar t\, φ(u)` with :math:`φ(u) = \tanh u - u
    \operatorname{sech}^2 u` at :math:`u = s / c` (``sdpa.softcap``), computed in float64.

    ``u`` is the computed ``s / c`` and ``u_error`` bounds its error; ``bars`` bounds
    :math:`|\bar t|` and ``bar_error`` the error of the computed bars; the four are
    elementwise over the summed terms.

    Reason: :math:`|φ'(ξ)| = 2|ξ| \operatorname{sech}^2 ξ\, |\tanh ξ|` is at most
    :math:`2ξ^2` and at most 1 (its largest value is 0.64), which carries ``u_error`` into
    :math:`φ`. For :math:`|u| <= 1/2` the derivative is summed from its series, whose terms
    are all positive: relative error :math:`γ` of :data:`CAP_SERIES_ROUNDINGS` and the
    :math:`\operatorname{sech}^2` factor (cosh, a square and a division). Beyond, it is
    :math:`\tanh u - u \operatorname{sech}^2 u` directly, each term within
    ``transcendental + 4u`` of its own size, and the subtraction ``u``. Then each product
    :math:`\bar t φ` rounds once and their sum adds :math:`γ_n` of the sum of their
    magnitudes; products that underflow add the smallest normal each. Without the series,
    the subtraction cancels to :math:`2u^3/3` and loses :math:`\log_2(3/u^2)` bits, which
    this bound does not allow.
    """
    eps = unit_roundoff(np.float64)
    tr = transcendental(np.float64)
    a = np.abs(np.asarray(u, dtype=np.longdouble))
    a_safe = np.minimum(a, 0.5)
    x = 2 * a_safe
    term, series = x, np.zeros_like(x)
    for k in range(1, 13):
        term = term * x * x / ((2 * k) * (2 * k + 1))
        series = series + term / 2
    with np.errstate(over="ignore"):
        sech2 = 1 / np.cosh(a) ** 2
    phi = np.where(a <= 0.5, series / np.cosh(a_safe) ** 2, np.tanh(a) - a * sech2)
    sizes = np.tanh(a) + a * sech2
    phi_error = np.where(
        a <= 0.5,
        (gamma(CAP_SERIES_ROUNDINGS, np.float64) + 2 * tr + 2 * eps) * phi,
        (tr + 4 * eps) * sizes + eps * phi,
    )
    du = np.asarray(u_error, dtype=np.longdouble)
    slope = np.minimum(2 * (a + du) ** 2, 1)
    moved = slope * du + phi_error  # [terms] |computed φ - φ(u)|
    g = np.asarray(bars, dtype=np.longdouble)
    dg = np.asarray(bar_error, dtype=np.longdouble)
    n = g.size
    total = np.sum(g * moved) + np.sum(dg * (phi + moved))
    rounding = gamma(n + 1, np.float64) * np.sum((g + dg) * (phi + moved))
    return float(total + rounding + n * underflow_floor(np.float64))


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
