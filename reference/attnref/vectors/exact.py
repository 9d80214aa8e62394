r"""The exact reference: every attnspec function in arbitrary precision (mpmath).

This module is the ground truth of the golden vectors (:mod:`attnref.vectors.golden`).
It implements each formula of :mod:`attnspec` afresh, with plain loops over
the indices of the docstring formulas, and shares no code with the NumPy
reference, whose results it judges.

Arrays are NumPy *object* arrays of :class:`Var`, one node per scalar of a
reverse-mode tape, so one evaluation gives the value and, by
:func:`backward`, every input gradient (the VJP) of the same expression.

Working precision
    Sums, differences and products are *exact* (dyadic rationals, mpmath with
    ``exact=True``) as long as their operands are exact, so scores, additive
    masks, the softmax shift and every linear pre-activation are exactly the
    real numbers that the float64 inputs define; no cancellation can hurt
    them, and no huge logit (1e308) loses its small neighbours. Only
    ``exp``, ``tanh``, division and whatever follows them round, to the
    working precision of the caller's context (``mpmath.mp.workprec``):
    :data:`PRECISIONS` lists the ladder the generator climbs. A result is
    accepted as the correctly rounded float64 value when two consecutive
    precisions round to the same float64 (Ziv's test, :func:`truth`);
    otherwise the next precision is tried.

Rounding to float64
    :func:`to_float64` rounds an mpmath number once, to nearest with ties to
    even, including in the subnormal range (``float(mpf)`` rounds twice there)
    and to infinity beyond the largest float.

Conventions taken from the spec (each marked ``# Note:``)
    Masks are ``True`` = may attend; an additive ``-inf`` or a ``-inf`` score
    disallows; a row with no allowed key is all zero (``distribution.
    fully-masked-row``) and its log-sum-exp is ``-inf`` (``lse.fully-masked-row``);
    a sink joins each row's denominator, unscaled and uncapped, so a row with no
    allowed key but a sink has log-sum-exp the sink (``sdpa.sinks``); local-p
    positions are 0-based with factor ``S - 1`` and a real window
    ``|j - p_i| <= D``; the Gaussian multiplies after the window softmax;
    causal top-left is ``j <= i``, bottom-right ``j <= i + Tk - Tq``; grouped
    heads are repeated interleaved.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import mpmath  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
from mpmath import libmp

from attnref.masking import allowed_positions, local_window
from attnspec.typing import CausalAlignment, Window

__all__ = [
    "FUNCTIONS",
    "PRECISIONS",
    "NotCorrectlyRoundedError",
    "Tape",
    "Var",
    "VarArray",
    "attention",
    "attention_distribution",
    "attention_value",
    "attentional_hidden_state",
    "backward",
    "concatenate_context",
    "default_scale",
    "local_m_distribution",
    "local_p_distribution",
    "local_p_position",
    "log_sum_exp",
    "output_distribution",
    "record",
    "scaled_dot_product_attention",
    "score_additive",
    "score_concat",
    "score_dot",
    "score_general",
    "score_location",
    "score_scaled_dot",
    "to_float64",
    "truth",
]

mp = mpmath.mp

PRECISIONS: tuple[int, ...] = (192, 320, 640, 1280, 2560, 5120)
"""Working precisions in bits, tried in order until two consecutive ones agree after rounding."""

VarArray: TypeAlias = npt.NDArray[np.object_]
"""A NumPy object array whose elements are :class:`Var`."""

Number: TypeAlias = Any
"""An mpmath ``mpf`` or ``mpc`` (mpmath ships no type information)."""

_ORDER = itertools.count()


class Var:
    """One scalar of the tape: its value, and the partial derivatives to its parents.

    ``exact`` says the value is an exact dyadic rational (an input, or exact
    sums and products of inputs); operations on exact operands stay exact.
    Constants have ``order = -1`` and are never recorded as parents.
    """

    __slots__ = ("exact", "order", "parents", "sizes", "value")
    value: Number
    parents: tuple[tuple[Var, Number], ...]
    sizes: tuple[Number, ...] | None
    exact: bool
    order: int

    def __init__(
        self,
        value: Number,
        parents: tuple[tuple[Var, Number], ...] = (),
        *,
        exact: bool = False,
        constant: bool = False,
    ) -> None:
        self.value = value
        self.parents = tuple((p, d) for p, d in parents if p.order >= 0)
        self.sizes = None  # the sizes of the partials for backward(absolute=True), if not |partial|
        self.exact = exact
        self.order = -1 if constant else next(_ORDER)

    def __add__(self, other: Operand) -> Var:
        return add(self, other)

    def __radd__(self, other: Operand) -> Var:
        return add(other, self)

    def __sub__(self, other: Operand) -> Var:
        return subtract(self, other)

    def __rsub__(self, other: Operand) -> Var:
        return subtract(other, self)

    def __mul__(self, other: Operand) -> Var:
        return multiply(self, other)

    def __rmul__(self, other: Operand) -> Var:
        return multiply(other, self)

    def __truediv__(self, other: Operand) -> Var:
        return divide(self, other)

    def __neg__(self) -> Var:
        return multiply(self, -1)

    def __repr__(self) -> str:
        return f"Var({mpmath.nstr(self.value, 20)})"


Operand: TypeAlias = Var | int | float


def leaf(value: float | complex | Number) -> Var:
    """An input scalar (a float or an exact mpmath number): exact, recorded on the tape."""
    return Var(mpmath.mpmathify(value), exact=True)


def constant(value: Number, *, exact: bool = True) -> Var:
    """A constant, never differentiated; ints, floats and exact mpmath values are exact."""
    return Var(mpmath.mpmathify(value), exact=exact, constant=True)


def _var(x: Operand) -> Var:
    return x if isinstance(x, Var) else constant(x)


_ONE = mpmath.mpf(1)
_MINUS_ONE = mpmath.mpf(-1)


def add(a: Operand, b: Operand) -> Var:
    """``a + b``, exact when both operands are."""
    x, y = _var(a), _var(b)
    exact = x.exact and y.exact
    return Var(mp.fadd(x.value, y.value, exact=exact), ((x, _ONE), (y, _ONE)), exact=exact)


def subtract(a: Operand, b: Operand) -> Var:
    """``a - b``, exact when both operands are."""
    x, y = _var(a), _var(b)
    exact = x.exact and y.exact
    return Var(mp.fsub(x.value, y.value, exact=exact), ((x, _ONE), (y, _MINUS_ONE)), exact=exact)


def multiply(a: Operand, b: Operand) -> Var:
    """``a * b``, exact when both operands are."""
    x, y = _var(a), _var(b)
    exact = x.exact and y.exact
    value = mp.fmul(x.value, y.value, exact=exact)
    return Var(value, ((x, y.value), (y, x.value)), exact=exact)


def divide(a: Operand, b: Operand) -> Var:
    """``a / b``, rounded to the working precision."""
    x, y = _var(a), _var(b)
    value = x.value / y.value
    inverse = 1 / y.value
    return Var(value, ((x, inverse), (y, -value * inverse)))


def exp(a: Var) -> Var:
    """``exp(a)``, rounded to the working precision."""
    value = mp.exp(a.value)
    return Var(value, ((a, value),))


def log(a: Var) -> Var:
    """``log(a)`` (the principal branch), rounded to the working precision."""
    return Var(mp.log(a.value), ((a, 1 / a.value),))


def tanh(a: Var) -> Var:
    """``tanh(a)``, rounded to the working precision.

    Its derivative is computed as :math:`\\operatorname{sech}^2 a`, not
    :math:`1 - \\tanh^2 a`, which cancels to nothing where tanh saturates;
    its *size* for :func:`backward` with ``absolute`` is :math:`1 + \\tanh^2 a`,
    the size of what a float implementation subtracts to get it.
    """
    value = mp.tanh(a.value)
    node = Var(value, ((a, mp.sech(a.value) ** 2),))
    node.sizes = (1 + abs(value) ** 2,)
    return node


def sigmoid(a: Var) -> Var:
    r"""The logistic function :math:`1 / (1 + e^{-a})`."""
    return divide(1, add(1, exp(-a)))


def total(terms: Sequence[Var]) -> Var:
    """The sum of ``terms``: exact if they all are, else rounded once."""
    if not terms:
        return constant(0)
    exact = all(t.exact for t in terms)
    if exact:
        value = terms[0].value
        for t in terms[1:]:
            value = mp.fadd(value, t.value, exact=True)
    else:
        value = mp.fsum([t.value for t in terms])
    return Var(value, tuple((t, _ONE) for t in terms), exact=exact)


def dot(xs: Sequence[Var] | VarArray, ys: Sequence[Var] | VarArray) -> Var:
    r""":math:`\sum_k x_k y_k`: exact if every factor is, else rounded once."""
    exact = all(x.exact for x in xs) and all(y.exact for y in ys)
    if exact and all(_is_real(x.value) and _is_real(y.value) for x, y in zip(xs, ys, strict=True)):
        terms = [libmp.mpf_mul(x.value._mpf_, y.value._mpf_) for x, y in zip(xs, ys, strict=True)]
        value = mp.make_mpf(libmp.mpf_sum(terms, 0))  # prec 0: exact
    elif exact:
        value = mpmath.mpf(0)
        for x, y in zip(xs, ys, strict=True):
            value = mp.fadd(value, mp.fmul(x.value, y.value, exact=True), exact=True)
    else:
        value = mp.fdot([x.value for x in xs], [y.value for y in ys])
    parents = tuple(
        itertools.chain.from_iterable(
            ((x, y.value), (y, x.value)) for x, y in zip(xs, ys, strict=True)
        )
    )
    return Var(value, parents, exact=exact)


def _is_real(value: Number) -> bool:
    return hasattr(value, "_mpf_")


def backward(seeds: Iterable[tuple[Var, Number]], *, absolute: bool = False) -> dict[int, Number]:
    """Reverse sweep: the adjoint of every node reached from the seeded outputs, by ``id``.

    The adjoint of a node is :math:`\\sum_i c_i \\partial y_i / \\partial node` for the
    seeds :math:`(y_i, c_i)`; arithmetic rounds to the working precision. With
    ``absolute``, every seed and partial derivative enters by its absolute value:
    the result is the sum over all chain-rule paths of their sizes, which bounds
    what the chain-rule sum can lose to cancellation in floating point.
    """
    seeds = [(node, mpmath.mpmathify(c)) for node, c in seeds]
    nodes: dict[int, Var] = {}
    stack = [v for v, _ in seeds]
    while stack:
        node = stack.pop()
        if id(node) in nodes:
            continue
        nodes[id(node)] = node
        stack.extend(p for p, _ in node.parents)
    order = sorted(nodes.values(), key=lambda n: n.order, reverse=True)
    real = all(_is_real(c) for _, c in seeds) and all(
        _is_real(d) for n in order for _, d in n.parents
    )
    if not real:
        return _backward_generic(seeds, order, absolute=absolute)
    # Note: real sweeps work on mpmath's raw tuples, rounding every step to the
    # working precision; it is the same arithmetic as mpf objects, three times faster.
    prec, rounding = mp.prec, libmp.round_nearest
    add, mul, zero = libmp.mpf_add, libmp.mpf_mul, libmp.fzero
    adjoint: dict[int, Any] = {}
    for node, c in seeds:
        raw = libmp.mpf_abs(c._mpf_) if absolute else c._mpf_
        adjoint[id(node)] = add(adjoint.get(id(node), zero), raw, prec, rounding)
    for node in order:
        a = adjoint.get(id(node))
        if a is None or a == zero or not node.parents:
            continue
        sizes = node.sizes if absolute and node.sizes is not None else None
        for k, (parent, partial) in enumerate(node.parents):
            if sizes is not None:
                d = sizes[k]._mpf_
            else:
                d = libmp.mpf_abs(partial._mpf_) if absolute else partial._mpf_
            key = id(parent)
            adjoint[key] = add(adjoint.get(key, zero), mul(a, d, prec, rounding), prec, rounding)
    return {key: mp.make_mpf(value) for key, value in adjoint.items()}


def _backward_generic(
    seeds: list[tuple[Var, Number]], order: list[Var], *, absolute: bool
) -> dict[int, Number]:
    """:func:`backward` for complex values, with mpmath number objects."""
    adjoint: dict[int, Number] = {}
    for node, c in seeds:
        adjoint[id(node)] = adjoint.get(id(node), 0) + (abs(c) if absolute else c)
    for node in order:
        a = adjoint.get(id(node))
        if a is None or not node.parents or a == 0:
            continue
        sizes = node.sizes if absolute and node.sizes is not None else None
        for k, (parent, partial) in enumerate(node.parents):
            size = sizes[k] if sizes is not None else abs(partial)
            term = a * size if absolute else a * partial
            adjoint[id(parent)] = adjoint.get(id(parent), 0) + term
    return adjoint


# --- arrays -------------------------------------------------------------------------------


def _empty(shape: tuple[int, ...]) -> VarArray:
    return np.empty(shape, dtype=object)


def _map(function: Callable[[Var], Var], values: VarArray) -> VarArray:
    """``function`` applied to every element of an object array."""
    out: VarArray = np.vectorize(function, otypes=[object])(values)
    return out


_ZERO = constant(0)
_MINUS_INF = constant(mpmath.mpf("-inf"))


def _batch(*pairs: tuple[VarArray | npt.NDArray[Any], int]) -> tuple[int, ...]:
    """The broadcast batch shape of arrays whose last ``core`` axes are not batch axes."""
    return tuple(np.broadcast_shapes(*(a.shape[: a.ndim - core] for a, core in pairs)))


def _expand(a: VarArray, batch: tuple[int, ...], core: int) -> VarArray:
    """``a`` broadcast to ``batch + a.shape[-core:]`` (a view; elements are shared)."""
    return np.broadcast_to(a, batch + a.shape[a.ndim - core :])


def _is_minus_inf(x: Var) -> bool:
    value = x.value
    real = value.real if isinstance(value, mpmath.mpc) else value
    return bool(mpmath.isinf(real) and real < 0)


def _real(value: Number) -> Number:
    return value.real if isinstance(value, mpmath.mpc) else value


def _normalize(
    logits: Mapping[int, Var], width: int, sink: Var | None = None
) -> tuple[list[Var], Var]:
    """Softmax over the allowed keys ``logits`` (key -> logit) of a row of ``width`` keys,
    and its log-normalizer: ``(weights, lse)``.

    ``sink`` is a logit that joins the denominator and no numerator (``sdpa.sinks``).
    """
    if not logits and sink is None:
        # Note: a row with no allowed key is all zero (distribution.fully-masked-row) and
        # its log-sum-exp is the log of an empty sum, -inf (lse.fully-masked-row); both
        # depend on nothing, so their gradient is zero.
        return [_ZERO] * width, _MINUS_INF
    # Note: the shift by the largest real part changes no weight (shift-invariance)
    # and keeps mpmath from evaluating exp(1e308); it is exact, so it costs nothing.
    # It is a constant of the tape: lse = shift + log(sum exp(v - shift)) has the
    # right derivative exp(v - lse) with the shift held fixed.
    terms = [*logits.values(), *(() if sink is None else (sink,))]
    shift = constant(max(_real(v.value) for v in terms), exact=all(v.exact for v in terms))
    exps = {j: exp(v - shift) for j, v in logits.items()}
    sink_exp = [] if sink is None else [exp(sink - shift)]
    denominator = total([*exps.values(), *sink_exp])
    weights = [divide(exps[j], denominator) if j in exps else _ZERO for j in range(width)]
    return weights, shift + log(denominator)


def _softmax(logits: Mapping[int, Var], width: int) -> list[Var]:
    """Softmax over the allowed keys ``logits`` (key -> logit) of a row of ``width`` keys."""
    return _normalize(logits, width)[0]


def _mask_parts(
    mask: npt.NDArray[np.bool_] | VarArray | None, shape: tuple[int, ...]
) -> tuple[npt.NDArray[np.bool_], VarArray | None, tuple[int, ...]]:
    """``(allowed, additive, shape)`` of a boolean or additive (Var) mask broadcast to ``shape``."""
    if mask is None:
        return np.ones(shape, dtype=bool), None, shape
    full = tuple(int(n) for n in np.broadcast_shapes(shape, mask.shape))
    if mask.dtype == np.bool_:
        return np.asarray(np.broadcast_to(mask, full), dtype=np.bool_), None, full
    additive: VarArray = np.broadcast_to(mask, full)
    allowed = np.vectorize(lambda m: not _is_minus_inf(m), otypes=[bool])(additive)
    return np.asarray(allowed, dtype=np.bool_), additive, full


# --- step 1: scores -----------------------------------------------------------------------


def score_dot(query: VarArray, keys: VarArray, /) -> VarArray:
    r""":math:`e_{ij} = s_i^\top h_j` (``score.dot``)."""
    batch = _batch((query, 2), (keys, 2))
    q, k = _expand(query, batch, 2), _expand(keys, batch, 2)
    out = _empty((*batch, q.shape[-2], k.shape[-2]))
    for b in np.ndindex(batch):
        for i in range(q.shape[-2]):
            for j in range(k.shape[-2]):
                out[(*b, i, j)] = dot(q[(*b, i)], k[(*b, j)])
    return out


def default_scale(d: int, /) -> float:
    r""":math:`1/\sqrt{d}` rounded once to float64 (``score.default-scale``)."""
    with mp.workprec(PRECISIONS[-1]):
        return _round(1 / mp.sqrt(d))


def score_scaled_dot(query: VarArray, keys: VarArray, /, *, scale: float | None = None) -> VarArray:
    r""":math:`e_{ij} = \lambda\, s_i^\top h_j` (``score.scaled-dot``)."""
    lam = default_scale(query.shape[-1]) if scale is None else scale
    return _map(lambda e: e * lam, score_dot(query, keys))


def score_general(query: VarArray, keys: VarArray, W_a: VarArray, /) -> VarArray:
    r""":math:`e_{ij} = s_i^\top W_a h_j` (``score.general``)."""
    batch = _batch((query, 2), (keys, 2))
    q, k = _expand(query, batch, 2), _expand(keys, batch, 2)
    out = _empty((*batch, q.shape[-2], k.shape[-2]))
    for b in np.ndindex(batch):
        for i in range(q.shape[-2]):
            # Note: s_i^T W_a is exact, so grouping the bilinear form this way is exact too.
            row = [dot(q[(*b, i)], W_a[:, c]) for c in range(W_a.shape[1])]
            for j in range(k.shape[-2]):
                out[(*b, i, j)] = dot(row, k[(*b, j)])
    return out


def _projected(x: VarArray, w: VarArray) -> VarArray:
    """``W x`` for every row ``x`` of ``[..., T, d]``: ``[..., T, d_a]``, exact."""
    out = _empty((*x.shape[:-1], w.shape[0]))
    for t in np.ndindex(x.shape[:-1]):
        for r in range(w.shape[0]):
            out[(*t, r)] = dot(w[r], x[t])
    return out


def _tanh_layer(
    query: VarArray, keys: VarArray, w_q: VarArray, w_k: VarArray, v_a: VarArray
) -> VarArray:
    r""":math:`e_{ij} = v_a^\top \tanh(W_q s_i + W_k h_j)`."""
    batch = _batch((query, 2), (keys, 2))
    hq = _expand(_projected(query, w_q), batch, 2)  # [..., Tq, d_a]
    hk = _expand(_projected(keys, w_k), batch, 2)  # [..., Tk, d_a]
    out = _empty((*batch, hq.shape[-2], hk.shape[-2]))
    for b in np.ndindex(batch):
        for i in range(hq.shape[-2]):
            for j in range(hk.shape[-2]):
                hidden = [tanh(hq[(*b, i, r)] + hk[(*b, j, r)]) for r in range(v_a.shape[0])]
                out[(*b, i, j)] = dot(list(v_a), hidden)
    return out


def score_concat(query: VarArray, keys: VarArray, W_a: VarArray, v_a: VarArray, /) -> VarArray:
    r""":math:`e_{ij} = v_a^\top \tanh(W_a [s_i; h_j])`, query first (``score.concat``)."""
    d_q = query.shape[-1]
    return _tanh_layer(query, keys, W_a[:, :d_q], W_a[:, d_q:], v_a)


def score_additive(
    query: VarArray, keys: VarArray, W_q: VarArray, W_k: VarArray, v_a: VarArray, /
) -> VarArray:
    r""":math:`e_{ij} = v_a^\top \tanh(W_q s_i + W_k h_j)` (``score.additive``)."""
    return _tanh_layer(query, keys, W_q, W_k, v_a)


def score_location(query: VarArray, W_a: VarArray, /) -> VarArray:
    r""":math:`e_i = W_a s_i` (``score.location``)."""
    return _projected(query, W_a)


# --- step 2: distributions ----------------------------------------------------------------


def _masked_normalize(
    scores: VarArray,
    allowed: npt.NDArray[np.bool_],
    additive: VarArray | None,
) -> tuple[VarArray, VarArray]:
    """Softmax over the last axis of the keys that ``allowed`` and finite logits permit,
    and each row's log-sum-exp: ``(weights [..., Tq, Tk], lse [..., Tq])``."""
    out = _empty(allowed.shape)
    lse = _empty(allowed.shape[:-1])
    width = allowed.shape[-1]
    s = np.broadcast_to(scores, allowed.shape)
    for row in np.ndindex(allowed.shape[:-1]):
        logits: dict[int, Var] = {}
        for j in range(width):
            # Note: a disallowed key is not read at all (input.unread-positions): NaN
            # there never reaches the tape.
            if not allowed[(*row, j)] or _is_minus_inf(s[(*row, j)]):
                continue
            logit = s[(*row, j)]
            if additive is not None:
                logit = logit + additive[(*row, j)]
            logits[j] = logit
        out[row], lse[row] = _normalize(logits, width)
    return out, lse


def _masked_softmax(
    scores: VarArray,
    allowed: npt.NDArray[np.bool_],
    additive: VarArray | None,
) -> VarArray:
    """The weights of :func:`_masked_normalize`."""
    return _masked_normalize(scores, allowed, additive)[0]


def attention_distribution(
    scores: VarArray, /, *, mask: npt.NDArray[np.bool_] | VarArray | None = None
) -> VarArray:
    r""":math:`\alpha_{ij} = e^{e_{ij} + m_{ij}} / \sum_k e^{e_{ik} + m_{ik}}` (allowed k)."""
    allowed, additive, _ = _mask_parts(mask, scores.shape)
    return _masked_softmax(scores, allowed, additive)


def log_sum_exp(
    scores: VarArray, /, *, mask: npt.NDArray[np.bool_] | VarArray | None = None
) -> VarArray:
    r""":math:`\ell_i = \log \sum_k e^{e_{ik} + m_{ik}}` over the allowed k (``lse.formula``);
    :math:`-\infty` for a row with none (``lse.fully-masked-row``)."""
    allowed, additive, _ = _mask_parts(mask, scores.shape)
    return _masked_normalize(scores, allowed, additive)[1]


def local_m_distribution(
    scores: VarArray, /, *, half_width: int, mask: npt.NDArray[np.bool_] | None = None
) -> VarArray:
    r"""Window softmax over :math:`|j - i| \le D` (``local.m-position``, ``local.window``)."""
    allowed, _, shape = _mask_parts(mask, scores.shape)
    window = local_window(shape[-2], shape[-1], half_width=half_width)
    return _masked_softmax(scores, allowed & window, None)


def local_p_position(
    query: VarArray, W_p: VarArray, v_p: VarArray, /, *, source_length: int
) -> VarArray:
    r""":math:`p_i = (S - 1)\,\sigma(v_p^\top \tanh(W_p s_i))` (``local.p-position``)."""
    hidden = _projected(query, W_p)  # [..., Tq, d_p]
    out = _empty(query.shape[:-1])
    for t in np.ndindex(query.shape[:-1]):
        logit = dot(list(v_p), [tanh(hidden[(*t, r)]) for r in range(v_p.shape[0])])
        # Note: positions are 0-based and the factor is S - 1, so p_i lies on the source.
        out[t] = (source_length - 1) * sigmoid(logit)
    return out


def local_p_distribution(
    scores: VarArray,
    positions: VarArray,
    /,
    *,
    half_width: int,
    mask: npt.NDArray[np.bool_] | None = None,
    window_positions: npt.NDArray[Any] | None = None,
) -> VarArray:
    r"""Window softmax around the real :math:`p_i`, times :math:`\exp(-(j-p_i)^2/(2\sigma^2))`.

    ``window_positions`` (default: the values of ``positions``) decides which
    keys are inside each window; the generator passes the unperturbed
    positions so that finite differences never move a key across the border.
    """
    batch = _batch((scores, 2), (positions, 1))
    if mask is not None:
        batch = tuple(np.broadcast_shapes(batch, mask.shape[:-2]))
    t_q, t_k = scores.shape[-2], scores.shape[-1]
    s = _expand(scores, batch, 2)
    p = _expand(positions, batch, 1)
    centres: npt.NDArray[Any] = (
        np.vectorize(lambda v: _real(v.value), otypes=[object])(p)
        if window_positions is None
        else np.broadcast_to(np.asarray(window_positions).real, p.shape)
    )
    allowed = np.ones((*batch, t_q, t_k), dtype=bool) if mask is None else mask
    allowed = np.broadcast_to(allowed, (*batch, t_q, t_k))
    # Note: the window is every integer j with |j - p_i| <= D for the real p_i, decided
    # exactly: j - p_i rounded to float64 can land on D when it is just beyond it.
    window = np.empty((*batch, t_q, t_k), dtype=bool)
    for index in np.ndindex(centres.shape):
        centre = mpmath.mpmathify(centres[index])
        for key in range(t_k):
            window[(*index, key)] = abs(mp.fsub(key, centre, exact=True)) <= half_width
    weights = _masked_softmax(s, allowed & window, None)
    # Note: the Gaussian multiplies after normalising and nothing is renormalised;
    # 2 sigma^2 = D^2 / 2 with sigma = D / 2.
    out = _empty(weights.shape)
    for row in np.ndindex(weights.shape[:-1]):
        for key in range(t_k):
            w = weights[(*row, key)]
            if w is _ZERO:
                out[(*row, key)] = _ZERO
                continue
            offset = key - p[row]
            gaussian = exp(divide(-2 * (offset * offset), half_width * half_width))
            out[(*row, key)] = w * gaussian
    return out


# --- steps 3 to 6 -------------------------------------------------------------------------


def attention_value(weights: VarArray, values: VarArray, /) -> VarArray:
    r""":math:`a_i = \sum_j \alpha_{ij} v_j` over the value rows that are read."""
    batch = _batch((weights, 2), (values, 2))
    w, v = _expand(weights, batch, 2), _expand(values, batch, 2)
    out = _empty((*batch, w.shape[-2], v.shape[-1]))
    for b in np.ndindex(batch):
        # Note: a value row whose weight is exactly zero in every query row is not
        # read (value.zero-weight-unread); it takes no part, NaN or not.
        read = [
            j
            for j in range(w.shape[-1])
            if any(w[(*b, i, j)].value != 0 for i in range(w.shape[-2]))
        ]
        for i in range(w.shape[-2]):
            for c in range(v.shape[-1]):
                out[(*b, i, c)] = dot([w[(*b, i, j)] for j in read], [v[(*b, j, c)] for j in read])
    return out


def concatenate_context(context: VarArray, query: VarArray, /) -> VarArray:
    r""":math:`[a_i; s_i]`, context first (``concat.context-first``)."""
    batch = _batch((context, 2), (query, 2))
    a, s = _expand(context, batch, 2), _expand(query, batch, 2)
    return np.concatenate([a, s], axis=-1)


def attentional_hidden_state(
    context: VarArray, query: VarArray, W_c: VarArray, b_c: VarArray | None = None, /
) -> VarArray:
    r""":math:`\tanh(W_c [a_i; s_i] + b_c)` (``hidden.tanh``)."""
    stacked = concatenate_context(context, query)
    pre = _projected(stacked, W_c)
    if b_c is not None:
        pre = pre + b_c
    return _map(tanh, pre)


def output_distribution(
    attentional_state: VarArray, W_y: VarArray, b_y: VarArray | None = None, /
) -> VarArray:
    r""":math:`\operatorname{softmax}(W_y \tilde{s}_i + b_y)` (``output.softmax``)."""
    logits = _projected(attentional_state, W_y)
    if b_y is not None:
        logits = logits + b_y
    return _masked_softmax(logits, np.ones(logits.shape, dtype=bool), None)


PairScore: TypeAlias = Callable[[tuple[int, ...], int, int], Var]


def _attend(
    batch: tuple[int, ...],
    t_q: int,
    t_k: int,
    values: VarArray,
    allowed: npt.NDArray[np.bool_],
    additive: VarArray | None,
    score: PairScore,
    sinks: VarArray | None = None,
) -> tuple[VarArray, VarArray, VarArray]:
    """Context, weights and log-sum-exp, computing the score of allowed pairs only.

    ``sinks`` (``[H]``, broadcast to the last batch axis, the heads) joins each
    row's denominator (``sdpa.sinks``).
    """
    v = _expand(values, batch, 2)
    heads = None if sinks is None else np.broadcast_to(sinks, batch[-1:])
    weights = _empty((*batch, t_q, t_k))
    context = _empty((*batch, t_q, v.shape[-1]))
    lse = _empty((*batch, t_q))
    for b in np.ndindex(batch):
        sink = None if heads is None else cast(Var, heads[b[-1]])
        for i in range(t_q):
            logits: dict[int, Var] = {}
            for j in range(t_k):
                if not allowed[(*b, i, j)]:
                    continue
                logit = score(b, i, j)
                if additive is not None:
                    logit = logit + additive[(*b, i, j)]
                logits[j] = logit
            row, lse[(*b, i)] = _normalize(logits, t_k, sink)
            weights[(*b, i)] = row
            read = sorted(logits)
            for c in range(v.shape[-1]):
                context[(*b, i, c)] = dot([row[j] for j in read], [v[(*b, j, c)] for j in read])
    return context, weights, lse


def _pair_score(
    score: str,
    q: VarArray,
    k: VarArray,
    *,
    scale: float | None,
    W_a: VarArray | None,
    W_q: VarArray | None,
    W_k: VarArray | None,
    v_a: VarArray | None,
) -> PairScore:
    """The score of one (query, key) pair of the chosen kind, parameters bound."""
    if score == "dot":
        return lambda b, i, j: dot(q[(*b, i)], k[(*b, j)])
    if score == "scaled_dot":
        lam = default_scale(q.shape[-1]) if scale is None else scale
        return lambda b, i, j: dot(q[(*b, i)], k[(*b, j)]) * lam
    if score == "general":
        assert W_a is not None
        w = W_a
        rows: dict[tuple[int, ...], list[Var]] = {}

        def general(b: tuple[int, ...], i: int, j: int) -> Var:
            if (*b, i) not in rows:  # s_i^T W_a, once per query row
                rows[(*b, i)] = [dot(q[(*b, i)], w[:, c]) for c in range(w.shape[1])]
            return dot(rows[(*b, i)], k[(*b, j)])

        return general
    if score == "location":
        assert W_a is not None
        w = W_a
        # Note: the location score reads the query alone; keys are never read.
        return lambda b, i, j: dot(w[j], q[(*b, i)])
    if score == "concat":
        assert W_a is not None
        assert v_a is not None
        d_q = q.shape[-1]
        w_q, w_k, vec = W_a[:, :d_q], W_a[:, d_q:], v_a
    else:
        assert W_q is not None
        assert W_k is not None
        assert v_a is not None
        w_q, w_k, vec = W_q, W_k, v_a
    hq, hk = _projected(q, w_q), _projected(k, w_k)  # [..., Tq, d_a], [..., Tk, d_a]

    def tanh_layer(b: tuple[int, ...], i: int, j: int) -> Var:
        hidden = [tanh(hq[(*b, i, r)] + hk[(*b, j, r)]) for r in range(vec.shape[0])]
        return dot(list(vec), hidden)

    return tanh_layer


def attention(
    query: VarArray,
    keys: VarArray,
    values: VarArray,
    /,
    *,
    score: str = "dot",
    mask: npt.NDArray[np.bool_] | VarArray | None = None,
    scale: float | None = None,
    W_a: VarArray | None = None,
    W_q: VarArray | None = None,
    W_k: VarArray | None = None,
    v_a: VarArray | None = None,
) -> tuple[VarArray, VarArray]:
    r"""``(context, weights)``: the softmax over j of ``score(s_i, h_j)``, then the weighted sum."""
    batch = _batch((query, 2), (keys, 2), (values, 2))
    t_q, t_k = query.shape[-2], keys.shape[-2]
    allowed, additive, full = _mask_parts(mask, (*batch, t_q, t_k))
    batch = full[:-2]
    q, k = _expand(query, batch, 2), _expand(keys, batch, 2)
    pair = _pair_score(score, q, k, scale=scale, W_a=W_a, W_q=W_q, W_k=W_k, v_a=v_a)
    context, weights, _ = _attend(batch, t_q, t_k, values, allowed, additive, pair)
    return context, weights


def scaled_dot_product_attention(
    query: VarArray,
    key: VarArray,
    value: VarArray,
    /,
    *,
    mask: npt.NDArray[np.bool_] | VarArray | None = None,
    is_causal: bool = False,
    causal_alignment: CausalAlignment = "top_left",
    scale: float | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    window: Window | None = None,
    query_offset: int | npt.ArrayLike | None = None,
    key_lengths: npt.ArrayLike | None = None,
    sinks: VarArray | None = None,
    return_lse: bool = False,
) -> tuple[VarArray, VarArray] | tuple[VarArray, VarArray, VarArray]:
    r"""``(context, weights)`` of :math:`\operatorname{softmax}(\lambda Q K^\top + M) V`,
    the scores capped to :math:`c \tanh(s / c)` before the mask (``sdpa.softcap``) and the
    keys restricted as :mod:`attnref.masking` derives it (``sdpa.window``,
    ``sdpa.query-offset``, ``sdpa.key-lengths``); with ``return_lse`` also each row's
    log-sum-exp (``sdpa.log-sum-exp``).

    The sink :math:`\sigma_h` of query head ``h`` (the last batch axis) is one more
    logit in the denominator of each of its rows, neither scaled, capped nor masked
    (``sdpa.sinks``): a row with no allowed key has zero weights and context and
    log-sum-exp :math:`\sigma_h`.
    """
    if enable_gqa:
        # Note: query head h reads key/value head h // g, heads repeated interleaved.
        group = query.shape[-3] // key.shape[-3]
        key = np.repeat(key, group, axis=-3)
        value = np.repeat(value, group, axis=-3)
    batch = _batch((query, 2), (key, 2), (value, 2))
    t_q, t_k = query.shape[-2], key.shape[-2]
    # Note: the patterns are index arithmetic, the same for the truth as for the
    # reference; tests/test_reference.py and tests/property/test_restrictions.py check
    # them against explicit loops.
    structural = allowed_positions(
        (*batch, t_q, t_k),
        is_causal=is_causal,
        alignment=causal_alignment,
        window=None if window is None else (window[0], window[1]),
        query_offset=query_offset,
        key_lengths=key_lengths,
    )
    allowed, additive, full = _mask_parts(mask, (*batch, t_q, t_k))
    allowed = allowed & structural
    batch = full[:-2]
    q, k = _expand(query, batch, 2), _expand(key, batch, 2)
    lam = default_scale(query.shape[-1]) if scale is None else scale

    def pair(b: tuple[int, ...], i: int, j: int) -> Var:
        s = dot(q[(*b, i)], k[(*b, j)]) * lam
        if softcap is None:
            return s
        return tanh(s / softcap) * softcap

    context, weights, lse = _attend(batch, t_q, t_k, value, allowed, additive, pair, sinks)
    return (context, weights, lse) if return_lse else (context, weights)


FUNCTIONS: dict[str, Callable[..., VarArray | tuple[VarArray, ...]]] = {
    "score_dot": score_dot,
    "score_scaled_dot": score_scaled_dot,
    "score_general": score_general,
    "score_concat": score_concat,
    "score_additive": score_additive,
    "score_location": score_location,
    "attention_distribution": attention_distribution,
    "log_sum_exp": log_sum_exp,
    "local_m_distribution": local_m_distribution,
    "local_p_position": local_p_position,
    "local_p_distribution": local_p_distribution,
    "attention_value": attention_value,
    "concatenate_context": concatenate_context,
    "attentional_hidden_state": attentional_hidden_state,
    "output_distribution": output_distribution,
    "attention": attention,
    "scaled_dot_product_attention": scaled_dot_product_attention,
}
"""The exact implementation of each spec function, by its spec name."""


# --- evaluation and rounding --------------------------------------------------------------


def to_float64(x: Number) -> float | complex:
    """``x`` rounded once to the nearest float64, ties to even, subnormals included."""
    if isinstance(x, mpmath.mpc):
        return complex(_round(x.real), _round(x.imag))
    return _round(mpmath.mpf(x))


def _round(x: Number) -> float:
    sign, man, exponent, bits = x._mpf_
    if not man:
        return float(x)  # 0, inf, -inf or nan: exact
    top = exponent + bits  # 2**(top - 1) <= |x| < 2**top
    if top < -1074:  # |x| < 2**-1075, below half the smallest subnormal
        return -0.0 if sign else 0.0
    if top > 1024:
        return -math.inf if sign else math.inf
    lsb = max(top - 53, -1074)  # exponent of the last bit a float64 keeps here
    if lsb > exponent:
        kept = man >> (lsb - exponent)
        rest = man - (kept << (lsb - exponent))
        half = 1 << (lsb - exponent - 1)
        if rest > half or (rest == half and kept & 1):
            kept += 1
    else:
        kept = man << (exponent - lsb)
    try:
        value = math.ldexp(kept, lsb)
    except OverflowError:
        value = math.inf
    return -value if sign else value


@dataclass(frozen=True)
class Tape:
    """One exact evaluation: the outputs and the tape's leaves of every floating argument."""

    outputs: tuple[VarArray, ...]
    leaves: dict[str, VarArray]

    def vjp(
        self, cotangents: Sequence[npt.NDArray[Any]], *, absolute: bool = False
    ) -> dict[str, npt.NDArray[np.object_]]:
        """The input gradients :math:`\\sum_i c_i\\, \\partial y_i / \\partial x` (mpmath numbers).

        With ``absolute``, the sums of the sizes of the chain-rule paths instead
        (see :func:`backward`).
        """
        seeds = [
            (y, mpmath.mpmathify(c))
            for out, cot in zip(self.outputs, cotangents, strict=True)
            for y, c in zip(out.ravel(), np.asarray(cot).ravel(), strict=True)
        ]
        adjoint = backward(seeds, absolute=absolute)
        return {
            name: np.vectorize(lambda v: adjoint.get(id(v), mpmath.mpf(0)), otypes=[object])(leaves)
            for name, leaves in self.leaves.items()
        }


Argument: TypeAlias = Any


def _lift(x: npt.NDArray[Any]) -> VarArray:
    out = _empty(x.shape)
    for index in np.ndindex(x.shape):
        value: Any = x[index]
        out[index] = leaf(value.item() if isinstance(value, np.generic) else value)
    return out


def _is_float_array(x: object) -> bool:
    """A floating array, or an object array of numbers (the generator's perturbed inputs)."""
    return isinstance(x, np.ndarray) and x.dtype.kind in "fcO"


def record(
    function: str,
    inputs: Mapping[str, Argument],
    options: Mapping[str, Argument],
    *,
    window_positions: npt.NDArray[Any] | None = None,
) -> Tape:
    """Evaluate ``function`` on float arrays at the working precision of the mpmath context.

    ``inputs`` are the positional arguments in order (``None`` for an omitted
    optional one), ``options`` the keyword arguments. Every floating array
    among them becomes a leaf of the tape (additive masks included); boolean
    masks, integers, flags and scales are passed as they are.
    """
    leaves: dict[str, VarArray] = {}

    def convert(name: str, value: Argument) -> Argument:
        if _is_float_array(value):
            leaves[name] = _lift(value)
            return leaves[name]
        return value

    args = [convert(name, value) for name, value in inputs.items()]
    while args and args[-1] is None:
        args.pop()
    kwargs = {name: convert(name, value) for name, value in options.items()}
    if function == "local_p_distribution":
        kwargs["window_positions"] = window_positions
    result = FUNCTIONS[function](*args, **kwargs)
    outputs = result if isinstance(result, tuple) else (result,)
    return Tape(tuple(outputs), leaves)


class NotCorrectlyRoundedError(ArithmeticError):
    """The ladder of :data:`PRECISIONS` ended before two precisions rounded alike."""


Rounded: TypeAlias = tuple[tuple[npt.NDArray[Any], ...], dict[str, npt.NDArray[Any]]]


def _rounded(values: npt.NDArray[np.object_], dtype: type) -> npt.NDArray[Any]:
    out: npt.NDArray[Any] = np.empty(values.shape, dtype=dtype)
    for index in np.ndindex(values.shape):
        item = values[index]
        out[index] = to_float64(item.value if isinstance(item, Var) else item)
    return out


def truth(
    function: str,
    inputs: Mapping[str, Argument],
    options: Mapping[str, Argument],
    cotangents: Sequence[npt.NDArray[Any]] | None = None,
) -> Rounded:
    """Correctly rounded outputs (and, given cotangents, input gradients) in float64.

    Evaluates at each precision of :data:`PRECISIONS` in turn and returns as
    soon as two consecutive ones give identical float64 results (NaN never
    occurs: every output of a valid call is finite, but for the exact ``-inf``
    log-sum-exp of a row with no allowed key, which equals itself).
    """
    complex_inputs = any(
        _is_float_array(v) and v.dtype.kind == "c"
        for v in itertools.chain(inputs.values(), options.values())
    )
    dtype: type = np.complex128 if complex_inputs else np.float64
    previous: Rounded | None = None
    for prec in PRECISIONS:
        with mp.workprec(prec):
            evaluation = record(function, inputs, options)
            outputs = tuple(_rounded(out, dtype) for out in evaluation.outputs)
            grads = (
                {}
                if cotangents is None
                else {k: _rounded(g, dtype) for k, g in evaluation.vjp(cotangents).items()}
            )
        current = (outputs, grads)
        if previous is not None and _same(previous, current):
            return current
        previous = current
    raise NotCorrectlyRoundedError(
        f"{function}: results still change between {PRECISIONS[-2]} and {PRECISIONS[-1]} bits"
    )


def _same(a: Rounded, b: Rounded) -> bool:
    pairs = list(zip(a[0], b[0], strict=True))
    pairs += [(a[1][k], b[1][k]) for k in a[1]]
    return all(np.array_equal(x, y) for x, y in pairs)
