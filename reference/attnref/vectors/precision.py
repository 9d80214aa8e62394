r"""The precision report: the float64 reference against the mpmath truth, clause by clause.

``python -m attnref.vectors.precision`` (or ``nox -s precision``) evaluates the NumPy
reference (:mod:`attnref`) and its VJPs (:mod:`attnref.vjp`) in float64 on
every golden vector and on seeded random inputs, compares each number with
the correctly rounded exact value of :mod:`attnref.vectors.exact`, and prints, per
clause, the worst error next to its bound.

Units
    ``ulps`` is :math:`|got - y| / \operatorname{ulp}(y)`, with
    ``numpy.spacing``. The condition :math:`\kappa = S / |y|` comes from the
    error scale :math:`S` of :mod:`attnref.vectors.golden`, so ``ulps / kappa`` is
    :math:`|got - y| / (\operatorname{ulp}(y)\, \kappa)`, and the column
    ``err/(eps S)`` is the same ratio with ulp taken as :math:`\varepsilon |y|`;
    the goal of the spec is ``err/(eps S) <= 4``
    (:data:`attnref.vectors.golden.TOLERANCE`). An element with :math:`S = 0` must be
    exact; any error there counts as infinitely many ulps.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import attnref
from attnref.vectors import golden
from attnref.vectors.golden import CasePlan
from attnref.vectors.tables import InputDraw
from attnspec import clauses, vectors
from attnspec.errors import AttnSpecError

__all__ = ["GOAL", "Row", "format_table", "main", "measure", "random_cases", "report"]

GOAL = golden.TOLERANCE["float64"].ulps
"""The accuracy goal, in ``err / (eps * S)`` (ulps times the condition number)."""

EPS = golden.TOLERANCE["float64"].eps


@dataclass
class Row:
    """The worst error seen for one clause and one kind of result."""

    clause: str
    kind: str  # "output" or "gradient"
    count: int = 0
    over: int = 0  # values beyond the goal
    ratio: float = 0.0  # err / (eps * S), the worst
    ulps: float = 0.0  # at the worst ratio
    kappa: float = 1.0  # at the worst ratio
    case: str = ""

    @property
    def ok(self) -> bool:
        """Within the goal."""
        return self.ratio <= GOAL


def _ratios(
    got: npt.NDArray[Any], expected: vectors.Expected
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per element: err / (eps S), ulps, and kappa."""
    value = expected.value
    scale = expected.error_scale
    wide = np.asarray(got).astype(np.complex128 if value.dtype.kind == "c" else np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Note: equal values have error 0, the -inf of an empty log-sum-exp included.
        error = np.where(wide == value, 0.0, np.abs(wide - value))
        magnitude = np.abs(value)
        exact_ok = (scale == 0) & (wide == value)
        ratio = np.where(scale > 0, error / (EPS * scale), np.where(exact_ok, 0.0, math.inf))
        ulps = np.where(error == 0, 0.0, error / np.spacing(magnitude))
        kappa = np.where(magnitude > 0, scale / magnitude, np.where(scale > 0, math.inf, 1.0))
    ratio = np.where(np.isnan(ratio), math.inf, ratio)
    ulps = np.where(np.isnan(ulps), math.inf, ulps)
    return ratio, ulps, kappa


def _add(
    rows: dict[tuple[str, str], Row],
    claims: Sequence[str],
    kind: str,
    case_id: str,
    got: npt.NDArray[Any],
    expected: vectors.Expected,
) -> None:
    ratio, ulps, kappa = _ratios(got, expected)
    if ratio.size == 0:
        return
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    for clause in claims:
        row = rows.setdefault((clause, kind), Row(clause, kind))
        row.count += ratio.size
        row.over += int(np.count_nonzero(ratio > GOAL))
        if ratio[worst] >= row.ratio:
            row.ratio = float(ratio[worst])
            row.ulps = float(ulps[worst])
            row.kappa = float(kappa[worst])
            row.case = case_id


def _failed(expected: vectors.Expected) -> npt.NDArray[np.float64]:
    """A stand-in result that misses every expected value (for a call that raised)."""
    return np.full(expected.value.shape, math.nan)


def _float_args(case: vectors.VectorCase) -> tuple[list[Any], dict[str, Any]]:
    return list(case.args), dict(case.options)


def measure(
    cases: Sequence[vectors.VectorCase], rows: dict[tuple[str, str], Row] | None = None
) -> dict[tuple[str, str], Row]:
    """Fold the reference's errors on ``cases`` (float64) into ``rows``, by clause and kind."""
    from attnref.vjp import VJPS

    rows = {} if rows is None else rows
    for case in cases:
        if case.outputs is None:
            continue
        args, options = _float_args(case)
        try:
            # Note: overflow inside the reference is its own business; the result is judged.
            with np.errstate(all="ignore"):
                result = getattr(attnref, case.function)(*args, **options)
        except AttnSpecError:
            # A valid call that raises: every value it owed is infinitely wrong.
            for expected in case.outputs:
                _add(rows, case.clauses, "output", case.id, _failed(expected), expected)
            continue
        outputs = result if isinstance(result, tuple) else (result,)
        for got, expected in zip(outputs, case.outputs, strict=True):
            _add(rows, case.clauses, "output", case.id, got, expected)
        if case.vjp is None or case.cotangents is None:
            continue
        cotangent: Any = case.cotangents if len(case.cotangents) > 1 else case.cotangents[0]
        with np.errstate(all="ignore"):
            grads = VJPS[case.function](*args, **options, cotangent=cotangent)
        for name, expected in case.vjp.items():
            _add(rows, case.clauses, "gradient", case.id, getattr(grads, name), expected)
    return rows


# --- random inputs ------------------------------------------------------------------------

FORMULA_CLAUSES: dict[str, tuple[str, ...]] = {
    "score_dot": ("score.dot",),
    "score_scaled_dot": ("score.scaled-dot",),
    "score_general": ("score.general",),
    "score_concat": ("score.concat",),
    "score_additive": ("score.additive",),
    "score_location": ("score.location",),
    "attention_distribution": ("distribution.softmax",),
    "log_sum_exp": ("lse.formula",),
    "local_m_distribution": ("local.window-softmax",),
    "local_p_position": ("local.p-position",),
    "local_p_distribution": ("local.p-gaussian",),
    "attention_value": ("value.weighted-sum",),
    "concatenate_context": ("concat.context-first",),
    "attentional_hidden_state": ("hidden.tanh",),
    "output_distribution": ("output.softmax",),
    "attention": ("attention.composition",),
    "scaled_dot_product_attention": ("sdpa.formula",),
}
"""The clause stating each function's formula: where random inputs are filed."""


class _Sizes:
    """Random sizes and inputs for one random case."""

    def __init__(self, seed: str) -> None:
        self.draw = InputDraw(seed)

    def size(self, low: int, high: int) -> int:
        return self.draw.integer(low, high)

    def mask(self, *shape: int) -> npt.NDArray[np.bool_]:
        m = self.draw.mask(*shape, keep=0.75)
        m[..., 0] |= self.draw.chance(0.5)  # most rows keep a key; some may be empty
        return m


def _random_case(function: str, index: int) -> CasePlan:
    r = _Sizes(f"precision/{function}/{index}")
    u = r.draw.uniform
    t_q, t_k, d, d_v, d_a = r.size(1, 4), r.size(1, 5), r.size(1, 4), r.size(1, 3), r.size(1, 3)
    q, k, v = u(t_q, d), u(t_k, d), u(t_k, d_v)
    inputs: dict[str, Any]
    options: dict[str, Any] = {}
    if function in ("score_dot", "score_scaled_dot"):
        inputs = {"query": q, "keys": k}
        if function == "score_scaled_dot":
            options = {"scale": None if index % 2 else float(u(1)[0])}
    elif function == "score_general":
        inputs = {"query": q, "keys": u(t_k, d_v), "W_a": u(d, d_v)}
    elif function == "score_concat":
        inputs = {"query": q, "keys": k, "W_a": u(d_a, 2 * d), "v_a": u(d_a)}
    elif function == "score_additive":
        inputs = {"query": q, "keys": k, "W_q": u(d_a, d), "W_k": u(d_a, d), "v_a": u(d_a)}
    elif function == "score_location":
        inputs = {"query": q, "W_a": u(t_k, d)}
    elif function in ("attention_distribution", "log_sum_exp"):
        inputs, options = {"scores": u(t_q, t_k, scale=4.0)}, {"mask": r.mask(t_q, t_k)}
    elif function == "local_m_distribution":
        inputs = {"scores": u(t_q, t_k, scale=4.0)}
        options = {"half_width": r.size(0, 2), "mask": r.mask(t_q, t_k)}
    elif function == "local_p_position":
        inputs, options = {"query": q, "W_p": u(d_a, d), "v_p": u(d_a)}, {"source_length": t_k}
    elif function == "local_p_distribution":
        positions = u(t_q, scale=t_k / 2, bits=30) + t_k / 2
        inputs, options = (
            {"scores": u(t_q, t_k, scale=4.0), "positions": positions},
            {"half_width": r.size(1, 2)},
        )
    elif function == "attention_value":
        inputs = {"weights": np.abs(u(t_q, t_k)) / 4, "values": v}
    elif function == "concatenate_context":
        inputs = {"context": u(t_q, d_v), "query": q}
    elif function == "attentional_hidden_state":
        inputs = {"context": u(t_q, d_v), "query": q, "W_c": u(d_a, d_v + d), "b_c": u(d_a)}
    elif function == "output_distribution":
        inputs = {"attentional_state": u(t_q, d_a), "W_y": u(t_k, d_a, scale=2.0), "b_y": u(t_k)}
    elif function == "attention":
        kinds = ["dot", "scaled_dot", "general", "concat", "additive", "location"]
        kind = kinds[index % len(kinds)]
        table: dict[str, dict[str, Any]] = {
            "dot": {},
            "scaled_dot": {"scale": None},
            "general": {"W_a": u(d, d)},
            "concat": {"W_a": u(d_a, 2 * d), "v_a": u(d_a)},
            "additive": {"W_q": u(d_a, d), "W_k": u(d_a, d), "v_a": u(d_a)},
            "location": {"W_a": u(t_k, d)},
        }
        inputs = {"query": q, "keys": k, "values": v}
        options = {"score": kind, "mask": r.mask(t_q, t_k), **table[kind]}
    else:
        inputs = {"query": q * 2, "key": k * 2, "value": v}
        options = {
            "mask": r.mask(t_q, t_k),
            "is_causal": bool(index % 2),
            "causal_alignment": "bottom_right" if index % 4 >= 2 else "top_left",
        }
    return CasePlan(f"{function}/random-{index}", FORMULA_CLAUSES[function], inputs, options)


def random_cases(per_function: int) -> Iterator[vectors.VectorCase]:
    """Decoded random cases, ``per_function`` for every spec function (deterministic)."""
    tolerance = vectors.decode_tolerance(golden.tolerance_json())
    for function in FORMULA_CLAUSES:
        for index in range(per_function):
            raw = golden.build_case(_random_case(function, index))
            yield vectors.decode_case(raw, tolerance)


def report(per_function: int = 6, cases: Sequence[vectors.VectorCase] | None = None) -> list[Row]:
    """Rows for every clause the vectors (or ``cases``) and the random inputs reach, in order."""
    rows = measure(vectors.load_cases() if cases is None else cases)
    measure(list(random_cases(per_function)), rows)
    order = {clause_id: n for n, clause_id in enumerate(clauses.ids())}
    return sorted(rows.values(), key=lambda r: (order[r.clause], r.kind))


def _number(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return f"{x:.3g}"


def format_table(rows: Sequence[Row]) -> str:
    """The report as a plain-text table, one line per clause and kind."""
    header = (
        "clause",
        "kind",
        "values",
        "over",
        "worst ulps",
        "kappa",
        "err/(eps S)",
        "goal",
        "",
        "worst case",
    )
    lines = [
        (
            r.clause,
            r.kind,
            str(r.count),
            str(r.over),
            _number(r.ulps),
            _number(r.kappa),
            _number(r.ratio),
            _number(GOAL),
            "ok" if r.ok else "OVER",
            r.case,
        )
        for r in rows
    ]
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])


def main(argv: Sequence[str] | None = None) -> int:
    """Print the precision report; exit 1 if any clause misses the goal."""
    parser = argparse.ArgumentParser(
        prog="python -m attnref.vectors.precision", description=main.__doc__
    )
    parser.add_argument("--random", type=int, default=6, help="random cases per function")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = report(args.random)
    print(format_table(rows))
    over = [r for r in rows if not r.ok]
    print(
        f"\n{len(rows)} rows, {sum(r.count for r in rows)} values, goal err <= {GOAL:g} eps S "
        f"(ulps x condition); {len(over)} over the goal; {time.perf_counter() - start:.1f} s"
    )
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
