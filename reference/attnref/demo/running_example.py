"""The tutorial's running example: *I am a student* translated into *je suis étudiant*.

One place for the numbers of the tutorial (``docs/tutorial``): its doctests type
them out so a reader sees them, and check in a hidden doctest that they equal
these; its figures and ``attnspec demo`` use these directly. The states have two
features so that they can be drawn in the plane. The numbers are chosen by hand,
not learned: each decoder state points the way of the source word it should
attend to, and each row of :data:`W_y` the way of one target word.
"""

from __future__ import annotations

import numpy as np

from attnspec.typing import Array

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

SOURCE = ("I", "am", "a", "student")
"""The source sentence; one encoder state per word."""
DECODER_INPUTS = ("<sos>", "je", "suis")
"""What the decoder reads at steps 1-3 (teacher forcing)."""
DECODER_OUTPUTS = ("je", "suis", "étudiant")
"""What it should predict at steps 1-3."""
VOCABULARY = ("<eos>", "je", "suis", "étudiant")
"""The toy target vocabulary of the output softmax."""
STEP = 2
"""The worked example: the third decoder step (input "suis", predicting "étudiant"), 0-based."""

H: Array = np.array([[1.0, 0.2], [0.1, 1.0], [-0.4, 0.3], [-0.6, -0.9]])
"""``[4, 2]`` encoder states h_1..h_4 (keys and values)."""
S: Array = np.array([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.5]])
"""``[3, 2]`` decoder states s_1..s_3 (queries)."""
W_c: Array = np.array([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.5]])
"""``[2, 4]`` weights of the attentional layer: tanh(a + s/2)."""
W_y: Array = np.array([[0.0, 0.0], [2.0, 0.5], [0.5, 2.0], [-1.5, -2.0]])
"""``[4, 2]`` output weights, one row per vocabulary word."""

# Parameters of the other score functions (Luong et al. 2015, eq. 8).
W_general: Array = np.array([[1.0, 0.5], [0.0, 1.0]])
"""``[d_q, d_k]`` = ``[2, 2]`` for the general score."""
W_concat: Array = np.array([[0.0, -2.0, -2.0, -2.0], [-2.0, 1.0, 1.0, 2.0], [-2.0, 0.0, 0.0, -2.0]])
"""``[d_a, d_q + d_k]`` = ``[3, 4]`` for the concat score."""
v_concat: Array = np.array([-2.0, -2.0, -2.0])
"""``[d_a]`` for the concat (and additive) score."""
W_location: Array = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [-1.0, -1.0]])
"""``[Tk, d_q]`` = ``[4, 2]`` for the location score."""
