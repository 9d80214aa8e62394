"""Properties of the log-sum-exp and of attention sinks (clauses ``lse.*``, ``sdpa.sinks``,
``sdpa.log-sum-exp``).

The exact values come from :mod:`oracles` in extended precision, never from
:mod:`attnref`; every bound is one of :mod:`tolerances`, with the sizes of the drawn case.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, TypeAlias

import numpy as np
import oracles
from hypothesis import example, given
from hypothesis import strategies as st

import attnref
import tolerances as tol
from attnref import vjp as V  # noqa: N812
from attnref.testing import strategies as ats
from attnspec.typing import Array, BoolArray, Mask

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
    max_magnitude: float = 8.0,
) -> Case:
    """Scores ``[..., Tq, Tk]`` of one dtype and a mask (fully masked rows included)."""
    dt = draw(ats.float_dtypes())
    s = draw(ats.attention_shapes(max_keys=6))
    bound = min(max_magnitude, float(np.finfo(dt).max))
    shape = (*s.query_batch, s.tq, s.tk)
    scores = draw(
        ats.score_arrays(dt, shape, regimes=regimes, neg_inf=neg_inf, max_magnitude=bound)
    )
    return scores, draw(ats.masks(dt, s.mask, kinds=kinds))


def logit_magnitude(case: Case) -> float:
    """Largest ``|s + m|`` over allowed keys when an additive mask is rounded in, else 0."""
    scores, mask = case
    if mask is None or np.asarray(mask).dtype == np.bool_:
        return 0.0
    logits, allowed = oracles.allowed_keys(scores, mask)
    return float(np.abs(np.where(allowed, logits, 0)).max(initial=0))


def split_rows(got: Array, expected: Any) -> tuple[BoolArray, BoolArray]:
    """``(finite, empty)`` rows of an exact log-sum-exp; the computed one must be ``-inf``
    exactly where the exact one is, and nowhere NaN."""
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    assert not np.isnan(got).any(), "a log-sum-exp is NaN"
    empty = np.isneginf(expected)
    np.testing.assert_array_equal(got == -np.inf, empty)
    return ~empty, empty


@given(cases(neg_inf=True))
@example((np.array([[1.0, 2.0, 3.0]], dtype=np.float16), np.array([[True, True, False]])))
@example((np.array([[0.5, -1.0], [2.0, 3.0]]), np.array([[0.0, 1.5], [-np.inf, -np.inf]])))
def test_log_sum_exp_is_the_log_of_the_sum_over_allowed_keys(case: Case) -> None:
    """lse.formula: For a row with at least one allowed key,
    l_i = log sum_{k allowed} exp(e_ik + m_ik), over the allowed keys and with the additive mask
    of distribution.softmax; the result has shape [..., Tq] and the scores' dtype."""
    scores, mask = case
    got = attnref.log_sum_exp(scores, mask=mask)
    expected = oracles.log_sum_exp(*oracles.allowed_keys(scores, mask))
    assert got.dtype == scores.dtype
    finite, _ = split_rows(got, expected)
    bound = tol.log_sum_exp_bound(
        scores.dtype, scores.shape[-1], expected[finite], logit_magnitude=logit_magnitude(case)
    )
    tol.assert_within(got[finite], expected[finite], bound, what="log-sum-exp")


@given(cases(neg_inf=True, regimes=("well_conditioned", "ties", "near_ties")))
def test_the_log_sum_exp_normalizes_the_distribution(case: Case) -> None:
    """lse.normalizes: alpha_ij = exp(e_ij + m_ij - l_i) at every allowed position of a row with
    an allowed key (to rounding), alpha the result of attention_distribution for the same
    scores and mask."""
    scores, mask = case
    lse = attnref.log_sum_exp(scores, mask=mask)
    weights = attnref.attention_distribution(scores, mask=mask)
    logits, allowed = oracles.allowed_keys(scores, mask)
    live = np.broadcast_to(np.isfinite(lse)[..., None], allowed.shape) & allowed
    exponent = np.where(live, logits - oracles.exact(lse)[..., None], 0)
    expected = np.exp(exponent)  # [..., Tq, Tk] exp(e + m - l) in extended precision
    # |l - l_computed| is log_sum_exp_bound, which moves exp(e + m - l) by its expm1.
    size = np.broadcast_to(np.where(np.isfinite(lse), np.abs(lse), 0)[..., None], live.shape)
    lse_error = tol.log_sum_exp_bound(
        scores.dtype, scores.shape[-1], size[live], logit_magnitude=logit_magnitude(case)
    )
    moved = expected[live] * tol.softmax_perturbation(lse_error)
    bound = tol.softmax_bound(scores.dtype, scores.shape[-1], logit_magnitude(case)) + moved
    tol.assert_within(np.broadcast_to(weights, live.shape)[live], expected[live], bound, "weights")


@given(cases(regimes=("large",), kinds=("none", "boolean"), neg_inf=True))
@example((np.array([[F64_MAX, F64_MAX]]), None))
@example((np.array([[F64_MAX, -F64_MAX, 0.0], [-F64_MAX, -F64_MAX, -F64_MAX]]), None))
@example((np.full((1, 6), F16_MAX, dtype=np.float16), None))
@example((np.array([[-F16_MAX, F16_MAX / 2]], dtype=np.float16), np.array([True, True])))
def test_the_log_sum_exp_lies_within_log_n_above_the_largest_logit(case: Case) -> None:
    """lse.stable: Finite scores anywhere in the dtype's range give a finite log-sum-exp
    whenever the value itself is in range: max_k (e_ik + m_ik) <= l_i <= max_k (e_ik + m_ik)
    + log n for n allowed keys (to rounding), scores near the float64 and float16 limits
    included."""
    scores, mask = case
    got = attnref.log_sum_exp(scores, mask=mask)
    logits, allowed = oracles.allowed_keys(scores, mask)
    top = np.where(allowed, logits, -np.inf).max(axis=-1, initial=-np.inf)
    n = allowed.sum(axis=-1)
    live = n > 0
    # Note: the logits are scores no larger than the dtype's maximum, so max + log n
    # rounds to a finite value of the dtype (log 6 is far below half an ulp of the maximum).
    assert np.isfinite(got[live]).all(), "a row with an allowed key overflowed"
    assert np.all(np.isneginf(got[~live]))
    bound = tol.log_sum_exp_bound(scores.dtype, scores.shape[-1], np.abs(top[live]))
    g = oracles.exact(got[live])
    low, high = top[live] - bound, top[live] + np.log(n[live].astype(np.longdouble)) + bound
    assert np.all(g >= low), f"below the largest logit: {g[g < low]} < {low[g < low]}"
    assert np.all(g <= high), f"above max + log n: {g[g > high]} > {high[g > high]}"


@given(cases(neg_inf=True), st.integers(0, 2**32 - 1))
@example((np.array([[np.nan, 1.0], [2.0, np.nan]]), np.array([[False, True], [False, False]])), 0)
def test_a_fully_masked_row_has_log_sum_exp_minus_inf_and_no_gradient(
    case: Case, seed: int
) -> None:
    """lse.fully-masked-row: A row with no allowed key has log-sum-exp -inf (the logarithm of an
    empty sum), not NaN and not +inf. Its gradient is zero; whatever its scores hold (NaN
    included) is not read."""
    scores, mask = case
    _, allowed = oracles.allowed_keys(np.nan_to_num(scores, nan=0.0), mask)
    empty = ~allowed.any(axis=-1)
    got = attnref.log_sum_exp(scores, mask=mask)
    assert np.all(got[empty] == -np.inf)
    assert not np.isnan(got).any()
    assert not (got == np.inf).any()
    if scores.dtype != np.float64:
        return  # the VJPs are float64
    cotangent = np.random.default_rng(seed).standard_normal(got.shape)
    (grad,) = V.vjp_log_sum_exp(scores, mask=mask, cotangent=cotangent)
    assert np.isfinite(grad).all()
    if grad.shape == allowed.shape:  # else a row of the scores feeds several rows of the result
        assert np.all(grad[empty] == 0), "a fully masked row has a gradient"


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
def test_adding_a_constant_to_a_row_adds_it_to_the_log_sum_exp(args: tuple[Case, Array]) -> None:
    """lse.formula: log sum_k exp(e_ik + c) = c + log sum_k exp(e_ik): adding a finite constant
    to every score of a row adds it to that row's log-sum-exp (to rounding)."""
    (scores, mask), shift = args
    moved = scores + shift  # rounded once in the scores' dtype
    base = attnref.log_sum_exp(scores, mask=mask)
    got = attnref.log_sum_exp(moved, mask=mask)
    finite, _ = split_rows(got, base)
    expected = oracles.exact(base) + oracles.exact(shift)[..., 0]
    expected = np.broadcast_to(expected, got.shape)
    n = scores.shape[-1]
    # each side within log_sum_exp_bound of the exact value of its own scores; rounding
    # scores + shift moves each logit, and so the log-sum-exp, by u |scores + shift|
    u = tol.unit_roundoff(scores.dtype)
    rounding = u * float(np.abs(oracles.exact(moved)).max(initial=0))
    bound = (
        tol.log_sum_exp_bound(scores.dtype, n, np.abs(got))
        + tol.log_sum_exp_bound(scores.dtype, n, np.abs(base))
        + rounding
    )
    tol.assert_within(got[finite], expected[finite], bound[finite], what="shifted log-sum-exp")


# --- sinks -----------------------------------------------------------------------------


@st.composite
def sink_calls(
    draw: st.DrawFn, *, dtype: Any = None, max_sink: float = 8.0
) -> tuple[ats.SDPACall, Array]:
    """An SDPA call whose query has a heads axis (``-3``) and sink logits ``[H]`` for it."""
    call = draw(ats.sdpa_calls(dtype=dtype, shapes=ats.attention_shapes(min_batch_dims=1)))
    heads = call.query.shape[-3]
    sinks = draw(
        ats.well_conditioned_arrays(call.query.dtype, (heads,), max_magnitude=max_sink)
        | ats.score_arrays(call.query.dtype, (heads,), regimes=("ties",), max_magnitude=max_sink)
    )
    return call, sinks


def run(call: ats.SDPACall, **options: Any) -> Any:
    return attnref.scaled_dot_product_attention(
        call.query, call.key, call.value, **{**call.kwargs(), **options}
    )


def per_query_head(call: ats.SDPACall, x: Array) -> Array:
    return np.repeat(x, call.groups, axis=-3) if call.enable_gqa else x


def combined_mask(call: ats.SDPACall) -> Mask | None:
    """The call's mask joined with its causal mask."""
    if not call.is_causal:
        return call.mask
    t_q, t_k = call.query.shape[-2], call.key.shape[-2]
    causal = ats.causal_mask(t_q, t_k, alignment=call.causal_alignment)
    mask: Any = call.mask
    if mask is None:
        return causal
    if mask.dtype == np.bool_:
        return np.asarray(mask & causal)
    return np.where(causal, mask, -np.inf).astype(mask.dtype)


def exact_logits(call: ats.SDPACall, shape: tuple[int, ...]) -> tuple[Any, BoolArray]:
    """``(scale q k^T + m, allowed)`` in extended precision, broadcast to ``shape``."""
    scale = 1 / math.sqrt(call.query.shape[-1]) if call.scale is None else float(call.scale)
    scores = oracles.LD(scale) * oracles.dot_scores(call.query, per_query_head(call, call.key))
    logits, allowed = oracles.allowed_keys(np.broadcast_to(scores, shape), combined_mask(call))
    return np.broadcast_to(logits, shape), np.broadcast_to(allowed, shape)


def sink_rows(sinks: Array, shape: tuple[int, ...]) -> Any:
    """The sink of each row, ``[..., H, Tq]``, in extended precision."""
    return np.broadcast_to(oracles.exact(sinks)[:, None], shape[:-1])


def score_size(call: ats.SDPACall) -> float:
    """``|λ| Σ |q k|`` at its largest, plus the additive mask's largest finite entry."""
    k = per_query_head(call, call.key)
    scale = 1 / math.sqrt(call.query.shape[-1]) if call.scale is None else float(call.scale)
    size = abs(scale) * float(oracles.dot_scores(np.abs(call.query), np.abs(k)).max(initial=0))
    if call.mask is not None and call.mask.dtype != np.bool_:
        size += float(np.abs(call.mask[np.isfinite(call.mask)]).max(initial=0))
    return size


@given(sink_calls())
def test_sinks_join_the_denominator_of_every_row_of_their_head(
    drawn: tuple[ats.SDPACall, Array],
) -> None:
    """sdpa.sinks: alpha_ij = exp(t_ij + m_ij) / (exp(sigma_h) + sum_{k allowed}
    exp(t_ik + m_ik)) for the rows of head h; the sink attends to no value, so the context is
    alpha @ value."""
    call, sinks = drawn
    context, weights, lse = run(call, sinks=sinks, return_lse=True)
    assert weights.dtype == call.query.dtype
    logits, allowed = exact_logits(call, weights.shape)
    sigma = sink_rows(sinks, weights.shape)
    expected = oracles.sink_softmax(logits, allowed, sigma)
    # one more logit in each row, exact: the bounds of attention_bounds over Tk + 1 terms
    t_k, d = call.key.shape[-2], call.query.shape[-1]
    size = score_size(call)
    value_size = float(np.abs(call.value).max(initial=0))
    w_bound, c_bound = tol.attention_bounds(
        call.query.dtype, tk=t_k + 1, d=d, score_magnitude=size, value_magnitude=value_size
    )
    tol.assert_within(weights, expected, w_bound, what="weights")
    expected_context = oracles.weighted_sum(expected, per_query_head(call, call.value))
    tol.assert_within(context, np.broadcast_to(expected_context, context.shape), c_bound, "context")
    # the scores are off by gamma_{d+1} size (plus the mask's rounding), and the log-sum-exp
    # is 1-Lipschitz in its largest logit
    expected_lse = oracles.log_sum_exp(logits, allowed, sigma)
    lse_bound = tol.gamma(d + 1, call.query.dtype) * size + tol.log_sum_exp_bound(
        call.query.dtype, t_k + 1, np.abs(expected_lse), logit_magnitude=size
    )
    tol.assert_within(lse, expected_lse, lse_bound, what="lse")


@given(sink_calls())
def test_weights_with_a_sink_sum_to_one_minus_its_share(drawn: tuple[ats.SDPACall, Array]) -> None:
    """sdpa.sinks: a row's weights sum to 1 - exp(sigma_h - l_i), with l_i the returned
    log-sum-exp (0 for a row with no allowed key, whose log-sum-exp is the sink)."""
    call, sinks = drawn
    _, weights, lse = run(call, sinks=sinks, return_lse=True)
    sigma = sink_rows(sinks, weights.shape)
    share = np.exp(sigma - oracles.exact(lse))  # [..., H, Tq]
    rows = weights.astype(np.float64).reshape(-1, weights.shape[-1])
    sums = np.array([math.fsum(r) for r in rows]).reshape(weights.shape[:-1])
    bound = tol.sink_share_bound(weights.dtype, weights.shape[-1] + 1, share, sigma, lse)
    tol.assert_within(sums, 1 - share, bound, what="row sums")


@given(sink_calls())
def test_a_very_negative_sink_is_no_sink(drawn: tuple[ats.SDPACall, Array]) -> None:
    """sdpa.sinks: sigma_h -> -inf is no sink: with sigma = -1e4 (exp underflows to exactly 0
    against the row's largest logit, which stays the shift) the weights, the context and the
    log-sum-exp of a row with an allowed key are those without sinks; a row with none has
    zero weights, a zero context, and the sink as log-sum-exp."""
    call, sinks = drawn
    very_negative = np.full_like(sinks, -1e4)
    context, weights, lse = run(call, sinks=very_negative, return_lse=True)
    plain_context, plain_weights, plain_lse = run(call, return_lse=True)
    np.testing.assert_array_equal(weights, plain_weights)
    np.testing.assert_array_equal(context, plain_context)
    live = np.isfinite(plain_lse)
    np.testing.assert_array_equal(lse[live], plain_lse[live])
    assert np.all(lse[~live] == very_negative[0])


@given(sink_calls(), st.booleans())
def test_a_fully_masked_row_has_the_sink_as_log_sum_exp(
    drawn: tuple[ats.SDPACall, Array], with_sinks: bool
) -> None:
    """lse.fully-masked-row, sdpa.sinks, sdpa.log-sum-exp: a row with no allowed key has zero
    weights and a zero context, and log-sum-exp -inf without a sink, exactly its head's sink
    with one."""
    call, sinks = drawn
    mask = np.zeros((call.query.shape[-2], call.key.shape[-2]), dtype=bool)
    mask[::2] = True  # the odd rows are fully masked
    masked = replace(call, mask=mask, is_causal=False)
    options: dict[str, Any] = {"sinks": sinks} if with_sinks else {}
    context, weights, lse = run(masked, return_lse=True, **options)
    odd = np.s_[..., 1::2, :]
    assert np.all(weights[odd] == 0)
    assert np.all(context[odd] == 0)
    rows = lse[..., 1::2]
    expected = np.broadcast_to(sinks[:, None], lse.shape)[..., 1::2] if with_sinks else -np.inf
    np.testing.assert_array_equal(rows, np.broadcast_to(expected, rows.shape))
    assert np.isfinite(lse[..., ::2]).all()


@given(sink_calls())
def test_lse_with_sinks_is_the_logaddexp_of_lse_without_and_the_sink(
    drawn: tuple[ats.SDPACall, Array],
) -> None:
    """sdpa.log-sum-exp: with sinks the log-sum-exp is joined with the sink by
    log(exp l + exp sigma_h); -inf for a row with no allowed key and no sink."""
    call, sinks = drawn
    *_, with_sink = run(call, sinks=sinks, return_lse=True)
    *_, without = run(call, return_lse=True)
    sigma = sink_rows(sinks, (*with_sink.shape, 1))
    expected = np.logaddexp(oracles.exact(without), sigma)
    # the same computed logits on both sides: each log-sum-exp within its bound of theirs,
    # and logaddexp(l, sigma) moves by at most as much as l does
    n = call.key.shape[-2]
    dtype = call.query.dtype
    bound = tol.log_sum_exp_bound(dtype, n + 1, np.abs(with_sink)) + np.where(
        np.isfinite(without), tol.log_sum_exp_bound(dtype, n, np.abs(without)), 0
    )
    tol.assert_within(with_sink, expected, bound, what="lse with sinks")


@given(ats.sdpa_calls())
def test_sdpa_returns_the_log_sum_exp_of_its_scores(call: ats.SDPACall) -> None:
    """sdpa.log-sum-exp: With return_lse=True the result is (context, weights, lse), where lse
    ([..., Tq], with the query's heads) is log_sum_exp(t, mask=combined_mask) of the scaled
    scores; context and weights are those of return_lse=False."""
    context, weights, lse = run(call, return_lse=True)
    plain = run(call)
    assert len(plain) == 2
    np.testing.assert_array_equal(context, plain[0])
    np.testing.assert_array_equal(weights, plain[1])
    assert lse.shape == weights.shape[:-1]
    assert lse.dtype == weights.dtype
    scores = attnref.score_scaled_dot(call.query, per_query_head(call, call.key), scale=call.scale)
    expected = attnref.log_sum_exp(np.broadcast_to(scores, weights.shape), mask=combined_mask(call))
    np.testing.assert_array_equal(lse, np.broadcast_to(expected, lse.shape))
