"""``attnspec check --vectors``: implementations judged on the golden vectors' exact answers."""

from __future__ import annotations

from typing import Any

import numpy as np

import attnref
from attnref.oracle import Feature
from attnref.oracle.adapters.numpy import NumpySDPA
from attnref.oracle.vector_check import check_vectors

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
