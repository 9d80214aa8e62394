"""The oracle's report: levels, findings, the verdict, the table and the JSON.

The records are built by hand, so each test pins down how a report reads a
given set of results without running any check.
"""

from __future__ import annotations

import json

import pytest

from attnref.oracle.report import ClauseResult, Report, Status
from attnspec import clauses

REQUIRED = "sdpa.formula"
RECOMMENDED = clauses.at_level("recommended")[0].id


def result(clause: str, status: Status) -> ClauseResult:
    """A result of ``clause`` with ``status``, as the runner would record it."""
    failed = status in ("failed", "xfail")
    return ClauseResult(
        clause,
        f"sdpa/{clause}",
        status,
        examples=30,
        worst_ratio=float("inf") if failed else 0.5,
        message="context: error inf > allowed 1e-15" if failed else "",
    )


def report(*results: ClauseResult) -> Report:
    """A report of an SDPA implementation holding ``results``."""
    return Report(
        target="mine",
        function="scaled_dot_product_attention",
        framework="torch",
        dtype="float64",
        device="cpu",
        conventions="fully_masked_row=zero",
        features=("bool_mask",),
        seed=0,
        max_examples=30,
        results=results,
    )


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


def test_table_shows_levels_findings_and_the_verdict() -> None:
    """Each row names its level; findings are listed with their reason; the last line says why."""
    r = report(result(REQUIRED, "passed"), result(RECOMMENDED, "failed"))
    lines = r.table().splitlines()
    header = next(line for line in lines if line.startswith("clause"))
    assert header.split()[:3] == ["clause", "level", "status"]
    row = next(line for line in lines if line.startswith(RECOMMENDED))
    assert row.split()[1:3] == ["recommended", "failed"]
    assert any(line.startswith(REQUIRED) and "required" in line for line in lines)
    reason = clauses.get(RECOMMENDED).reason
    assert f"  {RECOMMENDED}: {reason}" in lines
    assert lines[-1] == (
        f"1 passed, 0 failed, 0 skipped, 0 xfail: CONFORMS (1 recommended finding: {RECOMMENDED})"
    )


def test_table_without_findings_has_no_findings_section() -> None:
    """A report with no finding ends with the plain verdict and lists no findings."""
    text = report(result(REQUIRED, "failed")).table()
    assert "findings" not in text
    assert text.splitlines()[-1] == "0 passed, 1 failed, 0 skipped, 0 xfail: DOES NOT CONFORM"


def test_json_carries_levels_and_findings() -> None:
    """Every result has its level; findings give the clause, the message and the reason."""
    r = report(result(REQUIRED, "passed"), result(RECOMMENDED, "failed"))
    data = json.loads(r.to_json())
    assert data["passed"] is True
    assert [(x["clause"], x["level"]) for x in data["results"]] == [
        (REQUIRED, "required"),
        (RECOMMENDED, "recommended"),
    ]
    assert data["results"][1]["status"] == "failed"
    assert data["results"][1]["worst_ratio"] == "inf"
    assert data["counts"]["findings"] == 1
    assert data["findings"] == [
        {
            "clause": RECOMMENDED,
            "message": "context: error inf > allowed 1e-15",
            "reason": clauses.get(RECOMMENDED).reason,
        }
    ]


def test_json_of_a_conforming_report_has_an_empty_findings_list() -> None:
    """The findings key is always there, so a consumer need not test for it."""
    data = report(result(REQUIRED, "passed")).to_dict()
    assert data["findings"] == []
    assert data["counts"]["findings"] == 0


def test_a_result_of_an_unknown_clause_has_no_level() -> None:
    """The level comes from the registry, so an unregistered ID is an error, not a guess."""
    with pytest.raises(KeyError, match="no clause"):
        _ = result("sdpa.no-such-clause", "passed").level
