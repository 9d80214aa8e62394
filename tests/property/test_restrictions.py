"""Properties of the restrictions of ``scaled_dot_product_attention`` beyond the mask and the
causal flag: the score cap, windows, query offsets and key lengths (clauses ``sdpa.softcap``,
``sdpa.window``, ``sdpa.query-offset``, ``sdpa.key-lengths``, ``sdpa.restrictions-combine``,
``sdpa.arguments``).

The allowed sets are rebuilt here by explicit loops over the clauses' inequalities, never
from :mod:`attnref.masking`, and a restriction is compared with the boolean mask that
states the same set: the reference must then compute bit for bit the same result.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import attnref
import attnref.torch as twin
import tolerances as tol
from attnref import vjp as V  # noqa: N812
from attnref.testing import gradcheck
from attnref.testing import strategies as ats
from attnspec.errors import ArgumentError, DTypeError, ShapeError
from attnspec.typing import BoolArray


def batch_of(call: ats.SDPACall) -> tuple[int, ...]:
    """The broadcast batch shape of query, key and value (the query's heads with GQA)."""
    if call.enable_gqa:
        outer = (call.query.shape[:-3], call.key.shape[:-3], call.value.shape[:-3])
        return (*np.broadcast_shapes(*outer), call.query.shape[-3])
    return np.broadcast_shapes(call.query.shape[:-2], call.key.shape[:-2], call.value.shape[:-2])


def explicit_allowed(
    call: ats.SDPACall,
    *,
    window: tuple[int | None, int | None] | None = None,
    offset: int | list[int] | None = None,
    lengths: list[int] | None = None,
) -> BoolArray:
    """``[*batch, Tq, Tk]`` keys the causal flag, window, offset and lengths allow, by loops."""
    batch = batch_of(call)
    t_q, t_k = call.query.shape[-2], call.key.shape[-2]
    allowed = np.zeros((*batch, t_q, t_k), dtype=bool)
    for index in np.ndindex(*batch):
        b = index[0] if index else 0
        length = t_k if lengths is None else lengths[b]
        if offset is not None:
            o = offset[b] if isinstance(offset, list) else offset
        elif call.causal_alignment == "bottom_right":
            o = length - t_q if lengths is not None else t_k - t_q
        else:
            o = 0
        for i in range(t_q):
            position = i + o
            for j in range(t_k):
                ok = j < length
                if call.is_causal:
                    ok = ok and j <= position
                if window is not None:
                    left, right = window
                    ok = ok and (left is None or j >= position - left)
                    ok = ok and (right is None or j <= position + right)
                allowed[(*index, i, j)] = ok
    return allowed


def as_mask(call: ats.SDPACall, allowed: BoolArray) -> Any:
    """The call's own mask joined with ``allowed``, as one mask of the call's kind."""
    mask: Any = call.mask
    if mask is None:
        return allowed
    if mask.dtype == np.bool_:
        return mask & allowed
    return np.where(allowed, mask, -np.inf).astype(mask.dtype)


def windows(t_k: int) -> st.SearchStrategy[tuple[int | None, int | None]]:
    side = st.one_of(st.none(), st.integers(0, t_k + 1))
    return st.tuples(side, side)


def run(call: ats.SDPACall, **options: Any) -> tuple[Any, Any]:
    return attnref.scaled_dot_product_attention(
        call.query, call.key, call.value, **{**call.kwargs(), **options}
    )


@given(ats.sdpa_calls(gqa=False), st.data())
def test_a_window_is_the_band_mask_it_states(call: ats.SDPACall, data: st.DataObject) -> None:
    """sdpa.window, sdpa.restrictions-combine: with window=(left, right) key j is allowed for
    query i exactly when i' - left <= j <= i' + right, together with the mask and the causal
    flag; the result equals the call with that band folded into its mask."""
    window = data.draw(windows(call.key.shape[-2]), label="window")
    context, weights = run(call, window=window)
    band = explicit_allowed(call, window=window)
    joined = replace(call, mask=as_mask(call, band), is_causal=False)
    expected_context, expected_weights = run(joined)
    np.testing.assert_array_equal(weights, expected_weights)
    np.testing.assert_array_equal(context, expected_context)


@given(ats.sdpa_calls())
def test_a_window_covering_every_key_is_no_window(call: ats.SDPACall) -> None:
    """sdpa.window: a window of at least Tk + Tq keys on each side, or (None, None),
    restricts nothing."""
    reach = call.key.shape[-2] + call.query.shape[-2]
    plain = run(call)
    for window in ((reach, reach), (None, None)):
        got = run(call, window=window)
        np.testing.assert_array_equal(got[0], plain[0])
        np.testing.assert_array_equal(got[1], plain[1])


@given(ats.sdpa_calls(gqa=False), st.data())
def test_key_lengths_disallow_the_keys_past_each_items_length(
    call: ats.SDPACall, data: st.DataObject
) -> None:
    """sdpa.key-lengths, sdpa.query-offset: keys j >= L_b are disallowed for batch item b;
    with bottom-right alignment each item's last query sees its own last valid key."""
    batch = batch_of(call)
    assume(len(batch) >= 1)
    t_k = call.key.shape[-2]
    lengths = data.draw(st.lists(st.integers(0, t_k), min_size=batch[0], max_size=batch[0]))
    context, weights = run(call, key_lengths=np.array(lengths))
    allowed = explicit_allowed(call, lengths=lengths)
    joined = replace(call, mask=as_mask(call, allowed), is_causal=False)
    expected_context, expected_weights = run(joined)
    np.testing.assert_array_equal(weights, expected_weights)
    np.testing.assert_array_equal(context, expected_context)


@given(ats.sdpa_calls())
def test_key_lengths_of_every_key_restrict_nothing(call: ats.SDPACall) -> None:
    """sdpa.key-lengths: key_lengths = Tk for every batch item is no restriction."""
    batch = batch_of(call)
    assume(len(batch) >= 1)
    full = np.full(batch[0], call.key.shape[-2])
    got, plain = run(call, key_lengths=full), run(call)
    np.testing.assert_array_equal(got[1], plain[1])
    np.testing.assert_array_equal(got[0], plain[0])


@given(ats.sdpa_calls(gqa=False).map(lambda c: replace(c, is_causal=True)), st.data())
def test_a_query_offset_moves_the_causal_diagonal(call: ats.SDPACall, data: st.DataObject) -> None:
    """sdpa.query-offset: query row i sits at key position i + o; the two alignments are the
    offsets 0 (top-left) and Tk - Tq (bottom-right), and an offset per batch item moves each
    item's diagonal on its own."""
    t_q, t_k = call.query.shape[-2], call.key.shape[-2]
    top = replace(call, causal_alignment="top_left")
    bottom = replace(call, causal_alignment="bottom_right")
    for named, offset in ((top, 0), (bottom, t_k - t_q)):
        np.testing.assert_array_equal(run(top, query_offset=offset)[1], run(named)[1])
    batch = batch_of(call)
    assume(len(batch) >= 1)
    offsets = data.draw(st.lists(st.integers(-t_q, t_k), min_size=batch[0], max_size=batch[0]))
    _, weights = run(top, query_offset=np.array(offsets))
    allowed = explicit_allowed(top, offset=offsets)
    _, expected = run(replace(top, mask=as_mask(top, allowed), is_causal=False))
    np.testing.assert_array_equal(weights, expected)


@given(ats.sdpa_calls(), st.floats(0.5, 20.0))
def test_softcap_caps_the_scaled_scores_before_any_mask(call: ats.SDPACall, cap: float) -> None:
    """sdpa.softcap: the scaled scores become c tanh(s / c) before the mask applies, so the
    weights are the masked softmax of the capped scores and a disallowed key keeps weight 0."""
    context, weights = run(call, softcap=cap)
    plain_context, plain_weights = run(call)
    disallowed = plain_weights == 0
    assert np.all(weights[disallowed] == 0), "a cap applied after the mask leaks weight"
    # the same weights from the capped scores by hand, in extended precision
    dtype = weights.dtype
    q = call.query.astype(np.longdouble)
    k = np.repeat(call.key, call.groups, axis=-3) if call.enable_gqa else call.key
    scale = 1 / np.sqrt(call.query.shape[-1]) if call.scale is None else call.scale
    scores = np.longdouble(scale) * (q @ np.swapaxes(k.astype(np.longdouble), -1, -2))
    capped = np.longdouble(cap) * np.tanh(scores / np.longdouble(cap))
    if call.mask is not None and call.mask.dtype != np.bool_:
        capped = capped + np.broadcast_to(call.mask, weights.shape).astype(np.longdouble)
    allowed = plain_weights != 0
    live = allowed.any(axis=-1, keepdims=True)
    logits = np.where(allowed, capped, -np.inf)
    top = np.where(live, np.max(logits, axis=-1, keepdims=True), 0)
    shifted = np.where(allowed, np.exp(logits - top), 0)
    expected = np.where(live, shifted / np.where(live, shifted.sum(-1, keepdims=True), 1), 0)
    # Error of a computed capped score: the scaled dot product (gamma_{d+1} of its terms)
    # passes through c tanh(./c) with slope <= 1; dividing by c rounds relative to |s| and
    # so moves tanh by at most u |s| / c, times c; tanh rounds relative to |tanh| <= 1 and
    # the product by c once more, each at most c (transcendental(dtype) + u).
    d = call.query.shape[-1]
    magnitude = abs(scale) * (np.abs(call.query) @ np.swapaxes(np.abs(k), -1, -2))
    u = tol.unit_roundoff(dtype)
    delta = tol.dot_bound(dtype, d, magnitude, extra=1) + u * np.abs(scores)
    delta = delta + cap * (tol.transcendental(dtype) + u)
    row_delta = np.max(np.where(allowed, delta, 0), axis=-1, keepdims=True)
    logit_size = float(np.max(np.abs(np.where(allowed, capped, 0)), initial=0.0))
    t_k = call.key.shape[-2]
    bound = tol.softmax_perturbation(row_delta) + tol.softmax_bound(dtype, t_k, logit_size)
    tol.assert_within(weights, expected, bound, "capped weights")
    np.testing.assert_array_equal(context == 0, plain_context == 0)


@given(ats.sdpa_calls())
def test_a_huge_softcap_is_no_softcap(call: ats.SDPACall) -> None:
    """sdpa.softcap: as c grows, c tanh(s / c) tends to s: far above the scores the cap
    changes the weights by no more than its cubic term and rounding."""
    capped, plain = run(call, softcap=1e4), run(call)
    # |c tanh(s/c) - s| <= |s|^3 / (3 c^2), and computing it rounds the division, tanh and
    # the product: each capped score is within that plus 3 u |s| + transcendental(dtype) |s|
    # of the uncapped one, and both softmaxes round by softmax_bound.
    dtype = plain[1].dtype
    largest = _largest_score(call)
    u = tol.unit_roundoff(dtype)
    delta = largest**3 / (3 * 1e4**2) + (3 * u + tol.transcendental(dtype)) * largest
    t_k = call.key.shape[-2]
    bound = float(tol.softmax_perturbation(2 * delta)) + 2 * tol.softmax_bound(dtype, t_k, largest)
    tol.assert_within(capped[1], plain[1], bound, "weights")


def _largest_score(call: ats.SDPACall) -> float:
    k = np.repeat(call.key, call.groups, axis=-3) if call.enable_gqa else call.key
    scale = 1 / np.sqrt(call.query.shape[-1]) if call.scale is None else call.scale
    return float(np.max(np.abs(scale * (call.query @ np.swapaxes(k, -1, -2))), initial=0.0))


BAD = [
    ({"softcap": 0.0}, ArgumentError, "softcap must be finite and greater than 0"),
    ({"softcap": -1.0}, ArgumentError, "softcap must be finite and greater than 0"),
    ({"softcap": float("inf")}, ArgumentError, "softcap must be finite and greater than 0"),
    ({"softcap": True}, DTypeError, "softcap must be a real number or None"),
    ({"softcap": 1e300, "dtype": "float32"}, ArgumentError, "softcap must be finite in the result"),
    ({"window": (1,)}, ArgumentError, "window must be a pair"),
    ({"window": (-1, 0)}, ArgumentError, "window left must be at least 0"),
    ({"window": (0, 1.5)}, DTypeError, "window right must be an int"),
    ({"query_offset": 1.5}, DTypeError, "query_offset must be an int or an integer array"),
    ({"query_offset": [0, 1, 2]}, ShapeError, r"query_offset must have shape \[2\]"),
    (
        {"query_offset": 1, "causal_alignment": "bottom_right"},
        ArgumentError,
        "query_offset and causal_alignment='bottom_right'",
    ),
    ({"key_lengths": [1.0, 2.0]}, DTypeError, r"key_lengths must be an integer array \[B\]"),
    ({"key_lengths": [5, 6]}, ArgumentError, r"key_lengths must lie in \[0, 5\]"),
    ({"key_lengths": [-1, 2]}, ArgumentError, r"key_lengths must lie in \[0, 5\]"),
    ({"key_lengths": 3}, ShapeError, r"key_lengths must have shape \[2\]"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bad_restrictions_raise_the_same_error_in_both_backends(
    options: dict[str, Any], error: type[Exception], message: str, backend: str
) -> None:
    """sdpa.arguments: a softcap, window, query offset or key lengths out of range raises the
    error that names the argument, in the reference and the twin alike."""
    options = dict(options)
    dtype = np.dtype(options.pop("dtype", "float64"))
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 4), (2, 5, 4), (2, 5, 3)))
    if backend == "numpy":
        converted: dict[str, Any] = {
            n: np.asarray(o) if isinstance(o, list) else o for n, o in options.items()
        }
        with pytest.raises(error, match=message):
            attnref.scaled_dot_product_attention(q, k, v, **converted)
        return
    converted = {n: torch.tensor(o) if isinstance(o, list) else o for n, o in options.items()}
    with pytest.raises(error, match=message):
        twin.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)), **converted)


def restricted_calls() -> st.SearchStrategy[tuple[ats.SDPACall, dict[str, Any]]]:
    """float64 calls with a softcap, a window, key lengths or an offset drawn on top."""

    @st.composite
    def draw(d: st.DrawFn) -> tuple[ats.SDPACall, dict[str, Any]]:
        call = d(ats.sdpa_calls(dtype=np.float64, gqa=False))
        t_q, t_k = call.query.shape[-2], call.key.shape[-2]
        batch = batch_of(call)
        options: dict[str, Any] = {}
        if d(st.booleans()):
            options["softcap"] = d(st.floats(0.5, 20.0))
        if d(st.booleans()):
            options["window"] = d(windows(t_k))
        if len(batch) > 0 and d(st.booleans()):
            options["key_lengths"] = np.array(
                d(st.lists(st.integers(0, t_k), min_size=batch[0], max_size=batch[0]))
            )
        if call.causal_alignment == "top_left" and d(st.booleans()):
            options["query_offset"] = d(st.integers(-t_q, t_k))
        return call, options

    return draw()


@given(restricted_calls(), st.integers(0, 2**32 - 1))
def test_the_vjp_with_restrictions_is_the_complex_step_derivative(
    drawn: tuple[ats.SDPACall, dict[str, Any]], seed: int
) -> None:
    """sdpa.softcap, input.gradient: the VJP through the cap and the restrictions equals the
    complex-step derivative of the forward."""
    call, options = drawn
    kwargs = {**call.kwargs(), **options}

    def forward(q: Any, k: Any, v: Any) -> tuple[Any, Any]:
        return attnref.scaled_dot_product_attention(q, k, v, **kwargs)

    def vjp(primals: Any, cotangent: Any) -> list[Any]:
        grads = V.vjp_scaled_dot_product_attention(*primals, cotangent=cotangent, **kwargs)
        return [grads.query, grads.key, grads.value]

    result = gradcheck.check_vjp(
        forward, vjp, [call.query, call.key, call.value], seed=seed, names=["query", "key", "value"]
    )
    result.assert_passed()


@given(restricted_calls())
def test_the_twin_computes_the_restrictions_as_the_reference(
    drawn: tuple[ats.SDPACall, dict[str, Any]],
) -> None:
    """sdpa.softcap, sdpa.window, sdpa.key-lengths, sdpa.query-offset: the PyTorch twin gives
    the reference's weights and context in float64 to rounding, and zeros at the same keys."""
    call, options = drawn
    context, weights = run(call, **options)
    tensors = {
        n: torch.from_numpy(np.asarray(o)) if n == "key_lengths" else o for n, o in options.items()
    }
    mask = None if call.mask is None else torch.from_numpy(np.asarray(call.mask))
    kwargs = {**call.kwargs(), "mask": mask, **tensors}
    t_context, t_weights = twin.scaled_dot_product_attention(
        *map(torch.from_numpy, (call.query, call.key, call.value)), **kwargs
    )
    np.testing.assert_array_equal(t_weights.numpy() == 0, weights == 0)
    t_k, d = call.key.shape[-2], call.query.shape[-1]
    # two float64 evaluations of the same scores (d + 4 roundings with the cap) and softmax
    scale = 1 / np.sqrt(d) if call.scale is None else abs(call.scale)
    size = scale * (np.abs(call.query) @ np.swapaxes(np.abs(call.key), -1, -2))
    delta = tol.bound("sum", d + 4, size + options.get("softcap", 0.0)).max()
    w_bound = tol.softmax_perturbation(2 * delta) + tol.bound("softmax", t_k, 1.0)
    tol.assert_within(t_weights.numpy(), weights, w_bound, "weights")
    c_bound = t_k * w_bound * np.abs(call.value).max(initial=0.0) + tol.bound(
        "sum", t_k, np.abs(call.value).max(initial=0.0)
    )
    tol.assert_within(t_context.numpy(), context, c_bound, "context")
