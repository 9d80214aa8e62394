"""The oracle's tolerance model: the one place where its error bounds live.

An implementation computing in dtype ``T`` is compared with the *truth* (the
reference evaluated in extended precision on the very inputs the
implementation saw, i.e. rounded to ``T``). It may differ from the truth by

.. math::

    \\text{allowed} = k \\cdot \\max|\\text{naive}_T - \\text{truth}|
    + f \\cdot \\varepsilon_T \\cdot \\max|\\text{truth}|

where ``naive_T`` is the plain reference evaluated in ``T`` itself. The
first term scales with what ``T`` can deliver on this very input (it grows
with the reduction length and with the conditioning of the softmax); the
second is a rounding floor for inputs on which the naive evaluation happens
to be exact. This is the rule of the FlashAttention and PyTorch test suites
(FIELD-NOTES), with the constants below. A float64 implementation is thereby
held to float64 accuracy: one that computes in float32 is off by about
:math:`10^{-7}`, millions of times its allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

__all__ = [
    "EPSILON",
    "K_GRADIENT",
    "K_OUTPUT",
    "ROUNDING_FLOOR",
    "Tolerance",
    "truth_dtype",
]

EPSILON: Final[dict[str, float]] = {
    "float64": float(np.finfo(np.float64).eps),  # 2**-52
    "float32": float(np.finfo(np.float32).eps),  # 2**-23
    "float16": float(np.finfo(np.float16).eps),  # 2**-10
    "bfloat16": 2.0**-7,  # 8 significand bits; NumPy has no bfloat16 type
}
"""Machine epsilon (spacing of the numbers at 1) of each dtype the oracle knows."""

K_OUTPUT: Final = 3.0
"""Outputs may be 3x as wrong as the naive same-dtype evaluation: a different
but sound summation order, fused or blocked softmax stays within 2x in the
FlashAttention suite; one more for the max-abs statistic over small samples."""

K_GRADIENT: Final = 5.0
"""Gradients pass through one more softmax Jacobian and two more reductions
than outputs, so their error compounds; FlashAttention allows 3x, PyTorch 5x."""

ROUNDING_FLOOR: Final = 8.0
"""Floor in units of eps x the result's magnitude: the handful of roundings
between scores and context (scale, shift, exp, sum, divide, weighted sum)
when the naive evaluation happens to be exact (e.g. ``Tk = 1``)."""


def truth_dtype() -> np.dtype[Any]:
    """The dtype of the truth: ``longdouble`` where it is wider than float64.

    On x86-64 Linux ``longdouble`` has a 64-bit significand (eps ~ 1.1e-19),
    enough to measure float64 errors; where it is not wider (e.g. Apple
    silicon), float64 is returned and float64 targets are judged by the
    rounding floor alone.
    """
    if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps:
        return np.dtype(np.longdouble)
    return np.dtype(np.float64)


@dataclass(frozen=True)
class Tolerance:
    """The allowance for one compared quantity.

    Attributes
    ----------
    dtype
        The implementation's dtype.
    naive_error
        ``max|naive_T - truth|`` on this input.
    magnitude
        ``max|truth|`` on this input.
    gradient
        Whether the quantity is a gradient (uses :data:`K_GRADIENT`).
    """

    dtype: str
    naive_error: float
    magnitude: float
    gradient: bool = False

    @property
    def allowed(self) -> float:
        """The largest max-abs error that passes."""
        k = K_GRADIENT if self.gradient else K_OUTPUT
        return k * self.naive_error + ROUNDING_FLOOR * EPSILON[self.dtype] * self.magnitude

    def ratio(self, error: float) -> float:
        """``error / allowed``: at most 1 passes; ``inf`` for any error when nothing is allowed."""
        allowed = self.allowed
        if allowed == 0.0:
            return 0.0 if error == 0.0 else float("inf")
        return error / allowed
