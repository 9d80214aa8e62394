"""Benchmark of the oracle: how long a check takes, and what a full-size check costs.

Run ``python -m attnref.oracle.bench`` (or ``nox -s bench``). It prints, for
each target asked for, the wall time of a default run and of a ``--quick``
run, then the time and peak memory of a full-size float64 check
(``Tq = Tk = 4096``, ``d = 128``, ``B·H = 8``) of the first target. Figures
come from this run on this machine: timing belongs here, not in tests.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Sequence

from attnref.oracle.examples import DEFAULT_EXAMPLES, QUICK_EXAMPLES
from attnref.oracle.large import check_large
from attnref.oracle.run import check_implementation
from attnref.oracle.targets import TARGETS, resolve

__all__ = ["main"]


def _peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: Sequence[str] | None = None) -> int:
    """Print the benchmark table; returns 0, or 1 if a target failed a check."""
    parser = argparse.ArgumentParser(prog="python -m attnref.oracle.bench")
    parser.add_argument("targets", nargs="*", default=["attnref.torch", "torch.sdpa"])
    parser.add_argument("--length", type=int, default=4096, help="Tq = Tk of the full-size check")
    parser.add_argument("--heads", type=int, default=8, help="B*H of the full-size check")
    parser.add_argument("--d", type=int, default=128, help="feature size of the full-size check")
    parser.add_argument("--no-large", action="store_true", help="skip the full-size check")
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="also print the smallest planted scale and gradient error caught per dtype",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("KERAS_BACKEND", "torch")
    failed = False
    print(f"{'target':<30} {'mode':<8} {'examples':>8} {'clauses':>7} {'seconds':>8}  verdict")
    for name in args.targets:
        if name not in TARGETS or TARGETS[name].missing():
            print(f"{name:<30} skipped (unknown or not installed)")
            continue
        for mode, examples in (("default", DEFAULT_EXAMPLES), ("quick", QUICK_EXAMPLES)):
            impl, expected = resolve(name)
            start = time.perf_counter()
            report = check_implementation(
                impl,
                max_examples=examples,
                expected_failures=expected,
                departure_cases=TARGETS[name].departure_cases,
            )
            seconds = time.perf_counter() - start
            verdict = "conforms" if report.passed else "DOES NOT CONFORM"
            failed = failed or not report.passed
            print(
                f"{name:<30} {mode:<8} {examples:>8} {len(report.results):>7} "
                f"{seconds:>8.1f}  {verdict}"
            )
    if not args.no_large and args.targets:
        impl, _ = resolve(args.targets[0])
        before = _peak_mib()
        result, cost = check_large(impl, heads=args.heads, length=args.length, d=args.d)
        print()
        print(
            f"full-size check of {args.targets[0]} ({impl.dtype}), shape "
            f"{list(cost.shape)}, {cost.rows_judged} rows judged in extended precision:"
        )
        timing = f"{cost.implementation_seconds:.1f} s, judging {cost.judging_seconds:.1f} s"
        print(f"  implementation {timing}")
        print(f"  peak resident memory {_peak_mib():.0f} MiB (before: {before:.0f} MiB)")
        print(f"  {result.clause}: {result.status} ({result.message})")
        failed = failed or result.status != "passed"
    if args.sensitivity:
        print()
        _print_sensitivity()
    return 1 if failed else 0


def _print_sensitivity() -> None:
    from attnref.oracle.sensitivity import sensitivity

    print("smallest planted relative error caught (sound float32-accumulating kernel):")
    print(f"{'dtype':<9} {'planted in':<10} {'caught':>9} {'missed':>9}  judged by")
    for row in sensitivity(examples=DEFAULT_EXAMPLES):
        caught = "-" if row.smallest_caught is None else f"{row.smallest_caught:.1e}"
        missed = "-" if row.largest_missed is None else f"{row.largest_missed:.1e}"
        print(f"{row.dtype:<9} {row.kind:<10} {caught:>9} {missed:>9}  {row.clauses}")


if __name__ == "__main__":
    raise SystemExit(main())
