"""Properties every function shares (clauses ``input.*`` of :mod:`attnspec.general`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
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
from attnspec.errors import ArgumentError, DTypeError, NonFiniteInputError, ShapeError
from attnspec.typing import Array, ScoreKind

NON_FLOAT_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(),
    hnp.unsigned_integer_dtypes(),
    st.just(np.dtype(object)),
)

Call = Callable[[list[Any]], object]
"""A function of the reference applied to a list of arrays (the list is what is checked)."""

ONE_ARRAY_CALLS: dict[str, Callable[[Array], object]] = {
    "score_dot(query=x)": lambda x: attnref.score_dot(x, np.ones((3, 2))),
    "score_general(W_a=x)": lambda x: attnref.score_general(np.ones((2, 2)), np.ones((3, 2)), x),
    "attention_distribution(scores=x)": lambda x: attnref.attention_distribution(x),
    "attention_value(values=x)": lambda x: attnref.attention_value(np.ones((2, 2)), x),
    "attentional_hidden_state(W_c=x)": lambda x: attnref.attentional_hidden_state(
        np.ones((2, 1)), np.ones((2, 1)), x
    ),
    "scaled_dot_product_attention(value=x)": lambda x: attnref.scaled_dot_product_attention(
        np.ones((2, 2)), np.ones((2, 2)), x
    ),
}


@given(st.sampled_from(sorted(ONE_ARRAY_CALLS)), NON_FLOAT_DTYPES)
def test_non_floating_arrays_raise_dtype_error(call: str, dtype: np.dtype[Any]) -> None:
    """input.float-dtype: Array arguments other than masks have a real floating dtype ... A
    boolean, integer or object array raises DTypeError."""
    x = np.ones((2, 2)).astype(dtype)
    with pytest.raises(DTypeError, match="must have a real or complex floating dtype"):
        ONE_ARRAY_CALLS[call](x)


@st.composite
def real_rows(draw: st.DrawFn) -> tuple[Array, Array]:
    """Float64 scores ``[..., Tq, Tk]`` and a direction of the same shape."""
    s = draw(ats.attention_shapes(max_keys=6))
    shape = (*s.query_batch, s.tq, s.tk)
    scores = draw(ats.well_conditioned_arrays(np.float64, shape, max_magnitude=4.0))
    direction = draw(ats.well_conditioned_arrays(np.float64, shape, max_magnitude=1.0))
    return scores, direction


@given(real_rows(), ats.masks(np.float64, (1, 6), kinds=("none", "boolean")))
def test_complex_inputs_give_the_analytic_continuation(
    args: tuple[Array, Array], mask: Any
) -> None:
    """input.complex-extension: ... every function is the analytic continuation of its real formula
    (no absolute values, conjugates or branches on values; the softmax is shifted by the maximum of
    the real part), so that complex-step differentiation f'(x) = Im f(x + ih) / h is exact to
    rounding. The NumPy reference does."""
    scores, t = args
    mask = None if mask is None else mask[..., : scores.shape[-1]]
    real = attnref.attention_distribution(scores, mask=mask)
    lifted = attnref.attention_distribution(scores + 0j, mask=mask)
    assert np.iscomplexobj(lifted)
    rounding = tol.softmax_bound(np.float64, scores.shape[-1], 0)
    tol.assert_within(lifted.real, real, 2 * rounding, what="real part of the complex result")
    assert np.all(lifted.imag == 0)
    h = 1e-30
    complex_step = attnref.attention_distribution(scores + 1j * h * t, mask=mask).imag / h
    # central differences, eps = u^(1/3): truncation eps^2 |f'''| / 6 with |f'''| <= 6 (2|t|)^3 for
    # a softmax weight, and rounding u |f| / eps of each of the two evaluations
    u = tol.unit_roundoff(np.float64)
    eps = u ** (1 / 3)
    plus = attnref.attention_distribution(scores + eps * t, mask=mask)
    minus = attnref.attention_distribution(scores - eps * t, mask=mask)
    central = (plus - minus) / (2 * eps)
    spread = float(np.abs(t).max(initial=0))
    bound = eps**2 * (2 * spread) ** 3 + 2 * tol.softmax_bound(np.float64, scores.shape[-1], 0) / (
        2 * eps
    )
    tol.assert_within(complex_step, central, bound, what="complex step vs central differences")


@given(
    st.tuples(ats.float_dtypes(), ats.float_dtypes(), ats.float_dtypes()),
    ats.float_dtypes(),
    ats.scales(max_magnitude=2.0),
)
def test_the_result_has_the_promoted_dtype(
    dtypes: tuple[np.dtype[Any], ...], mask_dtype: np.dtype[Any], scale: Any
) -> None:
    """input.result-dtype: The result has the dtype that NumPy promotion (NEP 50, Python scalars
    weak) gives the floating array arguments, masks excluded: float32 inputs give a float32 result,
    and a float64 call is computed in float64, never in a lower precision."""
    dq, dk, dv = dtypes
    q, k, v = np.ones((2, 3), dq), np.ones((4, 3), dk), np.ones((4, 2), dv)
    mask = np.zeros((2, 4), dtype=mask_dtype)
    context, weights = attnref.scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)
    assert context.dtype == np.result_type(dq, dk, dv)
    # Note: the weights are attention_distribution(scale * query @ key^T) (sdpa.formula), so
    # they take the dtype of query and key; the value's dtype enters the context only.
    assert weights.dtype == np.result_type(dq, dk)
    assert attnref.score_scaled_dot(q, k, scale=scale).dtype == np.result_type(dq, dk)
    assert attnref.attention_distribution(q, mask=mask[:, :3]).dtype == dq
    assert attnref.attention_value(weights, v).dtype == np.result_type(weights, v)
    w = np.ones((5, 3), dk)
    assert attnref.score_general(q, k, np.ones((3, 3), dv)).dtype == np.result_type(dq, dk, dv)
    assert attnref.output_distribution(q, w).dtype == np.result_type(dq, dk)
    assert attnref.local_m_distribution(q, half_width=1).dtype == dq


@given(st.integers(0, 1), st.sampled_from([1, 3]), st.sampled_from(["sequence", "weights"]))
def test_wrong_ranks_raise_shape_error(low: int, weight_rank: int, which: str) -> None:
    """input.rank: Sequence arrays have at least two dimensions [..., T, d]; weight matrices are
    exactly two-dimensional ... Any other rank raises ShapeError."""
    q, k = np.ones((2, 3)), np.ones((4, 3))
    if which == "sequence":
        short = np.ones((3,) * low)
        with pytest.raises(ShapeError, match="must have at least 2 dimensions"):
            attnref.score_dot(short, k)
        with pytest.raises(ShapeError, match="must have at least 2 dimensions"):
            attnref.scaled_dot_product_attention(q, k, short)
    else:
        with pytest.raises(ShapeError, match="must have exactly 2 dimensions"):
            attnref.score_general(q, k, np.ones((3,) * weight_rank))
        with pytest.raises(ShapeError, match="must have exactly 1 dimension"):
            attnref.score_concat(q, k, np.ones((2, 6)), np.ones((2,) * (weight_rank + 1)))


@given(ats.sdpa_calls(gqa=False))
def test_batch_dimensions_broadcast_like_numpy(call: ats.SDPACall) -> None:
    """input.batch-broadcast: Leading batch dimensions ... of the sequence arrays and of the mask
    broadcast with NumPy's rules (the result equals that of explicitly broadcast copies)."""
    args = (call.query, call.key, call.value)
    context, weights = attnref.scaled_dot_product_attention(*args, **call.kwargs())
    batches = [a.shape[:-2] for a in args]
    if call.mask is not None:
        batches.append(call.mask.shape[:-2])
    batch = np.broadcast_shapes(*batches)
    copies = [np.broadcast_to(a, (*batch, *a.shape[-2:])).copy() for a in args]
    mask: Any = call.mask
    if mask is not None:
        mask = np.broadcast_to(mask, (*batch, *mask.shape[-2:])).copy()
    ctx_c, w_c = attnref.scaled_dot_product_attention(*copies, **replace(call, mask=mask).kwargs())
    np.testing.assert_array_equal(context, ctx_c)
    np.testing.assert_array_equal(weights, w_c)


@given(ats.batch_shapes(min_dims=1), st.integers(0, 9), st.integers(2, 4))
def test_batch_dimensions_that_do_not_broadcast_raise(
    batch: tuple[int, ...], axis: int, size: int
) -> None:
    """input.batch-broadcast: shapes that do not broadcast raise ShapeError."""
    axis = axis % len(batch)
    other = list(batch)
    other[axis] = batch[axis] + size if batch[axis] != 1 else size + 1
    other[axis] = other[axis] if other[axis] != batch[axis] else other[axis] + 1
    if batch[axis] == 1:  # a size-1 axis broadcasts; make this one clash
        batch = (*batch[:axis], 2, *batch[axis + 1 :])
        other[axis] = 3
    q, k = np.ones((*batch, 2, 3)), np.ones((*other, 4, 3))
    with pytest.raises(ShapeError, match="batch dimensions must broadcast"):
        attnref.score_dot(q, k)
    with pytest.raises(ShapeError, match="batch dimensions must broadcast"):
        attnref.scaled_dot_product_attention(q, k, k)


@given(st.integers(1, 6), st.integers(1, 6))
def test_mismatched_sizes_raise_naming_both(d_q: int, d_k: int) -> None:
    """input.sizes-agree: Every size that two arguments share by name in a function's Parameters
    must be equal ...; a mismatch raises ShapeError naming both arguments and both sizes."""
    if d_q == d_k:
        d_k += 1
    q, k = np.ones((2, d_q)), np.ones((3, d_k))
    with pytest.raises(ShapeError, match=rf"keys.*query.*got {d_k} and {d_q}"):
        attnref.score_dot(q, k)
    with pytest.raises(ShapeError, match=rf"W_a.*query.*got {d_k} and {d_q}"):
        attnref.score_general(q, k, np.ones((d_k, d_k)))
    with pytest.raises(ShapeError, match=rf"value.*key.*got {3 + d_k} and 3"):
        attnref.scaled_dot_product_attention(q, np.ones((3, d_q)), np.ones((3 + d_k, 1)))


@given(ats.attention_shapes(min_queries=0, max_queries=0, min_batch_side=0), ats.float_dtypes())
def test_empty_query_or_batch_axes_give_empty_results(
    shape: ats.AttentionShapes, dtype: np.dtype[Any]
) -> None:
    """input.nonempty: An empty query axis (Tq = 0) or batch axis is allowed and gives an empty
    result."""
    s = replace(shape, d_k=shape.d_q)
    q, k, v = (np.ones(dims, dtype) for dims in (s.query, s.keys, s.values))
    context, weights = attnref.scaled_dot_product_attention(q, k, v)
    batch = np.broadcast_shapes(s.query_batch, s.keys_batch, s.values_batch)
    assert context.shape == (*batch, 0, s.d_v)
    assert weights.shape == (*batch, 0, s.tk)
    assert context.dtype == dtype


@given(st.sampled_from(["Tk", "d_q", "d_v", "W rows"]))
def test_empty_key_or_feature_axes_raise(axis: str) -> None:
    """input.nonempty: The key axis Tk and every feature axis have at least one element; an empty
    one raises ShapeError."""
    q, k, v = np.ones((2, 3)), np.ones((4, 3)), np.ones((4, 2))
    calls: dict[str, Callable[[], object]] = {
        "Tk": lambda: attnref.scaled_dot_product_attention(q, k[:0], v[:0]),
        "d_q": lambda: attnref.score_dot(q[:, :0], k[:, :0]),
        "d_v": lambda: attnref.attention_value(np.ones((2, 4)), v[:, :0]),
        "W rows": lambda: attnref.score_concat(q, k, np.ones((0, 6)), np.ones(0)),
    }
    with pytest.raises(ShapeError, match="must be at least 1"):
        calls[axis]()


@st.composite
def read_positions(draw: st.DrawFn) -> tuple[ats.SDPACall, str, tuple[int, ...], float]:
    """An unmasked, non-causal sdpa call with scale 0 (every position is read: all weights are
    1/Tk > 0), an argument, an index into it and a non-finite value."""
    call = draw(ats.sdpa_calls(gqa=False, mask_kinds=("none",)))
    call = replace(call, is_causal=False, scale=0)
    name = draw(st.sampled_from(["query", "key", "value"]))
    shape = getattr(call, name).shape
    index = tuple(draw(st.integers(0, n - 1)) for n in shape)
    return call, name, index, draw(st.sampled_from([math.nan, math.inf, -math.inf]))


@given(read_positions())
def test_non_finite_values_where_read_raise(
    args: tuple[ats.SDPACall, str, tuple[int, ...], float],
) -> None:
    """input.finite: A NaN or an infinity at a position that is read raises
    NonFiniteInputError."""
    call, name, index, bad = args
    broken = getattr(call, name).copy()
    broken[index] = bad
    call = replace(call, **{name: broken})
    # Note: the reference names sdpa's ``key`` "keys" in this message, so only the stable
    # end of the message is matched.
    with pytest.raises(NonFiniteInputError, match="must be finite where it is read"):
        attnref.scaled_dot_product_attention(call.query, call.key, call.value, **call.kwargs())


@given(st.sampled_from([math.nan, math.inf]), st.integers(0, 2))
def test_nan_or_plus_inf_scores_raise_but_minus_inf_disallows(bad: float, where: int) -> None:
    """input.finite: The only non-finite value with a meaning is -inf, in an additive mask or a
    score, where it marks the position as not allowed."""
    scores = np.zeros((2, 3))
    scores[1, where] = bad
    with pytest.raises(NonFiniteInputError, match="scores must be finite or -inf"):
        attnref.attention_distribution(scores)
    scores[1, where] = -math.inf
    got = attnref.attention_distribution(scores)
    assert got[1, where] == 0
    assert got[1].sum() == 1


@given(ats.attention_calls(), st.data())
def test_unread_positions_change_nothing(call: ats.AttentionCall, data: st.DataObject) -> None:
    """input.unread-positions: A position that is not read has no effect on any output ...:
    replacing its value by any other finite value, however large, changes nothing (query rows with
    no allowed key, and keys and values no query may attend to, for every score kind)."""
    _check_unread(call, data, allow_nonfinite=False)


@given(ats.attention_calls(), st.data())
def test_unread_nan_and_infinities_change_nothing(
    call: ats.AttentionCall, data: st.DataObject
) -> None:
    """input.unread-nonfinite: NaN or an infinity at a position that is not read raises nothing and
    changes no output ... (no 0 * NaN leaks through a zero weight)."""
    _check_unread(call, data, allow_nonfinite=True)


@pytest.mark.parametrize("kind", ats.SCORE_KINDS)
def test_nan_at_masked_keys_values_and_rows_does_not_leak(kind: ScoreKind) -> None:
    """input.unread-nonfinite: NaN or an infinity at a position that is not read raises nothing and
    changes no output ... (regression: NaN in masked keys/values leaking as 0 * NaN, pytorch
    #101967, for every score kind)."""
    rng = np.random.default_rng(101967)
    q, k, v = rng.standard_normal((3, 2)), rng.standard_normal((4, 2)), rng.standard_normal((4, 3))
    mask = np.array([[True, True, False, False]] * 2 + [[False] * 4])  # row 2 fully masked
    by_kind: dict[str, dict[str, Any]] = {
        "dot": {},
        "scaled_dot": {"scale": 0.5},
        "general": {"W_a": rng.standard_normal((2, 2))},
        "concat": {"W_a": rng.standard_normal((3, 4)), "v_a": rng.standard_normal(3)},
        "additive": {
            "W_q": rng.standard_normal((3, 2)),
            "W_k": rng.standard_normal((3, 2)),
            "v_a": rng.standard_normal(3),
        },
        "location": {"W_a": rng.standard_normal((4, 2))},
    }
    params = by_kind[kind]
    clean = attnref.attention(q, k, v, score=kind, mask=mask, **params)
    q_bad, k_bad, v_bad = q.copy(), k.copy(), v.copy()
    q_bad[2] = np.nan
    k_bad[2:] = [[np.nan, np.inf], [-np.inf, np.nan]]
    v_bad[2:] = [[np.nan] * 3, [np.inf] * 3]
    dirty = attnref.attention(q_bad, k_bad, v_bad, score=kind, mask=mask, **params)
    for a, b in zip(clean, dirty, strict=True):
        np.testing.assert_array_equal(a, b)


def _check_unread(call: ats.AttentionCall, data: st.DataObject, *, allow_nonfinite: bool) -> None:
    """Poison every unread row of the call's inputs and compare with the clean result."""
    i = call.inputs
    clean = attnref.attention(i.query, i.keys, i.values, **call.kwargs())
    if call.score == "location":  # keys take no part in a location score
        k_unread = np.ones((*i.keys.shape[:-1], 1), dtype=bool)
    else:
        k_unread = ats.unread_by_mask(i.mask, i.keys.shape[:-1], axis=-1)
    v_unread = ats.unread_by_mask(i.mask, i.values.shape[:-1], axis=-1)
    q_unread = ats.unread_by_mask(i.mask, i.query.shape[:-1], axis=-2)
    poison = {"allow_nonfinite": allow_nonfinite}
    dirty = replace(
        i,
        query=data.draw(ats.poisoned(i.query, q_unread, **poison), label="query"),
        keys=data.draw(ats.poisoned(i.keys, k_unread, **poison), label="keys"),
        values=data.draw(ats.poisoned(i.values, v_unread, **poison), label="values"),
    )
    got = attnref.attention(dirty.query, dirty.keys, dirty.values, **call.kwargs())
    for a, b in zip(clean, got, strict=True):
        np.testing.assert_array_equal(a, b)


@st.composite
def masked_scores(draw: st.DrawFn) -> tuple[Array, Any, int]:
    """Scores ``[..., Tq, Tk]``, a boolean mask of the same shape and a local-m half-width."""
    dt = draw(ats.float_dtypes())
    s = draw(ats.attention_shapes(max_keys=6))
    shape = (*s.query_batch, s.tq, s.tk)
    scores = draw(ats.score_arrays(dt, shape, regimes=("well_conditioned", "ties", "large")))
    mask = draw(ats.boolean_masks(shape))
    return scores, mask, draw(st.integers(0, 3))


@given(masked_scores(), st.booleans(), st.data())
def test_scores_at_disallowed_positions_are_not_read(
    case: tuple[Array, Any, int], allow_nonfinite: bool, data: st.DataObject
) -> None:
    """input.unread-positions, input.unread-nonfinite: A position that is not read has no effect
    on any output ...; NaN or an infinity there raises nothing either (scores where the mask is
    False, and for local-m outside the window)."""
    scores, mask, d = case
    clean = attnref.attention_distribution(scores, mask=mask)
    dirty = data.draw(ats.poisoned(scores, ~mask, allow_nonfinite=allow_nonfinite))
    np.testing.assert_array_equal(attnref.attention_distribution(dirty, mask=mask), clean)
    t_q, t_k = scores.shape[-2:]
    outside = np.abs(np.arange(t_k)[None, :] - np.arange(t_q)[:, None]) > d
    local = attnref.local_m_distribution(scores, half_width=d, mask=mask)
    dirty = data.draw(ats.poisoned(scores, outside | ~mask, allow_nonfinite=allow_nonfinite))
    np.testing.assert_array_equal(
        attnref.local_m_distribution(dirty, half_width=d, mask=mask), local
    )


@given(ats.sdpa_calls(mask_kinds=("boolean", "additive")), st.booleans(), st.data())
def test_unread_positions_of_sdpa_change_nothing(
    call: ats.SDPACall, allow_nonfinite: bool, data: st.DataObject
) -> None:
    """input.unread-positions, input.unread-nonfinite: A position that is not read has no effect
    on any output ...: replacing its value by any other finite value, however large, changes
    nothing; NaN or an infinity there raises nothing and changes no output either (sdpa, with the
    causal mask, the mask and grouped heads joined)."""
    clean = attnref.scaled_dot_product_attention(call.query, call.key, call.value, **call.kwargs())
    joined = _joined_mask(call)
    h_axis = call.key.ndim - 3 if call.enable_gqa else None
    q_unread = ats.unread_by_mask(joined, call.query.shape[:-1], axis=-2)
    k_unread = ats.unread_by_mask(_grouped(joined, call, h_axis), call.key.shape[:-1], axis=-1)
    v_unread = ats.unread_by_mask(_grouped(joined, call, h_axis), call.value.shape[:-1], axis=-1)
    poison = {"allow_nonfinite": allow_nonfinite}
    dirty = replace(
        call,
        query=data.draw(ats.poisoned(call.query, q_unread, **poison)),
        key=data.draw(ats.poisoned(call.key, k_unread, **poison)),
        value=data.draw(ats.poisoned(call.value, v_unread, **poison)),
    )
    got = attnref.scaled_dot_product_attention(
        dirty.query, dirty.key, dirty.value, **dirty.kwargs()
    )
    for a, b in zip(clean, got, strict=True):
        np.testing.assert_array_equal(a, b)


def _joined_mask(call: ats.SDPACall) -> Any:
    """The boolean mask of allowed pairs: mask and causal mask together."""
    mask: Any = call.mask
    assert mask is not None
    allowed = mask if mask.dtype == np.bool_ else mask != -np.inf
    if call.is_causal:
        allowed = allowed & ats.causal_mask(
            call.query.shape[-2], call.key.shape[-2], alignment=call.causal_alignment
        )
    return allowed


def _grouped(allowed: Any, call: ats.SDPACall, h_axis: int | None) -> Any:
    """With GQA, fold the query heads of each group onto their key/value head."""
    if h_axis is None:
        return allowed
    g = call.groups
    full = np.broadcast_to(
        allowed, (*allowed.shape[:-3], call.query.shape[-3], *allowed.shape[-2:])
    )
    folded = full.reshape(*full.shape[:-3], full.shape[-3] // g, g, *full.shape[-2:])
    return folded.any(axis=-3)


@given(ats.sdpa_calls(), ats.attention_calls(poison_unread=True))
def test_no_argument_is_modified(sdpa: ats.SDPACall, call: ats.AttentionCall) -> None:
    """input.not-mutated: No function modifies any of its arguments (bitwise, NaN poison
    included)."""
    i = call.inputs
    arrays: list[Any] = [sdpa.query, sdpa.key, sdpa.value, sdpa.mask, i.query, i.keys, i.values]
    arrays += [i.mask, *call.parameters.values()]
    before = [None if a is None else np.array(a, copy=True) for a in arrays]
    attnref.scaled_dot_product_attention(sdpa.query, sdpa.key, sdpa.value, **sdpa.kwargs())
    context, weights = attnref.attention(i.query, i.keys, i.values, **call.kwargs())
    scores = weights.copy()  # any [..., Tq, Tk] array that broadcasts with the mask will do
    steps: list[Any] = [scores, weights, context]
    steps_before = [np.array(a, copy=True) for a in steps]
    attnref.attention_distribution(scores, mask=i.mask)
    attnref.local_m_distribution(scores, half_width=1)
    positions = np.zeros(scores.shape[:-1], dtype=scores.dtype)
    attnref.local_p_distribution(scores, positions, half_width=1)
    attnref.attention_value(weights, i.values)
    attnref.concatenate_context(context, context)
    for a, b in zip([*arrays, *steps], [*before, *steps_before], strict=True):
        if a is None or isinstance(a, (int, float)):
            continue
        assert b is not None
        assert a.tobytes() == b.tobytes()
        assert a.dtype == b.dtype
        assert a.shape == b.shape


@given(
    st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda s: (s, ArgumentError)),
        st.sampled_from([True, False, "0.5", 1j, [1.0], None]).map(lambda s: (s, DTypeError)),
    ),
    st.sampled_from(["score_scaled_dot", "scaled_dot_product_attention", "attention"]),
)
@example(bad=(np.float64(np.nan), ArgumentError), where="score_scaled_dot")
def test_scale_must_be_a_finite_real(bad: tuple[Any, type[Exception]], where: str) -> None:
    """input.scale-finite: A scale argument is a finite real number (int or float, not bool); zero
    and negative values are legal. A non-finite value raises ArgumentError, a value of another type
    DTypeError."""
    scale, error = bad
    q = np.ones((2, 3))
    calls: dict[str, Callable[[Any], object]] = {
        "score_scaled_dot": lambda s: attnref.score_scaled_dot(q, q, scale=s),
        "attention": lambda s: attnref.attention(q, q, q, score="scaled_dot", scale=s),
        "scaled_dot_product_attention": lambda s: attnref.scaled_dot_product_attention(
            q, q, q, scale=s
        ),
    }
    if scale is None:  # None means the default scale: legal
        calls[where](None)
        return
    with pytest.raises(error, match="scale must be"):
        calls[where](scale)


@given(st.one_of(st.integers(-5, 0), st.floats(-10, 0, allow_nan=False)))
@example(scale=-5.301062942067216e-309)  # a subnormal scale: products underflow
def test_zero_and_negative_scales_are_legal(scale: float) -> None:
    """input.scale-finite: zero and negative values are legal."""
    q = np.arange(6.0).reshape(2, 3)
    got = attnref.score_scaled_dot(q, q, scale=scale)
    expected = oracles.exact(scale) * oracles.dot_scores(q, q)
    size = abs(scale) * oracles.dot_scores(np.abs(q), np.abs(q))
    bound = tol.dot_bound(np.float64, q.shape[-1], size, extra=2)  # scale into q, then the dot
    tol.assert_within(got, expected, bound, what="scaled scores")
