"""Properties of the score functions (clauses ``score.*``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import oracles
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import attnref
import tolerances as tol
from attnref.testing import strategies as ats
from attnspec.typing import Array, ScoreKind


@dataclass(frozen=True, eq=False)
class Pair:
    """Query, keys and the parameters of one score kind, all of one dtype."""

    query: Array
    keys: Array
    params: dict[str, Any]


@st.composite
def pairs(
    draw: st.DrawFn,
    kind: ScoreKind,
    *,
    regimes: tuple[ats.Regime, ...] = ("well_conditioned",),
    max_features: int = 4,
) -> Pair:
    """Query and keys with broadcastable batches, and parameters for ``kind``."""
    dt = draw(ats.float_dtypes())
    s = draw(
        ats.attention_shapes(max_features=max_features, same_features=kind in ("dot", "scaled_dot"))
    )
    inputs = draw(
        ats.attention_inputs(dtype=dt, shapes=st.just(s), regimes=regimes, mask_kinds=("none",))
    )
    params = draw(ats.score_parameters(kind, dtype=dt, d_q=s.d_q, d_k=s.d_k, tk=s.tk))
    return Pair(inputs.query, inputs.keys, params)


def dot_magnitude(query: Array, keys: Array, /) -> oracles.Exact:
    """``Σ_k |q_ik| |h_jk|`` for every pair: what a dot product's rounding scales with."""
    return oracles.dot_scores(np.abs(query), np.abs(keys))


@given(st.sampled_from(ats.SCORE_KINDS).flatmap(lambda kind: st.tuples(st.just(kind), pairs(kind))))
def test_every_score_has_the_broadcast_shape(case: tuple[ScoreKind, Pair]) -> None:
    """score.shape: Every score function returns an array of shape broadcast(...) + [Tq, Tk],
    batch dimensions broadcast between its sequence arguments."""
    kind, p = case
    q, k = p.query, p.keys
    if kind == "dot":
        got = attnref.score_dot(q, k)
    elif kind == "scaled_dot":
        got = attnref.score_scaled_dot(q, k, **p.params)
    elif kind == "general":
        got = attnref.score_general(q, k, p.params["W_a"])
    elif kind == "concat":
        got = attnref.score_concat(q, k, p.params["W_a"], p.params["v_a"])
    elif kind == "additive":
        got = attnref.score_additive(q, k, p.params["W_q"], p.params["W_k"], p.params["v_a"])
    else:
        got = attnref.score_location(q, p.params["W_a"])
        k = np.zeros((*q.shape[:-2], p.params["W_a"].shape[0], 1))  # Tk from W_a, no key batch
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    assert got.shape == (*batch, q.shape[-2], k.shape[-2])


@given(pairs("dot", regimes=("well_conditioned", "large", "ties", "near_ties")))
@example(Pair(np.ones((1, 1), dtype=np.float16), np.ones((1, 1), dtype=np.float16), {}))
def test_dot_score_is_the_dot_product(p: Pair) -> None:
    """score.dot: Entry [..., i, j] is the dot product s_i^T h_j of query row i and key row j."""
    got = attnref.score_dot(p.query, p.keys)
    bound = tol.dot_bound(got.dtype, p.query.shape[-1], dot_magnitude(p.query, p.keys))
    tol.assert_within(got, oracles.dot_scores(p.query, p.keys), bound, what="score_dot")


@given(pairs("dot"), ats.scales(max_magnitude=8.0, allow_none=False))
def test_scaled_dot_score_is_scale_times_the_dot_product(p: Pair, scale: float) -> None:
    """score.scaled-dot: Entry [..., i, j] is lambda s_i^T h_j with the given scale lambda."""
    got = attnref.score_scaled_dot(p.query, p.keys, scale=scale)
    lam = oracles.exact(scale)
    expected = lam * oracles.dot_scores(p.query, p.keys)
    # the dot product (d roundings), rounding lambda into the dtype, and the product
    size = abs(lam) * dot_magnitude(p.query, p.keys)
    bound = tol.dot_bound(got.dtype, p.query.shape[-1], size, extra=2)
    tol.assert_within(got, expected, bound, what="scaled")


@given(pairs("dot", max_features=16))
def test_default_scale_is_one_over_sqrt_d(p: Pair) -> None:
    """score.default-scale: When scale is None, lambda = 1/sqrt(d_k), evaluated as
    1 / math.sqrt(d_k) in float64 ... and converted to the result dtype."""
    got = attnref.score_scaled_dot(p.query, p.keys)
    d = p.keys.shape[-1]
    expected = oracles.dot_scores(p.query, p.keys) / np.sqrt(oracles.exact(d))
    # the dot product (d roundings), 1/sqrt(d) in float64 (2) and in the dtype (1), the product
    bound = tol.dot_bound(got.dtype, d, dot_magnitude(p.query, p.keys) / math.sqrt(d), extra=3)
    tol.assert_within(got, expected, bound, what="default")
    assert got.dtype == p.query.dtype


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_default_scale_is_the_float64_value_converted(dtype: type[np.floating[Any]]) -> None:
    """score.default-scale: When scale is None, lambda = 1/sqrt(d_k), evaluated as
    1 / math.sqrt(d_k) in float64 (as PyTorch does) and converted to the result dtype (checked
    for d = 1 .. 256 with a unit query and key, whose score is lambda itself)."""
    wrong = []
    for d in range(1, 257):
        unit = np.zeros((1, d), dtype=dtype)
        unit[0, 0] = 1
        got = attnref.score_scaled_dot(unit, unit)[0, 0]
        if got != np.asarray(1 / math.sqrt(d), dtype=dtype):
            wrong.append(d)
    assert not wrong, f"default scale differs from 1 / math.sqrt(d) for d in {wrong}"


@given(pairs("dot"), st.floats(2.0, 8.0) | st.floats(0.125, 0.5), st.booleans())
def test_scale_is_applied_exactly_once(p: Pair, magnitude: float, negative: bool) -> None:
    """score.scale-applied: The scale multiplies the score exactly once; lambda = 0 gives all-zero
    scores and a negative lambda reverses their order."""
    q, k = p.query, p.keys
    zero = attnref.score_scaled_dot(q, k, scale=0.0)
    assert np.all(zero == 0)
    scale = -magnitude if negative else magnitude
    got = attnref.score_scaled_dot(q, k, scale=scale)
    np.testing.assert_array_equal(attnref.score_scaled_dot(q, k, scale=-scale), -got)
    # once: within one product's rounding of lambda * (q . h); lambda^2 or 1 would be far off
    once = oracles.exact(scale) * oracles.dot_scores(q, k)
    bound = tol.dot_bound(got.dtype, q.shape[-1], abs(scale) * dot_magnitude(q, k), extra=2)
    tol.assert_within(got, once, bound, what="scaled once")


@given(pairs("dot", regimes=("well_conditioned", "large", "ties")))
def test_general_score_with_the_identity_is_the_dot_score(p: Pair) -> None:
    """score.general: with W_a = I it equals score_dot."""
    eye = np.eye(p.query.shape[-1], dtype=p.query.dtype)
    np.testing.assert_array_equal(
        attnref.score_general(p.query, p.keys, eye), attnref.score_dot(p.query, p.keys)
    )


@given(pairs("general"))
def test_general_score_is_the_bilinear_form(p: Pair) -> None:
    """score.general: Entry [..., i, j] is s_i^T W_a h_j with W_a of shape [d_q, d_k]."""
    w = p.params["W_a"]
    got = attnref.score_general(p.query, p.keys, w)
    q, k, we = oracles.exact(p.query), oracles.exact(p.keys), oracles.exact(w)
    expected = np.einsum("...ia,ab,...jb->...ij", q, we, k)
    magnitude = np.einsum("...ia,ab,...jb->...ij", np.abs(q), np.abs(we), np.abs(k))
    # two chained dot products; an underflow in q W is carried on by |k| (at most d_k |k|_max)
    n = w.shape[0] + w.shape[1]
    carried = 1 + w.shape[1] * float(np.abs(k).max(initial=0))
    bound = tol.gamma(n, got.dtype) * magnitude + n * tol.underflow_floor(got.dtype) * carried
    tol.assert_within(got, expected, bound, what="general")


@given(pairs("concat"))
def test_concat_score_is_a_tanh_layer_on_the_concatenation(p: Pair) -> None:
    """score.concat: Entry [..., i, j] is v_a^T tanh(W_a [s_i; h_j]), the query first in the
    concatenation, with W_a of shape [d_a, d_q + d_k] and v_a of shape [d_a]."""
    w, v = p.params["W_a"], p.params["v_a"]
    got = attnref.score_concat(p.query, p.keys, w, v)
    expected, pre = oracles.tanh_pair_scores(p.query, p.keys, w, v)
    bound = tol.tanh_layer_bound(got.dtype, w.shape[1] + 1, float(pre), outer=np.abs(v))
    tol.assert_within(got, expected, bound, what="concat")


@given(pairs("additive"))
@example(
    Pair(
        np.array([[1.0]]),
        np.array([[0.5], [-2.0]]),
        {"W_q": np.array([[1.0]]), "W_k": np.array([[-1.0]]), "v_a": np.array([2.0])},
    )
)
def test_additive_score_is_concat_with_stacked_weights(p: Pair) -> None:
    """score.additive: Entry [..., i, j] is v_a^T tanh(W_q s_i + W_k h_j) ...; it equals
    score_concat with W_a = [W_q W_k]."""
    w_q, w_k, v = p.params["W_q"], p.params["W_k"], p.params["v_a"]
    got = attnref.score_additive(p.query, p.keys, w_q, w_k, v)
    stacked = np.hstack([w_q, w_k])
    expected, pre = oracles.tanh_pair_scores(p.query, p.keys, stacked, v)
    bound = tol.tanh_layer_bound(got.dtype, stacked.shape[1] + 1, float(pre), outer=np.abs(v))
    tol.assert_within(got, expected, bound, what="additive vs formula")
    concat = attnref.score_concat(p.query, p.keys, stacked, v)
    tol.assert_within(got, concat, 2 * bound, what="additive vs concat")


@given(pairs("location"))
def test_location_score_is_w_a_times_the_query(p: Pair) -> None:
    """score.location: Row i is W_a s_i with W_a of shape [Tk, d_q]: the score depends on the
    query alone and the key axis has the fixed length Tk."""
    w = p.params["W_a"]
    got = attnref.score_location(p.query, w)
    q, we = oracles.exact(p.query), oracles.exact(w)
    expected = np.einsum("...id,jd->...ij", q, we)
    magnitude = np.einsum("...id,jd->...ij", np.abs(q), np.abs(we))
    bound = tol.dot_bound(got.dtype, w.shape[1], magnitude)
    tol.assert_within(got, expected, bound, what="location")
    assert got.shape[-1] == w.shape[0]
