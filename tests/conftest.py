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

Under pytest-xdist each worker computes with one thread (see :func:`_one_thread_per_worker`).
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


def _one_thread_per_worker() -> None:
    """Give each pytest-xdist worker, and the commands it starts, one compute thread.

    The workers already fill the cores; the thread pools of PyTorch and of NumPy's
    BLAS on top of them oversubscribe the cores, and on the small arrays the oracle
    draws that costs far more than it saves (tests/test_oracle_directions.py, 2 cores
    and 2 workers: 75 s with the default pools, 33 s with one thread each).
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the commands a test starts
    import torch
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no py.typed

    torch.set_num_threads(1)
    threadpool_limits(1)  # NumPy's BLAS, loaded before this file runs


_one_thread_per_worker()
