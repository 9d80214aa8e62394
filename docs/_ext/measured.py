"""Sphinx extension: what ``attnspec check`` prints, measured when the docs are built.

A page that shows the oracle's output shows this build's, so it cannot go
stale: the runs happen in-process, on this machine's CPU, with few examples,
in a few seconds in all.

``.. attnspec-run:: ARGUMENTS``
    Runs ``attnspec ARGUMENTS`` from ``docs/oracle/kernels`` (the kernel
    author's folder, so ``mykernels:attn`` imports as it would for them) and
    shows the command, what it printed and its exit status. ``:lines: N``
    keeps the first N lines of the output; ``:grep: TEXT`` keeps the lines
    that contain TEXT (repeat with ``|``).
``.. attnspec-verdicts:: TARGET``
    Checks TARGET in each dtype (``:examples: N`` per clause, 3 by default)
    and tables the verdict, the counts and the clauses that did not pass.
``.. attnspec-sizes::``
    Draws the cases of ``sdpa.formula`` for the twin and tables the range of
    each size, short and long cases apart: the shapes the oracle tries.
``.. attnspec-schema::``
    The JSON Schema of ``attnspec check --json``
    (:data:`attnref.oracle.report.REPORT_SCHEMA`), as a code block.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from docutils.nodes import Node
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

KERNELS = Path(__file__).resolve().parents[1] / "oracle" / "kernels"
"""The folder the runs start in: the page's example module lives there."""

SHOWN_CACHE = "~/.cache/attnspec"
"""How the output shows the cache folder (the runs use a temporary one)."""


@dataclass(frozen=True)
class Run:
    """One measured run of the ``attnspec`` command."""

    argv: tuple[str, ...]
    status: int
    output: str
    stdout: str


_RUNS: dict[tuple[str, ...], Run] = {}
"""Each run once per build process, whichever pages show it."""


@contextlib.contextmanager
def _in_kernels_folder(cache: str) -> Iterator[None]:
    before, saved = os.getcwd(), os.environ.get("ATTNSPEC_CACHE")
    os.chdir(KERNELS)
    os.environ["ATTNSPEC_CACHE"] = cache
    try:
        yield
    finally:
        os.chdir(before)
        if saved is None:
            os.environ.pop("ATTNSPEC_CACHE", None)
        else:
            os.environ["ATTNSPEC_CACHE"] = saved


def run(argv: tuple[str, ...]) -> Run:
    """``attnspec ARGV`` run in-process from :data:`KERNELS`, its output as a user sees it."""
    if argv in _RUNS:
        return _RUNS[argv]
    from hypothesis.configuration import set_hypothesis_home_dir

    from attnref.cli import main

    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory() as cache:
        with (
            _in_kernels_folder(cache),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # a library's advice is not the oracle's output
            status = main(list(argv))
        set_hypothesis_home_dir(None)  # the temporary folder is gone
        text = (out.getvalue() + err.getvalue()).replace(cache, SHOWN_CACHE)
    made = Run(argv, status, text.rstrip(), out.getvalue().replace(cache, SHOWN_CACHE))
    _RUNS[argv] = made
    return made


def _literal(text: str) -> str:
    return "\n".join(f"   {line}" if line else "" for line in text.splitlines())


class RunDirective(SphinxDirective):
    """``.. attnspec-run:: ARGUMENTS``: the command and what this build's run printed."""

    required_arguments = 1
    final_argument_whitespace = True
    option_spec: ClassVar[dict[str, Any]] = {
        "lines": directives.positive_int,
        "grep": directives.unchanged_required,
    }

    def run(self) -> list[Node]:
        argv = tuple(shlex.split(self.arguments[0]))
        made = run(argv)
        lines = made.output.splitlines()
        if "grep" in self.options:
            wanted = self.options["grep"].split("|")
            lines = [line for line in lines if any(w in line for w in wanted)]
        if "lines" in self.options:
            kept = int(self.options["lines"])
            lines = lines[:kept] + (["..."] if len(lines) > kept else [])
        shown = "\n".join([f"$ attnspec {shlex.join(argv)}", *lines, f"$ echo $?\n{made.status}"])
        return self.parse_text_to_nodes(".. code-block:: console\n\n" + _literal(shown))


DTYPES = ("float64", "float32", "float16", "bfloat16")


def _kind(result: dict[str, Any]) -> str:
    """``failed``, ``xfail`` or, for a failed recommended clause, ``finding``."""
    recommended = result["level"] == "recommended" and result["status"] == "failed"
    return "finding" if recommended else str(result["status"])


class VerdictsDirective(SphinxDirective):
    """``.. attnspec-verdicts:: TARGET``: its verdict in each dtype, measured now."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"examples": directives.positive_int}

    def run(self) -> list[Node]:
        import json

        target = self.arguments[0]
        examples = str(self.options.get("examples", 3))
        rows = [
            "   * - dtype",
            "     - verdict",
            "     - passed / failed / skipped / xfail / findings",
            "     - clauses that did not pass",
            "     - seconds",
        ]
        for dtype in DTYPES:
            argv = ("check", target, "--dtype", dtype, "--max-examples", examples, "--json", "-")
            data = json.loads(run(argv).stdout)
            (report,) = data["reports"]
            c = report["counts"]
            counts = " / ".join(str(c[k]) for k in ("passed", "failed", "skipped", "xfail"))
            odd = [
                f":clause:`{r['clause']}` ({_kind(r)})"
                for r in report["results"]
                if r["status"] in ("failed", "xfail")
            ]
            rows += [
                f"   * - {dtype}",
                f"     - {'CONFORMS' if report['passed'] else 'DOES NOT CONFORM'}",
                f"     - {counts} / {c['findings']}",
                f"     - {', '.join(odd) or 'none'}",
                f"     - {report['seconds']:.1f}",
            ]
        head = [".. list-table::", "   :header-rows: 1", "   :widths: 12 20 22 36 10", ""]
        return self.parse_text_to_nodes("\n".join(head + rows))


class SizesDirective(SphinxDirective):
    """``.. attnspec-sizes::``: the range of each size the oracle draws, measured now."""

    option_spec: ClassVar[dict[str, Any]] = {"examples": directives.positive_int}

    def run(self) -> list[Node]:
        from hypothesis import HealthCheck, given, settings

        from attnref.oracle.cases import Draw, cases
        from attnref.oracle.protocol import Case
        from attnref.oracle.targets import resolve

        impl, _ = resolve("attnref.torch")
        drawn: list[Case] = []

        @settings(
            max_examples=int(self.options.get("examples", 400)),
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            deadline=None,
        )
        @given(cases(impl, Draw(values=("normal",))))
        def draw(case: Case) -> None:
            drawn.append(case)

        draw()
        sizes = {
            "B (batch)": [c.query.shape[0] for c in drawn],
            "H (query heads)": [c.query.shape[1] for c in drawn],
            "Tq (query length)": [c.query.shape[-2] for c in drawn],
            "Tk (key length)": [c.key.shape[-2] for c in drawn],
            "d (query and key features)": [c.query.shape[-1] for c in drawn],
            "d_v (value features)": [c.value.shape[-1] for c in drawn],
        }
        long = [c.key.shape[-2] > 9 for c in drawn]
        rows = ["   * - size", "     - short cases", "     - long cases"]
        for name, values in sizes.items():
            short = [v for v, is_long in zip(values, long, strict=True) if not is_long]
            longs = [v for v, is_long in zip(values, long, strict=True) if is_long]
            rows += [
                f"   * - {name}",
                f"     - {min(short)} to {max(short)}" if short else "     - none",
                f"     - {min(longs)} to {max(longs)}" if longs else "     - none",
            ]
        share = sum(long) / len(long)
        head = [".. list-table::", "   :header-rows: 1", "   :widths: 40 30 30", ""]
        note = (
            f"\n\nMeasured on {len(drawn)} cases drawn now; {share:.0%} of them are long "
            "(more than 9 keys)."
        )
        return self.parse_text_to_nodes("\n".join(head + rows) + note)


class SchemaDirective(SphinxDirective):
    """``.. attnspec-schema::``: the JSON Schema of the report, as the package holds it."""

    def run(self) -> list[Node]:
        import json

        from attnref.oracle.report import REPORT_SCHEMA

        text = json.dumps(REPORT_SCHEMA, indent=2)
        return self.parse_text_to_nodes(".. code-block:: json\n\n" + _literal(text))


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives."""
    app.add_directive("attnspec-run", RunDirective)
    app.add_directive("attnspec-verdicts", VerdictsDirective)
    app.add_directive("attnspec-sizes", SizesDirective)
    app.add_directive("attnspec-schema", SchemaDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
