"""Witnesses of rounding: the naive evaluation on variants of a case.

The oracle's allowance is a derived bound (:mod:`attnref.oracle.tolerance`);
the witnesses test that derivation: the plain evaluation in a dtype, on every
witness, must stay within the bound (``tests/test_oracle_directions.py``).
One naive evaluation can be luckily exact, so there are several *witnesses*:

- the case with its key axis in other orders (the exact result does not
  depend on the order of the keys with their values and mask columns, but
  every rounded reduction over them does);
- the case with every input moved to a neighbouring number of the dtype, one
  or two units in the last place away, judged against the truth of the
  original case. A backward-stable implementation (one that pre-scales the
  queries, say) is entitled to that much; the witness measures what it
  costs on this input, cancellation included.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from attnref.oracle.conventions import Conventions
from attnref.oracle.expected import Evaluation, evaluate, explicit_mask
from attnref.oracle.protocol import Case
from attnref.oracle.rounding import round_to
from attnref.oracle.tolerance import EPSILON

__all__ = ["ORDERINGS", "key_orderings", "naive_evaluations", "neighbour"]

ORDERINGS = 3
"""Orders of the key axis the naive evaluation runs in: as given, reversed, and one shuffle."""


def key_orderings(
    case: Case, conventions: Conventions, /
) -> list[tuple[Case, npt.NDArray[np.intp]]]:
    """``ORDERINGS`` variants of ``case`` with the permutation of the key axis each applies.

    The first variant is ``case`` itself. In the others the keys, the values
    and the mask's key axis are permuted alike, and a causal flag is folded
    into an explicit mask first (it refers to positions).
    """
    key_name, value_name = case.key_name, case.value_name
    t_k = case.arrays[key_name].shape[-2]
    identity = np.arange(t_k)
    variants = [(case, identity)]
    if t_k == 1:
        return variants * ORDERINGS
    rng = np.random.default_rng(t_k)
    mask = explicit_mask(case, conventions)
    options = {k: v for k, v in case.options.items() if k != "is_causal"}
    for perm in (identity[::-1].copy(), rng.permutation(t_k))[: ORDERINGS - 1]:
        arrays = dict(case.arrays)
        arrays[key_name] = np.take(case.arrays[key_name], perm, axis=-2)
        arrays[value_name] = np.take(case.arrays[value_name], perm, axis=-2)
        permuted = None if mask is None else np.take(mask, perm, axis=-1)
        variants.append((replace(case, arrays=arrays, mask=permuted, options=options), perm))
    return variants


def neighbour(case: Case, dtype: str, /) -> Case:
    """``case`` with each finite nonzero input moved one or two ulps of ``dtype`` away.

    The direction is seeded by the case, so the witness is reproducible.
    """
    rng = np.random.default_rng(len(case.arrays) + sum(a.size for a in case.arrays.values()))
    moved = {}
    for name, a in case.arrays.items():
        # Note: a relative step of 1.5 eps is more than one spacing and less
        # than two anywhere in a binade, so rounding lands on a neighbour.
        step = 1.0 + 1.5 * EPSILON[dtype] * rng.choice([-1.0, 1.0], size=a.shape)
        with np.errstate(invalid="ignore", over="ignore"):
            moved[name] = np.where(np.isfinite(a), round_to(dtype, a * step), a)
    return replace(case, arrays=moved)


def _witnesses(
    case: Case, conventions: Conventions, dtype: str
) -> list[tuple[Case, npt.NDArray[np.intp]]]:
    """The key orderings of the case, and the case's neighbour in its own order."""
    variants = key_orderings(case, conventions)
    variants.append((neighbour(case, dtype), variants[0][1]))
    return variants


def naive_evaluations(case: Case, conventions: Conventions, dtype: str, /) -> list[Evaluation]:
    """The naive evaluation in ``dtype`` on every witness, mapped back to the case's key order."""
    results = []
    for variant, perm in _witnesses(case, conventions, dtype):
        e = evaluate(variant, conventions, dtype=dtype)
        inverse = np.argsort(perm)
        results.append(Evaluation(e.context, np.take(e.weights, inverse, axis=-1)))
    return results
