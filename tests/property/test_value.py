"""Properties of the attention value and the concatenation (clauses ``value.*``, ``concat.*``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import oracles
from hypothesis import example, given
from hypothesis import strategies as st

import attnref
import tolerances as tol
from attnref.testing import strategies as ats
from attnspec.typing import Array


@dataclass(frozen=True, eq=False)
class Weighted:
    """Weights ``[..., Tq, Tk]`` and values ``[..., Tk, d_v]`` of one dtype."""

    weights: Array
    values: Array


@st.composite
def weighted(
    draw: st.DrawFn,
    *,
    distributions: bool = False,
    regimes: tuple[ats.Regime, ...] = ("well_conditioned", "ties", "near_ties"),
) -> Weighted:
    """Arbitrary weights, or (``distributions``) rows of a softmax with an allowed key each."""
    inputs = draw(
        ats.attention_inputs(
            regimes=regimes, mask_kinds=("none", "boolean"), fully_masked_rows=False
        )
    )
    s, dt = inputs.shapes, inputs.query.dtype
    if distributions:
        scores = draw(ats.score_arrays(dt, (*s.query_batch, s.tq, s.tk)))
        weights = attnref.attention_distribution(scores, mask=inputs.mask)
    else:
        weights = draw(ats.well_conditioned_arrays(dt, (*s.mask_batch, s.tq, s.tk)))
    return Weighted(weights, inputs.values)


def weighted_magnitude(w: Array, v: Array, /) -> oracles.Exact:
    """``Σ_j |α_ij| |v_jd|``: what the rounding of a weighted sum scales with."""
    return oracles.weighted_sum(np.abs(w), np.abs(v))


@given(weighted())
@example(
    Weighted(np.array([[0.25, 0.75]], dtype=np.float16), np.array([[1.0], [-3.0]], np.float16))
)
def test_context_is_the_weighted_sum_of_the_values(case: Weighted) -> None:
    """value.weighted-sum: Row i of the result is a_i = sum_j alpha_ij v_j."""
    got = attnref.attention_value(case.weights, case.values)
    t_k = case.values.shape[-2]
    bound = tol.dot_bound(got.dtype, t_k, weighted_magnitude(case.weights, case.values))
    expected = oracles.weighted_sum(case.weights, case.values)
    tol.assert_within(got, expected, bound, what="context")


@given(weighted(distributions=True, regimes=("well_conditioned", "large", "ties")))
def test_context_lies_in_the_convex_hull_of_the_values(case: Weighted) -> None:
    """value.convex-hull: When every row of the weights is a probability distribution, each
    context row lies in the convex hull of the value rows: every coordinate is between that
    coordinate's minimum and maximum over the values (here: over the values with a positive
    weight, which is stronger)."""
    w, v = case.weights, case.values
    got = oracles.exact(attnref.attention_value(w, v))
    shape = np.broadcast_shapes(w.shape[:-2], v.shape[:-2])
    w_full = np.broadcast_to(w, (*shape, *w.shape[-2:]))[..., :, :, None]  # [..., Tq, Tk, 1]
    v_full = np.broadcast_to(v, (*shape, *v.shape[-2:]))[..., None, :, :]  # [..., 1, Tk, d_v]
    used = w_full > 0
    low = np.where(used, v_full, np.inf).min(axis=-2)  # [..., Tq, d_v]
    high = np.where(used, v_full, -np.inf).max(axis=-2)
    t_k = v.shape[-2]
    size = oracles.exact(np.abs(v_full).max(axis=-2))
    # the weighted sum's rounding, and the row sum's distance from 1 (the weights are rounded)
    bound = (tol.gamma(t_k, w.dtype) + tol.row_sum_bound(w.dtype, t_k)) * size
    assert np.all(got >= low - bound)
    assert np.all(got <= high + bound)


@st.composite
def linear_cases(draw: st.DrawFn) -> tuple[Weighted, Array, float, float]:
    """Weights, two value arrays of one shape, and two coefficients."""
    case = draw(weighted())
    other = draw(ats.well_conditioned_arrays(case.values.dtype, case.values.shape))
    coefficient = st.floats(-2, 2, allow_subnormal=False)
    return case, other, draw(coefficient), draw(coefficient)


@given(linear_cases())
def test_context_is_linear_in_the_values(args: tuple[Weighted, Array, float, float]) -> None:
    """value.linear: The result is linear in the values: for fixed weights, a(beta V1 + gamma V2)
    = beta a(V1) + gamma a(V2) (to rounding)."""
    case, v2, beta, gamma = args
    w, v1 = case.weights, case.values
    dt = v1.dtype
    b, g = dt.type(beta), dt.type(gamma)
    mixed = attnref.attention_value(w, b * v1 + g * v2)
    combined = b * attnref.attention_value(w, v1) + g * attnref.attention_value(w, v2)
    size = abs(float(b)) * weighted_magnitude(w, v1) + abs(float(g)) * weighted_magnitude(w, v2)
    # each side: two scalings and a sum (3 roundings) and a weighted sum of Tk terms
    t_k = v1.shape[-2]
    bound = 2 * tol.dot_bound(dt, t_k, size, extra=3)
    tol.assert_within(mixed, combined, bound, what="linearity")


@given(weighted(), st.data())
def test_values_with_zero_weight_everywhere_are_not_read(
    case: Weighted, data: st.DataObject
) -> None:
    """value.zero-weight-unread: A value row whose weight is exactly zero in every query row of
    its batch element is not read: NaN or infinities there raise nothing and leave the result
    unchanged."""
    w, v = case.weights, case.values
    dropped = data.draw(
        st.lists(st.integers(0, w.shape[-1] - 1), max_size=w.shape[-1], unique=True)
    )
    w = w.copy()
    w[..., dropped] = 0
    unread = ats.unread_by_mask(w != 0, v.shape[:-1], axis=-1)
    poisoned = data.draw(ats.poisoned(v, unread))
    np.testing.assert_array_equal(
        attnref.attention_value(w, poisoned), attnref.attention_value(w, v)
    )


@given(ats.attention_inputs(mask_kinds=("none",)))
def test_concatenation_puts_the_context_first(inputs: ats.AttentionInputs) -> None:
    """concat.context-first: The result is [a_i; s_i]: the context's d_v features first, then the
    query's d_q features, batch dimensions broadcast."""
    s = inputs.shapes
    query = inputs.query
    context = np.resize(inputs.values, (*s.values_batch, s.tq, s.d_v))  # one row per query
    got = attnref.concatenate_context(context, query)
    batch = np.broadcast_shapes(context.shape[:-2], query.shape[:-2])
    assert got.shape == (*batch, s.tq, s.d_v + s.d_q)
    np.testing.assert_array_equal(
        got[..., : s.d_v], np.broadcast_to(context, (*batch, s.tq, s.d_v))
    )
    np.testing.assert_array_equal(got[..., s.d_v :], np.broadcast_to(query, (*batch, s.tq, s.d_q)))
