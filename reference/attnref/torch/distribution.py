"""Step 2 in PyTorch: the attention distribution, global and local."""

from __future__ import annotations

import numpy as np
import torch

from attnref import _checks, masking
from attnref.torch import _inputs
from attnspec.typing import BoolArray

__all__ = [
    "attention_distribution",
    "local_m_distribution",
    "local_p_distribution",
    "local_p_position",
    "log_sum_exp",
]


def masked_normalize(
    scores: torch.Tensor,
    allowed: torch.Tensor,
    /,
    *,
    bias: torch.Tensor | None = None,
    sink: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax of ``scores + bias`` over the last axis, restricted to ``allowed``, and its
    log-normalizer: ``(weights [..., Tq, Tk], lse [..., Tq])``.

    ``sink`` (broadcastable to ``[..., Tq, 1]``) is a logit that joins each row's
    denominator and no numerator (``sdpa.sinks``). Rows with nothing allowed have
    zero weights and, without a sink, log-sum-exp ``-inf``. ``scores`` (and
    ``bias``) must be finite wherever ``allowed`` is True; elsewhere they are not
    read, and their gradient there is exactly zero.
    """
    # Note: the softmax is computed on half-logits h = s/2 + b/2, shifted by
    # the row's largest allowed h and doubled back: 2 * (h - max h). Scaling by
    # 2 is exact, so this is the plain shifted softmax wherever that does not
    # overflow, and it also stays finite where s + b itself would overflow
    # (-1e308 + -1e308; distribution.stable). (Halving a subnormal score drops
    # its last bit: a change of 1e-323 in a logit.)
    # The shift leaves the softmax unchanged (distribution.shift-invariant) and
    # keeps exp() <= 1. It is a constant for differentiation, as the NumPy
    # reference takes it from the real part for complex steps: the softmax does
    # not depend on it, so its true gradient is zero, and taking it from the
    # detached half-logits makes that gradient exactly zero, not rounding noise.
    half = scores / 2 if bias is None else scores / 2 + bias / 2  # [..., Tq, Tk]
    shape = _checks.broadcast_shapes(
        "masked_softmax", ("scores", tuple(half.shape)), ("allowed", tuple(allowed.shape))
    )
    half = torch.broadcast_to(half, shape)  # [..., Tq, Tk]
    row_allowed = allowed.any(dim=-1, keepdim=True)  # [..., Tq, 1]
    real = torch.where(allowed, half.detach(), -torch.inf)  # [..., Tq, Tk]
    top = real.amax(dim=-1, keepdim=True)  # [..., Tq, 1]
    row_normalized = row_allowed  # rows whose denominator is not empty
    sink_half = None
    if sink is not None:
        # Note: the sink's half-logit joins the shift, so exp() <= 1 holds for it too.
        sink_half = torch.broadcast_to(sink / 2, top.shape)  # [..., Tq, 1]
        promoted = torch.promote_types(top.dtype, sink_half.dtype)
        top = torch.maximum(top.to(promoted), sink_half.detach().to(promoted))
        row_normalized = torch.ones_like(row_allowed)
    shift = torch.where(row_normalized, top, 0.0)  # [..., Tq, 1]
    # Note: doubling may overflow to -inf for logits far below the row's
    # largest (-1e308 against 1e308); exp(-inf) = 0 is then the correctly
    # rounded weight. Disallowed entries are replaced *before* exp, so NaN or
    # inf there reach neither the forward nor, through 0 * NaN, the backward.
    centred = torch.where(allowed, half - shift, 0)  # [..., Tq, Tk]
    shifted = 2 * centred  # [..., Tq, Tk]
    exps = torch.where(allowed, torch.exp(shifted), 0)  # [..., Tq, Tk]
    total = exps.sum(dim=-1, keepdim=True)  # [..., Tq, 1]
    if sink_half is not None:
        total = total + torch.exp(2 * (sink_half - shift))  # [..., Tq, 1]
    # Note: a fully masked row has total 0; it gets zero weights
    # (distribution.fully-masked-row) and log-sum-exp -inf (lse.fully-masked-row),
    # decided by the mask, not by the value of total, and the division and the
    # logarithm see 1 there, so its gradient is zero too.
    safe_total = torch.where(row_normalized, total, 1)  # [..., Tq, 1]
    weights = torch.where(row_allowed, exps / safe_total, 0)  # [..., Tq, Tk]
    lse = torch.where(row_normalized, 2 * shift + torch.log(safe_total), -torch.inf)
    return weights, lse[..., 0]  # [..., Tq, Tk], [..., Tq]


def masked_softmax(
    scores: torch.Tensor, allowed: torch.Tensor, /, *, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The weights of :func:`masked_normalize` (no sink)."""
    return masked_normalize(scores, allowed, bias=bias)[0]


def _scores(func: str, scores: object, /) -> torch.Tensor:
    """Checked ``scores [..., Tq, Tk]`` (rank >= 2, Tk >= 1)."""
    s = _inputs.floating(func, "scores", scores)
    _checks.rank_at_least(func, _inputs.describe("scores", s), 2, "[..., Tq, Tk]")
    _checks.nonempty(func, "scores.shape[-1]", s.shape[-1])
    return s


def _allowed_scores(
    func: str, s: torch.Tensor, allowed: torch.Tensor, /
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop ``-inf`` scores from ``allowed`` and check the allowed rest is finite."""
    shape = _checks.broadcast_shapes(
        func, ("scores", tuple(s.shape)), ("mask", tuple(allowed.shape))
    )
    s = torch.broadcast_to(s, shape)  # [..., Tq, Tk]
    allowed = allowed & (s != -torch.inf)  # [..., Tq, Tk]
    _inputs.finite(func, "scores", s, where=allowed, what="finite or -inf")
    return s, allowed


def _ones(s: torch.Tensor, /) -> torch.Tensor:
    """An all-``True`` mask of the scores' shape, on the scores' device."""
    return torch.ones(s.shape, dtype=torch.bool, device=s.device)


def pattern(allowed: BoolArray, like: torch.Tensor, /) -> torch.Tensor:
    """A boolean pattern of :mod:`attnref.masking` as a tensor on ``like``'s device."""
    return torch.from_numpy(np.ascontiguousarray(allowed)).to(like.device)


def allowed_normalize(
    func: str,
    scores: torch.Tensor,
    allowed: torch.Tensor,
    bias: torch.Tensor | None,
    /,
    *,
    sink: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention distribution of checked ``scores`` over a derived ``allowed`` set,
    and its log-sum-exp: ``(weights, lse)``.

    ``allowed`` is a validated mask joined with the patterns of
    :mod:`attnref.masking`; ``bias`` is the additive mask or ``None``; ``sink`` a
    checked sink logit per row (``[..., Tq, 1]``) or ``None``.
    """
    # Note: the additive mask is cast to the scores' dtype (masks take no
    # part in promotion, input.result-dtype): a huge finite bias such as
    # -1e30 becomes -inf in float16 and so disallows, as float16 would.
    b = None if bias is None else bias.to(scores.dtype)
    s, allowed = _allowed_scores(func, scores, allowed)
    return masked_normalize(s, allowed, bias=b, sink=sink)


def _distribution(
    func: str, scores: object, mask: torch.Tensor | None, /
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights, lse)`` of :func:`attention_distribution` and :func:`log_sum_exp`."""
    s = _scores(func, scores)
    if mask is None:
        return allowed_normalize(func, s, _ones(s), None)
    allowed, additive, shape = _inputs.mask(func, mask, tuple(s.shape))
    return allowed_normalize(func, s, torch.broadcast_to(allowed, shape), additive)


def attention_distribution(
    scores: torch.Tensor, /, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Masked softmax of the scores; see :func:`attnspec.attention_distribution`."""
    return _distribution("attention_distribution", scores, mask)[0]


def log_sum_exp(scores: torch.Tensor, /, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's log-normalizer of the distribution; see :func:`attnspec.log_sum_exp`."""
    return _distribution("log_sum_exp", scores, mask)[1]


def _local_mask(func: str, s: torch.Tensor, mask: torch.Tensor | None, /) -> torch.Tensor:
    """The boolean mask of a local distribution, broadcast with the scores."""
    if mask is None:
        return _ones(s)
    allowed, _, shape = _inputs.mask(func, mask, tuple(s.shape), additive_ok=False)
    return torch.broadcast_to(allowed, shape)


def local_m_distribution(
    scores: torch.Tensor, /, *, half_width: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Local-m distribution; see :func:`attnspec.local_m_distribution`."""
    func = "local_m_distribution"
    d = _checks.integer(func, "half_width", half_width, minimum=0)
    s = _scores(func, scores)
    allowed = _local_mask(func, s, mask)
    window = pattern(masking.local_window(s.shape[-2], s.shape[-1], half_width=d), s)
    s, allowed = _allowed_scores(func, s, allowed & window)
    return masked_softmax(s, allowed)


def local_p_position(
    query: torch.Tensor, W_p: torch.Tensor, v_p: torch.Tensor, /, *, source_length: int
) -> torch.Tensor:
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
    q, w, v = _inputs.promoted(q, w, v)
    hidden = torch.tanh(q @ w.T)  # [..., Tq, d_p]
    logit = hidden @ v  # [..., Tq]
    # Note: torch.sigmoid, not the reference's 1 / (1 + exp(-x)): both saturate
    # to 0 or 1 without NaN in the forward, but the composed form's backward
    # computes 0 * inf = NaN once exp(-x) overflows (x < -709 in float64),
    # while sigmoid's backward s * (1 - s) stays finite (input.unread-gradient).
    # The reference needs the composed form to stay complex-analytic; the twin
    # takes no complex input.
    sigmoid = torch.sigmoid(logit)  # [..., Tq]
    return (n - 1) * sigmoid  # [..., Tq]


def local_p_distribution(
    scores: torch.Tensor,
    positions: torch.Tensor,
    /,
    *,
    half_width: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local-p distribution; see :func:`attnspec.local_p_distribution`."""
    func = "local_p_distribution"
    d = _checks.integer(func, "half_width", half_width, minimum=1)
    s = _scores(func, scores)
    p = _inputs.floating(func, "positions", positions)
    _checks.rank_at_least(func, _inputs.describe("positions", p), 1, "[..., Tq]")
    _checks.same_size(func, "positions.shape[-1]", p.shape[-1], "scores.shape[-2]", s.shape[-2])
    _checks.broadcast_shapes(
        func, ("scores", tuple(s.shape[:-2])), ("positions", tuple(p.shape[:-1]))
    )
    _inputs.finite(func, "positions", p)
    allowed = _local_mask(func, s, mask)
    j = torch.arange(s.shape[-1], dtype=p.dtype, device=p.device)  # [Tk]
    offset = j - p[..., None]  # [..., Tq, Tk]
    # Note: the window is decided by attnref.masking on the positions' values in
    # float64, where every position of every dtype and j +- D are exact (the
    # window is not differentiated; a host copy of [..., Tq] positions is small).
    p_exact = p.detach().to(torch.float64).cpu().numpy()  # [..., Tq]
    window = pattern(masking.local_p_window(p_exact, s.shape[-1], half_width=d), p)
    s, allowed = _allowed_scores(func, s, allowed & window)
    weights = masked_softmax(s, allowed)  # [..., Tq, Tk]
    sigma = d / 2
    # Note: offsets outside the window are replaced by 0 before squaring: for a
    # far position (1e308) the square's backward 2 * offset overflows, and its
    # zero incoming gradient times inf would be NaN (input.unread-gradient).
    near = torch.where(allowed, offset, 0)  # [..., Tq, Tk]
    gaussian = torch.exp(-(near**2) / (2 * sigma**2))  # [..., Tq, Tk]
    # Note: the Gaussian multiplies after normalising and the rows are not
    # renormalised (local.p-gaussian); outside the window weights is exactly 0.
    # The result has the promoted dtype of scores and positions (input.result-dtype).
    return torch.where(allowed, weights * gaussian, 0)  # [..., Tq, Tk]
