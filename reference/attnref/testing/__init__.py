"""Testing aids shipped with the reference, for attnspec's own suite and for third parties.

The submodules are imported on demand, so that each pulls in only what it needs:

:mod:`attnref.testing.strategies`
    Hypothesis strategies for valid (and deliberately adversarial) attention
    inputs. It needs the optional dependency ``hypothesis``; the core
    :mod:`attnref` never imports it.

>>> from attnref.testing import strategies  # doctest: +SKIP
>>> strategies.attention_inputs(dtype="float32")  # doctest: +SKIP
"""

from __future__ import annotations

__all__: list[str] = []
