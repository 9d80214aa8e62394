r"""A minimal encoder-decoder, to show how far gradients reach back with and without attention.

The tutorial's second claim is that attention eases the vanishing gradient
of long sources: without it, the decoder sees the source only through the
encoder's last state, so the gradient of a decoder output with respect to
the first source word passes through every recurrent step and shrinks
geometrically; with it, every encoder state is one attention step away from
the output. This module builds the smallest model in which that can be
measured; :func:`attnref.demo.gradient_flow.gradient_flow` measures it.

Model (Luong et al. 2015, section 3, global attention with the dot score)
    Encoder, a tanh RNN (:math:`h_0 = 0`):
    :math:`h_j = \tanh(W_{xh} x_j + W_{hh} h_{j-1} + b_h)`, ``j = 1..N``.
    Decoder, one step from :math:`s_0 = h_N` with the start input :math:`y_0`:
    :math:`s = \tanh(W_{ys} y_0 + W_{ss} h_N + b_s)`.
    With attention the context is :math:`a = \sum_j \alpha_j h_j`,
    :math:`\alpha = \mathrm{softmax}_j(s^\top h_j)`; without it :math:`a = 0`.
    Then :math:`\tilde s = \tanh(W_c [a; s] + b_c)` and
    :math:`\hat y = \mathrm{softmax}(W_y \tilde s + b_y)`; the measured output
    is the probability :math:`\hat y_k` of one target word ``k``.

Both decoders share every weight; they differ only in whether the context
is computed (with :func:`attnref.score_dot`, :func:`attnref.attention_distribution`
and :func:`attnref.attention_value`) or fixed at zero. The recurrent matrix
:math:`W_{hh}` is scaled to spectral norm ``recurrent_norm`` < 1, so without
attention :math:`\|\partial \hat y_k / \partial x_1\|` is bounded by a
constant times ``recurrent_norm ** (N - 1)``.

Everything is complex-safe, so gradients are computed by complex step
(:func:`source_gradient`, exact to rounding); :mod:`attnref.demo.seq2seq_torch`
computes the same model with :mod:`attnref.torch` and autograd, as an
independent witness; :func:`central_difference_gradient` is the plain
numerical derivative, which cannot see gradients below its rounding noise
(:func:`central_difference_noise`, about :math:`10^{-11}` here).

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnref.distribution import attention_distribution
from attnref.output import attentional_hidden_state, output_distribution
from attnref.scores import score_dot
from attnref.testing.gradcheck import setting
from attnref.value import attention_value
from attnspec.typing import Array

__all__ = [
    "ModelConfig",
    "Seq2SeqWeights",
    "central_difference_gradient",
    "central_difference_noise",
    "decoder_output",
    "encode",
    "make_source",
    "make_weights",
    "source_gradient",
]


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and seed of the toy model; the defaults are what ``attnspec gradient-flow`` uses."""

    seed: int = 0
    """Seed of the weights and of the source."""
    input_size: int = 4
    """``d_in``, the size of a source (and start) word vector."""
    hidden_size: int = 8
    """``d_h``, the size of encoder and decoder states."""
    vocabulary_size: int = 6
    """``V``, the size of the output distribution."""
    recurrent_norm: float = 0.5
    """Spectral norm of :math:`W_{hh}`; below 1, so the encoder forgets geometrically."""
    target: int = 0
    """The word ``k`` whose probability is the measured decoder output."""

    def __post_init__(self) -> None:
        for name in ("input_size", "hidden_size", "vocabulary_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if not self.recurrent_norm > 0:
            raise ValueError(f"recurrent_norm must be positive; got {self.recurrent_norm}")
        if not 0 <= self.target < self.vocabulary_size:
            raise ValueError(f"target must be in [0, {self.vocabulary_size}); got {self.target}")


@dataclass(frozen=True)
class Seq2SeqWeights:
    """The weights of the toy model, named as in the module docstring (all float64)."""

    W_xh: Array  # [d_h, d_in]
    W_hh: Array  # [d_h, d_h], spectral norm = recurrent_norm
    b_h: Array  # [d_h]
    W_ys: Array  # [d_h, d_in]
    W_ss: Array  # [d_h, d_h]
    b_s: Array  # [d_h]
    y_0: Array  # [d_in], the start word
    W_c: Array  # [d_h, 2 d_h], context columns first
    b_c: Array  # [d_h]
    W_y: Array  # [V, d_h]
    b_y: Array  # [V]


def make_weights(config: ModelConfig = ModelConfig(), /) -> Seq2SeqWeights:
    """Small fixed random weights: standard normal scaled by ``1/sqrt(fan_in)``.

    :math:`W_{hh}` is then rescaled to spectral norm ``config.recurrent_norm``.
    """
    rng = np.random.default_rng(config.seed)
    d_in, d_h, v = config.input_size, config.hidden_size, config.vocabulary_size

    def layer(rows: int, cols: int) -> Array:
        # Note: 1/sqrt(fan_in) keeps pre-activations O(1), so tanh is not saturated.
        weight: Array = rng.standard_normal((rows, cols)) / np.sqrt(cols)
        return weight

    w_hh: Array = rng.standard_normal((d_h, d_h))  # [d_h, d_h]
    w_hh = w_hh * (config.recurrent_norm / float(np.linalg.norm(w_hh, 2)))
    return Seq2SeqWeights(
        W_xh=layer(d_h, d_in),
        W_hh=w_hh,
        b_h=0.1 * rng.standard_normal(d_h),
        W_ys=layer(d_h, d_in),
        W_ss=layer(d_h, d_h),
        b_s=0.1 * rng.standard_normal(d_h),
        y_0=rng.standard_normal(d_in),
        W_c=layer(d_h, 2 * d_h),
        b_c=0.1 * rng.standard_normal(d_h),
        W_y=layer(v, d_h),
        b_y=0.1 * rng.standard_normal(v),
    )


def make_source(
    source_length: int,
    config: ModelConfig = ModelConfig(),
    /,
    *,
    sample: int = 0,
) -> Array:
    """``[N, d_in]`` standard normal source words, fixed by the seed, ``N`` and ``sample``."""
    if source_length < 1:
        raise ValueError(f"source_length must be at least 1; got {source_length}")
    if sample < 0:
        raise ValueError(f"sample must be non-negative; got {sample}")
    rng = np.random.default_rng([config.seed, source_length, sample])
    return rng.standard_normal((source_length, config.input_size))


def encode(source: Array, weights: Seq2SeqWeights, /) -> Array:
    """``[..., N, d_h]`` encoder states :math:`h_1 .. h_N` of a ``[..., N, d_in]`` source."""
    h = np.zeros((*source.shape[:-2], weights.W_hh.shape[0]), dtype=source.dtype)  # [..., d_h]
    states = []
    for j in range(source.shape[-2]):
        h = np.tanh(source[..., j, :] @ weights.W_xh.T + h @ weights.W_hh.T + weights.b_h)
        states.append(h)  # [..., d_h]
    return np.stack(states, axis=-2)  # [..., N, d_h]


def decoder_output(
    source: Array, weights: Seq2SeqWeights, /, *, attention: bool, target: int = 0
) -> Array:
    """``[...]`` probability of word ``target`` at the first decoder step, per source."""
    states = encode(source, weights)  # [..., N, d_h]
    last = states[..., -1:, :]  # [..., 1, d_h]
    s = np.tanh(weights.y_0 @ weights.W_ys.T + last @ weights.W_ss.T + weights.b_s)  # [..., 1, d_h]
    if attention:
        scores = score_dot(s, states)  # [..., 1, N]
        alpha = attention_distribution(scores)  # [..., 1, N]
        context = attention_value(alpha, states)  # [..., 1, d_h]
    else:
        context = np.zeros_like(s)  # [..., 1, d_h]
    state = attentional_hidden_state(context, s, weights.W_c, weights.b_c)  # [..., 1, d_h]
    probabilities = output_distribution(state, weights.W_y, weights.b_y)  # [..., 1, V]
    return probabilities[..., 0, target]  # [...]


def source_gradient(
    source_length: int,
    /,
    *,
    attention: bool,
    config: ModelConfig = ModelConfig(),
    sample: int = 0,
) -> Array:
    r"""``[N, d_in]`` gradient :math:`\partial \hat y_k / \partial x_j` by complex step.

    All ``N * d_in`` perturbed sources run as one batch:
    :math:`\partial \hat y / \partial x_{jm} = \mathrm{Im}\, \hat y(x + i h e_{jm}) / h`.
    """
    weights = make_weights(config)
    x = make_source(source_length, config, sample=sample)  # [N, d_in]
    h = setting("complex_step.step")
    n, d = x.shape
    basis = np.eye(n * d).reshape(n * d, n, d)  # [N d_in, N, d_in]
    batch = x + 1j * h * basis  # [N d_in, N, d_in]
    out = decoder_output(batch, weights, attention=attention, target=config.target)  # [N d_in]
    gradient: Array = (out.imag / h).reshape(n, d)  # [N, d_in]
    return gradient


def central_difference_gradient(
    source_length: int,
    /,
    *,
    attention: bool,
    config: ModelConfig = ModelConfig(),
    sample: int = 0,
) -> Array:
    r"""``[N, d_in]`` gradient :math:`\partial \hat y_k / \partial x_j` by central differences.

    :math:`(\hat y(x + h e_{jm}) - \hat y(x - h e_{jm})) / 2h` with the step
    ``central_difference.step`` of :mod:`attnref.testing.gradcheck`
    (:math:`h = \epsilon^{1/3}`, the source words being of unit scale), all
    ``2 N d_in`` evaluations in one batch. Each entry carries rounding noise of
    about :func:`central_difference_noise`; a derivative below it is not measured.
    """
    weights = make_weights(config)
    x = make_source(source_length, config, sample=sample)  # [N, d_in]
    h = setting("central_difference.step")
    n, d = x.shape
    basis = np.eye(n * d).reshape(n * d, n, d)  # [N d_in, N, d_in]
    plus = decoder_output(x + h * basis, weights, attention=attention, target=config.target)
    minus = decoder_output(x - h * basis, weights, attention=attention, target=config.target)
    # Note: the difference of two rounded probabilities; this subtraction is where the
    # rounding noise comes from, and what the complex step avoids.
    gradient: Array = ((plus - minus) / (2 * h)).reshape(n, d)  # [N, d_in]
    return gradient


def central_difference_noise(
    source_length: int,
    /,
    *,
    attention: bool,
    config: ModelConfig = ModelConfig(),
    sample: int = 0,
) -> float:
    r"""The rounding noise of one word's :func:`central_difference_gradient`, in its norm.

    Each of the two values :math:`\hat y(x \pm h e)` is rounded to within
    about :math:`\epsilon |\hat y|`, so their difference divided by :math:`2h`
    is off by up to about :math:`\epsilon |\hat y| / h` per entry, and
    :math:`\sqrt{d_{in}}` times that in a word's norm (:math:`\epsilon` the
    unit roundoff :math:`2^{-52}` of float64).
    """
    weights = make_weights(config)
    x = make_source(source_length, config, sample=sample)  # [N, d_in]
    y = abs(float(decoder_output(x, weights, attention=attention, target=config.target)))
    eps = float(np.finfo(np.float64).eps)
    return float(np.sqrt(config.input_size)) * eps * y / setting("central_difference.step")
