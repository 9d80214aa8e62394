"""Properties of the attentional hidden state and the output distribution (``hidden.*``,
``output.*``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import oracles
from hypothesis import example, given
from hypothesis import strategies as st

import attnref
import tolerances as tol
from attnref.testing import strategies as ats
from attnspec.typing import Array


@dataclass(frozen=True, eq=False)
class Layer:
    """Inputs ``[..., Tq, d_in]`` (one or two arrays), a weight matrix and a bias (or None)."""

    first: Array
    second: Array
    weight: Array
    bias: Array | None


@st.composite
def hidden_layers(draw: st.DrawFn) -> Layer:
    """Context ``[..., Tq, d_v]``, query ``[..., Tq, d_q]``, ``W_c [d_h, d_v + d_q]``, ``b_c``."""
    inputs = draw(ats.attention_inputs(mask_kinds=("none",)))
    s, dt = inputs.shapes, inputs.query.dtype
    context = draw(ats.well_conditioned_arrays(dt, (*s.values_batch, s.tq, s.d_v)))
    d_h = draw(st.integers(1, 4))
    w = draw(ats.well_conditioned_arrays(dt, (d_h, s.d_v + s.d_q), max_magnitude=4.0))
    b = draw(st.none() | ats.well_conditioned_arrays(dt, (d_h,)))
    return Layer(context, inputs.query, w, b)


@given(hidden_layers())
@example(Layer(np.ones((1, 1)), np.zeros((1, 1)), np.array([[1.0, -1.0]]), None))
def test_hidden_state_is_a_tanh_layer_context_first(layer: Layer) -> None:
    """hidden.tanh: The result is tanh(W_c [a_i; s_i] + b_c) with the context first, W_c of shape
    [d_h, d_v + d_q], and b_c = 0 when omitted; every entry lies in [-1, 1]."""
    a, s, w, b = layer.first, layer.second, layer.weight, layer.bias
    got = attnref.attentional_hidden_state(a, s, w, b)
    batch = np.broadcast_shapes(a.shape[:-2], s.shape[:-2])
    tq = a.shape[-2]
    stacked = np.concatenate(
        [
            np.broadcast_to(oracles.exact(a), (*batch, tq, a.shape[-1])),
            np.broadcast_to(oracles.exact(s), (*batch, tq, s.shape[-1])),
        ],
        axis=-1,
    )
    bias = np.zeros(w.shape[0], dtype=np.longdouble) if b is None else oracles.exact(b)
    we = oracles.exact(w)
    expected = np.tanh(stacked @ we.T + bias)
    pre = float((np.abs(stacked) @ np.abs(we).T + np.abs(bias)).max(initial=0))
    bound = tol.tanh_layer_bound(got.dtype, w.shape[1] + 1, pre)
    tol.assert_within(got, expected, bound, what="hidden state")
    assert np.all((got >= -1) & (got <= 1))
    if b is None:
        zero = np.zeros(w.shape[0], dtype=w.dtype)
        np.testing.assert_array_equal(got, attnref.attentional_hidden_state(a, s, w, zero))


@st.composite
def output_layers(draw: st.DrawFn) -> Layer:
    """Attentional states ``[..., Tq, d_h]`` in [-1, 1], ``W_y [V, d_h]`` and ``b_y``."""
    dt = draw(ats.float_dtypes())
    s = draw(ats.attention_shapes())
    states = draw(ats.well_conditioned_arrays(dt, s.query, max_magnitude=1.0))
    vocabulary = draw(st.integers(1, 6))
    big = draw(st.sampled_from([1.0, 8.0]))
    w = draw(ats.well_conditioned_arrays(dt, (vocabulary, s.d_q), max_magnitude=big))
    b = draw(st.none() | ats.well_conditioned_arrays(dt, (vocabulary,), max_magnitude=big))
    return Layer(states, states, w, b)


@given(output_layers())
@example(  # exp(100) overflows float16: only a shifted softmax stays finite
    Layer(
        np.ones((1, 1), np.float16),
        np.ones((1, 1), np.float16),
        np.array([[100.0], [0.0]], np.float16),
        None,
    )
)
def test_output_distribution_is_a_softmax_layer(layer: Layer) -> None:
    """output.softmax: The result is softmax(W_y s~_i + b_y) over the vocabulary axis, with W_y of
    shape [V, d_h] and b_y = 0 when omitted; each row is non-negative and sums to one, and it is
    computed stably as attention_distribution without a mask."""
    h, w, b = layer.first, layer.weight, layer.bias
    got = attnref.output_distribution(h, w, b)
    he, we = oracles.exact(h), oracles.exact(w)
    bias = np.zeros(w.shape[0], dtype=np.longdouble) if b is None else oracles.exact(b)
    logits = he @ we.T + bias
    expected = oracles.distribution(logits)
    size = float((np.abs(he) @ np.abs(we).T + np.abs(bias)).max(initial=0))
    vocabulary = w.shape[0]
    # the logits are a dot product of d_h terms plus the bias; the softmax rounds on top
    logit_error = tol.gamma(w.shape[1] + 1, got.dtype) * size
    bound = tol.softmax_perturbation(logit_error) + tol.softmax_bound(got.dtype, vocabulary, 0)
    tol.assert_within(got, expected, bound, what="output distribution")
    assert np.all(got >= 0)
    sums = [math.fsum(row) for row in got.astype(np.float64).reshape(-1, vocabulary)]
    tol.assert_within(
        np.array(sums), np.ones(len(sums)), tol.row_sum_bound(got.dtype, vocabulary), what="sums"
    )
    if b is None:
        zero = np.zeros(w.shape[0], dtype=w.dtype)
        np.testing.assert_array_equal(got, attnref.output_distribution(h, w, zero))
