"""Steps 5 and 6 in PyTorch: the attentional hidden state and the output distribution."""

from __future__ import annotations

import torch

from attnref import _checks
from attnref.torch import _inputs
from attnref.torch.distribution import masked_softmax
from attnref.torch.value import concatenate_context

__all__ = ["attentional_hidden_state", "output_distribution"]


def _bias(func: str, name: str, b: object, weight: str, rows: int, /) -> torch.Tensor | None:
    """A checked bias with one entry per row of the weight matrix, or ``None``."""
    if b is None:
        return None
    bias = _inputs.vector(func, name, b, f"[{weight}.shape[0]]")
    _checks.same_size(func, f"{name}.shape[0]", bias.shape[0], f"{weight}.shape[0]", rows)
    _inputs.finite(func, name, bias)
    return bias


def attentional_hidden_state(
    context: torch.Tensor,
    query: torch.Tensor,
    W_c: torch.Tensor,
    b_c: torch.Tensor | None = None,
    /,
) -> torch.Tensor:
    """``tanh(W_c [a; s] + b_c)``; see :func:`attnspec.attentional_hidden_state`."""
    func = "attentional_hidden_state"
    w = _inputs.matrix(func, "W_c", W_c, "[d_h, d_v + d_q]")
    a = _inputs.sequence(func, "context", context, "[..., Tq, d_v]")
    s = _inputs.sequence(func, "query", query, "[..., Tq, d_q]")
    width = a.shape[-1] + s.shape[-1]
    _checks.same_size(
        func, "W_c.shape[1]", w.shape[1], "context.shape[-1] + query.shape[-1]", width
    )
    _inputs.finite(func, "W_c", w)
    bias = _bias(func, "b_c", b_c, "W_c", w.shape[0])
    stacked = concatenate_context(a, s)  # [..., Tq, d_v + d_q]
    stacked, w = _inputs.promoted(stacked, w)
    pre = stacked @ w.T  # [..., Tq, d_h]
    if bias is not None:
        pre = pre + bias  # [..., Tq, d_h]
    return torch.tanh(pre)  # [..., Tq, d_h]


def output_distribution(
    attentional_state: torch.Tensor, W_y: torch.Tensor, b_y: torch.Tensor | None = None, /
) -> torch.Tensor:
    """``softmax(W_y s~ + b_y)``; see :func:`attnspec.output_distribution`."""
    func = "output_distribution"
    h = _inputs.sequence(func, "attentional_state", attentional_state, "[..., Tq, d_h]")
    w = _inputs.matrix(func, "W_y", W_y, "[V, d_h]")
    _checks.same_size(func, "W_y.shape[1]", w.shape[1], "attentional_state.shape[-1]", h.shape[-1])
    _inputs.finite(func, "attentional_state", h)
    _inputs.finite(func, "W_y", w)
    bias = _bias(func, "b_y", b_y, "W_y", w.shape[0])
    h, w = _inputs.promoted(h, w)
    logits = h @ w.T  # [..., Tq, V]
    if bias is not None:
        logits = logits + bias  # [..., Tq, V]
    _inputs.finite(func, "logits W_y @ attentional_state + b_y", logits)
    allowed = torch.ones(logits.shape, dtype=torch.bool, device=logits.device)  # [..., Tq, V]
    return masked_softmax(logits, allowed)  # [..., Tq, V]
