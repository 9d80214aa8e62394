"""Properties of local attention, local-m and local-p (clauses ``local.*``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import oracles
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import attnref
import tolerances as tol
from attnref.testing import strategies as ats
from attnspec.errors import ArgumentError, DTypeError
from attnspec.typing import Array, BoolArray


@dataclass(frozen=True, eq=False)
class Local:
    """Scores, a boolean mask (or None), a half-width and real aligned positions."""

    scores: Array
    mask: BoolArray | None
    half_width: int
    positions: Array


@st.composite
def locals_(draw: st.DrawFn, *, min_half_width: int = 0) -> Local:
    """Scores of any dtype, a boolean mask, ``D`` in ``[min_half_width, 4]`` and positions ``p_i``
    that may lie outside ``[0, Tk - 1]`` (``local.p-window`` allows that)."""
    dt = draw(ats.float_dtypes())
    s = draw(ats.attention_shapes(max_queries=6, max_keys=7))
    scores = draw(
        ats.score_arrays(
            dt, (*s.query_batch, s.tq, s.tk), regimes=("well_conditioned", "ties", "near_ties")
        )
    )
    mask = draw(st.none() | ats.boolean_masks(s.mask))
    d = draw(st.integers(min_half_width, 4))
    reach = float(s.tk + 2 * d + 2)
    positions = draw(
        hnp.arrays(
            dt,
            (*s.query_batch, s.tq),
            elements=hnp.from_dtype(dt, min_value=-reach, max_value=reach, allow_nan=False),
        )
    )
    return Local(scores, mask, d, positions)


def window_m(shape: tuple[int, ...], d: int) -> BoolArray:
    """``|j - i| <= D`` by explicit loops (``local.m-position``: ``p_i = i``)."""
    t_q, t_k = shape[-2], shape[-1]
    inside = np.zeros((t_q, t_k), dtype=bool)
    for i in range(t_q):
        for j in range(t_k):
            inside[i, j] = abs(j - i) <= d
    return inside


def window_p(positions: Array, t_k: int, d: int) -> BoolArray:
    """``|j - p_i| <= D`` for real ``p_i``, decided exactly as ``j - D <= p_i <= j + D``.

    (``j - p_i`` itself would round: ``1 - (-7.7e-44)`` is 1 even in extended precision.)
    """
    j = np.arange(t_k)
    p = oracles.exact(positions)[..., None]
    return np.asarray((j - d <= p) & (p <= j + d))


@given(locals_())
@example(Local(np.zeros((5, 2)), None, 1, np.zeros(5)))
def test_local_m_weights_vanish_outside_the_window(case: Local) -> None:
    """local.m-position, local.window: Local-m aligns query i with source position p_i = i ...
    for every Tq and Tk; a key outside the window |j - p_i| <= D, or disallowed by the mask, gets
    weight exactly zero."""
    got = attnref.local_m_distribution(case.scores, half_width=case.half_width, mask=case.mask)
    inside = window_m(got.shape, case.half_width)
    if case.mask is not None:
        inside = inside & case.mask
    assert np.all(got[~np.broadcast_to(inside, got.shape)] == 0)


@given(locals_())
def test_local_m_is_the_softmax_over_the_window(case: Local) -> None:
    """local.window-softmax: Inside the window the weights are the softmax of the scores over the
    allowed keys of the window only, so each local-m row with an allowed key in its window sums to
    one; a row with none is all zero."""
    got = attnref.local_m_distribution(case.scores, half_width=case.half_width, mask=case.mask)
    inside = window_m(case.scores.shape, case.half_width)
    allowed = inside if case.mask is None else inside & case.mask
    expected = oracles.distribution(case.scores, allowed)
    bound = tol.softmax_bound(got.dtype, got.shape[-1], 0)
    tol.assert_within(got, expected, bound, what="local-m weights")
    full = np.broadcast_to(allowed, got.shape)
    has_key = full.any(axis=-1)
    sums = got.astype(np.longdouble).sum(axis=-1)
    tol.assert_within(
        sums[has_key], np.ones(int(has_key.sum())), tol.row_sum_bound(got.dtype, got.shape[-1])
    )
    assert np.all(got[~has_key] == 0)


@given(
    st.one_of(
        st.integers(max_value=-1).map(lambda d: (d, ArgumentError)),
        st.sampled_from([1.0, 2.5, True, "1", None]).map(lambda d: (d, DTypeError)),
    ),
    st.booleans(),
)
def test_half_width_must_be_a_non_negative_int(
    bad: tuple[Any, type[Exception]], p_kind: bool
) -> None:
    """local.half-width: The half-width D is an int: at least 0 for local-m and at least 1 for
    local-p; anything else raises ArgumentError (wrong value) or DTypeError (wrong type)."""
    value, error = bad
    scores = np.zeros((2, 3))
    call: Callable[[], object] = (
        (lambda: attnref.local_p_distribution(scores, np.zeros(2), half_width=value))
        if p_kind
        else (lambda: attnref.local_m_distribution(scores, half_width=value))
    )
    with pytest.raises(error, match="half_width must be"):
        call()


def test_local_p_half_width_zero_is_refused() -> None:
    """local.half-width: [D is] at least 1 for local-p (its Gaussian needs sigma = D/2 > 0)."""
    with pytest.raises(ArgumentError, match="half_width must be at least 1"):
        attnref.local_p_distribution(np.zeros((2, 3)), np.zeros(2), half_width=0)
    assert attnref.local_m_distribution(np.zeros((2, 3)), half_width=0).shape == (2, 3)


@given(ats.float_dtypes(), st.booleans())
def test_local_masks_must_be_boolean(dtype: np.dtype[Any], p_kind: bool) -> None:
    """local.boolean-mask: The mask of the local distributions is boolean; a floating mask raises
    DTypeError."""
    scores, mask = np.zeros((2, 3)), np.zeros((2, 3), dtype=dtype)
    call: Callable[[], object] = (
        (lambda: attnref.local_p_distribution(scores, np.zeros(2), half_width=1, mask=mask))
        if p_kind
        else (lambda: attnref.local_m_distribution(scores, half_width=1, mask=mask))
    )
    with pytest.raises(DTypeError, match="mask must be boolean"):
        call()


@st.composite
def position_inputs(draw: st.DrawFn) -> tuple[Array, Array, Array, int]:
    """Query ``[..., Tq, d_q]``, ``W_p``, ``v_p`` (sometimes large, to saturate) and ``S``."""
    dt = draw(ats.float_dtypes())
    s = draw(ats.attention_shapes())
    d_p = draw(st.integers(1, 4))
    big = draw(st.sampled_from([1.0, 2.0, 100.0]))
    q = draw(ats.well_conditioned_arrays(dt, s.query))
    w = draw(ats.well_conditioned_arrays(dt, (d_p, s.d_q), max_magnitude=big))
    v = draw(ats.well_conditioned_arrays(dt, (d_p,), max_magnitude=big))
    return q, w, v, draw(st.integers(1, 9))


@given(position_inputs())
def test_local_p_position_is_the_scaled_sigmoid(args: tuple[Array, Array, Array, int]) -> None:
    """local.p-position: The aligned position is p_i = (S - 1) sigma(v_p^T tanh(W_p s_i)) with S =
    source_length and sigma the logistic function; it is real and lies in [0, S - 1]."""
    q, w, v, n = args
    got = attnref.local_p_position(q, w, v, source_length=n)
    assert got.shape == q.shape[:-1]
    assert np.all((got >= 0) & (got <= n - 1))
    qe, we, ve = oracles.exact(q), oracles.exact(w), oracles.exact(v)
    pre = np.einsum("...d,pd->...p", qe, we)
    logit = np.tanh(pre) @ ve
    expected = (n - 1) / (1 + np.exp(-logit))
    pre_magnitude = float(np.einsum("...d,pd->...p", np.abs(qe), np.abs(we)).max(initial=0))
    logit_error = tol.tanh_layer_bound(got.dtype, q.shape[-1], pre_magnitude, outer=np.abs(v))
    # the logistic function is 1/4-Lipschitz; exp, the sum, the division and the factor S - 1
    # add at most (8 + 3) u relative to the position
    sigmoid_error = logit_error / 4 + tol.transcendental(got.dtype) + tol.gamma(3, got.dtype)
    tol.assert_within(got, expected, (n - 1) * sigmoid_error, what="p_i")


@given(locals_(min_half_width=1))
@example(Local(np.zeros((1, 4)), None, 1, np.array([-1.5])))
@example(Local(np.zeros((1, 4)), None, 1, np.array([4.0])))
def test_local_p_weights_vanish_outside_the_window(case: Local) -> None:
    """local.p-window: The local-p window of query i is every key j with |j - p_i| <= D for the
    real position p_i; positions outside [0, Tk - 1] are allowed in positions and only narrow the
    window."""
    got = attnref.local_p_distribution(
        case.scores, case.positions, half_width=case.half_width, mask=case.mask
    )
    inside = window_p(case.positions, case.scores.shape[-1], case.half_width)
    if case.mask is not None:
        inside = inside & case.mask
    full = np.broadcast_to(inside, got.shape)
    assert np.all(got[~full] == 0)


@given(locals_(min_half_width=1))
def test_local_p_is_the_window_softmax_times_a_gaussian(case: Local) -> None:
    """local.p-gaussian: Local-p multiplies the window softmax by exp(-(j - p_i)^2 / (2 sigma^2))
    with sigma = D/2, after normalising and without renormalising, so a row sums to at most one."""
    d = case.half_width
    got = attnref.local_p_distribution(case.scores, case.positions, half_width=d, mask=case.mask)
    t_k = case.scores.shape[-1]
    inside = window_p(case.positions, t_k, d)
    allowed = inside if case.mask is None else inside & case.mask
    soft = oracles.distribution(case.scores, allowed)
    offset = np.arange(t_k, dtype=np.longdouble) - oracles.exact(case.positions)[..., None]
    sigma = np.longdouble(d) / 2
    expected = soft * np.exp(-(offset**2) / (2 * sigma**2))
    # the Gaussian's exponent is at most 2 inside the window: (j - p)^2 and its scaling round
    # with 5 u relative (at most 10 u absolute in the exponent), exp adds 8 u, the product u
    u = tol.unit_roundoff(got.dtype)
    gaussian = 10 * u + tol.transcendental(got.dtype) + u
    bound = tol.softmax_bound(got.dtype, t_k, 0) + gaussian
    tol.assert_within(got, np.broadcast_to(expected, got.shape), bound, what="local-p weights")
    sums = got.astype(np.longdouble).sum(axis=-1)
    assert np.all(sums <= 1 + tol.row_sum_bound(got.dtype, t_k))
