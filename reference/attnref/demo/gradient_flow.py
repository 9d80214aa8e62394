r"""How far back a decoder output's gradient reaches, with and without attention.

The tutorial's second claim, measured on the toy model of
:mod:`attnref.demo.seq2seq`: the norm of the gradient of one decoder output
with respect to each source word, by complex step, confirmed by PyTorch
autograd of :mod:`attnref.demo.seq2seq_torch` when torch is installed.

>>> flow = gradient_flow(10, attention=True, confirm=False)
>>> len(flow.norms), flow.norms[0] > 0
(10, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attnref.demo.seq2seq import ModelConfig, source_gradient
from attnref.testing.gradcheck import gradient_error

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
    """

    source_length: int
    attention: bool
    norms: tuple[float, ...]
    autograd_norms: tuple[float, ...] | None = field(default=None)
    disagreement: float | None = field(default=None)

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

    Returns
    -------
    GradientFlow
        ``norms[j]`` for each source position ``j`` (0 = most distant).
    """
    gradient = source_gradient(
        source_length, attention=attention, config=config, sample=sample
    )  # [N, d_in]
    norms = tuple(float(n) for n in np.sqrt(np.sum(gradient**2, axis=-1)))
    if not confirm:
        return GradientFlow(source_length, attention, norms)
    # Note: imported here because torch is an optional dependency.
    from attnref.demo import seq2seq_torch

    autograd = seq2seq_torch.source_gradient(
        source_length, attention=attention, config=config, sample=sample
    )
    disagreement = max(gradient_error(gradient[j], autograd[j]) for j in range(source_length))
    autograd_norms = tuple(float(n) for n in np.sqrt(np.sum(autograd**2, axis=-1)))
    return GradientFlow(source_length, attention, norms, autograd_norms, disagreement)
