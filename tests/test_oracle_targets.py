"""Every built-in target conforms, once its declared conventions and known departures count.

A known departure is listed with its reason in :mod:`attnref.oracle.targets`;
anything else that fails here is either a bug in the oracle (a wrong FAIL) or
a change in the library that the list must learn about.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from attnref.oracle import check_implementation
from attnref.oracle.targets import TARGETS, resolve
from attnspec import clauses

os.environ.setdefault("KERAS_BACKEND", "torch")

EXAMPLES = 20
"""Examples per clause: enough to meet every clause's adversarial cases several times."""


@pytest.mark.parametrize("name", list(TARGETS))
def test_builtin_target_conforms(name: str) -> None:
    """sdpa.formula, attention.composition and every other clause the target claims."""
    if TARGETS[name].missing():
        pytest.skip(f"{name} needs {', '.join(TARGETS[name].missing())}")
    impl, expected = resolve(name)
    report = check_implementation(
        impl,
        max_examples=EXAMPLES,
        expected_failures=expected,
        departure_cases=TARGETS[name].departure_cases,
    )
    assert report.passed, report.table()
    assert report.counts()["passed"] >= 10, report.table()


@pytest.mark.parametrize("name", list(TARGETS))
def test_expected_failures_cite_real_clauses_with_reasons(name: str) -> None:
    """Each known departure names a clause of the registry and says why."""
    for clause, reason in TARGETS[name].expected_failures.items():
        assert clause in clauses.ids()
        assert len(reason) > 20


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_twin_declares_that_it_computes_in_its_dtype(dtype: str) -> None:
    """distribution.sums-to-one: the twin evaluates float16 and bfloat16 inputs in that
    dtype, a naive evaluation that misses float32 accumulation's bounds; it declares
    accumulation=storage and conforms, and the same kernel declaring the default float32
    accumulation does not.

    The false claim is judged on the clause it fails in both dtypes (a row sum of the
    weights rounded in the storage dtype), so that shrinking a dozen other failures costs
    no time.
    """
    from dataclasses import replace

    from attnref.oracle.conventions import Conventions

    twin: Any = resolve("attnref.torch")[0]  # a TorchSDPA dataclass
    honest = replace(twin, dtype=dtype)
    assert check_implementation(honest, max_examples=EXAMPLES).passed
    claimed = replace(honest, conventions=Conventions())
    clause = "distribution.sums-to-one"
    report = check_implementation(
        claimed, max_examples=EXAMPLES, clauses_to_check=frozenset({clause})
    )
    assert [(r.clause, r.status) for r in report.results] == [(clause, "failed")], report.table()
