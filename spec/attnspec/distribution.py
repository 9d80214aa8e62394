# mypy: disable-error-code="empty-body"
# (The stubs are body-less by design: their docstrings are the specification.)
"""Step 2: the attention distribution, a softmax of the scores over the keys.

Global attention (Luong et al. 2015, eq. 7; Bahdanau et al. 2015, eq. 6)
normalises over every allowed key; local attention (Luong et al. 2015,
section 3.2) normalises over a window around an aligned position ``p_i``.

Masks
    A boolean mask broadcastable to ``[..., Tq, Tk]`` holds ``True`` where
    query ``i`` *may attend* to key ``j`` (the convention of PyTorch's
    ``scaled_dot_product_attention``, ONNX and JAX; the opposite of
    ``nn.MultiheadAttention``'s ``key_padding_mask``). A floating mask is
    *additive*: it is added to the scores, and :math:`-\\infty` disallows.

Local attention, pinned
    The paper leaves four points open; the spec fixes them as follows.

    1. Normalisation: the softmax runs over the window (intersected with the
       mask) only, as the paper's :math:`\\operatorname{align}` restricted
       to the window.
    2. Gaussian: local-p multiplies the window softmax *after* normalising
       and does not renormalise (eq. 10 as printed), so local-p rows sum to
       at most 1.
    3. Position range: source positions are 0-based, ``0 .. S-1`` with
       ``S = Tk``, and :math:`p_i = (S-1)\\,\\sigma(\\cdot)`, so every
       predicted position lies on the source. The paper's factor ``S`` with
       0-based positions could put :math:`p_i` past the last word.
    4. Window bounds: :math:`p_i` stays real; the window is every integer
       ``j`` with :math:`|j - p_i| \\le D`. For local-m, :math:`p_i = i`,
       this is :math:`[i - D, i + D]` exactly as in the paper.
"""

from __future__ import annotations

from attnspec.clauses import REFERENCE_ERRORS, Clause, specifies
from attnspec.typing import Array, BoolArray, Mask

__all__ = [
    "attention_distribution",
    "local_m_distribution",
    "local_p_distribution",
    "local_p_position",
    "log_sum_exp",
]


@specifies(
    Clause(
        "distribution.softmax",
        r"For a row with at least one allowed key, "
        r":math:`\alpha_{ij} = \exp(e_{ij} + m_{ij}) / \sum_{k \text{ allowed}} "
        r"\exp(e_{ik} + m_{ik})`, where :math:`m` is the additive mask (0 for a boolean "
        "mask) and key ``j`` is allowed when the boolean mask is ``True``, or the additive "
        r"mask and the score are both greater than :math:`-\infty`.",
    ),
    Clause(
        "distribution.nonnegative",
        r"Every weight lies in :math:`[0, 1]`.",
    ),
    Clause(
        "distribution.sums-to-one",
        "Every row with at least one allowed key sums to one (to rounding).",
    ),
    Clause(
        "distribution.masked-zero",
        "The weight of a disallowed position is exactly zero.",
    ),
    Clause(
        "distribution.mask-polarity",
        "In a boolean mask ``True`` means *may attend*; an all-``True`` mask equals no mask.",
    ),
    Clause(
        "distribution.additive-mask",
        "A floating mask is added to the scores before the softmax; :math:`-\\infty` "
        "disallows, a finite entry biases, NaN or :math:`+\\infty` raises "
        ":class:`~attnspec.errors.NonFiniteInputError`.",
    ),
    Clause(
        "distribution.shift-invariant",
        "Adding the same finite constant to every score of a row leaves that row's weights "
        "unchanged (to rounding).",
    ),
    Clause(
        "distribution.stable",
        "Finite scores anywhere in the dtype's range never produce NaN or an infinity: the "
        "result is that of the softmax shifted by the row's largest allowed score.",
    ),
    Clause(
        "distribution.ties-uniform",
        "A row whose allowed scores are all equal gets the uniform weight "
        ":math:`1/n` on its :math:`n` allowed keys.",
        "special-case",
    ),
    Clause(
        "distribution.fully-masked-row",
        "A row with no allowed key gets all-zero weights (not NaN, not uniform), and "
        "therefore a zero context, as PyTorch's ``scaled_dot_product_attention`` and ONNX. "
        "Its gradient is zero.",
        "special-case",
    ),
    Clause(
        "distribution.mask-shape",
        "A mask that does not broadcast to the scores' shape raises "
        ":class:`~attnspec.errors.ShapeError`; a mask that is neither boolean nor real "
        "floating raises :class:`~attnspec.errors.DTypeError`.",
        "raises",
        scope="reference",
        scope_reason=REFERENCE_ERRORS,
    ),
)
def attention_distribution(scores: Array, /, *, mask: Mask | None = None) -> Array:
    r"""Attention distribution: the masked softmax of the scores over the key axis.

    .. math::

        \alpha_{ij} = \frac{\exp(e_{ij})}{\sum_{k} \exp(e_{ik})}

    Luong et al. (2015), eq. (7); Bahdanau et al. (2015), eq. (6). The sum
    runs over allowed keys only.

    Parameters
    ----------
    scores
        ``[..., Tq, Tk]`` scores :math:`e_{ij}`.
    mask
        Boolean mask (``True`` = may attend) or additive floating mask,
        broadcastable to ``[..., Tq, Tk]``. ``None`` allows every key.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` weights :math:`\alpha_{ij}`, shape broadcast with
        the mask's.

    Raises
    ------
    ShapeError
        If ``scores`` has rank below 2, ``Tk`` is 0, or the mask does not
        broadcast.
    DTypeError
        If ``scores`` is not floating or ``mask`` is neither boolean nor real
        floating.
    NonFiniteInputError
        If an allowed score is NaN or :math:`+\infty`, or the additive mask
        holds NaN or :math:`+\infty`.
    """


@specifies(
    Clause(
        "lse.formula",
        "For a row with at least one allowed key, "
        r":math:`\ell_i = \log \sum_{k \text{ allowed}} \exp(e_{ik} + m_{ik})`, over the "
        "allowed keys and with the additive mask of ``distribution.softmax``.",
    ),
    Clause(
        "lse.normalizes",
        r"The log-sum-exp is the log-normalizer of the distribution: "
        r":math:`\alpha_{ij} = \exp(e_{ij} + m_{ij} - \ell_i)` at every allowed position of "
        r"a row with an allowed key (to rounding), with :math:`\alpha` the result of "
        ":func:`attention_distribution` for the same scores and mask.",
    ),
    Clause(
        "lse.stable",
        "Finite scores anywhere in the dtype's range give a finite log-sum-exp whenever the "
        "value itself is in range: the sum is taken after subtracting the row's largest "
        r"allowed score, so :math:`\max_k (e_{ik} + m_{ik}) \le \ell_i \le "
        r"\max_k (e_{ik} + m_{ik}) + \log n` for :math:`n` allowed keys.",
    ),
    Clause(
        "lse.fully-masked-row",
        r"A row with no allowed key has log-sum-exp :math:`-\infty` (the logarithm of an "
        r"empty sum), not NaN and not :math:`+\infty`. Its gradient is zero.",
        "special-case",
    ),
)
def log_sum_exp(scores: Array, /, *, mask: Mask | None = None) -> Array:
    r"""Log-sum-exp: each row's log-normalizer of the attention distribution.

    .. math::

        \ell_i = \log \sum_{k} \exp(e_{ik}), \qquad
        \alpha_{ij} = \exp(e_{ij} - \ell_i)

    The normalizer of Luong et al. (2015), eq. (7), in log space. Kernels
    that never store the weights (Dao et al. 2022, FlashAttention) keep it
    per row for their backward pass and to merge partial results over key
    blocks, and return it (FlashAttention's ``softmax_lse``,
    ``flex_attention``'s ``return_lse``). The sum runs over allowed keys
    only; mask and allowed set are those of :func:`attention_distribution`.

    Parameters
    ----------
    scores
        ``[..., Tq, Tk]`` scores :math:`e_{ij}`.
    mask
        Boolean mask (``True`` = may attend) or additive floating mask,
        broadcastable to ``[..., Tq, Tk]``. ``None`` allows every key.

    Returns
    -------
    Array
        ``[..., Tq]`` log-sum-exp :math:`\ell_i`, with the batch shape
        broadcast with the mask's; :math:`-\infty` for a row with no
        allowed key.

    Raises
    ------
    ShapeError, DTypeError, NonFiniteInputError
        As :func:`attention_distribution`.
    """


@specifies(
    Clause(
        "local.m-position",
        r"Local-m aligns query ``i`` with source position :math:`p_i = i` (monotonic "
        "alignment, 0-based) for every ``Tq`` and ``Tk``.",
    ),
    Clause(
        "local.window",
        r"Key ``j`` is inside the window of query ``i`` when :math:`|j - p_i| \le D`; "
        "a key outside the window, or disallowed by the mask, gets weight exactly zero.",
    ),
    Clause(
        "local.window-softmax",
        "Inside the window the weights are the softmax of the scores over the allowed keys "
        "of the window only, so each local-m row with an allowed key in its window sums to "
        "one; a row with none is all zero.",
    ),
    Clause(
        "local.half-width",
        "The half-width ``D`` is an ``int``: at least 0 for local-m and at least 1 for "
        "local-p (its Gaussian needs :math:`\\sigma = D/2 > 0`); anything else raises "
        ":class:`~attnspec.errors.ArgumentError` (wrong value) or "
        ":class:`~attnspec.errors.DTypeError` (wrong type).",
        "raises",
        scope="reference",
        scope_reason=REFERENCE_ERRORS,
    ),
    Clause(
        "local.boolean-mask",
        "The mask of the local distributions is boolean; a floating mask raises "
        ":class:`~attnspec.errors.DTypeError`.",
        "raises",
        scope="reference",
        scope_reason=REFERENCE_ERRORS,
    ),
)
def local_m_distribution(
    scores: Array, /, *, half_width: int, mask: BoolArray | None = None
) -> Array:
    r"""Local-m attention distribution: a softmax over a window around :math:`p_i = i`.

    .. math::

        \alpha_{ij} = \frac{\exp(e_{ij})}{\sum_{|k - i| \le D} \exp(e_{ik})}
        \quad \text{for } |j - i| \le D, \qquad 0 \text{ otherwise}

    Luong et al. (2015), section 3.2, *local-m*.

    Parameters
    ----------
    scores
        ``[..., Tq, Tk]`` scores.
    half_width
        Window half-width ``D >= 0``.
    mask
        Boolean mask broadcastable to ``[..., Tq, Tk]``, ``True`` = may attend.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` weights.

    Raises
    ------
    ShapeError
        As :func:`attention_distribution`.
    DTypeError
        If ``scores`` is not floating, ``mask`` is not boolean or
        ``half_width`` is not an ``int``.
    ArgumentError
        If ``half_width`` is negative.
    NonFiniteInputError
        If an allowed score inside a window is NaN or :math:`+\infty`.
    """


@specifies(
    Clause(
        "local.p-position",
        r"The aligned position is :math:`p_i = (S - 1)\,\sigma(v_p^\top \tanh(W_p s_i))` "
        "with :math:`S` = ``source_length`` and :math:`\\sigma` the logistic function; it "
        "is real and lies in :math:`[0, S - 1]`.",
    ),
)
def local_p_position(query: Array, W_p: Array, v_p: Array, /, *, source_length: int) -> Array:
    r"""Local-p predicted alignment position of each query.

    .. math::

        p_i = (S - 1)\, \sigma\!\left(v_p^\top \tanh(W_p s_i)\right)

    Luong et al. (2015), eq. (9), with 0-based positions and the factor
    :math:`S - 1` (see the module notes for why).

    Parameters
    ----------
    query
        ``[..., Tq, d_q]`` queries.
    W_p
        ``[d_p, d_q]`` weight matrix.
    v_p
        ``[d_p]`` weight vector.
    source_length
        ``S >= 1``, the number of source positions (``Tk``).

    Returns
    -------
    Array
        ``[..., Tq]`` real positions in :math:`[0, S - 1]`.

    Raises
    ------
    ShapeError
        If a weight shape does not match.
    DTypeError
        If an array is not floating or ``source_length`` is not an ``int``.
    ArgumentError
        If ``source_length < 1``.
    NonFiniteInputError
        If an argument holds NaN or an infinity.
    """


@specifies(
    Clause(
        "local.p-gaussian",
        r"Local-p multiplies the window softmax by "
        r":math:`\exp(-(j - p_i)^2 / (2\sigma^2))` with :math:`\sigma = D/2`, after "
        "normalising and without renormalising, so a row sums to at most one.",
    ),
    Clause(
        "local.p-window",
        r"The local-p window of query ``i`` is every key ``j`` with "
        r":math:`|j - p_i| \le D` for the real position :math:`p_i`; positions outside "
        r":math:`[0, T_k - 1]` are allowed in ``positions`` and only narrow the window.",
    ),
)
def local_p_distribution(
    scores: Array, positions: Array, /, *, half_width: int, mask: BoolArray | None = None
) -> Array:
    r"""Local-p attention distribution: a window softmax times a Gaussian at :math:`p_i`.

    .. math::

        \alpha_{ij} = \frac{\exp(e_{ij})}{\sum_{|k - p_i| \le D} \exp(e_{ik})}
        \exp\!\left(-\frac{(j - p_i)^2}{2\sigma^2}\right), \qquad \sigma = D/2

    Luong et al. (2015), eq. (10), for :math:`|j - p_i| \le D`; zero
    outside the window.

    Parameters
    ----------
    scores
        ``[..., Tq, Tk]`` scores.
    positions
        ``[..., Tq]`` real aligned positions :math:`p_i`, typically from
        :func:`local_p_position`; broadcast with the scores' batch dimensions.
    half_width
        Window half-width ``D >= 1``.
    mask
        Boolean mask broadcastable to ``[..., Tq, Tk]``, ``True`` = may attend.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` weights; rows sum to at most one.

    Raises
    ------
    ShapeError
        If ``positions`` does not match ``scores.shape[:-1]`` after
        broadcasting, or as :func:`attention_distribution`.
    DTypeError
        If an array is not floating, ``mask`` is not boolean or
        ``half_width`` is not an ``int``.
    ArgumentError
        If ``half_width < 1``.
    NonFiniteInputError
        If a position, or an allowed score inside a window, is NaN or infinite.
    """
