"""``attnspec check``: the oracle on the command line.

``attnspec check`` checks every built-in target; ``attnspec check TARGET...``
the targets named, as in :mod:`attnref.oracle.targets` or as
``package.module:attr`` (the current directory is importable, as for
``python -m``). Options declare what a Python factory would (dtype, device,
layout, features, conventions, shapes; :class:`~attnref.oracle.targets.Declaration`).

Exit status: 0 when every target conforms (no required clause failed that is
not an expected failure), 1 when a required clause failed, 2 on a usage
error, an unusable target, device or factory included. With ``--json -`` the
JSON document is all that goes to standard output; everything else goes to
standard error.

Counterexamples and Hypothesis' files go to a cache folder (:func:`cache_dir`),
never into the working directory unless asked (``--save-dir``, ``--cache-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from attnref.oracle.examples import DEFAULT_EXAMPLES, QUICK_EXAMPLES
from attnspec.errors import ArgumentError

if TYPE_CHECKING:  # the oracle needs Hypothesis: import it only when checking
    from attnref.oracle.protocol import Implementation
    from attnref.oracle.report import ClauseResult, Report
    from attnref.oracle.targets import Declaration

__all__ = [
    "CACHE_VARIABLE",
    "add_check_parser",
    "cache_dir",
    "run_check",
    "use_cache",
]

CACHE_VARIABLE = "ATTNSPEC_CACHE"
"""The environment variable naming the cache folder (:func:`cache_dir`)."""

_FULL_LENGTH = 4096  # attnref.oracle.large.FULL_LENGTH, without importing the oracle for --help


def cache_dir() -> Path:
    """Where counterexamples and Hypothesis' files go unless told otherwise.

    ``$ATTNSPEC_CACHE`` if set; else ``$XDG_CACHE_HOME/attnspec``; else the
    platform's cache folder: ``~/.cache/attnspec`` (Linux and other POSIX),
    ``~/Library/Caches/attnspec`` (macOS), ``%LOCALAPPDATA%\\attnspec\\Cache``
    (Windows). Never the working directory: a check must not write into the
    repository it is run from.
    """
    if chosen := os.environ.get(CACHE_VARIABLE):
        return Path(chosen).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "attnspec"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "attnspec"
    if sys.platform == "win32" and (local := os.environ.get("LOCALAPPDATA")):
        return Path(local) / "attnspec" / "Cache"
    return Path.home() / ".cache" / "attnspec"


def use_cache(folder: Path, /) -> None:
    """Send Hypothesis' files (its example database, its constants) to ``folder/hypothesis``.

    Left alone when ``HYPOTHESIS_STORAGE_DIRECTORY`` is set: the user chose.
    """
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        return
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(folder / "hypothesis")


def _list(text: str) -> list[str]:
    """A comma-separated option value; ``none`` is the empty list."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [] if items == ["none"] else items


def add_check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``check`` subcommand to the ``attnspec`` parser."""
    epilog = """\
A plain callable (package.module:fn) offers what its signature names, and only
those keywords are passed to it:
  mask, attn_mask      boolean masks (attn_mask, as in PyTorch, also additive ones)
  scale                a scale override
  is_causal, causal    the causal flag (with a mask too: both at once)
  enable_gqa           grouped query heads
  softcap, window, query_offset, key_lengths
                       the spec's restrictions, by these names only
  sinks                per-head sink logits ([H] tensor; its gradient is checked)
  return_lse           called with return_lse=True, it returns (context, lse) or
                       (context, weights, lse): the log-sum-exp is checked too
  **kwargs             mask, scale, is_causal and enable_gqa, but no additive masks
Gradients come from autograd. One call on a tiny case shows whether it returns
the context or (context, weights); any other form is a usage error (exit 2).

Declare the rest on the command line, e.g.
  attnspec check mykernels:attn --dtype bfloat16 --device cuda --layout BTHD \\
      --mask-kinds bool,additive --declare fully_masked_row=nan --shape-limit d%8
or in a module (module:impl, or a zero-argument factory of it):
  impl = TorchSDPA(fn, dtype="float16", device="cuda",
                   features=frozenset({"bool_mask", "scale", "weights", "gradients"}),
                   conventions=Conventions.declare(fully_masked_row="nan"))
with TorchSDPA from attnref.oracle.adapters.torch and Conventions from attnref.oracle.

Exit status: 0 conforms, 1 a required clause failed, 2 a usage error.
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
        "targets",
        nargs="*",
        metavar="TARGET",
        help=(
            "a built-in target (see --list) or package.module:attr: an Implementation, a "
            "zero-argument factory of one, or a plain PyTorch callable "
            "fn(q, k, v, *, mask=None, scale=None)"
        ),
    )
    check.add_argument("--list", action="store_true", help="list the built-in targets and exit")
    run = check.add_argument_group("what is run")
    run.add_argument("--quick", action="store_true", help=f"{QUICK_EXAMPLES} examples per clause")
    run.add_argument("--max-examples", type=int, metavar="N", help="examples per clause")
    run.add_argument("--seed", type=int, help="seed of the drawn cases (default 0)")
    run.add_argument(
        "--clause", action="append", metavar="ID", help="check only this clause (repeatable)"
    )
    run.add_argument(
        "--vectors",
        action="store_true",
        help="judge the target on the golden vectors (exact answers) instead of drawn cases",
    )
    run.add_argument(
        "--full-size",
        nargs="?",
        type=int,
        const=_FULL_LENGTH,
        metavar="LENGTH",
        help=(
            f"judge one full-size case [1, 8, LENGTH, 128] (default LENGTH {_FULL_LENGTH}) per "
            "variant (plain, causal, masked) on sampled rows, with its time and memory"
        ),
    )
    run.add_argument(
        "--replay", metavar="NPZ", help="re-judge one saved counterexample (needs one --clause)"
    )
    run.add_argument(
        "--expected-failures",
        metavar="FILE",
        help="JSON file {clause: reason} of clauses expected to fail (reported as xfail)",
    )
    declare = check.add_argument_group(
        "what the target is", "what a Python factory would declare; the target's own otherwise"
    )
    declare.add_argument(
        "--dtype",
        choices=("float64", "float32", "float16", "bfloat16"),
        help="the dtype it computes in (a plain callable: float64)",
    )
    declare.add_argument(
        "--device", metavar="DEVICE", help="where it computes: cpu, cuda, cuda:1, mps..."
    )
    declare.add_argument(
        "--layout",
        choices=("BHTD", "BTHD"),
        help="axis order of query, key, value: [B, H, T, d] (PyTorch) or [B, T, H, d] (JAX)",
    )
    declare.add_argument(
        "--declare",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "a convention (repeatable): fully_masked_row=zero|uniform|nan|raises|unsupported, "
            "causal_alignment=top_left|bottom_right, mask_polarity=attend|ignore, "
            "layout=BHTD|BTHD, accumulation=float64|float32|float16|bfloat16"
        ),
    )
    declare.add_argument(
        "--features",
        type=_list,
        metavar="LIST",
        help="exactly these features, comma-separated (see the docs' feature table)",
    )
    declare.add_argument(
        "--without", type=_list, default=[], metavar="LIST", help="features it does not offer"
    )
    declare.add_argument(
        "--no-gradients",
        action="store_true",
        help="it has no backward pass: do not check gradients",
    )
    declare.add_argument(
        "--mask-kinds",
        type=_list,
        metavar="LIST",
        help="the masks it takes: bool, additive, key-padding, or none",
    )
    declare.add_argument(
        "--shape-limit",
        action="append",
        default=[],
        metavar="LIMIT",
        help="a shape it needs (repeatable): d%%8 (a multiple of 8), Tk<=4096, d>=16...",
    )
    output = check.add_argument_group("where results go")
    output.add_argument(
        "--json", metavar="PATH", help="write the report as JSON to PATH ('-': standard output)"
    )
    output.add_argument(
        "--json-schema", action="store_true", help="print the JSON Schema of --json and exit"
    )
    output.add_argument(
        "--cache-dir",
        metavar="DIR",
        help=f"the cache folder (default ${CACHE_VARIABLE}, else the platform's cache)",
    )
    output.add_argument(
        "--save-dir",
        metavar="DIR",
        help="where shrunk counterexamples are saved (default: DIR/counterexamples of the cache)",
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


def _declaration(args: argparse.Namespace) -> Declaration:
    from attnref.oracle.conventions import parse_declarations
    from attnref.oracle.targets import Declaration, ShapeLimit

    conventions = parse_declarations(args.declare)
    if args.layout is not None:
        if conventions.get("layout", args.layout) != args.layout:
            raise ArgumentError(
                f"--layout {args.layout} contradicts --declare layout={conventions['layout']}"
            )
        conventions["layout"] = args.layout
    without = set(args.without) | ({"gradients"} if args.no_gradients else set())
    return Declaration(
        dtype=args.dtype,
        device=args.device,
        conventions=conventions,
        features=None if args.features is None else frozenset(args.features),
        without=frozenset(without),  # type: ignore[arg-type]
        mask_kinds=None if args.mask_kinds is None else frozenset(args.mask_kinds),
        shape_limits=tuple(ShapeLimit.parse(text) for text in args.shape_limit),
    )


def _progress(out: TextIO) -> Callable[[ClauseResult], None]:
    def show(result: ClauseResult) -> None:
        # A finding (a failed recommended clause) does not fail the run: a lower-case mark.
        status = "finding" if result.finding else result.status
        mark = {"passed": ".", "failed": "F", "skipped": "s", "xfail": "x", "finding": "f"}[status]
        print(mark, end="", file=out, flush=True)

    return show


def _importable_here() -> None:
    """Make the working directory importable, as ``python -m`` does."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "default"


class _Session:
    """One ``attnspec check`` run: its options, and how it names what it finds."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.declared = _declaration(args)
        self.extra_expected = _expected_failures(args.expected_failures)
        self.clauses = frozenset(args.clause) if args.clause else None
        self.cache = Path(args.cache_dir).expanduser() if args.cache_dir else cache_dir()
        base = Path(args.save_dir) if args.save_dir else self.cache / "counterexamples"
        # One folder per declaration, so that checking a kernel in float32 and in
        # bfloat16 keeps the counterexamples of both.
        arguments = self.declared.arguments()
        named = "_".join(a.removeprefix("--") for a in arguments)
        self.save_dir = base / _slug(named) if arguments else base
        self.seed = 0 if args.seed is None else int(args.seed)

    def options(self) -> list[str]:
        """The options a reproduce command must repeat to rebuild the same implementation."""
        extra = []
        if self.args.expected_failures is not None:
            extra = ["--expected-failures", str(Path(self.args.expected_failures).resolve())]
        return [*self.declared.arguments(), *extra]

    def reproduce(self, target: str, result: ClauseResult, mode: str) -> str | None:
        """The command that re-runs exactly this failure."""
        if result.status not in ("failed", "xfail"):
            return None
        base = ["attnspec", "check", target, "--clause", result.clause]
        if mode == "vectors":
            return shlex.join([*base, "--vectors", *self.options()])
        if mode == "full-size":
            length = str(self.args.full_size)
            seed = ["--seed", str(self.seed)] if self.seed else []
            return shlex.join([*base, "--full-size", length, *seed, *self.options()])
        if result.counterexample is None:
            return None
        return shlex.join([*base, "--replay", result.counterexample, *self.options()])

    def finish(self, report: Report, impl: Implementation) -> Report:
        """The report with this run's reproduce commands and the declared shapes."""
        results = tuple(
            replace(r, reproduce=self.reproduce(report.target, r, report.mode))
            for r in report.results
        )
        conventions = report.conventions
        describe = getattr(impl, "describe", None)
        if callable(describe):
            conventions = f"{conventions}; {describe()}"
        return replace(report, results=results, conventions=conventions)


def run_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``attnspec check`` with parsed arguments; returns the exit status."""
    if args.json_schema:
        from attnref.oracle.report import REPORT_SCHEMA

        print(json.dumps(REPORT_SCHEMA, indent=2), file=out)
        return 0
    # With the JSON on standard output, everything for people goes to standard error.
    human = err if args.json == "-" else out
    try:
        return _run(args, out, human)
    except ArgumentError as error:
        print(f"attnspec check: error: {error}", file=err)
        return 2


def _run(args: argparse.Namespace, out: TextIO, human: TextIO) -> int:
    from attnref.oracle.targets import TARGETS, check_device, resolve

    if args.list:
        for target in TARGETS.values():
            absent = target.missing()
            note = f"  (needs {', '.join(absent)})" if absent else ""
            print(f"{target.name:<30} {target.description}{note}", file=human)
        return 0
    _importable_here()
    examples = _examples(args)
    session = _Session(args)
    if args.vectors and args.full_size is not None:
        raise ArgumentError("--vectors and --full-size are two ways to choose cases; pick one")
    if args.full_size is not None and args.full_size < 1:
        raise ArgumentError(f"--full-size LENGTH must be at least 1; got {args.full_size}")
    if args.vectors and args.seed is not None:
        print("attnspec check: note: --seed has no effect with --vectors (fixed cases)", file=human)
    if args.replay is not None:
        return _replay(args, session, out, human)
    names = list(args.targets) or list(TARGETS)
    chosen: list[tuple[str, Implementation, dict[str, str]]] = []
    for name in names:  # every target is resolved before any runs: usage errors come first
        if not args.targets and TARGETS[name].missing():
            print(f"{name}: skipped, needs {', '.join(TARGETS[name].missing())}", file=human)
            continue
        impl, expected = resolve(name, declared=session.declared)
        check_device(impl)
        if args.vectors:
            from attnref.oracle.vector_check import require_rules

            require_rules(impl)
        if args.full_size is not None and impl.function != "scaled_dot_product_attention":
            raise ArgumentError(
                f"--full-size checks scaled_dot_product_attention; {name!r} implements "
                f"{impl.function}"
            )
        chosen.append((name, impl, {**expected, **session.extra_expected}))
    use_cache(session.cache)
    reports = []
    for name, impl, expected in chosen:
        try:
            report = _check_one(name, impl, expected, examples, session, human)
        except ArgumentError as error:
            if args.targets:
                raise
            # Checking every built-in target: one that these cases cannot judge is noted.
            print(f"skipped: {error}", file=human)
            continue
        drawn = not (args.vectors or args.full_size is not None)
        print(("\n" if drawn else "") + report.table() + "\n", file=human)
        reports.append(report)
    if len(reports) > 1:
        from attnref.oracle.report import summary_table

        print(summary_table(reports), file=human)
    status = 0 if all(r.passed for r in reports) else 1
    if args.json is not None:
        _write_json(args.json, reports, status, out)
    return status


def _check_one(
    name: str,
    impl: Implementation,
    expected: dict[str, str],
    examples: int,
    session: _Session,
    human: TextIO,
) -> Report:
    from attnref.oracle.targets import TARGETS

    args = session.args
    if args.vectors:
        from attnref.oracle.vector_check import check_vectors

        report = check_vectors(
            impl,
            expected_failures=expected,
            target=name,
            clauses_to_check=session.clauses,
            departure_cases=TARGETS[name].departure_cases if name in TARGETS else None,
        )
    elif args.full_size is not None:
        from attnref.oracle.large import check_full_size

        report = check_full_size(
            impl,
            length=args.full_size,
            seed=session.seed,
            clauses_to_check=session.clauses,
            target=name,
        )
    else:
        from attnref.oracle.run import check_implementation

        print(f"{name}: ", end="", file=human, flush=True)  # a mark per clause follows
        report = check_implementation(
            impl,
            max_examples=examples,
            seed=session.seed,
            clauses_to_check=session.clauses,
            expected_failures=expected,
            save_dir=session.save_dir,
            target=name,
            progress=_progress(human),
            departure_cases=TARGETS[name].departure_cases if name in TARGETS else None,
        )
        report = _examine(report, impl, name, examples, session.seed)
    return session.finish(report, impl)


def _alternatives(result: ClauseResult, impl: Implementation) -> list[tuple[str, str, str]]:
    """``(name, value, clause)``: conventions that could explain a failure, and the clause
    that the same check enforces once the convention is declared."""
    c = impl.conventions
    clause = result.clause
    found: list[tuple[str, str, str]] = []
    if clause == "distribution.fully-masked-row":
        found += [
            ("fully_masked_row", v, clause)
            for v in ("nan", "uniform", "raises")
            if v != c.fully_masked_row
        ]
    elif clause in ("sdpa.causal-top-left", "sdpa.causal-bottom-right"):
        other = "bottom_right" if c.causal_alignment == "top_left" else "top_left"
        found.append(("causal_alignment", other, f"sdpa.causal-{other.replace('_', '-')}"))
    elif clause == "distribution.mask-polarity":
        found.append(
            ("mask_polarity", "ignore" if c.mask_polarity == "attend" else "attend", clause)
        )
    elif clause == "sdpa.formula":
        found.append(("layout", "BTHD" if c.layout == "BHTD" else "BHTD", clause))
    symptom = result.symptom
    if symptom is not None and symptom.kind in ("error", "other"):
        if impl.dtype == "float64":  # does it compute in float32?
            found.append(("dtype", "float32", clause))
        if impl.dtype in ("float16", "bfloat16") and c.accumulation is None:
            found.append(("accumulation", impl.dtype, clause))
    return found


def _explained(convention: str, value: str) -> str:
    """The hint for a failure that passes once ``convention=value`` is declared."""
    if convention == "dtype":
        return (
            f"checked as a {value} kernel (--dtype {value}) it passes: it computes in "
            f"{value}, where a float64 kernel must compute in float64"
        )
    option = f"--layout {value}" if convention == "layout" else f"--declare {convention}={value}"
    return (
        f"with {convention}={value} declared it passes: if that is its documented "
        f"behaviour, declare it ({option})"
    )


def _examine(report: Report, impl: Implementation, name: str, examples: int, seed: int) -> Report:
    """Each required failure, checked again under each convention that could explain it.

    A convention (or, for float64, computing in float32) becomes the failure's
    hint only when its counterexample passes with it declared *and* a whole
    clause then passes on freshly drawn cases (one tiny case can pass by
    accident); once one clause confirmed it, the replays of the others
    suffice. ``""`` when nothing explains the failure.
    """
    from attnref.oracle.checks import checks_for
    from attnref.oracle.run import check_clause, replay
    from attnref.oracle.targets import Declaration

    results = []
    confirmed: set[tuple[str, str]] = set()
    for r in report.results:
        if r.status != "failed" or r.finding or r.counterexample is None:
            results.append(r)
            continue
        hint = ""
        for convention, value, clause in _alternatives(r, impl):
            if convention == "dtype":
                declaration = Declaration(dtype=value)
            else:
                declaration = Declaration(conventions={convention: value})
            try:
                other = declaration.apply(impl, spec=name)
                if replay(other, clause, r.counterexample).status != "passed":
                    continue
            except ArgumentError:
                continue  # the implementation cannot declare it (its adapter builds its inputs)
            if (convention, value) not in confirmed:
                check = next(c for c, resolved in checks_for(other) if resolved == clause)
                again = check_clause(check, clause, other, max_examples=examples, seed_value=seed)
                if again.status != "passed":
                    continue
                # one clause passing on fresh cases confirms it; the others' replays suffice
                confirmed.add((convention, value))
            hint = _explained(convention, value)
            break
        results.append(replace(r, hint=hint))
    return replace(report, results=tuple(results))


def _replay(args: argparse.Namespace, session: _Session, out: TextIO, human: TextIO) -> int:
    if len(args.targets) != 1 or not args.clause or len(args.clause) != 1:
        raise ArgumentError("--replay needs one TARGET and exactly one --clause")
    from attnref.oracle.report import Report
    from attnref.oracle.run import replay
    from attnref.oracle.targets import check_device, resolve

    if not Path(args.replay).is_file():
        raise ArgumentError(f"--replay {args.replay!r} is not a file")
    (target,) = args.targets
    impl, expected = resolve(target, declared=session.declared)
    check_device(impl)
    expected = {**expected, **session.extra_expected}
    clause = args.clause[0]
    use_cache(session.cache)
    result = replay(impl, clause, args.replay)
    reason = expected.get(clause)
    if result.status == "failed" and reason is not None:
        result = replace(result, status="xfail", message=f"{result.message} (expected: {reason})")
    elif result.status == "passed" and reason is not None:
        result = replace(
            result,
            message=f"{result.message}; expected to fail ({reason}), but not on this case",
        )
    note = ""
    if result.finding:
        note = " (a recommended clause: a finding, not a bar to conformance)"
    print(f"{result.clause}: {result.status}: {result.message}{note}", file=human)
    status = 1 if result.status == "failed" and not result.finding else 0
    if args.json is not None:
        report = Report.of(
            impl,
            target=target,
            seed=session.seed,
            max_examples=1,
            results=(replace(result, counterexample=str(args.replay)),),
        )
        _write_json(args.json, [report], status, out)
    return status


def _write_json(path: str, reports: Sequence[Report], status: int, out: TextIO) -> None:
    from attnref.oracle.report import document

    payload: dict[str, Any] = document(reports, exit_status=status)
    text = json.dumps(payload, indent=2, allow_nan=False)
    if path == "-":
        print(text, file=out)
    else:
        Path(path).write_text(text + "\n", encoding="utf-8")
