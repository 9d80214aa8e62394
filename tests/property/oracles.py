"""Independent oracles for the property tests: the spec's formulas in extended precision.

Each oracle evaluates a formula of the spec directly, in ``numpy.longdouble``
(64-bit mantissa on x86, more elsewhere), with ``einsum`` or explicit loops, and
never calls :mod:`attnref`. Its own rounding error is below the bounds of
:mod:`tolerances`, which are derived for the dtypes the reference
computes in (float16 to float64).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

LD = np.longdouble
Exact: TypeAlias = npt.NDArray[np.longdouble]


def exact(x: npt.ArrayLike, /) -> Exact:
    """``x`` in extended precision (exact for float16, float32 and float64 inputs)."""
    return np.asarray(x, dtype=LD)


def allowed_keys(
    scores: npt.NDArray[Any], mask: npt.NDArray[Any] | None, /
) -> tuple[Exact, npt.NDArray[np.bool_]]:
    """``(logits, allowed)`` per ``distribution.softmax``.

    Key ``j`` is allowed when the boolean mask is True, or when the additive mask
    and the score are both greater than -inf; the logit is ``e + m`` (``m = 0`` for a
    boolean mask). Disallowed logits are set to 0 so that they are never read.
    """
    s = exact(scores)
    if mask is None:
        m = np.zeros_like(s)
        allowed = np.ones(s.shape, dtype=bool)
    elif np.asarray(mask).dtype == np.bool_:
        m = np.zeros_like(s)
        allowed = np.asarray(mask)
    else:
        m = exact(mask)
        allowed = m > -np.inf
    shape = np.broadcast_shapes(s.shape, m.shape, allowed.shape)
    allowed = np.broadcast_to(allowed, shape) & np.broadcast_to(s > -np.inf, shape)
    with np.errstate(invalid="ignore"):
        logits = np.where(allowed, np.broadcast_to(s, shape) + np.broadcast_to(m, shape), 0)
    return logits.astype(LD), allowed


def softmax(logits: Exact, allowed: npt.NDArray[np.bool_], /) -> Exact:
    """``exp(l_j) / Σ_allowed exp(l_k)`` per row; a row with nothing allowed is all zero."""
    top = np.where(allowed, logits, -np.inf).max(axis=-1, keepdims=True, initial=-np.inf)
    top = np.where(np.isfinite(top), top, 0)
    e = np.where(allowed, np.exp(np.where(allowed, logits - top, 0)), 0)
    total = e.sum(axis=-1, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1), 0).astype(LD)


def distribution(scores: npt.NDArray[Any], mask: npt.NDArray[Any] | None = None, /) -> Exact:
    """The attention distribution of ``distribution.softmax`` in extended precision."""
    return softmax(*allowed_keys(scores, mask))


def log_sum_exp(
    logits: Exact, allowed: npt.NDArray[np.bool_], /, sink: Exact | None = None
) -> Exact:
    """``log(exp(σ) + Σ_allowed exp(l_k))`` per row (``lse.formula``, ``sdpa.log-sum-exp``).

    ``sink`` (broadcastable to the rows, ``[..., Tq]``) is left out when ``None``; a row with
    nothing allowed and no sink is ``-inf``.
    """
    top = np.where(allowed, logits, -np.inf).max(axis=-1, initial=-np.inf)
    if sink is not None:
        top = np.maximum(top, sink)
    safe = np.where(np.isfinite(top), top, 0)
    e = np.where(allowed, np.exp(np.where(allowed, logits - safe[..., None], 0)), 0)
    total = e.sum(axis=-1)
    if sink is not None:
        total = total + np.exp(sink - safe)
    with np.errstate(divide="ignore"):
        return np.asarray(np.where(total > 0, safe + np.log(total), -np.inf), dtype=LD)


def sink_softmax(logits: Exact, allowed: npt.NDArray[np.bool_], sink: Exact, /) -> Exact:
    """``exp(l_j) / (exp(σ) + Σ_allowed exp(l_k))`` per row (``sdpa.sinks``); ``sink`` is
    ``[..., Tq]``; a row with nothing allowed is all zero."""
    lse = log_sum_exp(logits, allowed, sink)
    return np.asarray(
        np.where(allowed, np.exp(np.where(allowed, logits, 0) - lse[..., None]), 0), dtype=LD
    )


def dot_scores(query: npt.NDArray[Any], keys: npt.NDArray[Any], /) -> Exact:
    """``e_ij = s_i · h_j``."""
    return np.asarray(np.einsum("...id,...jd->...ij", exact(query), exact(keys)), dtype=LD)


def weighted_sum(weights: npt.NDArray[Any], values: npt.NDArray[Any], /) -> Exact:
    """``a_i = Σ_j α_ij v_j``."""
    return np.asarray(np.einsum("...ij,...jd->...id", exact(weights), exact(values)), dtype=LD)


def tanh_pair_scores(
    query: npt.NDArray[Any], keys: npt.NDArray[Any], W_a: npt.NDArray[Any], v_a: npt.NDArray[Any], /
) -> tuple[Exact, Exact]:
    """``(e, pre_magnitude)`` with ``e_ij = v_a · tanh(W_a [s_i; h_j])`` built by concatenation.

    ``pre_magnitude`` is ``max Σ|W_a||[s_i; h_j]|`` over pairs and hidden units: the
    size of the numbers whose rounding the score's error bound scales with.
    """
    q, k = exact(query), exact(keys)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    tq, tk = q.shape[-2], k.shape[-2]
    q_full = np.broadcast_to(q[..., :, None, :], (*batch, tq, tk, q.shape[-1]))
    k_full = np.broadcast_to(k[..., None, :, :], (*batch, tq, tk, k.shape[-1]))
    pair = np.concatenate([q_full, k_full], axis=-1)  # [..., Tq, Tk, d_q + d_k]
    w = exact(W_a)
    pre = np.einsum("...c,ac->...a", pair, w)
    magnitude = np.einsum("...c,ac->...a", np.abs(pair), np.abs(w))
    return np.einsum("...a,a->...", np.tanh(pre), exact(v_a)), magnitude.max(initial=0)
