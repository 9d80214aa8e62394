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

``SAFETY`` covers the second-order terms the first-order propagation drops.
The bounds are worst cases over summation orders, so a sound kernel sits well
below them (the oracle's tests show the naive evaluation in every dtype at a
fraction of the bound), while a float64 kernel that computes in float32 is
off by about :math:`10^{-7}` relative, millions of times its allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "EPSILON",
    "EXP_ULPS",
    "SAFETY",
    "Bounds",
    "GradientBounds",
    "Precision",
    "Terms",
    "gamma",
    "gradient_bounds",
    "output_bounds",
    "score_terms",
    "truth_dtype",
    "underflow_floor",
    "unit_roundoff",
]

Float64Array = npt.NDArray[np.float64]

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


@dataclass(frozen=True)
class Bounds:
    """Forward error bounds, element by element."""

    weights: Float64Array
    context: Float64Array
    # intermediate quantities the gradient bounds reuse
    weight_error: Float64Array


@dataclass(frozen=True)
class GradientBounds:
    """Error bounds of the gradients w.r.t. query, keys and values."""

    query: Float64Array
    key: Float64Array
    value: Float64Array


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
    acc = precision.accumulation
    t_k = weights.shape[-1]
    s = np.where(allowed, terms.scores, -np.inf)
    row_max = np.max(s, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    u = unit_roundoff(acc)
    # the shift by the row maximum (or by a saved log-sum-exp, whose exponent the kernel
    # may expose as its weights) rounds relative to |s| + |m| + log Tk
    shift = 2 * (np.abs(terms.scores) + np.abs(row_max)) + np.log(t_k)
    a = terms.score_error + u * (shift + 2 * EXP_ULPS)
    a = np.where(allowed, a, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        low_others = _log_sum_exp_others(np.where(allowed, terms.scores + a, -np.inf))
        high_others = _log_sum_exp_others(np.where(allowed, terms.scores - a, -np.inf))
        # w_j lies between 1 / (1 + exp(L)) for L = lse_{l != j}(s_l +- a_l) - s_j +- a_j
        low = 1.0 / (1.0 + np.exp(low_others - terms.scores + a))
        high = 1.0 / (1.0 + np.exp(high_others - terms.scores - a))
    live = np.where(allowed, weights, 0.0)
    spread = np.maximum(high - live, live - low)
    spread = np.where(allowed, np.nan_to_num(spread, nan=1.0, posinf=1.0), 0.0)
    normalise = gamma(2 * t_k + 4, acc) * weights
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
        stored @ abs_v + gamma(2 * t_k + 4, precision.accumulation) * (w @ abs_v) + u_t * np.abs(c)
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
) -> GradientBounds:
    """Bounds on the gradients of ``sum(context * cotangent)``.

    ``weights`` are the truth's weights (a ``uniform`` convention's rows
    included, they feed ``dV``); ``live_weights`` are zero on fully masked
    rows, which do not depend on the scores. Query-head arrays are folded to
    the key heads by summing over ``groups`` consecutive heads. With
    ``unread_keys`` the keys do not enter the scores (location score).
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
    dP_err = (gamma(d_v + 1, acc) + u_g) * dP_terms
    D = np.sum(g * c, axis=-1, keepdims=True)  # [..., Tq, 1]
    via_weights = np.sum(dp_w * np.abs(dP) + p * dP_err, axis=-1, keepdims=True) + gamma(
        t_k + 1, acc
    ) * np.sum(p * np.abs(dP), axis=-1, keepdims=True)
    via_output = np.sum(abs_g * forward.context, axis=-1, keepdims=True) + (
        gamma(d_v + 1, acc) + u_g
    ) * np.sum(abs_g * np.abs(c), axis=-1, keepdims=True)
    D_err = np.maximum(via_weights, via_output)
    centred = np.abs(dP - D)
    dS = p * centred
    dS_err = dp_w * centred + p * (dP_err + D_err) + (unit_roundoff(acc) + between) * dS

    gq, gk = terms.grad_query, terms.grad_key
    n_q = gamma(t_k + 2, acc) + between
    query = dS_err @ gq + n_q * (dS @ gq) + dS @ terms.grad_query_error
    query = query + u_t * np.abs(dS @ gq)
    n_k = gamma(t_q * groups + 2, acc) + between
    dS_t, dS_err_t = np.swapaxes(dS, -1, -2), np.swapaxes(dS_err, -1, -2)
    key = dS_err_t @ gk + n_k * (dS_t @ gk) + dS_t @ terms.grad_key_error
    if unread_keys:
        key = np.zeros_like(key)
    w_t, dp_w_t = np.swapaxes(w, -1, -2), np.swapaxes(dp_w + between * p, -1, -2)
    value = dp_w_t @ abs_g + (gamma(t_q * groups + 2, acc) + u_g) * (w_t @ abs_g)
    key = _fold_groups(key, groups)
    value = _fold_groups(value, groups)
    # rounding of the results to the storage dtype, relative to their magnitude
    key = key + u_t * _fold_groups(dS_t @ gk, groups)
    value = value + u_t * _fold_groups(w_t @ abs_g, groups)
    return GradientBounds(query=query, key=key, value=value)


def _fold_groups(x: Float64Array, groups: int) -> Float64Array:
    """Sum consecutive query heads into their key head (``[..., Hq, T, n] -> [..., Hk, T, n]``)."""
    if groups == 1:
        return x
    lead, heads, rest = x.shape[:-3], x.shape[-3], x.shape[-2:]
    return np.asarray(x.reshape(*lead, heads // groups, groups, *rest).sum(axis=-3))


def score_terms(
    kind: str,
    query: Float64Array,
    key: Float64Array,
    params: dict[str, Float64Array],
    scale: float,
    additive: Float64Array,
    precision: Precision,
) -> Terms:
    """The :class:`Terms` of a score of ``kind`` (``scale`` multiplies dot-product scores).

    ``query`` is ``[..., Tq, d_q]`` and ``key`` ``[..., Tk, d_k]`` with equal
    batch shapes; ``additive`` is the additive mask (0 where there is none),
    broadcast to ``[..., Tq, Tk]``.
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
        error = gamma(d_q + 2, acc) * magnitude
        gq = lam * np.broadcast_to(abs_k, zeros_q.shape)
        gk = lam * np.broadcast_to(abs_q, zeros_k.shape)
        return Terms(scores + additive, error + 2 * u * np.abs(additive), gq, gk, u * gq, u * gk)
    if kind == "general":
        w = params["W_a"]
        abs_w = np.abs(w)
        scores = (query @ w) @ key_t
        magnitude = (abs_q @ abs_w) @ abs_key_t
        error = gamma(d_q + d_k + 1, acc) * magnitude
        gq = np.broadcast_to(abs_k @ abs_w.T, zeros_q.shape)
        gk = np.broadcast_to(abs_q @ abs_w, zeros_k.shape)
        return Terms(
            scores + additive,
            error + 2 * u * np.abs(additive),
            gq,
            gk,
            gamma(d_k, acc) * gq,
            gamma(d_q, acc) * gk,
        )
    if kind == "location":
        w = params["W_a"]  # [Tk, d_q]
        abs_w = np.abs(w)
        scores = query @ w.T
        error = gamma(d_q + 1, acc) * (abs_q @ abs_w.T)
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
    n_z = gamma(max(d_q, d_k) + 1, acc)
    zq, zk = abs_q @ np.abs(w_q).T, abs_k @ np.abs(w_k).T  # magnitudes of W_q q, W_k k
    d_a = v.shape[-1]
    tanh_error = gamma(d_a + 1, acc) + 2 * EXP_ULPS * u
    error = n_z * ((zq @ abs_v)[..., :, None] + (zk @ abs_v)[..., None, :]) + tanh_error * float(
        abs_v.sum()
    )
    z_max = n_z * (np.max(zq, axis=-2, keepdims=True) + np.max(zk, axis=-2, keepdims=True))
    # |d tanh^2 / dz| = 2 |tanh| sech^2 <= 0.77, so sech^2 moves by at most 0.77 dz
    slope = abs_v * (0.77 * z_max + 2 * EXP_ULPS * u)  # [..., 1, d_a]
    gq = np.broadcast_to(abs_v @ np.abs(w_q), zeros_q.shape)
    gk = np.broadcast_to(abs_v @ np.abs(w_k), zeros_k.shape)
    gq_error = np.broadcast_to(slope @ np.abs(w_q), zeros_q.shape) + gamma(d_a + 1, acc) * gq
    gk_error = np.broadcast_to(slope @ np.abs(w_k), zeros_k.shape) + gamma(d_a + 1, acc) * gk
    return Terms(scores + additive, error + 2 * u * np.abs(additive), gq, gk, gq_error, gk_error)
