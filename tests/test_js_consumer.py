"""The JavaScript consumer of the golden vectors (docs/examples/js): it passes them, and fails.

It proves the vectors are language-neutral: a dependency-free Node.js
implementation of dot and scaled-dot attention (with sinks and the log-sum-exp)
reads them and checks itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from attnspec import vectors

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "examples" / "js" / "check-vectors.mjs"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node (Node.js) is not on PATH")


def _run(directory: Path) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run(
        [NODE, str(SCRIPT), str(directory)], capture_output=True, text=True, timeout=60, check=False
    )


def _copy_vectors(target: Path) -> Path:
    source = resources.files("attnspec").joinpath("vectors")
    target.mkdir()
    for name in (*vectors.files(), "schema.json"):
        (target / name).write_text(
            source.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8"
        )
    return target


IMPLEMENTED = {
    "score_dot",
    "score_scaled_dot",
    "attention_distribution",
    "log_sum_exp",
    "attention_value",
    "attention",
    "scaled_dot_product_attention",
}


def _skipped_by_design(case: vectors.VectorCase) -> bool:
    """Complex inputs, and attention with a score kind other than dot and scaled_dot."""
    arrays = [*case.inputs.values(), *case.options.values()]
    if any(getattr(a, "dtype", None) is not None and a.dtype.kind == "c" for a in arrays):
        return True
    if RESTRICTIONS & set(case.options):
        return True  # the example does not implement softcap, windows, offsets or lengths
    kind = case.options.get("score")
    return (
        case.raises is None and case.function == "attention" and kind not in ("dot", "scaled_dot")
    )


RESTRICTIONS = {"softcap", "window", "query_offset", "key_lengths"}


def test_consumer_passes_the_shipped_vectors(tmp_path: Path) -> None:
    """Exit code 0, every case of the functions it implements checked, only by-design skips."""
    result = _run(_copy_vectors(tmp_path / "vectors"))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"(\d+) passed, (\d+) failed, (\d+) skipped", result.stdout)
    assert summary is not None, result.stdout
    mine = [c for c in vectors.load_cases() if c.function in IMPLEMENTED]
    skipped = sum(_skipped_by_design(c) for c in mine)
    assert [int(n) for n in summary.groups()] == [len(mine) - skipped, 0, skipped]


def test_consumer_fails_on_a_wrong_expected_value(tmp_path: Path) -> None:
    """A vector whose expected weight is changed makes the consumer exit 1 and name the case."""
    directory = _copy_vectors(tmp_path / "vectors")
    path = directory / "scaled_dot_product_attention.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    case = next(c for c in data["cases"] if c["id"].endswith("/causal-bottom-right-5x2"))
    weights = case["outputs"][1]
    weights["data"][0] = (1.0).hex()  # a fully masked row's zero weight, now 1
    path.write_text(json.dumps(data), encoding="utf-8")
    result = _run(directory)
    assert result.returncode == 1
    assert "FAIL scaled_dot_product_attention/causal-bottom-right-5x2" in result.stdout


def test_consumer_fails_on_a_finite_lse_for_an_empty_row(tmp_path: Path) -> None:
    """lse.fully-masked-row: an expected -inf changed to 0 makes the consumer exit 1."""
    directory = _copy_vectors(tmp_path / "vectors")
    path = directory / "scaled_dot_product_attention.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    case = next(c for c in data["cases"] if c["id"].endswith("/lse-fully-masked-row"))
    lse = case["outputs"][2]
    lse["data"][lse["data"].index("-inf")] = (0.0).hex()
    path.write_text(json.dumps(data), encoding="utf-8")
    result = _run(directory)
    assert result.returncode == 1
    assert "FAIL scaled_dot_product_attention/lse-fully-masked-row: output 2" in result.stdout


def test_consumer_fails_when_an_error_is_not_raised(tmp_path: Path) -> None:
    """A case expecting an exception the consumer does not raise makes it exit 1."""
    directory = _copy_vectors(tmp_path / "vectors")
    path = directory / "score_dot.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    good = next(c for c in data["cases"] if c["id"] == "score_dot/basic")
    good["raises"] = "ShapeError"
    path.write_text(json.dumps(data), encoding="utf-8")
    result = _run(directory)
    assert result.returncode == 1
    assert "FAIL score_dot/basic: did not raise ShapeError" in result.stdout


def test_consumer_fails_when_there_is_nothing_to_check(tmp_path: Path) -> None:
    """An empty directory is a failure, not a vacuous pass."""
    (tmp_path / "empty").mkdir()
    assert _run(tmp_path / "empty").returncode == 1
