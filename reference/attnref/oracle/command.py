"""``attnspec check``: the oracle on the command line.

``attnspec check`` checks every built-in target; ``attnspec check TARGET``
one target, named as in :mod:`attnref.oracle.targets` or as
``package.module:attr``. Exit status: 0 when every clause that is not an
expected failure passes, 1 on a conformance failure, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from attnspec.errors import ArgumentError

if TYPE_CHECKING:  # the oracle needs Hypothesis: import it only when checking
    from attnref.oracle.report import ClauseResult, Report

__all__ = ["QUICK_EXAMPLES", "add_check_parser", "run_check"]

DEFAULT_EXAMPLES = 60
"""Hypothesis examples per clause in a default run (about 10 s per PyTorch target here)."""

QUICK_EXAMPLES = 8
"""Examples per clause with ``--quick``: a smoke test of every clause in seconds."""


def add_check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``check`` subcommand to the ``attnspec`` parser."""
    epilog = """\
A plain callable (package.module:fn) is checked in float64 on the CPU with the
spec's conventions, and offers what its signature names; only those keywords
are passed to it:
  mask, attn_mask      boolean masks (attn_mask, as in PyTorch, also additive ones)
  scale                a scale override
  is_causal, causal    the causal flag (with a mask too: both at once)
  enable_gqa           grouped query heads
  **kwargs             all of the above by these names, but no additive masks
Gradients come from autograd. One call on a tiny case shows whether it returns
the context or (context, weights); any other form is a usage error (exit 2).

To declare the rest (dtype, device, features, conventions), build it in your
module and pass module:impl, or a zero-argument factory of it:
  impl = TorchSDPA(fn, dtype="float16", device="cuda",
                   features=frozenset({"bool_mask", "scale", "weights", "gradients"}),
                   conventions=Conventions.declare(fully_masked_row="nan"))
with TorchSDPA from attnref.oracle.adapters.torch and Conventions from attnref.oracle.
"""
    check = commands.add_parser(
        "check",
        help="check attention implementations against the spec (the main job)",
        description=(
            "Check an attention implementation against every clause of the spec that applies\n"
            "to it, forward and backward, in its dtype. With no TARGET, check every built-in\n"
            "target."
        ),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "target",
        nargs="?",
        help=(
            "a built-in target (see --list) or package.module:attr: an Implementation, a "
            "zero-argument factory of one, or a plain PyTorch callable "
            "fn(q, k, v, *, mask=None, scale=None)"
        ),
    )
    check.add_argument("--list", action="store_true", help="list the built-in targets and exit")
    check.add_argument("--quick", action="store_true", help=f"{QUICK_EXAMPLES} examples per clause")
    check.add_argument("--max-examples", type=int, metavar="N", help="examples per clause")
    check.add_argument("--seed", type=int, default=0, help="seed of the examples (default 0)")
    check.add_argument(
        "--clause", action="append", metavar="ID", help="check only this clause (repeatable)"
    )
    check.add_argument("--json", metavar="PATH", help="write the report(s) as JSON to PATH")
    check.add_argument(
        "--expected-failures",
        metavar="FILE",
        help="JSON file {clause: reason} of clauses expected to fail (reported as xfail)",
    )
    check.add_argument(
        "--save-dir",
        metavar="DIR",
        default="attnspec-counterexamples",
        help="where shrunk counterexamples are saved (default ./attnspec-counterexamples)",
    )
    check.add_argument(
        "--replay", metavar="NPZ", help="re-judge one saved counterexample (needs one --clause)"
    )
    check.add_argument(
        "--vectors",
        action="store_true",
        help="judge the target on the golden vectors (exact answers) instead of drawn cases",
    )


def _examples(args: argparse.Namespace) -> int:
    if args.max_examples is not None:
        if args.max_examples < 1:
            raise ArgumentError(f"--max-examples must be at least 1; got {args.max_examples}")
        return int(args.max_examples)
    return QUICK_EXAMPLES if args.quick else DEFAULT_EXAMPLES


def _expected_failures(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ArgumentError(
            f"--expected-failures {path!r} is not a readable JSON file: {error}"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ArgumentError(
            f"--expected-failures {path!r} must hold a JSON object {{clause: reason}}"
        )
    return data


def _progress(out: TextIO) -> object:
    def show(result: ClauseResult) -> None:
        # A finding (a failed recommended clause) does not fail the run: a lower-case mark.
        status = "finding" if result.finding else result.status
        mark = {"passed": ".", "failed": "F", "skipped": "s", "xfail": "x", "finding": "f"}[status]
        print(mark, end="", file=out, flush=True)

    return show


def run_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``attnspec check`` with parsed arguments; returns the exit status."""
    from attnref.oracle.run import check_implementation
    from attnref.oracle.targets import TARGETS, resolve

    if args.list:
        for target in TARGETS.values():
            absent = target.missing()
            note = f"  (needs {', '.join(absent)})" if absent else ""
            print(f"{target.name:<30} {target.description}{note}", file=out)
        return 0
    try:
        examples = _examples(args)
        extra_expected = _expected_failures(args.expected_failures)
        clauses = frozenset(args.clause) if args.clause else None
        if args.replay is not None:
            return _replay(args, out)
        names = [args.target] if args.target else list(TARGETS)
        reports = []
        for name in names:
            if not args.target and TARGETS[name].missing():
                print(f"{name}: skipped, needs {', '.join(TARGETS[name].missing())}", file=out)
                continue
            impl, expected = resolve(name)
            print(f"{name}: ", end="", file=out, flush=True)
            if args.vectors:
                from attnref.oracle.vector_check import check_vectors

                report = check_vectors(
                    impl, expected_failures={**expected, **extra_expected}, target=name
                )
                print("\n" + report.table() + "\n", file=out)
                reports.append(report)
                continue
            report = check_implementation(
                impl,
                max_examples=examples,
                seed=args.seed,
                clauses_to_check=clauses,
                expected_failures={**expected, **extra_expected},
                save_dir=args.save_dir,
                target=name,
                progress=_progress(out),  # type: ignore[arg-type]
                departure_cases=TARGETS[name].departure_cases if name in TARGETS else None,
            )
            print("\n" + report.table() + "\n", file=out)
            reports.append(report)
    except ArgumentError as error:
        print(f"attnspec check: error: {error}", file=err)
        return 2
    if args.json is not None:
        _write_json(args.json, reports)
    return 0 if all(r.passed for r in reports) else 1


def _replay(args: argparse.Namespace, out: TextIO) -> int:
    if not args.target or not args.clause or len(args.clause) != 1:
        raise ArgumentError("--replay needs a TARGET and exactly one --clause")
    from attnref.oracle.run import replay
    from attnref.oracle.targets import resolve

    if not Path(args.replay).is_file():
        raise ArgumentError(f"--replay {args.replay!r} is not a file")
    impl, _ = resolve(args.target)
    result = replay(impl, args.clause[0], args.replay)
    print(f"{result.clause}: {result.status}: {result.message}", file=out)
    return 0 if result.status == "passed" else 1


def _write_json(path: str, reports: list[Report]) -> None:
    text = json.dumps([r.to_dict() for r in reports], indent=2)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n", encoding="utf-8")
