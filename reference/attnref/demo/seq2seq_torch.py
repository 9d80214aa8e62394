"""The toy encoder-decoder of :mod:`attnref.demo.seq2seq` in PyTorch, differentiated by autograd.

Same model, same weights (converted from :func:`attnref.demo.seq2seq.make_weights`),
same steps, computed with the PyTorch twin :mod:`attnref.torch` in float64.
It is the independent witness of :func:`attnref.demo.gradient_flow.gradient_flow`: the
gradient of the decoder output with respect to the source comes from
autograd here and from complex-step differentiation there.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

import attnref.torch as attn
from attnref.demo.seq2seq import ModelConfig, Seq2SeqWeights, make_source, make_weights
from attnspec.typing import Array

__all__ = ["decoder_output", "encode", "source_gradient", "to_torch"]


def to_torch(weights: Seq2SeqWeights, /) -> dict[str, torch.Tensor]:
    """The weights as float64 tensors, by field name."""
    return {
        f.name: torch.from_numpy(np.asarray(getattr(weights, f.name), dtype=np.float64))
        for f in dataclasses.fields(weights)
    }


def encode(source: torch.Tensor, weights: dict[str, torch.Tensor], /) -> torch.Tensor:
    """``[..., N, d_h]`` encoder states of a ``[..., N, d_in]`` source, as in the NumPy model."""
    w_xh, w_hh, b_h = weights["W_xh"], weights["W_hh"], weights["b_h"]
    h = source.new_zeros((*source.shape[:-2], w_hh.shape[0]))  # [..., d_h]
    states = []
    for j in range(source.shape[-2]):
        h = torch.tanh(source[..., j, :] @ w_xh.T + h @ w_hh.T + b_h)  # [..., d_h]
        states.append(h)
    return torch.stack(states, dim=-2)  # [..., N, d_h]


def decoder_output(
    source: torch.Tensor, weights: dict[str, torch.Tensor], /, *, attention: bool, target: int = 0
) -> torch.Tensor:
    """``[...]`` probability of word ``target``, as :func:`attnref.demo.seq2seq.decoder_output`."""
    states = encode(source, weights)  # [..., N, d_h]
    last = states[..., -1:, :]  # [..., 1, d_h]
    s = torch.tanh(
        weights["y_0"] @ weights["W_ys"].T + last @ weights["W_ss"].T + weights["b_s"]
    )  # [..., 1, d_h]
    if attention:
        scores = attn.score_dot(s, states)  # [..., 1, N]
        alpha = attn.attention_distribution(scores)  # [..., 1, N]
        context = attn.attention_value(alpha, states)  # [..., 1, d_h]
    else:
        context = torch.zeros_like(s)  # [..., 1, d_h]
    state = attn.attentional_hidden_state(context, s, weights["W_c"], weights["b_c"])
    probabilities = attn.output_distribution(state, weights["W_y"], weights["b_y"])  # [..., 1, V]
    return probabilities[..., 0, target]  # [...]


def source_gradient(
    source_length: int,
    /,
    *,
    attention: bool,
    config: ModelConfig = ModelConfig(),  # noqa: B008
    sample: int = 0,
) -> Array:
    """``[N, d_in]`` gradient of the decoder output with respect to the source, by autograd."""
    weights = to_torch(make_weights(config))
    x = torch.from_numpy(make_source(source_length, config, sample=sample)).requires_grad_(
        True
    )  # [N, d_in]
    out = decoder_output(x, weights, attention=attention, target=config.target)  # []
    (gradient,) = torch.autograd.grad(out, x)
    result: Array = gradient.detach().numpy()
    return result
