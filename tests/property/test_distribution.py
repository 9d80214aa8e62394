"""Properties of :func:`attnref.attention_distribution` (clauses ``distribution.*``)."""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import numpy as np
import oracles
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import attnref
import tolerances as tol
from attnref.testing import strategies as ats
from attnspec.errors import DTypeError, NonFiniteInputError, ShapeError
from attnspec.typing import Array, Mask

Case: TypeAlias = tuple[Array, Mask | None]
F16_MAX = float(np.finfo(np.float16).max)
F64_MAX = float(np.finfo(np.float64).max)


@st.composite
def cases(
    draw: st.DrawFn,
    *,
    regimes: tuple[ats.Regime, ...] = ats.REGIMES,
    kinds: tuple[ats.MaskKind, ...] = ats.MASK_KINDS,
    neg_inf: bool = False,
    fully_masked_rows: bool = True,
    max_magnitude: float = 8.0,
) -> Case:
    """Scores ``[..., Tq, Tk]`` of one dtype and a mask with its own broadcastable batch."""
    dt = draw(ats.float_dtypes())
    s = draw(ats.attention_shapes(max_keys=6))
    bound = min(max_magnitude, float(np.finfo(dt).max))
    scores = draw(
        ats.score_arrays(
            dt, (*s.query_batch, s.tq, s.tk), regimes=regimes, neg_inf=neg_inf, max_magnitude=bound
        )
    )
    mask = draw(ats.masks(dt, s.mask, kinds=kinds, fully_masked_rows=fully_masked_rows))
    return scores, mask


def allowed_of(case: Case) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which positions the spec allows, broadcast to the result's shape."""
    return oracles.allowed_keys(*case)[1]


def logit_magnitude(case: Case) -> float:
    """Largest ``|s + m|`` over allowed keys when an additive mask is rounded in, else 0."""
    scores, mask = case
    if mask is None or np.asarray(mask).dtype == np.bool_:
        return 0.0
    logits, allowed = oracles.allowed_keys(scores, mask)
    return float(np.abs(np.where(allowed, logits, 0)).max(initial=0))


@given(cases())
@example((np.array([[1.0, 2.0, 3.0]], dtype=np.float16), np.array([[True, True, False]])))
@example((np.zeros((1, 1), dtype=np.float32), None))
def test_weights_match_the_softmax_formula(case: Case) -> None:
    """distribution.softmax: For a row with at least one allowed key,
    alpha_ij = exp(e_ij + m_ij) / sum_{k allowed} exp(e_ik + m_ik), where m is the additive mask
    (0 for a boolean mask) and key j is allowed when the boolean mask is True, or the additive mask
    and the score are both greater than -inf."""
    scores, mask = case
    got = attnref.attention_distribution(scores, mask=mask)
    expected = oracles.distribution(scores, mask)
    bound = tol.softmax_bound(scores.dtype, scores.shape[-1], logit_magnitude(case))
    assert got.shape == expected.shape
    tol.assert_within(got, expected, bound, what="weights")


@given(cases(neg_inf=True))
@example((np.array([[F16_MAX, -F16_MAX, 0.0]], dtype=np.float16), None))
def test_weights_lie_in_the_unit_interval(case: Case) -> None:
    """distribution.nonnegative: Every weight lies in [0, 1]."""
    got = attnref.attention_distribution(case[0], mask=case[1])
    assert np.all((got >= 0) & (got <= 1))


@given(cases(neg_inf=True))
@example((np.array([[F64_MAX, F64_MAX / 2, -F64_MAX]]), None))
@example((np.full((1, 6), 1.0, dtype=np.float16), None))
def test_rows_with_an_allowed_key_sum_to_one(case: Case) -> None:
    """distribution.sums-to-one: Every row with at least one allowed key sums to one (to
    rounding)."""
    scores, mask = case
    got = attnref.attention_distribution(scores, mask=mask)
    has_key = allowed_of(case).any(axis=-1)
    sums = np.array([math.fsum(row) for row in got.astype(np.float64).reshape(-1, got.shape[-1])])
    sums = sums.reshape(got.shape[:-1])
    bound = tol.row_sum_bound(got.dtype, got.shape[-1])
    tol.assert_within(sums[has_key], np.ones(int(has_key.sum())), bound, what="row sums")


@given(cases(neg_inf=True))
def test_disallowed_positions_get_exactly_zero(case: Case) -> None:
    """distribution.masked-zero: The weight of a disallowed position is exactly zero (False in a
    boolean mask, -inf in an additive mask or in the score)."""
    got = attnref.attention_distribution(case[0], mask=case[1])
    assert np.all(got[~allowed_of(case)] == 0)


@given(cases(kinds=("boolean",)))
def test_true_means_may_attend(case: Case) -> None:
    """distribution.mask-polarity: In a boolean mask True means *may attend*: with equal scores
    every True position gets a positive weight and every False position none."""
    scores, mask = case
    assert mask is not None
    got = attnref.attention_distribution(np.zeros_like(scores), mask=mask)
    allowed = np.broadcast_to(mask, got.shape)
    assert np.all((got > 0) == allowed)


@given(cases(kinds=("none",)))
def test_an_all_true_mask_equals_no_mask(case: Case) -> None:
    """distribution.mask-polarity: an all-True mask equals no mask."""
    scores = case[0]
    everything = np.ones(scores.shape[-2:], dtype=bool)
    np.testing.assert_array_equal(
        attnref.attention_distribution(scores, mask=everything),
        attnref.attention_distribution(scores),
    )


@given(cases(kinds=("additive",), regimes=("well_conditioned", "ties", "near_ties")))
def test_an_additive_mask_is_added_to_the_scores(case: Case) -> None:
    """distribution.additive-mask: A floating mask is added to the scores before the softmax; -inf
    disallows, a finite entry biases."""
    scores, mask = case
    assert mask is not None
    got = attnref.attention_distribution(scores, mask=mask)
    with np.errstate(invalid="ignore"):
        summed = oracles.exact(scores) + oracles.exact(mask)
    logits = np.where(np.isnan(summed), -np.inf, summed)  # -inf + -inf stays -inf
    expected = oracles.distribution(logits)
    bound = tol.softmax_bound(scores.dtype, scores.shape[-1], logit_magnitude(case))
    tol.assert_within(got, expected, bound, what="weights")


@given(cases(kinds=("additive",)), st.sampled_from([math.nan, math.inf]), st.data())
def test_nan_or_plus_inf_in_an_additive_mask_raises(
    case: Case, bad: float, data: st.DataObject
) -> None:
    """distribution.additive-mask: NaN or +inf [in a floating mask] raises
    NonFiniteInputError."""
    scores, mask = case
    assert mask is not None
    index = tuple(data.draw(st.integers(0, n - 1)) for n in mask.shape)
    broken = mask.copy()
    broken[index] = bad
    with pytest.raises(NonFiniteInputError, match="mask must be finite or -inf"):
        attnref.attention_distribution(scores, mask=broken)


@st.composite
def shifted(draw: st.DrawFn) -> tuple[Case, Array]:
    """A case with well-conditioned scores and a finite constant per row."""
    case = draw(cases(regimes=("well_conditioned", "ties", "near_ties"), kinds=("none", "boolean")))
    scores = case[0]
    bound = 64.0 if scores.dtype == np.float16 else 1e6
    shift = draw(
        ats.well_conditioned_arrays(scores.dtype, (*scores.shape[:-1], 1), max_magnitude=bound)
    )
    return case, shift


@given(shifted())
def test_adding_a_constant_to_a_row_leaves_its_weights(args: tuple[Case, Array]) -> None:
    """distribution.shift-invariant: Adding the same finite constant to every score of a row
    leaves that row's weights unchanged (to rounding)."""
    (scores, mask), shift = args
    moved = scores + shift  # rounded once in the scores' dtype
    base = attnref.attention_distribution(scores, mask=mask)
    got = attnref.attention_distribution(moved, mask=mask)
    u = tol.unit_roundoff(scores.dtype)
    rounding = u * float(np.abs(oracles.exact(moved)).max(initial=0))
    bound = 2 * tol.softmax_bound(scores.dtype, scores.shape[-1], 0) + tol.softmax_perturbation(
        rounding
    )
    tol.assert_within(got, base, bound, what="shifted weights")


@given(cases(regimes=("large",), kinds=("none", "boolean"), neg_inf=True))
@example((np.array([[F64_MAX, -F64_MAX]]), None))
@example((np.array([[-F16_MAX, -F16_MAX, F16_MAX]], dtype=np.float16), None))
def test_finite_scores_anywhere_in_range_stay_finite(case: Case) -> None:
    """distribution.stable: Finite scores anywhere in the dtype's range never produce NaN or an
    infinity: the result is that of the softmax shifted by the row's largest allowed score."""
    scores, mask = case
    got = attnref.attention_distribution(scores, mask=mask)
    assert np.isfinite(got).all()
    expected = oracles.distribution(scores, mask)
    bound = tol.softmax_bound(scores.dtype, scores.shape[-1], 0)
    tol.assert_within(got, expected, bound, what="weights")


@st.composite
def tied_rows(draw: st.DrawFn) -> Case:
    """Rows of one constant score (anywhere in the dtype's range) and a boolean mask."""
    dt = draw(ats.float_dtypes())
    s = draw(ats.attention_shapes(max_keys=7))
    constants = draw(
        hnp.arrays(
            dt,
            (*s.query_batch, s.tq, 1),
            elements=hnp.from_dtype(dt, allow_nan=False, allow_infinity=False),
        )
    )
    scores = np.broadcast_to(constants, (*s.query_batch, s.tq, s.tk)).copy()
    mask = draw(ats.masks(dt, s.mask, kinds=("none", "boolean")))
    return scores, mask


@given(tied_rows())
@example((np.full((2, 3), -F64_MAX), np.array([True, False, True])))
def test_equal_scores_give_uniform_weights(case: Case) -> None:
    """distribution.ties-uniform: A row whose allowed scores are all equal gets the uniform weight
    1/n on its n allowed keys."""
    scores, mask = case
    got = attnref.attention_distribution(scores, mask=mask)
    allowed = allowed_of(case)
    n = allowed.sum(axis=-1, keepdims=True)
    uniform = np.where(allowed, 1 / np.maximum(n, 1), 0)
    bound = tol.unit_roundoff(got.dtype) * uniform  # 1/n rounded once
    assert np.all(np.abs(got - uniform) <= bound)


@given(cases(neg_inf=True, regimes=("well_conditioned", "large")))
@example(
    (np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float16), np.array([[True, True], [False, False]]))
)
@example((np.array([[0.0, -np.inf]]), np.array([0.0, -np.inf])))
def test_fully_masked_rows_are_all_zero(case: Case) -> None:
    """distribution.fully-masked-row: A row with no allowed key gets all-zero weights (not NaN, not
    uniform)."""
    got = attnref.attention_distribution(case[0], mask=case[1])
    empty = ~allowed_of(case).any(axis=-1)
    assert np.all(got[empty] == 0)


@given(
    ats.attention_shapes(min_queries=1),
    st.integers(1, 4),
    st.sampled_from(["keys", "queries", "batch"]),
)
def test_a_mask_that_does_not_broadcast_raises(
    shape: ats.AttentionShapes, extra: int, axis: str
) -> None:
    """distribution.mask-shape: A mask that does not broadcast to the scores' shape raises
    ShapeError (here one axis of the mask has a size that is neither 1 nor the scores')."""
    dims = {"batch": 2, "queries": shape.tq, "keys": shape.tk}
    dims = {name: size if size > 1 else 2 for name, size in dims.items()}  # no size-1 axes
    scores = np.zeros((dims["batch"], dims["queries"], dims["keys"]))
    dims[axis] += extra
    mask = np.ones((dims["batch"], dims["queries"], dims["keys"]), dtype=bool)
    with pytest.raises(ShapeError, match="mask must broadcast"):
        attnref.attention_distribution(scores, mask=mask)


@pytest.mark.parametrize("mask_shape", [(1, 3), (3, 1)], ids=["Tk 1->3", "Tq 1->3"])
def test_a_mask_may_not_grow_the_score_axes(mask_shape: tuple[int, int]) -> None:
    """distribution.mask-shape: A mask that does not broadcast to the scores' shape raises
    ShapeError; scores [1, 1] cannot gain keys or queries from a [1, 3] or [3, 1] mask
    (regression: the reference once broadcast the score axes up to the mask's)."""
    with pytest.raises(ShapeError, match="mask must broadcast"):
        attnref.attention_distribution(np.zeros((1, 1)), mask=np.ones(mask_shape, dtype=bool))


@given(
    st.one_of(
        hnp.integer_dtypes(),
        hnp.unsigned_integer_dtypes(),
        hnp.complex_number_dtypes(),
        st.just(np.dtype(object)),
    )
)
def test_a_mask_of_another_dtype_raises(dtype: np.dtype[Any]) -> None:
    """distribution.mask-shape: a mask that is neither boolean nor real floating raises
    DTypeError."""
    with pytest.raises(DTypeError, match="mask must be boolean"):
        attnref.attention_distribution(np.zeros((2, 3)), mask=np.ones((2, 3), dtype=dtype))
