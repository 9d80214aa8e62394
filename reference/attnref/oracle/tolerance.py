"""The oracle's tolerance model: the one place where its error bounds live.

An implementation stores its inputs and results in a dtype ``T`` (the
*storage* dtype) and computes its sums in an *accumulation* dtype ``A`` (the
same, or float32 for the 16-bit dtypes, see
:class:`~attnref.oracle.conventions.Conventions`). It is compared, element by
element, with the *truth*: the reference evaluated in extended precision on
the very inputs the implementation saw (already rounded to ``T``). Each
element may differ from the truth by ``SAFETY`` times a forward error bound
derived here, plus a floor for underflow.

The bounds (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.
2002, §3.1 and Lemma 3.1) use the unit roundoff :math:`u` of the dtype and
:math:`\\gamma_n = n u / (1 - n u)`. A sum of ``n`` products computed in any
order satisfies :math:`|\\hat s - s| \\le \\gamma_n \\sum |x_i y_i|`: the
bound grows with the *magnitudes of the summed terms*, not with the result,
so an exactly zero or cancelling result still gets the room a sound kernel
needs (a ``Tk = 1`` gradient w.r.t. the query is exactly 0 in truth and about
:math:`10^{-8}` in a float32 kernel). Because the bound holds for every
summation order, blocked, online-softmax and split-K kernels are covered:
their rescalings add at most one rounding per block, which the ``2 Tk``
terms below count.

Scores
    :math:`\\hat s_{ij} = s_{ij} + \\epsilon_{ij}` with
    :math:`|\\epsilon_{ij}| \\le a_{ij} = \\gamma_{n_s}(A) \\Sigma_{ij}
    + u_A (2 |s_{ij}| + 2 |m_i| + \\log T_k + 2 e)`, where :math:`\\Sigma_{ij}` is the sum of
    the magnitudes of the score's terms (:math:`|\\lambda| |q_i|^T |k_j|`
    plus the additive mask for SDPA), :math:`m_i` the row maximum, and
    ``e = EXP_ULPS`` the error of ``exp`` in units in the last place (the
    shift by the maximum, or by a saved log-sum-exp :math:`\\le m_i + \\log T_k`,
    and ``exp`` each perturb the exponent).
Weights
    With :math:`\\hat w_j = 1 / (1 + \\sum_{l \\ne j} e^{\\hat s_l - \\hat s_j})`
    the perturbed weight lies between the values at
    :math:`\\hat s_l - \\hat s_j = s_l - s_j \\pm (a_l + a_j)`; both are
    evaluated in log space, so the bound stays exact for one-hot rows and
    huge logits where a first-order bound would not. The normalising sum
    and division add :math:`\\gamma_{2 T_k + 4}(A) w_j`, an exponent taken from
    a saved log-sum-exp (FlashAttention's weights :math:`e^{s - \\mathrm{lse}}`)
    :math:`u_A (2|s_{ij}| + 2|m_i| + \\log T_k + 2e) w_j`, and a kernel that
    rounds the weights to ``T`` before the weighted sum (FlashAttention)
    :math:`u_T w_j`.
Context
    :math:`\\delta c_i = \\sum_j \\delta w_{ij} |v_j| + \\gamma_{2 T_k + 4}(A)
    \\sum_j w_{ij} |v_j| + u_T |c_i|` (the last term: rounding to ``T``).
Gradients
    The backward pass of Dao (2023, FlashAttention-2, Algorithm 2):
    :math:`dP = g V^T`, :math:`D_i = \\sum_j w_{ij} dP_{ij} = g_i \\cdot c_i`,
    :math:`dS = w \\circ (dP - D)`, :math:`dQ = \\lambda\\, dS\\, K`,
    :math:`dK = \\lambda\\, dS^T Q`, :math:`dV = w^T g` (summed over the
    query heads of a group). Each product's error is propagated the same way:
    the error of its factors times the magnitude of the other factor, plus
    :math:`\\gamma_n` times the sum of the magnitudes of its terms; the
    cotangent itself is rounded to ``T`` by the implementation's autodiff.

Steps
    A step function's inputs are the case's arrays, exact in ``T``, so no
    input error propagates; each bound counts the roundings of the step
    itself, plus :math:`u_T |r|` for storing the result :math:`r` and, where
    a kernel may store an intermediate in ``T`` (a 16-bit linear layer
    before its ``tanh``), :math:`u_T` of that intermediate.

    *Window softmax* (``local_m_distribution``): the softmax bound above over
    the allowed set :math:`W_i` (window and mask), with score error 0, and its
    sums counting the :math:`n_i = |W_i|` allowed keys of the row rather than
    :math:`T_k`: a disallowed key adds an exact 0 to a sum and rescales an
    online softmax's running sum by an exact 1, so only allowed keys round (a
    window holds at most :math:`2D + 1`). The softmax steps below count the
    same way.

    *Local-p* (``local_p_distribution``): :math:`\\alpha = w g` with ``w`` the
    window softmax and :math:`g = e^{-x}`, :math:`x = (j - p)^2 / (2\\sigma^2)`,
    :math:`\\sigma = D/2`. Forming ``x`` takes at most 5 roundings in ``A``
    (the difference :math:`j - p`, the square, the division by or the product
    with :math:`2\\sigma^2` and its reciprocal's own rounding, and one for an
    evaluation ordered as :math:`(o/\\sigma)^2/2`), so :math:`\\hat x = x(1 +
    \\theta)`, :math:`|\\theta| \\le \\gamma_5`, and ``exp`` adds ``EXP_ULPS``
    ulps: :math:`|\\hat g - g| \\le \\delta g = g\\,(e^{\\gamma_5 x} - 1 +
    e\\,u_A e^{\\gamma_5 x})`, where :math:`x \\le 2` inside the window. The
    product rounds once in ``A``: :math:`|\\hat\\alpha - \\alpha| \\le (\\delta w
    + b w) g + w\\,\\delta g + u_A w g + u_T \\alpha`, with ``b`` the rounding of
    weights stored in ``T`` before the product.

    *Local gradients*: with the cotangent :math:`c` (rounded to ``T``,
    :math:`u_g`), :math:`\\bar c = c` (local-m) or :math:`c g` (local-p),
    :math:`D_i = \\sum_j w_{ij} \\bar c_{ij}` and :math:`\\bar e = w(\\bar c - D)`:
    :math:`|\\delta \\bar e| \\le \\delta w |\\bar c - D| + w(\\delta\\bar c +
    \\delta D) + \\gamma_{n_i + 4}(A)\\, w (|\\bar c| + \\sum_k w_k |\\bar c_k|)
    + u_T |\\bar e|`, where :math:`\\delta D = \\sum_j (\\delta w |\\bar c| +
    w \\delta\\bar c) + \\gamma_{n_i}(A) \\sum_j w |\\bar c|` and the
    :math:`\\gamma_{n_i + 4}` term covers any ordering of the softmax
    backward (an autograd of ``exps / total`` included). The position's
    :math:`\\bar p_i = \\sum_j c_{ij} \\alpha_{ij} (j - p_i)/\\sigma^2` is a sum
    of products of at most 6 rounded factors: :math:`|\\delta\\bar p_i| \\le
    \\sum_j |c_{ij}| |j - p_i| (\\delta\\alpha_{ij} + (\\gamma_{n_i + 6}(A) + u_g)
    \\alpha_{ij}) / \\sigma^2 + u_T |\\bar p_i|`. Both vanish exactly where no
    key is read, so an unread position keeps an allowance of 0.

    *Softmax steps* (``attention_distribution``, ``output_distribution``): the
    softmax bound with the score error of forming the logits: :math:`u_A
    (|s| + |m|)` for scores plus an additive mask; :math:`\\gamma_{d_h + 1}(A)
    (|W_y| |\\tilde s| + |b_y|) + b |z|` for the output layer's logits.

    *Weighted sum* (``attention_value``): :math:`\\gamma_{T_k}(A) |\\alpha| |v|
    + u_T |a|` over the values that are read. *Concatenation* is a copy:
    bound 0.

    *Dense tanh* (``attentional_hidden_state``, the hidden layer of
    ``local_p_position``): :math:`z = W x + b` has :math:`|\\hat z - z| \\le
    \\delta z = \\gamma_{n+1}(A)(|W||x| + |b|) + b|z|`; ``tanh`` moves it by at
    most the largest slope :math:`1 - \\tanh^2` on :math:`[|z| - \\delta z,
    |z| + \\delta z]` and adds ``EXP_ULPS`` ulps: :math:`|\\hat h - h| \\le
    (1 - \\tanh^2(\\max(|z| - \\delta z, 0)))\\,\\delta z + (e\\,u_A + b)|h|`.

    *Position* (``local_p_position``, :math:`p = (S-1)\\sigma(y)`, :math:`y =
    v^\\top \\tanh(W s)`): :math:`\\delta y = |v|^\\top \\delta h + \\gamma_{d_p}(A)
    |v|^\\top |h| + b|y|`; on :math:`|\\xi - y| \\le \\delta y` the logistic
    slope :math:`\\sigma(\\xi)\\sigma(-\\xi)` is at most
    :math:`\\min(1/4, \\sigma(y)\\sigma(-y) e^{2\\delta y})` (each factor moves
    by at most :math:`e^{\\delta y}`), and evaluating :math:`1/(1 + e^{-y})`
    costs ``EXP_ULPS`` + 2 ulps: :math:`|\\hat p - p| \\le (S - 1)[\\Delta\\sigma
    + (e + 3) u_A (\\sigma + \\Delta\\sigma)] + u_T p`, the extra ulp for the
    product with :math:`S - 1`.

    *Scores* (``score_*``): the score error :math:`a_{ij}` of the composites
    (without a mask) plus :math:`u_T |s_{ij}|`.

``SAFETY`` covers the second-order terms the first-order propagation drops.
The bounds are worst cases over summation orders, so a sound kernel sits well
below them (the oracle's tests show the naive evaluation in every dtype at a
fraction of the bound), while a float64 kernel that computes in float32 is
off by about :math:`10^{-7}` relative, millions of times its allowance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from attnref.oracle.protocol import Float64Array

__all__ = [
    "EPSILON",
    "EXP_ULPS",
    "GAUSSIAN_ROUNDINGS",
    "NO_GUARANTEE",
    "SAFETY",
    "Bounds",
    "GradientBounds",
    "LocalBounds",
    "Precision",
    "Terms",
    "dense_logit_error",
    "dense_tanh_error",
    "gamma",
    "gradient_bounds",
    "local_gradient_bounds",
    "local_m_bounds",
    "local_p_bounds",
    "log_sum_exp_error",
    "output_bounds",
    "position_error",
    "score_terms",
    "softmax_step_error",
    "truth_dtype",
    "underflow_floor",
    "unit_roundoff",
    "weighted_sum_error",
]


EPSILON: Final[dict[str, float]] = {
    "float64": float(np.finfo(np.float64).eps),  # 2**-52
    "float32": float(np.finfo(np.float32).eps),  # 2**-23
    "float16": float(np.finfo(np.float16).eps),  # 2**-10
    "bfloat16": 2.0**-7,  # 8 significand bits; NumPy has no bfloat16 type
}
"""Machine epsilon (spacing of the numbers at 1) of each dtype the oracle knows."""

_TINY: Final[dict[str, float]] = {
    "float64": float(np.finfo(np.float64).tiny),
    "float32": float(np.finfo(np.float32).tiny),
    "float16": float(np.finfo(np.float16).tiny),
    "bfloat16": float(np.finfo(np.float32).tiny),  # bfloat16 has float32's exponent range
}

SAFETY: Final = 2.0
"""Each element may be off by twice its first-order bound: the factor covers the
second-order terms (products of two rounding errors) that first-order
propagation drops, which stay below the first-order ones while ``n u < 1/2``."""

EXP_ULPS: Final = 4.0
"""Error of ``exp`` and ``tanh`` in units in the last place: correctly rounded
libraries are within 1; vectorised ones (SLEEF's u35 variants) within 3.5."""

GAUSSIAN_ROUNDINGS: Final = 5
"""Roundings in forming local-p's exponent (j - p)^2 / (2 sigma^2), in any of the usual
orders (difference, square, scaling and the scale's own rounding, one spare)."""

UNDERFLOW_ROUNDINGS: Final = 16.0
"""The floor, in units of the dtype's smallest normal number: every rounding of
the chain (at most a handful per element) may lose that much absolutely to
gradual underflow, which the relative model above does not cover."""


def unit_roundoff(dtype: str, /) -> float:
    """Half the machine epsilon: the largest relative error of one rounding."""
    return EPSILON[dtype] / 2


def gamma(n: float, dtype: str, /) -> float:
    """:math:`\\gamma_n = n u / (1 - n u)`; infinite when ``n u >= 1`` (no guarantee).

    >>> gamma(1, "float64") > unit_roundoff("float64")
    True
    """
    nu = n * unit_roundoff(dtype)
    return float("inf") if nu >= 1 else nu / (1 - nu)


NO_GUARANTEE: Final = 1e30
"""What the bounds take for :math:`\\gamma_n` when :math:`n u \\ge 1` (a 16-bit accumulation
over many terms): a first-order bound then guarantees nothing, and a huge finite factor says
so while a term whose other factor is exactly 0 stays 0; an infinite one would make it NaN,
an allowance that :func:`~attnref.oracle.checks.compare` reads as none."""


def _gamma(n: float, dtype: str, /) -> float:
    """:func:`gamma`, with :data:`NO_GUARANTEE` in place of infinity."""
    return min(gamma(n, dtype), NO_GUARANTEE)


def _gammas(n: Float64Array | int, dtype: str, /) -> Float64Array:
    """:func:`_gamma` element by element, of an array of counts ``n``."""
    nu = np.asarray(n, dtype=np.float64) * unit_roundoff(dtype)
    with np.errstate(divide="ignore"):
        return np.where(nu < 1, nu / np.maximum(1 - nu, 1e-300), NO_GUARANTEE).clip(
            max=NO_GUARANTEE
        )


def underflow_floor(dtype: str, /) -> float:
    """The absolute allowance every element gets for gradual underflow."""
    return UNDERFLOW_ROUNDINGS * _TINY[dtype]


def truth_dtype() -> np.dtype[Any]:
    """The dtype of the truth: ``longdouble`` where it is wider than float64.

    On x86-64 Linux ``longdouble`` has a 64-bit significand (eps ~ 1.1e-19),
    enough to measure float64 errors; where it is not wider (e.g. Apple
    silicon), float64 is returned and float64 targets are judged against a
    truth that is itself rounded, which the bounds' slack absorbs.
    """
    if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps:
        return np.dtype(np.longdouble)
    return np.dtype(np.float64)


@dataclass(frozen=True)
class Precision:
    """How an implementation stores and accumulates.

    Attributes
    ----------
    storage
        The dtype of its inputs and results.
    accumulation
        The dtype of its sums, exponentials and softmax.
    """

    storage: str
    accumulation: str

    @property
    def rounds_between(self) -> float:
        """Unit roundoff of storing an intermediate (the weights, dS) in the storage dtype."""
        return 0.0 if self.storage == self.accumulation else unit_roundoff(self.storage)


@dataclass(frozen=True)
class Terms:
    """The magnitudes a case's sums are made of, in the score's own form.

    All arrays are float64, nonnegative unless said, and broadcast to the
    scores' batch shape (query heads for grouped SDPA).

    Attributes
    ----------
    scores
        The exact scores with the additive mask, ``[..., Tq, Tk]`` (signed).
    score_error
        :math:`a_{ij}` before the softmax's own terms: the bound on the error
        of the computed score.
    grad_query, grad_key
        Magnitudes of :math:`\\partial s_{ij} / \\partial q_i` as
        ``[..., Tk, d_q]`` and of :math:`\\partial s_{ij} / \\partial k_j` as
        ``[..., Tq, d_k]``, times ``|scale|``.
    grad_query_error, grad_key_error
        Bounds on the error of computing those partial derivatives.
    """

    scores: Float64Array
    score_error: Float64Array
    grad_query: Float64Array
    grad_key: Float64Array
    grad_query_error: Float64Array
    grad_key_error: Float64Array

    def with_sink(self, sink: Float64Array, /) -> Terms:
        """The terms with each row's sink logit (``[..., Tq]``, ``sdpa.sinks``) as one more key.

        The sink is an exact logit of the row's softmax (it is stored in the
        implementation's dtype and neither scaled nor capped), so its score
        error is 0; it reads no query, so its partial derivatives are 0. The
        softmax, log-sum-exp and gradient bounds then apply unchanged to the
        ``Tk + 1`` columns (the sink's weight times a zero value row adds
        nothing to the context).
        """
        zero_row = np.zeros((*self.grad_query.shape[:-2], 1, self.grad_query.shape[-1]))
        return Terms(
            np.concatenate([self.scores, sink[..., None]], axis=-1),
            np.concatenate([self.score_error, np.zeros((*sink.shape, 1))], axis=-1),
            np.concatenate([self.grad_query, zero_row], axis=-2),
            self.grad_key,
            np.concatenate([self.grad_query_error, zero_row], axis=-2),
            self.grad_key_error,
        )


@dataclass(frozen=True)
class Bounds:
    """Forward error bounds, element by element.

    For a step function ``context`` bounds its one result (read as
    :attr:`result`) and the weight fields are empty.
    """

    weights: Float64Array
    context: Float64Array
    # intermediate quantities the gradient bounds reuse
    weight_error: Float64Array
    lse: Float64Array = field(default_factory=lambda: np.zeros((0,)))

    @classmethod
    def of_result(cls, bound: Float64Array, /) -> Bounds:
        """The bounds of a step function's one result."""
        empty = np.zeros((0,))
        return cls(weights=empty, context=bound, weight_error=empty)

    @property
    def result(self) -> Float64Array:
        """The bound on a step function's result (held in ``context``)."""
        return self.context


@dataclass(frozen=True)
class GradientBounds:
    """Error bounds of the gradients w.r.t. query, keys and values, and the sinks
    (``[..., H]`` before the batch is summed; ``None`` without sinks)."""

    query: Float64Array
    key: Float64Array
    value: Float64Array
    sinks: Float64Array | None = None


def _log_sum_exp_others(x: Float64Array) -> Float64Array:
    """``log sum_{l != j} exp(x_l)`` for every ``j`` of the last axis (``-inf`` entries allowed).

    Computed from the full sum minus the own term, except at the row maximum,
    where the others are summed directly: the subtraction then never cancels.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(x - m)  # [..., Tk], max entry 1
        total = e.sum(axis=-1, keepdims=True)
        top = np.argmax(x, axis=-1)[..., None]
        others = total - e
        exact_top = np.sum(np.where(np.arange(x.shape[-1]) == top, 0.0, e), axis=-1, keepdims=True)
        np.put_along_axis(others, top, exact_top, axis=-1)
        result: Float64Array = np.log(np.maximum(others, 0.0)) + m
        return result


def _weight_error(
    terms: Terms, weights: Float64Array, allowed: npt.NDArray[np.bool_], precision: Precision
) -> Float64Array:
    """Bound on ``|w_hat - w|`` before the weights are stored (see the module docstring)."""
    return _softmax_error(terms.scores, terms.score_error, weights, allowed, precision)


def _exponent_error(
    scores: Float64Array,
    score_error: Float64Array,
    allowed: npt.NDArray[np.bool_],
    precision: Precision,
    *,
    per_row: bool,
) -> tuple[Float64Array, Float64Array, Float64Array | int]:
    """``(a, shift, n)``: the bound :math:`a_{ij}` on the error of each exponent a softmax
    takes (0 where not allowed), the magnitude its shift rounds relative to, and the count
    of terms of each row's sum (``Tk``, or the allowed keys of each row with ``per_row``)."""
    t_k: Float64Array | int = scores.shape[-1]
    if per_row:
        t_k = np.maximum(np.sum(allowed, axis=-1, keepdims=True), 1).astype(np.float64)
    s = np.where(allowed, scores, -np.inf)
    row_max = np.max(s, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    u = unit_roundoff(precision.accumulation)
    # the shift by the row maximum (or by a saved log-sum-exp, whose exponent the kernel
    # may expose as its weights) rounds relative to |s| + |m| + log Tk
    with np.errstate(invalid="ignore"):
        shift = 2 * (np.abs(np.where(allowed, scores, 0.0)) + np.abs(row_max)) + np.log(t_k)
    a = np.where(allowed, score_error + u * (shift + 2 * EXP_ULPS), 0.0)
    return a, shift, t_k


def _row_log_sum_exp(x: Float64Array) -> Float64Array:
    """``log sum exp`` over the last axis, ``-inf`` for a row of ``-inf`` only."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        result: Float64Array = np.log(np.sum(np.exp(x - m), axis=-1)) + m[..., 0]
    return result


def log_sum_exp_error(
    scores: Float64Array,
    score_error: Float64Array,
    lse: Float64Array,
    allowed: npt.NDArray[np.bool_],
    precision: Precision,
    *,
    per_row: bool = False,
) -> Float64Array:
    r"""Bound on each row's computed log-sum-exp :math:`\hat\ell_i` (``[..., Tq]``).

    The log-sum-exp is increasing in every exponent, so exponents off by at most
    :math:`a_j` (:func:`_exponent_error`: the score's error, its shift and ``exp``) give
    :math:`\ell(s - a) \le \hat\ell \le \ell(s + a)`, both evaluated here in log space.
    The sum of :math:`n` positive terms has relative error :math:`\gamma_{2n + 4}(A)`
    (an online softmax's rescalings included, as for the weights), which the logarithm
    turns into that absolute error; adding back the shift and storing round relative to
    :math:`|\ell|`: :math:`(u_A + u_T)|\ell|`. A row with no allowed term has
    :math:`-\infty` exactly: bound 0.
    """
    a, _, t_k = _exponent_error(scores, score_error, allowed, precision, per_row=per_row)
    s = np.where(allowed, scores, -np.inf)
    with np.errstate(invalid="ignore"):
        high = _row_log_sum_exp(np.where(allowed, s + a, -np.inf)) - lse
        low = lse - _row_log_sum_exp(np.where(allowed, s - a, -np.inf))
    live = allowed.any(axis=-1)
    spread = np.where(live, np.maximum(high, low), 0.0)
    n = t_k if isinstance(t_k, int) else t_k[..., 0]
    finite = np.where(live, np.abs(lse), 0.0)
    u_a, u_t = unit_roundoff(precision.accumulation), unit_roundoff(precision.storage)
    roundings = np.where(live, _gammas(2 * n + 4, precision.accumulation), 0.0)
    return np.asarray(spread + roundings + (u_a + u_t) * finite, dtype=np.float64)


def _softmax_error(
    scores: Float64Array,
    score_error: Float64Array,
    weights: Float64Array,
    allowed: npt.NDArray[np.bool_],
    precision: Precision,
    *,
    per_row: bool = False,
) -> Float64Array:
    """Bound on ``|w_hat - w|`` of a softmax over ``allowed`` of scores off by ``score_error``.

    With ``per_row`` the sums count the allowed keys of each row rather than
    ``Tk``: a disallowed key adds an exact 0 to a sum, and rescales an online
    softmax's running sum by an exact 1, so only allowed keys round (the
    steps use it; a local window sums at most ``2 D + 1`` keys).
    """
    acc = precision.accumulation
    u = unit_roundoff(acc)
    a, shift, t_k = _exponent_error(scores, score_error, allowed, precision, per_row=per_row)
    s = np.where(allowed, scores, 0.0)  # unread scores (poison) reach no bound
    with np.errstate(invalid="ignore", over="ignore"):
        low_others = _log_sum_exp_others(np.where(allowed, s + a, -np.inf))
        high_others = _log_sum_exp_others(np.where(allowed, s - a, -np.inf))
        # w_j lies between 1 / (1 + exp(L)) for L = lse_{l != j}(s_l +- a_l) - s_j +- a_j
        low = 1.0 / (1.0 + np.exp(low_others - s + a))
        high = 1.0 / (1.0 + np.exp(high_others - s - a))
    live = np.where(allowed, weights, 0.0)
    spread = np.maximum(high - live, live - low)
    spread = np.where(allowed, np.nan_to_num(spread, nan=1.0, posinf=1.0), 0.0)
    normalise = _gammas(2 * t_k + 4, acc) * weights
    # Note: a kernel that exposes its weights as exp(s - lse) with a saved log-sum-exp
    # rounds that exponent once more, a relative error no correlation cancels.
    exponent = u * (shift + 2 * EXP_ULPS) * weights
    return np.minimum(spread, 1.0) + normalise + np.where(allowed, exponent, 0.0)


def output_bounds(
    terms: Terms,
    weights: Float64Array,
    values: Float64Array,
    context: Float64Array,
    allowed: npt.NDArray[np.bool_],
    precision: Precision,
) -> Bounds:
    """Bounds on the returned weights and context.

    ``weights`` and ``context`` are the truth (a declared convention
    applied; NaN rows read as 0), ``values`` is ``[..., Tk, d_v]`` broadcast
    to the weights' batch shape, ``allowed`` the positions the softmax may
    use (``False`` everywhere in a fully masked row).
    """
    w = np.nan_to_num(weights)
    c = np.nan_to_num(context)
    dw = _weight_error(terms, w, allowed, precision)  # [..., Tq, Tk]
    u_t = unit_roundoff(precision.storage)
    t_k = w.shape[-1]
    abs_v = np.abs(values)
    stored = dw + precision.rounds_between * w  # the weights as the weighted sum reads them
    context_error = (
        stored @ abs_v + _gamma(2 * t_k + 4, precision.accumulation) * (w @ abs_v) + u_t * np.abs(c)
    )
    return Bounds(weights=dw + u_t * w, context=context_error, weight_error=stored)


def gradient_bounds(
    terms: Terms,
    forward: Bounds,
    weights: Float64Array,
    live_weights: Float64Array,
    values: Float64Array,
    context: Float64Array,
    cotangent: Float64Array,
    precision: Precision,
    *,
    groups: int,
    unread_keys: bool,
    sink: bool = False,
) -> GradientBounds:
    """Bounds on the gradients of ``sum(context * cotangent)``.

    ``weights`` are the truth's weights (a ``uniform`` convention's rows
    included, they feed ``dV``); ``live_weights`` are zero on fully masked
    rows, which do not depend on the scores. Query-head arrays are folded to
    the key heads by summing over ``groups`` consecutive heads. With
    ``unread_keys`` the keys do not enter the scores (location score).

    With ``sink`` the last key column is each row's sink (:meth:`Terms.with_sink`,
    a zero value row): its :math:`dS_{i\\sigma} = \\beta_i (0 - D_i)` summed over the
    rows of a head is the sink's gradient, off by the sum of those entries' errors
    plus :math:`\\gamma_{n + 2}(A)` of the magnitudes for the :math:`n` rows of the sum
    (a batch's too) and the storage rounding.
    """
    acc = precision.accumulation
    u_t = unit_roundoff(precision.storage)
    # Note: the implementation's autodiff casts the float64 cotangent to its dtype.
    u_g = 0.0 if precision.storage == "float64" else u_t
    between = precision.rounds_between
    w = np.nan_to_num(weights)
    p = np.nan_to_num(live_weights)
    t_q, t_k = w.shape[-2], w.shape[-1]
    d_v = values.shape[-1]
    g = cotangent
    abs_g, abs_v = np.abs(g), np.abs(values)
    c = np.nan_to_num(context)
    # The backward recomputes the weights from the saved log-sum-exp: one more
    # shift and exp, each relative to the magnitude of the exponent's parts.
    lse_part = (
        np.abs(terms.scores) + np.abs(np.max(np.where(p > 0, terms.scores, 0.0), -1))[..., None]
    )
    dp_w = forward.weight_error + unit_roundoff(acc) * (3 * lse_part + 2 * EXP_ULPS) * p
    dp_w = np.where(p > 0, dp_w, 0.0)

    dP = g @ np.swapaxes(values, -1, -2)  # [..., Tq, Tk]
    dP_terms = abs_g @ np.swapaxes(abs_v, -1, -2)
    dP_err = (_gamma(d_v + 1, acc) + u_g) * dP_terms
    D = np.sum(g * c, axis=-1, keepdims=True)  # [..., Tq, 1]
    via_weights = np.sum(dp_w * np.abs(dP) + p * dP_err, axis=-1, keepdims=True) + _gamma(
        t_k + 1, acc
    ) * np.sum(p * np.abs(dP), axis=-1, keepdims=True)
    via_output = np.sum(abs_g * forward.context, axis=-1, keepdims=True) + (
        _gamma(d_v + 1, acc) + u_g
    ) * np.sum(abs_g * np.abs(c), axis=-1, keepdims=True)
    D_err = np.maximum(via_weights, via_output)
    centred = np.abs(dP - D)
    dS = p * centred
    dS_err = dp_w * centred + p * (dP_err + D_err) + (unit_roundoff(acc) + between) * dS

    gq, gk = terms.grad_query, terms.grad_key
    n_q = _gamma(t_k + 2, acc) + between
    query = dS_err @ gq + n_q * (dS @ gq) + dS @ terms.grad_query_error
    query = query + u_t * np.abs(dS @ gq)
    n_k = _gamma(t_q * groups + 2, acc) + between
    dS_t, dS_err_t = np.swapaxes(dS, -1, -2), np.swapaxes(dS_err, -1, -2)
    key = dS_err_t @ gk + n_k * (dS_t @ gk) + dS_t @ terms.grad_key_error
    if unread_keys:
        key = np.zeros_like(key)
    w_t, dp_w_t = np.swapaxes(w, -1, -2), np.swapaxes(dp_w + between * p, -1, -2)
    value = dp_w_t @ abs_g + (_gamma(t_q * groups + 2, acc) + u_g) * (w_t @ abs_g)
    key = key + u_t * (dS_t @ gk)  # rounding to the storage dtype, relative to the magnitude
    value = value + u_t * (w_t @ abs_g)
    sinks = None
    if sink:
        # The rows of one head, over the batch too: sinks have a head axis (-3).
        rows = math.prod(dS.shape[:-3]) * dS.shape[-2]
        sinks = dS_err[..., -1].sum(axis=-1) + (_gamma(rows + 2, acc) + between + u_t) * dS[
            ..., -1
        ].sum(axis=-1)
        key, value = key[..., :-1, :], value[..., :-1, :]  # the sink's own row: no key
    return GradientBounds(
        query=query, key=_fold_groups(key, groups), value=_fold_groups(value, groups), sinks=sinks
    )


def _fold_groups(x: Float64Array, groups: int) -> Float64Array:
    """Sum consecutive query heads into their key head (``[..., Hq, T, n] -> [..., Hk, T, n]``)."""
    if groups == 1:
        return x
    lead, heads, rest = x.shape[:-3], x.shape[-3], x.shape[-2:]
    return np.asarray(x.reshape(*lead, heads // groups, groups, *rest).sum(axis=-3))


def _capped(
    scores: Float64Array, error: Float64Array, cap: float, u: float
) -> tuple[Float64Array, Float64Array, float]:
    r"""Scores ``t = c tanh(s / c)`` (``sdpa.softcap``), their error bound, and the bound on
    the relative error of the slope :math:`\partial t / \partial s` a backward computes.

    Computed as :math:`\hat t = \mathrm{fl}(c\, \mathrm{fl}(\tanh(\mathrm{fl}(\hat s / c))))`
    from a score :math:`\hat s` within :math:`a` of :math:`s`:

    - the exact map has slope :math:`\operatorname{sech}^2 \le 1`, so it moves by at most
      :math:`a`;
    - the division rounds :math:`\hat s / c` by :math:`u |\hat s| / c`, which moves
      :math:`t` by at most :math:`u (|s| + a)`;
    - ``tanh`` rounds relative to its value (``EXP_ULPS`` ulps), the product by :math:`c`
      once more, each relative to :math:`|\hat t| \le |t| + a + u(|s| + a)`.

    A backward multiplies by :math:`1 - \tanh^2(\hat s / c)`; the derivative of
    :math:`\operatorname{sech}^2(x)` is at most :math:`4 / (3 \sqrt 3) < 0.77` in size, so
    the computed slope is off by at most :math:`0.77 \max a / c` plus the rounding of
    :math:`\tanh`, its square and the subtraction, :math:`(2\,\mathrm{EXP\_ULPS} + 4) u`;
    the slope itself is at most 1, so the unscaled partial derivatives still bound the
    capped ones.
    """
    t = cap * np.tanh(scores / cap)
    moved = error + u * (np.abs(scores) + error)
    capped_error = moved + (EXP_ULPS + 1) * u * (np.abs(t) + moved)
    slope = 0.77 * float(np.max(capped_error, initial=0.0)) / cap + (2 * EXP_ULPS + 4) * u
    return t, capped_error, slope


def score_terms(
    kind: str,
    query: Float64Array,
    key: Float64Array,
    params: dict[str, Float64Array],
    scale: float,
    additive: Float64Array,
    precision: Precision,
    *,
    softcap: float | None = None,
) -> Terms:
    """The :class:`Terms` of a score of ``kind`` (``scale`` multiplies dot-product scores).

    ``query`` is ``[..., Tq, d_q]`` and ``key`` ``[..., Tk, d_k]`` with equal
    batch shapes; ``additive`` is the additive mask (0 where there is none),
    broadcast to ``[..., Tq, Tk]``; ``softcap`` caps dot-product scores before
    the mask is added (:func:`_capped`).
    """
    acc = precision.accumulation
    u = unit_roundoff(acc)
    abs_q, abs_k = np.abs(query), np.abs(key)
    t_q, t_k = query.shape[-2], key.shape[-2]
    d_q, d_k = query.shape[-1], key.shape[-1]
    lead = np.broadcast_shapes(query.shape[:-2], key.shape[:-2])
    zeros_q = np.zeros((*lead, t_k, d_q))
    zeros_k = np.zeros((*lead, t_q, d_k))
    key_t, abs_key_t = np.swapaxes(key, -1, -2), np.swapaxes(abs_k, -1, -2)
    if kind in ("dot", "scaled_dot"):
        lam = abs(scale)
        scores = scale * (query @ key_t)
        magnitude = lam * (abs_q @ abs_key_t)
        error = _gamma(d_q + 2, acc) * magnitude
        gq = lam * np.broadcast_to(abs_k, zeros_q.shape)
        gk = lam * np.broadcast_to(abs_q, zeros_k.shape)
        gq_error, gk_error = u * gq, u * gk
        if softcap is not None:
            scores, error, slope = _capped(scores, error, softcap, u)
            gq_error, gk_error = gq_error + slope * gq, gk_error + slope * gk
        return Terms(
            scores + additive, error + 2 * u * np.abs(additive), gq, gk, gq_error, gk_error
        )
    if kind == "general":
        w = params["W_a"]
        abs_w = np.abs(w)
        scores = (query @ w) @ key_t
        magnitude = (abs_q @ abs_w) @ abs_key_t
        error = _gamma(d_q + d_k + 1, acc) * magnitude
        gq = np.broadcast_to(abs_k @ abs_w.T, zeros_q.shape)
        gk = np.broadcast_to(abs_q @ abs_w, zeros_k.shape)
        return Terms(
            scores + additive,
            error + 2 * u * np.abs(additive),
            gq,
            gk,
            _gamma(d_k, acc) * gq,
            _gamma(d_q, acc) * gk,
        )
    if kind == "location":
        w = params["W_a"]  # [Tk, d_q]
        abs_w = np.abs(w)
        scores = query @ w.T
        error = _gamma(d_q + 1, acc) * (abs_q @ abs_w.T)
        gq = np.broadcast_to(abs_w, zeros_q.shape)
        return Terms(
            scores + additive, error + 2 * u * np.abs(additive), gq, zeros_k, zeros_q, zeros_k
        )
    # additive and concat: v_a . tanh(W_q q + W_k k) (concat splits W_a = [W_q W_k])
    if kind == "concat":
        w_q, w_k = params["W_a"][:, :d_q], params["W_a"][:, d_q:]
    else:
        w_q, w_k = params["W_q"], params["W_k"]
    v = params["v_a"]
    abs_v = np.abs(v)
    hq, hk = query @ w_q.T, key @ w_k.T  # [..., Tq, d_a], [..., Tk, d_a]
    scores = np.tanh(hq[..., :, None, :] + hk[..., None, :, :]) @ v  # [..., Tq, Tk]
    n_z = _gamma(max(d_q, d_k) + 1, acc)
    zq, zk = abs_q @ np.abs(w_q).T, abs_k @ np.abs(w_k).T  # magnitudes of W_q q, W_k k
    d_a = v.shape[-1]
    tanh_error = _gamma(d_a + 1, acc) + 2 * EXP_ULPS * u
    error = n_z * ((zq @ abs_v)[..., :, None] + (zk @ abs_v)[..., None, :]) + tanh_error * float(
        abs_v.sum()
    )
    z_max = n_z * (np.max(zq, axis=-2, keepdims=True) + np.max(zk, axis=-2, keepdims=True))
    # |d tanh^2 / dz| = 2 |tanh| sech^2 <= 0.77, so sech^2 moves by at most 0.77 dz
    slope = abs_v * (0.77 * z_max + 2 * EXP_ULPS * u)  # [..., 1, d_a]
    gq = np.broadcast_to(abs_v @ np.abs(w_q), zeros_q.shape)
    gk = np.broadcast_to(abs_v @ np.abs(w_k), zeros_k.shape)
    gq_error = np.broadcast_to(slope @ np.abs(w_q), zeros_q.shape) + _gamma(d_a + 1, acc) * gq
    gk_error = np.broadcast_to(slope @ np.abs(w_k), zeros_k.shape) + _gamma(d_a + 1, acc) * gk
    return Terms(scores + additive, error + 2 * u * np.abs(additive), gq, gk, gq_error, gk_error)


# --- steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalBounds:
    """Forward error bounds of a local distribution, and what its gradient bounds reuse.

    Attributes
    ----------
    result
        The bound on the returned weights.
    softmax_error
        :math:`\\delta w + b w`: the window softmax's error before the Gaussian
        (before storage, for local-m).
    gaussian_error
        :math:`\\delta g` (zeros for local-m).
    """

    result: Float64Array
    softmax_error: Float64Array
    gaussian_error: Float64Array


def local_m_bounds(
    scores: Float64Array,
    weights: Float64Array,
    allowed: npt.NDArray[np.bool_],
    precision: Precision,
) -> LocalBounds:
    """Bounds of a window softmax: scores exact, normalised over ``allowed`` (window and mask).

    ``scores`` and ``weights`` are ``[..., Tq, Tk]``, ``weights`` the truth.
    """
    error = _softmax_error(
        scores, np.zeros(scores.shape), weights, allowed, precision, per_row=True
    )
    zeros = np.zeros(weights.shape)
    return LocalBounds(error + unit_roundoff(precision.storage) * weights, error, zeros)


def local_p_bounds(
    scores: Float64Array,
    window_weights: Float64Array,
    gaussian: Float64Array,
    exponent: Float64Array,
    allowed: npt.NDArray[np.bool_],
    precision: Precision,
) -> LocalBounds:
    """Bounds of local-p's :math:`\\alpha = w g` (see the module docstring, *Local-p*).

    ``window_weights`` is the truth's window softmax ``w``, ``gaussian`` its
    ``g`` and ``exponent`` its ``x = (j - p)^2 / (2 sigma^2)``, all
    ``[..., Tq, Tk]`` and 0 outside ``allowed``.
    """
    acc = precision.accumulation
    u_a = unit_roundoff(acc)
    w = np.where(allowed, window_weights, 0.0)
    g = np.where(allowed, gaussian, 0.0)
    x = np.where(allowed, exponent, 0.0)
    softmax = _softmax_error(scores, np.zeros(scores.shape), w, allowed, precision, per_row=True)
    softmax = np.where(allowed, softmax + precision.rounds_between * w, 0.0)
    grown = np.exp(_gamma(GAUSSIAN_ROUNDINGS, acc) * x)
    dg = g * (np.expm1(_gamma(GAUSSIAN_ROUNDINGS, acc) * x) + EXP_ULPS * u_a * grown)
    alpha = w * g
    result = softmax * g + w * dg + (u_a + unit_roundoff(precision.storage)) * alpha
    return LocalBounds(result, softmax, dg)


def local_gradient_bounds(
    forward: LocalBounds,
    window_weights: Float64Array,
    gaussian: Float64Array | None,
    offsets: Float64Array | None,
    half_width: int,
    cotangent: Float64Array,
    precision: Precision,
) -> dict[str, Float64Array]:
    """Bounds on the gradients of ``sum(result * cotangent)`` of a local distribution.

    ``window_weights`` is the truth's window softmax, 0 outside the allowed
    set; ``gaussian`` and ``offsets`` (``j - p``) are given for local-p, whose
    bounds include ``positions`` (``[..., Tq]``, before any batch sum). See
    the module docstring, *Local gradients*.
    """
    acc = precision.accumulation
    u_t = unit_roundoff(precision.storage)
    u_g = 0.0 if precision.storage == "float64" else u_t
    # the sums run over each row's window (a disallowed key adds an exact 0)
    n = np.maximum(np.sum(window_weights > 0, axis=-1, keepdims=True), 1)  # [..., Tq, 1]
    w = window_weights
    dw = forward.softmax_error
    c = cotangent
    if gaussian is None:
        bar = c
        d_bar = u_g * np.abs(c)
    else:
        bar = c * gaussian
        d_bar = np.abs(c) * (forward.gaussian_error + (u_g + unit_roundoff(acc)) * gaussian)
    abs_bar = np.abs(bar)
    D = np.sum(w * bar, axis=-1, keepdims=True)  # [..., Tq, 1]
    dD = np.sum(dw * abs_bar + w * d_bar, axis=-1, keepdims=True) + _gammas(n, acc) * np.sum(
        w * abs_bar, axis=-1, keepdims=True
    )
    centred = np.abs(bar - D)
    magnitude = abs_bar + np.sum(w * abs_bar, axis=-1, keepdims=True)
    scores = dw * centred + w * (d_bar + dD) + _gammas(n + 4, acc) * w * magnitude
    bounds = {"scores": scores + u_t * w * centred}
    if gaussian is not None and offsets is not None:
        sigma2 = (half_width / 2) ** 2
        alpha = w * gaussian
        coefficient = _gammas(n + 6, acc) + u_g
        terms = np.abs(c) * np.abs(offsets) * (forward.result + coefficient * alpha) / sigma2
        exact = np.abs(np.sum(c * alpha * offsets, axis=-1)) / sigma2
        bounds["positions"] = np.asarray(terms.sum(axis=-1) + u_t * exact, dtype=np.float64)
    return bounds


def softmax_step_error(
    logits: Float64Array,
    logit_error: Float64Array,
    weights: Float64Array,
    allowed: npt.NDArray[np.bool_],
    precision: Precision,
) -> Float64Array:
    """Bound on a stored softmax over ``allowed`` of logits off by ``logit_error``."""
    error = _softmax_error(logits, logit_error, weights, allowed, precision, per_row=True)
    return error + unit_roundoff(precision.storage) * weights


def weighted_sum_error(
    weights: Float64Array, values: Float64Array, context: Float64Array, precision: Precision
) -> Float64Array:
    """Bound on ``weights @ values`` from exact inputs (``values``: the rows that are read)."""
    t_k = weights.shape[-1]
    magnitude = np.abs(weights) @ np.abs(values)
    return _gamma(t_k, precision.accumulation) * magnitude + unit_roundoff(
        precision.storage
    ) * np.abs(context)


def _tanh_error(pre: Float64Array, pre_error: Float64Array, precision: Precision) -> Float64Array:
    """Bound on ``tanh`` of a pre-activation off by ``pre_error``, before storage."""
    slope = 1.0 - np.tanh(np.maximum(np.abs(pre) - pre_error, 0.0)) ** 2
    h = np.abs(np.tanh(pre))
    return slope * pre_error + (EXP_ULPS * unit_roundoff(precision.accumulation)) * h


def dense_tanh_error(
    weight: Float64Array,
    inputs: Float64Array,
    bias: Float64Array | None,
    precision: Precision,
) -> Float64Array:
    """Bound on ``tanh(inputs @ weight.T + bias)`` from exact inputs, stored.

    ``weight`` is ``[d_h, n]``, ``inputs`` ``[..., n]``.
    """
    n = weight.shape[-1]
    pre = inputs @ weight.T + (0.0 if bias is None else bias)
    magnitude = np.abs(inputs) @ np.abs(weight).T + (0.0 if bias is None else np.abs(bias))
    pre_error = _gamma(n + 1, precision.accumulation) * magnitude
    pre_error = pre_error + precision.rounds_between * np.abs(pre)
    error = _tanh_error(pre, pre_error, precision)
    return error + unit_roundoff(precision.storage) * np.abs(np.tanh(pre))


def dense_logit_error(
    weight: Float64Array, inputs: Float64Array, bias: Float64Array | None, precision: Precision
) -> Float64Array:
    """Bound on the logits ``inputs @ weight.T + bias`` as a softmax reads them."""
    n = weight.shape[-1]
    logits = inputs @ weight.T + (0.0 if bias is None else bias)
    magnitude = np.abs(inputs) @ np.abs(weight).T + (0.0 if bias is None else np.abs(bias))
    result: Float64Array = _gamma(n + 1, precision.accumulation) * magnitude
    return result + precision.rounds_between * np.abs(logits)


def position_error(
    query: Float64Array,
    weight: Float64Array,
    vector: Float64Array,
    source_length: int,
    precision: Precision,
) -> Float64Array:
    """Bound on ``(S - 1) sigmoid(v . tanh(W s))`` from exact inputs, stored (``[..., Tq]``)."""
    acc = precision.accumulation
    u_a = unit_roundoff(acc)
    between = precision.rounds_between
    d_q, d_p = weight.shape[-1], weight.shape[0]
    pre = query @ weight.T  # [..., Tq, d_p]
    pre_error = _gamma(d_q, acc) * (np.abs(query) @ np.abs(weight).T) + between * np.abs(pre)
    hidden = np.tanh(pre)
    hidden_error = _tanh_error(pre, pre_error, precision) + between * np.abs(hidden)
    logit = hidden @ vector  # [..., Tq]
    abs_v = np.abs(vector)
    logit_error = (
        hidden_error @ abs_v + _gamma(d_p, acc) * (np.abs(hidden) @ abs_v) + between * np.abs(logit)
    )
    with np.errstate(over="ignore"):
        sigma = 1.0 / (1.0 + np.exp(-logit))
        slope = sigma / (1.0 + np.exp(logit))  # sigma(y) sigma(-y), no cancellation
        widest = np.minimum(0.25, slope * np.exp(2 * np.minimum(logit_error, 350.0)))
    moved = np.minimum(widest * logit_error, 1.0)
    scale = source_length - 1
    error = scale * (moved + (EXP_ULPS + 3) * u_a * (sigma + moved))
    result: Float64Array = error + unit_roundoff(precision.storage) * scale * sigma
    return result
