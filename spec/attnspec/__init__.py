"""attnspec: the normative specification of the attention mechanism.

Each public function here is a typed, body-less stub whose docstring is the
normative text: the formula with its paper and equation, the shapes, the
errors, and the clauses with their stable IDs (see :mod:`attnspec.clauses`).
Calling a stub raises :class:`~attnspec.errors.SpecificationStubError`; the
executable reference is :mod:`attnref` (NumPy) and :mod:`attnref.torch`.

>>> import attnspec
>>> attnspec.FUNCTIONS[:2]
('score_dot', 'score_scaled_dot')
>>> attnspec.clauses.get("sdpa.causal-top-left").function
'scaled_dot_product_attention'
"""

from __future__ import annotations

from attnspec import clauses, general
from attnspec.composite import attention, scaled_dot_product_attention
from attnspec.distribution import (
    attention_distribution,
    local_m_distribution,
    local_p_distribution,
    local_p_position,
    log_sum_exp,
)
from attnspec.errors import (
    ArgumentError,
    AttnSpecError,
    DTypeError,
    NonFiniteInputError,
    ShapeError,
    SpecificationStubError,
)
from attnspec.output import attentional_hidden_state, output_distribution
from attnspec.scores import (
    score_additive,
    score_concat,
    score_dot,
    score_general,
    score_location,
    score_scaled_dot,
)
from attnspec.value import attention_value, concatenate_context

__all__ = [
    "FUNCTIONS",
    "ArgumentError",
    "AttnSpecError",
    "DTypeError",
    "NonFiniteInputError",
    "ShapeError",
    "SpecificationStubError",
    "attention",
    "attention_distribution",
    "attention_value",
    "attentional_hidden_state",
    "clauses",
    "concatenate_context",
    "general",
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

FUNCTIONS: tuple[str, ...] = (
    "score_dot",
    "score_scaled_dot",
    "score_general",
    "score_concat",
    "score_additive",
    "score_location",
    "attention_distribution",
    "log_sum_exp",
    "local_m_distribution",
    "local_p_position",
    "local_p_distribution",
    "attention_value",
    "concatenate_context",
    "attentional_hidden_state",
    "output_distribution",
    "attention",
    "scaled_dot_product_attention",
)
"""Names of the specified functions, in the order of the attention steps."""
