"""Bad calls to the NumPy reference: one table, one exception type and message start each.

Each row cites the clause of :mod:`attnspec.general` (or of the function) that
makes the call invalid. Messages are matched on their stable start: the
argument named and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import attnref
from attnspec.errors import (
    ArgumentError,
    AttnSpecError,
    DTypeError,
    NonFiniteInputError,
    ShapeError,
)

RNG = np.random.default_rng(20151)


def normal(*shape: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A standard normal float64 array of this shape."""
    return RNG.standard_normal(shape)


Q, K, V = normal(2, 3, 4), normal(2, 5, 4), normal(2, 5, 6)
S = normal(2, 3, 5)


def with_nan(x: np.ndarray[Any, np.dtype[np.float64]], index: tuple[int, ...]) -> Any:
    """A copy of ``x`` with NaN at ``index``."""
    y = x.copy()
    y[index] = np.nan
    return y


Case = tuple[Callable[[], object], type[AttnSpecError], str]

BAD_CALLS: dict[str, Case] = {
    # input.rank
    "score_dot(query[4], keys)": (
        lambda: attnref.score_dot(normal(4), K),
        ShapeError,
        r"query must have at least 2 dimensions",
    ),
    "score_general(query, keys, W_a[2,4,4])": (
        lambda: attnref.score_general(Q, K, normal(2, 4, 4)),
        ShapeError,
        r"W_a must have exactly 2 dimensions",
    ),
    "score_concat(query, keys, W_a, v_a[3,1])": (
        lambda: attnref.score_concat(Q, K, normal(3, 8), normal(3, 1)),
        ShapeError,
        r"v_a must have exactly 1 dimension",
    ),
    # input.sizes-agree
    "score_dot(query[...,4], keys[...,6])": (
        lambda: attnref.score_dot(Q, normal(2, 5, 6)),
        ShapeError,
        r"keys.shape\[-1\] must equal query.shape\[-1\] for score_dot; got 6 and 4",
    ),
    "score_general(query, keys, W_a[4,5])": (
        lambda: attnref.score_general(Q, K, normal(4, 5)),
        ShapeError,
        r"W_a.shape\[1\] must equal keys.shape\[-1\]",
    ),
    "score_concat(query, keys, W_a[3,7], v_a)": (
        lambda: attnref.score_concat(Q, K, normal(3, 7), normal(3)),
        ShapeError,
        r"W_a.shape\[1\] must equal query.shape\[-1\] \+ keys.shape\[-1\]",
    ),
    "score_additive(query, keys, W_q[3,4], W_k[2,4], v_a)": (
        lambda: attnref.score_additive(Q, K, normal(3, 4), normal(2, 4), normal(3)),
        ShapeError,
        r"W_k.shape\[0\] must equal W_q.shape\[0\]",
    ),
    "score_location(query, W_a[5,3])": (
        lambda: attnref.score_location(Q, normal(5, 3)),
        ShapeError,
        r"W_a.shape\[1\] must equal query.shape\[-1\]",
    ),
    "attention_value(weights[...,5], values[...,4,6])": (
        lambda: attnref.attention_value(S, normal(2, 4, 6)),
        ShapeError,
        r"values.shape\[-2\] must equal weights.shape\[-1\]",
    ),
    "concatenate_context(context[2,3,6], query[2,4,4])": (
        lambda: attnref.concatenate_context(normal(2, 3, 6), normal(2, 4, 4)),
        ShapeError,
        r"query.shape\[-2\] must equal context.shape\[-2\]",
    ),
    "attentional_hidden_state(context, query, W_c[5,9])": (
        lambda: attnref.attentional_hidden_state(normal(2, 3, 6), Q, normal(5, 9)),
        ShapeError,
        r"W_c.shape\[1\] must equal context.shape\[-1\] \+ query.shape\[-1\]",
    ),
    "attentional_hidden_state(context, query, W_c, b_c[4])": (
        lambda: attnref.attentional_hidden_state(normal(2, 3, 6), Q, normal(5, 10), normal(4)),
        ShapeError,
        r"b_c.shape\[0\] must equal W_c.shape\[0\]",
    ),
    "output_distribution(state, W_y[7,3])": (
        lambda: attnref.output_distribution(Q, normal(7, 3)),
        ShapeError,
        r"W_y.shape\[1\] must equal attentional_state.shape\[-1\]",
    ),
    "scaled_dot_product_attention(q, k, v[...,4,6])": (
        lambda: attnref.scaled_dot_product_attention(Q, K, normal(2, 4, 6)),
        ShapeError,
        r"value.shape\[-2\] must equal key.shape\[-2\]",
    ),
    # input.batch-broadcast
    "score_dot(query[2,...], keys[3,...])": (
        lambda: attnref.score_dot(Q, normal(3, 5, 4)),
        ShapeError,
        r"batch dimensions must broadcast for score_dot",
    ),
    # distribution.mask-shape
    "attention_distribution(scores, mask[4])": (
        lambda: attnref.attention_distribution(S, mask=np.ones(4, dtype=bool)),
        ShapeError,
        r"mask must broadcast to the scores' shape",
    ),
    "attention_distribution(scores, mask=int)": (
        lambda: attnref.attention_distribution(S, mask=np.ones(5, dtype=np.int64)),  # type: ignore[arg-type]
        DTypeError,
        r"mask must be boolean \(True = may attend\) or real floating",
    ),
    "scaled_dot_product_attention(q, k, v, mask[3,...], is_causal=True)": (
        lambda: attnref.scaled_dot_product_attention(
            Q, K, V, mask=np.ones((3, 3, 5), dtype=bool), is_causal=True
        ),
        ShapeError,
        r"mask must broadcast",
    ),
    # local.boolean-mask
    "local_m_distribution(scores, mask=float)": (
        lambda: attnref.local_m_distribution(S, half_width=1, mask=np.zeros(5)),  # type: ignore[arg-type]
        DTypeError,
        r"mask must be boolean for local_m_distribution",
    ),
    # input.float-dtype
    "score_dot(query=int64, keys)": (
        lambda: attnref.score_dot(Q.astype(np.int64), K),
        DTypeError,
        r"query must have a real or complex floating dtype for score_dot; got int64",
    ),
    "attention_value(weights=bool, values)": (
        lambda: attnref.attention_value(S > 0, V),  # type: ignore[arg-type]
        DTypeError,
        r"weights must have a real or complex floating dtype",
    ),
    "output_distribution(state, W_y=object)": (
        lambda: attnref.output_distribution(Q, np.array([[None] * 4], dtype=object)),
        DTypeError,
        r"W_y must have a real or complex floating dtype",
    ),
    # input.nonempty
    "score_dot(query, keys[2,0,4])": (
        lambda: attnref.score_dot(Q, normal(2, 0, 4)),
        ShapeError,
        r"keys.shape\[-2\] must be at least 1",
    ),
    "attention_distribution(scores[2,3,0])": (
        lambda: attnref.attention_distribution(normal(2, 3, 0)),
        ShapeError,
        r"scores.shape\[-1\] must be at least 1",
    ),
    "score_dot(query[2,3,0], keys[2,5,0])": (
        lambda: attnref.score_dot(normal(2, 3, 0), normal(2, 5, 0)),
        ShapeError,
        r"query.shape\[-1\] must be at least 1",
    ),
    "scaled_dot_product_attention(q, k[2,0,4], v[2,0,6])": (
        lambda: attnref.scaled_dot_product_attention(Q, normal(2, 0, 4), normal(2, 0, 6)),
        ShapeError,
        r"key.shape\[-2\] must be at least 1",
    ),
    # input.finite
    "score_dot(query with NaN, keys)": (
        lambda: attnref.score_dot(with_nan(Q, (1, 2, 3)), K),
        NonFiniteInputError,
        r"query must be finite where it is read for score_dot; got nan at index \(1, 2, 3\)",
    ),
    "score_general(query, keys, W_a with inf)": (
        lambda: attnref.score_general(Q, K, np.full((4, 4), np.inf)),
        NonFiniteInputError,
        r"W_a must be finite",
    ),
    "attention_distribution(scores with +inf)": (
        lambda: attnref.attention_distribution(np.array([[0.0, np.inf]])),
        NonFiniteInputError,
        r"scores must be finite or -inf where it is read",
    ),
    "attention_distribution(scores, mask with NaN)": (
        lambda: attnref.attention_distribution(S, mask=np.array([0.0, np.nan, 0.0, 0.0, 0.0])),
        NonFiniteInputError,
        r"mask must be finite or -inf",
    ),
    "attention_value(weights, values with NaN where read)": (
        lambda: attnref.attention_value(np.full((1, 2), 0.5), np.array([[np.nan], [1.0]])),
        NonFiniteInputError,
        r"values must be finite where it is read",
    ),
    "scaled_dot_product_attention(q, k with NaN at an allowed key, v)": (
        lambda: attnref.scaled_dot_product_attention(Q, with_nan(K, (0, 0, 0)), V),
        NonFiniteInputError,
        r"key.* must be finite where it is read for scaled_dot_product_attention",
    ),
    "local_p_distribution(scores, positions with NaN)": (
        lambda: attnref.local_p_distribution(S, np.full((2, 3), np.nan), half_width=1),
        NonFiniteInputError,
        r"positions must be finite",
    ),
    # input.scale-finite
    "score_scaled_dot(q, k, scale=nan)": (
        lambda: attnref.score_scaled_dot(Q, K, scale=float("nan")),
        ArgumentError,
        r"scale must be finite for score_scaled_dot; got nan",
    ),
    "scaled_dot_product_attention(q, k, v, scale=inf)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, scale=float("inf")),
        ArgumentError,
        r"scale must be finite",
    ),
    "score_scaled_dot(q, k, scale=True)": (
        lambda: attnref.score_scaled_dot(Q, K, scale=True),
        DTypeError,
        r"scale must be a real number or None for score_scaled_dot; got bool",
    ),
    "score_scaled_dot(q, k, scale='0.5')": (
        lambda: attnref.score_scaled_dot(Q, K, scale="0.5"),  # type: ignore[arg-type]
        DTypeError,
        r"scale must be a real number or None for score_scaled_dot; got str",
    ),
    "score_scaled_dot(q, k, scale=1j)": (
        lambda: attnref.score_scaled_dot(Q, K, scale=1j),  # type: ignore[arg-type]
        DTypeError,
        r"scale must be a real number",
    ),
    # local.half-width
    "local_m_distribution(scores, half_width=-1)": (
        lambda: attnref.local_m_distribution(S, half_width=-1),
        ArgumentError,
        r"half_width must be at least 0 for local_m_distribution; got -1",
    ),
    "local_p_distribution(scores, positions, half_width=0)": (
        lambda: attnref.local_p_distribution(S, np.zeros((2, 3)), half_width=0),
        ArgumentError,
        r"half_width must be at least 1 for local_p_distribution; got 0",
    ),
    "local_m_distribution(scores, half_width=1.5)": (
        lambda: attnref.local_m_distribution(S, half_width=1.5),  # type: ignore[arg-type]
        DTypeError,
        r"half_width must be an int",
    ),
    "local_p_position(query, W_p, v_p, source_length=0)": (
        lambda: attnref.local_p_position(Q, normal(3, 4), normal(3), source_length=0),
        ArgumentError,
        r"source_length must be at least 1",
    ),
    # attention.score-parameters
    "attention(q, k, v, score='bilinear')": (
        lambda: attnref.attention(Q, K, V, score="bilinear"),  # type: ignore[arg-type]
        ArgumentError,
        r"score must be one of 'dot', 'scaled_dot'",
    ),
    "attention(q, k, v, score='general')": (
        lambda: attnref.attention(Q, K, V, score="general"),
        ArgumentError,
        r"score='general' needs W_a for attention; got None",
    ),
    "attention(q, k, v, score='dot', W_a=...)": (
        lambda: attnref.attention(Q, K, V, W_a=normal(4, 4)),
        ArgumentError,
        r"W_a does not belong to score='dot' for attention; it takes no parameters",
    ),
    "attention(q, k, v, score='general', scale=2.0, W_a=...)": (
        lambda: attnref.attention(Q, K, V, score="general", scale=2.0, W_a=normal(4, 4)),
        ArgumentError,
        r"scale does not belong to score='general'",
    ),
    # sdpa.causal-alignment-known, sdpa.gqa-heads-divisible, flags
    "scaled_dot_product_attention(q, k, v, causal_alignment='upper')": (
        lambda: attnref.scaled_dot_product_attention(  # type: ignore[call-overload]
            Q,
            K,
            V,
            causal_alignment="upper",
        ),
        ArgumentError,
        r"causal_alignment must be one of 'top_left', 'bottom_right'",
    ),
    "scaled_dot_product_attention(q, k, v, is_causal=1)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, is_causal=1),  # type: ignore[call-overload]
        DTypeError,
        r"is_causal must be a bool",
    ),
    "scaled_dot_product_attention(q[3 heads], k[2 heads], v, enable_gqa=True)": (
        lambda: attnref.scaled_dot_product_attention(
            normal(1, 3, 2, 4), normal(1, 2, 5, 4), normal(1, 2, 5, 6), enable_gqa=True
        ),
        ShapeError,
        r"query.shape\[-3\] must be a multiple of key.shape\[-3\]",
    ),
    "scaled_dot_product_attention(q[rank 2], k, v, enable_gqa=True)": (
        lambda: attnref.scaled_dot_product_attention(
            normal(2, 4), normal(5, 4), normal(5, 6), enable_gqa=True
        ),
        ShapeError,
        r"query must have at least 3 dimensions",
    ),
    # sdpa.arguments: sinks and return_lse
    "scaled_dot_product_attention(q[2 heads], k, v, sinks[3])": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, sinks=np.zeros(3)),
        ShapeError,
        r"sinks\.shape\[0\] must equal query\.shape\[-3\] for scaled_dot_product_attention; "
        r"got 3 and 2",
    ),
    "scaled_dot_product_attention(q, k, v, sinks[2,1])": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, sinks=np.zeros((2, 1))),
        ShapeError,
        r"sinks must have exactly 1 dimension \[H\]",
    ),
    "scaled_dot_product_attention(q[rank 2], k, v, sinks[3])": (
        lambda: attnref.scaled_dot_product_attention(
            normal(3, 4), normal(5, 4), normal(5, 6), sinks=np.zeros(3)
        ),
        ShapeError,
        r"query must have at least 3 dimensions \[\.\.\., H, Tq, d\] with sinks",
    ),
    "scaled_dot_product_attention(q, k, v, sinks=int64)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, sinks=np.zeros(2, dtype=np.int64)),
        DTypeError,
        r"sinks must have a real or complex floating dtype for scaled_dot_product_attention; "
        r"got int64",
    ),
    "scaled_dot_product_attention(q, k, v, sinks=bool)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, sinks=np.ones(2, dtype=bool)),
        DTypeError,
        r"sinks must have a real or complex floating dtype",
    ),
    "scaled_dot_product_attention(q, k, v, sinks with NaN)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, sinks=np.array([0.0, np.nan])),
        NonFiniteInputError,
        r"sinks must be finite where it is read for scaled_dot_product_attention; "
        r"got nan at index \(1,\)",
    ),
    "scaled_dot_product_attention(q, k, v, sinks with inf)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, sinks=np.array([np.inf, 0.0])),
        NonFiniteInputError,
        r"sinks must be finite where it is read",
    ),
    "scaled_dot_product_attention(q, k, v, sinks with -inf)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, sinks=np.array([-np.inf, 0.0])),
        NonFiniteInputError,
        r"sinks must be finite where it is read",
    ),
    "scaled_dot_product_attention(q, k, v, return_lse=1)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, return_lse=1),  # type: ignore[call-overload]
        DTypeError,
        r"return_lse must be a bool for scaled_dot_product_attention; got int",
    ),
    "scaled_dot_product_attention(q, k, v, return_lse=None)": (
        lambda: attnref.scaled_dot_product_attention(Q, K, V, return_lse=None),  # type: ignore[call-overload]
        DTypeError,
        r"return_lse must be a bool for scaled_dot_product_attention; got NoneType",
    ),
    # lse.formula: log_sum_exp takes what attention_distribution takes
    "log_sum_exp(scores[2,3,0])": (
        lambda: attnref.log_sum_exp(normal(2, 3, 0)),
        ShapeError,
        r"scores\.shape\[-1\] must be at least 1 for log_sum_exp",
    ),
    "log_sum_exp(scores with +inf)": (
        lambda: attnref.log_sum_exp(np.array([[0.0, np.inf]])),
        NonFiniteInputError,
        r"scores must be finite or -inf where it is read for log_sum_exp",
    ),
    "log_sum_exp(scores, mask=int)": (
        lambda: attnref.log_sum_exp(S, mask=np.ones(5, dtype=np.int64)),  # type: ignore[arg-type]
        DTypeError,
        r"mask must be boolean \(True = may attend\) or real floating",
    ),
}


@pytest.mark.parametrize("call", list(BAD_CALLS), ids=list(BAD_CALLS))
def test_bad_call_raises(call: str) -> None:
    """The call raises the exception the spec names, with a message naming the argument."""
    fn, error, message = BAD_CALLS[call]
    with pytest.raises(error, match=message):
        fn()


def test_every_error_is_a_builtin_error_too() -> None:
    """The family subclasses ValueError/TypeError, so existing handlers keep working."""
    assert issubclass(ShapeError, ValueError)
    assert issubclass(NonFiniteInputError, ValueError)
    assert issubclass(ArgumentError, ValueError)
    assert issubclass(DTypeError, TypeError)


def test_scale_that_overflows_the_dtype_is_refused() -> None:
    """input.scale-finite: a finite scale that is infinite in float16 raises, not NaN."""
    q = np.array([[1.0, 0.0]], dtype=np.float16)
    k = np.array([[0.0, 1.0]], dtype=np.float16)
    with pytest.raises(ArgumentError, match="scale must be finite in the result dtype float16"):
        attnref.score_scaled_dot(q, k, scale=1e5)
    with pytest.raises(ArgumentError, match="scale must be finite in the result dtype float16"):
        attnref.scaled_dot_product_attention(q, k, k, scale=1e5)


def test_sdpa_names_its_own_arguments_in_errors() -> None:
    """input.finite: SDPA calls its arguments key and value, and its errors do too."""
    with pytest.raises(NonFiniteInputError, match="key must be finite where it is read"):
        attnref.scaled_dot_product_attention(Q, with_nan(K, (0, 0, 0)), V)
