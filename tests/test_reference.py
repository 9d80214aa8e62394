"""The NumPy reference on small cases whose answer is known independently.

Each test names the clause it checks. Expected values come from explicit
loops, closed forms or exact arithmetic, never from the function under test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import attnref
import tolerances as tol
from attnref.vjp import vjp_scaled_dot_product_attention

F64 = np.ndarray[Any, np.dtype[np.float64]]
RNG = np.random.default_rng(1508)


def normal(*shape: int) -> F64:
    """A standard normal float64 array of this shape."""
    return RNG.standard_normal(shape)


def test_score_dot_is_the_pairwise_dot_product() -> None:
    """score.dot: entry [..., i, j] is s_i . h_j (checked with explicit loops)."""
    q, k = normal(3, 4, 5), normal(3, 6, 5)
    got = attnref.score_dot(q, k)
    for b in range(3):
        for i in range(4):
            for j in range(6):
                expected = math.fsum(q[b, i] * k[b, j])  # correctly rounded
                magnitude = math.fsum(abs(q[b, i] * k[b, j]))
                error = tol.dot_bound(np.float64, 5, magnitude) + tol.unit_roundoff(np.float64)
                tol.assert_within(got[b, i, j], expected, error * max(1.0, abs(expected)))


@pytest.mark.parametrize("d", [1, 2, 3, 8, 64, 128])
def test_default_scale_is_one_over_sqrt_d(d: int) -> None:
    """score.default-scale: scale None means 1/sqrt(d_k), the float64 value of 1/math.sqrt(d)."""
    q, k = normal(2, d), normal(3, d)
    np.testing.assert_array_equal(
        attnref.score_scaled_dot(q, k), attnref.score_scaled_dot(q, k, scale=1 / math.sqrt(d))
    )


def test_distribution_matches_the_softmax_formula() -> None:
    """distribution.softmax: exp(e_ij) / sum_k exp(e_ik) over allowed keys."""
    scores = np.array([[1.0, 2.0, 3.0], [0.5, -0.5, 4.0]])
    mask = np.array([[True, True, False], [True, True, True]])
    got = attnref.attention_distribution(scores, mask=mask)
    row0 = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    row1 = np.exp(scores[1]) / np.exp(scores[1]).sum()
    # both sides are float64 softmaxes of the same logits over at most 3 keys
    tol.assert_within(got, np.array([[*row0, 0.0], row1]), tol.bound("softmax", 3, 1.0))
    assert got[0, 2] == 0.0


def test_additive_mask_equals_boolean_mask_where_it_is_minus_inf() -> None:
    """distribution.additive-mask: -inf disallows exactly as False does."""
    scores = normal(4, 6)
    allowed = RNG.random((4, 6)) > 0.4
    allowed[:, 0] = True
    additive = np.where(allowed, 0.0, -np.inf)
    np.testing.assert_array_equal(
        attnref.attention_distribution(scores, mask=additive),
        attnref.attention_distribution(scores, mask=allowed),
    )


def test_fully_masked_row_is_zero_with_zero_context() -> None:
    """distribution.fully-masked-row: all-zero weights and a zero context, not NaN."""
    q, k, v = normal(3, 4), normal(5, 4), normal(5, 2)
    mask = np.ones((3, 5), dtype=bool)
    mask[1] = False
    context, weights = attnref.scaled_dot_product_attention(q, k, v, mask=mask)
    assert np.all(weights[1] == 0.0)
    assert np.all(context[1] == 0.0)
    assert np.isfinite(context).all()


def test_large_logits_do_not_overflow() -> None:
    """distribution.stable: finite scores near the float64 limit give finite weights."""
    big = np.finfo(np.float64).max
    got = attnref.attention_distribution(np.array([[big, -big, big / 2, 0.0]]))
    np.testing.assert_array_equal(got, [[1.0, 0.0, 0.0, 0.0]])


def test_log_sum_exp_matches_the_formula() -> None:
    """lse.formula, lse.fully-masked-row: log sum_{k allowed} exp(e_ik + m_ik) per row, with a
    boolean or an additive mask; a row with no allowed key is -inf, not NaN."""
    scores = np.array([[1.0, 2.0, 3.0], [0.5, -0.5, 4.0], [7.0, 8.0, 9.0]])
    allowed = np.array([[True, True, False], [True, True, True], [False, False, False]])
    bias = np.where(allowed, np.array([0.0, 1.5, 0.0]), -np.inf)
    got = attnref.log_sum_exp(scores, mask=allowed)
    with_bias = attnref.log_sum_exp(scores, mask=bias)
    # math.exp and math.log within an ulp, fsum correctly rounded: the bound of either side
    rows = zip(scores[:2], allowed[:2], strict=True)
    expected = [math.log(math.fsum(math.exp(x) for x in r[a])) for r, a in rows]
    tol.assert_within(got[:2], expected, 2 * tol.log_sum_exp_bound(np.float64, 3, expected))
    biased = [math.log(math.exp(1.0) + math.exp(3.5)), math.log(math.fsum(np.exp([0.5, 1.0, 4.0])))]
    bound = 2 * tol.log_sum_exp_bound(np.float64, 3, biased, logit_magnitude=4.0)
    tol.assert_within(with_bias[:2], biased, bound)
    assert got[2] == -np.inf
    assert with_bias[2] == -np.inf
    assert got.shape == (3,)
    assert got.dtype == np.float64


def test_log_sum_exp_near_the_float64_limit_is_finite() -> None:
    """lse.stable: scores at the largest float64 give a finite log-sum-exp: max + log 2 rounds to
    the maximum, and a row of -max keys to -max."""
    big = np.finfo(np.float64).max
    got = attnref.log_sum_exp(np.array([[big, big], [big, -big], [-big, -big]]))
    np.testing.assert_array_equal(got, [big, big, -big])


def test_sinks_add_their_exponential_to_the_denominator() -> None:
    """sdpa.sinks, sdpa.log-sum-exp: alpha_ij = exp(t_ij) / (exp(sigma_h) + sum_k exp(t_ik)) per
    head h, the context attends to no sink value, lse = log(exp(sigma_h) + sum_k exp(t_ik)),
    and a fully masked row has zero weights, a zero context and the sink as lse."""
    rng = np.random.default_rng(8)
    # integers and scale 1: the scores are exact, so only the softmax rounds
    q = rng.integers(-2, 3, (2, 3, 2)).astype(np.float64)
    k = rng.integers(-2, 3, (2, 4, 2)).astype(np.float64)
    v = normal(2, 4, 3)
    sinks = np.array([0.75, -1.25])
    mask = np.ones((3, 4), dtype=bool)
    mask[1] = False
    context, weights, lse = attnref.scaled_dot_product_attention(
        q, k, v, mask=mask, scale=1.0, sinks=sinks, return_lse=True
    )
    for h in range(2):
        for i in (0, 2):
            e = [math.exp(float(q[h, i] @ k[h, j])) for j in range(4)]
            z = math.fsum([*e, math.exp(sinks[h])])
            row = np.array([x / z for x in e])
            tol.assert_within(weights[h, i], row, tol.bound("softmax", 5, 1.0))
            ctx = np.array([math.fsum(row * v[h, :, c]) for c in range(3)])
            ctx_bound = tol.bound("softmax", 5, 1.0) * np.abs(v[h]).sum(axis=0) + tol.bound(
                "sum", 4, np.abs(row) @ np.abs(v[h])
            )
            tol.assert_within(context[h, i], ctx, ctx_bound)
            tol.assert_within(lse[h, i], math.log(z), 2 * tol.log_sum_exp_bound(np.float64, 5, 4.0))
        assert np.all(weights[h, 1] == 0)
        assert np.all(context[h, 1] == 0)
        assert lse[h, 1] == sinks[h]


def test_a_zero_sink_is_one_more_in_the_denominator() -> None:
    """sdpa.sinks: sigma = 0 is the softmax plus one in the denominator: three equal scores
    get 1/4 each, and a log-sum-exp of log 4."""
    q, k, v = np.zeros((1, 2, 3)), np.zeros((1, 3, 3)), normal(1, 3, 2)
    _, weights, lse = attnref.scaled_dot_product_attention(
        q, k, v, sinks=np.zeros(1), return_lse=True
    )
    np.testing.assert_array_equal(weights, np.full((1, 2, 3), 0.25))
    tol.assert_within(lse, np.full((1, 2), math.log(4)), tol.log_sum_exp_bound(np.float64, 4, 2.0))


@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ((np.float32, np.float64), np.float64),
        ((np.float64, np.float32), np.float64),
        ((np.float16, np.float16), np.float16),
        ((np.float16, np.float32), np.float32),
    ],
    ids=["f32 q/k/v, f64 sinks", "f64 q/k/v, f32 sinks", "f16 both", "f16 q/k/v, f32 sinks"],
)
def test_sinks_take_part_in_the_result_dtype(dtypes: tuple[Any, Any], expected: Any) -> None:
    """sdpa.sinks, input.result-dtype: the sinks take part in the result dtype like query, key
    and value; the log-sum-exp has that dtype too."""
    q, k = normal(2, 3, 4).astype(dtypes[0]), normal(2, 5, 4).astype(dtypes[0])
    sinks = np.array([0.5, -0.5], dtype=dtypes[1])
    result = attnref.scaled_dot_product_attention(q, k, k, sinks=sinks, return_lse=True)
    assert [r.dtype for r in result] == [expected] * 3


def test_return_lse_adds_the_log_sum_exp_as_a_third_result() -> None:
    """sdpa.log-sum-exp: return_lse=True returns (context, weights, lse), lse [..., Tq] with
    the query's heads (grouped heads included), and the first two as without it."""
    q, k, v = normal(2, 4, 3, 5), normal(2, 2, 6, 5), normal(2, 2, 6, 3)
    pair = attnref.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    triple = attnref.scaled_dot_product_attention(q, k, v, enable_gqa=True, return_lse=True)
    assert len(pair) == 2
    assert len(triple) == 3
    np.testing.assert_array_equal(triple[0], pair[0])
    np.testing.assert_array_equal(triple[1], pair[1])
    assert triple[2].shape == (2, 4, 3)


@pytest.mark.parametrize(
    ("alignment", "expected"),
    [
        ("top_left", [[1, 0, 0, 0], [1, 1, 0, 0]]),
        ("bottom_right", [[1, 1, 1, 0], [1, 1, 1, 1]]),
    ],
)
def test_causal_alignments_allow_exactly_the_specified_keys(
    alignment: str, expected: list[list[int]]
) -> None:
    """sdpa.causal-top-left / sdpa.causal-bottom-right for Tq = 2, Tk = 4."""
    q, k, v = normal(2, 3), normal(4, 3), normal(4, 2)
    _, weights = attnref.scaled_dot_product_attention(  # type: ignore[call-overload]
        q,
        k,
        v,
        is_causal=True,
        causal_alignment=alignment,
    )
    np.testing.assert_array_equal(weights > 0, np.array(expected, dtype=bool))


def test_bottom_right_with_more_queries_than_keys_has_empty_rows() -> None:
    """sdpa.causal-bottom-right: with Tq > Tk the first Tq - Tk rows attend to nothing."""
    q, k, v = normal(5, 3), normal(3, 3), normal(3, 2)
    context, weights = attnref.scaled_dot_product_attention(
        q, k, v, is_causal=True, causal_alignment="bottom_right"
    )
    assert np.all(weights[:2] == 0.0)
    assert np.all(context[:2] == 0.0)
    tol.assert_within(weights[2:].sum(axis=-1), np.ones(3), tol.row_sum_bound(np.float64, 3))


def test_grouped_heads_are_repeated_interleaved() -> None:
    """sdpa.grouped-query-heads: query head h uses key/value head h // g."""
    q, k, v = normal(1, 4, 3, 5), normal(1, 2, 6, 5), normal(1, 2, 6, 3)
    grouped, _ = attnref.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    for h in range(4):
        single, _ = attnref.scaled_dot_product_attention(q[:, h], k[:, h // 2], v[:, h // 2])
        np.testing.assert_array_equal(grouped[:, h], single)


def test_masked_positions_are_not_read() -> None:
    """input.unread-positions, input.unread-nonfinite: poison at unread positions changes nothing.

    Huge finite values, NaN and inf at masked keys/values and in a fully masked query row.
    """
    q, k, v = normal(2, 3, 4), normal(2, 5, 4), normal(2, 5, 2)
    mask = np.ones((2, 3, 5), dtype=bool)
    mask[..., 3:] = False
    mask[1, 2] = False  # a fully masked query row as well
    clean = attnref.scaled_dot_product_attention(q, k, v, mask=mask)
    k_bad, v_bad, q_bad = k.copy(), v.copy(), q.copy()
    k_bad[..., 3, :] = np.nan
    v_bad[..., 4, :] = 1e300
    v_bad[..., 3, :] = np.inf
    q_bad[1, 2] = np.nan
    poisoned = attnref.scaled_dot_product_attention(q_bad, k_bad, v_bad, mask=mask)
    for a, b in zip(clean, poisoned, strict=True):
        np.testing.assert_array_equal(a, b)


def test_general_with_identity_is_dot() -> None:
    """score.general: with W_a = I it equals score_dot."""
    q, k = normal(2, 3, 4), normal(2, 5, 4)
    np.testing.assert_array_equal(attnref.score_general(q, k, np.eye(4)), attnref.score_dot(q, k))


def test_additive_equals_concat_with_stacked_weights() -> None:
    """score.additive: equals score_concat with W_a = [W_q W_k]."""
    q, k = normal(2, 3, 4), normal(2, 5, 6)
    w_q, w_k, v_a = normal(7, 4), normal(7, 6), normal(7)
    np.testing.assert_array_equal(
        attnref.score_additive(q, k, w_q, w_k, v_a),
        attnref.score_concat(q, k, np.hstack([w_q, w_k]), v_a),
    )


def test_location_score_is_w_a_times_query() -> None:
    """score.location: row i is W_a s_i."""
    q, w = normal(3, 4), normal(6, 4)
    got = attnref.score_location(q, w)
    for i in range(3):
        tol.assert_within(got[i], w @ q[i], tol.bound("sum", 4, np.abs(w) @ np.abs(q[i])))


def test_local_m_window() -> None:
    """local.m-position, local.window, local.window-softmax: uniform over |j - i| <= D."""
    got = attnref.local_m_distribution(np.zeros((3, 5)), half_width=1)
    expected = np.array(
        [[1 / 2, 1 / 2, 0, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0]]
    )
    tol.assert_within(got, expected, tol.bound("softmax", 3, expected))


def test_local_p_gaussian_after_window_softmax() -> None:
    """local.p-gaussian, local.p-window: window softmax times exp(-(j-p)^2 / (2 (D/2)^2))."""
    scores = np.array([[0.3, -1.0, 2.0, 0.5, 0.1, 0.0]])
    p, d = 2.5, 2
    got = attnref.local_p_distribution(scores, np.array([p]), half_width=d)
    window = [j for j in range(6) if abs(j - p) <= d]
    assert window == [1, 2, 3, 4]
    soft = np.exp(scores[0, window]) / np.exp(scores[0, window]).sum()
    gauss = np.exp(-((np.array(window) - p) ** 2) / (2 * (d / 2) ** 2))
    expected = np.zeros(6)
    expected[window] = soft * gauss
    # the window softmax (4 keys) times a Gaussian of 3 elementwise operations
    error = tol.bound("softmax", 4, soft) * gauss + tol.bound("elementwise", 3, soft * gauss)
    tol.assert_within(got[0, window], expected[window], error)
    assert np.all(got[0, [0, 5]] == 0.0)
    assert got.sum() < 1


def test_local_p_position_range() -> None:
    """local.p-position: p = (S - 1) sigmoid(v_p . tanh(W_p s)) lies in [0, S - 1]."""
    q, w, v = normal(4, 3), normal(5, 3), normal(5)
    got = attnref.local_p_position(q, w, v, source_length=7)
    expected = 6 / (1 + np.exp(-(np.tanh(q @ w.T) @ v)))
    # the logit is a dot product over d_p = 5 of tanh values of dot products over d_q = 3;
    # the sigmoid's slope is at most 1/4 and S - 1 = 6 multiplies, one rounding each
    magnitude = (np.abs(q) @ np.abs(w).T + 1) @ np.abs(v)
    logit_error = tol.bound("sum", 3 + 5 + 1, magnitude)
    tol.assert_within(got, expected, 6 * logit_error / 4 + tol.bound("elementwise", 4, expected))
    saturated = attnref.local_p_position(q, 1e3 * w, 1e3 * v, source_length=7)
    assert np.all((saturated >= 0) & (saturated <= 6))


def test_hidden_state_and_output_distribution() -> None:
    """hidden.tanh and output.softmax against the closed forms, context first."""
    a, s = normal(2, 3), normal(2, 4)
    w_c, b_c, w_y, b_y = normal(5, 7), normal(5), normal(6, 5), normal(6)
    hidden = attnref.attentional_hidden_state(a, s, w_c, b_c)
    pre = np.abs(np.hstack([a, s])) @ np.abs(w_c).T + np.abs(b_c)
    # 7 products and the bias; tanh is 1-Lipschitz and rounds once
    error = tol.bound("sum", 8, pre) + tol.bound("elementwise", 1, 1.0)
    tol.assert_within(hidden, np.tanh(np.hstack([a, s]) @ w_c.T + b_c), error)
    y = attnref.output_distribution(hidden, w_y, b_y)
    logits = hidden @ w_y.T + b_y
    expected_y = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    # the logits are the same float64 expression on both sides; the softmax is over 6 words
    tol.assert_within(y, expected_y, tol.bound("softmax", 6, expected_y))
    np.testing.assert_array_equal(
        attnref.concatenate_context(a, s), np.concatenate([a, s], axis=-1)
    )


@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ((np.float32, np.float32), np.float32),
        ((np.float16, np.float16), np.float16),
        ((np.float32, np.float64), np.float64),
        ((np.complex128, np.float64), np.complex128),
    ],
)
def test_result_dtype_is_promoted_dtype(dtypes: tuple[Any, Any], expected: Any) -> None:
    """input.result-dtype: the result has the promoted dtype; scale does not upcast."""
    q, k = normal(2, 3).astype(dtypes[0]), normal(4, 3).astype(dtypes[1])
    context, weights = attnref.scaled_dot_product_attention(q, k, k, scale=0.5)
    assert context.dtype == expected
    assert weights.dtype == expected
    assert attnref.score_scaled_dot(q, k).dtype == expected


def test_no_input_is_mutated() -> None:
    """input.not-mutated: every argument is bitwise unchanged after the call."""
    q, k, v = normal(2, 3, 4), normal(2, 5, 4), normal(2, 5, 2)
    mask = RNG.random((3, 5)) > 0.3
    k[..., 0, :] = np.nan
    mask[:, 0] = False
    sinks = np.array([0.5, -1.0])
    additive = np.where(mask, 0.0, -np.inf)
    scores = normal(2, 3, 5)
    scores[..., 0] = np.nan  # masked: not read
    args = [q, k, v, mask, sinks, additive, scores]
    before = [a.copy() for a in args]
    attnref.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True)
    attnref.attention(q, k, v, mask=mask)
    attnref.scaled_dot_product_attention(q, k, v, mask=additive, sinks=sinks, return_lse=True)
    attnref.log_sum_exp(scores, mask=additive)
    result = attnref.scaled_dot_product_attention(q, k, v, mask=mask, sinks=sinks, return_lse=True)
    cotangent = (np.ones_like(result[0]), np.ones_like(result[1]), np.ones_like(result[2]))
    vjp_scaled_dot_product_attention(
        q, k, v, mask=mask, sinks=sinks, softcap=2.0, return_lse=True, cotangent=cotangent
    )
    for a, b in zip(args, before, strict=True):
        np.testing.assert_array_equal(a, b)
