"""Bad calls, mutation and unread gradients of the PyTorch twin.

One table of bad calls runs against both backends: each row is written once,
as a call on a module and an array converter, and the twin must raise the
exception type the NumPy reference raises, with the same message (or, where
the twin deliberately differs, the same message start). A second table holds
calls only the twin rejects (non-tensors, complex tensors). Then: no function
modifies its inputs (``input.not-mutated``), and gradients at positions that
are not read are finite zeros (``input.unread-gradient``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

import attnref
import attnref.torch as twin
from attnspec.errors import (
    ArgumentError,
    AttnSpecError,
    DTypeError,
    NonFiniteInputError,
    ShapeError,
)
from attnspec.typing import ScoreKind

RNG = np.random.default_rng(20151)
NAN, INF = float("nan"), float("inf")

Convert = Callable[[Any], Any]
"""Turns a NumPy array into the backend's array: identity, or ``torch.tensor``."""


def normal(*shape: int) -> Any:
    """A standard normal float64 array of this shape."""
    return RNG.standard_normal(shape)


def with_value(x: Any, index: tuple[int, ...] | tuple[Any, ...], value: float) -> Any:
    """A copy of ``x`` with ``value`` at ``index``."""
    y = np.array(x, copy=True)
    y[index] = value
    return y


def numpy(x: Any) -> Any:
    """The NumPy backend's converter: arrays stay as they are."""
    return x


def tensor(x: Any) -> Any:
    """The twin's converter: NumPy arrays become tensors, other values stay."""
    return torch.tensor(x) if isinstance(x, np.ndarray) else x


Q, K, V = normal(2, 3, 4), normal(2, 5, 4), normal(2, 5, 6)
S = normal(2, 3, 5)
ALL = np.ones(5, dtype=bool)


@dataclass(frozen=True)
class Bad:
    """One bad call, written once for both backends."""

    call: Callable[[ModuleType, Convert], object]
    error: type[AttnSpecError]
    match: str
    same_text: bool = True
    """False where the twin deliberately words the expectation differently (real dtypes only)."""


BAD_CALLS: dict[str, Bad] = {
    # input.rank
    "score_dot(query[4], keys)": Bad(
        lambda m, a: m.score_dot(a(normal(4)), a(K)),
        ShapeError,
        r"query must have at least 2 dimensions \[\.\.\., Tq, d_q\] for score_dot",
    ),
    "score_general(query, keys, W_a[2,4,4])": Bad(
        lambda m, a: m.score_general(a(Q), a(K), a(normal(2, 4, 4))),
        ShapeError,
        r"W_a must have exactly 2 dimensions",
    ),
    "score_concat(query, keys, W_a, v_a[3,1])": Bad(
        lambda m, a: m.score_concat(a(Q), a(K), a(normal(3, 8)), a(normal(3, 1))),
        ShapeError,
        r"v_a must have exactly 1 dimension ",
    ),
    "attention_distribution(scores[5])": Bad(
        lambda m, a: m.attention_distribution(a(normal(5))),
        ShapeError,
        r"scores must have at least 2 dimensions",
    ),
    "local_p_distribution(scores, positions[])": Bad(
        lambda m, a: m.local_p_distribution(a(S), a(np.zeros(())), half_width=1),
        ShapeError,
        r"positions must have at least 1 dimensions",
    ),
    # input.sizes-agree
    "score_dot(query[...,4], keys[...,6])": Bad(
        lambda m, a: m.score_dot(a(Q), a(normal(2, 5, 6))),
        ShapeError,
        r"keys\.shape\[-1\] must equal query\.shape\[-1\] for score_dot; got 6 and 4",
    ),
    "score_additive(query, keys, W_q[3,4], W_k[2,4], v_a)": Bad(
        lambda m, a: m.score_additive(a(Q), a(K), a(normal(3, 4)), a(normal(2, 4)), a(normal(3))),
        ShapeError,
        r"W_k\.shape\[0\] must equal W_q\.shape\[0\]",
    ),
    "attention_value(weights[...,5], values[...,4,6])": Bad(
        lambda m, a: m.attention_value(a(S), a(normal(2, 4, 6))),
        ShapeError,
        r"values\.shape\[-2\] must equal weights\.shape\[-1\]",
    ),
    "concatenate_context(context[2,3,6], query[2,4,4])": Bad(
        lambda m, a: m.concatenate_context(a(normal(2, 3, 6)), a(normal(2, 4, 4))),
        ShapeError,
        r"query\.shape\[-2\] must equal context\.shape\[-2\]",
    ),
    "attentional_hidden_state(context, query, W_c[5,9])": Bad(
        lambda m, a: m.attentional_hidden_state(a(normal(2, 3, 6)), a(Q), a(normal(5, 9))),
        ShapeError,
        r"W_c\.shape\[1\] must equal context\.shape\[-1\] \+ query\.shape\[-1\]",
    ),
    "attentional_hidden_state(context, query, W_c, b_c[4])": Bad(
        lambda m, a: m.attentional_hidden_state(
            a(normal(2, 3, 6)), a(Q), a(normal(5, 10)), a(normal(4))
        ),
        ShapeError,
        r"b_c\.shape\[0\] must equal W_c\.shape\[0\]",
    ),
    "output_distribution(state, W_y[7,3])": Bad(
        lambda m, a: m.output_distribution(a(Q), a(normal(7, 3))),
        ShapeError,
        r"W_y\.shape\[1\] must equal attentional_state\.shape\[-1\]",
    ),
    "local_p_position(query, W_p[3,5], v_p)": Bad(
        lambda m, a: m.local_p_position(a(Q), a(normal(3, 5)), a(normal(3)), source_length=5),
        ShapeError,
        r"W_p\.shape\[1\] must equal query\.shape\[-1\]",
    ),
    "local_p_distribution(scores[2,3,5], positions[2,4])": Bad(
        lambda m, a: m.local_p_distribution(a(S), a(np.zeros((2, 4))), half_width=1),
        ShapeError,
        r"positions\.shape\[-1\] must equal scores\.shape\[-2\]",
    ),
    "scaled_dot_product_attention(q, k, v[...,4,6])": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(normal(2, 4, 6))),
        ShapeError,
        r"value\.shape\[-2\] must equal key\.shape\[-2\]",
    ),
    "scaled_dot_product_attention(q[...,4], k[...,6], v)": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(normal(2, 5, 6)), a(V)),
        ShapeError,
        r"key\.shape\[-1\] must equal query\.shape\[-1\]",
    ),
    # input.batch-broadcast
    "score_dot(query[2,...], keys[3,...])": Bad(
        lambda m, a: m.score_dot(a(Q), a(normal(3, 5, 4))),
        ShapeError,
        r"batch dimensions must broadcast for score_dot",
    ),
    "attention(query[2,...], keys, values[3,...])": Bad(
        lambda m, a: m.attention(a(Q), a(K), a(normal(3, 5, 6))),
        ShapeError,
        r"batch dimensions must broadcast for attention",
    ),
    "local_p_distribution(scores[2,...], positions[3,3])": Bad(
        lambda m, a: m.local_p_distribution(a(S), a(np.zeros((3, 3))), half_width=1),
        ShapeError,
        r"batch dimensions must broadcast for local_p_distribution",
    ),
    # distribution.mask-shape
    "attention_distribution(scores, mask[4])": Bad(
        lambda m, a: m.attention_distribution(a(S), mask=a(np.ones(4, dtype=bool))),
        ShapeError,
        r"mask must broadcast to the scores' shape \(2, 3, 5\)",
    ),
    "scaled_dot_product_attention(q, k, v, mask[3,3,5], is_causal=True)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(Q), a(K), a(V), mask=a(np.ones((3, 3, 5), dtype=bool)), is_causal=True
        ),
        ShapeError,
        r"mask must broadcast",
    ),
    "attention_distribution(scores, mask=int64)": Bad(
        lambda m, a: m.attention_distribution(a(S), mask=a(np.ones(5, dtype=np.int64))),
        DTypeError,
        r"mask must be boolean \(True = may attend\) or real floating \(additive\) "
        r"for attention_distribution; got int64",
    ),
    "attention_distribution(scores, mask=complex128)": Bad(
        lambda m, a: m.attention_distribution(a(S), mask=a(np.zeros(5, dtype=complex))),
        DTypeError,
        r"mask must be boolean \(True = may attend\) or real floating",
    ),
    "scaled_dot_product_attention(q, k, v, mask=int32)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(Q), a(K), a(V), mask=a(np.ones(5, dtype=np.int32))
        ),
        DTypeError,
        r"mask must be boolean",
    ),
    # local.boolean-mask
    "local_m_distribution(scores, mask=float64)": Bad(
        lambda m, a: m.local_m_distribution(a(S), half_width=1, mask=a(np.zeros(5))),
        DTypeError,
        r"mask must be boolean for local_m_distribution; got float64",
    ),
    "local_p_distribution(scores, positions, mask=float64)": Bad(
        lambda m, a: m.local_p_distribution(
            a(S), a(np.zeros((2, 3))), half_width=1, mask=a(np.zeros(5))
        ),
        DTypeError,
        r"mask must be boolean for local_p_distribution",
    ),
    # input.float-dtype
    "score_dot(query=int64, keys)": Bad(
        lambda m, a: m.score_dot(a(Q.astype(np.int64)), a(K)),
        DTypeError,
        r"query must have a real (or complex )?floating dtype for score_dot; got int64",
        same_text=False,
    ),
    "attention_value(weights=bool, values)": Bad(
        lambda m, a: m.attention_value(a(S > 0), a(V)),
        DTypeError,
        r"weights must have a real (or complex )?floating dtype for attention_value; got bool",
        same_text=False,
    ),
    "scaled_dot_product_attention(q, k=int32, v)": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K.astype(np.int32)), a(V)),
        DTypeError,
        r"key must have a real (or complex )?floating dtype",
        same_text=False,
    ),
    "output_distribution(state, W_y=int64)": Bad(
        lambda m, a: m.output_distribution(a(Q), a(np.ones((7, 4), dtype=np.int64))),
        DTypeError,
        r"W_y must have a real (or complex )?floating dtype",
        same_text=False,
    ),
    # input.nonempty
    "score_dot(query, keys[2,0,4])": Bad(
        lambda m, a: m.score_dot(a(Q), a(normal(2, 0, 4))),
        ShapeError,
        r"keys\.shape\[-2\] must be at least 1 for score_dot; got 0",
    ),
    "attention_distribution(scores[2,3,0])": Bad(
        lambda m, a: m.attention_distribution(a(normal(2, 3, 0))),
        ShapeError,
        r"scores\.shape\[-1\] must be at least 1",
    ),
    "score_dot(query[2,3,0], keys[2,5,0])": Bad(
        lambda m, a: m.score_dot(a(normal(2, 3, 0)), a(normal(2, 5, 0))),
        ShapeError,
        r"query\.shape\[-1\] must be at least 1",
    ),
    "scaled_dot_product_attention(q, k[2,0,4], v[2,0,6])": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(normal(2, 0, 4)), a(normal(2, 0, 6))),
        ShapeError,
        r"key\.shape\[-2\] must be at least 1",
    ),
    "score_location(query, W_a[0,4])": Bad(
        lambda m, a: m.score_location(a(Q), a(normal(0, 4))),
        ShapeError,
        r"W_a\.shape\[0\] must be at least 1",
    ),
    "score_concat(query, keys, W_a[0,8], v_a[0])": Bad(
        lambda m, a: m.score_concat(a(Q), a(K), a(normal(0, 8)), a(normal(0))),
        ShapeError,
        r"W_a\.shape\[0\] must be at least 1",
    ),
    # input.finite
    "score_dot(query with NaN, keys)": Bad(
        lambda m, a: m.score_dot(a(with_value(Q, (1, 2, 3), NAN)), a(K)),
        NonFiniteInputError,
        r"query must be finite where it is read for score_dot; got nan at index \(1, 2, 3\)",
    ),
    "score_general(query, keys, W_a with inf)": Bad(
        lambda m, a: m.score_general(a(Q), a(K), a(np.full((4, 4), INF))),
        NonFiniteInputError,
        r"W_a must be finite where it is read for score_general; got inf at index \(0, 0\)",
    ),
    "attention_distribution(scores with +inf)": Bad(
        lambda m, a: m.attention_distribution(a(np.array([[0.0, INF]]))),
        NonFiniteInputError,
        r"scores must be finite or -inf where it is read",
    ),
    "attention_distribution(scores with NaN at an allowed key, mask)": Bad(
        lambda m, a: m.attention_distribution(
            a(with_value(S, (0, 1, 2), NAN)), mask=a(with_value(ALL, (4,), False))
        ),
        NonFiniteInputError,
        r"scores must be finite or -inf where it is read .*; got nan at index \(0, 1, 2\)",
    ),
    "attention_distribution(scores, mask with NaN)": Bad(
        lambda m, a: m.attention_distribution(a(S), mask=a(np.array([0.0, NAN, 0, 0, 0]))),
        NonFiniteInputError,
        r"mask must be finite or -inf where it is read",
    ),
    "attention_distribution(scores, mask with +inf)": Bad(
        lambda m, a: m.attention_distribution(a(S), mask=a(np.array([0.0, INF, 0, 0, 0]))),
        NonFiniteInputError,
        r"mask must be finite or -inf where it is read",
    ),
    "attention_value(weights, values with NaN where read)": Bad(
        lambda m, a: m.attention_value(a(np.full((1, 2), 0.5)), a(np.array([[NAN], [1.0]]))),
        NonFiniteInputError,
        r"values must be finite where it is read for attention_value; got nan at index \(0, 0\)",
    ),
    "attention_value(weights with inf, values)": Bad(
        lambda m, a: m.attention_value(a(with_value(S, (0, 0, 0), INF)), a(V)),
        NonFiniteInputError,
        r"weights must be finite",
    ),
    "scaled_dot_product_attention(q, k with NaN at an allowed key, v)": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(with_value(K, (0, 0, 0), NAN)), a(V)),
        NonFiniteInputError,
        r"key.* must be finite where it is read for scaled_dot_product_attention",
    ),
    "scaled_dot_product_attention(q with inf in a read row, k, v, mask)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(with_value(Q, (1, 0, 2), INF)), a(K), a(V), mask=a(ALL)
        ),
        NonFiniteInputError,
        r"query must be finite where it is read for scaled_dot_product_attention",
    ),
    "local_m_distribution(scores with NaN inside the window)": Bad(
        lambda m, a: m.local_m_distribution(a(with_value(S, (0, 1, 2), NAN)), half_width=1),
        NonFiniteInputError,
        r"scores must be finite or -inf where it is read for local_m_distribution",
    ),
    "local_p_distribution(scores, positions with NaN)": Bad(
        lambda m, a: m.local_p_distribution(a(S), a(np.full((2, 3), NAN)), half_width=1),
        NonFiniteInputError,
        r"positions must be finite",
    ),
    "output_distribution(state, W_y=1e308) overflowing logits": Bad(
        lambda m, a: m.output_distribution(a(np.ones((1, 2))), a(np.full((3, 2), 1e308))),
        NonFiniteInputError,
        r"logits W_y @ attentional_state \+ b_y must be finite",
    ),
    # input.scale-finite
    "score_scaled_dot(q, k, scale=nan)": Bad(
        lambda m, a: m.score_scaled_dot(a(Q), a(K), scale=NAN),
        ArgumentError,
        r"scale must be finite for score_scaled_dot; got nan",
    ),
    "scaled_dot_product_attention(q, k, v, scale=inf)": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), scale=INF),
        ArgumentError,
        r"scale must be finite for scaled_dot_product_attention; got inf",
    ),
    "attention(q, k, v, score='scaled_dot', scale=-inf)": Bad(
        lambda m, a: m.attention(a(Q), a(K), a(V), score="scaled_dot", scale=-INF),
        ArgumentError,
        r"scale must be finite for attention; got -inf",
    ),
    "score_scaled_dot(q, k, scale=True)": Bad(
        lambda m, a: m.score_scaled_dot(a(Q), a(K), scale=True),
        DTypeError,
        r"scale must be a real number or None for score_scaled_dot; got bool",
    ),
    "scaled_dot_product_attention(q, k, v, scale=False)": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), scale=False),
        DTypeError,
        r"scale must be a real number or None for scaled_dot_product_attention; got bool",
    ),
    "score_scaled_dot(q, k, scale='0.5')": Bad(
        lambda m, a: m.score_scaled_dot(a(Q), a(K), scale="0.5"),
        DTypeError,
        r"scale must be a real number or None for score_scaled_dot; got str",
    ),
    # local.half-width
    "local_m_distribution(scores, half_width=-1)": Bad(
        lambda m, a: m.local_m_distribution(a(S), half_width=-1),
        ArgumentError,
        r"half_width must be at least 0 for local_m_distribution; got -1",
    ),
    "local_p_distribution(scores, positions, half_width=0)": Bad(
        lambda m, a: m.local_p_distribution(a(S), a(np.zeros((2, 3))), half_width=0),
        ArgumentError,
        r"half_width must be at least 1 for local_p_distribution; got 0",
    ),
    "local_m_distribution(scores, half_width=1.5)": Bad(
        lambda m, a: m.local_m_distribution(a(S), half_width=1.5),
        DTypeError,
        r"half_width must be an int for local_m_distribution; got float",
    ),
    "local_p_distribution(scores, positions, half_width=True)": Bad(
        lambda m, a: m.local_p_distribution(a(S), a(np.zeros((2, 3))), half_width=True),
        DTypeError,
        r"half_width must be an int for local_p_distribution; got bool",
    ),
    "local_p_position(query, W_p, v_p, source_length=0)": Bad(
        lambda m, a: m.local_p_position(a(Q), a(normal(3, 4)), a(normal(3)), source_length=0),
        ArgumentError,
        r"source_length must be at least 1 for local_p_position; got 0",
    ),
    # attention.score-parameters
    "attention(q, k, v, score='bilinear')": Bad(
        lambda m, a: m.attention(a(Q), a(K), a(V), score="bilinear"),
        ArgumentError,
        r"score must be one of 'dot', 'scaled_dot', 'general', 'concat', 'additive', "
        r"'location' for attention; got 'bilinear'",
    ),
    "attention(q, k, v, score='general')": Bad(
        lambda m, a: m.attention(a(Q), a(K), a(V), score="general"),
        ArgumentError,
        r"score='general' needs W_a for attention; got None",
    ),
    "attention(q, k, v, score='additive', W_q=..., W_k=...)": Bad(
        lambda m, a: m.attention(
            a(Q), a(K), a(V), score="additive", W_q=a(normal(3, 4)), W_k=a(normal(3, 4))
        ),
        ArgumentError,
        r"score='additive' needs v_a for attention; got None",
    ),
    "attention(q, k, v, score='dot', W_a=...)": Bad(
        lambda m, a: m.attention(a(Q), a(K), a(V), W_a=a(normal(4, 4))),
        ArgumentError,
        r"W_a does not belong to score='dot' for attention; it takes no parameters",
    ),
    "attention(q, k, v, score='general', scale=2.0, W_a=...)": Bad(
        lambda m, a: m.attention(a(Q), a(K), a(V), score="general", scale=2.0, W_a=a(normal(4, 4))),
        ArgumentError,
        r"scale does not belong to score='general' for attention; it takes W_a",
    ),
    # sdpa.causal-alignment-known, sdpa.gqa-heads-divisible, flags
    "scaled_dot_product_attention(q, k, v, is_causal=True, causal_alignment='upper')": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(Q), a(K), a(V), is_causal=True, causal_alignment="upper"
        ),
        ArgumentError,
        r"causal_alignment must be one of 'top_left', 'bottom_right' for "
        r"scaled_dot_product_attention; got 'upper'",
    ),
    "scaled_dot_product_attention(q, k, v, causal_alignment='upper')": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), causal_alignment="upper"),
        ArgumentError,
        r"causal_alignment must be one of",
    ),
    "scaled_dot_product_attention(q, k, v, is_causal=1)": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), is_causal=1),
        DTypeError,
        r"is_causal must be a bool for scaled_dot_product_attention; got int",
    ),
    "scaled_dot_product_attention(q, k, v, enable_gqa='yes')": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), enable_gqa="yes"),
        DTypeError,
        r"enable_gqa must be a bool for scaled_dot_product_attention; got str",
    ),
    "scaled_dot_product_attention(q[3 heads], k[2 heads], v, enable_gqa=True)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(normal(1, 3, 2, 4)), a(normal(1, 2, 5, 4)), a(normal(1, 2, 5, 6)), enable_gqa=True
        ),
        ShapeError,
        r"query\.shape\[-3\] must be a multiple of key\.shape\[-3\] for "
        r"scaled_dot_product_attention with enable_gqa=True; got 3 and 2",
    ),
    "scaled_dot_product_attention(q[4 heads], k[2 heads], v[1 head], enable_gqa=True)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(normal(1, 4, 2, 4)), a(normal(1, 2, 5, 4)), a(normal(1, 1, 5, 6)), enable_gqa=True
        ),
        ShapeError,
        r"value\.shape\[-3\] must equal key\.shape\[-3\]",
    ),
    "scaled_dot_product_attention(q[rank 2], k, v, enable_gqa=True)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(normal(2, 4)), a(normal(5, 4)), a(normal(5, 6)), enable_gqa=True
        ),
        ShapeError,
        r"query must have at least 3 dimensions \[\.\.\., H, T, d\] with enable_gqa=True",
    ),
    # sdpa.arguments: sinks and return_lse
    "scaled_dot_product_attention(q[2 heads], k, v, sinks[3])": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), sinks=a(np.zeros(3))),
        ShapeError,
        r"sinks\.shape\[0\] must equal query\.shape\[-3\] for scaled_dot_product_attention; "
        r"got 3 and 2",
    ),
    "scaled_dot_product_attention(q, k, v, sinks[2,1])": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), sinks=a(np.zeros((2, 1)))),
        ShapeError,
        r"sinks must have exactly 1 dimension \[H\] for scaled_dot_product_attention; "
        r"got shape \(2, 1\)",
    ),
    "scaled_dot_product_attention(q[rank 2], k, v, sinks[3])": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(normal(3, 4)), a(normal(5, 4)), a(normal(5, 6)), sinks=a(np.zeros(3))
        ),
        ShapeError,
        r"query must have at least 3 dimensions \[\.\.\., H, Tq, d\] with sinks for "
        r"scaled_dot_product_attention; got shape \(3, 4\)",
    ),
    "scaled_dot_product_attention(q, k, v, sinks=int64)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(Q), a(K), a(V), sinks=a(np.zeros(2, dtype=np.int64))
        ),
        DTypeError,
        r"sinks must have a real (or complex )?floating dtype for scaled_dot_product_attention; "
        r"got int64",
        same_text=False,
    ),
    "scaled_dot_product_attention(q, k, v, sinks with NaN)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(Q), a(K), a(V), sinks=a(np.array([0.0, NAN]))
        ),
        NonFiniteInputError,
        r"sinks must be finite where it is read for scaled_dot_product_attention; "
        r"got nan at index \(1,\)",
    ),
    "scaled_dot_product_attention(q, k, v, sinks with -inf)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(Q), a(K), a(V), sinks=a(np.array([-INF, 0.0]))
        ),
        NonFiniteInputError,
        r"sinks must be finite where it is read for scaled_dot_product_attention; "
        r"got -inf at index \(0,\)",
    ),
    "scaled_dot_product_attention(q, k, v, sinks with inf, every row masked)": Bad(
        lambda m, a: m.scaled_dot_product_attention(
            a(Q), a(K), a(V), mask=a(np.zeros(5, dtype=bool)), sinks=a(np.array([INF, 0.0]))
        ),
        NonFiniteInputError,
        r"sinks must be finite",
    ),
    "scaled_dot_product_attention(q, k, v, return_lse=1)": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), return_lse=1),
        DTypeError,
        r"return_lse must be a bool for scaled_dot_product_attention; got int",
    ),
    "scaled_dot_product_attention(q, k, v, return_lse='yes')": Bad(
        lambda m, a: m.scaled_dot_product_attention(a(Q), a(K), a(V), return_lse="yes"),
        DTypeError,
        r"return_lse must be a bool for scaled_dot_product_attention; got str",
    ),
    # lse.formula: log_sum_exp takes what attention_distribution takes
    "log_sum_exp(scores[5])": Bad(
        lambda m, a: m.log_sum_exp(a(normal(5))),
        ShapeError,
        r"scores must have at least 2 dimensions .* for log_sum_exp",
    ),
    "log_sum_exp(scores[2,3,0])": Bad(
        lambda m, a: m.log_sum_exp(a(normal(2, 3, 0))),
        ShapeError,
        r"scores\.shape\[-1\] must be at least 1 for log_sum_exp; got 0",
    ),
    "log_sum_exp(scores, mask[4])": Bad(
        lambda m, a: m.log_sum_exp(a(S), mask=a(np.ones(4, dtype=bool))),
        ShapeError,
        r"mask must broadcast to the scores' shape \(2, 3, 5\) for log_sum_exp",
    ),
    "log_sum_exp(scores, mask=int64)": Bad(
        lambda m, a: m.log_sum_exp(a(S), mask=a(np.ones(5, dtype=np.int64))),
        DTypeError,
        r"mask must be boolean \(True = may attend\) or real floating \(additive\) "
        r"for log_sum_exp; got int64",
    ),
    "log_sum_exp(scores with +inf)": Bad(
        lambda m, a: m.log_sum_exp(a(np.array([[0.0, INF]]))),
        NonFiniteInputError,
        r"scores must be finite or -inf where it is read for log_sum_exp",
    ),
    "log_sum_exp(scores, mask with NaN)": Bad(
        lambda m, a: m.log_sum_exp(a(S), mask=a(np.array([0.0, NAN, 0, 0, 0]))),
        NonFiniteInputError,
        r"mask must be finite or -inf where it is read for log_sum_exp",
    ),
    "log_sum_exp(scores=int64)": Bad(
        lambda m, a: m.log_sum_exp(a(S.astype(np.int64))),
        DTypeError,
        r"scores must have a real (or complex )?floating dtype for log_sum_exp; got int64",
        same_text=False,
    ),
}


def _bad_call_params() -> list[Any]:
    """One parameter per row, ids reading like the call."""
    return [pytest.param(call, id=call) for call in BAD_CALLS]


@pytest.mark.parametrize("call", _bad_call_params())
def test_twin_rejects_like_the_reference(call: str) -> None:
    """The twin raises the reference's exception type, with its message (or its start)."""
    row = BAD_CALLS[call]
    with pytest.raises(AttnSpecError) as expected:
        row.call(attnref, numpy)
    with pytest.raises(AttnSpecError) as got:
        row.call(twin, tensor)
    assert type(expected.value) is row.error, f"reference raised {expected.value!r}"
    assert type(got.value) is row.error, f"twin raised {got.value!r}"
    for side, error in (("reference", expected.value), ("twin", got.value)):
        assert re.match(row.match, str(error)), f"{side} message: {error}"
    if row.same_text:
        assert str(got.value) == str(expected.value)


TWIN_ONLY: dict[str, tuple[Callable[[], object], type[AttnSpecError], str]] = {
    "score_dot(query=list, keys)": (
        lambda: twin.score_dot([[1.0, 2.0]], torch.tensor(normal(3, 2))),  # type: ignore[arg-type]
        DTypeError,
        r"query must have a real floating dtype for score_dot; got list \(not a torch\.Tensor\)",
    ),
    "score_dot(query=ndarray, keys)": (
        lambda: twin.score_dot(Q, torch.tensor(K)),
        DTypeError,
        r"query must have a real floating dtype for score_dot; got ndarray \(not a torch",
    ),
    "score_dot(query=complex128, keys)": (
        lambda: twin.score_dot(torch.tensor(Q + 0j), torch.tensor(K)),
        DTypeError,
        r"query must have a real floating dtype for score_dot; got complex128",
    ),
    "attention_distribution(scores=complex64)": (
        lambda: twin.attention_distribution(torch.tensor(S, dtype=torch.complex64)),
        DTypeError,
        r"scores must have a real floating dtype for attention_distribution; got complex64",
    ),
    "score_dot(query=float8_e4m3fn, keys)": (
        lambda: twin.score_dot(torch.zeros(2, 2, dtype=torch.float8_e4m3fn), torch.zeros(2, 2)),
        DTypeError,
        r"query must have a real floating dtype for score_dot; got float8_e4m3fn",
    ),
    "attention_distribution(scores, mask=ndarray)": (
        lambda: twin.attention_distribution(torch.tensor(S), mask=ALL),  # type: ignore[arg-type]
        DTypeError,
        r"mask must be boolean \(True = may attend\) or real floating \(additive\) for "
        r"attention_distribution; got ndarray \(not a torch\.Tensor\)",
    ),
    "attention(q, k, v, score='general', W_a=list)": (
        lambda: twin.attention(
            torch.tensor(Q),
            torch.tensor(K),
            torch.tensor(V),
            score="general",
            W_a=[[1.0]] * 4,  # type: ignore[arg-type]
        ),
        DTypeError,
        r"W_a must have a real floating dtype for score_general; got list",
    ),
    "attention(q, k, v, score='scaled_dot', scale=tensor(0.5))": (
        lambda: twin.attention(
            torch.tensor(Q),
            torch.tensor(K),
            torch.tensor(V),
            score="scaled_dot",
            scale=torch.tensor(0.5),  # type: ignore[arg-type]
        ),
        DTypeError,
        r"scale must be a real number or None for attention; got Tensor",
    ),
    "scaled_dot_product_attention(q, k, v, sinks=list)": (
        lambda: twin.scaled_dot_product_attention(  # type: ignore[call-overload]
            torch.tensor(Q),
            torch.tensor(K),
            torch.tensor(V),
            sinks=[0.0, 0.0],
        ),
        DTypeError,
        r"sinks must have a real floating dtype for scaled_dot_product_attention; got list "
        r"\(not a torch\.Tensor\)",
    ),
    "scaled_dot_product_attention(q, k, v, sinks=complex128)": (
        lambda: twin.scaled_dot_product_attention(
            torch.tensor(Q), torch.tensor(K), torch.tensor(V), sinks=torch.zeros(2) + 0j
        ),
        DTypeError,
        r"sinks must have a real floating dtype for scaled_dot_product_attention; got complex",
    ),
    "log_sum_exp(scores=complex128)": (
        lambda: twin.log_sum_exp(torch.tensor(S + 0j)),
        DTypeError,
        r"scores must have a real floating dtype for log_sum_exp; got complex128",
    ),
    "scaled_dot_product_attention(q, k, v, scale=tensor(0.5))": (
        lambda: twin.scaled_dot_product_attention(  # type: ignore[call-overload]
            torch.tensor(Q),
            torch.tensor(K),
            torch.tensor(V),
            scale=torch.tensor(0.5),
        ),
        DTypeError,
        r"scale must be a real number or None for scaled_dot_product_attention; got Tensor",
    ),
}


@pytest.mark.parametrize("call", list(TWIN_ONLY), ids=list(TWIN_ONLY))
def test_twin_rejects_what_only_the_twin_refuses(call: str) -> None:
    """input.float-dtype: the twin takes real floating tensors only, and says what came."""
    fn, error, message = TWIN_ONLY[call]
    with pytest.raises(AttnSpecError) as got:
        fn()
    assert type(got.value) is error
    assert re.match(message, str(got.value)), str(got.value)


# ---------------------------------------------------------------------------
# input.not-mutated


def _poisoned_sdpa_inputs() -> tuple[Any, Any, Any, Any]:
    """q, k, v and a mask with a fully masked row, a masked key, and NaN at both."""
    mask = np.ones((3, 5), dtype=bool)
    mask[1] = False
    mask[:, 4] = False
    q = with_value(Q, (slice(None), 1), NAN)
    k = with_value(K, (slice(None), 4), NAN)
    v = with_value(V, (slice(None), 4), 1e300)
    return q, k, v, mask


QP, KP, VP, MASK = _poisoned_sdpa_inputs()

VALID_CALLS: dict[str, Callable[[Convert], object]] = {
    "score_dot": lambda a: twin.score_dot(a(Q), a(K)),
    "score_scaled_dot": lambda a: twin.score_scaled_dot(a(Q), a(K), scale=-0.5),
    "score_general": lambda a: twin.score_general(a(Q), a(K), a(normal(4, 4))),
    "score_concat": lambda a: twin.score_concat(a(Q), a(K), a(normal(3, 8)), a(normal(3))),
    "score_additive": lambda a: twin.score_additive(
        a(Q), a(K), a(normal(3, 4)), a(normal(3, 4)), a(normal(3))
    ),
    "score_location": lambda a: twin.score_location(a(Q), a(normal(5, 4))),
    "attention_distribution": lambda a: twin.attention_distribution(
        a(with_value(S, (..., 4), NAN)), mask=a(np.where(MASK, 0.0, -np.inf))
    ),
    "local_m_distribution": lambda a: twin.local_m_distribution(
        a(with_value(S, (..., 0, 4), NAN)), half_width=1, mask=a(MASK)
    ),
    "local_p_position": lambda a: twin.local_p_position(
        a(Q), a(normal(3, 4)), a(normal(3)), source_length=5
    ),
    "local_p_distribution": lambda a: twin.local_p_distribution(
        a(S), a(np.array([0.5, 1e300, 3.0])), half_width=1, mask=a(MASK)
    ),
    "attention_value": lambda a: twin.attention_value(
        a(with_value(S, (..., 4), 0.0)), a(with_value(V, (..., 4, 0), NAN))
    ),
    "concatenate_context": lambda a: twin.concatenate_context(a(normal(2, 3, 6)), a(Q)),
    "attentional_hidden_state": lambda a: twin.attentional_hidden_state(
        a(normal(2, 3, 6)), a(Q), a(normal(5, 10)), a(normal(5))
    ),
    "output_distribution": lambda a: twin.output_distribution(a(Q), a(normal(7, 4)), a(normal(7))),
    "attention": lambda a: twin.attention(
        a(QP), a(KP), a(VP), score="concat", mask=a(MASK), W_a=a(normal(3, 8)), v_a=a(normal(3))
    ),
    "scaled_dot_product_attention": lambda a: twin.scaled_dot_product_attention(
        a(QP), a(KP), a(VP), mask=a(MASK), is_causal=True, causal_alignment="bottom_right"
    ),
    "log_sum_exp": lambda a: twin.log_sum_exp(
        a(with_value(S, (..., 4), NAN)), mask=a(np.where(MASK, 0.0, -np.inf))
    ),
    "scaled_dot_product_attention(sinks, return_lse=True)": lambda a: (
        twin.scaled_dot_product_attention(
            a(QP), a(KP), a(VP), mask=a(MASK), sinks=a(np.array([0.5, -2.0])), return_lse=True
        )
    ),
}


@pytest.mark.parametrize("name", list(VALID_CALLS))
def test_twin_does_not_mutate_its_inputs(name: str) -> None:
    """input.not-mutated: every argument keeps its bits (NaN included) and its version."""
    records: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def keep(x: Any) -> Any:
        t = tensor(x)
        if isinstance(t, torch.Tensor):
            records.append((t, t.clone(), t._version))
        return t

    VALID_CALLS[name](keep)
    assert records
    for t, before, version in records:
        assert t._version == version, "an input was written in place"
        assert torch.equal(_bits(t), _bits(before)), "an input changed"


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit pattern, so that NaN compares equal to itself."""
    return t.view(torch.uint8) if t.dtype == torch.bool else t.view(torch.int64)


# ---------------------------------------------------------------------------
# input.unread-gradient


def leaf(x: Any) -> torch.Tensor:
    """A float64 leaf tensor that records its gradient."""
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def backward(outputs: tuple[torch.Tensor, ...], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients of a random linear functional of ``outputs`` with respect to ``inputs``."""
    cotangents = [torch.tensor(RNG.standard_normal(tuple(o.shape))) for o in outputs]
    total = sum((o * c).sum() for o, c in zip(outputs, cotangents, strict=True))
    assert isinstance(total, torch.Tensor)
    return list(torch.autograd.grad(total, inputs))  # raises if an input got no gradient


def assert_finite_zero(grads: list[torch.Tensor], unread: list[Any]) -> None:
    """Every gradient is finite, and exactly zero where its input is not read."""
    for i, (g, where) in enumerate(zip(grads, unread, strict=True)):
        assert bool(torch.isfinite(g).all()), f"gradient {i} is not finite: {g}"
        if where is not None:
            assert bool((g[where] == 0).all()), f"gradient {i} is not zero where unread: {g}"


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_sdpa_backward_is_zero_at_a_fully_masked_row_and_a_nan_key(kind: str) -> None:
    """distribution.fully-masked-row and input.unread-gradient through SDPA's backward.

    Query row 1 may attend to nothing and key 4 to no query; NaN sits in that
    query row and that key, 1e300 in that value row. The context of row 1 is
    zero, and every gradient is finite and exactly zero at those positions.
    """
    mask: Any = MASK if kind == "bool" else np.where(MASK, 0.0, -np.inf)
    q, k, v = leaf(QP), leaf(KP), leaf(VP)
    context, weights = twin.scaled_dot_product_attention(q, k, v, mask=torch.tensor(mask))
    assert bool((context[:, 1] == 0).all())
    assert bool((weights[:, 1] == 0).all())
    assert bool(torch.isfinite(context).all())
    grads = backward((context, weights), [q, k, v])
    assert_finite_zero(grads, [(slice(None), 1), (slice(None), 4), (slice(None), 4)])
    assert bool((grads[0][:, 0] != 0).any()), "a read query row got no gradient"


def test_sdpa_backward_with_sinks_is_zero_at_unread_positions() -> None:
    """sdpa.sinks, input.unread-gradient: with sinks and the log-sum-exp as an output, the
    fully masked query row and the masked key still get finite zero gradients (their NaN is
    not read), while every sink gets one: its share of each row, fully masked rows included,
    where the log-sum-exp is the sink itself."""
    q, k, v = leaf(QP), leaf(KP), leaf(VP)
    sinks = leaf(np.array([0.5, -2.0]))
    context, weights, lse = twin.scaled_dot_product_attention(
        q, k, v, mask=torch.tensor(MASK), sinks=sinks, return_lse=True
    )
    assert bool((lse[:, 1] == sinks.detach()).all()), "a fully masked row's lse is not its sink"
    (only_lse,) = torch.autograd.grad(lse[:, 1].sum(), [sinks], retain_graph=True)
    assert bool((only_lse == 1).all()), "d lse / d sink is not 1 on a fully masked row"
    grads = backward((context, weights, lse), [q, k, v, sinks])
    assert_finite_zero(grads, [(slice(None), 1), (slice(None), 4), (slice(None), 4), None])
    assert bool((grads[3] != 0).all()), "a sink got no gradient"


def test_sdpa_backward_with_bottom_right_causal_rows_that_see_nothing() -> None:
    """sdpa.causal-bottom-right with Tq > Tk: the first Tq - Tk rows read nothing."""
    q, k, v = (
        leaf(with_value(normal(2, 5, 3), (slice(None), slice(0, 2)), NAN)),
        leaf(normal(2, 3, 3)),
        leaf(normal(2, 3, 2)),
    )
    context, weights = twin.scaled_dot_product_attention(
        q, k, v, is_causal=True, causal_alignment="bottom_right"
    )
    assert bool((context[:, :2] == 0).all())
    grads = backward((context, weights), [q, k, v])
    assert_finite_zero(grads, [(slice(None), slice(0, 2)), None, None])


def test_attention_distribution_backward_is_zero_at_masked_nan_scores() -> None:
    """distribution.masked-zero and input.unread-gradient: NaN scores where masked."""
    scores = leaf(with_value(S, (..., 4), NAN))
    weights = twin.attention_distribution(scores, mask=torch.tensor(MASK))
    grads = backward((weights,), [scores])
    assert_finite_zero(grads, [(..., 4)])
    assert_finite_zero(grads, [(..., 1, slice(None))])  # the fully masked row


def test_local_m_backward_is_zero_outside_the_window() -> None:
    """local.window and input.unread-gradient: NaN outside every window."""
    scores = leaf(with_value(normal(2, 3, 6), (..., 5), NAN))
    weights = twin.local_m_distribution(scores, half_width=1)
    assert_finite_zero(backward((weights,), [scores]), [(..., 5)])


def test_local_p_backward_is_finite_for_far_positions() -> None:
    """local.p-window: positions far off the source (1e308) only empty the window.

    Their rows read nothing, so their gradient is zero, not inf * 0 = NaN.
    """
    scores = leaf(normal(3, 6))
    positions = leaf(np.array([1e308, -1.7e308, 2.5]))
    weights = twin.local_p_distribution(scores, positions, half_width=2)
    grads = backward((weights,), [scores, positions])
    assert_finite_zero(grads, [(slice(0, 2),), (slice(0, 2),)])
    assert bool(grads[1][2] != 0), "the position on the source got no gradient"


def test_local_p_position_backward_is_finite_when_the_sigmoid_saturates() -> None:
    """local.p-position: a logit of -1e3 saturates the sigmoid; its gradient stays finite."""
    q, w = leaf(np.ones((2, 1))), leaf(np.ones((1, 1)))
    v = leaf(np.array([-1e3]))
    positions = twin.local_p_position(q, w, v, source_length=5)
    assert bool((positions == 0).all())
    assert_finite_zero(backward((positions,), [q, w, v]), [None, None, None])


def test_attention_value_backward_is_zero_at_unweighted_nan_values() -> None:
    """value.zero-weight-unread and input.unread-gradient: NaN in a value row of weight 0."""
    weights = leaf(with_value(S, (..., 4), 0.0))
    values = leaf(with_value(V, (..., 4, slice(None)), NAN))
    context = twin.attention_value(weights, values)
    grads = backward((context,), [weights, values])
    assert_finite_zero(grads, [(..., 4), (..., 4, slice(None))])


@pytest.mark.parametrize("score", ["concat", "additive", "general"])
def test_attention_backward_is_zero_at_masked_nan_keys(score: ScoreKind) -> None:
    """attention.composition and input.unread-gradient for the parametrised scores."""
    q, k, v = leaf(QP), leaf(KP), leaf(VP)
    params = {
        "concat": {"W_a": leaf(normal(3, 8)), "v_a": leaf(normal(3))},
        "additive": {"W_q": leaf(normal(3, 4)), "W_k": leaf(normal(3, 4)), "v_a": leaf(normal(3))},
        "general": {"W_a": leaf(normal(4, 4))},
    }[score]
    context, weights = twin.attention(
        q,
        k,
        v,
        score=score,
        mask=torch.tensor(MASK),
        **params,  # type: ignore[arg-type]
    )
    grads = backward((context, weights), [q, k, v, *params.values()])
    unread = [(slice(None), 1), (slice(None), 4), (slice(None), 4)]
    assert_finite_zero(grads, [*unread, *(None for _ in params)])
