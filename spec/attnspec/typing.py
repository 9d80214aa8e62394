"""Type aliases shared by the spec, the NumPy reference and its users.

The spec is written against NumPy arrays; the PyTorch twin uses the same
names on tensors. Shapes are documented with named axes: ``...`` for batch
dimensions that broadcast, ``Tq`` queries, ``Tk`` keys, ``d_q``/``d_k``/``d_v``
feature sizes.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["Array", "BoolArray", "CausalAlignment", "Mask", "Scale", "ScoreKind", "Window"]

Array: TypeAlias = npt.NDArray[np.inexact[Any]]
"""A floating (or, for complex-step differentiation, complex) array."""

BoolArray: TypeAlias = npt.NDArray[np.bool_]
"""A boolean array; in a mask ``True`` means *may attend*."""

Mask: TypeAlias = npt.NDArray[np.bool_] | npt.NDArray[np.floating[Any]]
"""A boolean mask (``True`` = may attend) or an additive float mask (``-inf`` = may not)."""

Scale: TypeAlias = float
"""A finite real scale factor (an ``int`` is accepted too; ``bool`` is not)."""

ScoreKind: TypeAlias = Literal["dot", "scaled_dot", "general", "concat", "additive", "location"]
"""The score functions of :func:`attnspec.attention`, named as in Luong et al. (2015)."""

CausalAlignment: TypeAlias = Literal["top_left", "bottom_right"]
"""Where the causal diagonal sits when ``Tq != Tk`` (see ``sdpa.causal-top-left``)."""

Window: TypeAlias = tuple[int | None, int | None]
"""``(left, right)``: how many keys before and after its key-axis position a query may see
(``None``: unbounded on that side; see ``sdpa.window``)."""
