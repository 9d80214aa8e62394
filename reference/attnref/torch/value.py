"""Steps 3 and 4 in PyTorch: the attention value and the concatenation with the query."""

from __future__ import annotations

import torch

from attnref import _checks
from attnref.torch import _inputs

__all__ = ["attention_value", "concatenate_context"]


def attention_value(weights: torch.Tensor, values: torch.Tensor, /) -> torch.Tensor:
    """Weighted sum of the values; see :func:`attnspec.attention_value`."""
    func = "attention_value"
    w = _inputs.floating(func, "weights", weights)
    _checks.rank_at_least(func, _inputs.describe("weights", w), 2, "[..., Tq, Tk]")
    v = _inputs.sequence(func, "values", values, "[..., Tk, d_v]")
    _checks.same_size(func, "values.shape[-2]", v.shape[-2], "weights.shape[-1]", w.shape[-1])
    _checks.nonempty(func, "weights.shape[-1]", w.shape[-1])
    batch = _checks.broadcast_shapes(
        func, ("weights", tuple(w.shape[:-2])), ("values", tuple(v.shape[:-2]))
    )
    _inputs.finite(func, "weights", w)
    w, v = _inputs.promoted(w, v)
    # Note: a value row with zero weight in every query row is not read
    # (value.zero-weight-unread): it is replaced by 0 before the product, so
    # NaN or inf there can turn 0 * NaN into NaN in neither the forward nor
    # the backward, and its gradient is exactly zero.
    read = torch.broadcast_to((w != 0).any(dim=-2), (*batch, w.shape[-1]))  # [..., Tk]
    v_full = torch.broadcast_to(v, (*batch, *v.shape[-2:]))  # [..., Tk, d_v]
    _inputs.finite(func, "values", v_full, where=read[..., None])
    v_read = torch.where(read[..., None], v_full, 0)  # [..., Tk, d_v]
    return w @ v_read  # [..., Tq, d_v]


def concatenate_context(context: torch.Tensor, query: torch.Tensor, /) -> torch.Tensor:
    """``[a_i; s_i]``, context first; see :func:`attnspec.concatenate_context`."""
    func = "concatenate_context"
    a = _inputs.sequence(func, "context", context, "[..., Tq, d_v]")
    s = _inputs.sequence(func, "query", query, "[..., Tq, d_q]")
    _checks.same_size(func, "query.shape[-2]", s.shape[-2], "context.shape[-2]", a.shape[-2])
    batch = _checks.broadcast_shapes(
        func, ("context", tuple(a.shape[:-2])), ("query", tuple(s.shape[:-2]))
    )
    _inputs.finite(func, "context", a)
    _inputs.finite(func, "query", s)
    a, s = _inputs.promoted(a, s)
    a_full = torch.broadcast_to(a, (*batch, *a.shape[-2:]))  # [..., Tq, d_v]
    s_full = torch.broadcast_to(s, (*batch, *s.shape[-2:]))  # [..., Tq, d_q]
    return torch.cat([a_full, s_full], dim=-1)  # [..., Tq, d_v + d_q]
