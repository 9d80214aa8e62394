"""The toy sentence pair of the tutorial, for the figures and the hidden doctests.

The numbers live in :mod:`attnref.demo.running_example`, which ``attnspec demo``
replays too; this module gives the docs their short name for it
(``import tutorial_data as toy``).
"""

from __future__ import annotations

from attnref.demo.running_example import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    SOURCE,
    STEP,
    VOCABULARY,
    H,
    S,
    W_c,
    W_concat,
    W_general,
    W_location,
    W_y,
    v_concat,
)

__all__ = [
    "DECODER_INPUTS",
    "DECODER_OUTPUTS",
    "SOURCE",
    "STEP",
    "VOCABULARY",
    "H",
    "S",
    "W_c",
    "W_concat",
    "W_general",
    "W_location",
    "W_y",
    "v_concat",
]
