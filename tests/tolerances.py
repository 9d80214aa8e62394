"""How far apart two float64 implementations of the same formula may be: derived bounds.

Every tolerance of the twin tests is computed here from the inputs, never
written as a literal in a test. For two implementations of one formula in
float64, each within the classical rounding-error bound of the exact result,
the difference is at most

.. math::

    c \\cdot n \\cdot (\\varepsilon \\cdot \\text{scale} + \\eta)

with :math:`\\varepsilon` = ``finfo(float64).eps``, :math:`n` the number of
roundings that accumulate along the longest chain (the length of a dot
product or a sum: ``d``, ``Tk``), *scale* the magnitude of what is summed
(:math:`\\sum |x_i y_i|`, not :math:`|\\sum x_i y_i|`, so that cancellation is
covered), :math:`\\eta` the smallest subnormal (with gradual underflow a
rounding may be off by that much absolutely, Higham section 2.1) and :math:`c`
a small constant per kind of computation, each with its reason in :data:`RULES`.
The classical bound is
:math:`|\\mathrm{fl}(\\sum x_i) - \\sum x_i| \\le \\gamma_{n-1} \\sum |x_i|` with
:math:`\\gamma_n = n u / (1 - n u)` and :math:`u = \\varepsilon / 2` (Higham,
*Accuracy and Stability of Numerical Algorithms*, 2nd ed., section 3.1).

Errors in the logits of a softmax are amplified by
:func:`softmax_amplification`, an exact bound rather than a first-order one,
so that large logits (``1e300``) are covered honestly: when the logits
themselves may differ by more than a unit, the bound says so by becoming
vacuous instead of passing a false check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["EPS", "ETA", "RULES", "Kind", "Rule", "bound", "softmax_amplification"]

EPS = float(np.finfo(np.float64).eps)
"""Machine epsilon of float64, twice the unit roundoff ``u``."""

ETA = float(np.finfo(np.float64).smallest_subnormal)
"""The smallest subnormal float64: with gradual underflow a rounding may also be off by
this much absolutely, so each bound adds ``c * n * ETA`` (Higham, section 2.1)."""

Kind = Literal["sum", "softmax", "elementwise", "exact"]


@dataclass(frozen=True)
class Rule:
    """The constant ``c`` of one kind of computation and why it suffices."""

    c: float
    reason: str


RULES: dict[Kind, Rule] = {
    "sum": Rule(
        2.0,
        "a sum or dot product of n terms in any order: each side is within "
        "gamma_n <= 1.01 n u of the exact value relative to sum |terms|, so the two "
        "within about n eps; c = 2 covers the products' own roundings and one final "
        "scaling or bias addition.",
    ),
    "softmax": Rule(
        4.0,
        "weights in [0, 1] from identical logits over n keys: exp (1 ulp), the n-term "
        "sum and the division give at most (n + 2) u relative error per side, so "
        "(n + 2) eps for the two; c n >= n + 2 for every n >= 1 with room to spare.",
    ),
    "elementwise": Rule(
        2.0,
        "a chain of n elementwise operations each within 1 ulp (exp, tanh, sigmoid, "
        "products) and with derivative at most 1 in magnitude along the chain, so each "
        "side is within n eps relative to scale; c = 2 for the two sides.",
    ),
    "exact": Rule(
        0.0,
        "copies and rearrangements (concatenation, broadcasting, repeated heads), and "
        "dot products of integers whose partial sums stay below 2**53: no rounding.",
    ),
}
"""The constant ``c`` per kind of computation, each with its one-line reason."""


def bound(kind: Kind, n: int, scale: npt.ArrayLike, /) -> npt.NDArray[np.float64]:
    """``c * n * (eps * scale + eta)``: the largest difference two implementations may show.

    ``n`` is the number of roundings along the longest chain (at least 1);
    ``scale`` is elementwise (an array bounds each element separately); ``eta``
    (:data:`ETA`) covers results in the subnormal range.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1 (the number of roundings); got {n}")
    magnitude = EPS * np.asarray(scale, dtype=np.float64) + ETA
    return np.asarray(RULES[kind].c * n * magnitude)


def softmax_amplification(delta: npt.ArrayLike, /) -> npt.NDArray[np.float64]:
    """How much a logit error ``delta`` can change a softmax weight, relative to the weight.

    If every logit of a row moves by at most ``delta``, each numerator
    :math:`e^{x_j}` moves by a factor in :math:`[e^{-\\delta}, e^{\\delta}]` and so
    does the denominator, so each weight :math:`\\alpha_j` moves by at most
    :math:`\\alpha_j (e^{2\\delta} - 1)`. Exact, not first order; ``inf`` when
    the logits may differ by hundreds (the check is then vacuous, not false).
    """
    d = np.asarray(delta, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.asarray(np.expm1(2 * d))
