"""The oracle's report: levels, findings, the verdict, the causes, the table and the JSON.

The records are built by hand, so each test pins down how a report reads a
given set of results without running any check; the wording the report reads
back (:class:`~attnref.oracle.report.Symptom`) is taken from the oracle's own
comparison, so that a change of wording there fails here.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import jsonschema
import numpy as np
import pytest

from attnref.oracle.checks import MismatchError, compare
from attnref.oracle.report import (
    REPORT_SCHEMA,
    ClauseResult,
    Report,
    Status,
    Symptom,
    document,
    summary_table,
)
from attnspec import clauses

REQUIRED = "sdpa.formula"
RECOMMENDED = clauses.at_level("recommended")[0].id


def result(clause: str, status: Status, message: str | None = None) -> ClauseResult:
    """A result of ``clause`` with ``status``, as the runner would record it."""
    failed = status in ("failed", "xfail")
    default = "context: error 3e-05 > allowed 1e-15" if failed else ""
    return ClauseResult(
        clause,
        f"sdpa/{clause}",
        status,
        examples=30,
        worst_ratio=float("inf") if failed else 0.5,
        message=default if message is None else message,
    )


def report(*results: ClauseResult, dtype: str = "float64") -> Report:
    """A report of an SDPA implementation holding ``results``."""
    return Report(
        target="mine",
        function="scaled_dot_product_attention",
        framework="torch",
        dtype=dtype,
        device="cpu",
        conventions="fully_masked_row=zero",
        features=("bool_mask",),
        seed=0,
        max_examples=30,
        results=results,
    )


def validated(r: Report) -> dict[str, Any]:
    """The report's JSON document, parsed back and checked against the schema."""
    text = json.dumps(document([r], exit_status=0 if r.passed else 1), allow_nan=False)
    data: dict[str, Any] = json.loads(text)
    jsonschema.validate(data, REPORT_SCHEMA)
    return data


# --- levels and the verdict ------------------------------------------------------------------


def test_results_take_their_level_from_the_registry() -> None:
    """A result's level is that of its clause; only a failed recommended clause is a finding."""
    assert result(REQUIRED, "failed").level == "required"
    assert result(RECOMMENDED, "failed").level == "recommended"
    assert result(RECOMMENDED, "failed").finding
    assert not result(REQUIRED, "failed").finding
    for status in ("passed", "skipped", "xfail"):
        assert not result(RECOMMENDED, status).finding, status


def test_a_failed_recommended_clause_is_a_finding_and_the_report_conforms() -> None:
    """The verdict holds; the failure is listed among the findings, not the failures."""
    r = report(result(REQUIRED, "passed"), result(RECOMMENDED, "failed"))
    assert r.passed
    assert r.failures == ()
    assert [f.clause for f in r.findings] == [RECOMMENDED]
    assert r.counts() == {"passed": 1, "failed": 0, "skipped": 0, "xfail": 0, "findings": 1}
    assert r.verdict == f"CONFORMS (1 recommended finding: {RECOMMENDED})"


def test_a_failed_required_clause_fails_the_report() -> None:
    """A required failure decides the verdict; findings are still listed beside it."""
    r = report(result(REQUIRED, "failed"), result(RECOMMENDED, "failed"))
    assert not r.passed
    assert [f.clause for f in r.failures] == [REQUIRED]
    assert [f.clause for f in r.findings] == [RECOMMENDED]
    assert r.counts()["failed"] == 1
    assert r.verdict == f"DOES NOT CONFORM (1 recommended finding: {RECOMMENDED})"
    assert report(result(REQUIRED, "failed")).verdict == "DOES NOT CONFORM"


def test_skips_and_expected_failures_do_not_fail_the_report() -> None:
    """Skipped and xfail results of either level leave the verdict CONFORMS, with no findings."""
    r = report(
        result(REQUIRED, "skipped"),
        result(REQUIRED, "xfail"),
        result(RECOMMENDED, "xfail"),
    )
    assert r.passed
    assert r.findings == ()
    assert r.verdict == "CONFORMS"
    assert r.counts() == {"passed": 0, "failed": 0, "skipped": 1, "xfail": 2, "findings": 0}


def test_counts_count_every_result_once() -> None:
    """The counts add up to the number of results, findings under their own key."""
    r = report(
        result(REQUIRED, "passed"),
        result(REQUIRED, "failed"),
        result(RECOMMENDED, "failed"),
        result(REQUIRED, "skipped"),
    )
    assert sum(r.counts().values()) == len(r.results)


def test_a_result_of_an_unknown_clause_has_no_level() -> None:
    """The level comes from the registry, so an unregistered ID is an error, not a guess."""
    with pytest.raises(KeyError, match="no clause"):
        _ = result("sdpa.no-such-clause", "passed").level


# --- the table: verdict first, then causes -----------------------------------------------------


def test_the_verdict_is_the_first_line_and_the_counts_the_last() -> None:
    """A person reads the verdict first; the last line repeats it with the counts."""
    r = report(result(REQUIRED, "passed"), result(RECOMMENDED, "failed"))
    lines = r.table().splitlines()
    assert lines[0] == "mine: CONFORMS (1 passed, 1 recommended finding)"
    assert lines[-1] == (
        f"1 passed, 0 failed, 0 skipped, 0 xfail: CONFORMS (1 recommended finding: {RECOMMENDED})"
    )
    failing = report(result(REQUIRED, "failed"), result("score.scale-applied", "passed"))
    assert failing.table().splitlines()[0] == (
        "mine: DOES NOT CONFORM (1 of 2 required clauses failed)"
    )


def test_table_shows_levels_and_findings_with_their_reason() -> None:
    """Each row names its level; findings are listed with their reason."""
    r = report(result(REQUIRED, "passed"), result(RECOMMENDED, "failed"))
    lines = r.table().splitlines()
    header = next(line for line in lines if line.startswith("clause"))
    assert header.split()[:3] == ["clause", "level", "status"]
    row = next(line for line in lines if line.startswith(RECOMMENDED))
    assert row.split()[1:3] == ["recommended", "failed"]
    assert any(line.startswith(REQUIRED) and "required" in line for line in lines)
    assert f"  {RECOMMENDED}: {clauses.get(RECOMMENDED).reason}" in lines


def test_table_without_findings_has_no_findings_section() -> None:
    """A report with no finding ends with the plain verdict and lists no findings."""
    text = report(result(REQUIRED, "failed")).table()
    assert "findings" not in text
    assert text.splitlines()[-1] == "0 passed, 1 failed, 0 skipped, 0 xfail: DOES NOT CONFORM"


def test_finite_worst_ratios_are_numbers_nan_is_nan() -> None:
    """The worst column gives a failure's ratio as a number; NaN and exceptions say so."""
    finite = result(REQUIRED, "failed", "context: error 3e-05 > allowed 1e-15")
    nan = result("distribution.stable", "failed", "context: NaN at 1 of 4 positions where ...")
    raised = result("sdpa.default-scale", "failed", "raised TypeError: got an unexpected ...")
    leak = "weights at disallowed positions: error 1e-09 > allowed 0"
    zero = result("distribution.masked-zero", "failed", leak)
    texts = [r.worst_text() for r in (finite, nan, raised, zero)]
    assert texts == ["3e+10", "NaN", "raised", "inf"]
    assert finite.ratio == pytest.approx(3e10)
    assert nan.ratio is None
    assert zero.ratio == math.inf


def test_symptoms_read_the_oracle_wording() -> None:
    """The report reads back the very messages the oracle's comparison writes."""
    truth, bound = np.ones(4), np.full(4, 1e-16)
    measure = compare("context", truth + 1e-12, truth, bound, "float64")
    symptom = Symptom.of(measure.describe())
    assert symptom.kind == "error"
    assert symptom.ratio == pytest.approx(measure.ratio, rel=1e-2)
    assert symptom.what == "context"
    for broken, kind in ((np.array([1.0, np.nan, 1, 1]), "nan"), (np.full(4, np.inf), "infinite")):
        with pytest.raises(MismatchError) as caught:
            compare("d/dquery", broken, truth, bound, "float64")
        assert Symptom.of(str(caught.value)) == Symptom(kind, "d/dquery")  # type: ignore[arg-type]


# --- causes: failures that share a signature -----------------------------------------------------


def test_the_same_exception_in_every_clause_is_one_cause() -> None:
    """One exception (numbers aside) raised by every check is one cause naming the call."""
    names = ("sdpa.formula", "distribution.stable", "score.scale-applied")
    r = report(
        *(
            result(name, "failed", f"raised RuntimeError: size {i} does not match {i + 1}")
            for i, name in enumerate(names)
        )
    )
    (cause,) = r.causes()
    assert cause.clauses == names
    assert "the same exception in 3 clauses" in cause.summary
    assert "every clause" in (cause.hint or "")


def test_float32_level_errors_in_every_value_clause_ask_about_float32() -> None:
    """Errors near 1e-8 in a float64 kernel's value clauses: one cause, 'float32?'."""
    names = ("sdpa.formula", "distribution.ties-uniform", "score.scale-applied")
    r = report(*(result(n, "failed", "context: error 2e-08 > allowed 3e-15") for n in names))
    (cause,) = r.causes()
    assert cause.clauses == names
    assert "errors ≈ 2e-08" in cause.summary
    assert "in all 3 failing value clauses" in cause.summary
    assert "does it compute in float32" in (cause.hint or "")
    # a real bug's errors are of order 1: they are not taken for rounding
    big = report(*(result(n, "failed", "context: error 0.4 > allowed 3e-15") for n in names))
    assert "float32" not in (big.causes()[0].hint or "")


def test_low_precision_errors_alone_do_not_guess_the_accumulation() -> None:
    """bfloat16 errors a few times the allowance: no guess, since a real bug's shrunk case fails
    by a small factor too; only a replay with the declaration (ClauseResult.hint) may say so."""
    names = ("sdpa.formula", "score.scale-applied")
    r = report(
        *(result(n, "failed", "context: error 0.03 > allowed 0.01") for n in names),
        dtype="bfloat16",
    )
    (cause,) = r.causes()
    assert "accumulation" not in (cause.hint or "")
    assert cause.summary.startswith("wrong values in 2 clauses")


def test_wrong_values_point_at_the_feature_a_passing_clause_rules_out() -> None:
    """Scale overrides fail while the default scale passes: 'is its scale argument used?'."""
    r = report(
        result("sdpa.formula", "failed", "context: error 0.4 > allowed 1e-14"),
        result("score.scale-applied", "failed", "context: error 0.4 > allowed 1e-14"),
        result("sdpa.default-scale", "passed"),
    )
    (cause,) = r.causes()
    assert cause.summary.startswith("wrong values in 2 clauses (sdpa.formula, score.scale-app")
    assert "is its scale argument used?" in (cause.hint or "")


def test_nan_in_a_fully_masked_row_names_its_declaration() -> None:
    """A NaN fully masked row, not examined by a replay, names --declare fully_masked_row=nan."""
    r = report(result("distribution.fully-masked-row", "failed", "context: NaN at 1 of 2 pos"))
    (cause,) = r.causes()
    assert "--declare fully_masked_row=nan" in (cause.hint or "")
    # a replay that found no declaration to explain it leaves no guess behind
    examined = replace(r.results[0], hint="")
    assert replace(r, results=(examined,)).causes()[0].hint is None


def test_a_hint_found_by_replaying_is_a_cause_of_its_own() -> None:
    """A convention confirmed by a replay stands apart from the other wrong values."""
    causal = replace(
        result("sdpa.causal-top-left", "failed", "context: error 0.5 > allowed 1e-16"),
        hint="with causal_alignment=bottom_right declared it passes",
    )
    wrong = "context: error 0.1 > allowed 1e-16"
    others = [result(n, "failed", wrong) for n in ("sdpa.formula", "distribution.stable")]
    first, second = report(causal, *others).causes()
    assert first.clauses == ("sdpa.causal-top-left",)
    assert first.hint == causal.hint
    assert second.clauses == ("sdpa.formula", "distribution.stable")
    assert "may explain these too" in (second.hint or "")


# --- the JSON ----------------------------------------------------------------------------------


def test_json_carries_levels_findings_and_numbers_as_numbers() -> None:
    """Every result has its level; ratios are numbers or null; the document meets its schema."""
    r = report(
        result(REQUIRED, "passed"),
        result(RECOMMENDED, "failed"),
        result("score.scale-applied", "skipped"),
        result("distribution.stable", "failed", "context: NaN at 1 of 2 positions"),
    )
    data = validated(r)
    (one,) = data["reports"]
    results = {x["clause"]: x for x in one["results"]}
    assert results[REQUIRED]["worst_ratio"] == 0.5
    assert results[RECOMMENDED]["worst_ratio"] == pytest.approx(3e10)
    assert results[RECOMMENDED]["level"] == "recommended"
    assert results["score.scale-applied"]["worst_ratio"] is None
    assert results["distribution.stable"]["symptom"] == "nan"
    assert results["distribution.stable"]["worst_ratio"] is None
    assert one["counts"]["findings"] == 1
    assert one["findings"] == [
        {
            "clause": RECOMMENDED,
            "message": "context: error 3e-05 > allowed 1e-15",
            "reason": clauses.get(RECOMMENDED).reason,
        }
    ]
    assert [c["clauses"] for c in one["causes"]] == [["distribution.stable"]]


def test_json_of_a_conforming_report_has_empty_findings_and_causes() -> None:
    """The findings and causes keys are always there, so a consumer need not test for them."""
    data = report(result(REQUIRED, "passed")).to_dict()
    assert data["findings"] == []
    assert data["causes"] == []
    assert data["counts"]["findings"] == 0


def test_json_has_no_infinity_even_for_an_infinite_error() -> None:
    """An error written as inf becomes null: strict JSON has no infinity."""
    r = report(result(REQUIRED, "failed", "context: error inf > allowed 1e-15"))
    (row,) = r.to_dict()["results"]
    assert row["error"] is None
    assert row["worst_ratio"] is None
    validated(r)


def test_schema_rejects_a_ratio_written_as_a_string() -> None:
    """The schema is not vacuous: the old "inf" string is refused."""
    data = document([report(result(REQUIRED, "passed"))], exit_status=0)
    data["reports"][0]["results"][0]["worst_ratio"] = "inf"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, REPORT_SCHEMA)


def test_summary_table_of_several_reports() -> None:
    """One row per target and the overall count."""
    good = report(result(REQUIRED, "passed"))
    bad = replace(report(result(REQUIRED, "failed")), target="theirs")
    lines = summary_table([good, bad]).splitlines()
    assert lines[0].split()[:3] == ["target", "dtype", "verdict"]
    assert lines[1].split()[:3] == ["mine", "float64", "CONFORMS"]
    assert lines[2].split()[:5] == ["theirs", "float64", "DOES", "NOT", "CONFORM"]
    assert lines[-1] == "1 of 2 targets conform"
