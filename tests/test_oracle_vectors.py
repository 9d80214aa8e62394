"""``attnspec check --vectors``: implementations judged on the golden vectors' exact answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import attnref
from attnref.oracle import Feature
from attnref.oracle.adapters.numpy import NumpySDPA
from attnref.oracle.targets import Limited, ShapeLimit
from attnref.oracle.vector_check import check_vectors
from attnspec.errors import ArgumentError

EXTRA: frozenset[Feature] = frozenset({"causal_with_mask"})
FEATURES = NumpySDPA(attnref.scaled_dot_product_attention).features | EXTRA


def test_reference_meets_every_vector_it_can_take() -> None:
    """sdpa.formula: the NumPy reference passes every SDPA vector, in float64 and float32."""
    for dtype in ("float64", "float32"):
        impl = NumpySDPA(
            attnref.scaled_dot_product_attention, name="ref", dtype=dtype, features=FEATURES
        )
        report = check_vectors(impl)
        assert report.passed, report.table()
        assert report.counts()["passed"] >= 10, report.table()


def test_a_bug_fails_the_vectors_written_for_its_clause() -> None:
    """distribution.masked-zero: inverting the mask fails that clause's vectors."""

    def inverted(q: Any, k: Any, v: Any, *, mask: Any = None, **kwargs: Any) -> Any:
        flipped = mask if mask is None or mask.dtype != np.bool_ else ~mask
        return attnref.scaled_dot_product_attention(q, k, v, mask=flipped, **kwargs)

    report = check_vectors(NumpySDPA(inverted, name="inverted", features=FEATURES))
    failed = {r.clause for r in report.results if r.status == "failed"}
    assert "input.batch-broadcast" in failed or "distribution.masked-zero" in failed, report.table()
    assert not report.passed


def test_expected_failure_becomes_xfail() -> None:
    """An expected failure listed for a clause is reported as xfail with its reason."""

    def no_scale(q: Any, k: Any, v: Any, *, scale: Any = None, **kwargs: Any) -> Any:
        return attnref.scaled_dot_product_attention(q, k, v, **kwargs)

    impl = NumpySDPA(no_scale, name="no-scale", features=FEATURES)
    listed = {"sdpa.formula": "ignores scale", "score.scale-applied": "ignores scale"}
    report = check_vectors(impl, expected_failures=listed)
    statuses = {r.clause: r.status for r in report.results}
    assert "xfail" in {statuses["sdpa.formula"], statuses["score.scale-applied"]}, report.table()
    assert "failed" not in {statuses["sdpa.formula"], statuses["score.scale-applied"]}
    unlisted = {r.clause: r.status for r in check_vectors(impl).results}
    assert "failed" in {unlisted["sdpa.formula"], unlisted["score.scale-applied"]}


def _ignores_scale(q: Any, k: Any, v: Any, *, scale: Any = None, **kwargs: Any) -> Any:
    return attnref.scaled_dot_product_attention(q, k, v, **kwargs)


def test_clause_option_keeps_only_that_clause() -> None:
    """``clauses_to_check`` runs only the vectors exercising the clauses asked for."""
    impl = NumpySDPA(attnref.scaled_dot_product_attention, name="ref", features=FEATURES)
    report = check_vectors(impl, clauses_to_check=frozenset({"score.scale-applied"}))
    assert [r.clause for r in report.results] == ["score.scale-applied"]
    assert report.results[0].status == "passed"
    assert report.mode == "vectors"


def test_a_failing_vector_fails_every_clause_it_exercises() -> None:
    """score.scale-applied: a vector written for the formula that uses a scale fails it too.

    Attributing the failure to the formula alone would pass score.scale-applied on
    the scale-ignoring kernel when it is checked on its own: a wrong PASS.
    """
    impl = NumpySDPA(_ignores_scale, name="no-scale", features=FEATURES)
    alone = check_vectors(impl, clauses_to_check=frozenset({"score.scale-applied"}))
    assert [r.status for r in alone.results] == ["failed"], alone.table()
    assert not alone.passed


def test_a_vector_of_a_recommended_clause_fails_only_that_clause() -> None:
    """input.unread-nonfinite: NaN leaking through 0 * NaN is a finding, not a formula failure."""

    def leaky(q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        # right wherever the inputs are finite; NaN anywhere reaches the whole output
        poisoned = any(np.isnan(a).any() for a in (q, k, v))
        q, k, v = (np.nan_to_num(a, nan=0.0) for a in (q, k, v))
        context, weights = attnref.scaled_dot_product_attention(q, k, v, **kwargs)
        return (context * np.nan if poisoned else context), weights

    report = check_vectors(NumpySDPA(leaky, name="leaky", features=FEATURES))
    failed = {r.clause for r in report.results if r.status == "failed"}
    assert failed == {"input.unread-nonfinite"}, report.table()
    assert report.passed


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_no_rule_for_16_bit_dtypes_is_said_not_passed(dtype: str) -> None:
    """The vectors have no float16/bfloat16 rule: an error, never a report of skips."""
    impl = NumpySDPA(attnref.scaled_dot_product_attention, name="ref", dtype=dtype)
    with pytest.raises(ArgumentError, match=f"cannot judge a {dtype} implementation"):
        check_vectors(impl)


def test_declared_shape_limits_skip_the_vectors_outside_them() -> None:
    """A kernel declaring d%2 is not run on the vectors of odd feature sizes."""
    impl = NumpySDPA(attnref.scaled_dot_product_attention, name="ref", features=FEATURES)
    limited = Limited(impl, [ShapeLimit.parse("d%2")])
    report = check_vectors(limited)
    assert report.passed, report.table()
    full = {r.clause: r.examples for r in check_vectors(impl).results}
    fewer = {r.clause: r.examples for r in report.results}
    assert any(fewer.get(c, 0) < n for c, n in full.items())
