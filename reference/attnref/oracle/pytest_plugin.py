"""The oracle from pytest: one test per clause, with readable IDs.

Registered as the ``attnspec`` pytest plugin (entry point ``pytest11``), it
adds the options ``--attnspec-max-examples``, ``--attnspec-seed``,
``--attnspec-strict`` and ``--attnspec-save-dir`` and the fixture
``attnspec_settings``. In a test module::

    from attnref.oracle.pytest_plugin import parametrize_with_checks

    @parametrize_with_checks(my_implementation, expected_failures={"sdpa.causal-top-left": "why"})
    def test_conformance(attnspec_check, attnspec_settings):
        attnspec_check(attnspec_settings)

Each clause becomes a test with the ID ``<target>/<clause>`` (so
``pytest -k masked-zero`` selects one). A failed required clause fails its
test with the clause, its level and the oracle's message, the saved
counterexample and the ``attnspec check ... --replay`` command that replays
it, as on the command line; a clause that does not apply is skipped, and an
expected failure is an xfail. A failed *recommended* clause
(:data:`attnspec.clauses.Level`) is a finding, not a non-conformance, so it
is an xfail too, with the message ``recommended clause not met: ...``; with
``--attnspec-strict`` it fails like a required one. An expected failure that
did not show passes, and the run ends with a note saying so.

Counterexamples go to the cache folder of ``attnspec check``
(:func:`attnref.oracle.command.cache_dir`), or to ``--attnspec-save-dir``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from attnref.oracle.examples import DEFAULT_EXAMPLES

if TYPE_CHECKING:  # the plugin loads in every pytest run: import the oracle lazily
    from attnref.oracle.checks import Check
    from attnref.oracle.protocol import Implementation
    from attnref.oracle.report import ClauseResult

__all__ = ["ClauseCheck", "Settings", "parametrize_with_checks"]


_NOTE = "attnspec"
"""The key of the notes a test leaves in its ``user_properties`` for the summary."""


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
    save_dir
        Where shrunk counterexamples are saved (``None``: the cache folder).
    note
        Called with a note for the end of the run (an expected failure
        that did not show); ``None``: notes are dropped.
    """

    max_examples: int = DEFAULT_EXAMPLES
    seed: int = 0
    strict: bool = False
    save_dir: Path | None = None
    note: Callable[[str], None] | None = None


@contextlib.contextmanager
def _hypothesis_home(folder: Path) -> Iterator[None]:
    """Hypothesis' files in ``folder`` while the oracle runs, its own choice restored after.

    The user's own Hypothesis tests keep their database wherever they keep it.
    """
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    from hypothesis import configuration

    # Note: Hypothesis has no getter for its home folder; None restores its default lookup.
    before = vars(configuration).get("__hypothesis_home_directory")
    configuration.set_hypothesis_home_dir(folder)
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(before)


@dataclass(frozen=True)
class ClauseCheck:
    """One clause of one implementation, as a callable pytest parameter.

    Attributes
    ----------
    target
        How ``attnspec check`` names the implementation (``module:attr``)
        in reproduce commands; ``None`` when it has no importable name.
    """

    impl: Implementation
    check: Check
    clause: str
    expected_failure: str | None
    target: str | None = None

    def _reproduce(self, result: ClauseResult) -> list[str]:
        if result.counterexample is None:
            return []
        lines = [f"counterexample: {result.counterexample}"]
        if self.target is None:
            lines.append(
                "reproduce: bind the implementation to a module-level name to get an "
                "'attnspec check module:name --replay' command"
            )
            return lines
        module, _, _ = self.target.partition(":")
        path = result.counterexample
        command = shlex.join(
            ["attnspec", "check", self.target, "--clause", self.clause, "--replay", path]
        )
        root = _import_root(module)
        if root is not None and root != Path.cwd():
            command = f"PYTHONPATH={shlex.quote(str(root))} {command}"
        lines.append(f"reproduce: {command}")
        return lines

    def __call__(self, settings: Settings = Settings()) -> None:
        """Run the check; fail, skip or xfail the calling test accordingly.

        A failed recommended clause is an xfail unless ``settings.strict``.
        """
        from attnref.oracle.command import cache_dir
        from attnref.oracle.run import check_clause

        cache = cache_dir()
        save_dir = settings.save_dir or cache / "counterexamples"
        with _hypothesis_home(cache / "hypothesis"):
            result = check_clause(
                self.check,
                self.clause,
                self.impl,
                max_examples=settings.max_examples,
                seed_value=settings.seed,
                expected_failure=self.expected_failure,
                save_dir=save_dir,
                target=self.target or self.impl.name,
            )
        detail = "\n".join([result.message, *self._reproduce(result)])
        if result.status == "skipped":
            pytest.skip(result.message)
        if result.status == "xfail":
            pytest.xfail(detail)
        if result.status == "failed":
            if result.finding and not settings.strict:
                pytest.xfail(f"recommended clause not met: {detail}")
            pytest.fail(f"{self.clause} ({result.level}): {detail}", pytrace=False)
        if self.expected_failure is not None and settings.note is not None:
            settings.note(
                f"{self.target or self.impl.name}/{self.clause}: expected to fail "
                f"({self.expected_failure}), but passed {result.examples} examples; if it "
                "keeps passing with more, remove it from the expected failures"
            )


def _import_root(module: str) -> Path | None:
    """The folder to put on ``sys.path`` for ``module`` to import (``None``: unknown)."""
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None)
    if path is None:
        return None
    file = Path(path).resolve()
    depth = len(module.split(".")) + (file.name == "__init__.py")
    return file.parents[depth - 1]


def _caller_name(impl: Implementation, depth: int) -> str | None:
    """``module:name`` of a module-level name bound to ``impl`` in the calling module."""
    frame = sys._getframe(depth + 1)
    module = frame.f_globals.get("__name__")
    for name, value in frame.f_globals.items():
        if value is impl and not name.startswith("_"):
            return f"{module}:{name}"
    return None


def parametrize_with_checks(
    impl: Implementation,
    /,
    *,
    expected_failures: Mapping[str, str] | None = None,
    target: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Parametrize a test over every clause checked for ``impl``, as ``attnspec_check``.

    ``target`` names ``impl`` as ``attnspec check`` would (``module:attr``)
    for the reproduce commands of failures; by default the module-level
    name bound to ``impl`` in the calling module.
    """
    from attnref.oracle.checks import checks_for

    named = target or _caller_name(impl, 1)
    expected = dict(expected_failures or {})
    params = [
        ClauseCheck(impl, check, clause, expected.get(clause), named)
        for check, clause in checks_for(impl)
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
    group.addoption(
        "--attnspec-save-dir",
        default=None,
        help="where counterexamples are saved (default: the attnspec cache folder)",
    )


@pytest.fixture
def attnspec_settings(request: pytest.FixtureRequest) -> Settings:
    """The examples, seed, strictness and save folder chosen on the command line."""
    config = request.config
    save_dir = config.getoption("--attnspec-save-dir")
    node = request.node

    def note(text: str) -> None:
        node.user_properties.append((_NOTE, text))

    return Settings(
        max_examples=int(config.getoption("--attnspec-max-examples")),
        seed=int(config.getoption("--attnspec-seed")),
        strict=bool(config.getoption("--attnspec-strict")),
        save_dir=None if save_dir is None else Path(save_dir),
        note=note,
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the notes the checks left (expected failures that did not show)."""
    notes = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        for key, value in getattr(report, "user_properties", ())
        if key == _NOTE and getattr(report, "when", "call") == "call"
    ]
    if notes:
        terminalreporter.section("attnspec notes")
        for text in notes:
            terminalreporter.line(text)
