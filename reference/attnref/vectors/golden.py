r"""The golden vectors: a deterministic list of cases and their exact answers, as JSON.

Run ``python -m attnref.vectors.golden`` (or ``nox -s vectors``) to regenerate
``spec/attnspec/vectors/*.json``; ``--check`` compares instead of writing.
Every expected value comes from :mod:`attnref.vectors.exact` (mpmath), never from
the NumPy reference, and is the correctly rounded float64 of the exact result
of the spec's formula on the case's float64 inputs.

Each case records the clauses it exercises, the function and its arguments,
the expected outputs, a cotangent for every output and the expected input
gradients (the VJP), and for every expected number its *error scale*
(:data:`TOLERANCE` explains how the scale becomes a tolerance).

Error scale of an output
    For an output :math:`y` of the floating inputs :math:`x_m` (every
    floating argument, additive masks and positions included) the scale is

    .. math:: S(y) = |y| + \sum_m |x_m\, \partial y / \partial x_m| ,

    the first-order change of :math:`y` when every input and the result are
    perturbed by one relative unit: :math:`S/|y|` is the componentwise
    relative condition number :math:`\kappa`, so "error :math:`\le k\,
    \varepsilon S`" is ":math:`k` ulps times the condition". A scale of zero
    means :math:`y` is structurally exact (a masked weight, a fully masked
    row, the gradient at an unread position) and must be matched exactly.
    The ``scale`` argument is not counted: scores are homogeneous of degree
    one in :math:`\lambda` and in the query, so its term is bounded by the
    query's.

Error scale of a gradient
    For an input gradient :math:`g = \sum_i c_i\, \partial y_i / \partial x`
    the scale is :math:`P + \sum_m |x_m\, \partial g / \partial x_m|`, where
    :math:`P` is the sum over all chain-rule paths from the cotangents to
    :math:`x` of :math:`|c_i|` times the product of the sizes of the partial
    derivatives on the path (:func:`attnref.vectors.exact.backward` with
    ``absolute``). :math:`P` bounds :math:`|g|` and the sensitivity to the
    cotangents, and it is what evaluating the chain rule in floating point can
    lose to cancellation: the gradient of a saturated softmax is tiny, but
    every float implementation computes it as a difference of numbers of
    size :math:`|c|`. For ``tanh`` the size of the partial is
    :math:`1 + \tanh^2`, what :math:`1 - \tanh^2` is computed from.

    Derivatives with respect to the inputs are forward differences with
    relative step :data:`FD_STEP` at :data:`SCALE_PRECISION` bits (the exact
    linear stages keep them accurate to about ten digits; a scale needs
    two); each scale is rounded *up* to two significant digits.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import random
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mpmath  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

import attnspec
from attnref.vectors import exact

__all__ = [
    "FD_STEP",
    "FORMAT",
    "SCALE_PRECISION",
    "TOLERANCE",
    "CaseSpec",
    "Draw",
    "ToleranceRule",
    "build_case",
    "cases",
    "error_scales",
    "generate",
    "main",
    "render",
    "tolerance_json",
]

FORMAT = "attnspec-golden-vectors/1"
"""Name and major version of the file format (``schema.json`` describes it)."""

SCALE_PRECISION = 96
"""Bits of working precision for the error scales (two significant digits are kept)."""

FD_STEP = 2.0**-40
"""Relative step of the forward differences behind the error scales."""

VECTOR_DIR = Path(__file__).resolve().parents[3] / "spec" / "attnspec" / "vectors"
"""Where the files live in a source checkout."""

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ToleranceRule:
    """How far a result in one dtype may lie from the expected float64 value.

    A result ``got`` passes when the element's error scale ``S`` is zero and
    ``got == expected``, or when ``|got - expected| <= ulps * eps * S + tiny``.
    """

    ulps: float
    eps: float
    tiny: float
    reason: str


TOLERANCE: dict[str, ToleranceRule] = {
    "float64": ToleranceRule(
        ulps=4,
        eps=2.0**-52,
        tiny=2.0**-1022,
        reason=(
            "The accuracy goal of the spec: 4 ulps times the componentwise condition number "
            "(eps * S = ulp(y) * kappa), the error a backward-stable float64 evaluation with "
            "short sums (every axis of the vectors has at most 8 entries) stays within. Below "
            "the normal range (tiny = smallest normal float64) gradual underflow loses "
            "relative accuracy by design."
        ),
    ),
    "float32": ToleranceRule(
        ulps=5,
        eps=2.0**-23,
        tiny=2.0**-126,
        reason=(
            "The float64 goal of 4 ulps times the condition, in float32 units, plus one ulp "
            "times the condition for rounding the float64 inputs and cotangents to float32 "
            "(each by at most half an ulp, a perturbation the condition number measures) "
            "and the result. tiny is the smallest normal float32."
        ),
    ),
}
"""The tolerance rule by dtype: the one place where tolerances are set, with their reasons."""


@dataclass(frozen=True)
class CaseSpec:
    """One golden case before its answers are computed.

    ``inputs`` are the positional arguments by name (``None`` for an omitted
    optional one), ``options`` the keyword arguments. A case either has an
    answer (``raises`` is ``None``) or names the exception class of
    :mod:`attnspec.errors` that the call must raise.
    """

    id: str
    clauses: tuple[str, ...]
    inputs: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    vjp: bool = True
    float32: bool = True
    raises: str | None = None

    @property
    def function(self) -> str:
        """The spec function, the part of the id before the slash."""
        return self.id.split("/", 1)[0]


# --- encoding -----------------------------------------------------------------------------


def _hex(x: float) -> str:
    """A float64 as a C99 hex float string (``float.hex``): exact, with inf and nan spelled out."""
    return float(x).hex()


def _encode_array(a: npt.NDArray[Any]) -> dict[str, Any]:
    flat = a.ravel()
    if a.dtype == np.bool_:
        data: list[Any] = [bool(v) for v in flat]
        dtype = "bool"
    elif a.dtype.kind in "iu":
        data = [int(v) for v in flat]
        dtype = "int64"
    elif a.dtype.kind == "c":
        data = [[_hex(v.real), _hex(v.imag)] for v in flat]
        dtype = "complex128"
    else:
        data = [_hex(v) for v in flat]
        dtype = "float64"
    return {"dtype": dtype, "shape": list(a.shape), "data": data}


def _encode_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, float):
        return {"float": _hex(value)}
    return value  # None, bool, int, str


def _scale_number(s: Any) -> float:
    """An error scale rounded up to two significant digits (0 stays 0)."""
    if s == 0:
        return 0.0
    # Note: a positive scale never becomes 0 (that would demand exactness); below
    # 1e-300 every tolerance is dominated by the dtype's tiny anyway.
    if s < mpmath.mpf("1e-300"):
        return 1e-300
    if s > mpmath.mpf("1e300"):
        raise ValueError("an error scale exceeds 1e300; shrink the case's inputs")
    exponent = int(mpmath.floor(mpmath.log10(s))) - 1
    digits = int(mpmath.ceil(s / mpmath.mpf(10) ** exponent))
    return float(f"{digits}e{exponent}")


def _with_scale(values: npt.NDArray[Any], scales: npt.NDArray[np.object_]) -> dict[str, Any]:
    out = _encode_array(values)
    numbers = [_scale_number(s) for s in scales.ravel()]
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError("an error scale overflows float64; shrink the case's inputs")
    out["error_scale"] = numbers
    return out


# --- deterministic inputs -----------------------------------------------------------------


class Draw:
    """Platform-independent pseudo-random inputs for one case, seeded by a string.

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


# --- the cases ----------------------------------------------------------------------------

_SCORE_SHAPE = ("score.shape",)


def _score_cases() -> Iterator[CaseSpec]:
    d = Draw("scores")
    q, k = d.uniform(2, 3, 4), d.uniform(2, 5, 4)
    yield CaseSpec("score_dot/basic", ("score.dot", *_SCORE_SHAPE), {"query": q, "keys": k})
    yield CaseSpec(
        "score_dot/broadcast-batch",
        ("score.dot", "input.batch-broadcast", *_SCORE_SHAPE),
        {"query": d.uniform(2, 1, 2, 3), "keys": d.uniform(3, 3, 3)},
        description="batch shapes (2, 1) and (3,) broadcast to (2, 3)",
    )
    yield CaseSpec(
        "score_dot/single",
        ("score.dot", *_SCORE_SHAPE),
        {"query": d.uniform(1, 1), "keys": d.uniform(1, 1)},
        description="Tq = Tk = d = 1",
    )
    near = np.array([[1.0, 1.0, 2.0**-30]])
    keys = np.array([[1.0 + 2.0**-29, -1.0, -2.0], [0.5, 0.25, 3.0]])
    yield CaseSpec(
        "score_dot/cancellation",
        ("score.dot", *_SCORE_SHAPE),
        {"query": near, "keys": keys},
        description="a dot product that cancels to 2**-29 - 2**-29 = 0 exactly",
    )
    yield CaseSpec(
        "score_dot/empty-query",
        ("score.dot", "input.nonempty", *_SCORE_SHAPE),
        {"query": np.zeros((0, 3)), "keys": d.uniform(2, 3)},
        description="Tq = 0 is allowed and gives an empty [0, Tk] result",
    )
    bad: list[tuple[str, str, str, dict[str, Any]]] = [
        ("feature-mismatch", "input.sizes-agree", "ShapeError", {"keys": d.uniform(5, 3)}),
        ("rank-1", "input.rank", "ShapeError", {"query": d.uniform(4)}),
        ("empty-keys", "input.nonempty", "ShapeError", {"keys": np.zeros((0, 4))}),
        (
            "empty-features",
            "input.nonempty",
            "ShapeError",
            {"query": np.zeros((3, 0)), "keys": np.zeros((5, 0))},
        ),
        (
            "batch-mismatch",
            "input.batch-broadcast",
            "ShapeError",
            {"query": d.uniform(2, 3, 4), "keys": d.uniform(3, 5, 4)},
        ),
        (
            "nan-query",
            "input.finite",
            "NonFiniteInputError",
            {"query": _poke(q[0], (1, 2), math.nan)},
        ),
        (
            "inf-keys",
            "input.finite",
            "NonFiniteInputError",
            {"keys": _poke(k[0], (0, 0), math.inf)},
        ),
        (
            "integer-dtype",
            "input.float-dtype",
            "DTypeError",
            {"query": np.arange(12).reshape(3, 4)},
        ),
    ]
    for name, clause, error, override in bad:
        args = {"query": q[0], "keys": k[0]} | override
        yield CaseSpec(f"score_dot/{name}", (clause,), args, raises=error)

    yield CaseSpec(
        "score_scaled_dot/default-scale-d4",
        ("score.scaled-dot", "score.default-scale", *_SCORE_SHAPE),
        {"query": q, "keys": k},
        {"scale": None},
        description="d = 4: the default scale 1/sqrt(4) = 0.5 is exact",
    )
    yield CaseSpec(
        "score_scaled_dot/default-scale-d2-unit",
        ("score.scaled-dot", "score.default-scale", *_SCORE_SHAPE),
        {"query": np.array([[1.0, 0.0], [0.0, 2.0]]), "keys": np.array([[1.0, 0.0], [1.0, 1.0]])},
        {"scale": None},
        description="d = 2 with unit vectors: the scores are multiples of 1/sqrt(2) rounded once",
    )
    yield CaseSpec(
        "score_scaled_dot/default-scale-d3",
        ("score.scaled-dot", "score.default-scale", *_SCORE_SHAPE),
        {"query": d.uniform(3, 3), "keys": d.uniform(4, 3)},
        {"scale": None},
    )
    for name, scale, clauses in _table(
        ("explicit-scale", 0.3, ("score.scaled-dot",)),
        ("zero-scale", 0.0, ("score.scaled-dot", "score.scale-applied")),
        ("negative-scale", -1.5, ("score.scaled-dot", "score.scale-applied")),
    ):
        yield CaseSpec(
            f"score_scaled_dot/{name}",
            (*clauses, *_SCORE_SHAPE),
            {"query": q, "keys": k},
            {"scale": scale},
        )
    for name, scale, error in _table(
        ("nan-scale", math.nan, "ArgumentError"),
        ("inf-scale", math.inf, "ArgumentError"),
        ("bool-scale", True, "DTypeError"),
    ):
        yield CaseSpec(
            f"score_scaled_dot/{name}",
            ("input.scale-finite",),
            {"query": q[0], "keys": k[0]},
            {"scale": scale},
            raises=error,
        )

    qg, kg, wg = d.uniform(2, 3, 3), d.uniform(2, 4, 5), d.uniform(3, 5)
    yield CaseSpec(
        "score_general/basic",
        ("score.general", *_SCORE_SHAPE),
        {"query": qg, "keys": kg, "W_a": wg},
    )
    yield CaseSpec(
        "score_general/identity",
        ("score.general", *_SCORE_SHAPE),
        {"query": q, "keys": k, "W_a": np.eye(4)},
        description="W_a = I: the same expected scores as score_dot/basic",
    )
    yield CaseSpec(
        "score_general/broadcast-batch",
        ("score.general", "input.batch-broadcast", *_SCORE_SHAPE),
        {"query": d.uniform(1, 2, 3), "keys": d.uniform(3, 4, 2), "W_a": d.uniform(3, 2)},
    )
    for name, clause, error, w in _table(
        ("weight-shape", "input.sizes-agree", "ShapeError", d.uniform(5, 3)),
        ("weight-rank", "input.rank", "ShapeError", d.uniform(1, 3, 5)),
        ("nan-weight", "input.finite", "NonFiniteInputError", _poke(wg, (0, 1), math.nan)),
    ):
        yield CaseSpec(
            f"score_general/{name}",
            (clause,),
            {"query": qg[0], "keys": kg[0], "W_a": w},
            raises=error,
        )

    qc, kc = d.uniform(2, 3, 3), d.uniform(2, 4, 2)
    w_q, w_k, v_a = d.uniform(4, 3), d.uniform(4, 2), d.uniform(4)
    w_a = np.hstack([w_q, w_k])
    yield CaseSpec(
        "score_concat/basic",
        ("score.concat", *_SCORE_SHAPE),
        {"query": qc, "keys": kc, "W_a": w_a, "v_a": v_a},
    )
    yield CaseSpec(
        "score_concat/saturated",
        ("score.concat", *_SCORE_SHAPE),
        {"query": qc[0], "keys": kc[0], "W_a": 40 * w_a, "v_a": v_a},
        description="pre-activations of size ~100: tanh saturates to +-1",
    )
    for name, override in _table(
        ("weight-width", {"W_a": d.uniform(4, 6)}),
        ("vector-length", {"v_a": d.uniform(3)}),
    ):
        args = {"query": qc[0], "keys": kc[0], "W_a": w_a, "v_a": v_a} | override
        yield CaseSpec(f"score_concat/{name}", ("input.sizes-agree",), args, raises="ShapeError")
    yield CaseSpec(
        "score_additive/basic",
        ("score.additive", *_SCORE_SHAPE),
        {"query": qc, "keys": kc, "W_q": w_q, "W_k": w_k, "v_a": v_a},
        description="the weights of score_concat/basic split: the same expected scores",
    )
    yield CaseSpec(
        "score_additive/broadcast-batch",
        ("score.additive", "input.batch-broadcast", *_SCORE_SHAPE),
        {
            "query": d.uniform(2, 1, 2, 3),
            "keys": d.uniform(3, 3, 2),
            "W_q": w_q,
            "W_k": w_k,
            "v_a": v_a,
        },
    )
    yield CaseSpec(
        "score_additive/weight-rows",
        ("input.sizes-agree",),
        {"query": qc[0], "keys": kc[0], "W_q": w_q, "W_k": d.uniform(3, 2), "v_a": v_a},
        raises="ShapeError",
    )
    yield CaseSpec(
        "score_location/basic",
        ("score.location", *_SCORE_SHAPE),
        {"query": d.uniform(2, 3, 4), "W_a": d.uniform(5, 4)},
    )
    for name, clause, w in _table(
        ("weight-width", "input.sizes-agree", d.uniform(5, 3)),
        ("weight-rank", "input.rank", d.uniform(5)),
    ):
        yield CaseSpec(
            f"score_location/{name}",
            (clause,),
            {"query": d.uniform(3, 4), "W_a": w},
            raises="ShapeError",
        )


def _table(*rows: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The rows of a table of case variants (a typed list of heterogeneous tuples)."""
    return list(rows)


def _poke(a: npt.NDArray[Any], index: tuple[int, ...], value: float) -> F64:
    """A float copy of ``a`` with one entry replaced."""
    out = np.array(a, dtype=np.float64)
    out[index] = value
    return out


_SOFTMAX = ("distribution.softmax", "distribution.nonnegative", "distribution.sums-to-one")
_BIG = float(np.finfo(np.float64).max)


def _distribution_cases() -> Iterator[CaseSpec]:
    d = Draw("distribution")
    s = d.uniform(2, 3, 5, scale=2.0)
    mask = d.mask(2, 3, 5)
    mask[..., 0] = True
    f = "attention_distribution"
    yield CaseSpec(f"{f}/basic", _SOFTMAX, {"scores": s})
    yield CaseSpec(
        f"{f}/boolean-mask",
        (*_SOFTMAX, "distribution.masked-zero", "distribution.mask-polarity"),
        {"scores": s},
        {"mask": mask},
    )
    yield CaseSpec(
        f"{f}/all-true-mask",
        (*_SOFTMAX, "distribution.mask-polarity"),
        {"scores": s},
        {"mask": np.ones((5,), dtype=bool)},
        description="an all-True mask equals no mask: the same weights as basic",
    )
    additive = np.where(mask, d.uniform(2, 3, 5), -math.inf)
    yield CaseSpec(
        f"{f}/additive-mask",
        (*_SOFTMAX, "distribution.additive-mask", "distribution.masked-zero"),
        {"scores": s},
        {"mask": additive},
        description="finite entries bias the scores, -inf disallows",
    )
    yield CaseSpec(
        f"{f}/large-finite-mask",
        (*_SOFTMAX, "distribution.additive-mask", "distribution.stable"),
        {"scores": s[0]},
        {"mask": np.where(mask[0], 0.0, -1e30)},
        description="-1e30 is a finite bias, not a disallowed key: exp underflows to 0",
        float32=True,
    )
    yield CaseSpec(
        f"{f}/minus-inf-scores",
        (*_SOFTMAX, "distribution.softmax", "distribution.masked-zero"),
        {"scores": np.where(mask[0], s[0], -math.inf)},
        description="a -inf score disallows its key",
    )
    rows = s[0].copy()
    full = mask[0].copy()
    full[1] = False
    yield CaseSpec(
        f"{f}/fully-masked-row",
        ("distribution.fully-masked-row", "distribution.masked-zero"),
        {"scores": rows},
        {"mask": full},
        description="row 1 has no allowed key: all-zero weights with zero gradient",
    )
    yield CaseSpec(
        f"{f}/fully-masked-additive",
        ("distribution.fully-masked-row", "distribution.additive-mask"),
        {"scores": rows},
        {"mask": np.where(full, 0.0, -math.inf)},
    )
    yield CaseSpec(
        f"{f}/all-minus-inf-row",
        ("distribution.fully-masked-row",),
        {"scores": np.where(full, rows, -math.inf)},
    )
    yield CaseSpec(
        f"{f}/extreme-logits",
        (*_SOFTMAX, "distribution.stable"),
        {
            "scores": np.array(
                [[_BIG, -_BIG, _BIG / 2, 0.0], [_BIG, np.nextafter(_BIG, 0), -_BIG, _BIG]]
            )
        },
        description="scores at +-float64 max: no overflow, no NaN",
        vjp=False,
        float32=False,
    )
    yield CaseSpec(
        f"{f}/overflow-range",
        (*_SOFTMAX, "distribution.stable"),
        {"scores": np.array([[710.0, 709.5, 0.0, -745.0], [-1000.0, -1001.0, -1002.5, -1000.25]])},
        description="exp overflows (710) or underflows (-1000) without the max shift",
        float32=False,
    )
    yield CaseSpec(
        f"{f}/overflowing-logits",
        (*_SOFTMAX, "distribution.stable", "distribution.additive-mask"),
        {"scores": np.array([[-1e308, -1.5e308, 0.5], [-1e308, -1.25e308, -1.5e308]])},
        {"mask": np.array([[-1e308, -1e308, -math.inf], [-1e308, -1e308, -1e308]])},
        description=(
            "score + mask is finite in exact arithmetic (about -2e308) though it overflows "
            "float64: the keys are allowed and each row sums to one"
        ),
        vjp=False,
        float32=False,
    )
    base = d.uniform(2, 4, bits=20)
    yield CaseSpec(f"{f}/shift-base", (*_SOFTMAX, "distribution.shift-invariant"), {"scores": base})
    yield CaseSpec(
        f"{f}/shift-by-1024",
        (*_SOFTMAX, "distribution.shift-invariant"),
        {"scores": base + 1024.0},
        description="shift-base plus 1024 (exact): the same expected weights",
    )
    yield CaseSpec(
        f"{f}/ties",
        ("distribution.ties-uniform", *_SOFTMAX),
        {"scores": np.array([[1.5, 1.5, 1.5], [-7.0, -7.0, -7.0]])},
        description="equal scores: weight 1/3 each",
    )
    yield CaseSpec(
        f"{f}/ties-masked",
        ("distribution.ties-uniform", "distribution.masked-zero"),
        {"scores": np.array([[2.0, 2.0, 2.0, 2.0, 2.0]])},
        {"mask": np.array([True, False, True, True, True])},
        description="four allowed equal scores: 1/4 each, 0 at the masked key",
    )
    yield CaseSpec(
        f"{f}/near-ties",
        _SOFTMAX,
        {"scores": np.array([[2.0, 2.0 + 2.0**-50, 2.0 - 2.0**-49]])},
    )
    yield CaseSpec(
        f"{f}/mask-broadcast",
        (*_SOFTMAX, "input.batch-broadcast", "distribution.masked-zero"),
        {"scores": s},
        {"mask": np.array([[[True, True, False, True, False]], [[True, False, True, True, True]]])},
        description="a [2, 1, Tk] mask broadcast over the query rows",
    )
    yield CaseSpec(
        f"{f}/mask-adds-batch",
        (*_SOFTMAX, "input.batch-broadcast"),
        {"scores": s[0]},
        {"mask": np.array([[[True, True, True, True, True]], [[False, True, True, False, True]]])},
        description="a mask with a leading batch axis gives the result that axis too",
    )
    poisoned = _poke(s[0], (0, 1), math.nan)
    poisoned[2, 3] = math.inf
    poison_mask = np.ones((3, 5), dtype=bool)
    poison_mask[0, 1] = poison_mask[2, 3] = False
    yield CaseSpec(
        f"{f}/poison-masked",
        (
            "input.unread-nonfinite",
            "input.unread-positions",
            "input.unread-gradient",
            "distribution.masked-zero",
        ),
        {"scores": poisoned},
        {"mask": poison_mask},
        description="NaN and +inf at masked positions are not read; their gradient is 0",
    )
    for name, clause, error, scores, m in _table(
        ("mask-shape", "distribution.mask-shape", "ShapeError", s[0], np.ones((4,), dtype=bool)),
        (
            "mask-dtype",
            "distribution.mask-shape",
            "DTypeError",
            s[0],
            np.ones((3, 5), dtype=np.int64),
        ),
        (
            "nan-additive",
            "distribution.additive-mask",
            "NonFiniteInputError",
            s[0],
            _poke(np.zeros((3, 5)), (1, 1), math.nan),
        ),
        (
            "plus-inf-additive",
            "distribution.additive-mask",
            "NonFiniteInputError",
            s[0],
            _poke(np.zeros((3, 5)), (1, 1), math.inf),
        ),
        ("nan-score", "input.finite", "NonFiniteInputError", _poke(s[0], (2, 2), math.nan), None),
        (
            "plus-inf-score",
            "input.finite",
            "NonFiniteInputError",
            _poke(s[0], (2, 2), math.inf),
            None,
        ),
        ("rank-1", "input.rank", "ShapeError", s[0, 0], None),
        ("empty-keys", "input.nonempty", "ShapeError", np.zeros((3, 0)), None),
        (
            "integer-scores",
            "input.float-dtype",
            "DTypeError",
            np.ones((2, 3), dtype=np.int64),
            None,
        ),
    ):
        options = {} if m is None else {"mask": m}
        yield CaseSpec(f"{f}/{name}", (clause,), {"scores": scores}, options, raises=error)

    f = "local_m_distribution"
    local = ("local.m-position", "local.window", "local.window-softmax")
    sq = d.uniform(5, 5, scale=2.0)
    yield CaseSpec(f"{f}/square", local, {"scores": sq}, {"half_width": 1})
    yield CaseSpec(
        f"{f}/half-width-0",
        local,
        {"scores": sq},
        {"half_width": 0},
        description="D = 0: weight 1 on the diagonal",
    )
    yield CaseSpec(
        f"{f}/more-queries",
        local,
        {"scores": d.uniform(2, 6, 3)},
        {"half_width": 1},
        description="Tq = 6 > Tk = 3: rows 5 and beyond have an empty window and are zero",
    )
    yield CaseSpec(f"{f}/more-keys", local, {"scores": d.uniform(3, 7)}, {"half_width": 2})
    lm = np.ones((5, 5), dtype=bool)
    lm[2, 1:4] = False
    lm[0, 1] = False
    yield CaseSpec(
        f"{f}/masked",
        (*local, "distribution.masked-zero"),
        {"scores": sq},
        {"half_width": 1, "mask": lm},
        description="the mask empties row 2's window (a zero row) and narrows row 0's",
    )
    for name, clause, error, options in _table(
        ("negative-half-width", "local.half-width", "ArgumentError", {"half_width": -1}),
        ("float-half-width", "local.half-width", "DTypeError", {"half_width": 1.5}),
        ("bool-half-width", "local.half-width", "DTypeError", {"half_width": True}),
        (
            "additive-mask",
            "local.boolean-mask",
            "DTypeError",
            {"half_width": 1, "mask": np.zeros((5, 5))},
        ),
    ):
        yield CaseSpec(f"{f}/{name}", (clause,), {"scores": sq}, options, raises=error)

    f = "local_p_position"
    qp, wp, vp = d.uniform(2, 3, 4), d.uniform(5, 4), d.uniform(5)
    yield CaseSpec(
        f"{f}/basic",
        ("local.p-position",),
        {"query": qp, "W_p": wp, "v_p": vp},
        {"source_length": 7},
    )
    yield CaseSpec(
        f"{f}/source-length-1",
        ("local.p-position",),
        {"query": qp[0], "W_p": wp, "v_p": vp},
        {"source_length": 1},
        description="S = 1: every position is 0",
    )
    yield CaseSpec(
        f"{f}/saturated",
        ("local.p-position",),
        {"query": qp[0], "W_p": wp, "v_p": 30 * vp},
        {"source_length": 9},
        description="|logit| ~ 50: the sigmoid saturates and p reaches 0 or S - 1 to rounding",
    )
    for name, clause, error, args, options in _table(
        ("zero-source-length", "local.p-position", "ArgumentError", {}, {"source_length": 0}),
        ("float-source-length", "local.p-position", "DTypeError", {}, {"source_length": 7.0}),
        (
            "weight-width",
            "input.sizes-agree",
            "ShapeError",
            {"W_p": d.uniform(5, 3)},
            {"source_length": 7},
        ),
    ):
        full_args = {"query": qp[0], "W_p": wp, "v_p": vp} | args
        yield CaseSpec(f"{f}/{name}", (clause,), full_args, options, raises=error)

    f = "local_p_distribution"
    lp = ("local.p-window", "local.p-gaussian", "local.window")
    sp = d.uniform(3, 6, scale=2.0)
    yield CaseSpec(
        f"{f}/basic",
        lp,
        {"scores": sp, "positions": np.array([2.5, 0.3125, 4.875])},
        {"half_width": 2},
    )
    yield CaseSpec(
        f"{f}/from-local-p-position",
        lp,
        {"scores": d.uniform(2, 3, 8), "positions": d.uniform(2, 3, scale=1.75, bits=30) + 3.5},
        {"half_width": 3},
        description="real positions in (0, 7), as local_p_position predicts them",
    )
    yield CaseSpec(
        f"{f}/outside-source",
        ("local.p-window", "local.p-gaussian"),
        {"scores": sp, "positions": np.array([-1.5, 7.25, -3.0])},
        {"half_width": 2},
        description="positions beyond [0, Tk - 1] narrow the window; row 2's is empty",
    )
    yield CaseSpec(
        f"{f}/window-border",
        ("local.p-window",),
        {"scores": sp, "positions": np.array([3.0, 2.0, 0.0])},
        {"half_width": 2},
        description="keys at exactly |j - p| = D are inside (no gradient: it jumps there)",
        vjp=False,
    )
    yield CaseSpec(
        f"{f}/window-border-rounding",
        ("local.p-window",),
        {"scores": d.uniform(2, 5), "positions": np.array([1 - 2.0**-53, -(2.0**-60)])},
        {"half_width": 2},
        description=(
            "|3 - p_0| = 2 + 2**-53 and |2 - p_1| = 2 + 2**-60 are beyond D = 2, although "
            "both differences round to 2.0 in float64: keys 3 and 2 are outside"
        ),
        vjp=False,
        float32=False,
    )
    yield CaseSpec(
        f"{f}/half-width-1",
        ("local.p-gaussian", "local.half-width"),
        {"scores": sp, "positions": np.array([1.25, 2.75, 4.5])},
        {"half_width": 1},
        description="D = 1, the smallest half-width of local-p",
    )
    pm = np.ones((3, 6), dtype=bool)
    pm[0, 2] = pm[1, 3] = False
    yield CaseSpec(
        f"{f}/masked",
        (*lp, "distribution.masked-zero"),
        {"scores": sp, "positions": np.array([2.5, 3.25, 1.125])},
        {"half_width": 2, "mask": pm},
    )
    for name, clause, error, args, options in _table(
        ("half-width-0", "local.half-width", "ArgumentError", {}, {"half_width": 0}),
        (
            "nan-position",
            "input.finite",
            "NonFiniteInputError",
            {"positions": np.array([1.0, math.nan, 2.0])},
            {"half_width": 2},
        ),
        (
            "positions-length",
            "input.sizes-agree",
            "ShapeError",
            {"positions": np.array([1.0, 2.0])},
            {"half_width": 2},
        ),
        (
            "additive-mask",
            "local.boolean-mask",
            "DTypeError",
            {},
            {"half_width": 2, "mask": np.zeros((3, 6))},
        ),
    ):
        full_args = {"scores": sp, "positions": np.array([2.5, 0.5, 4.0])} | args
        yield CaseSpec(f"{f}/{name}", (clause,), full_args, options, raises=error)


def _value_cases() -> Iterator[CaseSpec]:
    d = Draw("value")
    f = "attention_value"
    w, v = d.uniform(2, 3, 4), d.uniform(2, 4, 3)
    yield CaseSpec(f"{f}/basic", ("value.weighted-sum",), {"weights": w, "values": v})
    probs = np.array(
        [[0.25, 0.5, 0.125, 0.125], [1.0, 0.0, 0.0, 0.0], [0.0625, 0.4375, 0.25, 0.25]]
    )
    yield CaseSpec(
        f"{f}/convex",
        ("value.weighted-sum", "value.convex-hull"),
        {"weights": probs, "values": v[0]},
        description="rows of the weights are distributions: the context lies in the hull",
    )
    v1, v2 = d.uniform(4, 3, bits=30), d.uniform(4, 3, bits=30)
    for name, values in _table(
        ("linear-a", v1),
        ("linear-b", v2),
        ("linear-combined", 0.5 * v1 - 0.25 * v2),
    ):
        yield CaseSpec(
            f"{f}/{name}",
            ("value.weighted-sum", "value.linear"),
            {"weights": probs, "values": values},
            description="linear-combined = 0.5 linear-a - 0.25 linear-b, exactly",
        )
    yield CaseSpec(
        f"{f}/broadcast-batch",
        ("value.weighted-sum", "input.batch-broadcast"),
        {"weights": d.uniform(2, 1, 3, 4), "values": d.uniform(3, 4, 2)},
    )
    unread = probs.copy()
    unread[:, 2] = 0.0
    poisoned = v[0].copy()
    poisoned[2] = [math.nan, math.inf, -math.inf]
    yield CaseSpec(
        f"{f}/zero-weight-unread",
        ("value.zero-weight-unread", "input.unread-positions", "input.unread-nonfinite"),
        {"weights": unread, "values": poisoned},
        description=(
            "value row 2 has weight 0 in every query row: NaN/inf there are not read, and "
            "the gradients of that row and of weight column 2 are zero"
        ),
    )
    for name, clause, error, args in _table(
        ("keys-mismatch", "input.sizes-agree", "ShapeError", {"values": d.uniform(5, 3)}),
        (
            "nan-weight",
            "input.finite",
            "NonFiniteInputError",
            {"weights": _poke(probs, (0, 0), math.nan)},
        ),
        (
            "nan-read-value",
            "input.finite",
            "NonFiniteInputError",
            {"values": _poke(v[0], (1, 1), math.nan)},
        ),
    ):
        full_args = {"weights": probs, "values": v[0]} | args
        yield CaseSpec(f"{f}/{name}", (clause,), full_args, raises=error)

    f = "concatenate_context"
    a, s = d.uniform(2, 3, 2), d.uniform(2, 3, 4)
    yield CaseSpec(f"{f}/basic", ("concat.context-first",), {"context": a, "query": s})
    yield CaseSpec(
        f"{f}/broadcast-batch",
        ("concat.context-first", "input.batch-broadcast"),
        {"context": a, "query": s[0]},
    )
    yield CaseSpec(
        f"{f}/rows-mismatch",
        ("input.sizes-agree",),
        {"context": a[0], "query": d.uniform(2, 4)},
        raises="ShapeError",
    )

    f = "attentional_hidden_state"
    w_c, b_c = d.uniform(5, 6), d.uniform(5)
    yield CaseSpec(
        f"{f}/with-bias", ("hidden.tanh",), {"context": a, "query": s, "W_c": w_c, "b_c": b_c}
    )
    yield CaseSpec(
        f"{f}/no-bias", ("hidden.tanh",), {"context": a, "query": s, "W_c": w_c, "b_c": None}
    )
    yield CaseSpec(
        f"{f}/saturated",
        ("hidden.tanh",),
        {"context": a[0], "query": s[0], "W_c": 30 * w_c, "b_c": None},
        description="pre-activations of size ~50: tanh rounds to +-1",
    )
    for name, args in _table(
        ("weight-width", {"W_c": d.uniform(5, 5)}),
        ("bias-length", {"b_c": d.uniform(4)}),
    ):
        full_args = {"context": a[0], "query": s[0], "W_c": w_c, "b_c": b_c} | args
        yield CaseSpec(f"{f}/{name}", ("input.sizes-agree",), full_args, raises="ShapeError")

    f = "output_distribution"
    h, w_y, b_y = d.uniform(2, 3, 4, scale=0.5), d.uniform(6, 4), d.uniform(6)
    yield CaseSpec(
        f"{f}/with-bias", ("output.softmax",), {"attentional_state": h, "W_y": w_y, "b_y": b_y}
    )
    yield CaseSpec(
        f"{f}/no-bias", ("output.softmax",), {"attentional_state": h, "W_y": w_y, "b_y": None}
    )
    yield CaseSpec(
        f"{f}/large-logits",
        ("output.softmax", "distribution.stable"),
        {"attentional_state": h[0], "W_y": 400 * w_y, "b_y": None},
        description="logits of several hundred: the softmax must be shifted",
        float32=False,
    )
    yield CaseSpec(
        f"{f}/weight-width",
        ("input.sizes-agree",),
        {"attentional_state": h[0], "W_y": d.uniform(6, 3), "b_y": None},
        raises="ShapeError",
    )


def _composite_cases() -> Iterator[CaseSpec]:
    d = Draw("composite")
    f = "attention"
    # Note: the composites' shapes are small on purpose: every input element costs one
    # exact evaluation for the error scales; batch axes appear in the cases about them.
    q, k, v = d.uniform(3, 3), d.uniform(4, 3), d.uniform(4, 2)
    mask = d.mask(3, 4)
    mask[:, 0] = True
    params: dict[str, dict[str, Any]] = {
        "dot": {},
        "scaled_dot": {"scale": None},
        "general": {"W_a": d.uniform(3, 3)},
        "concat": {"W_a": d.uniform(3, 6), "v_a": d.uniform(3)},
        "additive": {"W_q": d.uniform(3, 3), "W_k": d.uniform(3, 3), "v_a": d.uniform(3)},
        "location": {"W_a": d.uniform(4, 3)},
    }
    comp = ("attention.composition",)
    for kind, extra in params.items():
        score_clause = f"score.{kind.replace('_', '-')}"
        yield CaseSpec(
            f"{f}/{kind.replace('_', '-')}",
            (*comp, score_clause, *_SOFTMAX, "value.weighted-sum"),
            {"query": q, "keys": k, "values": v},
            {"score": kind, **extra},
        )
    yield CaseSpec(
        f"{f}/scaled-dot-explicit",
        (*comp, "score.scaled-dot"),
        {"query": q, "keys": k, "values": v},
        {"score": "scaled_dot", "scale": 0.75},
    )
    yield CaseSpec(
        f"{f}/broadcast-batch",
        (*comp, "input.batch-broadcast"),
        {"query": d.uniform(2, 1, 2, 3), "keys": d.uniform(3, 3, 3), "values": d.uniform(1, 3, 2)},
        {"score": "dot"},
        description="batch shapes (2, 1), (3,) and (1,) broadcast to (2, 3)",
    )
    full = mask.copy()
    full[2] = False
    yield CaseSpec(
        f"{f}/masked",
        (*comp, "distribution.masked-zero", "distribution.fully-masked-row", "input.not-mutated"),
        {"query": q, "keys": k, "values": v},
        {"score": "general", "mask": full, **params["general"]},
        description="query row 2 has no allowed key: zero weights, zero context",
    )
    yield CaseSpec(
        f"{f}/additive-mask",
        (*comp, "distribution.additive-mask"),
        {"query": q, "keys": k, "values": v},
        {
            "score": "additive",
            "mask": np.where(mask, d.uniform(3, 4), -math.inf),
            **params["additive"],
        },
    )
    qp, kp, vp = q.copy(), k.copy(), v.copy()
    pm = mask.copy()
    pm[:, 3] = False
    pm[1] = False
    kp[3] = math.nan
    vp[3] = math.inf
    qp[1] = math.nan
    yield CaseSpec(
        f"{f}/poison-masked",
        ("input.unread-nonfinite", "input.unread-positions", "input.unread-gradient", *comp),
        {"query": qp, "keys": kp, "values": vp},
        {"score": "concat", "mask": pm, **params["concat"]},
        description="NaN keys and inf values at a masked key, a NaN query row with no allowed key",
    )
    yield CaseSpec(
        f"{f}/location-ignores-keys",
        ("score.location", *comp, "input.unread-positions", "input.unread-nonfinite"),
        {"query": q, "keys": np.full((4, 3), math.nan), "values": v},
        {"score": "location", **params["location"]},
        description="the location score never reads the keys, so NaN keys are fine",
    )
    for name, options in _table(
        ("missing-parameter", {"score": "general"}),
        ("extra-parameter", {"score": "dot", "v_a": d.uniform(3)}),
        ("scale-for-dot", {"score": "dot", "scale": 0.5}),
        ("unknown-score", {"score": "cosine"}),
    ):
        yield CaseSpec(
            f"{f}/{name}",
            ("attention.score-parameters",),
            {"query": q, "keys": k, "values": v},
            options,
            raises="ArgumentError",
        )

    f = "scaled_dot_product_attention"
    formula = ("sdpa.formula", *_SOFTMAX, "value.weighted-sum")
    yield CaseSpec(
        f"{f}/basic",
        (*formula, "sdpa.default-scale", "input.result-dtype", "input.not-mutated"),
        {"query": d.uniform(2, 3, 4), "key": d.uniform(2, 4, 4), "value": d.uniform(2, 4, 2)},
        description="d = 4: the default scale is 0.5",
    )
    yield CaseSpec(
        f"{f}/default-scale-d3",
        (*formula, "sdpa.default-scale"),
        {"query": q, "key": k, "value": v},
        description="d = 3: the default scale 1/sqrt(3) rounded once",
    )
    for name, scale in [("explicit-scale", 0.375), ("negative-scale", -2.0), ("zero-scale", 0.0)]:
        yield CaseSpec(
            f"{f}/{name}",
            (*formula, "score.scale-applied"),
            {"query": q, "key": k, "value": v},
            {"scale": scale},
        )
    for alignment in ("top_left", "bottom_right"):
        clause = f"sdpa.causal-{alignment.replace('_', '-')}"
        for t_q, t_k in [(4, 4), (2, 5), (5, 2)]:
            empty_rows: tuple[str, ...] = (
                ("distribution.fully-masked-row",)
                if alignment == "bottom_right" and t_q > t_k
                else ()
            )
            yield CaseSpec(
                f"{f}/causal-{alignment.replace('_', '-')}-{t_q}x{t_k}",
                (clause, "sdpa.formula", *empty_rows),
                {"query": d.uniform(t_q, 2), "key": d.uniform(t_k, 2), "value": d.uniform(t_k, 2)},
                {"is_causal": True, "causal_alignment": alignment},
            )
    cm = d.mask(3, 4)
    yield CaseSpec(
        f"{f}/causal-with-boolean-mask",
        ("sdpa.causal-with-mask", "sdpa.causal-bottom-right", "distribution.masked-zero"),
        {"query": q, "key": k, "value": v},
        {"mask": cm, "is_causal": True, "causal_alignment": "bottom_right"},
    )
    yield CaseSpec(
        f"{f}/causal-with-additive-mask",
        ("sdpa.causal-with-mask", "sdpa.causal-top-left", "distribution.additive-mask"),
        {"query": q, "key": k, "value": v},
        {"mask": np.where(cm, d.uniform(3, 4), -math.inf), "is_causal": True},
        description="the finite entries are kept where causal allows",
    )
    gq, gk, gv = d.uniform(1, 4, 2, 3), d.uniform(1, 2, 3, 3), d.uniform(1, 2, 3, 2)
    yield CaseSpec(
        f"{f}/grouped-heads",
        ("sdpa.grouped-query-heads", "sdpa.formula"),
        {"query": gq, "key": gk, "value": gv},
        {"enable_gqa": True},
        description="Hq = 4, Hk = 2: query heads 0, 1 read key head 0 and heads 2, 3 head 1",
    )
    yield CaseSpec(
        f"{f}/grouped-heads-causal",
        ("sdpa.grouped-query-heads", "sdpa.causal-top-left"),
        {"query": gq, "key": gk, "value": gv},
        {"enable_gqa": True, "is_causal": True},
    )
    yield CaseSpec(
        f"{f}/grouped-heads-one-group",
        ("sdpa.grouped-query-heads",),
        {"query": gq[:, :2], "key": gk, "value": gv},
        {"enable_gqa": True},
        description="Hq = Hk: enable_gqa changes nothing",
    )
    yield CaseSpec(
        f"{f}/key-padding-mask",
        ("input.batch-broadcast", "distribution.masked-zero", "sdpa.formula"),
        {
            "query": d.uniform(2, 2, 2, 2),
            "key": d.uniform(2, 2, 3, 2),
            "value": d.uniform(2, 2, 3, 2),
        },
        {"mask": np.array([[[[True, True, False]]], [[[True, False, True]]]])},
        description="a [B, 1, 1, Tk] padding mask broadcast over heads and queries",
    )
    pq, pk, pv = q.copy(), k.copy(), v.copy()
    padding = np.array([True, True, False, False])
    pk[2] = math.nan
    pv[2] = math.inf
    pv[3] = 1000.0
    yield CaseSpec(
        f"{f}/poison-masked",
        (
            "input.unread-nonfinite",
            "input.unread-positions",
            "input.unread-gradient",
            "sdpa.formula",
        ),
        {"query": pq, "key": pk, "value": pv},
        {"mask": padding},
        description="NaN keys, inf and 1000 (ONNX's poison) values at masked keys",
    )
    yield CaseSpec(
        f"{f}/large-logits",
        ("distribution.stable", "sdpa.formula"),
        {"query": q * 2.0**500, "key": k * 2.0**500, "value": v},
        {"scale": 1.0},
        description="scores near 1e301: saturated weights, no overflow",
        vjp=False,
        float32=False,
    )
    yield CaseSpec(
        f"{f}/overflow-range",
        ("distribution.stable", "sdpa.formula"),
        {"query": q * 16.0, "key": k * 16.0, "value": v},
        {"scale": 1.0},
        description="scores of several hundred: exp overflows without the shift",
        float32=False,
    )
    yield CaseSpec(
        f"{f}/overflow-before-scale",
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
    )
    yield CaseSpec(
        f"{f}/ties",
        ("distribution.ties-uniform", "sdpa.formula"),
        {"query": np.zeros((3, 3)), "key": k, "value": v},
        description="a zero query gives equal scores and the mean of the values",
    )
    yield CaseSpec(
        f"{f}/large-finite-mask",
        ("distribution.additive-mask", "sdpa.formula"),
        {"query": q, "key": k, "value": v},
        {"mask": np.where(mask, 0.0, -1e30)},
        description="-1e30 is a finite bias, not a disallowed key",
    )
    for name, clause, error, args, options in _table(
        (
            "gqa-not-divisible",
            "sdpa.gqa-heads-divisible",
            "ShapeError",
            {"query": d.uniform(1, 3, 2, 3)},
            {"enable_gqa": True},
        ),
        (
            "gqa-rank-2",
            "sdpa.gqa-heads-divisible",
            "ShapeError",
            {"query": q, "key": k, "value": v},
            {"enable_gqa": True},
        ),
        (
            "gqa-value-heads",
            "sdpa.gqa-heads-divisible",
            "ShapeError",
            {"value": d.uniform(1, 1, 3, 2)},
            {"enable_gqa": True},
        ),
        (
            "unknown-alignment",
            "sdpa.causal-alignment-known",
            "ArgumentError",
            {},
            {"causal_alignment": "bottom_left"},
        ),
        ("integer-is-causal", "sdpa.formula", "DTypeError", {}, {"is_causal": 1}),
        ("feature-mismatch", "input.sizes-agree", "ShapeError", {"key": d.uniform(1, 2, 3, 2)}, {}),
        ("nan-scale", "input.scale-finite", "ArgumentError", {}, {"scale": math.nan}),
    ):
        full_args = {"query": gq, "key": gk, "value": gv} | args
        yield CaseSpec(f"{f}/{name}", (clause,), full_args, options, raises=error)


def _complex_cases() -> Iterator[CaseSpec]:
    d = Draw("complex")
    ext = ("input.complex-extension",)
    mask = np.array([[True, True, False, True], [False, True, True, True]])
    yield CaseSpec(
        "attention_distribution/complex",
        (*ext, "distribution.softmax"),
        {"scores": d.complex(2, 4)},
        {"mask": mask},
        description="the analytic continuation, shifted by the largest real part",
        vjp=False,
        float32=False,
    )
    yield CaseSpec(
        "scaled_dot_product_attention/complex",
        (*ext, "sdpa.formula"),
        {"query": d.complex(2, 3), "key": d.complex(4, 3), "value": d.complex(4, 2)},
        {"is_causal": True, "causal_alignment": "bottom_right"},
        vjp=False,
        float32=False,
    )
    yield CaseSpec(
        "local_p_position/complex",
        (*ext, "local.p-position"),
        {"query": d.complex(3, 2), "W_p": d.uniform(3, 2), "v_p": d.uniform(3)},
        {"source_length": 5},
        vjp=False,
        float32=False,
    )


_CASES: tuple[CaseSpec, ...] | None = None


def cases() -> tuple[CaseSpec, ...]:
    """Every golden case, in a fixed order (grouped by function when written)."""
    global _CASES
    if _CASES is None:
        _CASES = (
            *_score_cases(),
            *_distribution_cases(),
            *_value_cases(),
            *_composite_cases(),
            *_complex_cases(),
        )
        ids = [c.id for c in _CASES]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise ValueError(f"golden case ids must be unique; repeated: {sorted(duplicates)}")
    return _CASES


# --- computing the answers ----------------------------------------------------------------


def _signature(function: str) -> tuple[list[str], list[str]]:
    """Positional and keyword parameter names of the spec stub."""
    params = inspect.signature(getattr(attnspec, function)).parameters.values()
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    keyword = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return positional, keyword


def _cotangents(case: CaseSpec, shapes: Sequence[tuple[int, ...]]) -> list[F64]:
    draw = Draw(f"{case.id}#cotangent")
    return [draw.uniform(*shape) for shape in shapes]


def _differentiable(case: CaseSpec) -> dict[str, npt.NDArray[Any]]:
    args = {**case.inputs, **case.options}
    return {
        name: value
        for name, value in args.items()
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc"
    }


def _elementwise(
    function: Callable[..., Any], *arrays: npt.NDArray[Any]
) -> npt.NDArray[np.object_]:
    """``function`` applied elementwise, into an object array."""
    out: npt.NDArray[np.object_] = np.vectorize(function, otypes=[object])(*arrays)
    return out


def _number(v: Any) -> Any:
    return v.value if isinstance(v, exact.Var) else v


def _mp_abs(values: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    return _elementwise(lambda v: abs(_number(v)), values)


def _values(values: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    return _elementwise(_number, values)


def error_scales(
    case: CaseSpec, cotangents: Sequence[F64] | None
) -> tuple[list[npt.NDArray[np.object_]], dict[str, npt.NDArray[np.object_]]]:
    """The error scale of every output and, with cotangents, of every input gradient."""
    window = case.inputs.get("positions") if case.function == "local_p_distribution" else None
    arrays = _differentiable(case)
    with mpmath.mp.workprec(SCALE_PRECISION):

        def run(
            with_vjp: bool, name: str | None = None, index: tuple[int, ...] = (), value: Any = None
        ) -> tuple[list[npt.NDArray[np.object_]], dict[str, npt.NDArray[np.object_]]]:
            inputs, options = dict(case.inputs), dict(case.options)
            if name is not None:
                target = inputs if name in inputs else options
                changed = np.array(target[name], dtype=object)
                changed[index] = value
                target[name] = changed
            ev = exact.evaluate(case.function, inputs, options, window_positions=window)
            outs = [_values(o) for o in ev.outputs]
            grads = ev.vjp(cotangents) if with_vjp and cotangents is not None else {}
            return outs, grads

        def change(
            after: npt.NDArray[np.object_], before: npt.NDArray[np.object_]
        ) -> npt.NDArray[np.object_]:
            return _elementwise(lambda u, v: abs(u - v), after, before)

        y0, g0 = run(True)
        # Note: with the step x * FD_STEP, |x dy/dx| = |y(x + step) - y(x)| / FD_STEP; the
        # changes are summed first and divided once at the end.
        out_changes = [np.zeros(y.shape, dtype=object) for y in y0]
        grad_changes = {n: np.zeros(g.shape, dtype=object) for n, g in g0.items()}
        for name, array in arrays.items():
            for index in np.ndindex(array.shape):
                x = array[index].item()
                if x == 0 or not np.isfinite(x):
                    continue
                x_mp = mpmath.mpmathify(x)
                y1, g1 = run(True, name, index, x_mp + x_mp * FD_STEP)
                for k in range(len(out_changes)):
                    out_changes[k] = out_changes[k] + change(y1[k], y0[k])
                for n in grad_changes:
                    grad_changes[n] = grad_changes[n] + change(g1[n], g0[n])
        out_scales = [_mp_abs(y) + c / FD_STEP for y, c in zip(y0, out_changes, strict=True)]
        grad_scales: dict[str, npt.NDArray[np.object_]] = {}
        if cotangents is not None:
            with_abs = exact.evaluate(
                case.function, case.inputs, case.options, window_positions=window
            )
            # Note: for a gradient, the sum of the sizes of its chain-rule paths stands in for
            # |g| and the sensitivity to the cotangents: it bounds both, and it is what the
            # chain-rule sum of a float implementation can lose to cancellation (the gradient
            # of a saturated softmax is tiny, but computing it is not).
            paths = with_abs.vjp(cotangents, absolute=True)
            grad_scales = {n: _values(paths[n]) + c / FD_STEP for n, c in grad_changes.items()}
    return out_scales, grad_scales


def build_case(case: CaseSpec) -> dict[str, Any]:
    """The JSON object of one case, answers included."""
    positional, keyword = _signature(case.function)
    unknown = set(case.inputs) - set(positional) | set(case.options) - set(keyword)
    if unknown or list(case.inputs) != positional[: len(case.inputs)]:
        raise ValueError(f"{case.id}: arguments {sorted(unknown)} do not match the signature")
    for clause in case.clauses:
        attnspec.clauses.get(clause)
    # Note: a case with a VJP checks the gradient, so it exercises input.gradient.
    claimed = (
        (*case.clauses, "input.gradient") if case.vjp and case.raises is None else case.clauses
    )
    out: dict[str, Any] = {
        "id": case.id,
        "clauses": list(dict.fromkeys(claimed)),
        "description": case.description,
        "inputs": {n: _encode_value(v) for n, v in case.inputs.items()},
        "options": {n: _encode_value(v) for n, v in case.options.items()},
        "dtypes": ["float64", "float32"] if case.float32 else ["float64"],
    }
    if case.raises is not None:
        return out | {"raises": case.raises, "outputs": None, "cotangents": None, "vjp": None}
    with mpmath.mp.workprec(exact.PRECISIONS[0]):
        probe = exact.evaluate(case.function, case.inputs, case.options)
    cotangents = _cotangents(case, [o.shape for o in probe.outputs]) if case.vjp else None
    outputs, grads = exact.truth(case.function, case.inputs, case.options, cotangents)
    for o in outputs:
        if not np.all(np.isfinite(o)):
            raise ValueError(f"{case.id}: an expected output is not finite")
    out_scales, grad_scales = error_scales(case, cotangents)
    out["outputs"] = [_with_scale(o, s) for o, s in zip(outputs, out_scales, strict=True)]
    out["cotangents"] = None if cotangents is None else [_encode_array(c) for c in cotangents]
    # Note: the VJP covers the arrays a caller differentiates, not the mask (its error
    # scale still counts it as an input, since a float32 caller rounds it too).
    out["vjp"] = (
        None
        if cotangents is None
        else {n: _with_scale(g, grad_scales[n]) for n, g in grads.items() if n != "mask"}
    )
    out["raises"] = None
    return out


# --- files --------------------------------------------------------------------------------


def _dump(value: Any, indent: int = 0) -> str:
    """JSON with objects indented and lists of scalars on one line (stable, diff-friendly)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}  {json.dumps(k)}: {_dump(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = [f"{pad}  {_dump(v, indent + 2)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, separators=(", ", ": "), allow_nan=False)


def tolerance_json() -> dict[str, Any]:
    """The ``tolerance`` object every file carries: :data:`TOLERANCE` in JSON."""
    return {
        dtype: {"ulps": r.ulps, "eps": _hex(r.eps), "tiny": _hex(r.tiny), "reason": r.reason}
        for dtype, r in TOLERANCE.items()
    }


def _file(function: str, built: list[dict[str, Any]]) -> dict[str, Any]:
    positional, keyword = _signature(function)
    return {
        "$schema": "schema.json",
        "format": FORMAT,
        "function": function,
        "signature": {"positional": positional, "keyword": keyword},
        "tolerance": tolerance_json(),
        "cases": built,
    }


def render(built: Sequence[dict[str, Any]]) -> dict[str, str]:
    """File name -> file text for the built cases, one file per function."""
    by_function: dict[str, list[dict[str, Any]]] = {}
    for case in built:
        by_function.setdefault(case["id"].split("/", 1)[0], []).append(case)
    return {
        f"{function}.json": _dump(_file(function, items)) + "\n"
        for function, items in sorted(by_function.items())
    }


def generate(
    select: Callable[[CaseSpec], bool] | None = None, *, workers: int = 1
) -> dict[str, str]:
    """File name -> text of the vector files (of the selected cases only, if ``select``)."""
    chosen = [c for c in cases() if select is None or select(c)]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            built = list(pool.map(_build_by_id, [c.id for c in chosen], chunksize=4))
    else:
        built = [build_case(c) for c in chosen]
    return render(built)


def _build_by_id(case_id: str) -> dict[str, Any]:
    return build_case(next(c for c in cases() if c.id == case_id))


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the vector files (``--check``: only compare them)."""
    parser = argparse.ArgumentParser(
        prog="python -m attnref.vectors.golden", description=main.__doc__
    )
    parser.add_argument("--out", type=Path, default=VECTOR_DIR, help="directory of the JSON files")
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    parser.add_argument("--workers", type=int, default=2, help="processes to compute with")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    files = generate(workers=args.workers)
    elapsed = time.perf_counter() - start
    stale = [
        name
        for name, text in files.items()
        if not (args.out / name).exists() or (args.out / name).read_text(encoding="utf-8") != text
    ]
    extra = sorted(
        p.name for p in args.out.glob("*.json") if p.name not in files and p.name != "schema.json"
    )
    count = sum(text.count('"id": ') for text in files.values())
    size = sum(len(text.encode()) for text in files.values())
    print(f"{count} cases in {len(files)} files, {size / 1e6:.2f} MB, computed in {elapsed:.1f} s")
    if args.check:
        for name in stale + extra:
            print(f"stale: {name}", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in extra:
        (args.out / name).unlink()
    for name in stale:
        (args.out / name).write_text(files[name], encoding="utf-8")
    print(f"wrote {len(stale)} file(s), removed {len(extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
