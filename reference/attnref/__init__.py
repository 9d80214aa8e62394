"""attnref: the executable reference of :mod:`attnspec`, in plain NumPy.

One function per spec stub, with the same name and signature. The reference
computes in the promoted dtype of its inputs (float64 for float64 data),
accepts complex inputs for complex-step differentiation, and enforces every
rule of :mod:`attnspec.general`. The PyTorch twin is :mod:`attnref.torch`.

>>> import numpy as np
>>> import attnref
>>> scores = np.array([[2.0, 1.0, 0.0]])
>>> attnref.attention_distribution(scores, mask=np.array([True, True, False])).round(4)
array([[0.7311, 0.2689, 0.    ]])
"""

from __future__ import annotations

from attnref.composite import attention, scaled_dot_product_attention
from attnref.distribution import (
    attention_distribution,
    local_m_distribution,
    local_p_distribution,
    local_p_position,
    log_sum_exp,
)
from attnref.output import attentional_hidden_state, output_distribution
from attnref.scores import (
    score_additive,
    score_concat,
    score_dot,
    score_general,
    score_location,
    score_scaled_dot,
)
from attnref.value import attention_value, concatenate_context

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
