"""The golden case tables: one table per spec function, one row per golden case.

A :class:`CaseTable` lists the cases of one spec function in the order of its
vector file. A :class:`Returns` row is a call with an answer: its name, the
clauses it exercises, the positional arguments by name (``inputs``, in the order
of the signature, ``None`` for an omitted optional one) and the keyword
arguments (``options``). A :class:`Raises` row is a call that must raise: its
name, the one clause it breaks, the class of :mod:`attnspec.errors` expected,
and the arguments that differ from the table's ``valid`` call.
:mod:`attnref.vectors.golden` turns the rows into
:class:`~attnref.vectors.golden.CasePlan` and computes their answers.

Inputs come from :class:`InputDraw`, a pseudo-random stream seeded by a string.
The tables of related functions share a stream (the score functions draw from
``"scores"``, the distributions from ``"distribution"``, the value and output
steps from ``"value"``, the composites from ``"composite"``, the complex rows
from ``"complex"``) and some inputs: ``score_general/identity`` reuses the query
and keys of ``score_dot/basic``, ``score_additive/basic`` the weights of
``score_concat/basic`` split in two. A stream is drawn in the order the code is
written (a table's setup lines, then its rows), so a draw added anywhere but at
the end of a stream changes every later input of that stream, and so their
vectors (``python -m attnref.vectors.golden --check`` names the files). A new row
that needs fresh inputs elsewhere can draw them from a stream of its own, such
as ``InputDraw("score_dot/new-row")``, which changes nothing else.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from math import inf, nan
from typing import Any

import numpy as np
import numpy.typing as npt

from attnspec.errors import (
    ArgumentError,
    AttnSpecError,
    DTypeError,
    NonFiniteInputError,
    ShapeError,
)

__all__ = ["CaseTable", "InputDraw", "Raises", "Returns", "all_tables"]

F64 = npt.NDArray[np.float64]
Arguments = Mapping[str, Any]
"""Arguments of a spec function by parameter name."""


class InputDraw:
    """Platform-independent pseudo-random inputs, seeded by a string.

    Values are dyadic rationals built from integers of :class:`random.Random`
    (whose integer stream is stable across Python versions), so every case
    is bit-identical everywhere without relying on NumPy's generators.
    """

    def __init__(self, seed: str) -> None:
        self._random = random.Random(zlib.crc32(seed.encode()))

    def uniform(self, *shape: int, scale: float = 1.0, bits: int = 52) -> F64:
        """Values in ``[-2, 2) * scale`` with ``bits`` random bits below the binary point."""
        count = math.prod(shape)
        ints = [self._random.randrange(-(2 ** (bits + 1)), 2 ** (bits + 1)) for _ in range(count)]
        return np.array([math.ldexp(i, -bits) * scale for i in ints], dtype=np.float64).reshape(
            shape
        )

    def mask(self, *shape: int, keep: float = 0.7) -> npt.NDArray[np.bool_]:
        """A boolean mask with about ``keep`` of the entries ``True``."""
        count = math.prod(shape)
        bits = [self._random.random() < keep for _ in range(count)]
        return np.array(bits, dtype=bool).reshape(shape)

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        return self._random.randint(low, high)

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self._random.random() < p

    def complex(self, *shape: int) -> npt.NDArray[np.complex128]:
        """Complex values with real and imaginary parts as :meth:`uniform`."""
        return self.uniform(*shape) + 1j * self.uniform(*shape, scale=0.25)


@dataclass(frozen=True)
class Returns:
    """A row with an answer: the call and the clauses it exercises.

    ``vjp=False`` gives the case no cotangents and no gradient (where the
    gradient jumps, where its error scale would overflow, for complex inputs);
    ``float32=False`` lists it for float64 only (where float32 cannot hold the
    inputs, or rounding to it would erase what the case is about).
    """

    name: str
    clauses: tuple[str, ...]
    inputs: Arguments
    options: Arguments = field(default_factory=dict)
    _: KW_ONLY
    description: str = ""
    vjp: bool = True
    float32: bool = True


@dataclass(frozen=True)
class Raises:
    """A row that must raise ``error``, breaking ``clause``.

    The call is the table's ``valid`` inputs with ``inputs`` replacing or
    adding to them, and ``options`` as the keyword arguments.
    """

    name: str
    clause: str
    error: type[AttnSpecError]
    inputs: Arguments = field(default_factory=dict)
    options: Arguments = field(default_factory=dict)


@dataclass(frozen=True)
class CaseTable:
    """The golden cases of one spec function, in the order of its vector file."""

    function: str
    rows: tuple[Returns | Raises, ...]
    valid: Arguments = field(default_factory=dict)
    """The inputs of a valid call, which the :class:`Raises` rows change."""


def all_tables() -> Iterator[CaseTable]:
    """Every table, one per spec function, drawing its inputs as it goes."""
    complex_inputs = _complex_inputs()
    yield from _score_tables()
    yield from _distribution_tables(complex_inputs)
    yield from _value_tables()
    yield from _composite_tables(complex_inputs)


def _poke(a: npt.NDArray[Any], index: tuple[int, ...], value: float) -> F64:
    """A float copy of ``a`` with one entry replaced."""
    out = np.array(a, dtype=np.float64)
    out[index] = value
    return out


_BIG = float(np.finfo(np.float64).max)
_SHAPE = ("score.shape",)
_SOFTMAX = ("distribution.softmax", "distribution.nonnegative", "distribution.sums-to-one")
_COMPLEX = ("input.complex-extension",)


def _complex_inputs() -> dict[str, Arguments]:
    """The inputs of the ``complex`` rows by function, from one stream in this order."""
    d = InputDraw("complex")
    return {
        "attention_distribution": {"scores": d.complex(2, 4)},
        "scaled_dot_product_attention": {
            "query": d.complex(2, 3),
            "key": d.complex(4, 3),
            "value": d.complex(4, 2),
        },
        "local_p_position": {"query": d.complex(3, 2), "W_p": d.uniform(3, 2), "v_p": d.uniform(3)},
    }


# --- scores -------------------------------------------------------------------------------


def _score_tables() -> Iterator[CaseTable]:
    d = InputDraw("scores")
    q, k = d.uniform(2, 3, 4), d.uniform(2, 5, 4)
    yield _score_dot(d, q, k)
    yield _score_scaled_dot(d, q, k)
    yield _score_general(d, q, k)
    query, keys = d.uniform(2, 3, 3), d.uniform(2, 4, 2)
    w_q, w_k, v_a = d.uniform(4, 3), d.uniform(4, 2), d.uniform(4)
    yield _score_concat(d, query, keys, w_q, w_k, v_a)
    yield _score_additive(d, query, keys, w_q, w_k, v_a)
    yield _score_location(d)


def _score_dot(d: InputDraw, q: F64, k: F64) -> CaseTable:
    rows = (
        Returns("basic", ("score.dot", *_SHAPE), {"query": q, "keys": k}),
        Returns(
            "broadcast-batch",
            ("score.dot", "input.batch-broadcast", *_SHAPE),
            {"query": d.uniform(2, 1, 2, 3), "keys": d.uniform(3, 3, 3)},
            description="batch shapes (2, 1) and (3,) broadcast to (2, 3)",
        ),
        Returns(
            "single",
            ("score.dot", *_SHAPE),
            {"query": d.uniform(1, 1), "keys": d.uniform(1, 1)},
            description="Tq = Tk = d = 1",
        ),
        Returns(
            "cancellation",
            ("score.dot", *_SHAPE),
            {
                "query": np.array([[1.0, 1.0, 2.0**-30]]),
                "keys": np.array([[1.0 + 2.0**-29, -1.0, -2.0], [0.5, 0.25, 3.0]]),
            },
            description="a dot product that cancels to 2**-29 - 2**-29 = 0 exactly",
        ),
        Returns(
            "empty-query",
            ("score.dot", "input.nonempty", *_SHAPE),
            {"query": np.zeros((0, 3)), "keys": d.uniform(2, 3)},
            description="Tq = 0 is allowed and gives an empty [0, Tk] result",
        ),
        Raises("feature-mismatch", "input.sizes-agree", ShapeError, {"keys": d.uniform(5, 3)}),
        Raises("rank-1", "input.rank", ShapeError, {"query": d.uniform(4)}),
        Raises("empty-keys", "input.nonempty", ShapeError, {"keys": np.zeros((0, 4))}),
        Raises(
            "empty-features",
            "input.nonempty",
            ShapeError,
            {"query": np.zeros((3, 0)), "keys": np.zeros((5, 0))},
        ),
        Raises(
            "batch-mismatch",
            "input.batch-broadcast",
            ShapeError,
            {"query": d.uniform(2, 3, 4), "keys": d.uniform(3, 5, 4)},
        ),
        Raises(
            "nan-query", "input.finite", NonFiniteInputError, {"query": _poke(q[0], (1, 2), nan)}
        ),
        Raises("inf-keys", "input.finite", NonFiniteInputError, {"keys": _poke(k[0], (0, 0), inf)}),
        Raises(
            "integer-dtype", "input.float-dtype", DTypeError, {"query": np.arange(12).reshape(3, 4)}
        ),
    )
    return CaseTable("score_dot", rows, valid={"query": q[0], "keys": k[0]})


def _score_scaled_dot(d: InputDraw, q: F64, k: F64) -> CaseTable:
    default = ("score.scaled-dot", "score.default-scale", *_SHAPE)
    applied = ("score.scaled-dot", "score.scale-applied", *_SHAPE)
    rows = (
        Returns(
            "default-scale-d4",
            default,
            {"query": q, "keys": k},
            {"scale": None},
            description="d = 4: the default scale 1/sqrt(4) = 0.5 is exact",
        ),
        Returns(
            "default-scale-d2-unit",
            default,
            {
                "query": np.array([[1.0, 0.0], [0.0, 2.0]]),
                "keys": np.array([[1.0, 0.0], [1.0, 1.0]]),
            },
            {"scale": None},
            description=(
                "d = 2 with unit vectors: the scores are multiples of 1/sqrt(2) rounded once"
            ),
        ),
        Returns(
            "default-scale-d3",
            default,
            {"query": d.uniform(3, 3), "keys": d.uniform(4, 3)},
            {"scale": None},
        ),
        Returns(
            "explicit-scale", ("score.scaled-dot", *_SHAPE), {"query": q, "keys": k}, {"scale": 0.3}
        ),
        Returns("zero-scale", applied, {"query": q, "keys": k}, {"scale": 0.0}),
        Returns("negative-scale", applied, {"query": q, "keys": k}, {"scale": -1.5}),
        Raises("nan-scale", "input.scale-finite", ArgumentError, options={"scale": nan}),
        Raises("inf-scale", "input.scale-finite", ArgumentError, options={"scale": inf}),
        Raises("bool-scale", "input.scale-finite", DTypeError, options={"scale": True}),
    )
    return CaseTable("score_scaled_dot", rows, valid={"query": q[0], "keys": k[0]})


def _score_general(d: InputDraw, q: F64, k: F64) -> CaseTable:
    query, keys, weights = d.uniform(2, 3, 3), d.uniform(2, 4, 5), d.uniform(3, 5)
    rows = (
        Returns(
            "basic", ("score.general", *_SHAPE), {"query": query, "keys": keys, "W_a": weights}
        ),
        Returns(
            "identity",
            ("score.general", *_SHAPE),
            {"query": q, "keys": k, "W_a": np.eye(4)},
            description="W_a = I: the same expected scores as score_dot/basic",
        ),
        Returns(
            "broadcast-batch",
            ("score.general", "input.batch-broadcast", *_SHAPE),
            {"query": d.uniform(1, 2, 3), "keys": d.uniform(3, 4, 2), "W_a": d.uniform(3, 2)},
        ),
        Raises("weight-shape", "input.sizes-agree", ShapeError, {"W_a": d.uniform(5, 3)}),
        Raises("weight-rank", "input.rank", ShapeError, {"W_a": d.uniform(1, 3, 5)}),
        Raises(
            "nan-weight", "input.finite", NonFiniteInputError, {"W_a": _poke(weights, (0, 1), nan)}
        ),
    )
    return CaseTable(
        "score_general", rows, valid={"query": query[0], "keys": keys[0], "W_a": weights}
    )


def _score_concat(d: InputDraw, query: F64, keys: F64, w_q: F64, w_k: F64, v_a: F64) -> CaseTable:
    w_a = np.hstack([w_q, w_k])
    rows = (
        Returns(
            "basic",
            ("score.concat", *_SHAPE),
            {"query": query, "keys": keys, "W_a": w_a, "v_a": v_a},
        ),
        Returns(
            "saturated",
            ("score.concat", *_SHAPE),
            {"query": query[0], "keys": keys[0], "W_a": 40 * w_a, "v_a": v_a},
            description="pre-activations of size ~100: tanh saturates to +-1",
        ),
        Raises("weight-width", "input.sizes-agree", ShapeError, {"W_a": d.uniform(4, 6)}),
        Raises("vector-length", "input.sizes-agree", ShapeError, {"v_a": d.uniform(3)}),
    )
    return CaseTable(
        "score_concat", rows, valid={"query": query[0], "keys": keys[0], "W_a": w_a, "v_a": v_a}
    )


def _score_additive(d: InputDraw, query: F64, keys: F64, w_q: F64, w_k: F64, v_a: F64) -> CaseTable:
    rows = (
        Returns(
            "basic",
            ("score.additive", *_SHAPE),
            {"query": query, "keys": keys, "W_q": w_q, "W_k": w_k, "v_a": v_a},
            description="the weights of score_concat/basic split: the same expected scores",
        ),
        Returns(
            "broadcast-batch",
            ("score.additive", "input.batch-broadcast", *_SHAPE),
            {
                "query": d.uniform(2, 1, 2, 3),
                "keys": d.uniform(3, 3, 2),
                "W_q": w_q,
                "W_k": w_k,
                "v_a": v_a,
            },
        ),
        Raises("weight-rows", "input.sizes-agree", ShapeError, {"W_k": d.uniform(3, 2)}),
    )
    return CaseTable(
        "score_additive",
        rows,
        valid={"query": query[0], "keys": keys[0], "W_q": w_q, "W_k": w_k, "v_a": v_a},
    )


def _score_location(d: InputDraw) -> CaseTable:
    query, weights = d.uniform(2, 3, 4), d.uniform(5, 4)
    # Note: the two bad weights come before the queries of their rows in the stream.
    narrow, flat = d.uniform(5, 3), d.uniform(5)
    rows = (
        Returns("basic", ("score.location", *_SHAPE), {"query": query, "W_a": weights}),
        Raises(
            "weight-width",
            "input.sizes-agree",
            ShapeError,
            {"query": d.uniform(3, 4), "W_a": narrow},
        ),
        Raises("weight-rank", "input.rank", ShapeError, {"query": d.uniform(3, 4), "W_a": flat}),
    )
    return CaseTable("score_location", rows)


# --- distributions ------------------------------------------------------------------------


def _distribution_tables(complex_inputs: Mapping[str, Arguments]) -> Iterator[CaseTable]:
    d = InputDraw("distribution")
    distribution = _attention_distribution(d, complex_inputs["attention_distribution"])
    yield distribution
    yield _log_sum_exp(distribution)
    yield _local_m_distribution(d)
    yield _local_p_position(d, complex_inputs["local_p_position"])
    yield _local_p_distribution(d)


def _attention_distribution(d: InputDraw, complex_inputs: Arguments) -> CaseTable:
    s = d.uniform(2, 3, 5, scale=2.0)
    mask = d.mask(2, 3, 5)
    mask[..., 0] = True
    additive = np.where(mask, d.uniform(2, 3, 5), -inf)
    base = d.uniform(2, 4, bits=20)
    full = mask[0].copy()
    full[1] = False
    poisoned = _poke(s[0], (0, 1), nan)
    poisoned[2, 3] = inf
    unread = np.ones((3, 5), dtype=bool)
    unread[0, 1] = unread[2, 3] = False
    rows = (
        Returns("basic", _SOFTMAX, {"scores": s}),
        Returns(
            "boolean-mask",
            (*_SOFTMAX, "distribution.masked-zero", "distribution.mask-polarity"),
            {"scores": s},
            {"mask": mask},
        ),
        Returns(
            "all-true-mask",
            (*_SOFTMAX, "distribution.mask-polarity"),
            {"scores": s},
            {"mask": np.ones((5,), dtype=bool)},
            description="an all-True mask equals no mask: the same weights as basic",
        ),
        Returns(
            "additive-mask",
            (*_SOFTMAX, "distribution.additive-mask", "distribution.masked-zero"),
            {"scores": s},
            {"mask": additive},
            description="finite entries bias the scores, -inf disallows",
        ),
        Returns(
            "large-finite-mask",
            (*_SOFTMAX, "distribution.additive-mask", "distribution.stable"),
            {"scores": s[0]},
            {"mask": np.where(mask[0], 0.0, -1e30)},
            description="-1e30 is a finite bias, not a disallowed key: exp underflows to 0",
        ),
        Returns(
            "minus-inf-scores",
            (*_SOFTMAX, "distribution.masked-zero"),
            {"scores": np.where(mask[0], s[0], -inf)},
            description="a -inf score disallows its key",
        ),
        Returns(
            "fully-masked-row",
            ("distribution.fully-masked-row", "distribution.masked-zero"),
            {"scores": s[0]},
            {"mask": full},
            description="row 1 has no allowed key: all-zero weights with zero gradient",
        ),
        Returns(
            "fully-masked-additive",
            ("distribution.fully-masked-row", "distribution.additive-mask"),
            {"scores": s[0]},
            {"mask": np.where(full, 0.0, -inf)},
        ),
        Returns(
            "all-minus-inf-row",
            ("distribution.fully-masked-row",),
            {"scores": np.where(full, s[0], -inf)},
        ),
        Returns(
            "extreme-logits",
            (*_SOFTMAX, "distribution.stable"),
            {
                "scores": np.array(
                    [[_BIG, -_BIG, _BIG / 2, 0.0], [_BIG, np.nextafter(_BIG, 0), -_BIG, _BIG]]
                )
            },
            description="scores at +-float64 max: no overflow, no NaN",
            vjp=False,
            float32=False,
        ),
        Returns(
            "overflow-range",
            (*_SOFTMAX, "distribution.stable"),
            {
                "scores": np.array(
                    [[710.0, 709.5, 0.0, -745.0], [-1000.0, -1001.0, -1002.5, -1000.25]]
                )
            },
            description="exp overflows (710) or underflows (-1000) without the max shift",
            float32=False,
        ),
        Returns(
            "overflowing-logits",
            (*_SOFTMAX, "distribution.stable", "distribution.additive-mask"),
            {"scores": np.array([[-1e308, -1.5e308, 0.5], [-1e308, -1.25e308, -1.5e308]])},
            {"mask": np.array([[-1e308, -1e308, -inf], [-1e308, -1e308, -1e308]])},
            description=(
                "score + mask is finite in exact arithmetic (about -2e308) though it overflows "
                "float64: the keys are allowed and each row sums to one"
            ),
            vjp=False,
            float32=False,
        ),
        Returns("shift-base", (*_SOFTMAX, "distribution.shift-invariant"), {"scores": base}),
        Returns(
            "shift-by-1024",
            (*_SOFTMAX, "distribution.shift-invariant"),
            {"scores": base + 1024.0},
            description="shift-base plus 1024 (exact): the same expected weights",
        ),
        Returns(
            "ties",
            ("distribution.ties-uniform", *_SOFTMAX),
            {"scores": np.array([[1.5, 1.5, 1.5], [-7.0, -7.0, -7.0]])},
            description="equal scores: weight 1/3 each",
        ),
        Returns(
            "ties-masked",
            ("distribution.ties-uniform", "distribution.masked-zero"),
            {"scores": np.array([[2.0, 2.0, 2.0, 2.0, 2.0]])},
            {"mask": np.array([True, False, True, True, True])},
            description="four allowed equal scores: 1/4 each, 0 at the masked key",
        ),
        Returns(
            "near-ties", _SOFTMAX, {"scores": np.array([[2.0, 2.0 + 2.0**-50, 2.0 - 2.0**-49]])}
        ),
        Returns(
            "mask-broadcast",
            (*_SOFTMAX, "input.batch-broadcast", "distribution.masked-zero"),
            {"scores": s},
            {
                "mask": np.array(
                    [[[True, True, False, True, False]], [[True, False, True, True, True]]]
                )
            },
            description="a [2, 1, Tk] mask broadcast over the query rows",
        ),
        Returns(
            "mask-adds-batch",
            (*_SOFTMAX, "input.batch-broadcast"),
            {"scores": s[0]},
            {
                "mask": np.array(
                    [[[True, True, True, True, True]], [[False, True, True, False, True]]]
                )
            },
            description="a mask with a leading batch axis gives the result that axis too",
        ),
        Returns(
            "poison-masked",
            (
                "input.unread-nonfinite",
                "input.unread-positions",
                "input.unread-gradient",
                "distribution.masked-zero",
            ),
            {"scores": poisoned},
            {"mask": unread},
            description="NaN and +inf at masked positions are not read; their gradient is 0",
        ),
        Raises(
            "mask-shape",
            "distribution.mask-shape",
            ShapeError,
            options={"mask": np.ones((4,), dtype=bool)},
        ),
        Raises(
            "mask-dtype",
            "distribution.mask-shape",
            DTypeError,
            options={"mask": np.ones((3, 5), dtype=np.int64)},
        ),
        Raises(
            "nan-additive",
            "distribution.additive-mask",
            NonFiniteInputError,
            options={"mask": _poke(np.zeros((3, 5)), (1, 1), nan)},
        ),
        Raises(
            "plus-inf-additive",
            "distribution.additive-mask",
            NonFiniteInputError,
            options={"mask": _poke(np.zeros((3, 5)), (1, 1), inf)},
        ),
        Raises(
            "nan-score", "input.finite", NonFiniteInputError, {"scores": _poke(s[0], (2, 2), nan)}
        ),
        Raises(
            "plus-inf-score",
            "input.finite",
            NonFiniteInputError,
            {"scores": _poke(s[0], (2, 2), inf)},
        ),
        Raises("rank-1", "input.rank", ShapeError, {"scores": s[0, 0]}),
        Raises("empty-keys", "input.nonempty", ShapeError, {"scores": np.zeros((3, 0))}),
        Raises(
            "integer-scores",
            "input.float-dtype",
            DTypeError,
            {"scores": np.ones((2, 3), dtype=np.int64)},
        ),
        Returns(
            "complex",
            (*_COMPLEX, "distribution.softmax"),
            complex_inputs,
            {"mask": np.array([[True, True, False, True], [False, True, True, True]])},
            description="the analytic continuation, shifted by the largest real part",
            vjp=False,
            float32=False,
        ),
    )
    return CaseTable("attention_distribution", rows, valid={"scores": s[0]})


def _log_sum_exp(distribution: CaseTable) -> CaseTable:
    r"""The log-sum-exp: most rows make the call of the ``attention_distribution`` row of
    the same name, so that :math:`\exp(e + m - \ell)` meets that file's weights
    (``lse.normalizes``), and its bad calls; the rest draw from the stream
    ``"log_sum_exp"``."""
    d = InputDraw("log_sum_exp")
    named = {row.name: row for row in distribution.rows}

    def same(name: str, clauses: tuple[str, ...], description: str = "") -> Returns:
        row = named[name]
        assert isinstance(row, Returns)
        told = description or f"the call of attention_distribution/{name}"
        return Returns(
            name,
            clauses,
            row.inputs,
            row.options,
            description=told,
            vjp=row.vjp,
            float32=row.float32,
        )

    bad_calls = [row for row in distribution.rows if isinstance(row, Raises)]
    formula = ("lse.formula", "lse.normalizes")
    empty = ("lse.fully-masked-row", "lse.formula")
    huge = np.array(
        [
            [2.0**1022, 2.0**1022, -_BIG, 0.0],
            [-(2.0**1022), -(2.0**1022), -(2.0**1022), -_BIG],
        ]
    )
    rows: tuple[Returns | Raises, ...] = (
        same("basic", formula),
        same("boolean-mask", (*formula, "distribution.mask-polarity", "distribution.masked-zero")),
        same("additive-mask", (*formula, "distribution.additive-mask")),
        same(
            "fully-masked-row",
            empty,
            "row 1 has no allowed key: -inf, not NaN, with zero gradient",
        ),
        same("fully-masked-additive", (*empty, "distribution.additive-mask")),
        same("all-minus-inf-row", empty, "a row of -inf scores: the log of an empty sum"),
        Returns(
            "huge-scores",
            ("lse.stable", "lse.formula"),
            {"scores": huge},
            description=(
                "scores of 2**1022 and -float64 max: exp overflows or underflows without the "
                "shift; lse = 2**1022 + log 2 and -2**1022 + log 3, finite, round to +-2**1022"
            ),
            vjp=False,
            float32=False,
        ),
        same(
            "overflow-range",
            ("lse.stable", *formula),
            "exp overflows (710) or underflows (-1000) without the max shift",
        ),
        same("ties", formula, "equal scores: lse = e + log 3, exactly rounded"),
        same("near-ties", formula),
        Returns(
            "single-key",
            ("lse.formula",),
            {"scores": d.uniform(3, 1, scale=4.0)},
            description="Tk = 1: lse = e + log 1, the score itself",
        ),
        Returns(
            "batched",
            ("lse.formula", "input.batch-broadcast"),
            {"scores": d.uniform(2, 2, 3, 4, scale=4.0)},
            {"mask": d.mask(2, 1, 1, 4, keep=0.8) | np.eye(1, 4, 1, dtype=bool)},
            description="a [2, 1, 1, Tk] key mask broadcast over heads and queries",
        ),
        same("mask-adds-batch", ("lse.formula", "input.batch-broadcast")),
        same(
            "poison-masked",
            (
                "input.unread-nonfinite",
                "input.unread-positions",
                "input.unread-gradient",
                "lse.formula",
            ),
        ),
        *bad_calls,
        Returns(
            "complex",
            (*_COMPLEX, "lse.formula"),
            {"scores": d.complex(2, 4)},
            {"mask": np.array([[True, False, True, True], [True, True, True, False]])},
            description="the analytic continuation, shifted by the largest real part",
            vjp=False,
            float32=False,
        ),
    )
    return CaseTable("log_sum_exp", rows, valid=distribution.valid)


def _local_m_distribution(d: InputDraw) -> CaseTable:
    local = ("local.m-position", "local.window", "local.window-softmax")
    square = d.uniform(5, 5, scale=2.0)
    mask = np.ones((5, 5), dtype=bool)
    mask[2, 1:4] = False
    mask[0, 1] = False
    rows = (
        Returns("square", local, {"scores": square}, {"half_width": 1}),
        Returns(
            "half-width-0",
            local,
            {"scores": square},
            {"half_width": 0},
            description="D = 0: weight 1 on the diagonal",
        ),
        Returns(
            "more-queries",
            local,
            {"scores": d.uniform(2, 6, 3)},
            {"half_width": 1},
            description="Tq = 6 > Tk = 3: rows 5 and beyond have an empty window and are zero",
        ),
        Returns("more-keys", local, {"scores": d.uniform(3, 7)}, {"half_width": 2}),
        Returns(
            "masked",
            (*local, "distribution.masked-zero"),
            {"scores": square},
            {"half_width": 1, "mask": mask},
            description="the mask empties row 2's window (a zero row) and narrows row 0's",
        ),
        Raises(
            "negative-half-width", "local.half-width", ArgumentError, options={"half_width": -1}
        ),
        Raises("float-half-width", "local.half-width", DTypeError, options={"half_width": 1.5}),
        Raises("bool-half-width", "local.half-width", DTypeError, options={"half_width": True}),
        Raises(
            "additive-mask",
            "local.boolean-mask",
            DTypeError,
            options={"half_width": 1, "mask": np.zeros((5, 5))},
        ),
    )
    return CaseTable("local_m_distribution", rows, valid={"scores": square})


def _local_p_position(d: InputDraw, complex_inputs: Arguments) -> CaseTable:
    query, w_p, v_p = d.uniform(2, 3, 4), d.uniform(5, 4), d.uniform(5)
    rows = (
        Returns(
            "basic",
            ("local.p-position",),
            {"query": query, "W_p": w_p, "v_p": v_p},
            {"source_length": 7},
        ),
        Returns(
            "source-length-1",
            ("local.p-position",),
            {"query": query[0], "W_p": w_p, "v_p": v_p},
            {"source_length": 1},
            description="S = 1: every position is 0",
        ),
        Returns(
            "saturated",
            ("local.p-position",),
            {"query": query[0], "W_p": w_p, "v_p": 30 * v_p},
            {"source_length": 9},
            description="|logit| ~ 50: the sigmoid saturates and p reaches 0 or S - 1 to rounding",
        ),
        Raises(
            "zero-source-length", "local.p-position", ArgumentError, options={"source_length": 0}
        ),
        Raises(
            "float-source-length", "local.p-position", DTypeError, options={"source_length": 7.0}
        ),
        Raises(
            "weight-width",
            "input.sizes-agree",
            ShapeError,
            {"W_p": d.uniform(5, 3)},
            {"source_length": 7},
        ),
        Returns(
            "complex",
            (*_COMPLEX, "local.p-position"),
            complex_inputs,
            {"source_length": 5},
            vjp=False,
            float32=False,
        ),
    )
    return CaseTable("local_p_position", rows, valid={"query": query[0], "W_p": w_p, "v_p": v_p})


def _local_p_distribution(d: InputDraw) -> CaseTable:
    local = ("local.p-window", "local.p-gaussian", "local.window")
    scores = d.uniform(3, 6, scale=2.0)
    mask = np.ones((3, 6), dtype=bool)
    mask[0, 2] = mask[1, 3] = False
    rows = (
        Returns(
            "basic",
            local,
            {"scores": scores, "positions": np.array([2.5, 0.3125, 4.875])},
            {"half_width": 2},
        ),
        Returns(
            "from-local-p-position",
            local,
            {"scores": d.uniform(2, 3, 8), "positions": d.uniform(2, 3, scale=1.75, bits=30) + 3.5},
            {"half_width": 3},
            description="real positions in (0, 7), as local_p_position predicts them",
        ),
        Returns(
            "outside-source",
            ("local.p-window", "local.p-gaussian"),
            {"scores": scores, "positions": np.array([-1.5, 7.25, -3.0])},
            {"half_width": 2},
            description="positions beyond [0, Tk - 1] narrow the window; row 2's is empty",
        ),
        Returns(
            "window-border",
            ("local.p-window",),
            {"scores": scores, "positions": np.array([3.0, 2.0, 0.0])},
            {"half_width": 2},
            description="keys at exactly |j - p| = D are inside (no gradient: it jumps there)",
            vjp=False,
        ),
        Returns(
            "window-border-rounding",
            ("local.p-window",),
            {"scores": d.uniform(2, 5), "positions": np.array([1 - 2.0**-53, -(2.0**-60)])},
            {"half_width": 2},
            description=(
                "|3 - p_0| = 2 + 2**-53 and |2 - p_1| = 2 + 2**-60 are beyond D = 2, although "
                "both differences round to 2.0 in float64: keys 3 and 2 are outside"
            ),
            vjp=False,
            float32=False,
        ),
        Returns(
            "half-width-1",
            ("local.p-gaussian", "local.half-width"),
            {"scores": scores, "positions": np.array([1.25, 2.75, 4.5])},
            {"half_width": 1},
            description="D = 1, the smallest half-width of local-p",
        ),
        Returns(
            "masked",
            (*local, "distribution.masked-zero"),
            {"scores": scores, "positions": np.array([2.5, 3.25, 1.125])},
            {"half_width": 2, "mask": mask},
        ),
        Raises("half-width-0", "local.half-width", ArgumentError, options={"half_width": 0}),
        Raises(
            "nan-position",
            "input.finite",
            NonFiniteInputError,
            {"positions": np.array([1.0, nan, 2.0])},
            {"half_width": 2},
        ),
        Raises(
            "positions-length",
            "input.sizes-agree",
            ShapeError,
            {"positions": np.array([1.0, 2.0])},
            {"half_width": 2},
        ),
        Raises(
            "additive-mask",
            "local.boolean-mask",
            DTypeError,
            options={"half_width": 2, "mask": np.zeros((3, 6))},
        ),
    )
    return CaseTable(
        "local_p_distribution",
        rows,
        valid={"scores": scores, "positions": np.array([2.5, 0.5, 4.0])},
    )


# --- value and output ---------------------------------------------------------------------


def _value_tables() -> Iterator[CaseTable]:
    d = InputDraw("value")
    yield _attention_value(d)
    context, query = d.uniform(2, 3, 2), d.uniform(2, 3, 4)
    yield _concatenate_context(d, context, query)
    yield _attentional_hidden_state(d, context, query)
    yield _output_distribution(d)


def _attention_value(d: InputDraw) -> CaseTable:
    weights, values = d.uniform(2, 3, 4), d.uniform(2, 4, 3)
    probs = np.array(
        [[0.25, 0.5, 0.125, 0.125], [1.0, 0.0, 0.0, 0.0], [0.0625, 0.4375, 0.25, 0.25]]
    )
    v1, v2 = d.uniform(4, 3, bits=30), d.uniform(4, 3, bits=30)
    linear = ("value.weighted-sum", "value.linear")
    combined = "linear-combined = 0.5 linear-a - 0.25 linear-b, exactly"
    unread = probs.copy()
    unread[:, 2] = 0.0
    poisoned = values[0].copy()
    poisoned[2] = [nan, inf, -inf]
    rows = (
        Returns("basic", ("value.weighted-sum",), {"weights": weights, "values": values}),
        Returns(
            "convex",
            ("value.weighted-sum", "value.convex-hull"),
            {"weights": probs, "values": values[0]},
            description="rows of the weights are distributions: the context lies in the hull",
        ),
        Returns("linear-a", linear, {"weights": probs, "values": v1}, description=combined),
        Returns("linear-b", linear, {"weights": probs, "values": v2}, description=combined),
        Returns(
            "linear-combined",
            linear,
            {"weights": probs, "values": 0.5 * v1 - 0.25 * v2},
            description=combined,
        ),
        Returns(
            "broadcast-batch",
            ("value.weighted-sum", "input.batch-broadcast"),
            {"weights": d.uniform(2, 1, 3, 4), "values": d.uniform(3, 4, 2)},
        ),
        Returns(
            "zero-weight-unread",
            ("value.zero-weight-unread", "input.unread-positions", "input.unread-nonfinite"),
            {"weights": unread, "values": poisoned},
            description=(
                "value row 2 has weight 0 in every query row: NaN/inf there are not read, and "
                "the gradients of that row and of weight column 2 are zero"
            ),
        ),
        Raises("keys-mismatch", "input.sizes-agree", ShapeError, {"values": d.uniform(5, 3)}),
        Raises(
            "nan-weight",
            "input.finite",
            NonFiniteInputError,
            {"weights": _poke(probs, (0, 0), nan)},
        ),
        Raises(
            "nan-read-value",
            "input.finite",
            NonFiniteInputError,
            {"values": _poke(values[0], (1, 1), nan)},
        ),
    )
    return CaseTable("attention_value", rows, valid={"weights": probs, "values": values[0]})


def _concatenate_context(d: InputDraw, context: F64, query: F64) -> CaseTable:
    rows = (
        Returns("basic", ("concat.context-first",), {"context": context, "query": query}),
        Returns(
            "broadcast-batch",
            ("concat.context-first", "input.batch-broadcast"),
            {"context": context, "query": query[0]},
        ),
        Raises("rows-mismatch", "input.sizes-agree", ShapeError, {"query": d.uniform(2, 4)}),
    )
    return CaseTable("concatenate_context", rows, valid={"context": context[0], "query": query[0]})


def _attentional_hidden_state(d: InputDraw, context: F64, query: F64) -> CaseTable:
    w_c, b_c = d.uniform(5, 6), d.uniform(5)
    rows = (
        Returns(
            "with-bias",
            ("hidden.tanh",),
            {"context": context, "query": query, "W_c": w_c, "b_c": b_c},
        ),
        Returns(
            "no-bias",
            ("hidden.tanh",),
            {"context": context, "query": query, "W_c": w_c, "b_c": None},
        ),
        Returns(
            "saturated",
            ("hidden.tanh",),
            {"context": context[0], "query": query[0], "W_c": 30 * w_c, "b_c": None},
            description="pre-activations of size ~50: tanh rounds to +-1",
        ),
        Raises("weight-width", "input.sizes-agree", ShapeError, {"W_c": d.uniform(5, 5)}),
        Raises("bias-length", "input.sizes-agree", ShapeError, {"b_c": d.uniform(4)}),
    )
    return CaseTable(
        "attentional_hidden_state",
        rows,
        valid={"context": context[0], "query": query[0], "W_c": w_c, "b_c": b_c},
    )


def _output_distribution(d: InputDraw) -> CaseTable:
    state, w_y, b_y = d.uniform(2, 3, 4, scale=0.5), d.uniform(6, 4), d.uniform(6)
    rows = (
        Returns(
            "with-bias", ("output.softmax",), {"attentional_state": state, "W_y": w_y, "b_y": b_y}
        ),
        Returns(
            "no-bias", ("output.softmax",), {"attentional_state": state, "W_y": w_y, "b_y": None}
        ),
        Returns(
            "large-logits",
            ("output.softmax", "distribution.stable"),
            {"attentional_state": state[0], "W_y": 400 * w_y, "b_y": None},
            description="logits of several hundred: the softmax must be shifted",
            float32=False,
        ),
        Raises("weight-width", "input.sizes-agree", ShapeError, {"W_y": d.uniform(6, 3)}),
    )
    return CaseTable(
        "output_distribution", rows, valid={"attentional_state": state[0], "W_y": w_y, "b_y": None}
    )


# --- composites ---------------------------------------------------------------------------


def _composite_tables(complex_inputs: Mapping[str, Arguments]) -> Iterator[CaseTable]:
    d = InputDraw("composite")
    # Note: the composites' shapes are small on purpose: every input element costs one
    # exact evaluation for the error scales; batch axes appear in the cases about them.
    q, k, v = d.uniform(3, 3), d.uniform(4, 3), d.uniform(4, 2)
    mask = d.mask(3, 4)
    mask[:, 0] = True
    yield _attention(d, q, k, v, mask)
    yield _scaled_dot_product_attention(
        d, q, k, v, mask, complex_inputs["scaled_dot_product_attention"]
    )


def _attention(d: InputDraw, q: F64, k: F64, v: F64, mask: npt.NDArray[np.bool_]) -> CaseTable:
    composed = ("attention.composition",)
    formula = (*_SOFTMAX, "value.weighted-sum")
    call = {"query": q, "keys": k, "values": v}
    general = {"W_a": d.uniform(3, 3)}
    concat = {"W_a": d.uniform(3, 6), "v_a": d.uniform(3)}
    additive = {"W_q": d.uniform(3, 3), "W_k": d.uniform(3, 3), "v_a": d.uniform(3)}
    location = {"W_a": d.uniform(4, 3)}
    full = mask.copy()
    full[2] = False
    poison_q, poison_k, poison_v = q.copy(), k.copy(), v.copy()
    poison_mask = mask.copy()
    poison_mask[:, 3] = False
    poison_mask[1] = False
    poison_k[3] = nan
    poison_v[3] = inf
    poison_q[1] = nan
    rows = (
        Returns("dot", (*composed, "score.dot", *formula), call, {"score": "dot"}),
        Returns(
            "scaled-dot",
            (*composed, "score.scaled-dot", *formula),
            call,
            {"score": "scaled_dot", "scale": None},
        ),
        Returns(
            "general", (*composed, "score.general", *formula), call, {"score": "general", **general}
        ),
        Returns(
            "concat", (*composed, "score.concat", *formula), call, {"score": "concat", **concat}
        ),
        Returns(
            "additive",
            (*composed, "score.additive", *formula),
            call,
            {"score": "additive", **additive},
        ),
        Returns(
            "location",
            (*composed, "score.location", *formula),
            call,
            {"score": "location", **location},
        ),
        Returns(
            "scaled-dot-explicit",
            (*composed, "score.scaled-dot"),
            call,
            {"score": "scaled_dot", "scale": 0.75},
        ),
        Returns(
            "broadcast-batch",
            (*composed, "input.batch-broadcast"),
            {
                "query": d.uniform(2, 1, 2, 3),
                "keys": d.uniform(3, 3, 3),
                "values": d.uniform(1, 3, 2),
            },
            {"score": "dot"},
            description="batch shapes (2, 1), (3,) and (1,) broadcast to (2, 3)",
        ),
        Returns(
            "masked",
            (
                *composed,
                "distribution.masked-zero",
                "distribution.fully-masked-row",
                "input.not-mutated",
            ),
            call,
            {"score": "general", "mask": full, **general},
            description="query row 2 has no allowed key: zero weights, zero context",
        ),
        Returns(
            "additive-mask",
            (*composed, "distribution.additive-mask"),
            call,
            {"score": "additive", "mask": np.where(mask, d.uniform(3, 4), -inf), **additive},
        ),
        Returns(
            "poison-masked",
            (
                "input.unread-nonfinite",
                "input.unread-positions",
                "input.unread-gradient",
                *composed,
            ),
            {"query": poison_q, "keys": poison_k, "values": poison_v},
            {"score": "concat", "mask": poison_mask, **concat},
            description=(
                "NaN keys and inf values at a masked key, a NaN query row with no allowed key"
            ),
        ),
        Returns(
            "location-ignores-keys",
            ("score.location", *composed, "input.unread-positions", "input.unread-nonfinite"),
            {"query": q, "keys": np.full((4, 3), nan), "values": v},
            {"score": "location", **location},
            description="the location score never reads the keys, so NaN keys are fine",
        ),
        Raises(
            "missing-parameter",
            "attention.score-parameters",
            ArgumentError,
            options={"score": "general"},
        ),
        Raises(
            "extra-parameter",
            "attention.score-parameters",
            ArgumentError,
            options={"score": "dot", "v_a": d.uniform(3)},
        ),
        Raises(
            "scale-for-dot",
            "attention.score-parameters",
            ArgumentError,
            options={"score": "dot", "scale": 0.5},
        ),
        Raises(
            "unknown-score",
            "attention.score-parameters",
            ArgumentError,
            options={"score": "cosine"},
        ),
    )
    return CaseTable("attention", rows, valid=call)


def _scaled_dot_product_attention(
    d: InputDraw, q: F64, k: F64, v: F64, mask: npt.NDArray[np.bool_], complex_inputs: Arguments
) -> CaseTable:
    formula = ("sdpa.formula", *_SOFTMAX, "value.weighted-sum")
    unread = ("input.unread-nonfinite", "input.unread-positions", "input.unread-gradient")
    call = {"query": q, "key": k, "value": v}

    def causal(alignment: str, t_q: int, t_k: int) -> Returns:
        """A causal row of ``t_q`` queries and ``t_k`` keys (a query may see no key)."""
        name = alignment.replace("_", "-")
        empty = alignment == "bottom_right" and t_q > t_k
        return Returns(
            f"causal-{name}-{t_q}x{t_k}",
            (f"sdpa.causal-{name}", "sdpa.formula")
            + (("distribution.fully-masked-row",) if empty else ()),
            {"query": d.uniform(t_q, 2), "key": d.uniform(t_k, 2), "value": d.uniform(t_k, 2)},
            {"is_causal": True, "causal_alignment": alignment},
        )

    poison_k, poison_v = k.copy(), v.copy()
    poison_k[2] = nan
    poison_v[2] = inf
    poison_v[3] = 1000.0
    # Note: two rows name what they draw (`:=`) for the rows after them; drawing it before
    # the table instead would reorder the stream, and so change the vectors.
    rows = (
        Returns(
            "basic",
            (*formula, "sdpa.default-scale", "input.result-dtype", "input.not-mutated"),
            {"query": d.uniform(2, 3, 4), "key": d.uniform(2, 4, 4), "value": d.uniform(2, 4, 2)},
            description="d = 4: the default scale is 0.5",
        ),
        Returns(
            "default-scale-d3",
            (*formula, "sdpa.default-scale"),
            call,
            description="d = 3: the default scale 1/sqrt(3) rounded once",
        ),
        Returns("explicit-scale", (*formula, "score.scale-applied"), call, {"scale": 0.375}),
        Returns("negative-scale", (*formula, "score.scale-applied"), call, {"scale": -2.0}),
        Returns("zero-scale", (*formula, "score.scale-applied"), call, {"scale": 0.0}),
        causal("top_left", 4, 4),
        causal("top_left", 2, 5),
        causal("top_left", 5, 2),
        causal("bottom_right", 4, 4),
        causal("bottom_right", 2, 5),
        causal("bottom_right", 5, 2),
        Returns(
            "causal-with-boolean-mask",
            ("sdpa.causal-with-mask", "sdpa.causal-bottom-right", "distribution.masked-zero"),
            call,
            {
                "mask": (allowed := d.mask(3, 4)),
                "is_causal": True,
                "causal_alignment": "bottom_right",
            },
        ),
        Returns(
            "causal-with-additive-mask",
            ("sdpa.causal-with-mask", "sdpa.causal-top-left", "distribution.additive-mask"),
            call,
            {"mask": np.where(allowed, d.uniform(3, 4), -inf), "is_causal": True},
            description="the finite entries are kept where causal allows",
        ),
        Returns(
            "grouped-heads",
            ("sdpa.grouped-query-heads", "sdpa.formula"),
            (
                grouped := {
                    "query": d.uniform(1, 4, 2, 3),
                    "key": d.uniform(1, 2, 3, 3),
                    "value": d.uniform(1, 2, 3, 2),
                }
            ),
            {"enable_gqa": True},
            description="Hq = 4, Hk = 2: query heads 0, 1 read key head 0 and heads 2, 3 head 1",
        ),
        Returns(
            "grouped-heads-causal",
            ("sdpa.grouped-query-heads", "sdpa.causal-top-left"),
            grouped,
            {"enable_gqa": True, "is_causal": True},
        ),
        Returns(
            "grouped-heads-one-group",
            ("sdpa.grouped-query-heads",),
            {**grouped, "query": grouped["query"][:, :2]},
            {"enable_gqa": True},
            description="Hq = Hk: enable_gqa changes nothing",
        ),
        Returns(
            "key-padding-mask",
            ("input.batch-broadcast", "distribution.masked-zero", "sdpa.formula"),
            {
                "query": d.uniform(2, 2, 2, 2),
                "key": d.uniform(2, 2, 3, 2),
                "value": d.uniform(2, 2, 3, 2),
            },
            {"mask": np.array([[[[True, True, False]]], [[[True, False, True]]]])},
            description="a [B, 1, 1, Tk] padding mask broadcast over heads and queries",
        ),
        Returns(
            "poison-masked",
            (*unread, "sdpa.formula"),
            {"query": q, "key": poison_k, "value": poison_v},
            {"mask": np.array([True, True, False, False])},
            description="NaN keys, inf and 1000 (ONNX's poison) values at masked keys",
        ),
        Returns(
            "large-logits",
            ("distribution.stable", "sdpa.formula"),
            {"query": q * 2.0**500, "key": k * 2.0**500, "value": v},
            {"scale": 1.0},
            description="scores near 1e301: saturated weights, no overflow",
            vjp=False,
            float32=False,
        ),
        Returns(
            "overflow-range",
            ("distribution.stable", "sdpa.formula"),
            {"query": q * 16.0, "key": k * 16.0, "value": v},
            {"scale": 1.0},
            description="scores of several hundred: exp overflows without the shift",
            float32=False,
        ),
        Returns(
            "overflow-before-scale",
            ("distribution.stable", "sdpa.formula", "score.scale-applied"),
            {
                "query": np.array([[2.0**511, 2.0**511]]),
                "key": np.array([[2.0**512, 2.0**512], [2.0**511, -(2.0**511)]]),
                "value": np.array([[1.0, 2.0], [3.0, 4.0]]),
            },
            {"scale": 2.0**-600},
            description="q.k = 2**1024 overflows float64, scale * q.k = 2**424 does not",
            vjp=False,
            float32=False,
        ),
        Returns(
            "ties",
            ("distribution.ties-uniform", "sdpa.formula"),
            {"query": np.zeros((3, 3)), "key": k, "value": v},
            description="a zero query gives equal scores and the mean of the values",
        ),
        Returns(
            "large-finite-mask",
            ("distribution.additive-mask", "sdpa.formula"),
            call,
            {"mask": np.where(mask, 0.0, -1e30)},
            description="-1e30 is a finite bias, not a disallowed key",
        ),
        Raises(
            "gqa-not-divisible",
            "sdpa.gqa-heads-divisible",
            ShapeError,
            {"query": d.uniform(1, 3, 2, 3)},
            {"enable_gqa": True},
        ),
        Raises("gqa-rank-2", "sdpa.gqa-heads-divisible", ShapeError, call, {"enable_gqa": True}),
        Raises(
            "gqa-value-heads",
            "sdpa.gqa-heads-divisible",
            ShapeError,
            {"value": d.uniform(1, 1, 3, 2)},
            {"enable_gqa": True},
        ),
        Raises(
            "unknown-alignment",
            "sdpa.causal-alignment-known",
            ArgumentError,
            options={"causal_alignment": "bottom_left"},
        ),
        Raises("integer-is-causal", "sdpa.formula", DTypeError, options={"is_causal": 1}),
        Raises("feature-mismatch", "input.sizes-agree", ShapeError, {"key": d.uniform(1, 2, 3, 2)}),
        Raises("nan-scale", "input.scale-finite", ArgumentError, options={"scale": nan}),
        Returns(
            "complex",
            (*_COMPLEX, "sdpa.formula"),
            complex_inputs,
            {"is_causal": True, "causal_alignment": "bottom_right"},
            vjp=False,
            float32=False,
        ),
        *_restriction_rows(),
        *_sink_rows(),
    )
    return CaseTable("scaled_dot_product_attention", rows, valid=grouped)


def _restriction_rows() -> tuple[Returns | Raises, ...]:
    """The softcap, windows, query offsets and key lengths, from their own stream (so the
    cases above keep their inputs): ``[B, H, T, d]`` with a batch of two and one head,
    Tq = 3, Tk = 5 (per-batch arguments follow the first axis)."""
    r = InputDraw("scaled_dot_product_attention/restrictions")
    call = {
        "query": r.uniform(2, 1, 3, 2),
        "key": r.uniform(2, 1, 5, 2),
        "value": r.uniform(2, 1, 5, 2),
    }
    allowed = r.mask(2, 1, 3, 5)
    allowed[..., 1] = True
    additive = np.where(allowed, r.uniform(2, 1, 3, 5), -inf)
    lengths = np.array([5, 2])
    return (
        Returns(
            "softcap",
            ("sdpa.softcap", "sdpa.formula"),
            call,
            {"softcap": 2.0, "scale": 4.0},
            description="scores up to about 8 capped at 2: c tanh(s / c) saturates",
        ),
        Returns(
            "softcap-additive-mask",
            ("sdpa.softcap", "distribution.additive-mask", "distribution.masked-zero"),
            call,
            {"softcap": 1.0, "mask": additive},
            description="the mask is added after the cap: -inf stays -inf",
        ),
        Returns(
            "sliding-window",
            ("sdpa.window", "sdpa.restrictions-combine", "sdpa.causal-top-left"),
            call,
            {"is_causal": True, "window": (1, 0)},
            description="each query sees itself and the key before it",
        ),
        Returns("window-both-sides", ("sdpa.window",), call, {"window": (1, 2)}),
        Returns(
            "window-one-side",
            ("sdpa.window",),
            call,
            {"window": (None, 0)},
            description="(None, 0) without the causal flag is the causal mask",
        ),
        Returns(
            "query-offset",
            ("sdpa.query-offset", "sdpa.causal-top-left"),
            call,
            {"is_causal": True, "query_offset": 2},
            description="two cached keys before the three new queries",
        ),
        Returns(
            "query-offset-per-item",
            ("sdpa.query-offset", "sdpa.window"),
            call,
            {"is_causal": True, "window": (1, 0), "query_offset": np.array([0, 2])},
        ),
        Returns(
            "key-lengths",
            ("sdpa.key-lengths", "distribution.masked-zero"),
            call,
            {"key_lengths": lengths},
            description="item 1 has two valid keys: a padded batch",
        ),
        Returns(
            "key-lengths-bottom-right",
            ("sdpa.key-lengths", "sdpa.query-offset", "sdpa.causal-bottom-right"),
            call,
            {
                "is_causal": True,
                "causal_alignment": "bottom_right",
                "key_lengths": np.array([4, 3]),
            },
            description="each item's last query sees its own last valid key",
        ),
        Returns(
            "key-lengths-empty",
            ("sdpa.key-lengths", "distribution.fully-masked-row"),
            call,
            {"key_lengths": np.array([0, 3])},
            description="item 0 has no key: zero weights and context",
        ),
        Returns(
            "all-restrictions",
            ("sdpa.restrictions-combine", "sdpa.softcap", "sdpa.window", "sdpa.key-lengths"),
            call,
            {
                "softcap": 3.0,
                "window": (2, 1),
                "key_lengths": np.array([4, 5]),
                "mask": allowed,
                "is_causal": True,
            },
        ),
        # the table's valid call has grouped heads (Hq = 4, Hk = 2) and a batch of one
        Raises(
            "softcap-zero",
            "sdpa.arguments",
            ArgumentError,
            options={"enable_gqa": True, "softcap": 0.0},
        ),
        Raises(
            "window-negative",
            "sdpa.arguments",
            ArgumentError,
            options={"enable_gqa": True, "window": (-1, 0)},
        ),
        Raises(
            "key-lengths-too-long",
            "sdpa.arguments",
            ArgumentError,
            options={"enable_gqa": True, "key_lengths": np.array([9])},
        ),
        Raises(
            "offset-and-bottom-right",
            "sdpa.arguments",
            ArgumentError,
            options={"enable_gqa": True, "query_offset": 1, "causal_alignment": "bottom_right"},
        ),
    )


def _sink_rows() -> tuple[Returns | Raises, ...]:
    """The sinks and the log-sum-exp result, from their own stream (so the cases above
    keep their inputs): ``[B, H, T, d]`` with a batch of two and two heads, Tq = 3, Tk = 4,
    and one sink logit per query head."""
    r = InputDraw("scaled_dot_product_attention/sinks")
    call = {
        "query": r.uniform(2, 2, 3, 2),
        "key": r.uniform(2, 2, 4, 2),
        "value": r.uniform(2, 2, 4, 2),
    }
    sinks = r.uniform(2)
    empty = r.mask(2, 2, 3, 4)
    empty[..., 0] = True
    empty[0, 1, 2] = False  # item 0, head 1, query 2: no allowed key
    grouped = {
        "query": r.uniform(1, 4, 2, 3),
        "key": r.uniform(1, 2, 3, 3),
        "value": r.uniform(1, 2, 3, 2),
    }
    lse = ("sdpa.log-sum-exp", "sdpa.formula")
    return (
        Returns(
            "sinks",
            ("sdpa.sinks", "sdpa.formula"),
            call,
            {"sinks": sinks},
            description="each row's weights sum to 1 - exp(sink - lse), below one",
        ),
        Returns(
            "sinks-zero",
            ("sdpa.sinks",),
            call,
            {"sinks": np.zeros(2)},
            description="sink 0: one more exp(0) = 1 in every denominator",
        ),
        Returns("lse", (*lse, "lse.formula"), call, {"return_lse": True}),
        Returns(
            "sinks-very-negative",
            ("sdpa.sinks", "sdpa.log-sum-exp"),
            call,
            {"sinks": np.full(2, -1e4), "return_lse": True},
            description=(
                "a sink of -1e4 adds exp(-1e4 - lse), far below every ulp: the same expected "
                "context, weights and lse as lse, and a zero sink gradient"
            ),
        ),
        Returns(
            "sinks-lse",
            ("sdpa.log-sum-exp", "sdpa.sinks"),
            call,
            {"sinks": sinks, "return_lse": True},
            description="lse = log(exp(sink) + sum over allowed keys of exp(t))",
        ),
        Returns(
            "lse-fully-masked-row",
            (*lse, "lse.fully-masked-row", "distribution.fully-masked-row"),
            call,
            {"mask": empty, "return_lse": True},
            description="item 0, head 1, query 2 has no allowed key: zero weights, lse -inf",
        ),
        Returns(
            "sinks-fully-masked-row",
            ("sdpa.sinks", "sdpa.log-sum-exp", "distribution.fully-masked-row"),
            call,
            {"mask": empty, "sinks": sinks, "return_lse": True},
            description=(
                "item 0, head 1, query 2 has no allowed key but a sink: zero weights and "
                "context, lse the sink of head 1 (gradient 1)"
            ),
        ),
        Returns(
            "sinks-grouped-heads",
            ("sdpa.sinks", "sdpa.grouped-query-heads", "sdpa.log-sum-exp"),
            grouped,
            {"enable_gqa": True, "sinks": r.uniform(4), "return_lse": True},
            description="Hq = 4, Hk = 2: one sink per query head, not per key head",
        ),
        Returns(
            "sinks-causal-softcap",
            ("sdpa.sinks", "sdpa.softcap", "sdpa.causal-top-left", "sdpa.log-sum-exp"),
            call,
            {
                "is_causal": True,
                "softcap": 1.0,
                "scale": 4.0,
                "sinks": np.array([1.5, -0.75]),
                "return_lse": True,
            },
            description="the scores are capped at 1, the sink of 1.5 is not",
        ),
        Returns(
            "lse-softcap-additive-mask",
            (*lse, "sdpa.softcap", "distribution.additive-mask"),
            call,
            {
                "softcap": 2.0,
                "mask": np.where(empty, r.uniform(2, 2, 3, 4), -inf),
                "return_lse": True,
            },
            description="lse of the capped scores plus the mask; -inf where no key is allowed",
        ),
        Returns(
            "lse-overflow-range",
            (*lse, "distribution.stable", "lse.stable"),
            {**call, "query": call["query"] * 64.0},
            {"scale": 4.0, "return_lse": True},
            description="scores of several hundred: exp overflows without the shift",
            float32=False,
        ),
        # the table's valid call has grouped heads (Hq = 4, Hk = 2) and a batch of one
        Raises(
            "sinks-key-heads",
            "sdpa.arguments",
            ShapeError,
            options={"enable_gqa": True, "sinks": r.uniform(2)},
        ),
        Raises(
            "sinks-rank-2",
            "sdpa.arguments",
            ShapeError,
            options={"enable_gqa": True, "sinks": r.uniform(4, 1)},
        ),
        Raises(
            "sinks-query-rank-2",
            "sdpa.arguments",
            ShapeError,
            {"query": r.uniform(2, 3), "key": r.uniform(3, 3), "value": r.uniform(3, 2)},
            {"sinks": r.uniform(1)},
        ),
        Raises(
            "sinks-integer",
            "sdpa.arguments",
            DTypeError,
            options={"enable_gqa": True, "sinks": np.zeros(4, dtype=np.int64)},
        ),
        Raises(
            "sinks-nan",
            "input.finite",
            NonFiniteInputError,
            options={"enable_gqa": True, "sinks": np.array([0.0, nan, 0.0, 0.0])},
        ),
        Raises(
            "sinks-minus-inf",
            "input.finite",
            NonFiniteInputError,
            options={"enable_gqa": True, "sinks": np.full(4, -inf)},
        ),
        Raises(
            "return-lse-integer",
            "sdpa.arguments",
            DTypeError,
            options={"enable_gqa": True, "return_lse": 1},
        ),
    )
