"""The oracle's pytest entry: one test per clause, readable IDs, skip/xfail/fail outcomes."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def _plugin_args() -> list[str]:
    """Load the plugin explicitly only where its pytest11 entry point is not installed.

    Installed (``pip install -e .``), pytest loads it by the entry point, and
    naming it again with ``-p`` would register it twice.
    """
    installed = {ep.name for ep in entry_points(group="pytest11")}
    return [] if "attnspec" in installed else ["-p", "attnref.oracle.pytest_plugin"]


MODULE = """
import torch
from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.pytest_plugin import parametrize_with_checks
import attnref.torch as twin


def sdpa(q, k, v, **kw):
    return twin.scaled_dot_product_attention(q, k, v, **kw)


def inverted(q, k, v, mask=None, **kw):
    return twin.scaled_dot_product_attention(q, k, v, mask=None if mask is None else ~mask, **kw)


GOOD = TorchSDPA(sdpa, name="good", features=frozenset({"bool_mask", "weights"}))
BAD = TorchSDPA(inverted, name="bad", features=frozenset({"bool_mask", "weights"}))


@parametrize_with_checks(GOOD)
def test_good(attnspec_check, attnspec_settings):
    attnspec_check(attnspec_settings)


@parametrize_with_checks(BAD, expected_failures={"distribution.masked-zero": "known"})
def test_bad(attnspec_check, attnspec_settings):
    attnspec_check(attnspec_settings)
"""


def test_one_test_per_clause_with_readable_ids(pytester: pytest.Pytester) -> None:
    """distribution.mask-polarity: the inverted mask fails that clause's own test, by ID."""
    pytester.makepyfile(test_conformance=MODULE)
    result = pytester.runpytest_subprocess(
        *_plugin_args(),
        "--attnspec-max-examples=15",
        "-k",
        "mask-polarity",
        "-v",
    )
    result.stdout.fnmatch_lines(
        [
            "*test_good?good/distribution.mask-polarity? PASSED*",
            "*test_bad?bad/distribution.mask-polarity? FAILED*",
        ]
    )
    result.assert_outcomes(passed=1, failed=1)


def test_skips_and_expected_failures(pytester: pytest.Pytester) -> None:
    """A clause needing an absent feature is skipped; a listed failure is an xfail."""
    pytester.makepyfile(test_conformance=MODULE)
    result = pytester.runpytest_subprocess(
        *_plugin_args(),
        "--attnspec-max-examples=15",
        "-k",
        "bad and (masked-zero or causal-top-left)",
        "-rsx",
    )
    result.assert_outcomes(skipped=1, xfailed=1)


LEAKY_MODULE = """
from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.pytest_plugin import parametrize_with_checks
import attnref.torch as twin


def leaky(q, k, v, **kw):
    # the twin's weights times the values, as a plain matmul: 0 * NaN at a masked value row
    _, weights = twin.scaled_dot_product_attention(q, k, v, **kw)
    return weights @ v, weights


LEAKY = TorchSDPA(leaky, name="leaky", features=frozenset({"bool_mask", "weights"}))


@parametrize_with_checks(LEAKY)
def test_leaky(attnspec_check, attnspec_settings):
    attnspec_check(attnspec_settings)
"""


def test_recommended_clause_not_met_is_an_xfail(pytester: pytest.Pytester) -> None:
    """input.unread-nonfinite: a leak of NaN behind the mask is a finding, reported as an xfail."""
    pytester.makepyfile(test_conformance=LEAKY_MODULE)
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "--attnspec-max-examples=15", "-k", "unread-nonfinite", "-rx", "-v"
    )
    result.stdout.fnmatch_lines(
        [
            "*test_leaky?leaky/input.unread-nonfinite? XFAIL*",
            "*recommended clause not met: *",
        ]
    )
    result.assert_outcomes(xfailed=1)


def test_strict_option_fails_recommended_clauses(pytester: pytest.Pytester) -> None:
    """input.unread-nonfinite: with --attnspec-strict the finding fails, naming its level."""
    pytester.makepyfile(test_conformance=LEAKY_MODULE)
    result = pytester.runpytest_subprocess(
        *_plugin_args(),
        "--attnspec-max-examples=15",
        "--attnspec-strict",
        "-k",
        "unread-nonfinite",
    )
    result.stdout.fnmatch_lines(["*input.unread-nonfinite (recommended): *"])
    result.assert_outcomes(failed=1)


def test_failure_shows_the_counterexample_and_a_command_that_replays_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """distribution.mask-polarity: the failure names its saved case and its replay command.

    The case is saved in the attnspec cache ($ATTNSPEC_CACHE), not in the project, and
    the printed command, run from the project, replays exactly that failure.
    """
    cache = pytester.path.parent / "cache"
    monkeypatch.setenv("ATTNSPEC_CACHE", str(cache))
    pytester.makepyfile(test_conformance=MODULE)
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "-p", "no:cacheprovider", "--attnspec-max-examples=15",
        "-k", "bad and mask-polarity",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    saved = cache / "counterexamples" / "test_conformance_BAD" / "distribution.mask-polarity.npz"
    assert saved.is_file()
    result.stdout.fnmatch_lines([f"counterexample: {saved}", "reproduce: attnspec check *"])
    command = next(line for line in result.outlines if line.startswith("reproduce: "))
    assert command == (
        "reproduce: attnspec check test_conformance:BAD --clause distribution.mask-polarity "
        f"--replay {saved}"
    )
    replay = subprocess.run(
        [str(Path(sys.executable).with_name("attnspec")), *command.split()[2:]],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert replay.returncode == 1, replay.stderr
    assert replay.stdout.startswith("distribution.mask-polarity: failed")
    written = {p.name for p in pytester.path.iterdir()}
    assert not written & {"attnspec-counterexamples", ".hypothesis", "counterexamples"}


def test_save_dir_option(pytester: pytest.Pytester) -> None:
    """--attnspec-save-dir saves the counterexamples where asked."""
    pytester.makepyfile(test_conformance=MODULE)
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "--attnspec-max-examples=15", "--attnspec-save-dir=saved",
        "-k", "bad and mask-polarity",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    assert (pytester.path / "saved" / "test_conformance_BAD").is_dir()


STALE_MODULE = """
from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.pytest_plugin import parametrize_with_checks
import attnref.torch as twin


def sdpa(q, k, v, **kw):
    return twin.scaled_dot_product_attention(q, k, v, **kw)


GOOD = TorchSDPA(sdpa, name="good", features=frozenset({"bool_mask", "weights"}))


@parametrize_with_checks(GOOD, expected_failures={"sdpa.formula": "a stale entry"})
def test_good(attnspec_check, attnspec_settings):
    attnspec_check(attnspec_settings)
"""


def test_an_expected_failure_that_passes_leaves_a_note(pytester: pytest.Pytester) -> None:
    """sdpa.formula listed but passing: the test passes and the run ends with a note."""
    pytester.makepyfile(test_conformance=STALE_MODULE)
    result = pytester.runpytest_subprocess(
        *_plugin_args(), "--attnspec-max-examples=5", "-k", "formula"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*attnspec notes*",
            "test_conformance:GOOD/sdpa.formula: expected to fail (a stale entry), but passed*",
        ]
    )
