"""Step 2 in NumPy: the attention distribution, global and local."""

from __future__ import annotations

import numpy as np

from attnref import _checks, _inputs
from attnref.masking import allowed_positions, local_p_window, local_window
from attnspec.typing import Array, BoolArray, Mask

__all__ = [
    "attention_distribution",
    "local_m_distribution",
    "local_p_distribution",
    "local_p_position",
    "log_sum_exp",
]


def masked_normalize(
    scores: Array,
    allowed: BoolArray,
    /,
    *,
    bias: Array | None = None,
    sink: Array | None = None,
) -> tuple[Array, Array]:
    """Softmax of ``scores + bias`` over the last axis, restricted to ``allowed``, and its
    log-normalizer: ``(weights [..., Tq, Tk], lse [..., Tq])``.

    ``sink`` (broadcastable to ``[..., Tq, 1]``) is a logit that joins each row's
    denominator and no numerator (``sdpa.sinks``). Rows with nothing allowed have
    zero weights and, without a sink, log-sum-exp ``-inf``. ``scores`` (and
    ``bias``) must be finite wherever ``allowed`` is True; elsewhere they are not
    read.
    """
    # Note: the softmax is computed on half-logits h = s/2 + b/2, shifted by
    # the row's largest allowed h and doubled back: 2 * (h - max h). Scaling by
    # 2 is exact, so this is the plain shifted softmax wherever that does not
    # overflow, and it also stays finite where s + b itself would overflow
    # (-1e308 + -1e308; distribution.stable). (Halving a subnormal score drops
    # its last bit: a change of 1e-323 in a logit.)
    # The shift leaves the softmax unchanged (distribution.shift-invariant),
    # keeps exp() <= 1, and, taken from the *real part*, keeps the function
    # complex-analytic for complex-step differentiation (input.complex-extension).
    # (At a disallowed position +inf poison plus a -inf bias is NaN: not read.)
    with np.errstate(invalid="ignore"):
        half = scores / 2 if bias is None else scores / 2 + bias / 2  # [..., Tq, Tk]
    half = np.broadcast_to(half, np.broadcast_shapes(half.shape, allowed.shape))
    row_allowed = allowed.any(axis=-1, keepdims=True)  # [..., Tq, 1]
    real = np.where(allowed, half.real, -np.inf)  # [..., Tq, Tk]
    top = real.max(axis=-1, keepdims=True, initial=-np.inf)  # [..., Tq, 1]
    dtype, real_dtype = half.dtype, half.real.dtype
    row_normalized = row_allowed  # rows whose denominator is not empty
    if sink is not None:
        # Note: the sink's half-logit joins the shift, so exp() <= 1 holds for it too; the
        # shift keeps the promoted dtype (a float64 sink beyond float16's range shifts too).
        sink_half = np.broadcast_to(sink / 2, top.shape)  # [..., Tq, 1]
        dtype = np.result_type(half, sink_half)
        real_dtype = np.result_type(half.real, sink_half.real)
        top = np.maximum(top, sink_half.real)
        row_normalized = np.ones_like(row_allowed)
    shift = np.where(row_normalized, top, 0.0).astype(real_dtype)  # [..., Tq, 1]
    # Note: doubling may overflow to -inf for logits far below the row's
    # largest (-1e308 against 1e308); exp(-inf) = 0 is then the correctly
    # rounded weight.
    with np.errstate(over="ignore", invalid="ignore"):
        centred = np.where(allowed, half - shift, 0)  # [..., Tq, Tk]
        shifted = 2 * centred  # [..., Tq, Tk]
    exps = np.where(allowed, np.exp(shifted), 0)  # [..., Tq, Tk]
    total = exps.sum(axis=-1, keepdims=True)  # [..., Tq, 1]
    if sink is not None:
        with np.errstate(over="ignore"):
            total = total + np.exp(2 * (sink_half - shift))  # [..., Tq, 1]
    # Note: a fully masked row has total 0; it gets zero weights
    # (distribution.fully-masked-row) and log-sum-exp -inf (lse.fully-masked-row),
    # decided by the mask, not by the value of total, so no value branch enters
    # the complex-step path.
    safe_total = np.where(row_normalized, total, 1)  # [..., Tq, 1]
    weights = np.where(row_allowed, exps / safe_total, 0).astype(dtype)  # [..., Tq, Tk]
    # Note: 2 * shift overflows only where the log-sum-exp itself does
    # (it lies within log n of the largest logit, lse.stable).
    with np.errstate(over="ignore"):
        lse = np.where(row_normalized, 2 * shift + np.log(safe_total), -np.inf)  # [..., Tq, 1]
    return weights, lse[..., 0].astype(dtype)


def masked_softmax(scores: Array, allowed: BoolArray, /, *, bias: Array | None = None) -> Array:
    """The weights of :func:`masked_normalize` (no sink)."""
    return masked_normalize(scores, allowed, bias=bias)[0]


def _scores(func: str, scores: object, /) -> Array:
    """Checked ``scores [..., Tq, Tk]`` (rank >= 2, Tk >= 1)."""
    s = _inputs.floating(func, "scores", scores)
    _checks.rank_at_least(func, _inputs.describe("scores", s), 2, "[..., Tq, Tk]")
    _checks.nonempty(func, "scores.shape[-1]", s.shape[-1])
    return s


def _allowed_scores(func: str, s: Array, allowed: BoolArray, /) -> tuple[Array, BoolArray]:
    """Drop ``-inf`` scores from ``allowed`` and check the allowed rest is finite."""
    s = np.broadcast_to(s, np.broadcast_shapes(s.shape, allowed.shape))  # [..., Tq, Tk]
    allowed = allowed & (s.real != -np.inf)  # [..., Tq, Tk]
    _inputs.finite(func, "scores", s, where=allowed, what="finite or -inf")
    return s, allowed


def allowed_normalize(
    func: str,
    scores: Array,
    allowed: BoolArray,
    bias: Array | None,
    /,
    *,
    sink: Array | None = None,
) -> tuple[Array, Array]:
    """The attention distribution of checked ``scores`` over a derived ``allowed`` set,
    and its log-sum-exp: ``(weights, lse)``.

    ``allowed`` comes from :mod:`attnref.masking` (a validated mask joined with
    the causal flag); ``bias`` is the additive mask or ``None``; ``sink`` a
    checked sink logit per row (``[..., Tq, 1]``) or ``None``.
    """
    # Note: the additive mask is cast to the scores' dtype (masks take no
    # part in promotion, input.result-dtype): a huge finite bias such as
    # -1e30 becomes -inf in float16 and so disallows, as float16 would.
    b = None if bias is None else bias.astype(scores.real.dtype)
    s, allowed = _allowed_scores(func, scores, allowed)
    return masked_normalize(s, allowed, bias=b, sink=sink)


def _distribution(func: str, scores: Array, mask: Mask | None, /) -> tuple[Array, Array]:
    """``(weights, lse)`` of :func:`attention_distribution` and :func:`log_sum_exp`."""
    s = _scores(func, scores)
    mask_allowed, bias, shape = None, None, s.shape
    if mask is not None:
        mask_allowed, bias, shape = _inputs.mask(func, mask, s.shape)
    return allowed_normalize(func, s, allowed_positions(shape, mask_allowed=mask_allowed), bias)


def attention_distribution(scores: Array, /, *, mask: Mask | None = None) -> Array:
    """Masked softmax of the scores; see :func:`attnspec.attention_distribution`."""
    return _distribution("attention_distribution", scores, mask)[0]


def log_sum_exp(scores: Array, /, *, mask: Mask | None = None) -> Array:
    """Each row's log-normalizer of the distribution; see :func:`attnspec.log_sum_exp`."""
    return _distribution("log_sum_exp", scores, mask)[1]


def _local_mask(func: str, s: Array, mask: BoolArray | None, /) -> BoolArray:
    """The boolean mask of a local distribution, broadcast with the scores."""
    if mask is None:
        return np.ones(s.shape, dtype=bool)
    allowed, _, shape = _inputs.mask(func, mask, s.shape, additive_ok=False)
    return np.broadcast_to(allowed, shape)


def local_m_distribution(
    scores: Array, /, *, half_width: int, mask: BoolArray | None = None
) -> Array:
    """Local-m distribution; see :func:`attnspec.local_m_distribution`."""
    func = "local_m_distribution"
    d = _checks.integer(func, "half_width", half_width, minimum=0)
    s = _scores(func, scores)
    allowed = _local_mask(func, s, mask)
    window = local_window(s.shape[-2], s.shape[-1], half_width=d)  # [Tq, Tk]
    s, allowed = _allowed_scores(func, s, allowed & window)
    return masked_softmax(s, allowed)


def local_p_position(query: Array, W_p: Array, v_p: Array, /, *, source_length: int) -> Array:
    """Local-p aligned positions; see :func:`attnspec.local_p_position`."""
    func = "local_p_position"
    n = _checks.integer(func, "source_length", source_length, minimum=1)
    q = _inputs.sequence(func, "query", query, "[..., Tq, d_q]")
    w = _inputs.matrix(func, "W_p", W_p, "[d_p, d_q]")
    v = _inputs.vector(func, "v_p", v_p, "[d_p]")
    _checks.same_size(func, "W_p.shape[1]", w.shape[1], "query.shape[-1]", q.shape[-1])
    _checks.same_size(func, "v_p.shape[0]", v.shape[0], "W_p.shape[0]", w.shape[0])
    for name, array in (("query", q), ("W_p", w), ("v_p", v)):
        _inputs.finite(func, name, array)
    hidden = np.tanh(q @ w.T)  # [..., Tq, d_p]
    logit = hidden @ v  # [..., Tq]
    # Note: 1 / (1 + exp(-x)) is complex-analytic and saturates to 0 or 1
    # without NaN for large |x| (exp overflows to inf, and 1/inf = 0).
    with np.errstate(over="ignore"):
        sigmoid: Array = 1 / (1 + np.exp(-logit))  # [..., Tq]
    return (n - 1) * sigmoid  # [..., Tq]


def local_p_distribution(
    scores: Array, positions: Array, /, *, half_width: int, mask: BoolArray | None = None
) -> Array:
    """Local-p distribution; see :func:`attnspec.local_p_distribution`."""
    func = "local_p_distribution"
    d = _checks.integer(func, "half_width", half_width, minimum=1)
    s = _scores(func, scores)
    p = _inputs.floating(func, "positions", positions)
    _checks.rank_at_least(func, _inputs.describe("positions", p), 1, "[..., Tq]")
    _checks.same_size(func, "positions.shape[-1]", p.shape[-1], "scores.shape[-2]", s.shape[-2])
    _checks.broadcast_shapes(func, ("scores", s.shape[:-2]), ("positions", p.shape[:-1]))
    _inputs.finite(func, "positions", p)
    allowed = _local_mask(func, s, mask)
    j = np.arange(s.shape[-1], dtype=p.real.dtype)  # [Tk]
    offset = j - p[..., None]  # [..., Tq, Tk]
    window = local_p_window(p, s.shape[-1], half_width=d)  # [..., Tq, Tk]
    s, allowed = _allowed_scores(func, s, allowed & window)
    weights = masked_softmax(s, allowed)  # [..., Tq, Tk]
    sigma = d / 2
    # Note: offsets outside the window are zeroed before squaring: they are
    # not read, and a far position (1e300) would overflow the square.
    near = np.where(window, offset, 0)  # [..., Tq, Tk]
    gaussian = np.exp(-(near**2) / (2 * sigma**2))  # [..., Tq, Tk]
    # Note: the Gaussian multiplies after normalising and the rows are not
    # renormalised (local.p-gaussian); outside the window weights is exactly 0.
    # (The result has the promoted dtype of scores and positions, input.result-dtype.)
    return np.where(allowed, weights * gaussian, 0)  # [..., Tq, Tk]
