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
    "1. attention scores",
    "2. attention distribution",
    "3. attention value",
    "4. concatenation",
    "5. attentional hidden state",
    "6. output distribution",
)
"""The six steps of the attention value, in the tutorial's words."""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with its exit status, stdout and stderr."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_demo_replays_the_tutorials_running_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo walks the six steps of the tutorial's third decoder step, with its numbers."""
    status, out, err = run(capsys, "demo")
    assert status == 0, err
    positions = [out.index(f"\n{step} ") for step in STEPS]
    assert positions == sorted(positions)
    assert "I am a student → je suis étudiant" in out
    assert "has read 'suis'" in out
    # The numbers printed on the tutorial's attention-value page.
    for shown in (
        "student 1.9500",
        "student 0.8314",
        "(-0.5092, -0.6842)",
        "(-0.7654, -0.8925)",
        "étudiant 0.9375",
    ):
        assert shown in out, shown
    assert "predicts 'étudiant'" in out
    assert "je ← I, suis ← am, étudiant ← student" in out
    if "torch is not installed" not in out:
        assert "attnref.torch agrees on all six steps" in out


def test_demo_uses_the_numbers_of_the_tutorial() -> None:
    """The demo's example is the one the docs' figures and hidden doctests check against."""
    import attnref
    from attnref.demo import running_example as example

    _, weights = attnref.attention(example.S, example.H, example.H)
    assert [example.SOURCE[int(j)] for j in weights.argmax(axis=-1)] == ["I", "am", "student"]
    assert example.DECODER_INPUTS[example.STEP] == "suis"


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
    assert seen[0].targets == []


def _table(out: str) -> list[list[str]]:
    """The rows of the gradient-flow table: N, then the numbers."""
    return [
        line.split()
        for line in out.splitlines()
        if line.split()[:1] != [] and line.split()[0].isdigit()
    ]


def test_gradient_flow_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """One row per length: N, each gradient norm with its central difference, and the ratio."""
    status, out, err = run(capsys, "gradient-flow", "--lengths", "5", "10")
    assert status == 0, err
    rows = _table(out)
    assert [row[0] for row in rows] == ["5", "10"]
    for _, without, without_fd, with_, with_fd, ratio in rows:
        assert float(with_) / float(without) == pytest.approx(float(ratio), rel=1e-3)
        # Above their noise, central differences agree with the complex step.
        assert abs(float(without_fd) - float(without)) <= 1e-2 * float(without)
        assert abs(float(with_fd) - float(with_)) <= 1e-6 * float(with_)
    assert "without attention" in out
    assert "with attention" in out
    assert "central diff." in out


def test_gradient_flow_stars_central_differences_lost_in_their_noise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At 20 words the distant gradient (1e-17) is below the noise: starred, and wrong."""
    status, out, err = run(capsys, "gradient-flow", "--lengths", "5", "20", "--no-confirm")
    assert status == 0, err
    five, twenty = _table(out)
    assert not five[2].endswith("*")
    assert twenty[2].endswith("*")
    complex_step, central = float(twenty[1]), float(twenty[2].rstrip("*"))
    assert abs(central - complex_step) > 0.5 * complex_step
    assert not twenty[4].endswith("*")
    assert "rounding noise of central differences" in out


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
            assert len(record["central_difference_norms"]) == result["source_length"]
            assert 0 < record["central_difference_noise"] < 1e-9
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
