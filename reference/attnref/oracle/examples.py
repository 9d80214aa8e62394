"""How many cases a run draws per clause: the one home of the example counts.

The counts trade verdict strength against time (``nox -s bench`` prints both
for every built-in target): the default run stays within 30 s and the quick
run within 8 s per CPU PyTorch target on a 2-core machine, and the planted
bugs of the test suite are all caught at the quick count.
"""

from __future__ import annotations

__all__ = ["DEFAULT_EXAMPLES", "QUICK_EXAMPLES"]

DEFAULT_EXAMPLES = 60
"""Hypothesis examples per clause in a default run (``attnspec check``, the pytest plugin,
:func:`attnref.oracle.check_implementation`)."""

QUICK_EXAMPLES = 8
"""Examples per clause with ``--quick``: a smoke test of every clause in seconds."""
