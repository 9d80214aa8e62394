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

A boolean mask allows where it is ``True``; an additive mask where it is not
``-inf`` (``attnref._inputs.mask`` validates and splits a mask once, at the
public entry). :func:`allowed_positions` joins a mask's allowed set with the
causal pattern.

>>> causal_mask(2, 3, alignment="bottom_right").astype(int)
array([[1, 1, 0],
       [1, 1, 1]])
>>> local_window(3, 3, half_width=0).astype(int)
array([[1, 0, 0],
       [0, 1, 0],
       [0, 0, 1]])
"""

from __future__ import annotations

import numpy as np

from attnspec.typing import Array, BoolArray, CausalAlignment

__all__ = [
    "allowed_positions",
    "causal_mask",
    "causal_offset",
    "local_p_window",
    "local_window",
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


def allowed_positions(
    shape: tuple[int, ...],
    /,
    *,
    mask_allowed: BoolArray | None = None,
    is_causal: bool = False,
    alignment: CausalAlignment = "top_left",
) -> BoolArray:
    """``shape = [..., Tq, Tk]`` positions that a mask's allowed set and the causal flag allow.

    ``mask_allowed`` is the boolean allowed set of a validated mask (``None``:
    no mask), broadcastable to ``shape``; the result has ``shape``.
    """
    allowed: BoolArray = np.ones(shape, dtype=bool)
    if mask_allowed is not None:
        allowed = allowed & mask_allowed
    if is_causal:
        allowed = allowed & causal_mask(shape[-2], shape[-1], alignment=alignment)
    return allowed
