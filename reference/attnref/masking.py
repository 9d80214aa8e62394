r"""Which keys each query may attend to: the one place where masks, the causal flag and the
local windows become a set of allowed positions.

Every part of the project derives allowed positions here: the NumPy reference
and its VJPs, the PyTorch twin (the patterns depend on sizes and positions
only, so it converts them), the Hypothesis strategies and the oracle. A new
structural restriction (a sliding window, per-batch key lengths) is added here
once and reaches them all.

The patterns, for query row ``i`` and key ``j`` (0-based):

- causal (``sdpa.causal-top-left``, ``sdpa.causal-bottom-right``): ``j <= i + o``
  with the offset ``o`` of :func:`causal_offset`: ``0`` top-left, ``Tk - Tq``
  bottom-right (the last query sees the last key);
- local-m (``local.m-position``, ``local.window``): ``|j - i| <= D``;
- local-p (``local.p-window``): ``|j - p_i| <= D`` for real positions ``p_i``,
  decided exactly as ``j - D <= p_i <= j + D`` (``j ± D`` are small integers, exact
  in every dtype, where ``fl(j - p_i)`` could round a key just beyond ``D`` into
  the window), on the real part so that complex-step perturbations move no key.

- window ``(left, right)`` (``sdpa.window``): ``i' - left <= j <= i' + right``, either
  side unbounded when ``None``;
- key lengths (``sdpa.key-lengths``): ``j < L_b`` for batch item ``b``.

Causal masks and windows are measured from the key-axis position ``i' = i + o``
of query row ``i`` (:func:`query_positions`): the offset ``o`` is
``query_offset`` when one is given, else that of the causal alignment, where
bottom-right with key lengths aligns each batch item's last query with its
own last valid key (``o_b = L_b - Tq``).

A boolean mask allows where it is ``True``; an additive mask where it is not
``-inf`` (``attnref._inputs.mask`` validates and splits a mask once, at the
public entry). :func:`allowed_positions` joins a mask's allowed set with the
structural patterns.

>>> causal_mask(2, 3, alignment="bottom_right").astype(int)
array([[1, 1, 0],
       [1, 1, 1]])
>>> local_window(3, 3, half_width=0).astype(int)
array([[1, 0, 0],
       [0, 1, 0],
       [0, 0, 1]])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from attnspec.typing import Array, BoolArray, CausalAlignment, Window

__all__ = [
    "allowed_positions",
    "causal_mask",
    "causal_offset",
    "local_p_window",
    "local_window",
    "query_positions",
]


def causal_offset(t_q: int, t_k: int, /, *, alignment: CausalAlignment) -> int:
    """The key-axis position of query row 0: ``0`` top-left, ``Tk - Tq`` bottom-right."""
    return 0 if alignment == "top_left" else t_k - t_q


def causal_mask(t_q: int, t_k: int, /, *, alignment: CausalAlignment) -> BoolArray:
    """``[Tq, Tk]`` boolean causal mask, ``True`` = may attend (``sdpa.causal-*``)."""
    i = np.arange(t_q)[:, None]  # [Tq, 1]
    j = np.arange(t_k)[None, :]  # [1, Tk]
    allowed: BoolArray = j <= i + causal_offset(t_q, t_k, alignment=alignment)
    return allowed  # [Tq, Tk]


def local_window(t_q: int, t_k: int, /, *, half_width: int) -> BoolArray:
    """``[Tq, Tk]`` local-m window: key ``j`` is allowed to query ``i`` when ``|j - i| <= D``."""
    i = np.arange(t_q)[:, None]  # [Tq, 1]
    j = np.arange(t_k)[None, :]  # [1, Tk]
    window: BoolArray = np.abs(j - i) <= half_width
    return window  # [Tq, Tk]


def local_p_window(positions: Array, t_k: int, /, *, half_width: int) -> BoolArray:
    """``[..., Tq, Tk]`` local-p window of real ``positions [..., Tq]``: ``|j - p_i| <= D``."""
    j = np.arange(t_k, dtype=positions.real.dtype)  # [Tk]
    p = positions.real[..., None]  # [..., Tq, 1]
    window: BoolArray = (j - half_width <= p) & (p <= j + half_width)
    return window  # [..., Tq, Tk]


def _per_batch(x: npt.ArrayLike, rank: int, /) -> npt.NDArray[Any]:
    """A scalar, or a ``[B]`` array along the first batch axis, shaped to broadcast with
    ``[..., Tq, Tk]`` of batch rank ``rank``."""
    a = np.asarray(x)
    if a.ndim == 0:
        return a
    return a.reshape(a.shape[0], *(1,) * (rank - 1), 1, 1)


def query_positions(
    t_q: int,
    t_k: int,
    rank: int,
    /,
    *,
    alignment: CausalAlignment = "top_left",
    query_offset: npt.ArrayLike | None = None,
    key_lengths: npt.ArrayLike | None = None,
) -> npt.NDArray[Any]:
    """The key-axis position ``i' = i + o`` of each query row, ``[Tq, 1]`` or
    ``[B, 1, ..., Tq, 1]`` for per-batch offsets (``rank`` batch axes).

    ``o`` is ``query_offset`` (a scalar or one per batch item) when given;
    otherwise ``0`` for top-left and ``Tk - Tq`` for bottom-right, with
    ``L_b - Tq`` in place of ``Tk - Tq`` when ``key_lengths`` are given.
    """
    if query_offset is not None:
        offset = _per_batch(query_offset, rank)
    elif alignment == "bottom_right" and key_lengths is not None:
        offset = _per_batch(key_lengths, rank) - t_q
    else:
        offset = np.asarray(causal_offset(t_q, t_k, alignment=alignment))
    positions: npt.NDArray[Any] = np.arange(t_q)[:, None] + offset
    return positions


def allowed_positions(
    shape: tuple[int, ...],
    /,
    *,
    mask_allowed: BoolArray | None = None,
    is_causal: bool = False,
    alignment: CausalAlignment = "top_left",
    window: Window | None = None,
    query_offset: npt.ArrayLike | None = None,
    key_lengths: npt.ArrayLike | None = None,
) -> BoolArray:
    """``shape = [..., Tq, Tk]`` positions that the mask and the structural options allow.

    ``mask_allowed`` is the boolean allowed set of a validated mask (``None``:
    no mask), broadcastable to ``shape``; ``query_offset`` and ``key_lengths``
    are validated scalars or ``[B]`` arrays along the first batch axis. The
    result has ``shape``.
    """
    t_q, t_k = shape[-2], shape[-1]
    allowed: BoolArray = np.ones(shape, dtype=bool)
    if mask_allowed is not None:
        allowed = allowed & mask_allowed
    j = np.arange(t_k)  # [Tk]
    if is_causal or window is not None:
        i = query_positions(
            t_q,
            t_k,
            len(shape) - 2,
            alignment=alignment,
            query_offset=query_offset,
            key_lengths=key_lengths,
        )  # [..., Tq, 1]
        if is_causal:
            allowed = allowed & (j <= i)
        if window is not None:
            left, right = window
            if left is not None:
                allowed = allowed & (j >= i - left)
            if right is not None:
                allowed = allowed & (j <= i + right)
    if key_lengths is not None:
        allowed = allowed & (j < _per_batch(key_lengths, len(shape) - 2))
    return allowed
