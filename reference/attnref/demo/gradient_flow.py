r"""How far back a decoder output's gradient reaches, with and without attention.

The tutorial's second claim, measured on the toy model of
:mod:`attnref.demo.seq2seq`: the norm of the gradient of one decoder output
with respect to each source word, by complex step, confirmed by PyTorch
autograd of :mod:`attnref.demo.seq2seq_torch` when torch is installed, and
set beside plain central differences, which agree wherever the gradient is
above their rounding noise and see nothing below it.

>>> flow = gradient_flow(10, attention=True, confirm=False)
>>> len(flow.norms), flow.norms[0] > 0
(10, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from attnref.demo.seq2seq import (
    ModelConfig,
    central_difference_gradient,
    central_difference_noise,
    source_gradient,
)
from attnref.testing.gradcheck import gradient_error
from attnspec.typing import Array

__all__ = ["GradientFlow", "gradient_flow"]


@dataclass(frozen=True)
class GradientFlow:
    """How strongly one decoder output depends on each source word.

    Attributes
    ----------
    source_length
        ``N``.
    attention
        Whether the decoder used attention.
    norms
        ``norms[j]`` is :math:`\\|\\partial \\hat y_k / \\partial x_{j+1}\\|_2`
        (0-based ``j``; ``norms[0]`` is the most distant word), by complex step.
    autograd_norms
        The same by PyTorch autograd of :mod:`attnref.demo.seq2seq_torch`, or
        ``None`` when not confirmed.
    disagreement
        The largest :func:`~attnref.testing.gradcheck.gradient_error` over the
        positions between the two gradients, or ``None``.
    difference_norms
        The same by central differences
        (:func:`~attnref.demo.seq2seq.central_difference_gradient`), or ``None``
        when not asked for.
    difference_noise
        The rounding noise of one word's central-difference gradient
        (:func:`~attnref.demo.seq2seq.central_difference_noise`), or ``None``:
        a ``difference_norms`` entry near or below it measures nothing.
    """

    source_length: int
    attention: bool
    norms: tuple[float, ...]
    autograd_norms: tuple[float, ...] | None = field(default=None)
    disagreement: float | None = field(default=None)
    difference_norms: tuple[float, ...] | None = field(default=None)
    difference_noise: float | None = field(default=None)

    @property
    def most_distant(self) -> float:
        """The gradient norm at the first source word, the one farthest from the decoder."""
        return self.norms[0]


def gradient_flow(
    source_length: int,
    /,
    *,
    attention: bool,
    config: ModelConfig = ModelConfig(),  # noqa: B008
    sample: int = 0,
    confirm: bool = True,
    differences: bool = False,
) -> GradientFlow:
    """Gradient norm of one decoder output with respect to each source word.

    Parameters
    ----------
    source_length
        ``N >= 1``, the number of source words.
    attention
        Decode with Luong dot attention over the encoder states, or from the
        last encoder state alone.
    config
        Sizes, seed, recurrent norm and target word of the toy model.
    sample
        Which random source of length ``N`` (``0, 1, ...``) to differentiate at.
    confirm
        Also compute the gradient with PyTorch autograd
        (:mod:`attnref.demo.seq2seq_torch`, needs the ``torch`` extra) and record
        the disagreement.
    differences
        Also compute the gradient by central differences, and their rounding
        noise.

    Returns
    -------
    GradientFlow
        ``norms[j]`` for each source position ``j`` (0 = most distant).
    """
    gradient = source_gradient(
        source_length, attention=attention, config=config, sample=sample
    )  # [N, d_in]
    norms = _norms(gradient)
    flow = GradientFlow(source_length, attention, norms)
    if differences:
        flow = replace(
            flow,
            difference_norms=_norms(
                central_difference_gradient(
                    source_length, attention=attention, config=config, sample=sample
                )
            ),
            difference_noise=central_difference_noise(
                source_length, attention=attention, config=config, sample=sample
            ),
        )
    if not confirm:
        return flow
    # Note: imported here because torch is an optional dependency.
    from attnref.demo import seq2seq_torch

    autograd = seq2seq_torch.source_gradient(
        source_length, attention=attention, config=config, sample=sample
    )
    disagreement = max(gradient_error(gradient[j], autograd[j]) for j in range(source_length))
    return replace(flow, autograd_norms=_norms(autograd), disagreement=disagreement)


def _norms(gradient: Array, /) -> tuple[float, ...]:
    """The norm of each word's row of an ``[N, d_in]`` gradient."""
    return tuple(float(n) for n in np.sqrt(np.sum(gradient**2, axis=-1)))
