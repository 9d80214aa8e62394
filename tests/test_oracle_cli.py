"""``attnspec check`` on the command line: exit codes, report, counterexample, replay."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import attnref.torch as twin
from attnref.cli import main
from attnref.oracle import Case

TESTS = Path(__file__).parent


def broken(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The twin with the mask polarity inverted: it fails ``distribution.mask-polarity``."""
    mask = kwargs.pop("mask", None)
    context, _ = twin.scaled_dot_product_attention(
        q, k, v, mask=None if mask is None else ~mask, **kwargs
    )
    return context


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> str:
    """This module importable as ``test_oracle_cli`` for ``module:attr`` targets."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setitem(sys.modules, "test_oracle_cli", sys.modules[__name__])
    return "test_oracle_cli"


def test_list_names_every_builtin_target(capsys: pytest.CaptureFixture[str]) -> None:
    """``--list`` prints the built-in targets and exits 0."""
    status, out, _ = run(capsys, "check", "--list")
    assert status == 0
    for name in ("attnref.torch", "torch.sdpa", "torch.mha", "jax.nn.dot_product_attention"):
        assert name in out


def test_conforming_target_exits_0_and_writes_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """sdpa.formula: the twin conforms; the JSON report has one record per clause."""
    path = tmp_path / "report.json"
    status, out, _ = run(capsys, "check", "attnref.torch", "--quick", "--json", str(path))
    assert status == 0, out
    assert "CONFORMS" in out
    (report,) = json.loads(path.read_text())
    assert report["passed"] is True
    assert report["counts"]["failed"] == 0
    assert {r["clause"] for r in report["results"]} >= {"sdpa.formula", "input.gradient"}


def test_failing_target_exits_1_with_a_reproduce_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, importable: str
) -> None:
    """distribution.mask-polarity: a failure prints a command that replays exactly it."""
    target = f"{importable}:broken"
    status, out, _ = run(
        capsys,
        "check",
        target,
        "--clause",
        "distribution.mask-polarity",
        "--save-dir",
        str(tmp_path),
    )
    assert status == 1, out
    assert "DOES NOT CONFORM" in out
    saved = tmp_path / f"{importable}_broken" / "distribution.mask-polarity.npz"
    assert saved.is_file()
    assert f"--replay {saved}" in out
    status, out, _ = run(
        capsys, "check", target, "--clause", "distribution.mask-polarity", "--replay", str(saved)
    )
    assert status == 1
    assert out.startswith("distribution.mask-polarity: failed")


def test_expected_failures_file_turns_the_failure_into_xfail(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, importable: str
) -> None:
    """An expected-failures file {clause: reason} makes the run pass with an xfail."""
    listed = tmp_path / "xfail.json"
    listed.write_text(json.dumps({"distribution.mask-polarity": "inverted on purpose"}))
    status, out, _ = run(
        capsys,
        "check",
        f"{importable}:broken",
        "--clause",
        "distribution.mask-polarity",
        "--expected-failures",
        str(listed),
        "--save-dir",
        str(tmp_path),
    )
    assert status == 0, out
    assert "xfail" in out
    assert "inverted on purpose" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "no-such-target"], "target must be a built-in name"),
        (["check", "no_such_module:fn"], "cannot import 'no_such_module'"),
        (["check", "attnref.torch", "--max-examples", "0"], "--max-examples must be at least 1"),
        (["check", "attnref.torch", "--clause", "no.such-clause"], "is not a clause ID"),
        (["check", "attnref.torch", "--replay", "missing.npz"], "needs a TARGET and exactly one"),
        (
            ["check", "keras.Attention", "--clause", "sdpa.formula", "--replay", "SDPA_CASE"],
            "holds a case of scaled_dot_product_attention",
        ),
        (
            ["check", "attnref.torch", "--clause", "sdpa.formula", "--replay", "missing.npz"],
            "is not a file",
        ),
    ],
    ids=[
        "unknown target",
        "unimportable module",
        "zero examples",
        "unknown clause",
        "replay without clause",
        "replay of a missing file",
        "replay of another function",
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    """Usage errors exit 2 with a message saying what to fix."""
    sdpa_case = tmp_path / "sdpa.npz"
    Case("scaled_dot_product_attention", {n: np.ones((1, 1, 2, 2)) for n in "qkv"}).save(
        str(sdpa_case)
    )
    argv = [str(sdpa_case) if a == "SDPA_CASE" else a for a in argv]
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert message in err
