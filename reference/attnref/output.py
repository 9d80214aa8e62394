"""Steps 5 and 6 in NumPy: the attentional hidden state and the output distribution."""

from __future__ import annotations

import numpy as np

from attnref import _checks, _inputs
from attnref.distribution import masked_softmax
from attnref.value import concatenate_context
from attnspec.typing import Array

__all__ = ["attentional_hidden_state", "output_distribution"]


def _bias(func: str, name: str, b: object, weight: str, rows: int, /) -> Array | None:
    """A checked bias with one entry per row of the weight matrix, or ``None``."""
    if b is None:
        return None
    bias = _inputs.vector(func, name, b, f"[{weight}.shape[0]]")
    _checks.same_size(func, f"{name}.shape[0]", bias.shape[0], f"{weight}.shape[0]", rows)
    _inputs.finite(func, name, bias)
    return bias


def attentional_hidden_state(
    context: Array, query: Array, W_c: Array, b_c: Array | None = None, /
) -> Array:
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
    pre = stacked @ w.T  # [..., Tq, d_h]
    if bias is not None:
        pre = pre + bias  # [..., Tq, d_h]
    hidden: Array = np.tanh(pre)  # [..., Tq, d_h]
    return hidden


def output_distribution(attentional_state: Array, W_y: Array, b_y: Array | None = None, /) -> Array:
    """``softmax(W_y s~ + b_y)``; see :func:`attnspec.output_distribution`."""
    func = "output_distribution"
    h = _inputs.sequence(func, "attentional_state", attentional_state, "[..., Tq, d_h]")
    w = _inputs.matrix(func, "W_y", W_y, "[V, d_h]")
    _checks.same_size(func, "W_y.shape[1]", w.shape[1], "attentional_state.shape[-1]", h.shape[-1])
    _inputs.finite(func, "attentional_state", h)
    _inputs.finite(func, "W_y", w)
    bias = _bias(func, "b_y", b_y, "W_y", w.shape[0])
    # Note: the product may overflow for huge finite weights; the result is
    # then rejected by the finiteness check below, not warned about.
    with np.errstate(over="ignore", invalid="ignore"):
        logits = h @ w.T  # [..., Tq, V]
        if bias is not None:
            logits = logits + bias  # [..., Tq, V]
    _inputs.finite(func, "logits W_y @ attentional_state + b_y", logits)
    return masked_softmax(logits, np.ones(logits.shape, dtype=bool))  # [..., Tq, V]
