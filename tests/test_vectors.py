"""The golden vectors: well-formed, fresh, complete, exact, and met by the NumPy reference.

The cases are the rows of :mod:`attnref.vectors.tables`; their expected values come from
:mod:`attnref.vectors.exact` (mpmath) through :mod:`attnref.vectors.golden`; the tolerance
rule is data in every file (:data:`attnref.vectors.golden.TOLERANCE`, with its reasons).
Here the reference is held to that rule, and the rule itself is shown to reject what it must.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from importlib import resources
from typing import Any, get_args

import jsonschema
import mpmath  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import pytest

import attnref
import attnspec
from attnref.vectors import exact, golden, precision, tables
from attnspec import clauses, errors, vectors
from attnspec.typing import ScoreKind

CASES = vectors.load_cases()
VALUE_CASES = [c for c in CASES if c.raises is None]
ERROR_CASES = [c for c in CASES if c.raises is not None]
DTYPES: dict[str, type[np.floating[Any]]] = {"float64": np.float64, "float32": np.float32}

KNOWN_REFERENCE_BUGS: dict[str, str] = {}
"""Vectors the NumPy reference fails today, and the clause it breaks (strict xfail: fixes show)."""


def _known_bug(case: vectors.VectorCase) -> list[pytest.MarkDecorator]:
    reason = KNOWN_REFERENCE_BUGS.get(case.id)
    return [] if reason is None else [pytest.mark.xfail(reason=reason, strict=True)]


def _by_id(case_id: str) -> vectors.VectorCase:
    return next(c for c in CASES if c.id == case_id)


COMPOSITES = ("attention", "scaled_dot_product_attention")


def _weights_index(case: vectors.VectorCase) -> int:
    """Where the weights are among the outputs: ``(context, weights[, lse])`` or alone."""
    return 1 if case.function in COMPOSITES else 0


def _lse_index(case: vectors.VectorCase) -> int:
    """Where the log-sum-exp is among the outputs: ``(context, weights, lse)`` or alone."""
    return 2 if case.function in COMPOSITES else 0


def _cast(value: Any, dtype: str) -> Any:
    """A float array in ``dtype`` (complex arrays stay complex128); anything else as it is."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(DTYPES[dtype])
    return value


def _call(case: vectors.VectorCase, dtype: str) -> tuple[npt.NDArray[Any], ...]:
    """The reference's outputs on the case's arguments cast to ``dtype``."""
    function: Callable[..., Any] = getattr(attnref, case.function)
    args = [_cast(a, dtype) for a in case.args]
    result = function(*args, **{k: _cast(v, dtype) for k, v in case.options.items()})
    return result if isinstance(result, tuple) else (result,)


def _failures(
    got: npt.NDArray[Any], expected: vectors.Expected, rule: vectors.Tolerance
) -> list[str]:
    """Readable descriptions of the elements that break the rule (empty when all pass)."""
    ok = vectors.within_tolerance(got, expected, rule)
    if np.shape(got) != expected.value.shape:
        return [f"shape {np.shape(got)} != expected {expected.value.shape}"]
    bad = np.argwhere(~ok)[:5]
    return [
        f"at {tuple(int(i) for i in index)}: got {got[tuple(index)]!r}, expected "
        f"{expected.value[tuple(index)]!r}, allowed error "
        f"{rule.allowed(expected.error_scale)[tuple(index)]:.3g}"
        for index in bad
    ]


# --- the files ----------------------------------------------------------------------------


def test_schema_is_a_valid_json_schema() -> None:
    """schema.json is a valid JSON Schema (draft 2020-12)."""
    jsonschema.Draft202012Validator.check_schema(vectors.schema())


@pytest.mark.parametrize("name", vectors.files())
def test_file_validates_against_the_schema(name: str) -> None:
    """Every vector file validates against schema.json."""
    validator = jsonschema.Draft202012Validator(vectors.schema())
    errors_found = sorted(validator.iter_errors(vectors.load_file(name)), key=str)
    assert not errors_found, "\n".join(
        f"{list(e.absolute_path)}: {e.message}" for e in errors_found[:5]
    )


def test_schema_rejects_a_decimal_float() -> None:
    """The schema is not vacuous: a float written in decimal breaks it."""
    raw = copy.deepcopy(vectors.load_file("score_dot.json"))
    raw["cases"][0]["outputs"][0]["data"][0] = "0.5"
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        jsonschema.validate(raw, vectors.schema(), cls=jsonschema.Draft202012Validator)


def test_schema_names_exactly_the_spec_functions() -> None:
    """The schema's list of functions is attnspec.FUNCTIONS, and each has a vector file."""
    assert vectors.schema()["$defs"]["function"]["enum"] == list(attnspec.FUNCTIONS)
    assert vectors.files() == tuple(sorted(f"{name}.json" for name in attnspec.FUNCTIONS))


@pytest.mark.parametrize("function", attnspec.FUNCTIONS)
def test_vectors_are_not_stale(function: str) -> None:
    """Regenerating a function's vectors in memory gives its file byte for byte (run
    `nox -s vectors`); one test per file, so that the workers share the exact arithmetic."""
    name = f"{function}.json"
    regenerated = golden.generate(lambda plan: plan.function == function)
    assert list(regenerated) == [name]
    assert regenerated[name] == _shipped_text(name), (
        f"stale vector file {name}: run `nox -s vectors` and commit the result"
    )


def _shipped_text(name: str) -> str:
    return resources.files("attnspec").joinpath("vectors", name).read_text(encoding="utf-8")


def test_case_ids_are_unique() -> None:
    """Each case id appears once, so failures and `pytest -k` name one case."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_each_file_is_one_table() -> None:
    """Each spec function has one case table, whose rows are its file's cases in order."""
    every = list(tables.all_tables())
    assert sorted(t.function for t in every) == sorted(attnspec.FUNCTIONS)
    for table in every:
        rows = [f"{table.function}/{row.name}" for row in table.rows]
        assert rows == [c.id for c in vectors.load_cases(table.function)]


def test_files_carry_the_generators_tolerance() -> None:
    """Every case decodes to the generator's own rule, ``golden.TOLERANCE``."""
    assert all(c.tolerance == golden.TOLERANCE for c in CASES)


# --- coverage -----------------------------------------------------------------------------


def test_every_claimed_clause_is_a_registry_clause() -> None:
    """A vector cites only clauses that the spec declares."""
    unknown = {c.id: sorted(set(c.clauses) - set(clauses.ids())) for c in CASES}
    assert not {k: v for k, v in unknown.items() if v}


def test_every_clause_is_exercised() -> None:
    """Every clause of the registry is exercised by at least one vector."""
    claimed = {clause for c in CASES for clause in c.clauses}
    assert set(clauses.ids()) - claimed == set()


def test_every_score_kind_has_a_composite_vector() -> None:
    """attention has a value case for every score kind, each with its gradient."""
    kinds = {c.options["score"] for c in VALUE_CASES if c.function == "attention" and c.vjp}
    assert kinds == set(get_args(ScoreKind))


def test_every_raises_clause_has_an_error_case() -> None:
    """Each clause of kind 'raises' is exercised by a case that expects an exception."""
    raising = {clause for c in ERROR_CASES for clause in c.clauses}
    wanted = {c.id for c in clauses.all_clauses() if c.kind == "raises"}
    assert wanted - raising == set()


# --- the encoding -------------------------------------------------------------------------

SPECIAL_FLOATS = [
    0.0,
    -0.0,
    5e-324,
    -2.2250738585072014e-308,
    1.7976931348623157e308,
    1 / 3,
    math.inf,
    -math.inf,
]


@pytest.mark.parametrize("value", SPECIAL_FLOATS, ids=repr)
def test_floats_round_trip_exactly(value: float) -> None:
    """A float written by the generator decodes to the same bits (sign of zero included)."""
    decoded = vectors.decode_float(golden._hex(value))
    assert decoded == value
    assert math.copysign(1, decoded) == math.copysign(1, value)


def test_nan_round_trips() -> None:
    """NaN is representable."""
    assert math.isnan(vectors.decode_float(golden._hex(math.nan)))


@pytest.mark.parametrize("text", ["0.5", "1e-3", "0X1.0P+0", "+inf", "0x1.0"])
def test_decode_rejects_other_spellings(text: str) -> None:
    """Only float.hex spellings are accepted, so every file is unambiguous."""
    with pytest.raises(ValueError, match="hex float"):
        vectors.decode_float(text)


# --- the exact values themselves ----------------------------------------------------------


def test_correct_rounding_ties_to_even_in_the_subnormal_range() -> None:
    """to_float64 rounds once: ties to even, also below the normal range, and to inf past max."""
    with mpmath.mp.workprec(2000):
        tiny = mpmath.mpf(2) ** -1074
        assert exact.to_float64(tiny / 2) == 0.0  # tie: to the even 0
        assert exact.to_float64(tiny * 3 / 2) == 2 * 5e-324  # tie: to the even 2 * tiny
        assert exact.to_float64(tiny * 5 / 4) == 5e-324
        assert exact.to_float64(1 + mpmath.mpf(2) ** -53) == 1.0
        assert exact.to_float64(1 + 3 * mpmath.mpf(2) ** -53) == 1 + 2.0**-51
        assert exact.to_float64(mpmath.mpf(2) ** 1024) == math.inf


def test_default_scale_is_rounded_once() -> None:
    """score.default-scale: 1/sqrt(d) rounded once (1/fl(sqrt(d)) differs, e.g. at d = 2)."""
    with mpmath.mp.workprec(300):
        for d in (1, 2, 3, 8, 64, 128):
            assert exact.default_scale(d) == float(1 / mpmath.sqrt(d))
    assert exact.default_scale(2) != 1 / math.sqrt(2)


def _expected(case_id: str, output: int = 0) -> npt.NDArray[Any]:
    outputs = _by_id(case_id).outputs
    assert outputs is not None
    return outputs[output].value


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("attention_distribution/shift-base", "attention_distribution/shift-by-1024"),
        ("attention_distribution/basic", "attention_distribution/all-true-mask"),
        ("score_dot/basic", "score_general/identity"),
        ("score_concat/basic", "score_additive/basic"),
    ],
)
def test_equivalent_cases_have_identical_answers(first: str, second: str) -> None:
    """Clauses that equate two formulas give bit-identical correctly rounded answers."""
    np.testing.assert_array_equal(_expected(first), _expected(second))


def test_ties_are_exactly_uniform() -> None:
    """distribution.ties-uniform: 1/3 correctly rounded, and exactly 1/4 beside a masked key."""
    np.testing.assert_array_equal(_expected("attention_distribution/ties"), np.full((2, 3), 1 / 3))
    np.testing.assert_array_equal(
        _expected("attention_distribution/ties-masked"), [[0.25, 0.0, 0.25, 0.25, 0.25]]
    )


def test_fully_masked_rows_are_exact_zeros() -> None:
    """distribution.fully-masked-row: zero weights with error scale 0, so they must be exact."""
    for case in VALUE_CASES:
        if "distribution.fully-masked-row" not in case.clauses:
            continue
        assert case.outputs is not None
        weights = case.outputs[_weights_index(case)]
        empty = np.all(weights.value == 0, axis=-1)
        assert empty.any(), case.id
        assert np.all(weights.error_scale[empty] == 0), case.id


def test_a_very_negative_sink_is_no_sink() -> None:
    """sdpa.sinks: a sink of -1e4 gives bit-identical context, weights and lse to none."""
    none, negative = (
        _by_id("scaled_dot_product_attention/lse"),
        _by_id("scaled_dot_product_attention/sinks-very-negative"),
    )
    assert none.outputs is not None
    assert negative.outputs is not None
    assert len(none.outputs) == len(negative.outputs) == 3
    for a, b in zip(none.outputs, negative.outputs, strict=True):
        np.testing.assert_array_equal(a.value, b.value)


def test_a_row_with_only_a_sink_has_the_sink_as_its_lse() -> None:
    """sdpa.sinks: a row with no allowed key has zero weights and context, and lse the sink."""
    case = _by_id("scaled_dot_product_attention/sinks-fully-masked-row")
    assert case.outputs is not None
    context, weights, lse = (o.value for o in case.outputs)
    empty = np.all(weights == 0, axis=-1)  # [B, H, Tq]
    assert empty.sum() == 1
    assert np.all(context[empty] == 0)
    heads = np.broadcast_to(case.options["sinks"][:, None], empty.shape)
    np.testing.assert_array_equal(lse[empty], heads[empty])
    assert np.all(np.isfinite(lse))


LSE_EMPTY = [c for c in VALUE_CASES if "lse.fully-masked-row" in c.clauses]


@pytest.mark.parametrize("case", LSE_EMPTY, ids=[c.id for c in LSE_EMPTY])
def test_fully_masked_lse_is_an_exact_minus_inf(case: vectors.VectorCase) -> None:
    """lse.fully-masked-row: -inf with error scale 0, and NaN, +inf (FlashAttention's) or 0
    there fail the rule."""
    assert case.outputs is not None
    lse = case.outputs[_lse_index(case)]
    empty = np.isneginf(lse.value)
    assert empty.any(), case.id
    assert np.all(lse.error_scale[empty] == 0), case.id
    assert np.all(np.isfinite(lse.value[~empty])), case.id
    rule = case.tolerance["float64"]
    for other in (math.nan, math.inf, 0.0):
        ok = vectors.within_tolerance(np.where(empty, other, lse.value), lse, rule)
        assert not ok[empty].any(), other
        assert ok[~empty].all()


LSE_NORMALIZES = [c for c in VALUE_CASES if "lse.normalizes" in c.clauses]


@pytest.mark.parametrize("case", LSE_NORMALIZES, ids=[c.id for c in LSE_NORMALIZES])
def test_lse_normalizes_the_distribution_vector(case: vectors.VectorCase) -> None:
    """lse.normalizes: exp(e + m - lse) is the attention_distribution vector of the same call."""
    twin = _by_id(case.id.replace("log_sum_exp/", "attention_distribution/"))
    assert case.outputs is not None
    assert twin.outputs is not None
    scores, mask = case.inputs["scores"], case.options.get("mask")
    np.testing.assert_array_equal(scores, twin.inputs["scores"])
    assert twin.options.keys() == case.options.keys()
    if mask is not None:
        np.testing.assert_array_equal(mask, twin.options["mask"])
    bias = 0.0 if mask is None or mask.dtype == np.bool_ else mask
    weights = twin.outputs[0].value
    allowed = weights != 0
    lse = np.broadcast_to(case.outputs[0].value[..., None], weights.shape)[allowed]
    logits = np.broadcast_to(scores + bias, weights.shape)[allowed]
    got = np.exp(logits - lse)
    # Note: exp(x) carries the absolute error of x as a relative error; x = e + m - lse is
    # rounded from numbers of size |e + m| + |lse| (710 in overflow-range).
    eps = golden.TOLERANCE["float64"].eps
    bound = 4 * eps * (1 + np.abs(logits) + np.abs(lse)) * weights[allowed] + 2.0**-1074
    assert np.all(np.abs(got - weights[allowed]) <= bound)


def test_value_is_linear_in_the_vectors() -> None:
    """value.linear: the exact answers of the linear triple agree to their rounding."""
    a = _expected("attention_value/linear-a")
    b = _expected("attention_value/linear-b")
    np.testing.assert_allclose(
        _expected("attention_value/linear-combined"), 0.5 * a - 0.25 * b, rtol=1e-15, atol=1e-16
    )


# --- the reference meets the vectors ------------------------------------------------------

DTYPE_CASES = [(c, dtype) for c in VALUE_CASES for dtype in c.dtypes]


@pytest.mark.parametrize(
    ("case", "dtype"),
    [pytest.param(c, d, id=f"{c.id}-{d}", marks=_known_bug(c)) for c, d in DTYPE_CASES],
)
def test_reference_matches_the_vector(case: vectors.VectorCase, dtype: str) -> None:
    """The NumPy reference meets the tolerance rule on every output of every case."""
    assert case.outputs is not None
    got = _call(case, dtype)
    assert len(got) == len(case.outputs)
    rule = case.tolerance[dtype]
    for index, (g, e) in enumerate(zip(got, case.outputs, strict=True)):
        assert not _failures(g, e, rule), f"output {index}: {_failures(g, e, rule)}"


GRAD_CASES = [(c, d) for c, d in DTYPE_CASES if c.vjp is not None]


@pytest.mark.parametrize(("case", "dtype"), GRAD_CASES, ids=[f"{c.id}-{d}" for c, d in GRAD_CASES])
def test_reference_vjp_matches_the_vector(case: vectors.VectorCase, dtype: str) -> None:
    """The reference's analytic VJPs (attnref.vjp) meet the tolerance rule on every gradient."""
    vjp = pytest.importorskip("attnref.vjp")
    assert case.cotangents is not None
    assert case.vjp is not None
    cotangents = [_cast(c, dtype) for c in case.cotangents]
    cotangent: Any = tuple(cotangents) if len(cotangents) > 1 else cotangents[0]
    args = [_cast(a, dtype) for a in case.args]
    options = {k: _cast(v, dtype) for k, v in case.options.items()}
    grads = vjp.VJPS[case.function](*args, **options, cotangent=cotangent)
    rule = case.tolerance[dtype]
    for name, expected in case.vjp.items():
        got = getattr(grads, name)
        assert not _failures(got, expected, rule), (
            f"gradient of {name}: {_failures(got, expected, rule)}"
        )


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.id for c in ERROR_CASES])
def test_reference_raises_the_expected_error(case: vectors.VectorCase) -> None:
    """A bad call raises the attnspec.errors class the case names."""
    expected = getattr(errors, str(case.raises))
    with pytest.raises(expected):
        _call(case, "float64")


NOT_MUTATED = [c for c in VALUE_CASES if "input.not-mutated" in c.clauses]


@pytest.mark.parametrize("case", NOT_MUTATED, ids=[c.id for c in NOT_MUTATED])
def test_reference_leaves_the_arguments_alone(case: vectors.VectorCase) -> None:
    """input.not-mutated: every array argument is bitwise unchanged by the call."""
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in case.args]
    options = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in case.options.items()}
    getattr(attnref, case.function)(*args, **options)
    for before, after in zip(case.args, args, strict=True):
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(before, after)
    for name, value in case.options.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, options[name])


# --- the rule rejects what it must --------------------------------------------------------


def test_rule_rejects_an_error_just_beyond_the_bound() -> None:
    """An output moved past its allowed error fails; one moved within it passes."""
    case = _by_id("scaled_dot_product_attention/basic")
    assert case.outputs is not None
    expected = case.outputs[0]
    rule = case.tolerance["float64"]
    allowed = rule.allowed(expected.error_scale)
    assert vectors.within_tolerance(expected.value + 0.5 * allowed, expected, rule).all()
    assert not vectors.within_tolerance(expected.value + 1.5 * allowed, expected, rule).any()


def test_rule_demands_exactness_where_the_scale_is_zero() -> None:
    """distribution.masked-zero: the smallest subnormal at a masked weight fails."""
    case = _by_id("attention_distribution/boolean-mask")
    assert case.outputs is not None
    expected = case.outputs[0]
    masked = expected.error_scale == 0
    assert masked.any()
    nudged = np.where(masked, 5e-324, expected.value)
    assert not vectors.within_tolerance(nudged, expected, case.tolerance["float64"])[masked].any()


RESULT_DTYPE = [c for c in VALUE_CASES if "input.result-dtype" in c.clauses]


@pytest.mark.parametrize("case", RESULT_DTYPE, ids=[c.id for c in RESULT_DTYPE])
def test_float64_rule_rejects_a_float32_computation(case: vectors.VectorCase) -> None:
    """input.result-dtype: a float64 call computed in float32 fails the float64 rule."""
    assert case.outputs is not None
    rule = case.tolerance["float64"]
    got = [o.astype(np.float64) for o in _call(case, "float32")]
    assert any(
        not vectors.within_tolerance(g, e, rule).all()
        for g, e in zip(got, case.outputs, strict=True)
    )


def _uniform_rows(weights: npt.NDArray[Any]) -> npt.NDArray[Any]:
    empty = np.all(weights == 0, axis=-1, keepdims=True)
    return np.where(empty, 1 / weights.shape[-1], weights)


def _nan_rows(weights: npt.NDArray[Any]) -> npt.NDArray[Any]:
    empty = np.all(weights == 0, axis=-1, keepdims=True)
    return np.where(empty, np.nan, weights)


FULLY_MASKED = [c for c in VALUE_CASES if "distribution.fully-masked-row" in c.clauses]


@pytest.mark.parametrize("convention", [_uniform_rows, _nan_rows], ids=["uniform", "nan"])
@pytest.mark.parametrize("case", FULLY_MASKED, ids=[c.id for c in FULLY_MASKED])
def test_other_fully_masked_conventions_fail(
    case: vectors.VectorCase, convention: Callable[[npt.NDArray[Any]], npt.NDArray[Any]]
) -> None:
    """distribution.fully-masked-row: JAX's uniform rows and the historical NaN rows fail."""
    assert case.outputs is not None
    at = _weights_index(case)
    weights = _call(case, "float64")[at]
    ok = vectors.within_tolerance(convention(weights), case.outputs[at], case.tolerance["float64"])
    assert not ok.all()


def _rectangular(case: vectors.VectorCase) -> bool:
    assert case.outputs is not None
    t_q, t_k = case.outputs[_weights_index(case)].value.shape[-2:]
    return bool(t_q != t_k)


BOTTOM_RIGHT = [
    c
    for c in VALUE_CASES
    if "sdpa.causal-bottom-right" in c.clauses
    and c.function == "scaled_dot_product_attention"
    and _rectangular(c)
]


def test_a_capped_sink_fails() -> None:
    """sdpa.sinks: capping the sink with the scores (c tanh(sigma / c)) fails the vector."""
    case = _by_id("scaled_dot_product_attention/sinks-causal-softcap")
    assert case.outputs is not None
    cap = case.options["softcap"]
    options = dict(case.options) | {"sinks": cap * np.tanh(case.options["sinks"] / cap)}
    got = attnref.scaled_dot_product_attention(*case.args, **options)
    rule = case.tolerance["float64"]
    assert not any(
        vectors.within_tolerance(g, e, rule).all() for g, e in zip(got, case.outputs, strict=True)
    )


def test_sinks_per_key_head_fail() -> None:
    """sdpa.sinks: one sink per key head, repeated over its group, fails the GQA vector."""
    case = _by_id("scaled_dot_product_attention/sinks-grouped-heads")
    assert case.outputs is not None
    sinks = case.options["sinks"]
    per_key_head = np.repeat(sinks[::2], 2)  # the sinks of heads 0 and 2, each used twice
    got = attnref.scaled_dot_product_attention(
        *case.args, **(dict(case.options) | {"sinks": per_key_head})
    )
    ok = vectors.within_tolerance(got[1], case.outputs[1], case.tolerance["float64"])
    assert not ok.all()


@pytest.mark.parametrize("case", BOTTOM_RIGHT, ids=[c.id for c in BOTTOM_RIGHT])
def test_causal_alignment_mixup_fails(case: vectors.VectorCase) -> None:
    """sdpa.causal-bottom-right: top-left masks fail the bottom-right vectors (Tq != Tk)."""
    assert case.outputs is not None
    options = dict(case.options) | {"causal_alignment": "top_left"}
    mixed = attnref.scaled_dot_product_attention(*case.args, **options)
    ok = vectors.within_tolerance(mixed[1], case.outputs[1], case.tolerance["float64"])
    assert not ok.all()


# --- the precision report -----------------------------------------------------------------


def test_known_reference_bugs_are_vectors() -> None:
    """Each known bug names a golden case (so fixing the reference turns its xfail into a pass)."""
    assert set(KNOWN_REFERENCE_BUGS) <= {c.id for c in VALUE_CASES}


def test_precision_report_meets_the_goal() -> None:
    """Every clause is within 4 ulps x condition, on the vectors and on random inputs."""
    healthy = [c for c in CASES if c.id not in KNOWN_REFERENCE_BUGS]
    rows = precision.report(per_function=1, cases=healthy)
    claimed = {clause for c in VALUE_CASES for clause in c.clauses}
    assert {r.clause for r in rows} >= claimed
    assert [r for r in rows if not r.ok] == []


def test_precision_report_flags_an_inaccurate_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A score_dot off by 1e-13 relative is reported over the goal for score.dot."""
    accurate = attnref.score_dot
    monkeypatch.setattr(attnref, "score_dot", lambda q, k: accurate(q, k) * (1 + 1e-13))
    rows = precision.measure(vectors.load_cases("score_dot"))
    assert not rows[("score.dot", "output")].ok
    assert rows[("score.dot", "gradient")].ok  # the VJPs were not touched


def test_precision_report_blames_only_the_known_bugs() -> None:
    """Over all the vectors, every clause over the goal has a known reference bug as its worst."""
    over = [r for r in precision.report(per_function=0) if not r.ok]
    assert {r.case for r in over} <= set(KNOWN_REFERENCE_BUGS)


def test_precision_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The command prints a line per clause and kind; it exits 1 exactly when one is over."""
    code = precision.main(["--random", "0"])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("distribution.fully-masked-row  output") for line in lines)
    over = [line for line in lines if "  OVER  " in line]
    assert code == (1 if over else 0)
