"""Hypothesis profiles for the whole suite.

``dev``
    The default on a workstation: randomised, a modest number of examples, a
    generous deadline so that a cold first call does not flake.
``ci``
    Chosen automatically when ``CI`` is set: derandomised (every run draws the
    same examples, so a red build reproduces), no deadline (shared runners are
    slow and uneven), a moderate number of examples so that ``nox -s tests``
    stays within its time budget, and no example database.
``thorough``
    Opt-in, for a release or after touching the reference: many examples.

Select one with ``pytest --hypothesis-profile=<name>`` or the environment
variable ``ATTNSPEC_HYPOTHESIS_PROFILE``; the command-line option wins, because
Hypothesis' pytest plugin loads it after this file has run. No health check is
suppressed: the strategies draw small arrays and filter nothing.
"""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE_VARIABLE = "ATTNSPEC_HYPOTHESIS_PROFILE"

settings.register_profile("dev", max_examples=50, deadline=1000)
settings.register_profile("ci", max_examples=50, derandomize=True, deadline=None, database=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)


def _default_profile() -> str:
    """The profile named by the environment: the variable, else ``ci`` under CI, else ``dev``."""
    chosen = os.environ.get(PROFILE_VARIABLE)
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI") else "dev"


settings.load_profile(_default_profile())
