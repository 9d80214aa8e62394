"""Properties of the composites ``attention`` and ``scaled_dot_product_attention``
(clauses ``attention.*``, ``sdpa.*``) and the metamorphic laws of the whole step."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import oracles
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import attnref
import tolerances as tol
from attnref.testing import strategies as ats
from attnspec.errors import ArgumentError, ShapeError
from attnspec.typing import Array, BoolArray, Mask

PARAMETER_NAMES = ("scale", "W_a", "W_q", "W_k", "v_a")


def causal_allowed(t_q: int, t_k: int, alignment: str) -> BoolArray:
    """The causal mask by explicit loops, as ``sdpa.causal-top-left``/``-bottom-right`` state it."""
    allowed = np.zeros((t_q, t_k), dtype=bool)
    for i in range(t_q):
        for j in range(t_k):
            if alignment == "top_left":
                allowed[i, j] = j <= i
            else:
                allowed[i, j] = j <= i + t_k - t_q
    return allowed


def combined_mask(call: ats.SDPACall) -> Mask | None:
    """``mask`` joined with the causal mask (``sdpa.causal-with-mask``), built independently."""
    if not call.is_causal:
        return call.mask
    causal = causal_allowed(call.query.shape[-2], call.key.shape[-2], call.causal_alignment)
    mask: Any = call.mask
    if mask is None:
        return causal
    if mask.dtype == np.bool_:
        return np.asarray(mask & causal)
    return np.where(causal, mask, -np.inf).astype(mask.dtype)


def repeated(x: Array, groups: int) -> Array:
    """Key/value heads repeated interleaved by explicit indexing: head ``h`` reads ``h // g``."""
    heads = [x[..., h // groups, :, :] for h in range(x.shape[-3] * groups)]
    return np.stack(heads, axis=-3)


def weights_shape(call: ats.SDPACall) -> tuple[int, ...]:
    """``[..., Tq, Tk]`` with the batch of query, key, value and mask broadcast together."""
    batches = [call.query.shape[:-3], call.key.shape[:-3], call.value.shape[:-3]]
    heads = [call.query.shape[-3]] if call.enable_gqa else []
    if not call.enable_gqa:
        batches = [call.query.shape[:-2], call.key.shape[:-2], call.value.shape[:-2]]
    if call.mask is not None:
        batches.append(call.mask.shape[: -3 if call.enable_gqa else -2])
    batch = np.broadcast_shapes(*batches)
    return (*batch, *heads, call.query.shape[-2], call.key.shape[-2])


def allowed_weights(call: ats.SDPACall) -> BoolArray:
    """Which weights the spec allows to be non-zero, shaped like the weights."""
    mask: Any = combined_mask(call)
    t_q, t_k = call.query.shape[-2], call.key.shape[-2]
    if mask is None:
        return np.ones((t_q, t_k), dtype=bool)
    return np.asarray(mask if mask.dtype == np.bool_ else mask != -np.inf)


def score_step(call: ats.AttentionCall) -> Array:
    """The score function of the call's kind, applied directly."""
    q, k, p = call.inputs.query, call.inputs.keys, call.parameters
    if call.score == "dot":
        return attnref.score_dot(q, k)
    if call.score == "scaled_dot":
        return attnref.score_scaled_dot(q, k, scale=p["scale"])
    if call.score == "general":
        return attnref.score_general(q, k, p["W_a"])
    if call.score == "concat":
        return attnref.score_concat(q, k, p["W_a"], p["v_a"])
    if call.score == "additive":
        return attnref.score_additive(q, k, p["W_q"], p["W_k"], p["v_a"])
    return attnref.score_location(q, p["W_a"])


@given(ats.attention_calls())
def test_attention_is_the_composition_of_its_steps(call: ats.AttentionCall) -> None:
    """attention.composition: The result is (context, weights) with weights =
    attention_distribution(score_<kind>(query, keys, ...), mask=mask) and context =
    attention_value(weights, values)."""
    i = call.inputs
    context, weights = attnref.attention(i.query, i.keys, i.values, **call.kwargs())
    expected = attnref.attention_distribution(score_step(call), mask=i.mask)
    # Note: the results carry the batch of every sequence argument and the mask
    # (input.batch-broadcast), also of those the formula does not read (values for the
    # weights, keys for score "location"); the formula's results repeat along them.
    batches = [i.query.shape[:-2], i.keys.shape[:-2], i.values.shape[:-2]]
    if i.mask is not None:
        batches.append(i.mask.shape[:-2])
    batch = np.broadcast_shapes(*batches)
    assert weights.shape == (*batch, *expected.shape[-2:])
    np.testing.assert_array_equal(weights, np.broadcast_to(expected, weights.shape))
    value = attnref.attention_value(expected, i.values)
    assert context.shape == (*batch, *value.shape[-2:])
    np.testing.assert_array_equal(context, np.broadcast_to(value, context.shape))


@given(ats.attention_calls(mask_kinds=("none",)), st.data())
def test_attention_takes_exactly_the_parameters_of_its_score(
    call: ats.AttentionCall, data: st.DataObject
) -> None:
    """attention.score-parameters: Each score kind takes exactly its own parameters ... A missing
    or an extra parameter, or an unknown kind, raises ArgumentError."""
    i = call.inputs
    args = (i.query, i.keys, i.values)
    extra = [n for n in PARAMETER_NAMES if n not in call.parameters]
    if extra:
        name = data.draw(st.sampled_from(extra))
        value: Any = 1.0 if name == "scale" else np.ones((1, 1), dtype=i.query.dtype)
        with pytest.raises(ArgumentError, match=f"{name} does not belong to score="):
            attnref.attention(*args, **call.kwargs(), **{name: value})
    required = [n for n in call.parameters if n != "scale"]
    if required:
        name = data.draw(st.sampled_from(required))
        kwargs = call.kwargs()
        del kwargs[name]
        with pytest.raises(ArgumentError, match=f"needs {name}"):
            attnref.attention(*args, **kwargs)
    unknown = data.draw(st.text(max_size=12).filter(lambda t: t not in ats.SCORE_KINDS))
    with pytest.raises(ArgumentError, match="score must be one of"):
        attnref.attention(*args, score=unknown)  # type: ignore[arg-type]


@given(ats.sdpa_calls())
def test_sdpa_is_the_formula(call: ats.SDPACall) -> None:
    """sdpa.formula: The result is (context, weights) with weights = attention_distribution(scale
    * query @ swapaxes(key, -1, -2), mask=combined_mask) and context = weights @ value, where the
    combined mask joins mask and the causal mask."""
    context, weights = attnref.scaled_dot_product_attention(
        call.query, call.key, call.value, **call.kwargs()
    )
    k, v = call.key, call.value
    if call.enable_gqa:
        k, v = repeated(k, call.groups), repeated(v, call.groups)
    scores = attnref.score_scaled_dot(call.query, k, scale=call.scale)
    expected = attnref.attention_distribution(scores, mask=combined_mask(call))
    np.testing.assert_array_equal(weights, np.broadcast_to(expected, weights.shape))
    assert weights.shape == weights_shape(call)
    np.testing.assert_array_equal(context, attnref.attention_value(expected, v))


def sdpa_bounds(call: ats.SDPACall, scale: float) -> tuple[float, float]:
    """Forward error bounds (weights, context) of one sdpa evaluation of ``call``."""
    k = repeated(call.key, call.groups) if call.enable_gqa else call.key
    score_size = abs(scale) * float(oracles.dot_scores(np.abs(call.query), np.abs(k)).max())
    if call.mask is not None and call.mask.dtype != np.bool_:
        finite = np.abs(call.mask[np.isfinite(call.mask)])
        score_size += float(finite.max(initial=0))  # the bias is rounded into the logits
    value_size = float(np.abs(call.value).max(initial=0))
    return tol.attention_bounds(
        call.query.dtype,
        tk=call.key.shape[-2],
        d=call.query.shape[-1],
        score_magnitude=score_size,
        value_magnitude=value_size,
    )


def default_scale(call: ats.SDPACall) -> float:
    """The scale an sdpa call uses: its own, or 1/sqrt(d)."""
    return 1 / math.sqrt(call.query.shape[-1]) if call.scale is None else float(call.scale)


@given(ats.sdpa_calls().map(lambda c: replace(c, scale=None)))
def test_sdpa_default_scale_is_one_over_sqrt_d(call: ats.SDPACall) -> None:
    """sdpa.default-scale: When scale is None the scale is 1/sqrt(d) with d the last dimension of
    query."""
    args = (call.query, call.key, call.value)
    context, weights = attnref.scaled_dot_product_attention(*args, **call.kwargs())
    explicit = replace(call, scale=1 / math.sqrt(call.query.shape[-1]))
    ctx_e, w_e = attnref.scaled_dot_product_attention(*args, **explicit.kwargs())
    w_bound, c_bound = sdpa_bounds(call, default_scale(explicit))
    tol.assert_within(weights, w_e, 2 * w_bound, what="weights")
    tol.assert_within(context, ctx_e, 2 * c_bound, what="context")


def causal_call(call: ats.SDPACall, alignment: str) -> ats.SDPACall:
    """The call with no mask, causal in ``alignment``."""
    return replace(call, mask=None, is_causal=True, causal_alignment=alignment)  # type: ignore[arg-type]


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@given(call=ats.sdpa_calls(gqa=False))
def test_causal_masks_allow_exactly_the_specified_keys(call: ats.SDPACall, alignment: str) -> None:
    """sdpa.causal-top-left, sdpa.causal-bottom-right: With is_causal=True and
    causal_alignment='top_left', query i may attend to key j exactly when j <= i; with
    'bottom_right' exactly when j <= i + Tk - Tq: the last query sees every key. Rows with no
    allowed key follow distribution.fully-masked-row."""
    call = causal_call(call, alignment)
    allowed = causal_allowed(call.query.shape[-2], call.key.shape[-2], alignment)
    args = (call.query, call.key, call.value)
    # scale 0 makes every allowed weight 1/n > 0, so positivity shows the allowed set exactly
    _, uniform = attnref.scaled_dot_product_attention(*args, **replace(call, scale=0).kwargs())
    np.testing.assert_array_equal(uniform > 0, np.broadcast_to(allowed, uniform.shape))
    context, weights = attnref.scaled_dot_product_attention(*args, **call.kwargs())
    assert np.all(weights[..., ~allowed] == 0)
    empty = ~allowed.any(axis=-1)
    assert np.all(weights[..., empty, :] == 0)
    assert np.all(context[..., empty, :] == 0)


@pytest.mark.parametrize("style", ["boolean", "additive"])
@given(data=st.data())
def test_causal_and_mask_allow_only_what_both_allow(
    style: ats.MaskKind, data: st.DataObject
) -> None:
    """sdpa.causal-with-mask: When both mask and is_causal are given, a key is allowed only if both
    allow it (an additive mask keeps its finite entries at the causally allowed positions)."""
    calls = ats.sdpa_calls(mask_kinds=[style], mask_patterns=["random", "key_padding"])
    call = data.draw(calls.map(lambda c: replace(c, is_causal=True)), label="call")
    args = (call.query, call.key, call.value)
    context, weights = attnref.scaled_dot_product_attention(*args, **call.kwargs())
    joined = replace(call, mask=combined_mask(call), is_causal=False)
    ctx_j, w_j = attnref.scaled_dot_product_attention(*args, **joined.kwargs())
    np.testing.assert_array_equal(weights, w_j)
    np.testing.assert_array_equal(context, ctx_j)
    assert np.all(weights[~np.broadcast_to(allowed_weights(call), weights.shape)] == 0)


@given(ats.sdpa_calls(gqa=True))
def test_grouped_query_heads_equal_explicitly_repeated_heads(call: ats.SDPACall) -> None:
    """sdpa.grouped-query-heads: With enable_gqa=True the heads axis is -3; key and value have H_k
    heads, query H_q = g H_k, and query head h uses key and value head floor(h / g) (repeated
    interleaved, as repeat_interleave, not tiled)."""
    context, weights = attnref.scaled_dot_product_attention(
        call.query, call.key, call.value, **call.kwargs()
    )
    for h in range(call.query.shape[-3]):
        mask = call.mask
        if mask is not None:
            mask = mask[..., h if mask.shape[-3] > 1 else 0, :, :]
        single = replace(call, mask=mask, enable_gqa=False)
        ctx_h, w_h = attnref.scaled_dot_product_attention(
            call.query[..., h, :, :],
            call.key[..., h // call.groups, :, :],
            call.value[..., h // call.groups, :, :],
            **single.kwargs(),
        )
        np.testing.assert_array_equal(context[..., h, :, :], ctx_h)
        np.testing.assert_array_equal(weights[..., h, :, :], w_h)


@given(
    st.integers(2, 4),
    st.integers(1, 7),
    st.sampled_from(["not a multiple", "value heads differ", "rank 2"]),
)
def test_ungroupable_heads_raise(h_k: int, h_q: int, problem: str) -> None:
    """sdpa.gqa-heads-divisible: With enable_gqa=True, a rank below 3, or H_q not a multiple of
    H_k, or key and value head counts that differ, raises ShapeError."""
    q = np.zeros((h_q, 2, 3))
    k = np.zeros((h_k, 4, 3))
    v = np.zeros((h_k, 4, 5))
    if problem == "not a multiple":
        assume(h_q % h_k != 0)
    elif problem == "value heads differ":
        q = np.zeros((h_k * h_q, 2, 3))
        v = np.zeros((h_k + 1, 4, 5))
    else:
        q, k, v = q[0], k[0], v[0]
    with pytest.raises(ShapeError):
        attnref.scaled_dot_product_attention(q, k, v, enable_gqa=True)


@given(
    st.one_of(
        st.text(max_size=12).filter(lambda t: t not in ("top_left", "bottom_right")),
        st.sampled_from([None, 0, "TOP_LEFT", "bottom-right"]),
    ),
    st.booleans(),
)
def test_unknown_causal_alignment_raises(alignment: Any, is_causal: bool) -> None:
    """sdpa.causal-alignment-known: causal_alignment is 'top_left' or 'bottom_right'; another
    value raises ArgumentError even when is_causal is False."""
    q = np.zeros((2, 3))
    with pytest.raises(ArgumentError, match="causal_alignment must be one of"):
        attnref.scaled_dot_product_attention(
            q, q, q, is_causal=is_causal, causal_alignment=alignment
        )


# --- metamorphic laws -----------------------------------------------------------------------


@st.composite
def permuted(draw: st.DrawFn, axis: str) -> tuple[ats.SDPACall, list[int]]:
    """A non-causal sdpa call and a permutation of its keys (``axis='keys'``) or queries."""
    call = draw(ats.sdpa_calls(gqa=False).map(lambda c: replace(c, is_causal=False)))
    n = call.key.shape[-2] if axis == "keys" else call.query.shape[-2]
    return call, draw(st.permutations(range(n)))


@given(permuted("keys"))
def test_permuting_keys_values_and_mask_permutes_the_weights(
    args: tuple[ats.SDPACall, list[int]],
) -> None:
    """distribution.softmax, value.weighted-sum: the softmax sums over the allowed keys and the
    context over all keys, so permuting keys with values and mask permutes the weights and leaves
    the context unchanged."""
    call, order = args
    mask = None if call.mask is None else call.mask[..., order]
    moved = replace(call, key=call.key[..., order, :], value=call.value[..., order, :], mask=mask)
    context, weights = attnref.scaled_dot_product_attention(
        call.query, call.key, call.value, **call.kwargs()
    )
    ctx_p, w_p = attnref.scaled_dot_product_attention(
        moved.query, moved.key, moved.value, **moved.kwargs()
    )
    w_bound, c_bound = sdpa_bounds(call, default_scale(call))
    tol.assert_within(w_p, weights[..., order], 2 * w_bound, what="permuted weights")
    tol.assert_within(ctx_p, context, 2 * c_bound, what="context")


@given(permuted("queries"))
def test_permuting_queries_permutes_the_outputs(args: tuple[ats.SDPACall, list[int]]) -> None:
    """sdpa.formula: each row of the result depends on its own query row only, so permuting the
    queries (with the mask's rows) permutes the context and the weights."""
    call, order = args
    mask = None if call.mask is None else call.mask[..., order, :]
    moved = replace(call, query=call.query[..., order, :], mask=mask)
    context, weights = attnref.scaled_dot_product_attention(
        call.query, call.key, call.value, **call.kwargs()
    )
    ctx_p, w_p = attnref.scaled_dot_product_attention(
        moved.query, moved.key, moved.value, **moved.kwargs()
    )
    w_bound, c_bound = sdpa_bounds(call, default_scale(call))
    tol.assert_within(w_p, weights[..., order, :], 2 * w_bound, what="permuted weights")
    tol.assert_within(ctx_p, context[..., order, :], 2 * c_bound, what="permuted context")


@given(ats.sdpa_calls(), st.data())
def test_identical_values_give_that_value(call: ats.SDPACall, data: st.DataObject) -> None:
    """value.convex-hull: each context row lies in the convex hull of the value rows, so when
    every value row is the same vector c the context of every row with an allowed key is c."""
    row = data.draw(ats.well_conditioned_arrays(call.value.dtype, call.value.shape[-1]))
    same = replace(call, value=np.broadcast_to(row, call.value.shape).copy())
    context, weights = attnref.scaled_dot_product_attention(
        same.query, same.key, same.value, **same.kwargs()
    )
    has_key = (weights != 0).any(axis=-1)
    t_k = call.key.shape[-2]
    rsb = tol.row_sum_bound(weights.dtype, t_k)
    bound = (tol.gamma(t_k, weights.dtype) * (1 + rsb) + rsb) * np.abs(oracles.exact(row))
    expected = np.broadcast_to(oracles.exact(row), context[has_key].shape)
    tol.assert_within(context[has_key], expected, bound, what="context of identical values")


def uniform_average(call: ats.SDPACall) -> tuple[oracles.Exact, oracles.Exact]:
    """The uniform weights over the allowed keys and the mean of the allowed values."""
    v = repeated(call.value, call.groups) if call.enable_gqa else call.value
    allowed = np.broadcast_to(allowed_weights(call), weights_shape(call))
    n = allowed.sum(axis=-1, keepdims=True)
    weights = np.where(allowed, 1 / np.maximum(n, 1).astype(np.longdouble), 0).astype(np.longdouble)
    return weights, oracles.weighted_sum(weights, v)


@given(ats.sdpa_calls())
def test_scale_zero_gives_the_uniform_average(call: ats.SDPACall) -> None:
    """score.scale-applied, distribution.ties-uniform: lambda = 0 gives all-zero scores, and equal
    scores give the uniform weight 1/n on the n allowed keys: the context is the mean of the
    allowed values."""
    zero = replace(call, scale=0)
    context, weights = attnref.scaled_dot_product_attention(
        zero.query, zero.key, zero.value, **zero.kwargs()
    )
    w_exact, c_exact = uniform_average(zero)
    u = tol.unit_roundoff(weights.dtype)
    if zero.mask is not None and zero.mask.dtype != np.bool_:
        # finite biases of an additive mask still bias: only boolean masks give equal logits
        assume(bool(np.all(zero.mask[np.isfinite(zero.mask)] == 0)))
    tol.assert_within(weights, w_exact, u * w_exact, what="uniform weights")
    t_k = call.key.shape[-2]
    v = repeated(zero.value, zero.groups) if zero.enable_gqa else zero.value
    size = oracles.weighted_sum(w_exact, np.abs(v))
    tol.assert_within(context, c_exact, tol.gamma(t_k + 1, weights.dtype) * size, what="mean")


@given(ats.sdpa_calls(mask_kinds=("none", "boolean")))
def test_a_vanishing_scale_tends_to_the_uniform_average(call: ats.SDPACall) -> None:
    """score.scale-applied, distribution.ties-uniform: as lambda -> 0 the scores tend to zero and
    the weights to the uniform 1/n; with |lambda s| <= u/16 they are uniform to rounding."""
    k = repeated(call.key, call.groups) if call.enable_gqa else call.key
    size = float(oracles.dot_scores(np.abs(call.query), np.abs(k)).max())
    u = tol.unit_roundoff(call.query.dtype)
    tiny = replace(call, scale=u / 16 / (1 + size))
    _, weights = attnref.scaled_dot_product_attention(
        tiny.query, tiny.key, tiny.value, **tiny.kwargs()
    )
    w_exact, _ = uniform_average(tiny)
    bound = tol.softmax_perturbation(u / 8) + tol.softmax_bound(weights.dtype, k.shape[-2], 0)
    tol.assert_within(weights, w_exact, bound, what="nearly uniform weights")


@given(ats.sdpa_calls(gqa=False, mask_kinds=("none",)).map(lambda c: replace(c, is_causal=False)))
@example(
    ats.SDPACall(
        np.array([[1.0, 0.0]]),
        np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]]),
        np.array([[5.0], [7.0], [-1.0]]),
        None,
        False,
        "top_left",
        None,
        False,
        1,
    )
)
@example(  # a scale that float16 cannot hold must be skipped, not overflow
    ats.SDPACall(
        np.array([[1.0]], np.float16),
        np.array([[0.001953]], np.float16),
        np.array([[0.0]], np.float16),
        None,
        False,
        "top_left",
        None,
        False,
        1,
    )
)
def test_a_large_scale_selects_the_value_of_the_largest_score(call: ats.SDPACall) -> None:
    """distribution.softmax: alpha_ij = exp(e_ij) / sum_k exp(e_ik), so as lambda grows the weight
    of a row's unique largest score tends to 1 and the context to that key's value."""
    scores = attnref.score_dot(call.query, call.key)  # the products sdpa scales
    top = np.sort(scores, axis=-1)
    gap = top[..., -1] - top[..., -2] if scores.shape[-1] > 1 else np.full(top.shape[:-1], np.inf)
    size = float(np.abs(scores).max(initial=0))
    assume(size > 0)
    dt = scores.dtype
    u = tol.unit_roundoff(dt)
    t_k = scores.shape[-1]
    threshold = size / 16
    lam = (math.log(t_k) + math.log(1 / u) + 4) / threshold
    largest = float(np.finfo(np.dtype(dt.name)).max)
    assume(lam < largest / 4 and lam * size < largest / 4)  # the scale and scores stay finite
    large = replace(call, scale=lam)
    context, _ = attnref.scaled_dot_product_attention(
        large.query, large.key, large.value, **large.kwargs()
    )
    batch = np.broadcast_shapes(scores.shape[:-2], call.value.shape[:-2])
    clear = np.broadcast_to(gap >= threshold, (*batch, scores.shape[-2]))  # a unique maximum
    winner = np.broadcast_to(np.argmax(scores, axis=-1), (*batch, scores.shape[-2]))
    values = np.broadcast_to(call.value, (*batch, *call.value.shape[-2:]))
    chosen = np.take_along_axis(values, winner[..., None], axis=-2)  # [..., Tq, d_v]
    # every other weight is below u e^{-4} after rounding the scaled scores; the sum rounds too
    value_size = float(np.abs(call.value).max(initial=0))
    bound = 2 * value_size * (u + tol.gamma(t_k + 1, dt))
    tol.assert_within(context[clear], chosen[clear], bound, what="arg-max value")


@given(ats.attention_calls(poison_unread=False), ats.sdpa_calls())
def test_fully_masked_rows_have_zero_weights_and_zero_context(
    call: ats.AttentionCall, sdpa: ats.SDPACall
) -> None:
    """distribution.fully-masked-row: A row with no allowed key gets all-zero weights (not NaN, not
    uniform), and therefore a zero context."""
    i = call.inputs
    context, weights = attnref.attention(i.query, i.keys, i.values, **call.kwargs())
    allowed = (
        np.ones(weights.shape, dtype=bool)
        if i.mask is None
        else oracles.allowed_keys(np.zeros(weights.shape), i.mask)[1]
    )
    empty = ~np.broadcast_to(allowed, weights.shape).any(axis=-1)
    assert np.all(weights[empty] == 0)
    assert np.all(context[empty] == 0)
    context, weights = attnref.scaled_dot_product_attention(
        sdpa.query, sdpa.key, sdpa.value, **sdpa.kwargs()
    )
    empty = ~np.broadcast_to(allowed_weights(sdpa), weights.shape).any(axis=-1)
    assert np.all(weights[empty] == 0)
    assert np.all(context[empty] == 0)
