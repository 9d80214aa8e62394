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
from attnspec.typing import Array, CausalAlignment, Mask, Scale, ScoreKind, Window

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
    Clause(
        "sdpa.softcap",
        r"With ``softcap`` :math:`c`, every scaled score :math:`s_{ij}` becomes "
        r":math:`c \tanh(s_{ij} / c)` before any mask applies: the additive mask is added to "
        r"the capped score, so a key it disallows keeps :math:`-\infty`, and the boolean, "
        "causal, window and key-length restrictions exclude exactly the keys they exclude "
        r"without a cap. (Capping after the mask would turn :math:`-\infty` into :math:`-c` "
        "and give disallowed keys weight.) ``None`` applies no cap.",
    ),
    Clause(
        "sdpa.query-offset",
        r"Query row ``i`` sits at key-axis position :math:`i' = i + o`, from which the causal "
        "mask and the window are measured. The offset :math:`o` is ``query_offset`` when it "
        "is given (an ``int``, or one per item of the first batch axis); otherwise it is "
        r":math:`0` for ``causal_alignment='top_left'`` and :math:`T_k - T_q` for "
        r"``'bottom_right'``, where :math:`L_b - T_q` replaces :math:`T_k - T_q` when "
        "``key_lengths`` are given, so each batch item's last query sees its own last valid "
        r"key. With ``is_causal=True`` key ``j`` is allowed exactly when :math:`j \le i'`.",
    ),
    Clause(
        "sdpa.window",
        "With ``window=(left, right)``, key ``j`` is allowed for query ``i`` exactly when "
        r":math:`i' - \text{left} \le j \le i' + \text{right}`; a side that is ``None`` "
        "is unbounded. Sliding-window causal attention is ``is_causal=True, "
        "window=(w, 0)``; local-m attention (:func:`local_m_distribution`) is the window "
        "``(D, D)`` at offset 0 without the causal flag.",
    ),
    Clause(
        "sdpa.key-lengths",
        r"With ``key_lengths`` :math:`L` (``[B]`` integers in :math:`[0, T_k]`, for the first "
        r"batch axis and broadcast over the others), key ``j`` is allowed for batch item "
        r"``b`` only when :math:`j < L_b`: padding, variable-length batches and the unused "
        "tail of a static key/value cache. A row left with no allowed key follows "
        "``distribution.fully-masked-row``.",
    ),
    Clause(
        "sdpa.restrictions-combine",
        "The mask, the causal flag, the window and the key lengths restrict together: a key "
        "is allowed only when every one given allows it.",
    ),
    Clause(
        "sdpa.sinks",
        r"With ``sinks`` :math:`\sigma` (one real logit per query head, the heads axis "
        r"``-3``), the softmax denominator of every row of head ``h`` gains "
        r":math:`\exp(\sigma_h)`: :math:`\alpha_{ij} = \exp(t_{ij} + m_{ij}) / "
        r"(\exp(\sigma_h) + \sum_{k \text{ allowed}} \exp(t_{ik} + m_{ik}))`. The sink is "
        "not scaled, capped or masked and attends to no value, so a row's weights sum to "
        r":math:`1 - \exp(\sigma_h - \ell_i)` and a row with no allowed key has zero "
        r"weights and a zero context. :math:`\sigma_h \to -\infty` is no sink; "
        r":math:`\sigma_h = 0` is the softmax plus one in the denominator. The sinks take "
        "part in the result dtype like query, key and value.",
    ),
    Clause(
        "sdpa.log-sum-exp",
        "With ``return_lse=True`` the result is ``(context, weights, lse)``, where ``lse`` "
        "(``[..., Tq]``, with the query's heads) is the log-normalizer of the weights: "
        "``log_sum_exp(t, mask=combined_mask)`` of the capped scaled scores ``t``, joined "
        r"with the sink by :math:`\log(\exp \ell + \exp \sigma_h)` when ``sinks`` are "
        r"given; :math:`-\infty` for a row with no allowed key and no sink. "
        "FlashAttention's ``softmax_lse`` and ``flex_attention``'s ``return_lse`` return it.",
    ),
    Clause(
        "sdpa.arguments",
        "``softcap`` is a finite real number greater than 0; ``window`` a pair of ``int`` "
        "at least 0 or ``None``; ``query_offset`` an ``int`` or an integer array ``[B]``; "
        "``key_lengths`` an integer array ``[B]`` with entries in :math:`[0, T_k]`, where "
        "``B`` is the first batch axis of query, key and value; ``query_offset`` together "
        "with ``causal_alignment='bottom_right'`` names two offsets; ``sinks`` a floating "
        "array ``[H]`` with ``H`` the query's heads ``query.shape[-3]`` (NaN or an infinity "
        "in it raises :class:`~attnspec.errors.NonFiniteInputError`, as in any input that is "
        "read); ``return_lse`` a ``bool``. Anything else raises "
        ":class:`~attnspec.errors.ArgumentError`, :class:`~attnspec.errors.DTypeError` "
        "or :class:`~attnspec.errors.ShapeError`.",
        "raises",
        scope="reference",
        scope_reason=REFERENCE_ERRORS,
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
    softcap: float | None = None,
    window: Window | None = None,
    query_offset: int | Array | None = None,
    key_lengths: Array | None = None,
    sinks: Array | None = None,
    return_lse: bool = False,
) -> tuple[Array, Array] | tuple[Array, Array, Array]:
    r"""Scaled dot-product attention over query, key and value.

    .. math::

        \operatorname{Attention}(Q, K, V) =
        \operatorname{softmax}\!\left(\lambda Q K^\top + M\right) V,
        \qquad \lambda = 1/\sqrt{d}

    Vaswani et al. (2017), eq. (1), with an additive or boolean mask
    :math:`M`, causal masks in both alignments, and grouped query heads
    (Ainslie et al. 2023); the restrictions of current kernels: a score cap
    (Gemma Team et al. 2024, Gemma 2), sliding windows (Beltagy et al. 2020,
    Longformer), key lengths for padded batches and key/value caches, and an
    explicit query offset for a cache whose new keys outnumber the new
    queries; sink logits that let a row attend to nothing (Xiao et al. 2024;
    OpenAI 2025, gpt-oss); and each row's log-sum-exp (Dao et al. 2022). A
    key/value cache is keys and values concatenated, with
    ``causal_alignment='bottom_right'`` or the past length as
    ``query_offset``.

    Dropout is not part of the spec: it draws random numbers, so its result
    is a distribution rather than a value that two implementations could be
    compared on, and it exists only in training; this is the inference-time
    function, which a dropout implementation equals at rate 0.

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
        ``'top_left'`` or ``'bottom_right'``: where query row 0 sits on the key
        axis, for the causal mask and the window (``sdpa.query-offset``);
        matters only when ``Tq != Tk`` or with ``key_lengths``.
    scale
        Finite real factor; ``None`` means :math:`1/\sqrt{d}`.
    enable_gqa
        Treat axis ``-3`` as heads and share each key/value head among
        ``Hq / Hk`` consecutive query heads.
    softcap
        Cap ``c > 0``: scores become ``c * tanh(scores / c)`` before any
        mask; ``None`` for none.
    window
        ``(left, right)`` keys before and after each query's key-axis
        position; ``None`` on a side is unbounded, ``None`` for no window.
    query_offset
        Key-axis position of query row 0, an ``int`` or ``[B]`` integers;
        ``None`` takes it from ``causal_alignment``.
    key_lengths
        ``[B]`` integers: keys ``j >= key_lengths[b]`` are disallowed for
        batch item ``b``.
    sinks
        ``[H]`` sink logits, one per query head (axis ``-3``); ``None`` for
        none.
    return_lse
        Also return each row's log-sum-exp (``sdpa.log-sum-exp``).

    Returns
    -------
    tuple of Array
        ``context`` ``[..., Tq, d_v]`` and ``weights`` ``[..., Tq, Tk]``
        (with the query's heads); with ``return_lse``, also ``lse``
        ``[..., Tq]``.

    Raises
    ------
    ShapeError
        If ``d`` differs between query and key, ``Tk`` differs between key
        and value, a shape does not broadcast, or the heads do not group.
    DTypeError
        If an array is not floating, the mask neither boolean nor real
        floating, or ``is_causal``/``enable_gqa``/``return_lse`` not a
        ``bool``.
    ArgumentError
        If ``scale`` is not finite, ``causal_alignment`` is unknown, or
        ``softcap``, ``window``, ``query_offset``, ``key_lengths`` or
        ``sinks`` is out of range (``sdpa.arguments``).
    NonFiniteInputError
        If a read position holds NaN or an infinity.
    """
