r"""Reverse-mode derivatives of the NumPy reference, exact to rounding: one VJP per step.

For every function ``f`` of :mod:`attnref` there is ``vjp_<f>`` taking the
same positional arrays and the same keyword options as ``f`` plus a required
keyword-only ``cotangent`` :math:`\bar y` shaped like ``f``'s result (a pair
``(context, weights)`` for the composites). It returns a :class:`~typing.NamedTuple`
with one field per array argument, named as the argument, holding
:math:`\bar x = J_f(x)^\top \bar y`, shaped like that argument (summed over
the axes it was broadcast along). A field is ``None`` where the argument was
``None`` (an omitted bias, a score parameter the kind does not take).

>>> import numpy as np
>>> from attnref.vjp import vjp_score_dot
>>> q, k = np.array([[1.0, 2.0]]), np.array([[3.0, 4.0], [5.0, 6.0]])
>>> vjp_score_dot(q, k, cotangent=np.array([[1.0, 0.0]]))
ScoreDotGrads(query=array([[3., 4.]]), keys=array([[1., 2.],
       [0., 0.]]))

The formulas are the textbook ones, cited on each function; the Jacobian of
the softmax :math:`a = \operatorname{softmax}(e)` is
:math:`\partial a / \partial e = \operatorname{diag}(a) - a a^\top`, so its
VJP is :math:`\bar e = a \odot (\bar a - \langle a, \bar a \rangle)`.

Every function calls the forward first, so a bad call raises exactly the
forward's exception, and the cotangent must have exactly the result's shape.
Gradients follow ``input.unread-gradient``: a position that is not read gets
exactly ``0``, a fully masked row gets ``0`` (``distribution.fully-masked-row``),
and NaN or infinities at unread positions never reach a gradient. These
functions are the ground truth the gradients of other implementations are
compared with; they are checked against complex-step differentiation of the
forward in ``tests/test_vjp.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from attnref import _checks, _inputs
from attnref._checks import SCORE_PARAMETERS
from attnref.composite import attention, scaled_dot_product_attention
from attnref.distribution import (
    attention_distribution,
    local_m_distribution,
    local_p_distribution,
    local_p_position,
    log_sum_exp,
    masked_softmax,
)
from attnref.masking import local_p_window
from attnref.output import attentional_hidden_state, output_distribution
from attnref.scores import (
    score_additive,
    score_concat,
    score_dot,
    score_general,
    score_location,
    score_scaled_dot,
)
from attnref.value import attention_value, concatenate_context
from attnspec.errors import ShapeError
from attnspec.typing import Array, BoolArray, CausalAlignment, Mask, Scale, ScoreKind, Window

__all__ = [
    "VJPS",
    "AttentionDistributionGrads",
    "AttentionGrads",
    "AttentionValueGrads",
    "AttentionalHiddenStateGrads",
    "ConcatenateContextGrads",
    "LocalMDistributionGrads",
    "LocalPDistributionGrads",
    "LocalPPositionGrads",
    "LogSumExpGrads",
    "OutputDistributionGrads",
    "ScaledDotProductAttentionGrads",
    "ScoreAdditiveGrads",
    "ScoreConcatGrads",
    "ScoreDotGrads",
    "ScoreGeneralGrads",
    "ScoreLocationGrads",
    "ScoreScaledDotGrads",
    "vjp_attention",
    "vjp_attention_distribution",
    "vjp_attention_value",
    "vjp_attentional_hidden_state",
    "vjp_concatenate_context",
    "vjp_local_m_distribution",
    "vjp_local_p_distribution",
    "vjp_local_p_position",
    "vjp_log_sum_exp",
    "vjp_output_distribution",
    "vjp_scaled_dot_product_attention",
    "vjp_score_additive",
    "vjp_score_concat",
    "vjp_score_dot",
    "vjp_score_general",
    "vjp_score_location",
    "vjp_score_scaled_dot",
]


# --- gradient records, one per spec function -------------------------------------------------


class ScoreDotGrads(NamedTuple):
    """Gradients of :func:`attnref.score_dot`."""

    query: Array
    keys: Array


class ScoreScaledDotGrads(NamedTuple):
    """Gradients of :func:`attnref.score_scaled_dot` (``scale`` is not differentiated)."""

    query: Array
    keys: Array


class ScoreGeneralGrads(NamedTuple):
    """Gradients of :func:`attnref.score_general`."""

    query: Array
    keys: Array
    W_a: Array


class ScoreConcatGrads(NamedTuple):
    """Gradients of :func:`attnref.score_concat`."""

    query: Array
    keys: Array
    W_a: Array
    v_a: Array


class ScoreAdditiveGrads(NamedTuple):
    """Gradients of :func:`attnref.score_additive`."""

    query: Array
    keys: Array
    W_q: Array
    W_k: Array
    v_a: Array


class ScoreLocationGrads(NamedTuple):
    """Gradients of :func:`attnref.score_location`."""

    query: Array
    W_a: Array


class AttentionDistributionGrads(NamedTuple):
    """Gradient of :func:`attnref.attention_distribution` (masks are not differentiated)."""

    scores: Array


class LogSumExpGrads(NamedTuple):
    """Gradient of :func:`attnref.log_sum_exp` (masks are not differentiated)."""

    scores: Array


class LocalMDistributionGrads(NamedTuple):
    """Gradient of :func:`attnref.local_m_distribution`."""

    scores: Array


class LocalPPositionGrads(NamedTuple):
    """Gradients of :func:`attnref.local_p_position`."""

    query: Array
    W_p: Array
    v_p: Array


class LocalPDistributionGrads(NamedTuple):
    """Gradients of :func:`attnref.local_p_distribution`."""

    scores: Array
    positions: Array


class AttentionValueGrads(NamedTuple):
    """Gradients of :func:`attnref.attention_value`."""

    weights: Array
    values: Array


class ConcatenateContextGrads(NamedTuple):
    """Gradients of :func:`attnref.concatenate_context`."""

    context: Array
    query: Array


class AttentionalHiddenStateGrads(NamedTuple):
    """Gradients of :func:`attnref.attentional_hidden_state`; ``b_c`` is ``None`` if omitted."""

    context: Array
    query: Array
    W_c: Array
    b_c: Array | None


class OutputDistributionGrads(NamedTuple):
    """Gradients of :func:`attnref.output_distribution`; ``b_y`` is ``None`` if omitted."""

    attentional_state: Array
    W_y: Array
    b_y: Array | None


class AttentionGrads(NamedTuple):
    """Gradients of :func:`attnref.attention`; a score parameter not given is ``None``."""

    query: Array
    keys: Array
    values: Array
    W_a: Array | None
    W_q: Array | None
    W_k: Array | None
    v_a: Array | None


class ScaledDotProductAttentionGrads(NamedTuple):
    """Gradients of :func:`attnref.scaled_dot_product_attention`.

    ``sinks`` is ``None`` without sinks; ``softcap`` is ``None`` without a cap,
    and otherwise the derivative with respect to the cap :math:`c`, a 0-d
    array (the cap is a keyword number, so its gradient is a number).
    """

    query: Array
    key: Array
    value: Array
    sinks: Array | None = None
    softcap: Array | None = None


# --- helpers ---------------------------------------------------------------------------------


def _cotangent(
    func: str, cotangent: object, shape: tuple[int, ...], /, name: str = "cotangent"
) -> Array:
    """The cotangent as a floating array of exactly the result's ``shape``."""
    c = _inputs.floating(f"vjp_{func}", name, cotangent)
    if c.shape != shape:
        raise ShapeError(
            f"{name}.shape must equal the result's shape {shape} for vjp_{func}; got {c.shape}"
        )
    return c


def _pair(func: str, cotangent: object, context: Array, weights: Array, /) -> tuple[Array, Array]:
    """The ``(context, weights)`` cotangent of a composite."""
    if not isinstance(cotangent, tuple) or len(cotangent) != 2:
        raise ShapeError(
            f"cotangent must be a pair (context, weights) for vjp_{func}; "
            f"got {type(cotangent).__name__}"
        )
    c_context = _cotangent(func, cotangent[0], context.shape, "cotangent[0]")
    c_weights = _cotangent(func, cotangent[1], weights.shape, "cotangent[1]")
    return c_context, c_weights


def _triple(
    func: str, cotangent: object, context: Array, weights: Array, lse: Array, /
) -> tuple[Array, Array, Array]:
    """The ``(context, weights, lse)`` cotangent of SDPA with ``return_lse=True``."""
    if not isinstance(cotangent, tuple) or len(cotangent) != 3:
        raise ShapeError(
            f"cotangent must be a triple (context, weights, lse) for vjp_{func} with "
            f"return_lse=True; got {type(cotangent).__name__}"
        )
    c_context, c_weights = _pair(func, cotangent[:2], context, weights)
    return c_context, c_weights, _cotangent(func, cotangent[2], lse.shape, "cotangent[2]")


def _sum_to(g: Array, shape: tuple[int, ...], /) -> Array:
    """Sum ``g`` over the axes along which an argument of ``shape`` was broadcast to ``g``."""
    # Note: the adjoint of broadcasting is summation over the broadcast axes:
    # leading axes the argument lacks, and axes where it has size 1.
    lead = g.ndim - len(shape)
    if lead > 0:
        g = g.sum(axis=tuple(range(lead)))
    ones = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if ones:
        g = g.sum(axis=ones, keepdims=True)
    return np.broadcast_to(g, shape).copy()  # shape of the argument


def _sum_batch(g: Array, ndim: int, /) -> Array:
    """Sum ``g`` over every leading axis, keeping the last ``ndim`` (shared weight parameters)."""
    lead = g.ndim - ndim
    if lead <= 0:
        return g
    total: Array = g.sum(axis=tuple(range(lead)))
    return total


def _t(x: Array, /) -> Array:
    """Swap the last two axes."""
    return np.swapaxes(x, -1, -2)


def _tanh_derivative(pre: Array, /) -> Array:
    r"""``tanh'(x) = sech^2(x) = 1 / cosh^2(x)`` of the pre-activation ``x``."""
    # Note: not 1 - tanh(x)**2: once tanh(x) rounds near +-1 the subtraction
    # cancels, with relative error eps / sech^2(x) (1e-11 at |x| = 6). cosh**2
    # overflows to inf for |x| > 355, where 1/inf = 0 is the correctly rounded value.
    with np.errstate(over="ignore"):
        derivative: Array = 1 / np.cosh(pre) ** 2
    return derivative


def _sigmoid(x: Array, /) -> Array:
    """The logistic function ``1 / (1 + exp(-x))`` as the forward computes it."""
    with np.errstate(over="ignore"):
        value: Array = 1 / (1 + np.exp(-x))
    return value


def _softmax_backward(a: Array, c: Array, /) -> Array:
    r"""VJP of the softmax over the last axis: :math:`a \odot (c - \langle a, c \rangle)`."""
    # Note: this is (diag(a) - a a^T) c, the softmax Jacobian being symmetric.
    # It is exactly 0 wherever a is exactly 0 (masked, outside the window,
    # fully masked row), so disallowed positions get exactly zero gradient.
    inner = (a * c).sum(axis=-1, keepdims=True)  # [..., Tq, 1]
    g: Array = a * (c - inner)  # [..., Tq, Tk]
    return g


def _dot_backward(q: Array, k: Array, c: Array, /) -> tuple[Array, Array]:
    """``S = Q K^T``: ``Q_bar = C K``, ``K_bar = C^T Q`` (batch-broadcast shapes)."""
    return c @ k, _t(c) @ q  # [..., Tq, d], [..., Tk, d]


def _general_backward(q: Array, k: Array, w: Array, c: Array, /) -> tuple[Array, Array, Array]:
    """``S = Q W K^T``: ``Q_bar = C K W^T``, ``K_bar = C^T Q W``, ``W_bar = sum Q^T C K``."""
    g_q = c @ k @ w.T  # [..., Tq, d_q]
    g_k = _t(c) @ (q @ w)  # [..., Tk, d_k]
    g_w = _sum_batch(_t(q) @ c @ k, 2)  # [d_q, d_k]
    return g_q, g_k, g_w


def _tanh_layer_backward(
    q: Array, k: Array, w_q: Array, w_k: Array, v: Array, c: Array, /
) -> tuple[Array, Array, Array, Array, Array]:
    r"""``S_ij = v^T tanh(W_q s_i + W_k h_j)``; returns the bars of ``q, k, W_q, W_k, v``.

    With :math:`H_{ij} = \tanh(W_q s_i + W_k h_j)` and :math:`\tanh' = 1 - \tanh^2`:
    :math:`\bar v = \sum_{ij} C_{ij} H_{ij}`,
    :math:`P_{ij} = C_{ij}\, v \odot (1 - H_{ij}^2)` (evaluated as :math:`\mathrm{sech}^2`),
    :math:`\bar s_i = W_q^\top \sum_j P_{ij}`, :math:`\bar h_j = W_k^\top \sum_i P_{ij}`,
    :math:`\bar W_q = \sum_i (\sum_j P_{ij}) s_i^\top`, :math:`\bar W_k` likewise.
    """
    hq = q @ w_q.T  # [..., Tq, d_a]
    hk = k @ w_k.T  # [..., Tk, d_a]
    pre = hq[..., :, None, :] + hk[..., None, :, :]  # [..., Tq, Tk, d_a]
    hidden = np.tanh(pre)  # [..., Tq, Tk, d_a]
    g_v = _sum_batch(c[..., None] * hidden, 1)  # [d_a]
    g_pre = c[..., None] * v * _tanh_derivative(pre)  # [..., Tq, Tk, d_a]
    g_hq = g_pre.sum(axis=-2)  # [..., Tq, d_a]
    g_hk = g_pre.sum(axis=-3)  # [..., Tk, d_a]
    g_q = g_hq @ w_q  # [..., Tq, d_q]
    g_k = g_hk @ w_k  # [..., Tk, d_k]
    g_wq = _sum_batch(_t(g_hq) @ q, 2)  # [d_a, d_q]
    g_wk = _sum_batch(_t(g_hk) @ k, 2)  # [d_a, d_k]
    return g_q, g_k, g_wq, g_wk, g_v


def _location_backward(q: Array, w: Array, c: Array, /) -> tuple[Array, Array]:
    """``S = Q W^T``: ``Q_bar = C W``, ``W_bar = sum C^T Q``."""
    return c @ w, _sum_batch(_t(c) @ q, 2)  # [..., Tq, d_q], [Tk, d_q]


# --- step 1: scores --------------------------------------------------------------------------


def vjp_score_dot(query: Array, keys: Array, /, *, cotangent: Array) -> ScoreDotGrads:
    r"""VJP of :func:`attnref.score_dot`, :math:`S = Q K^\top`.

    .. math:: \bar Q = \bar S K, \qquad \bar K = \bar S^\top Q
    """
    scores = score_dot(query, keys)  # [..., Tq, Tk]
    c = _cotangent("score_dot", cotangent, scores.shape)
    q, k = np.asarray(query), np.asarray(keys)
    g_q, g_k = _dot_backward(q, k, c)
    return ScoreDotGrads(_sum_to(g_q, q.shape), _sum_to(g_k, k.shape))


def vjp_score_scaled_dot(
    query: Array, keys: Array, /, *, scale: Scale | None = None, cotangent: Array
) -> ScoreScaledDotGrads:
    r"""VJP of :func:`attnref.score_scaled_dot`, :math:`S = \lambda Q K^\top`.

    .. math:: \bar Q = \lambda \bar S K, \qquad \bar K = \lambda \bar S^\top Q
    """
    scores = score_scaled_dot(query, keys, scale=scale)  # [..., Tq, Tk]
    c = _cotangent("score_scaled_dot", cotangent, scores.shape)
    q, k = np.asarray(query), np.asarray(keys)
    # Note: the same rounded scale as the forward (score.default-scale).
    lam = _scale("score_scaled_dot", scale, k.shape[-1], scores)
    g_q, g_k = _dot_backward(q, k, c * lam)
    return ScoreScaledDotGrads(_sum_to(g_q, q.shape), _sum_to(g_k, k.shape))


def vjp_score_general(
    query: Array, keys: Array, W_a: Array, /, *, cotangent: Array
) -> ScoreGeneralGrads:
    r"""VJP of :func:`attnref.score_general`, :math:`S = Q W_a K^\top`.

    .. math::

        \bar Q = \bar S K W_a^\top, \qquad \bar K = \bar S^\top Q W_a, \qquad
        \bar W_a = \textstyle\sum_{\text{batch}} Q^\top \bar S K
    """
    scores = score_general(query, keys, W_a)  # [..., Tq, Tk]
    c = _cotangent("score_general", cotangent, scores.shape)
    q, k, w = np.asarray(query), np.asarray(keys), np.asarray(W_a)
    g_q, g_k, g_w = _general_backward(q, k, w, c)
    return ScoreGeneralGrads(_sum_to(g_q, q.shape), _sum_to(g_k, k.shape), g_w)


def vjp_score_concat(
    query: Array, keys: Array, W_a: Array, v_a: Array, /, *, cotangent: Array
) -> ScoreConcatGrads:
    r"""VJP of :func:`attnref.score_concat`, :math:`S_{ij} = v_a^\top \tanh(W_a [s_i; h_j])`.

    With :math:`W_a = [W_1\ W_2]` this is the VJP of :func:`vjp_score_additive`,
    and :math:`\bar W_a = [\bar W_1\ \bar W_2]`.
    """
    scores = score_concat(query, keys, W_a, v_a)  # [..., Tq, Tk]
    c = _cotangent("score_concat", cotangent, scores.shape)
    q, k, w, v = (np.asarray(x) for x in (query, keys, W_a, v_a))
    d_q = q.shape[-1]
    g_q, g_k, g_w1, g_w2, g_v = _tanh_layer_backward(q, k, w[:, :d_q], w[:, d_q:], v, c)
    g_w = np.concatenate([g_w1, g_w2], axis=1)  # [d_a, d_q + d_k]
    return ScoreConcatGrads(_sum_to(g_q, q.shape), _sum_to(g_k, k.shape), g_w, g_v)


def vjp_score_additive(
    query: Array, keys: Array, W_q: Array, W_k: Array, v_a: Array, /, *, cotangent: Array
) -> ScoreAdditiveGrads:
    r"""VJP of :func:`attnref.score_additive`, :math:`S_{ij} = v_a^\top \tanh(W_q s_i + W_k h_j)`.

    .. math::

        H_{ij} = \tanh(W_q s_i + W_k h_j), \quad
        P_{ij} = \bar S_{ij}\, v_a \odot (1 - H_{ij}^2), \quad
        \bar v_a = \textstyle\sum_{ij} \bar S_{ij} H_{ij},

        \bar s_i = W_q^\top \textstyle\sum_j P_{ij}, \quad
        \bar h_j = W_k^\top \textstyle\sum_i P_{ij}, \quad
        \bar W_q = \textstyle\sum_i (\sum_j P_{ij})\, s_i^\top, \quad
        \bar W_k = \textstyle\sum_j (\sum_i P_{ij})\, h_j^\top
    """
    scores = score_additive(query, keys, W_q, W_k, v_a)  # [..., Tq, Tk]
    c = _cotangent("score_additive", cotangent, scores.shape)
    q, k, w_q, w_k, v = (np.asarray(x) for x in (query, keys, W_q, W_k, v_a))
    g_q, g_k, g_wq, g_wk, g_v = _tanh_layer_backward(q, k, w_q, w_k, v, c)
    return ScoreAdditiveGrads(_sum_to(g_q, q.shape), _sum_to(g_k, k.shape), g_wq, g_wk, g_v)


def vjp_score_location(query: Array, W_a: Array, /, *, cotangent: Array) -> ScoreLocationGrads:
    r"""VJP of :func:`attnref.score_location`, :math:`S = Q W_a^\top`.

    .. math:: \bar Q = \bar S W_a, \qquad \bar W_a = \textstyle\sum_{\text{batch}} \bar S^\top Q
    """
    scores = score_location(query, W_a)  # [..., Tq, Tk]
    c = _cotangent("score_location", cotangent, scores.shape)
    q, w = np.asarray(query), np.asarray(W_a)
    g_q, g_w = _location_backward(q, w, c)
    return ScoreLocationGrads(_sum_to(g_q, q.shape), g_w)


# --- step 2: distributions -------------------------------------------------------------------


def vjp_attention_distribution(
    scores: Array, /, *, mask: Mask | None = None, cotangent: Array
) -> AttentionDistributionGrads:
    r"""VJP of :func:`attnref.attention_distribution`, the masked softmax.

    The softmax Jacobian of a row is :math:`\operatorname{diag}(\alpha) - \alpha\alpha^\top`,
    symmetric, so

    .. math::

        \bar e_{ij} = \alpha_{ij}
            \left(\bar\alpha_{ij} - \textstyle\sum_k \alpha_{ik} \bar\alpha_{ik}\right)

    An additive mask enters as :math:`e + m`, so the same bar is the
    gradient of the scores. Disallowed positions (:math:`\alpha_{ij} = 0`) and
    fully masked rows get exactly zero.
    """
    weights = attention_distribution(scores, mask=mask)  # [..., Tq, Tk]
    c = _cotangent("attention_distribution", cotangent, weights.shape)
    g = _softmax_backward(weights, c)  # [..., Tq, Tk]
    return AttentionDistributionGrads(_sum_to(g, np.shape(scores)))


def vjp_log_sum_exp(
    scores: Array, /, *, mask: Mask | None = None, cotangent: Array
) -> LogSumExpGrads:
    r"""VJP of :func:`attnref.log_sum_exp`: the gradient of a log-sum-exp is its softmax.

    .. math::

        \partial \ell_i / \partial e_{ij} = \alpha_{ij}, \qquad
        \bar e_{ij} = \alpha_{ij}\, \bar\ell_i

    so disallowed positions and fully masked rows (:math:`\ell_i = -\infty`)
    get exactly zero (``lse.fully-masked-row``).
    """
    lse = log_sum_exp(scores, mask=mask)  # [..., Tq]
    c = _cotangent("log_sum_exp", cotangent, lse.shape)
    weights = attention_distribution(scores, mask=mask)  # [..., Tq, Tk]
    return LogSumExpGrads(_sum_to(weights * c[..., None], np.shape(scores)))


def vjp_local_m_distribution(
    scores: Array, /, *, half_width: int, mask: BoolArray | None = None, cotangent: Array
) -> LocalMDistributionGrads:
    r"""VJP of :func:`attnref.local_m_distribution`: the softmax VJP over each window.

    .. math::

        \bar e_{ij} = \alpha_{ij}
            \left(\bar\alpha_{ij} - \textstyle\sum_k \alpha_{ik} \bar\alpha_{ik}\right)

    which is exactly zero outside the window :math:`|j - i| \le D`.
    """
    weights = local_m_distribution(scores, half_width=half_width, mask=mask)  # [..., Tq, Tk]
    c = _cotangent("local_m_distribution", cotangent, weights.shape)
    g = _softmax_backward(weights, c)  # [..., Tq, Tk]
    return LocalMDistributionGrads(_sum_to(g, np.shape(scores)))


def vjp_local_p_position(
    query: Array, W_p: Array, v_p: Array, /, *, source_length: int, cotangent: Array
) -> LocalPPositionGrads:
    r"""VJP of :func:`attnref.local_p_position`, :math:`p = (S-1)\,\sigma(v_p^\top \tanh(W_p s))`.

    With :math:`u_i = \tanh(W_p s_i)`, :math:`z_i = v_p^\top u_i` and
    :math:`\sigma' = \sigma(1 - \sigma)`:

    .. math::

        \bar z_i = \bar p_i (S - 1)\, \sigma(z_i)(1 - \sigma(z_i)), \quad
        \bar v_p = \textstyle\sum_i \bar z_i u_i, \quad
        r_i = \bar z_i\, v_p \odot (1 - u_i^2),

        \bar s_i = W_p^\top r_i, \quad \bar W_p = \textstyle\sum_i r_i s_i^\top
    """
    positions = local_p_position(query, W_p, v_p, source_length=source_length)  # [..., Tq]
    c = _cotangent("local_p_position", cotangent, positions.shape)
    q, w, v = np.asarray(query), np.asarray(W_p), np.asarray(v_p)
    pre = q @ w.T  # [..., Tq, d_p]
    hidden = np.tanh(pre)  # [..., Tq, d_p]
    logit = hidden @ v  # [..., Tq]
    # Note: sigma'(z) = sigma(z) sigma(-z), not sigma (1 - sigma), which cancels
    # once sigma(z) rounds near 1.
    g_logit = c * (source_length - 1) * _sigmoid(logit) * _sigmoid(-logit)  # [..., Tq]
    g_v = _sum_batch(g_logit[..., None] * hidden, 1)  # [d_p]
    g_pre = g_logit[..., None] * v * _tanh_derivative(pre)  # [..., Tq, d_p]
    g_q = g_pre @ w  # [..., Tq, d_q]
    g_w = _sum_batch(_t(g_pre) @ q, 2)  # [d_p, d_q]
    return LocalPPositionGrads(_sum_to(g_q, q.shape), g_w, g_v)


def vjp_local_p_distribution(
    scores: Array,
    positions: Array,
    /,
    *,
    half_width: int,
    mask: BoolArray | None = None,
    cotangent: Array,
) -> LocalPDistributionGrads:
    r"""VJP of :func:`attnref.local_p_distribution`, :math:`\alpha_{ij} = w_{ij} g_{ij}`.

    Here :math:`w` is the window softmax and
    :math:`g_{ij} = \exp(-(j - p_i)^2 / (2\sigma^2))`, :math:`\sigma = D/2`, so
    :math:`\partial g_{ij} / \partial p_i = g_{ij} (j - p_i) / \sigma^2` and

    .. math::

        \bar e_{ij} = w_{ij} \left(\bar\alpha_{ij} g_{ij}
            - \textstyle\sum_k w_{ik} \bar\alpha_{ik} g_{ik}\right), \qquad
        \bar p_i = \textstyle\sum_j \bar\alpha_{ij}\, \alpha_{ij}\, (j - p_i) / \sigma^2

    The window :math:`|j - p_i| \le D` is held fixed: the weights jump where
    a key enters or leaves it, and there the derivative is the one-sided
    derivative with the current window (the complex-step derivative of the
    forward, whose window is decided on the real part of :math:`p_i`).
    """
    func = "local_p_distribution"
    weights = local_p_distribution(scores, positions, half_width=half_width, mask=mask)
    c = _cotangent(func, cotangent, weights.shape)  # [..., Tq, Tk]
    s, p = np.asarray(scores), np.asarray(positions)
    d = half_width
    j = np.arange(s.shape[-1], dtype=p.real.dtype)  # [Tk]
    offset = np.broadcast_to(j - p[..., None], weights.shape)  # [..., Tq, Tk]
    # Note: the same allowed set as the forward: mask, window (on the real part),
    # and scores that are not -inf; w is the window softmax before the Gaussian.
    allowed = np.broadcast_to(local_p_window(p, s.shape[-1], half_width=d), weights.shape)
    if mask is not None:
        allowed = allowed & np.asarray(mask)
    s_full = np.broadcast_to(s, weights.shape)  # [..., Tq, Tk]
    allowed = allowed & (s_full.real != -np.inf)
    window_softmax = masked_softmax(s_full, allowed)  # [..., Tq, Tk]
    sigma = d / 2
    gaussian = np.where(allowed, np.exp(-(offset**2) / (2 * sigma**2)), 0)  # [..., Tq, Tk]
    g_scores = _softmax_backward(window_softmax, c * gaussian)  # [..., Tq, Tk]
    g_positions = (c * weights * np.where(allowed, offset, 0)).sum(axis=-1) / sigma**2  # [..., Tq]
    return LocalPDistributionGrads(_sum_to(g_scores, s.shape), _sum_to(g_positions, p.shape))


# --- steps 3 and 4: attention value and concatenation ----------------------------------------


def _read_values(weights: Array, values: Array, /) -> Array:
    """``values`` broadcast to the weights' batch, with rows no weight reads set to 0."""
    batch = np.broadcast_shapes(weights.shape[:-2], values.shape[:-2])
    read = np.broadcast_to((weights != 0).any(axis=-2), (*batch, weights.shape[-1]))  # [..., Tk]
    v_full = np.broadcast_to(values, (*batch, *values.shape[-2:]))  # [..., Tk, d_v]
    return np.where(read[..., None], v_full, 0)  # [..., Tk, d_v]


def vjp_attention_value(
    weights: Array, values: Array, /, *, cotangent: Array
) -> AttentionValueGrads:
    r"""VJP of :func:`attnref.attention_value`, :math:`A = \alpha V`.

    .. math:: \bar\alpha = \bar A\, V_{\text{read}}^\top, \qquad \bar V = \alpha^\top \bar A

    :math:`V_{\text{read}}` is :math:`V` with the rows that are not read
    (``value.zero-weight-unread``: zero weight in every query row) set to 0,
    as in the forward, so NaN there reaches no gradient and
    :math:`\bar V` is exactly 0 on those rows.
    """
    context = attention_value(weights, values)  # [..., Tq, d_v]
    c = _cotangent("attention_value", cotangent, context.shape)
    w, v = np.asarray(weights), np.asarray(values)
    # Note: the gradient of a weight in a column that is entirely 0 is taken
    # with that value row as 0 (input.unread-positions: an unread value row
    # affects no gradient). The derivative of w @ v there would be c . v_j.
    v_read = _read_values(w, v)  # [..., Tk, d_v]
    g_w = c @ _t(v_read)  # [..., Tq, Tk]
    g_v = _t(w) @ c  # [..., Tk, d_v]
    return AttentionValueGrads(_sum_to(g_w, w.shape), _sum_to(g_v, v.shape))


def vjp_concatenate_context(
    context: Array, query: Array, /, *, cotangent: Array
) -> ConcatenateContextGrads:
    r"""VJP of :func:`attnref.concatenate_context`, :math:`v_i = [a_i; s_i]`: split the bar.

    .. math:: \bar a_i = \bar v_{i,\,:d_v}, \qquad \bar s_i = \bar v_{i,\,d_v:}
    """
    stacked = concatenate_context(context, query)  # [..., Tq, d_v + d_q]
    c = _cotangent("concatenate_context", cotangent, stacked.shape)
    a, s = np.asarray(context), np.asarray(query)
    d_v = a.shape[-1]
    return ConcatenateContextGrads(_sum_to(c[..., :d_v], a.shape), _sum_to(c[..., d_v:], s.shape))


# --- steps 5 and 6: attentional hidden state and output distribution -------------------------


def vjp_attentional_hidden_state(
    context: Array, query: Array, W_c: Array, b_c: Array | None = None, /, *, cotangent: Array
) -> AttentionalHiddenStateGrads:
    r"""VJP of :func:`attnref.attentional_hidden_state`, :math:`\tilde s = \tanh(W_c [a; s] + b_c)`.

    .. math::

        r = \bar{\tilde s} \odot (1 - \tilde s^2), \quad
        [\bar a; \bar s] = W_c^\top r, \quad
        \bar W_c = \textstyle\sum r\, [a; s]^\top, \quad \bar b_c = \textstyle\sum r
    """
    state = attentional_hidden_state(context, query, W_c, b_c)  # [..., Tq, d_h]
    c = _cotangent("attentional_hidden_state", cotangent, state.shape)
    a, s, w = np.asarray(context), np.asarray(query), np.asarray(W_c)
    stacked = concatenate_context(a, s)  # [..., Tq, d_v + d_q]
    pre = stacked @ w.T if b_c is None else stacked @ w.T + np.asarray(b_c)  # [..., Tq, d_h]
    g_pre = c * _tanh_derivative(pre)  # [..., Tq, d_h]
    g_stacked = g_pre @ w  # [..., Tq, d_v + d_q]
    g_w = _sum_batch(_t(g_pre) @ stacked, 2)  # [d_h, d_v + d_q]
    g_b = None if b_c is None else _sum_batch(g_pre, 1)  # [d_h]
    d_v = a.shape[-1]
    return AttentionalHiddenStateGrads(
        _sum_to(g_stacked[..., :d_v], a.shape), _sum_to(g_stacked[..., d_v:], s.shape), g_w, g_b
    )


def vjp_output_distribution(
    attentional_state: Array, W_y: Array, b_y: Array | None = None, /, *, cotangent: Array
) -> OutputDistributionGrads:
    r"""VJP of :func:`attnref.output_distribution`, the softmax layer over the vocabulary.

    .. math::

        \bar z = \hat y \odot (\bar{\hat y} - \langle \hat y, \bar{\hat y} \rangle), \quad
        \bar{\tilde s} = W_y^\top \bar z, \quad
        \bar W_y = \textstyle\sum \bar z\, \tilde s^\top, \quad \bar b_y = \textstyle\sum \bar z
    """
    probabilities = output_distribution(attentional_state, W_y, b_y)  # [..., Tq, V]
    c = _cotangent("output_distribution", cotangent, probabilities.shape)
    h, w = np.asarray(attentional_state), np.asarray(W_y)
    g_logits = _softmax_backward(probabilities, c)  # [..., Tq, V]
    g_h = g_logits @ w  # [..., Tq, d_h]
    g_w = _sum_batch(_t(g_logits) @ h, 2)  # [V, d_h]
    g_b = None if b_y is None else _sum_batch(g_logits, 1)  # [V]
    return OutputDistributionGrads(_sum_to(g_h, h.shape), g_w, g_b)


# --- composites ------------------------------------------------------------------------------

ScoreBackward = Callable[[Array, Array, Array], tuple[Array, ...]]
"""``(query, keys, scores_bar) -> (query_bar, keys_bar, *parameter_bars)`` on read rows."""


def _attend_backward(
    q: Array,
    k: Array,
    v: Array,
    weights: Array,
    c_context: Array,
    c_weights: Array,
    score_backward: ScoreBackward,
    /,
    c_lse: Array | None = None,
) -> tuple[Array, Array, Array, tuple[Array, ...], Array]:
    r"""Backward through scores -> distribution -> attention value, at the weights' batch shape.

    Returns the bars of ``q``, ``k``, ``v`` broadcast to the weights' batch
    (the caller sums them back), of the score parameters (already summed), and
    each row's bar of its log-normalizer :math:`\bar\ell - \langle\alpha,
    \bar\alpha\rangle` (``[..., Tq]``), from which a sink's bar follows.

    .. math::

        \bar\alpha = \bar\alpha_{\text{out}} + \bar A V^\top, \quad
        \bar V = \alpha^\top \bar A, \quad
        \bar e = \alpha \odot (\bar\alpha - \langle\alpha, \bar\alpha\rangle
            + \bar\ell)

    with :math:`\bar\ell` the cotangent of the log-sum-exp (``c_lse``, 0 when
    ``None``): :math:`\partial\ell_i / \partial e_{ij} = \alpha_{ij}`. The
    softmax VJP is the same with a sink in the denominator, whose weight gets
    no cotangent.
    """
    batch = weights.shape[:-2]
    nonzero = weights != 0  # [..., Tq, Tk]
    # Note: a query row or key with no non-zero weight receives no gradient;
    # it is set to 0 before use, so NaN or inf there (unread, masked) cannot
    # enter through 0 * NaN. Every allowed position has a non-zero weight or
    # contributes an exactly zero bar, so this is the forward's read set for
    # every term that matters.
    q_read = nonzero.any(axis=-1)[..., None]  # [..., Tq, 1]
    k_read = nonzero.any(axis=-2)[..., None]  # [..., Tk, 1]
    q_full = np.where(q_read, np.broadcast_to(q, (*batch, *q.shape[-2:])), 0)  # [..., Tq, d_q]
    k_full = np.where(k_read, np.broadcast_to(k, (*batch, *k.shape[-2:])), 0)  # [..., Tk, d_k]
    v_full = np.where(k_read, np.broadcast_to(v, (*batch, *v.shape[-2:])), 0)  # [..., Tk, d_v]
    g_weights = c_weights + c_context @ _t(v_full)  # [..., Tq, Tk]
    g_v = _t(weights) @ c_context  # [..., Tk, d_v]
    g_row = -(weights * g_weights).sum(axis=-1)  # [..., Tq]
    if c_lse is not None:
        g_row = g_row + c_lse
    g_scores = weights * (g_weights + g_row[..., None])  # [..., Tq, Tk]
    g_q, g_k, *g_params = score_backward(q_full, k_full, g_scores)
    return g_q, g_k, g_v, tuple(g_params), g_row


def _scale(func: str, scale: Scale | None, d: int, result: Array, /) -> Array:
    """The forward's scale: ``scale`` or ``1/sqrt(d)``, rounded to the result's real dtype."""
    value = _checks.scale_value(func, scale)
    lam = _checks.default_scale(d) if value is None else value
    return np.asarray(lam, dtype=result.real.dtype)


def _score_backward(kind: str, d_q: int, lam: Array, /, *params: Array) -> ScoreBackward:
    """The score VJP of ``kind`` with its weight ``params`` (in the spec's order) bound."""
    # Note: every backward returns (query_bar, keys_bar, *parameter_bars); the
    # location score does not read the keys, so their bar is exactly 0.

    def dot(q: Array, k: Array, c: Array) -> tuple[Array, ...]:
        return _dot_backward(q, k, c)

    def scaled_dot(q: Array, k: Array, c: Array) -> tuple[Array, ...]:
        return _dot_backward(q, k, c * lam)

    def general(q: Array, k: Array, c: Array) -> tuple[Array, ...]:
        return _general_backward(q, k, params[0], c)

    def concat(q: Array, k: Array, c: Array) -> tuple[Array, ...]:
        w, v = params
        g_q, g_k, g_w1, g_w2, g_v = _tanh_layer_backward(q, k, w[:, :d_q], w[:, d_q:], v, c)
        return g_q, g_k, np.concatenate([g_w1, g_w2], axis=1), g_v

    def additive(q: Array, k: Array, c: Array) -> tuple[Array, ...]:
        w_q, w_k, v = params
        return _tanh_layer_backward(q, k, w_q, w_k, v, c)

    def location(q: Array, k: Array, c: Array) -> tuple[Array, ...]:
        g_q, g_w = _location_backward(q, params[0], c)
        return g_q, np.zeros_like(k), g_w

    table: dict[str, ScoreBackward] = {
        "dot": dot,
        "scaled_dot": scaled_dot,
        "general": general,
        "concat": concat,
        "additive": additive,
        "location": location,
    }
    return table[kind]


def vjp_attention(
    query: Array,
    keys: Array,
    values: Array,
    /,
    *,
    score: ScoreKind = "dot",
    mask: Mask | None = None,
    scale: Scale | None = None,
    W_a: Array | None = None,
    W_q: Array | None = None,
    W_k: Array | None = None,
    v_a: Array | None = None,
    cotangent: tuple[Array, Array],
) -> AttentionGrads:
    r"""VJP of :func:`attnref.attention`; ``cotangent`` is ``(context_bar, weights_bar)``.

    The chain of the step VJPs: :func:`vjp_attention_value`, then
    :func:`vjp_attention_distribution`, then the score's VJP
    (:func:`vjp_score_dot` ... :func:`vjp_score_location`). For the
    ``location`` score the keys are not read and their gradient is 0.
    """
    context, weights = attention(
        query, keys, values, score=score, mask=mask, scale=scale, W_a=W_a, W_q=W_q, W_k=W_k, v_a=v_a
    )
    c_context, c_weights = _pair("attention", cotangent, context, weights)
    q, k, v = np.asarray(query), np.asarray(keys), np.asarray(values)
    given = {"W_a": W_a, "W_q": W_q, "W_k": W_k, "v_a": v_a}
    taken = tuple(name for name in SCORE_PARAMETERS[score] if name != "scale")
    lam = _scale("attention", scale, k.shape[-1], weights)
    backward = _score_backward(score, q.shape[-1], lam, *(np.asarray(given[n]) for n in taken))
    g_q, g_k, g_v, g_params, _ = _attend_backward(q, k, v, weights, c_context, c_weights, backward)
    named: dict[str, Array | None] = {"W_a": None, "W_q": None, "W_k": None, "v_a": None}
    named.update(zip(taken, g_params, strict=True))
    return AttentionGrads(
        _sum_to(g_q, q.shape),
        _sum_to(g_k, k.shape),
        _sum_to(g_v, v.shape),
        named["W_a"],
        named["W_q"],
        named["W_k"],
        named["v_a"],
    )


def _cap_derivative(u: Array, /) -> Array:
    r""":math:`\partial (c \tanh(s/c)) / \partial c = \tanh u - u \operatorname{sech}^2 u`
    at :math:`u = s / c`.

    For small :math:`|u|` the two terms cancel (the value is :math:`2u^3/3 + O(u^5)`), so
    there it is summed from its series
    :math:`(\sinh 2u - 2u) / (2\cosh^2 u) = \sum_{n \ge 1} (2u)^{2n+1} / (2 (2n+1)!)
    / \cosh^2 u`.
    """
    direct = np.tanh(u) - u * _tanh_derivative(u)
    # Note: 9 terms of the series leave a relative error below 2**-53 for |u| <= 1/2.
    small = np.abs(u) <= 0.5
    x = np.where(small, 2 * u, 0)
    term, series = x, np.zeros_like(x)
    for n in range(1, 10):
        term = term * x * x / ((2 * n) * (2 * n + 1))
        series = series + term / 2
    result: Array = np.where(small, series * _tanh_derivative(np.where(small, u, 0)), direct)
    return result


def _capped(backward: ScoreBackward, lam: Array, softcap: float | None, /) -> ScoreBackward:
    """The score VJP through ``c * tanh(s / c)`` of the scaled score ``s`` (``sdpa.softcap``);
    with a cap, the bar of ``c`` is returned last, after the score parameters' bars."""
    if softcap is None:
        return backward

    def capped(q: Array, k: Array, c: Array) -> tuple[Array, ...]:
        # Note: s is recomputed from the read rows the forward used (unread rows
        # are 0 here), and the bar is 0 wherever c is, so nothing unread leaks in.
        s = lam * (q @ _t(k))  # [..., Tq, Tk]
        u = s / softcap
        c_bar = (c * _cap_derivative(u)).sum()
        return (*backward(q, k, c * _tanh_derivative(u)), np.asarray(c_bar))

    return capped


def vjp_scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    /,
    *,
    mask: Mask | None = None,
    is_causal: bool = False,
    causal_alignment: CausalAlignment = "top_left",
    scale: Scale | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    window: Window | None = None,
    query_offset: int | Array | None = None,
    key_lengths: Array | None = None,
    sinks: Array | None = None,
    return_lse: bool = False,
    cotangent: tuple[Array, Array] | tuple[Array, Array, Array],
) -> ScaledDotProductAttentionGrads:
    r"""VJP of :func:`attnref.scaled_dot_product_attention`.

    ``cotangent`` is shaped like the forward's result: ``(context_bar,
    weights_bar)``, and with ``return_lse=True`` ``(context_bar, weights_bar,
    lse_bar)``.

    The chain of :func:`vjp_attention_value`, :func:`vjp_attention_distribution`
    (with the causal mask joined to ``mask``) and :func:`vjp_score_scaled_dot`.
    With ``enable_gqa`` the forward repeats each key/value head ``g = Hq / Hk``
    times in place; the adjoint of that repeat sums the ``g`` query heads of
    each group: :math:`\bar K_h = \sum_{r < g} \bar K^{\text{rep}}_{hg + r}`.
    With ``softcap`` :math:`c` the scores are :math:`t = c \tanh(s / c)`, so the
    bar of the scaled score is :math:`\bar s = \bar t\,(1 - \tanh^2(s / c))`
    and that of the cap :math:`\bar c = \sum \bar t\,(\tanh u - u
    \operatorname{sech}^2 u)` at :math:`u = s / c`.
    The log-sum-exp :math:`\ell_i` has :math:`\partial \ell_i / \partial t_{ij} =
    \alpha_{ij}` and, with a sink, :math:`\partial \ell_i / \partial \sigma_h =
    \beta_i = \exp(\sigma_h - \ell_i)`, the sink's share of the row. The sink is
    one more logit of the row's softmax whose weight gets no cotangent, so
    :math:`\bar\sigma_h = \sum_{i \in h} \beta_i (\bar\ell_i - \langle
    \alpha_i, \bar\alpha_i \rangle)` over the rows of head ``h``.
    The window, the query offset and the key lengths only restrict which keys
    are allowed: they enter through the forward's weights (zero where
    disallowed) and are not differentiated.
    """
    func = "scaled_dot_product_attention"
    context, weights, lse = scaled_dot_product_attention(
        query,
        key,
        value,
        mask=mask,
        is_causal=is_causal,
        causal_alignment=causal_alignment,
        scale=scale,
        enable_gqa=enable_gqa,
        softcap=softcap,
        window=window,
        query_offset=query_offset,
        key_lengths=key_lengths,
        sinks=sinks,
        return_lse=True,
    )
    if return_lse:
        c_context, c_weights, c_lse = _triple(func, cotangent, context, weights, lse)
    else:
        c_context, c_weights = _pair(func, cotangent, context, weights)
        c_lse = None
    q, k, v = np.asarray(query), np.asarray(key), np.asarray(value)
    lam = _scale(func, scale, q.shape[-1], weights)
    group = q.shape[-3] // k.shape[-3] if enable_gqa else 1
    k_rep = np.repeat(k, group, axis=-3) if enable_gqa else k  # [..., Hq, Tk, d]
    v_rep = np.repeat(v, group, axis=-3) if enable_gqa else v  # [..., Hq, Tk, d_v]
    g_q, g_k, g_v, g_cap, g_row = _attend_backward(
        q,
        k_rep,
        v_rep,
        weights,
        c_context,
        c_weights,
        _capped(_score_backward("scaled_dot", q.shape[-1], lam), lam, softcap),
        c_lse,
    )
    g_k = _sum_to(g_k, k_rep.shape)  # [..., Hq, Tk, d] or [..., Tk, d]
    g_v = _sum_to(g_v, v_rep.shape)  # [..., Hq, Tk, d_v] or [..., Tk, d_v]
    if enable_gqa:
        # Note: np.repeat put copy r of head h at index h * g + r, so the
        # groups are consecutive: reshape to [..., Hk, g, T, d] and sum over g.
        g_k = g_k.reshape(*k.shape[:-2], group, *k.shape[-2:]).sum(axis=-3)  # [..., Hk, Tk, d]
        g_v = g_v.reshape(*v.shape[:-2], group, *v.shape[-2:]).sum(axis=-3)  # [..., Hk, Tk, d_v]
    g_sinks = None
    if sinks is not None:
        sink = np.asarray(sinks)[:, None]  # [H, 1]
        # Note: beta = exp(sigma - lse) <= 1 is the sink's weight in its row: exp of a
        # difference of two finite numbers, never of a logit alone, so it cannot overflow.
        beta = np.exp(sink - lse)  # [..., H, Tq]
        g_sinks = _sum_to(beta * g_row, (*sink.shape[:-1], 1))[:, 0]  # [H]
    return ScaledDotProductAttentionGrads(
        _sum_to(g_q, q.shape),
        g_k,
        g_v,
        g_sinks,
        g_cap[0] if softcap is not None else None,
    )


VJPS: Mapping[str, Callable[..., tuple[Any, ...]]] = MappingProxyType(
    {
        "score_dot": vjp_score_dot,
        "score_scaled_dot": vjp_score_scaled_dot,
        "score_general": vjp_score_general,
        "score_concat": vjp_score_concat,
        "score_additive": vjp_score_additive,
        "score_location": vjp_score_location,
        "attention_distribution": vjp_attention_distribution,
        "log_sum_exp": vjp_log_sum_exp,
        "local_m_distribution": vjp_local_m_distribution,
        "local_p_position": vjp_local_p_position,
        "local_p_distribution": vjp_local_p_distribution,
        "attention_value": vjp_attention_value,
        "concatenate_context": vjp_concatenate_context,
        "attentional_hidden_state": vjp_attentional_hidden_state,
        "output_distribution": vjp_output_distribution,
        "attention": vjp_attention,
        "scaled_dot_product_attention": vjp_scaled_dot_product_attention,
    }
)
"""The VJP of each spec function, by name, in the order of :data:`attnspec.FUNCTIONS`."""
