"""The ``attnspec`` command.

``attnspec check [TARGET]``
    The main job: the conformance oracle (:mod:`attnref.oracle.command`).
    Without a TARGET it checks every built-in implementation; this is what
    ``attnspec`` without a subcommand runs.
``attnspec demo``
    Walks through the attention steps of the tutorial on a toy sentence pair
    with :mod:`attnref` and prints each intermediate: scores, distribution,
    attention value, concatenation, attentional hidden state and output
    distribution; then checks that the PyTorch twin :mod:`attnref.torch`
    computes the same.
``attnspec gradient-flow``
    For each source length ``N``, the norm of the gradient of one decoder
    output with respect to the most distant source word, with and without
    attention (:func:`attnref.demo.gradient_flow.gradient_flow`), as a table or JSON.

Exit status: 0 on success, 1 when a check fails (a clause of the oracle,
or the twin or autograd disagreeing), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from attnref.demo.command import add_demo_parsers, run_demo, run_gradient_flow
from attnref.oracle.command import add_check_parser, run_check

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnspec",
        description="The attention mechanism, executed step by step from its specification.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_check_parser(commands)
    add_demo_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``attnspec`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    >>> main(["gradient-flow", "--lengths", "0"])  # doctest: +SKIP
    2
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        # argparse has printed the usage and the message to stderr.
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command == "gradient-flow":
        return run_gradient_flow(args, sys.stdout, sys.stderr)
    if args.command == "demo":
        return run_demo(sys.stdout, sys.stderr)
    if args.command is None:
        args = parser.parse_args(["check"])
    return run_check(args, sys.stdout, sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
