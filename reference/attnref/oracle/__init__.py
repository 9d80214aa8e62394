"""attnref.oracle: check any attention implementation against the spec.

>>> from attnref.oracle import check_implementation  # doctest: +SKIP
>>> report = check_implementation(my_adapter)  # doctest: +SKIP
>>> print(report.table())  # doctest: +SKIP

An implementation is presented through the
:class:`~attnref.oracle.protocol.Implementation` protocol, usually by an
adapter of :mod:`attnref.oracle.adapters`; it declares its
:class:`~attnref.oracle.conventions.Conventions` and the features it offers,
and :func:`check_implementation` runs every check that applies, each citing
the clause it enforces, with the tolerance model of
:mod:`attnref.oracle.tolerance`.
"""

from __future__ import annotations

from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.protocol import Case, Implementation, Output, ScoreForm
from attnref.oracle.report import ClauseResult, Report
from attnref.oracle.run import check_implementation, replay

__all__ = [
    "Case",
    "ClauseResult",
    "Conventions",
    "Feature",
    "Implementation",
    "Output",
    "Report",
    "ScoreForm",
    "check_implementation",
    "replay",
]
