"""The ``attnspec`` command: its subcommands, its output and its exit statuses."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from attnref import cli
from attnref.testing.gradcheck import setting

STEPS = (
    "scores",
    "attention distribution",
    "attention value",
    "concatenation [a; s]",
    "attentional hidden state",
    "output distribution",
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with its exit status, stdout and stderr."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_demo_prints_every_attention_step(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo shows the six steps on the tutorial's sentence and checks the twin."""
    status, out, err = run(capsys, "demo")
    assert status == 0, err
    for step in STEPS:
        assert f"\n{step} " in out, step
    assert "I am a student" in out
    for word in ("<eos>", "je", "suis", "étudiant"):
        assert word in out
    if "torch is not installed" not in out:
        assert "attnref.torch agrees on all six steps" in out


def test_no_subcommand_runs_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """``attnspec`` alone is ``attnspec check``: the oracle on every built-in target."""
    import attnref.cli

    seen: list[argparse.Namespace] = []

    def record(args: argparse.Namespace, out: object, err: object) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(attnref.cli, "run_check", record)
    assert attnref.cli.main([]) == 0
    assert attnref.cli.main(["check"]) == 0
    assert vars(seen[0]) == vars(seen[1])
    assert seen[0].command == "check"
    assert seen[0].target is None


def test_gradient_flow_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """One row per length: N, the two gradient norms and their ratio."""
    status, out, err = run(capsys, "gradient-flow", "--lengths", "5", "10")
    assert status == 0, err
    rows = [line.split() for line in out.splitlines() if line.strip()[:2] in ("5 ", "10")]
    assert [row[0] for row in rows] == ["5", "10"]
    for _, without, with_, ratio in rows:
        assert float(with_) / float(without) == pytest.approx(float(ratio), rel=1e-3)
    assert "without attention" in out
    assert "with attention" in out


def test_gradient_flow_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """``--json -`` prints only JSON: every position's norm, both ways, for each length."""
    pytest.importorskip("torch")
    status, out, err = run(capsys, "gradient-flow", "--lengths", "3", "6", "--json", "-")
    assert status == 0, err
    document = json.loads(out)
    assert [r["source_length"] for r in document["results"]] == [3, 6]
    for result in document["results"]:
        for key in ("without_attention", "with_attention"):
            record: dict[str, Any] = result[key]
            assert len(record["norms"]) == result["source_length"]
            assert len(record["autograd_norms"]) == result["source_length"]
            assert record["disagreement"] <= setting("autograd.rtol.float64")
    assert document["model"]["recurrent_spectral_norm"] < 1


def test_gradient_flow_json_to_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--json PATH`` writes the document and still prints the table."""
    path = tmp_path / "flow.json"
    status, out, err = run(capsys, "gradient-flow", "--lengths", "4", "--json", str(path))
    assert status == 0, err
    assert json.loads(path.read_text(encoding="utf-8"))["results"][0]["source_length"] == 4
    assert "with attention" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gradient-flow", "--lengths", "0"], "argument --lengths: must be at least 1; got 0"),
        (["gradient-flow", "--lengths", "five"], "argument --lengths: must be an integer"),
        (["gradient-flow", "--lengths"], "argument --lengths: expected at least one argument"),
        (["gradient-flow", "--json"], "argument --json: expected one argument"),
        (["translate"], "argument COMMAND: invalid choice: 'translate'"),
        (["demo", "--lengths", "5"], "unrecognized arguments: --lengths 5"),
    ],
    ids=[
        "lengths-zero",
        "lengths-not-a-number",
        "lengths-missing",
        "json-missing",
        "unknown-command",
        "demo-with-flow-option",
    ],
)
def test_usage_errors_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Bad arguments exit with status 2 and say which argument and why, on stderr."""
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert message in err
    assert "usage: attnspec" in err
    assert out == ""


def test_an_unwritable_json_path_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--json`` naming a directory exits 2 naming the argument."""
    status, _, err = run(capsys, "gradient-flow", "--lengths", "2", "--json", str(tmp_path))
    assert status == 2
    assert "argument --json: cannot write" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "gradient-flow", "--help")
    assert status == 0
    assert "--lengths" in out


def test_the_module_runs_as_a_command() -> None:
    """``python -m attnref.cli`` is the ``attnspec`` entry point (``main`` as exit status)."""
    done = subprocess.run(
        [sys.executable, "-m", "attnref.cli", "gradient-flow", "--lengths", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr
