"""Step 1 in PyTorch: the score functions of :mod:`attnspec.scores`."""

from __future__ import annotations

import torch

from attnref import _checks
from attnref.torch import _inputs
from attnspec.typing import Scale

__all__ = [
    "score_additive",
    "score_concat",
    "score_dot",
    "score_general",
    "score_location",
    "score_scaled_dot",
]


def _query_keys(func: str, query: object, keys: object, /) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``query [..., Tq, d_q]`` and ``keys [..., Tk, d_k]`` with broadcastable batches."""
    q = _inputs.sequence(func, "query", query, "[..., Tq, d_q]")
    k = _inputs.sequence(func, "keys", keys, "[..., Tk, d_k]")
    _checks.nonempty(func, "keys.shape[-2]", k.shape[-2])
    _checks.broadcast_shapes(func, ("query", tuple(q.shape[:-2])), ("keys", tuple(k.shape[:-2])))
    _inputs.finite(func, "query", q)
    _inputs.finite(func, "keys", k)
    return q, k


def _query_keys_same_d(
    func: str, query: object, keys: object, /
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k = _query_keys(func, query, keys)
    _checks.same_size(func, "keys.shape[-1]", k.shape[-1], "query.shape[-1]", q.shape[-1])
    q, k = _inputs.promoted(q, k)
    return q, k


def score_dot(query: torch.Tensor, keys: torch.Tensor, /) -> torch.Tensor:
    """Dot-product score; see :func:`attnspec.score_dot`."""
    q, k = _query_keys_same_d("score_dot", query, keys)
    return q @ k.transpose(-1, -2)  # [..., Tq, Tk]


def score_scaled_dot(
    query: torch.Tensor, keys: torch.Tensor, /, *, scale: Scale | None = None
) -> torch.Tensor:
    """Scaled dot-product score; see :func:`attnspec.score_scaled_dot`."""
    func = "score_scaled_dot"
    value = _checks.scale_value(func, scale)
    q, k = _query_keys_same_d(func, query, keys)
    if value is None:
        value = _checks.default_scale(k.shape[-1])
    # Note: the scale becomes a scalar of the result's dtype, as in the NumPy
    # reference (score.default-scale); a Python float would instead be rounded
    # to float32, PyTorch's internal type for float16 and bfloat16 arithmetic.
    lam = torch.tensor(value, dtype=q.dtype, device=q.device)
    dtype = str(q.dtype).removeprefix("torch.")
    _checks.representable(func, "scale", value, dtype, bool(torch.isfinite(lam)))
    # Note: the queries are scaled before the product, as FlashAttention does:
    # with the usual scale < 1 the product cannot overflow where the scaled
    # score is finite (distribution.stable).
    return (q * lam) @ k.transpose(-1, -2)  # [..., Tq, Tk]


def score_general(query: torch.Tensor, keys: torch.Tensor, W_a: torch.Tensor, /) -> torch.Tensor:
    """General (bilinear) score; see :func:`attnspec.score_general`."""
    func = "score_general"
    q, k = _query_keys(func, query, keys)
    w = _inputs.matrix(func, "W_a", W_a, "[d_q, d_k]")
    _checks.same_size(func, "W_a.shape[0]", w.shape[0], "query.shape[-1]", q.shape[-1])
    _checks.same_size(func, "W_a.shape[1]", w.shape[1], "keys.shape[-1]", k.shape[-1])
    _inputs.finite(func, "W_a", w)
    q, k, w = _inputs.promoted(q, k, w)
    projected = q @ w  # [..., Tq, d_k]
    return projected @ k.transpose(-1, -2)  # [..., Tq, Tk]


def _tanh_layer(
    q: torch.Tensor, k: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, v: torch.Tensor, /
) -> torch.Tensor:
    """``v^T tanh(W_q s_i + W_k h_j)`` for every pair (i, j)."""
    # Note: W [s; h] is computed as W_1 s + W_2 h, which is the same sum
    # without materialising the [..., Tq, Tk, d_q + d_k] concatenation.
    q, k, w_q, w_k, v = _inputs.promoted(q, k, w_q, w_k, v)
    hq = q @ w_q.T  # [..., Tq, d_a]
    hk = k @ w_k.T  # [..., Tk, d_a]
    hidden = torch.tanh(hq[..., :, None, :] + hk[..., None, :, :])  # [..., Tq, Tk, d_a]
    return hidden @ v  # [..., Tq, Tk]


def score_concat(
    query: torch.Tensor, keys: torch.Tensor, W_a: torch.Tensor, v_a: torch.Tensor, /
) -> torch.Tensor:
    """Concat score; see :func:`attnspec.score_concat`."""
    func = "score_concat"
    q, k = _query_keys(func, query, keys)
    w = _inputs.matrix(func, "W_a", W_a, "[d_a, d_q + d_k]")
    v = _inputs.vector(func, "v_a", v_a, "[d_a]")
    d_q, d_k = q.shape[-1], k.shape[-1]
    _checks.same_size(
        func, "W_a.shape[1]", w.shape[1], "query.shape[-1] + keys.shape[-1]", d_q + d_k
    )
    _checks.same_size(func, "v_a.shape[0]", v.shape[0], "W_a.shape[0]", w.shape[0])
    _inputs.finite(func, "W_a", w)
    _inputs.finite(func, "v_a", v)
    return _tanh_layer(q, k, w[:, :d_q], w[:, d_q:], v)


def score_additive(
    query: torch.Tensor,
    keys: torch.Tensor,
    W_q: torch.Tensor,
    W_k: torch.Tensor,
    v_a: torch.Tensor,
    /,
) -> torch.Tensor:
    """Additive (Bahdanau) score; see :func:`attnspec.score_additive`."""
    func = "score_additive"
    q, k = _query_keys(func, query, keys)
    w_q = _inputs.matrix(func, "W_q", W_q, "[d_a, d_q]")
    w_k = _inputs.matrix(func, "W_k", W_k, "[d_a, d_k]")
    v = _inputs.vector(func, "v_a", v_a, "[d_a]")
    _checks.same_size(func, "W_q.shape[1]", w_q.shape[1], "query.shape[-1]", q.shape[-1])
    _checks.same_size(func, "W_k.shape[1]", w_k.shape[1], "keys.shape[-1]", k.shape[-1])
    _checks.same_size(func, "W_k.shape[0]", w_k.shape[0], "W_q.shape[0]", w_q.shape[0])
    _checks.same_size(func, "v_a.shape[0]", v.shape[0], "W_q.shape[0]", w_q.shape[0])
    for name, array in (("W_q", w_q), ("W_k", w_k), ("v_a", v)):
        _inputs.finite(func, name, array)
    return _tanh_layer(q, k, w_q, w_k, v)


def score_location(query: torch.Tensor, W_a: torch.Tensor, /) -> torch.Tensor:
    """Location-based score; see :func:`attnspec.score_location`."""
    func = "score_location"
    q = _inputs.sequence(func, "query", query, "[..., Tq, d_q]")
    w = _inputs.matrix(func, "W_a", W_a, "[Tk, d_q]")
    _checks.same_size(func, "W_a.shape[1]", w.shape[1], "query.shape[-1]", q.shape[-1])
    _inputs.finite(func, "query", q)
    _inputs.finite(func, "W_a", w)
    q, w = _inputs.promoted(q, w)
    return q @ w.T  # [..., Tq, Tk]
