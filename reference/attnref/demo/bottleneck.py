r"""How much of the source a fixed-size encoder state keeps, against the attention context.

The tutorial's first claim (Bahdanau et al. 2015, section 1; Cho et al. 2014)
is that a plain seq2seq decoder, which sees the source only through the
encoder's last state :math:`h_N`, must find everything about a sentence of
any length in that one vector of :math:`d_h` numbers, while an attention
decoder can draw on every encoder state :math:`h_1, \dots, h_N`. This module
measures it on the encoder of :mod:`attnref.demo.seq2seq`.

The task
    Reconstruct the source words :math:`x_1, \dots, x_N` (each of
    :math:`d_{in}` standard normal numbers) from what the decoder can see.
    Each memory is read with the *best linear read-out*, fitted by least
    squares on :attr:`BottleneckConfig.train` random sentences and scored on
    :attr:`BottleneckConfig.test` others, so neither side is handicapped by
    training: the number is what the memory itself preserves.

Fixed state
    One read-out from :math:`[h_N; 1]` to all :math:`N d_{in}` source
    numbers. Its predictions span at most :math:`d_h` directions, and the
    source numbers are independent with unit variance, so the explained
    variance summed over all of them is at most :math:`d_h`: the mean
    :math:`R^2` is at most :math:`d_h / (N d_{in})` (:func:`capacity_bound`),
    whatever the weights.
Attention context
    At output step :math:`t` the decoder attends with the *location* score
    (Luong et al. 2015, eq. 8), :math:`e_t = W_a s_t` with
    :math:`W_a = \beta I` and a decoder state :math:`s_t` that is the one-hot
    code of its step: the alignment a trained model would have to learn is
    given, and the softmax of :func:`attnref.attention_distribution` still
    spreads a little weight everywhere. The context
    :math:`a_t = \sum_j \alpha_{tj} h_j` (:func:`attnref.attention_value`)
    has the same :math:`d_h` numbers as :math:`h_N`, but there is a new one
    at every step. One read-out from :math:`[a_t; 1]` to :math:`x_t`, shared
    by every step.

The score is :math:`R^2 = 1 - \sum (x - \hat x)^2 / \sum (x - \bar x)^2` per
source number on the test sentences: 1 is a perfect copy, 0 is no better
than guessing the mean. Everything is seeded, so the result is the same on
every run.

>>> result = bottleneck((2, 20))
>>> [round(r, 2) for r in result.fixed_state], [round(r, 2) for r in result.attention]
([0.57, 0.05], [0.91, 0.9])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from attnref.demo.seq2seq import ModelConfig, encode, make_weights
from attnref.distribution import attention_distribution
from attnref.scores import score_location
from attnref.value import attention_value
from attnspec.typing import Array

__all__ = [
    "BottleneckConfig",
    "BottleneckResult",
    "bottleneck",
    "capacity_bound",
    "position_r2",
]

DEFAULT_LENGTHS = (1, 2, 3, 4, 6, 8, 10, 15, 20, 30, 40)
"""The sentence lengths of the tutorial's figure."""


@dataclass(frozen=True)
class BottleneckConfig:
    """The data of the experiment; the model's sizes and seed come from :class:`ModelConfig`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The encoder: the weights of :func:`attnref.demo.seq2seq.make_weights` for this config."""
    train: int = 2000
    """Sentences the read-outs are fitted on."""
    test: int = 1000
    """Other sentences they are scored on."""
    sharpness: float = 10.0
    """:math:`\\beta`, the location score of the aligned word (all others score 0)."""

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2; got {getattr(self, name)}")
        if not self.sharpness >= 0:
            raise ValueError(f"sharpness must be non-negative; got {self.sharpness}")


@dataclass(frozen=True)
class BottleneckResult:
    """Mean :math:`R^2` of the source reconstructed from each memory, per sentence length."""

    lengths: tuple[int, ...]
    """The sentence lengths ``N``."""
    fixed_state: tuple[float, ...]
    """Mean :math:`R^2` from the encoder's last state :math:`h_N`, per length."""
    attention: tuple[float, ...]
    """Mean :math:`R^2` from the attention contexts :math:`a_1 .. a_N`, per length."""
    bound: tuple[float, ...]
    """:func:`capacity_bound` of the fixed state, per length."""


def capacity_bound(length: int, /, *, config: ModelConfig = ModelConfig()) -> float:  # noqa: B008
    r"""The bound :math:`\min(1, d_h/(N d_{in}))` on the mean :math:`R^2` of a read-out of h_N.

    The read-out's predictions of the :math:`N d_{in}` unit-variance source
    numbers span at most :math:`d_h` directions, and explain at most all the
    variance of each, so their explained variances add up to at most :math:`d_h`.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1; got {length}")
    return min(1.0, config.hidden_size / (length * config.input_size))


def _sentences(count: int, length: int, config: BottleneckConfig, split: int) -> Array:
    """``[count, N, d_in]`` standard normal source words, seeded by the split and the length."""
    rng = np.random.default_rng([config.model.seed, length, split])
    return rng.standard_normal((count, length, config.model.input_size))


def _contexts(states: Array, sharpness: float) -> Array:
    """``[..., N, d_h]`` attention contexts, step ``t`` aligned with word ``t`` (location score)."""
    n = states.shape[-2]
    queries = np.eye(n)  # [N, N]: decoder state s_t is the one-hot code of step t
    W_a = sharpness * np.eye(n)  # [Tk, d_q] = [N, N]
    scores = score_location(queries, W_a)  # [N, N]
    weights = attention_distribution(scores)  # [N, N]
    return attention_value(weights, states)  # [..., N, d_h]


def _fit(features: Array, targets: Array) -> Array:
    """Least-squares read-out ``[d + 1, m]`` from ``[n, d]`` features (and a bias) to ``[n, m]``."""
    design = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)  # [n, d + 1]
    readout: Array = np.linalg.lstsq(design, targets, rcond=None)[0]  # [d + 1, m]
    return readout


def _predict(readout: Array, features: Array) -> Array:
    design = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)  # [n, d + 1]
    prediction: Array = design @ readout  # [n, m]
    return prediction


def _r2(truth: Array, prediction: Array) -> Array:
    """``[m]`` coefficient of determination of each column."""
    residual = np.sum((truth - prediction) ** 2, axis=0)  # [m]
    spread = np.sum((truth - truth.mean(axis=0)) ** 2, axis=0)  # [m]
    r2: Array = 1.0 - residual / spread
    return r2


def position_r2(
    length: int,
    /,
    *,
    attention: bool,
    config: BottleneckConfig = BottleneckConfig(),
) -> Array:
    """``[N]`` mean :math:`R^2` of each source word ``x_1 .. x_N`` (0-based), read from one memory.

    ``attention=False`` reads every word from :math:`h_N`; ``attention=True``
    reads word ``t`` from the context :math:`a_t` of the step aligned with it.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1; got {length}")
    weights = make_weights(config.model)
    d_in = config.model.input_size
    train = _sentences(config.train, length, config, split=0)  # [n, N, d_in]
    test = _sentences(config.test, length, config, split=1)  # [m, N, d_in]
    train_states = encode(train, weights)  # [n, N, d_h]
    test_states = encode(test, weights)  # [m, N, d_h]
    if not attention:
        readout = _fit(train_states[:, -1, :], train.reshape(config.train, length * d_in))
        predicted = _predict(readout, test_states[:, -1, :])  # [m, N d_in]
        r2 = _r2(test.reshape(config.test, length * d_in), predicted)  # [N d_in]
        per_word: Array = r2.reshape(length, d_in).mean(axis=-1)  # [N]
        return per_word
    d_h = weights.W_hh.shape[0]
    train_contexts = _contexts(train_states, config.sharpness)  # [n, N, d_h]
    test_contexts = _contexts(test_states, config.sharpness)  # [m, N, d_h]
    # Note: one read-out for every step, fitted on all (context, word) pairs of the sentences.
    readout = _fit(train_contexts.reshape(-1, d_h), train.reshape(-1, d_in))
    predicted = _predict(readout, test_contexts.reshape(-1, d_h))  # [m N, d_in]
    truth = test.reshape(-1, d_in)  # [m N, d_in]
    residual = ((truth - predicted) ** 2).reshape(config.test, length, d_in).sum(axis=0)
    spread = ((truth - truth.mean(axis=0)) ** 2).reshape(config.test, length, d_in).sum(axis=0)
    per_word = (1.0 - residual / spread).mean(axis=-1)  # [N]
    return per_word


def bottleneck(
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    /,
    *,
    config: BottleneckConfig = BottleneckConfig(),
) -> BottleneckResult:
    """Mean :math:`R^2` of the reconstructed source from :math:`h_N` and from the contexts.

    Parameters
    ----------
    lengths
        The sentence lengths ``N >= 1``.
    config
        The encoder, the numbers of sentences and the sharpness of the alignment.

    Returns
    -------
    BottleneckResult
        For each length, the mean over the source words of :func:`position_r2`
        for both memories, and the :func:`capacity_bound` of the fixed state.
    """
    lengths = tuple(lengths)
    if not lengths:
        raise ValueError("lengths must name at least one sentence length; got none")
    fixed = tuple(float(position_r2(n, attention=False, config=config).mean()) for n in lengths)
    attended = tuple(float(position_r2(n, attention=True, config=config).mean()) for n in lengths)
    bound = tuple(capacity_bound(n, config=config.model) for n in lengths)
    return BottleneckResult(lengths, fixed, attended, bound)
