"""attnref.torch: the PyTorch twin of the NumPy reference :mod:`attnref`.

One function per spec stub, with the same name, parameters, defaults and
exceptions (the argument checks are :mod:`attnref._checks`, shared with the
NumPy side), computed with the same steps on ``torch.Tensor`` arguments of
any device. Every function is differentiable by autograd with respect to
its floating inputs, and positions that are not read get exactly zero,
finite gradients (``input.unread-gradient``). Unlike :mod:`attnref`, the
twin accepts real floating tensors only (float16, bfloat16, float32,
float64): complex-step differentiation is the NumPy reference's job, autograd
is this one's.

>>> import torch
>>> import attnref.torch as attn
>>> scores = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
>>> attn.attention_distribution(scores, mask=torch.tensor([True, True, False]))
tensor([[0.7311, 0.2689, 0.0000]], dtype=torch.float64)
"""

from __future__ import annotations

from attnref.torch.composite import attention, scaled_dot_product_attention
from attnref.torch.distribution import (
    attention_distribution,
    local_m_distribution,
    local_p_distribution,
    local_p_position,
    log_sum_exp,
)
from attnref.torch.output import attentional_hidden_state, output_distribution
from attnref.torch.scores import (
    score_additive,
    score_concat,
    score_dot,
    score_general,
    score_location,
    score_scaled_dot,
)
from attnref.torch.value import attention_value, concatenate_context

__all__ = [
    "attention",
    "attention_distribution",
    "attention_value",
    "attentional_hidden_state",
    "concatenate_context",
    "local_m_distribution",
    "local_p_distribution",
    "local_p_position",
    "log_sum_exp",
    "output_distribution",
    "scaled_dot_product_attention",
    "score_additive",
    "score_concat",
    "score_dot",
    "score_general",
    "score_location",
    "score_scaled_dot",
]
