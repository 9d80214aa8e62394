"""The oracle from pytest: one test per clause, with readable IDs.

Registered as the ``attnspec`` pytest plugin (entry point ``pytest11``), it
adds the options ``--attnspec-max-examples``, ``--attnspec-seed`` and
``--attnspec-strict`` and the fixture ``attnspec_settings``. In a test module::

    from attnref.oracle.pytest_plugin import parametrize_with_checks

    @parametrize_with_checks(my_implementation, expected_failures={"sdpa.causal-top-left": "why"})
    def test_conformance(attnspec_check, attnspec_settings):
        attnspec_check(attnspec_settings)

Each clause becomes a test with the ID ``<target>/<clause>`` (so
``pytest -k masked-zero`` selects one). A failed required clause fails its
test with the clause, its level and the oracle's message; a clause that does
not apply is skipped, and an expected failure is an xfail. A failed
*recommended* clause (:data:`attnspec.clauses.Level`) is a finding, not a
non-conformance, so it is an xfail too, with the message ``recommended clause
not met: ...``; with ``--attnspec-strict`` it fails like a required one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the plugin loads in every pytest run: import the oracle lazily
    from attnref.oracle.checks import Check
    from attnref.oracle.protocol import Implementation

__all__ = ["ClauseCheck", "Settings", "parametrize_with_checks"]

DEFAULT_EXAMPLES = 60


@dataclass(frozen=True)
class Settings:
    """How the checks run (from the command line).

    Attributes
    ----------
    max_examples
        Hypothesis examples per clause.
    seed
        Seed of the examples.
    strict
        Whether a failed recommended clause fails its test (``--attnspec-strict``)
        instead of being an xfail.
    """

    max_examples: int = DEFAULT_EXAMPLES
    seed: int = 0
    strict: bool = False


@dataclass(frozen=True)
class ClauseCheck:
    """One clause of one implementation, as a callable pytest parameter."""

    impl: Implementation
    check: Check
    clause: str
    expected_failure: str | None

    def __call__(self, settings: Settings = Settings()) -> None:
        """Run the check; fail, skip or xfail the calling test accordingly.

        A failed recommended clause is an xfail unless ``settings.strict``.
        """
        from attnref.oracle.run import check_clause

        result = check_clause(
            self.check,
            self.clause,
            self.impl,
            max_examples=settings.max_examples,
            seed_value=settings.seed,
            expected_failure=self.expected_failure,
        )
        if result.status == "skipped":
            pytest.skip(result.message)
        if result.status == "xfail":
            pytest.xfail(result.message)
        if result.status == "failed":
            if result.finding and not settings.strict:
                pytest.xfail(f"recommended clause not met: {result.message}")
            pytest.fail(f"{self.clause} ({result.level}): {result.message}", pytrace=False)


def parametrize_with_checks(
    impl: Implementation,
    /,
    *,
    expected_failures: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Parametrize a test over every clause checked for ``impl``, as ``attnspec_check``."""
    from attnref.oracle.checks import checks_for

    expected = dict(expected_failures or {})
    params = [
        ClauseCheck(impl, check, clause, expected.get(clause)) for check, clause in checks_for(impl)
    ]
    ids = [f"{impl.name}/{p.clause}" for p in params]
    return pytest.mark.parametrize("attnspec_check", params, ids=ids)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of the attnspec plugin."""
    group = parser.getgroup("attnspec", "attnspec conformance checks")
    group.addoption(
        "--attnspec-max-examples",
        type=int,
        default=DEFAULT_EXAMPLES,
        help=f"Hypothesis examples per clause (default {DEFAULT_EXAMPLES})",
    )
    group.addoption("--attnspec-seed", type=int, default=0, help="seed of the examples")
    group.addoption(
        "--attnspec-strict",
        action="store_true",
        default=False,
        help="fail the tests of recommended clauses that are not met (default: xfail)",
    )


@pytest.fixture
def attnspec_settings(request: pytest.FixtureRequest) -> Settings:
    """The examples, seed and strictness chosen on the command line."""
    config = request.config
    return Settings(
        max_examples=int(config.getoption("--attnspec-max-examples")),
        seed=int(config.getoption("--attnspec-seed")),
        strict=bool(config.getoption("--attnspec-strict")),
    )
