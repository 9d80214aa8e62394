# mypy: disable-error-code="empty-body"
# (The stubs are body-less by design: their docstrings are the specification.)
"""Steps 5 and 6: the attentional hidden state and the output distribution.

After the attention value is concatenated with the decoder state, a tanh
layer forms the attentional hidden state and a softmax layer turns it into a
distribution over the target vocabulary (Luong et al. 2015, eqs. 5 and 6).
"""

from __future__ import annotations

from attnspec.clauses import Clause, specifies
from attnspec.typing import Array

__all__ = ["attentional_hidden_state", "output_distribution"]


@specifies(
    Clause(
        "hidden.tanh",
        r"The result is :math:`\tanh(W_c [a_i; s_i] + b_c)` with the context first, "
        "``W_c`` of shape ``[d_h, d_v + d_q]``, and :math:`b_c = 0` when omitted; every "
        "entry lies in :math:`[-1, 1]`.",
    ),
)
def attentional_hidden_state(
    context: Array, query: Array, W_c: Array, b_c: Array | None = None, /
) -> Array:
    r"""Attentional hidden state: a tanh layer on the concatenated context and state.

    .. math::

        \tilde{s}_i = \tanh\!\left(W_c \begin{bmatrix} a_i \\ s_i \end{bmatrix} + b_c\right)

    Luong et al. (2015), eq. (5) (there without a bias; :math:`b_c`
    defaults to zero).

    Parameters
    ----------
    context
        ``[..., Tq, d_v]`` attention values :math:`a_i`.
    query
        ``[..., Tq, d_q]`` decoder states :math:`s_i`.
    W_c
        ``[d_h, d_v + d_q]`` weight matrix.
    b_c
        ``[d_h]`` bias, or ``None`` for zero.

    Returns
    -------
    Array
        ``[..., Tq, d_h]`` attentional states :math:`\tilde{s}_i`.

    Raises
    ------
    ShapeError
        If ``W_c`` is not ``[d_h, d_v + d_q]``, ``b_c`` not ``[d_h]`` or the
        ``Tq`` axes differ.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If an argument holds NaN or an infinity.
    """


@specifies(
    Clause(
        "output.softmax",
        r"The result is :math:`\operatorname{softmax}(W_y \tilde{s}_i + b_y)` over the "
        "vocabulary axis, with ``W_y`` of shape ``[V, d_h]`` and :math:`b_y = 0` when "
        "omitted; each row is non-negative and sums to one, and it is computed stably as "
        ":func:`attention_distribution` without a mask.",
    ),
)
def output_distribution(attentional_state: Array, W_y: Array, b_y: Array | None = None, /) -> Array:
    r"""Output distribution: a softmax layer over the target vocabulary.

    .. math::

        \hat{y}_i = \operatorname{softmax}\!\left(W_y \tilde{s}_i + b_y\right)

    Luong et al. (2015), eq. (6), where the matrix is called :math:`W_s`.

    Parameters
    ----------
    attentional_state
        ``[..., Tq, d_h]`` attentional states :math:`\tilde{s}_i`.
    W_y
        ``[V, d_h]`` output weights, one row per vocabulary entry.
    b_y
        ``[V]`` bias, or ``None`` for zero.

    Returns
    -------
    Array
        ``[..., Tq, V]`` probabilities.

    Raises
    ------
    ShapeError
        If ``W_y`` is not ``[V, d_h]`` with ``V >= 1`` or ``b_y`` not ``[V]``.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If an argument holds NaN or an infinity.
    """
