# mypy: disable-error-code="empty-body"
# (The stubs are body-less by design: their docstrings are the specification.)
"""Step 1: attention scores, one number per (query, key) pair.

Every score function returns ``scores`` of shape ``[..., Tq, Tk]``: entry
``[..., i, j]`` says how relevant key ``j`` (encoder state :math:`h_j`) is to
query ``i`` (decoder state :math:`s_i`). The forms are those of Luong et al.
(2015, eq. 8), Bahdanau et al. (2015, appendix A.1.2) and Vaswani et al.
(2017, eq. 1).
"""

from __future__ import annotations

from attnspec.clauses import Clause, declare, specifies
from attnspec.typing import Array, Scale

__all__ = [
    "score_additive",
    "score_concat",
    "score_dot",
    "score_general",
    "score_location",
    "score_scaled_dot",
]

declare(
    Clause(
        "score.shape",
        "Every score function returns an array of shape ``broadcast(...) + [Tq, Tk]``, "
        "batch dimensions broadcast between its sequence arguments.",
    ),
)


@specifies(
    Clause(
        "score.dot",
        r"Entry ``[..., i, j]`` is the dot product :math:`s_i^\top h_j` of query row ``i`` "
        "and key row ``j``; ``d_q`` must equal ``d_k``.",
    ),
)
def score_dot(query: Array, keys: Array, /) -> Array:
    r"""Dot-product score.

    .. math::

        e_{ij} = s_i^\top h_j

    Luong et al. (2015), eq. (8), *dot*: the simplest score, with no
    parameters, used by the tutorial's dot-product attention.

    Parameters
    ----------
    query
        ``[..., Tq, d]`` decoder states :math:`s_i`.
    keys
        ``[..., Tk, d]`` encoder states :math:`h_j`.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` scores.

    Raises
    ------
    ShapeError
        If ``keys.shape[-1] != query.shape[-1]``, a rank is below 2, batch
        dimensions do not broadcast, or ``Tk`` or ``d`` is 0.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If ``query`` or ``keys`` holds NaN or an infinity.
    """


@specifies(
    Clause(
        "score.scaled-dot",
        r"Entry ``[..., i, j]`` is :math:`\lambda\, s_i^\top h_j` with the given ``scale`` "
        r":math:`\lambda`.",
    ),
    Clause(
        "score.default-scale",
        r"When ``scale`` is ``None``, :math:`\lambda = 1/\sqrt{d_k}`, evaluated as "
        "``1 / math.sqrt(d_k)`` in float64 (as PyTorch does) and converted to the result "
        "dtype.",
        "special-case",
    ),
    Clause(
        "score.scale-applied",
        r"The scale multiplies the score exactly once; :math:`\lambda = 0` gives all-zero "
        r"scores and a negative :math:`\lambda` reverses their order.",
        "special-case",
    ),
)
def score_scaled_dot(query: Array, keys: Array, /, *, scale: Scale | None = None) -> Array:
    r"""Scaled dot-product score.

    .. math::

        e_{ij} = \lambda\, s_i^\top h_j, \qquad \lambda = 1/\sqrt{d_k} \text{ by default}

    Vaswani et al. (2017), eq. (1): dividing by :math:`\sqrt{d_k}` keeps the
    variance of the scores near 1 for unit-variance inputs, so the softmax
    does not saturate as the feature size grows.

    Parameters
    ----------
    query
        ``[..., Tq, d]`` queries.
    keys
        ``[..., Tk, d]`` keys.
    scale
        Finite real factor :math:`\lambda`; ``None`` means :math:`1/\sqrt{d}`.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` scores.

    Raises
    ------
    ShapeError
        As :func:`score_dot`.
    DTypeError
        If an array is not floating or ``scale`` is not a real number.
    ArgumentError
        If ``scale`` is NaN or infinite.
    NonFiniteInputError
        If ``query`` or ``keys`` holds NaN or an infinity.
    """


@specifies(
    Clause(
        "score.general",
        r"Entry ``[..., i, j]`` is :math:`s_i^\top W_a h_j` with ``W_a`` of shape "
        "``[d_q, d_k]``; with :math:`W_a = I` it equals :func:`score_dot`.",
    ),
)
def score_general(query: Array, keys: Array, W_a: Array, /) -> Array:
    r"""General (bilinear) score.

    .. math::

        e_{ij} = s_i^\top W_a h_j

    Luong et al. (2015), eq. (8), *general*. Queries and keys may have
    different feature sizes.

    Parameters
    ----------
    query
        ``[..., Tq, d_q]`` queries.
    keys
        ``[..., Tk, d_k]`` keys.
    W_a
        ``[d_q, d_k]`` weight matrix.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` scores.

    Raises
    ------
    ShapeError
        If ``W_a`` is not ``[d_q, d_k]`` or a sequence shape is invalid.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If an argument holds NaN or an infinity.
    """


@specifies(
    Clause(
        "score.concat",
        r"Entry ``[..., i, j]`` is :math:`v_a^\top \tanh(W_a [s_i; h_j])`, the query "
        "first in the concatenation, with ``W_a`` of shape ``[d_a, d_q + d_k]`` and ``v_a`` "
        "of shape ``[d_a]``.",
    ),
)
def score_concat(query: Array, keys: Array, W_a: Array, v_a: Array, /) -> Array:
    r"""Concat score: a one-hidden-layer network on the concatenated pair.

    .. math::

        e_{ij} = v_a^\top \tanh\!\left(W_a \begin{bmatrix} s_i \\ h_j \end{bmatrix}\right)

    Luong et al. (2015), eq. (8), *concat*. Writing
    :math:`W_a = [W_1\ W_2]` it is :func:`score_additive` with
    :math:`W_q = W_1, W_k = W_2`. (Keras' ``score_mode="concat"`` is a
    different, parameter-free function.)

    Parameters
    ----------
    query
        ``[..., Tq, d_q]`` queries.
    keys
        ``[..., Tk, d_k]`` keys.
    W_a
        ``[d_a, d_q + d_k]`` weight matrix.
    v_a
        ``[d_a]`` weight vector.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` scores.

    Raises
    ------
    ShapeError
        If ``W_a`` is not ``[d_a, d_q + d_k]`` or ``v_a`` not ``[d_a]``.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If an argument holds NaN or an infinity.
    """


@specifies(
    Clause(
        "score.additive",
        r"Entry ``[..., i, j]`` is :math:`v_a^\top \tanh(W_q s_i + W_k h_j)` with ``W_q`` "
        "``[d_a, d_q]``, ``W_k`` ``[d_a, d_k]`` and ``v_a`` ``[d_a]``; it equals "
        ":func:`score_concat` with ``W_a = [W_q W_k]``.",
    ),
)
def score_additive(query: Array, keys: Array, W_q: Array, W_k: Array, v_a: Array, /) -> Array:
    r"""Additive (Bahdanau) score.

    .. math::

        e_{ij} = v_a^\top \tanh(W_q s_i + W_k h_j)

    Bahdanau et al. (2015), appendix A.1.2, where the query is the previous
    decoder state :math:`s_{i-1}` and the matrices are called :math:`W_a`
    and :math:`U_a`. Which decoder state is passed as ``query`` is the
    caller's choice; the function is the same.

    Parameters
    ----------
    query
        ``[..., Tq, d_q]`` queries.
    keys
        ``[..., Tk, d_k]`` keys.
    W_q
        ``[d_a, d_q]`` query weights.
    W_k
        ``[d_a, d_k]`` key weights.
    v_a
        ``[d_a]`` weight vector.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` scores.

    Raises
    ------
    ShapeError
        If a weight shape does not match.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If an argument holds NaN or an infinity.
    """


@specifies(
    Clause(
        "score.location",
        r"Row ``i`` is :math:`W_a s_i` with ``W_a`` of shape ``[Tk, d_q]``: the score "
        "depends on the query alone and the key axis has the fixed length ``Tk``.",
    ),
)
def score_location(query: Array, W_a: Array, /) -> Array:
    r"""Location-based score: the decoder state alone predicts the alignment.

    .. math::

        e_i = W_a s_i

    Luong et al. (2015), eq. (8), *location*; the distribution is then
    :math:`\operatorname{softmax}(W_a s_i)`. Because ``W_a`` has one row per
    source position, the source length ``Tk`` is fixed by the parameters.

    Parameters
    ----------
    query
        ``[..., Tq, d_q]`` queries.
    W_a
        ``[Tk, d_q]`` weight matrix.

    Returns
    -------
    Array
        ``[..., Tq, Tk]`` scores.

    Raises
    ------
    ShapeError
        If ``W_a`` is not ``[Tk, d_q]`` with ``Tk >= 1``.
    DTypeError
        If an array is not floating.
    NonFiniteInputError
        If an argument holds NaN or an infinity.
    """
