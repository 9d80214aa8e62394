"""Step 1 in NumPy: the score functions of :mod:`attnspec.scores`."""

from __future__ import annotations

import numpy as np

from attnref import _checks, _inputs
from attnspec.typing import Array, Scale

__all__ = [
    "score_additive",
    "score_concat",
    "score_dot",
    "score_general",
    "score_location",
    "score_scaled_dot",
]


def _query_keys(func: str, query: object, keys: object, /) -> tuple[Array, Array]:
    """Checked ``query [..., Tq, d_q]`` and ``keys [..., Tk, d_k]`` with broadcastable batches."""
    q = _inputs.sequence(func, "query", query, "[..., Tq, d_q]")
    k = _inputs.sequence(func, "keys", keys, "[..., Tk, d_k]")
    _checks.nonempty(func, "keys.shape[-2]", k.shape[-2])
    _checks.broadcast_shapes(func, ("query", q.shape[:-2]), ("keys", k.shape[:-2]))
    _inputs.finite(func, "query", q)
    _inputs.finite(func, "keys", k)
    return q, k


def _query_keys_same_d(func: str, query: object, keys: object, /) -> tuple[Array, Array]:
    q, k = _query_keys(func, query, keys)
    _checks.same_size(func, "keys.shape[-1]", k.shape[-1], "query.shape[-1]", q.shape[-1])
    return q, k


def score_dot(query: Array, keys: Array, /) -> Array:
    """Dot-product score; see :func:`attnspec.score_dot`."""
    q, k = _query_keys_same_d("score_dot", query, keys)
    return q @ np.swapaxes(k, -1, -2)  # [..., Tq, Tk]


def score_scaled_dot(query: Array, keys: Array, /, *, scale: Scale | None = None) -> Array:
    """Scaled dot-product score; see :func:`attnspec.score_scaled_dot`."""
    func = "score_scaled_dot"
    value = _checks.scale_value(func, scale)
    q, k = _query_keys_same_d(func, query, keys)
    if value is None:
        value = _checks.default_scale(k.shape[-1])
    # Note: the scale becomes a scalar of the result's real dtype, so a float32
    # call stays float32 (a float64 NumPy scalar would promote it under NEP 50).
    with np.errstate(over="ignore"):  # an overflowing scale is refused just below
        lam = np.asarray(value, dtype=np.result_type(q, k).type(0).real.dtype)
    _checks.representable(func, "scale", value, str(lam.dtype), bool(np.isfinite(lam)))
    # Note: the queries are scaled before the product, as FlashAttention does:
    # with the usual scale < 1 the product cannot overflow where the scaled
    # score is finite (distribution.stable).
    scores: Array = (q * lam) @ np.swapaxes(k, -1, -2)  # [..., Tq, Tk]
    return scores


def score_general(query: Array, keys: Array, W_a: Array, /) -> Array:
    """General (bilinear) score; see :func:`attnspec.score_general`."""
    func = "score_general"
    q, k = _query_keys(func, query, keys)
    w = _inputs.matrix(func, "W_a", W_a, "[d_q, d_k]")
    _checks.same_size(func, "W_a.shape[0]", w.shape[0], "query.shape[-1]", q.shape[-1])
    _checks.same_size(func, "W_a.shape[1]", w.shape[1], "keys.shape[-1]", k.shape[-1])
    _inputs.finite(func, "W_a", w)
    projected = q @ w  # [..., Tq, d_k]
    return projected @ np.swapaxes(k, -1, -2)  # [..., Tq, Tk]


def _tanh_layer(q: Array, k: Array, w_q: Array, w_k: Array, v: Array, /) -> Array:
    """``v^T tanh(W_q s_i + W_k h_j)`` for every pair (i, j)."""
    # Note: W [s; h] is computed as W_1 s + W_2 h, which is the same sum
    # without materialising the [..., Tq, Tk, d_q + d_k] concatenation.
    hq = q @ w_q.T  # [..., Tq, d_a]
    hk = k @ w_k.T  # [..., Tk, d_a]
    hidden = np.tanh(hq[..., :, None, :] + hk[..., None, :, :])  # [..., Tq, Tk, d_a]
    return hidden @ v  # [..., Tq, Tk]


def score_concat(query: Array, keys: Array, W_a: Array, v_a: Array, /) -> Array:
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


def score_additive(query: Array, keys: Array, W_q: Array, W_k: Array, v_a: Array, /) -> Array:
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


def score_location(query: Array, W_a: Array, /) -> Array:
    """Location-based score; see :func:`attnspec.score_location`."""
    func = "score_location"
    q = _inputs.sequence(func, "query", query, "[..., Tq, d_q]")
    w = _inputs.matrix(func, "W_a", W_a, "[Tk, d_q]")
    _checks.same_size(func, "W_a.shape[1]", w.shape[1], "query.shape[-1]", q.shape[-1])
    _inputs.finite(func, "query", q)
    _inputs.finite(func, "W_a", w)
    return q @ w.T  # [..., Tq, Tk]
