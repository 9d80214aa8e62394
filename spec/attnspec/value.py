# mypy: disable-error-code="empty-body"
# (The stubs are body-less by design: their docstrings are the specification.)
"""Steps 3 and 4: the attention value (context vector) and its concatenation with the query.

The attention value is the weighted sum of the values (Bahdanau et al. 2015,
eq. 5); the decoder then reads it next to its own state, context first
(Luong et al. 2015, eq. 5).
"""

from __future__ import annotations

from attnspec.clauses import Clause, specifies
from attnspec.typing import Array

__all__ = ["attention_value", "concatenate_context"]


@specifies(
    Clause(
        "value.weighted-sum",
        r"Row ``i`` of the result is :math:`a_i = \sum_j \alpha_{ij} v_j`.",
    ),
    Clause(
        "value.convex-hull",
        "When every row of the weights is a probability distribution, each context row lies "
        "in the convex hull of the value rows: every coordinate is between that coordinate's "
        "minimum and maximum over the values.",
    ),
    Clause(
        "value.linear",
        "The result is linear in the values: for fixed weights, "
        r":math:`a(\beta V_1 + \gamma V_2) = \beta a(V_1) + \gamma a(V_2)` (to rounding).",
    ),
    Clause(
        "value.zero-weight-unread",
        "A value row whose weight is exactly zero in every query row of its batch element is "
        "not read: NaN or infinities there raise nothing and leave the result unchanged, and "
        "gradients are those of the function with that row taken as zero (so the gradient "
        "with respect to such an all-zero weight column is zero).",
        "special-case",
        level="recommended",
        reason="Like ``input.unread-nonfinite`` it hardens against NaN in rows nothing reads: "
        "with finite values ``value.weighted-sum`` already fixes the result, and the plain "
        "``weights @ values`` every library computes differs only in the gradient of the "
        "zero weights, which the softmax's zero derivative there keeps out of every "
        "composite's gradient.",
    ),
)
def attention_value(weights: Array, values: Array, /) -> Array:
    r"""Attention value (context vector): the weights times the values.

    .. math::

        a_i = \sum_{j} \alpha_{ij}\, v_j

    Bahdanau et al. (2015), eq. (5); Luong et al. (2015), section 3
    (context vector :math:`c_t`). In seq2seq the values are the encoder
    states themselves.

    Parameters
    ----------
    weights
        ``[..., Tq, Tk]`` weights :math:`\alpha_{ij}`.
    values
        ``[..., Tk, d_v]`` values :math:`v_j`.

    Returns
    -------
    Array
        ``[..., Tq, d_v]`` context rows :math:`a_i`.

    Raises
    ------
    ShapeError
        If ``values.shape[-2] != weights.shape[-1]`` or batch dimensions do
        not broadcast.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If a weight, or a value row that is read, holds NaN or an infinity.
    """


@specifies(
    Clause(
        "concat.context-first",
        "The result is :math:`[a_i; s_i]`: the context's ``d_v`` features first, then the "
        "query's ``d_q`` features, batch dimensions broadcast.",
    ),
)
def concatenate_context(context: Array, query: Array, /) -> Array:
    r"""Concatenate the attention value with the decoder state, context first.

    .. math::

        v_i = \begin{bmatrix} a_i \\ s_i \end{bmatrix}

    Luong et al. (2015), eq. (5), the input of the attentional layer.
    (TensorFlow Addons concatenates the other way round; the order matters
    for the weights :math:`W_c` that follow.)

    Parameters
    ----------
    context
        ``[..., Tq, d_v]`` attention values :math:`a_i`.
    query
        ``[..., Tq, d_q]`` decoder states :math:`s_i`.

    Returns
    -------
    Array
        ``[..., Tq, d_v + d_q]``.

    Raises
    ------
    ShapeError
        If the ``Tq`` axes differ or batch dimensions do not broadcast.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If an argument holds NaN or an infinity.
    """
