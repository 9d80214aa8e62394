# mypy: disable-error-code="empty-body"
# (The stubs are body-less by design: their docstrings are the specification.)
"""Composites: the whole attention step from queries, keys and values.

:func:`attention` is the seq2seq form with a choice of score function;
:func:`scaled_dot_product_attention` is the query/key/value form of
Vaswani et al. (2017) with causal masks and grouped query heads. Both
return the context and the weights, so every intermediate the spec governs
can be checked.
"""

from __future__ import annotations

from attnspec.clauses import REFERENCE_ERRORS, Clause, specifies
from attnspec.typing import Array, CausalAlignment, Mask, Scale, ScoreKind

__all__ = ["attention", "scaled_dot_product_attention"]


@specifies(
    Clause(
        "attention.composition",
        "The result is ``(context, weights)`` with ``weights = attention_distribution("
        "score_<kind>(query, keys, ...), mask=mask)`` and ``context = attention_value("
        "weights, values)``. Both results have the batch shape broadcast over every "
        "sequence argument and the mask.",
    ),
    Clause(
        "attention.score-parameters",
        "Each score kind takes exactly its own parameters: ``dot`` none; ``scaled_dot`` "
        "``scale`` (optional); ``general`` ``W_a``; ``concat`` ``W_a`` and ``v_a``; "
        "``additive`` ``W_q``, ``W_k`` and ``v_a``; ``location`` ``W_a``. A missing or an "
        "extra parameter, or an unknown kind, raises :class:`~attnspec.errors.ArgumentError`.",
        "raises",
        scope="reference",
        scope_reason=(
            f"{REFERENCE_ERRORS} Which keyword carries which score parameter is that API as "
            "well: a third-party implementation of one score form declares it as a "
            "``ScoreForm`` and is given exactly its parameters."
        ),
    ),
)
def attention(
    query: Array,
    keys: Array,
    values: Array,
    /,
    *,
    score: ScoreKind = "dot",
    mask: Mask | None = None,
    scale: Scale | None = None,
    W_a: Array | None = None,
    W_q: Array | None = None,
    W_k: Array | None = None,
    v_a: Array | None = None,
) -> tuple[Array, Array]:
    r"""Attention with a choice of score: scores, distribution and attention value.

    .. math::

        a_i = \sum_j \operatorname{softmax}_j(e_{ij})\, v_j, \qquad
        e_{ij} = \operatorname{score}(s_i, h_j)

    Luong et al. (2015), eqs. (7)-(8); Bahdanau et al. (2015), eqs. (5)-(6).
    In classic seq2seq ``keys`` and ``values`` are both the encoder states.

    Parameters
    ----------
    query
        ``[..., Tq, d_q]`` decoder states.
    keys
        ``[..., Tk, d_k]`` encoder states to score against.
    values
        ``[..., Tk, d_v]`` encoder states to average.
    score
        Score kind, see :data:`attnspec.typing.ScoreKind`.
    mask
        Boolean (``True`` = may attend) or additive mask broadcastable to
        ``[..., Tq, Tk]``.
    scale
        Factor of the ``scaled_dot`` score; ``None`` means :math:`1/\sqrt{d_k}`.
    W_a, W_q, W_k, v_a
        Parameters of the chosen score, shaped as in its score function.

    Returns
    -------
    tuple of Array
        ``context`` ``[..., Tq, d_v]`` and ``weights`` ``[..., Tq, Tk]``.

    Raises
    ------
    ArgumentError
        If ``score`` is unknown, or a parameter is missing or does not
        belong to the chosen score.
    ShapeError, DTypeError, NonFiniteInputError
        As the step functions.
    """


@specifies(
    Clause(
        "sdpa.formula",
        r"The result is ``(context, weights)`` with "
        r"``weights = attention_distribution(scale * query @ swapaxes(key, -1, -2), "
        "mask=combined_mask)`` and ``context = weights @ value``, where the combined mask "
        "joins ``mask`` and the causal mask. Both results have the batch shape broadcast "
        "over query, key, value and the mask.",
    ),
    Clause(
        "sdpa.default-scale",
        r"When ``scale`` is ``None`` the scale is :math:`1/\sqrt{d}` with ``d`` the last "
        "dimension of ``query``.",
        "special-case",
    ),
    Clause(
        "sdpa.causal-top-left",
        "With ``is_causal=True`` and ``causal_alignment='top_left'``, query ``i`` may attend "
        r"to key ``j`` exactly when :math:`j \le i` (PyTorch, JAX, Keras and ONNX without a "
        "cache).",
    ),
    Clause(
        "sdpa.causal-bottom-right",
        "With ``is_causal=True`` and ``causal_alignment='bottom_right'``, query ``i`` may "
        r"attend to key ``j`` exactly when :math:`j \le i + T_k - T_q` (FlashAttention 2.1 "
        "and later, MLX): the last query sees every key. Rows with no allowed key follow "
        "``distribution.fully-masked-row``.",
    ),
    Clause(
        "sdpa.causal-with-mask",
        "When both ``mask`` and ``is_causal`` are given, a key is allowed only if both allow "
        "it (an additive mask keeps its finite entries at the causally allowed positions).",
    ),
    Clause(
        "sdpa.grouped-query-heads",
        "With ``enable_gqa=True`` the heads axis is ``-3``; ``key`` and ``value`` have "
        r":math:`H_k` heads, ``query`` :math:`H_q = g H_k`, and query head ``h`` uses key "
        r"and value head :math:`\lfloor h / g \rfloor` (repeated interleaved, as "
        "``repeat_interleave``, not tiled).",
    ),
    Clause(
        "sdpa.gqa-heads-divisible",
        r"With ``enable_gqa=True``, a rank below 3, or :math:`H_q` not a multiple of "
        r":math:`H_k`, or key and value head counts that differ, raises "
        ":class:`~attnspec.errors.ShapeError`.",
        "raises",
        scope="reference",
        scope_reason=REFERENCE_ERRORS,
    ),
    Clause(
        "sdpa.causal-alignment-known",
        "``causal_alignment`` is ``'top_left'`` or ``'bottom_right'``; another value raises "
        ":class:`~attnspec.errors.ArgumentError` even when ``is_causal`` is ``False``.",
        "raises",
        scope="reference",
        scope_reason=(
            "``causal_alignment`` is an argument of the reference alone: a third-party kernel "
            "declares its alignment as a convention (``attnref.oracle.conventions``), and the "
            "error for an unknown value is the reference's Python API."
        ),
    ),
)
def scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    /,
    *,
    mask: Mask | None = None,
    is_causal: bool = False,
    causal_alignment: CausalAlignment = "top_left",
    scale: Scale | None = None,
    enable_gqa: bool = False,
) -> tuple[Array, Array]:
    r"""Scaled dot-product attention over query, key and value.

    .. math::

        \operatorname{Attention}(Q, K, V) =
        \operatorname{softmax}\!\left(\lambda Q K^\top + M\right) V,
        \qquad \lambda = 1/\sqrt{d}

    Vaswani et al. (2017), eq. (1), with an additive or boolean mask
    :math:`M`, causal masks in both alignments, and grouped query heads
    (Ainslie et al. 2023). Dropout is not part of the spec: this is the
    inference-time function.

    Parameters
    ----------
    query
        ``[..., Tq, d]`` queries; ``[..., Hq, Tq, d]`` with ``enable_gqa``.
    key
        ``[..., Tk, d]`` keys; ``[..., Hk, Tk, d]`` with ``enable_gqa``.
    value
        ``[..., Tk, d_v]`` values; ``[..., Hk, Tk, d_v]`` with ``enable_gqa``.
    mask
        Boolean (``True`` = may attend) or additive mask broadcastable to
        ``[..., Tq, Tk]`` (``[..., Hq, Tq, Tk]`` with ``enable_gqa``).
    is_causal
        Add the causal mask of ``causal_alignment``.
    causal_alignment
        ``'top_left'`` or ``'bottom_right'``; matters only when ``Tq != Tk``.
    scale
        Finite real factor; ``None`` means :math:`1/\sqrt{d}`.
    enable_gqa
        Treat axis ``-3`` as heads and share each key/value head among
        ``Hq / Hk`` consecutive query heads.

    Returns
    -------
    tuple of Array
        ``context`` ``[..., Tq, d_v]`` and ``weights`` ``[..., Tq, Tk]``
        (with the query's heads).

    Raises
    ------
    ShapeError
        If ``d`` differs between query and key, ``Tk`` differs between key
        and value, a shape does not broadcast, or the heads do not group.
    DTypeError
        If an array is not floating, the mask neither boolean nor real
        floating, or ``is_causal``/``enable_gqa`` not a ``bool``.
    ArgumentError
        If ``scale`` is not finite or ``causal_alignment`` is unknown.
    NonFiniteInputError
        If a read position holds NaN or an infinity.
    """
