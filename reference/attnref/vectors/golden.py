r"""The golden vectors: a deterministic list of cases and their exact answers, as JSON.

Run ``python -m attnref.vectors.golden`` (or ``nox -s vectors``) to regenerate
``spec/attnspec/vectors/*.json``; ``--check`` compares instead of writing.
Every expected value comes from :mod:`attnref.vectors.exact` (mpmath), never from
the NumPy reference, and is the correctly rounded float64 of the exact result
of the spec's formula on the case's float64 inputs.

The cases are the rows of :mod:`attnref.vectors.tables`, one table per spec
function (:func:`plans` reads them). Each case records the clauses it exercises,
the function and its arguments, the expected outputs, a cotangent for every
output and the expected input gradients (the VJP), and for every expected number
its *error scale* (:data:`TOLERANCE` explains how the scale becomes a tolerance).

Error scale of an output
    For an output :math:`y` of the floating inputs :math:`x_m` (every
    floating argument, additive masks and positions included) the scale is

    .. math:: S(y) = |y| + \sum_m |x_m\, \partial y / \partial x_m| ,

    the first-order change of :math:`y` when every input and the result are
    perturbed by one relative unit: :math:`S/|y|` is the componentwise
    relative condition number :math:`\kappa`, so "error :math:`\le k\,
    \varepsilon S`" is ":math:`k` ulps times the condition". A scale of zero
    means :math:`y` is structurally exact (a masked weight, a fully masked
    row, the gradient at an unread position, the ``-inf`` log-sum-exp of a row
    with no allowed key, the one non-finite answer) and must be matched exactly.
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
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mpmath  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

import attnspec
from attnref.vectors import exact, tables
from attnspec.vectors import Tolerance

__all__ = [
    "FD_STEP",
    "FORMAT",
    "SCALE_PRECISION",
    "TOLERANCE",
    "CasePlan",
    "build_case",
    "error_scales",
    "generate",
    "main",
    "plans",
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

TOLERANCE: dict[str, Tolerance] = {
    "float64": Tolerance(
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
    "float32": Tolerance(
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
"""The tolerance rule by dtype: the one place where tolerances are set, with their reasons.

Each file carries it as JSON (:func:`tolerance_json`), which
:func:`attnspec.vectors.decode_tolerance` reads back into these same values."""


@dataclass(frozen=True)
class CasePlan:
    """One golden case before its answers are computed: the call and what it exercises.

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
    # Note: a scale up to the largest float64 is kept (a log-sum-exp of scores near
    # 2**1022 has a scale near 2**1023); one that rounds up past it is refused by
    # _with_scale. ulps * eps * S stays far inside the float64 range.
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


# --- the cases, from the tables -----------------------------------------------------------


def _plans_of(table: tables.CaseTable) -> Iterator[CasePlan]:
    """The cases of one table: a ``Returns`` row as written, a ``Raises`` row on its valid call."""
    for row in table.rows:
        case_id = f"{table.function}/{row.name}"
        if isinstance(row, tables.Raises):
            inputs = {**table.valid, **row.inputs}
            yield CasePlan(
                case_id, (row.clause,), inputs, dict(row.options), raises=row.error.__name__
            )
        else:
            yield CasePlan(
                case_id,
                row.clauses,
                dict(row.inputs),
                dict(row.options),
                description=row.description,
                vjp=row.vjp,
                float32=row.float32,
            )


_PLANS: tuple[CasePlan, ...] | None = None


def plans() -> tuple[CasePlan, ...]:
    """Every golden case, table by table (:func:`attnref.vectors.tables.all_tables`)."""
    global _PLANS
    if _PLANS is None:
        every = list(tables.all_tables())
        functions = [t.function for t in every]
        repeated = {f for f in functions if functions.count(f) > 1}
        if repeated:
            raise ValueError(f"one table per spec function; repeated: {sorted(repeated)}")
        _PLANS = tuple(plan for table in every for plan in _plans_of(table))
        ids = [c.id for c in _PLANS]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise ValueError(f"golden case ids must be unique; repeated: {sorted(duplicates)}")
    return _PLANS


# --- computing the answers ----------------------------------------------------------------


def _signature(function: str) -> tuple[list[str], list[str]]:
    """Positional and keyword parameter names of the spec stub."""
    params = inspect.signature(getattr(attnspec, function)).parameters.values()
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    keyword = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return positional, keyword


def _cotangents(case: CasePlan, shapes: Sequence[tuple[int, ...]]) -> list[F64]:
    draw = tables.InputDraw(f"{case.id}#cotangent")
    return [draw.uniform(*shape) for shape in shapes]


def _differentiable(case: CasePlan) -> dict[str, npt.NDArray[Any]]:
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


def _exact_where_infinite(
    values: npt.NDArray[np.object_], scales: npt.NDArray[np.object_]
) -> npt.NDArray[np.object_]:
    """``scales``, with 0 (match exactly) wherever the value is infinite.

    The one infinite answer is the ``-inf`` log-sum-exp of a row with no allowed
    key (``lse.fully-masked-row``): a constant of the formula, not a rounded number.
    """
    return _elementwise(lambda y, s: 0 if mpmath.isinf(y) else s, values, scales)


def error_scales(
    case: CasePlan, cotangents: Sequence[F64] | None
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
            ev = exact.record(case.function, inputs, options, window_positions=window)
            outs = [_values(o) for o in ev.outputs]
            grads = ev.vjp(cotangents) if with_vjp and cotangents is not None else {}
            return outs, grads

        def change(
            after: npt.NDArray[np.object_], before: npt.NDArray[np.object_]
        ) -> npt.NDArray[np.object_]:
            # Note: u == v first, so that the -inf of an empty log-sum-exp, which no
            # perturbation moves, changes by 0 and not by -inf - -inf = NaN.
            return _elementwise(lambda u, v: 0 if u == v else abs(u - v), after, before)

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
        out_scales = [
            _exact_where_infinite(y, _mp_abs(y) + c / FD_STEP)
            for y, c in zip(y0, out_changes, strict=True)
        ]
        grad_scales: dict[str, npt.NDArray[np.object_]] = {}
        if cotangents is not None:
            with_abs = exact.record(
                case.function, case.inputs, case.options, window_positions=window
            )
            # Note: for a gradient, the sum of the sizes of its chain-rule paths stands in for
            # |g| and the sensitivity to the cotangents: it bounds both, and it is what the
            # chain-rule sum of a float implementation can lose to cancellation (the gradient
            # of a saturated softmax is tiny, but computing it is not).
            paths = with_abs.vjp(cotangents, absolute=True)
            grad_scales = {n: _values(paths[n]) + c / FD_STEP for n, c in grad_changes.items()}
    return out_scales, grad_scales


def build_case(case: CasePlan) -> dict[str, Any]:
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
        probe = exact.record(case.function, case.inputs, case.options)
    cotangents = _cotangents(case, [o.shape for o in probe.outputs]) if case.vjp else None
    outputs, grads = exact.truth(case.function, case.inputs, case.options, cotangents)
    for rounded, raw in zip(outputs, probe.outputs, strict=True):
        # Note: an expected output may be -inf only where the exact value is -inf (the
        # log-sum-exp of a row with no allowed key, lse.fully-masked-row), never where a
        # finite exact value overflows float64 on rounding.
        empty = _elementwise(lambda v: mpmath.isinf(_number(v)), raw).astype(bool)
        if not np.all(np.isfinite(rounded) | empty):
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
    select: Callable[[CasePlan], bool] | None = None, *, workers: int = 1
) -> dict[str, str]:
    """File name -> text of the vector files (of the selected cases only, if ``select``)."""
    chosen = [c for c in plans() if select is None or select(c)]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            built = list(pool.map(_build_by_id, [c.id for c in chosen], chunksize=4))
    else:
        built = [build_case(c) for c in chosen]
    return render(built)


def _build_by_id(case_id: str) -> dict[str, Any]:
    return build_case(next(c for c in plans() if c.id == case_id))


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
