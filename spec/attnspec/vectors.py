r"""The golden vectors: exact answers for implementations in any language.

The JSON files of ``attnspec/vectors/`` (package data, described by
``schema.json`` beside them) hold, for each spec function, cases with the
clause IDs they exercise, the arguments, the expected outputs correctly
rounded to float64 from an arbitrary-precision evaluation of the spec's
formula, a cotangent per output and the expected input gradients (the VJP),
or, for a bad call, the exception class it must raise.

The outputs are the call's results in order: one array for a step function,
``(context, weights)`` for the composites and, for
:func:`~attnspec.scaled_dot_product_attention` with ``return_lse=True``,
``(context, weights, lse)``. Every expected number is finite but one: the
``-inf`` log-sum-exp of a row with no allowed key (``lse.fully-masked-row``),
whose error scale is 0, so it must be matched exactly.

Floats are C99 hexadecimal strings as Python's ``float.hex`` writes them
(``"0x1.8000000000000p+1"``, ``"-0x0.0p+0"``, ``"inf"``, ``"-inf"``,
``"nan"``), so they round-trip exactly; complex numbers are ``[re, im]``
pairs; a float scalar option is ``{"float": "<hex>"}``.

Tolerance rule
    Each expected number has an *error scale* :math:`S` (the size of the
    result plus its first-order sensitivity to a relative perturbation of
    every input; see :mod:`attnref.vectors.golden`). In dtype ``T`` a result passes
    when :math:`S = 0` and it equals the expected value exactly, or when

    .. math:: |got - expected| \le \text{ulps}_T \cdot \varepsilon_T \cdot S + \text{tiny}_T ,

    with ``ulps``, ``eps`` and ``tiny`` stated per dtype in every file,
    together with the reason for them.

>>> from attnspec import vectors
>>> case = vectors.load_cases("score_dot")[0]
>>> case.id, case.clauses[0]
('score_dot/basic', 'score.dot')
>>> vectors.decode_float("0x1.8000000000000p+1")
3.0
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FLOAT_PATTERN",
    "Expected",
    "Tolerance",
    "VectorCase",
    "decode_array",
    "decode_case",
    "decode_float",
    "decode_tolerance",
    "files",
    "load_cases",
    "load_file",
    "schema",
    "within_tolerance",
]

FLOAT_PATTERN = r"^(-?0x[01]\.[0-9a-f]+p[+-][0-9]+|-?inf|nan)$"
"""How a float64 is written in the vectors: ``float.hex`` output."""

_FLOAT = re.compile(FLOAT_PATTERN)
_PACKAGE = "attnspec"
_DIRECTORY = "vectors"


def decode_float(text: str, /) -> float:
    """A float64 from its hex string, exactly (``inf``, ``-inf`` and ``nan`` included).

    Raises
    ------
    ValueError
        If ``text`` is not written as :data:`FLOAT_PATTERN` says.
    """
    if not _FLOAT.fullmatch(text):
        raise ValueError(f"a vector float must be a hex float such as '0x1.8p+1'; got {text!r}")
    return float.fromhex(text)


def decode_array(obj: Mapping[str, Any], /) -> npt.NDArray[Any]:
    """The NumPy array of a ``{"dtype", "shape", "data"}`` object.

    Raises
    ------
    ValueError
        If the dtype is unknown or the data do not fill the shape.
    """
    shape = tuple(int(n) for n in obj["shape"])
    data = obj["data"]
    if len(data) != math.prod(shape):
        raise ValueError(
            f"an array of shape {shape} needs {math.prod(shape)} items; got {len(data)}"
        )
    dtype = obj["dtype"]
    if dtype == "float64":
        return np.array([decode_float(x) for x in data], dtype=np.float64).reshape(shape)
    if dtype == "complex128":
        values = [complex(decode_float(re_), decode_float(im)) for re_, im in data]
        return np.array(values, dtype=np.complex128).reshape(shape)
    if dtype == "bool":
        return np.array(data, dtype=np.bool_).reshape(shape)
    if dtype == "int64":
        return np.array(data, dtype=np.int64).reshape(shape)
    raise ValueError(f"array dtype must be float64, complex128, bool or int64; got {dtype!r}")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "dtype" in value:
        return decode_array(value)
    if isinstance(value, dict) and "float" in value:
        return decode_float(value["float"])
    return value


@dataclass(frozen=True)
class Tolerance:
    """The tolerance rule of one dtype (see the module docstring)."""

    ulps: float
    eps: float
    tiny: float
    reason: str

    def allowed(self, error_scale: npt.NDArray[np.float64], /) -> npt.NDArray[np.float64]:
        """The largest error allowed at each element (0 where the scale is 0: exact)."""
        scale = np.asarray(error_scale, dtype=np.float64)
        return np.where(scale == 0, 0.0, self.ulps * self.eps * scale + self.tiny)


@dataclass(frozen=True)
class Expected:
    """An expected array with the error scale of each element."""

    value: npt.NDArray[Any]
    error_scale: npt.NDArray[np.float64]


@dataclass(frozen=True)
class VectorCase:
    """One golden case, decoded.

    ``inputs`` are the positional arguments by name, in the order of the
    spec's signature (``None`` for an omitted optional one); ``options`` the
    keyword arguments. A case has ``outputs`` (in the order the call returns
    them) or names the exception class of
    :mod:`attnspec.errors` in ``raises``; ``cotangents`` and ``vjp`` are
    ``None`` where the gradient is not given (a jump, or an unread row whose
    gradient the spec leaves open).
    """

    id: str
    function: str
    clauses: tuple[str, ...]
    description: str
    inputs: dict[str, Any]
    options: dict[str, Any]
    dtypes: tuple[str, ...]
    outputs: tuple[Expected, ...] | None
    cotangents: tuple[npt.NDArray[Any], ...] | None
    vjp: dict[str, Expected] | None
    raises: str | None
    tolerance: dict[str, Tolerance]

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments, trailing omitted ones left out."""
        values = list(self.inputs.values())
        while values and values[-1] is None:
            values.pop()
        return tuple(values)


def _expected(obj: Mapping[str, Any]) -> Expected:
    value = decode_array(obj)
    scale = np.array(obj["error_scale"], dtype=np.float64).reshape(value.shape)
    return Expected(value, scale)


def decode_case(raw: Mapping[str, Any], tolerance: Mapping[str, Tolerance], /) -> VectorCase:
    """A :class:`VectorCase` from its JSON object and the file's tolerance rules."""
    outputs = raw["outputs"]
    cotangents = raw["cotangents"]
    vjp = raw["vjp"]
    return VectorCase(
        id=raw["id"],
        function=raw["id"].split("/", 1)[0],
        clauses=tuple(raw["clauses"]),
        description=raw["description"],
        inputs={k: _decode_value(v) for k, v in raw["inputs"].items()},
        options={k: _decode_value(v) for k, v in raw["options"].items()},
        dtypes=tuple(raw["dtypes"]),
        outputs=None if outputs is None else tuple(_expected(o) for o in outputs),
        cotangents=None if cotangents is None else tuple(decode_array(c) for c in cotangents),
        vjp=None if vjp is None else {k: _expected(v) for k, v in vjp.items()},
        raises=raw["raises"],
        tolerance=dict(tolerance),
    )


def decode_tolerance(raw: Mapping[str, Any], /) -> dict[str, Tolerance]:
    """The tolerance rules of a file's ``tolerance`` object, by dtype."""
    return {
        dtype: Tolerance(
            ulps=float(rule["ulps"]),
            eps=decode_float(rule["eps"]),
            tiny=decode_float(rule["tiny"]),
            reason=rule["reason"],
        )
        for dtype, rule in raw.items()
    }


def files() -> tuple[str, ...]:
    """Names of the vector files shipped with the package, sorted (``schema.json`` excluded)."""
    directory = resources.files(_PACKAGE).joinpath(_DIRECTORY)
    names = (p.name for p in directory.iterdir() if p.name.endswith(".json"))
    return tuple(sorted(n for n in names if n != "schema.json"))


@functools.cache
def load_file(name: str, /) -> dict[str, Any]:
    """The raw JSON object of one vector file (cached; do not modify it)."""
    text = resources.files(_PACKAGE).joinpath(_DIRECTORY, name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON Schema of the vector files."""
    return load_file("schema.json")


@functools.cache
def load_cases(function: str | None = None, /) -> tuple[VectorCase, ...]:
    """Every golden case, or those of one spec function, in file order.

    Raises
    ------
    KeyError
        If no vector file exists for ``function``.
    """
    names = files()
    if function is not None:
        if f"{function}.json" not in names:
            known = ", ".join(n.removesuffix(".json") for n in names)
            raise KeyError(f"no golden vectors for {function!r}; vectors exist for {known}")
        names = (f"{function}.json",)
    out: list[VectorCase] = []
    for name in names:
        raw = load_file(name)
        tolerance = decode_tolerance(raw["tolerance"])
        out.extend(decode_case(c, tolerance) for c in raw["cases"])
    return tuple(out)


def within_tolerance(
    got: npt.ArrayLike, expected: Expected, tolerance: Tolerance, /
) -> npt.NDArray[np.bool_]:
    """Elementwise: does ``got`` meet the tolerance rule? False for NaN and on a shape mismatch."""
    values = np.asarray(got)
    if values.shape != expected.value.shape:
        return np.zeros(expected.value.shape, dtype=bool)
    wide = values.astype(np.complex128 if values.dtype.kind == "c" else np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(wide - expected.value)
        allowed = tolerance.allowed(expected.error_scale)
        ok = np.where(expected.error_scale == 0, wide == expected.value, error <= allowed)
    return np.asarray(ok, dtype=bool)
