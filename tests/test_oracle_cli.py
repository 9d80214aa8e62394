"""``attnspec check`` on the command line, as a kernel author runs it.

Most tests run the console script in a subprocess, from a temporary folder
that holds the user's own module (``kernels.py``) and nothing else, with the
cache folder pointed at a second temporary folder: what the command prints,
its exit status, and what it writes (nowhere in the working folder) are all
as a user sees them. Each run is narrowed to a few clauses and examples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch

from attnref.cli import main
from attnref.oracle import Case
from attnref.oracle.report import REPORT_SCHEMA

SCRIPT = Path(sys.executable).with_name("attnspec")
"""The console script installed beside this interpreter."""

KERNELS = '''
"""A kernel author's module: a correct kernel and a few wrong or different ones."""
import math

import torch


def attn(q, k, v, *, mask=None, scale=None, is_causal=False):
    """Correct: the spec's SDPA, fully masked rows zero; 16-bit inputs computed in float32."""
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    s = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    allowed = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device)
    if is_causal:
        allowed = torch.tril(allowed)
    if mask is not None and mask.dtype == torch.bool:
        allowed = allowed & mask
    elif mask is not None:  # an additive mask
        s = s + mask.to(s.dtype)
        allowed = allowed & (s > float("-inf"))
    s = s.masked_fill(~allowed, float("-inf"))
    return (torch.softmax(s, dim=-1).nan_to_num(0.0) @ v).to(dtype)


def ignores_scale(q, k, v, *, mask=None, scale=None):
    """Wrong: the scale argument is ignored."""
    return attn(q, k, v, mask=mask)


def nan_rows(q, k, v, *, mask=None, scale=None):
    """Fully masked rows are NaN (as nn.MultiheadAttention): a convention."""
    s = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def bthd(q, k, v, *, mask=None, scale=None):
    """Correct on [B, T, H, d] tensors (the JAX layout)."""
    t = lambda x: x.transpose(-3, -2)
    return t(attn(t(q), t(k), t(v), mask=mask, scale=scale))


def d8(q, k, v, *, mask=None, scale=None):
    """Correct, but takes head sizes that are a multiple of 8 only."""
    if q.shape[-1] % 8:
        raise ValueError(f"head size must be a multiple of 8, got {q.shape[-1]}")
    return attn(q, k, v, mask=mask, scale=scale)


def in_float32(q, k, v, *, mask=None, scale=None):
    """Right formula, but float64 inputs computed in float32 (returned as float64)."""
    return attn(q.float(), k.float(), v.float(), mask=mask, scale=scale).to(q.dtype)


def make_numpy():
    """A factory of a kernel that returns a NumPy array: every check raises the same way."""
    from attnref.oracle.adapters.torch import TorchSDPA

    def fn(q, k, v, **kwargs):
        return attn(q, k, v, **kwargs).numpy()

    return TorchSDPA(fn, name="numpy-result", features=frozenset({"scale", "bool_mask"}))


def make_missing():
    """A factory whose framework is not installed."""
    import flash_attn_not_installed  # noqa: F401


def make_number():
    """A zero-argument callable that returns no implementation."""
    return 3
'''

EXAMPLES = ["--max-examples", "4"]


@dataclass(frozen=True)
class Run:
    """One run of the console script."""

    status: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        """Standard output as the JSON document, checked against the documented schema."""
        data: dict[str, Any] = json.loads(self.out)
        jsonschema.validate(data, REPORT_SCHEMA)
        return data


@dataclass(frozen=True)
class User:
    """A user's working folder holding ``kernels.py``, and the cache folder."""

    home: Path
    cache: Path

    def run(self, *argv: str, env: dict[str, str] | None = None) -> Run:
        """``attnspec ARGV`` run from the user's folder."""
        environ = {**os.environ, "ATTNSPEC_CACHE": str(self.cache), "KERAS_BACKEND": "torch"}
        environ.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)
        environ.update(env or {})
        environ = {k: v for k, v in environ.items() if v}
        done = subprocess.run(
            [str(SCRIPT), *argv],
            cwd=self.home,
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def written(self) -> set[str]:
        """What is in the working folder besides the user's module and its bytecode."""
        return {p.name for p in self.home.iterdir()} - {"kernels.py", "__pycache__"}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process runs write their cache under the test's folder, and leave Hypothesis' home
    as they found it for the tests that follow."""
    from hypothesis import configuration

    monkeypatch.setenv("ATTNSPEC_CACHE", str(tmp_path / "in-process-cache"))
    before = vars(configuration).get("__hypothesis_home_directory")
    yield
    configuration.set_hypothesis_home_dir(before)


@pytest.fixture
def user(tmp_path: Path) -> User:
    home, cache = tmp_path / "work", tmp_path / "cache"
    home.mkdir()
    (home / "kernels.py").write_text(KERNELS, encoding="utf-8")
    return User(home, cache)


# --- point 1: the current folder is importable; dtype, device, layout, declarations ---------


def test_correct_kernel_from_its_own_folder_conforms_with_json_on_stdout(user: User) -> None:
    """sdpa.formula: ``kernels:attn`` imports from the working folder; stdout is only JSON."""
    run = user.run("check", "kernels:attn", *EXAMPLES, "--clause", "sdpa.formula", "--json", "-")
    assert run.status == 0, run.err
    data = run.json()
    assert data["passed"] is True
    assert data["exit_status"] == 0
    (report,) = data["reports"]
    assert report["dtype"] == "float64"
    assert [(r["clause"], r["status"]) for r in report["results"]] == [("sdpa.formula", "passed")]
    assert isinstance(report["results"][0]["worst_ratio"], float)
    assert report["results"][0]["worst_ratio"] <= 1
    assert "kernels:attn: CONFORMS" in run.err  # the table went to stderr
    assert user.written() == set()  # nothing written into the working folder


def test_correct_and_buggy_kernel_in_bfloat16(user: User) -> None:
    """score.scale-applied: --dtype bfloat16 judges in bfloat16; the bug fails, the kernel not."""
    good = user.run(
        "check", "kernels:attn", "--dtype", "bfloat16", *EXAMPLES,
        "--clause", "score.scale-applied", "--json", "-",
    )  # fmt: skip
    assert good.status == 0, good.err
    assert good.json()["reports"][0]["dtype"] == "bfloat16"
    bad = user.run(
        "check", "kernels:ignores_scale", "--dtype", "bfloat16", *EXAMPLES,
        "--clause", "score.scale-applied",
    )  # fmt: skip
    assert bad.status == 1, bad.out
    assert bad.out.startswith("kernels:ignores_scale: ")
    assert "DOES NOT CONFORM" in bad.out.splitlines()[1]
    assert "bfloat16 on cpu" in bad.out
    # its reproduce command repeats the declaration, so it rebuilds the same kernel
    (command,) = [line for line in bad.out.splitlines() if "reproduce:" in line]
    assert "--dtype bfloat16" in command
    replay = user.run(*command.split("reproduce: attnspec ", 1)[1].split())
    assert replay.status == 1
    assert replay.out.startswith("score.scale-applied: failed")


@pytest.mark.skipif(torch.cuda.device_count() > 98, reason="a machine with 99 GPUs")
def test_absent_device_is_a_usage_error(user: User) -> None:
    """An unavailable --device exits 2 with one line, before any clause runs."""
    run = user.run("check", "kernels:attn", "--device", "cuda:98", "--quick")
    assert run.status == 2
    (line,) = run.err.strip().splitlines()
    assert line.startswith("attnspec check: error: device 'cuda:98' is not available to torch")
    assert run.out == ""


def test_layout_declaration_and_the_hint_that_names_it(user: User) -> None:
    """sdpa.formula: a [B, T, H, d] kernel fails as BHTD with a hint to --layout BTHD."""
    argv = ["check", "kernels:bthd", *EXAMPLES, "--clause", "sdpa.formula"]
    wrong = user.run(*argv, "--json", "-")
    assert wrong.status == 1
    (cause,) = wrong.json()["reports"][0]["causes"]
    assert "--layout BTHD" in (cause["hint"] or "")
    assert user.run(*argv, "--layout", "BTHD").status == 0


def test_fully_masked_row_convention_named_then_declared(user: User) -> None:
    """distribution.fully-masked-row: NaN rows are said as NaN and name their --declare."""
    argv = ["check", "kernels:nan_rows", *EXAMPLES, "--clause", "distribution.fully-masked-row"]
    undeclared = user.run(*argv)
    assert undeclared.status == 1
    row = next(line for line in undeclared.out.splitlines() if line.startswith("distribution."))
    assert row.split()[4] == "NaN"  # the worst column says NaN, not inf
    assert "--declare fully_masked_row=nan" in undeclared.out
    declared = user.run(*argv, "--declare", "fully_masked_row=nan", "--json", "-")
    assert declared.status == 0, declared.err
    assert "fully_masked_row=nan (declared)" in declared.json()["reports"][0]["conventions"]


def test_feature_switches(user: User) -> None:
    """--no-gradients skips the gradient clauses; --mask-kinds adds additive masks."""
    run = user.run(
        "check", "kernels:attn", *EXAMPLES, "--no-gradients", "--mask-kinds", "bool,additive",
        "--clause", "input.gradient", "--clause", "distribution.additive-mask", "--json", "-",
    )  # fmt: skip
    assert run.status == 0, run.err
    (report,) = run.json()["reports"]
    assert "gradients" not in report["features"]
    assert "additive_mask" in report["features"]
    statuses = {r["clause"]: r["status"] for r in report["results"]}
    assert statuses == {"input.gradient": "skipped", "distribution.additive-mask": "passed"}


def test_shape_limit_draws_only_the_shapes_a_kernel_takes(user: User) -> None:
    """sdpa.formula: a d%8-only kernel is a usage error without --shape-limit, conforms with it."""
    argv = ["check", "kernels:d8", *EXAMPLES, "--clause", "sdpa.formula"]
    refused = user.run(*argv)
    assert refused.status == 2
    assert "head size must be a multiple of 8" in refused.err
    limited = user.run(*argv, "--shape-limit", "d%8")
    assert limited.status == 0, limited.out + limited.err
    assert "shapes: d%8" in limited.out


def test_full_size_check_reports_time_and_memory(user: User) -> None:
    """sdpa.formula on one [1, 8, 64, 128] case per variant, with its cost, from the CLI."""
    run = user.run("check", "kernels:attn", "--full-size", "64", "--json", "-")
    assert run.status == 0, run.err
    (report,) = run.json()["reports"]
    assert report["mode"] == "full-size"
    clauses = [r["clause"] for r in report["results"]]
    assert clauses == ["sdpa.formula", "sdpa.causal-top-left", "distribution.mask-polarity"]
    assert [x["shape"] for x in report["full_size"]] == [[1, 8, 64, 128]] * 3
    assert all(x["implementation_seconds"] >= 0 for x in report["full_size"])


# --- point 2: several targets end with a summary ----------------------------------------------


def test_several_targets_end_with_a_summary_table(user: User) -> None:
    """score.scale-applied: two targets, one conforming; the last lines are the summary."""
    run = user.run(
        "check", "kernels:attn", "kernels:ignores_scale", *EXAMPLES,
        "--clause", "score.scale-applied",
    )  # fmt: skip
    assert run.status == 1
    tail = run.out.strip().splitlines()
    assert tail[-1] == "1 of 2 targets conform"
    rows = {line.split()[0]: line for line in tail[-5:-2]}
    assert "CONFORMS" in rows["kernels:attn"]
    assert "DOES NOT CONFORM" in rows["kernels:ignores_scale"]


def test_a_float64_kernel_computing_in_float32_is_one_cause(user: User) -> None:
    """sdpa.formula: errors ~1e-8 in every value clause are one cause, found to be float32."""
    run = user.run(
        "check", "kernels:in_float32", *EXAMPLES, "--clause", "sdpa.formula",
        "--clause", "score.scale-applied", "--clause", "sdpa.default-scale", "--json", "-",
    )  # fmt: skip
    assert run.status == 1
    (cause,) = run.json()["reports"][0]["causes"]
    assert cause["clauses"] == ["sdpa.formula", "sdpa.default-scale", "score.scale-applied"]
    assert "checked as a float32 kernel (--dtype float32) it passes" in cause["hint"]


def test_the_same_exception_in_every_clause_is_one_cause(user: User) -> None:
    """A kernel returning NumPy raises the same exception in every clause: one cause, one line."""
    run = user.run(
        "check", "kernels:make_numpy", "--max-examples", "2", "--clause", "sdpa.formula",
        "--clause", "score.scale-applied", "--clause", "distribution.mask-polarity",
    )  # fmt: skip
    assert run.status == 1
    causes = run.out.split("causes:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert causes[0].startswith("  1. raised AttributeError: ")
    assert "(the same exception in 3 clauses: " in causes[0]
    assert not any(line.startswith("  2. ") for line in causes)


# --- point 3: exit status, usage errors, the schema ---------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("kernels:make_missing", "factory 'kernels:make_missing' cannot import what it needs"),
        ("kernels:make_number", "'kernels:make_number' is a zero-argument callable"),
        ("kernels:no_such_name", "module 'kernels' has no attribute 'no_such_name'"),
    ],
    ids=["factory needs a missing module", "factory returns a number", "no such attribute"],
)
def test_unusable_target_is_one_line_and_exit_2(user: User, target: str, message: str) -> None:
    """A target that cannot be built exits 2 with one line on stderr and no traceback."""
    run = user.run("check", target, "--quick", "--json", "-")
    assert run.status == 2
    (line,) = run.err.strip().splitlines()
    assert line.startswith(f"attnspec check: error: {message}")
    assert run.out == ""


def test_json_schema_option_prints_a_valid_schema(user: User) -> None:
    """--json-schema prints the documented JSON Schema, itself valid draft 2020-12."""
    run = user.run("check", "--json-schema")
    assert run.status == 0
    schema = json.loads(run.out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads(json.dumps(REPORT_SCHEMA))


# --- point 4: expected failures, built-in targets' environment -----------------------------------


def test_replaying_an_expected_failure_reports_it_as_expected(user: User) -> None:
    """score.scale-applied listed as expected: an xfail, and so is its replay (exit 0)."""
    (user.home / "xfail.json").write_text(json.dumps({"score.scale-applied": "scale ignored"}))
    run = user.run(
        "check", "kernels:ignores_scale", *EXAMPLES, "--clause", "score.scale-applied",
        "--expected-failures", "xfail.json",
    )  # fmt: skip
    assert run.status == 0, run.out
    (command,) = [line for line in run.out.splitlines() if "reproduce:" in line]
    assert "--expected-failures" in command
    replay = user.run(*command.split("reproduce: attnspec ", 1)[1].split())
    assert replay.status == 0, replay.out + replay.err
    assert replay.out.startswith("score.scale-applied: xfail: ")
    assert "(expected: scale ignored)" in replay.out


def test_keras_target_sets_its_backend_when_unset(user: User) -> None:
    """sdpa.causal-top-left: keras.Attention runs without KERAS_BACKEND; another backend is 2."""
    argv = ["check", "keras.Attention", "--max-examples", "2", "--clause", "sdpa.causal-top-left"]
    assert user.run(*argv, env={"KERAS_BACKEND": ""}).status == 0
    other = user.run(*argv, env={"KERAS_BACKEND": "jax"})
    assert other.status == 2
    assert "needs KERAS_BACKEND=torch" in other.err


# --- point 5: the cache folder -------------------------------------------------------------------


def test_counterexamples_go_to_the_cache_and_nothing_to_the_work_folder(user: User) -> None:
    """score.scale-applied: a failure's case lands in $ATTNSPEC_CACHE, nothing in the folder."""
    run = user.run("check", "kernels:ignores_scale", *EXAMPLES, "--clause", "score.scale-applied")
    assert run.status == 1
    saved = user.cache / "counterexamples" / "kernels_ignores_scale" / "score.scale-applied.npz"
    assert saved.is_file()
    assert f"--replay {saved}" in run.out
    assert user.written() == set()


def test_hypothesis_files_go_to_the_cache(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A run points Hypothesis' storage (its database, its constants) into the cache folder."""
    from hypothesis.configuration import storage_directory

    argv = ["check", "attnref.torch", "--max-examples", "1", "--clause", "input.not-mutated"]
    assert run_main(capsys, *argv)[0] == 0
    where = storage_directory("examples", intent_to_write=False).path
    assert where == tmp_path / "in-process-cache" / "hypothesis" / "examples"


def test_save_dir_option_overrides_the_cache(user: User) -> None:
    """--save-dir puts the counterexamples where asked."""
    run = user.run(
        "check", "kernels:ignores_scale", *EXAMPLES, "--clause", "score.scale-applied",
        "--save-dir", "here",
    )  # fmt: skip
    assert run.status == 1
    assert (user.home / "here" / "kernels_ignores_scale" / "score.scale-applied.npz").is_file()


# --- in-process: usage errors that need no subprocess --------------------------------------------


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_names_every_builtin_target(capsys: pytest.CaptureFixture[str]) -> None:
    """``--list`` prints the built-in targets and exits 0."""
    status, out, _ = run_main(capsys, "check", "--list")
    assert status == 0
    for name in ("attnref.torch", "torch.sdpa", "torch.mha", "jax.nn.dot_product_attention"):
        assert name in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "no-such-target"], "target must be a built-in name"),
        (["check", "no_such_module:fn"], "cannot import 'no_such_module'"),
        (["check", "attnref.torch", "--max-examples", "0"], "--max-examples must be at least 1"),
        (["check", "attnref.torch", "--clause", "no.such-clause"], "is not a clause ID"),
        (["check", "attnref.torch", "--replay", "missing.npz"], "needs one TARGET and exactly one"),
        (
            ["check", "attnref.torch", "--clause", "sdpa.formula", "--replay", "missing.npz"],
            "is not a file",
        ),
        (
            ["check", "keras.Attention", "--clause", "sdpa.formula", "--replay", "SDPA_CASE"],
            "holds a case of scaled_dot_product_attention",
        ),
        (["check", "attnref.torch", "--declare", "colour=blue"], "--declare names a convention"),
        (["check", "attnref.torch", "--declare", "layout"], "--declare must be NAME=VALUE"),
        (
            ["check", "attnref.torch", "--declare", "fully_masked_row=maybe"],
            "--declare fully_masked_row must be one of",
        ),
        (
            ["check", "attnref.torch", "--layout", "BTHD", "--declare", "layout=BHTD"],
            "--layout BTHD contradicts --declare layout=BHTD",
        ),
        (["check", "attnref.torch", "--shape-limit", "q%8"], "--shape-limit must be NAME%N"),
        (["check", "attnref.torch", "--without", "wings"], "--features and --without name"),
        (["check", "attnref.torch", "--mask-kinds", "soft"], "--mask-kinds must list"),
        (["check", "keras.Attention", "--layout", "BTHD"], "--layout applies to scaled_dot"),
        (["check", "torch.mha", "--layout", "BTHD"], "builds its own inputs"),
        (["check", "jax.nn.dot_product_attention", "--device", "cuda"], "computes on the CPU"),
        (["check", "attnref.torch", "--vectors", "--dtype", "bfloat16"], "cannot judge a bfloat16"),
        (["check", "attnref.torch", "--vectors", "--full-size"], "pick one"),
        (["check", "attnref.torch", "--full-size", "0"], "--full-size LENGTH must be at least 1"),
        (["check", "keras.Attention", "--full-size", "8"], "--full-size checks scaled_dot"),
    ],
    ids=[
        "unknown target",
        "unimportable module",
        "zero examples",
        "unknown clause",
        "replay without clause",
        "replay of a missing file",
        "replay of another function",
        "declare an unknown convention",
        "declare without a value",
        "declare a value outside the domain",
        "layout contradicting declare",
        "bad shape limit",
        "unknown feature",
        "unknown mask kind",
        "layout of an attention layer",
        "layout of MultiheadAttention",
        "device of a JAX function",
        "vectors in bfloat16",
        "vectors and full size",
        "full size of zero",
        "full size of an attention layer",
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    """Usage errors exit 2 with one line saying what to fix, and nothing on stdout."""
    sdpa_case = tmp_path / "sdpa.npz"
    Case("scaled_dot_product_attention", {n: np.ones((1, 1, 2, 2)) for n in "qkv"}).save(
        str(sdpa_case)
    )
    argv = [str(sdpa_case) if a == "SDPA_CASE" else a for a in argv]
    status, out, err = run_main(capsys, *argv)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "error" not in out


def _ignores_scale(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> Any:
    """The twin with its scale argument dropped."""
    import attnref.torch as twin

    kwargs.pop("scale", None)
    return twin.scaled_dot_product_attention(q, k, v, **kwargs)


def test_vectors_honour_clause_say_seed_does_nothing_and_print_reproduce_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """score.scale-applied: --vectors keeps the clause asked for and prints its reproduce line."""
    import types

    made = types.ModuleType("vector_targets")
    made.fn = _ignores_scale  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vector_targets", made)
    argv = ["check", "vector_targets:fn", "--vectors", "--seed", "3"]
    status, out, _ = run_main(capsys, *argv, "--clause", "score.scale-applied")
    assert status == 1
    assert "note: --seed has no effect with --vectors" in out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith(("sdpa.", "score."))]
    assert rows == ["score.scale-applied"]
    assert "the golden vectors (fixed cases)" in out
    assert "up to 0 examples" not in out
    assert (
        "reproduce: attnspec check vector_targets:fn --clause score.scale-applied --vectors"
    ) in out
