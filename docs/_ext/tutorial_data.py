"""The toy sentence pair of the tutorial: one place for the numbers the figures draw.

The tutorial pages type the same arrays into their doctests, so that a reader
sees every number; a hidden doctest on each page checks that they equal these.
States have two features so that they can be drawn in the plane.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

SOURCE = ("I", "am", "a", "student")
"""The source sentence; one encoder state per word."""
DECODER_INPUTS = ("<sos>", "je", "suis")
"""What the decoder reads at steps 1-3 (teacher forcing)."""
DECODER_OUTPUTS = ("je", "suis", "étudiant")
"""What it should predict at steps 1-3."""
VOCABULARY = ("<eos>", "je", "suis", "étudiant")
"""The toy target vocabulary of the output softmax."""
STEP = 2
"""The worked example: the third decoder step (input "suis", predicting "étudiant")."""

H: F64 = np.array([[1.0, 0.2], [0.1, 1.0], [-0.4, 0.3], [-0.6, -0.9]])
"""``[4, 2]`` encoder states h_1..h_4 (keys and values)."""
S: F64 = np.array([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.5]])
"""``[3, 2]`` decoder states s_1..s_3 (queries)."""
W_c: F64 = np.array([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.5]])
"""``[2, 4]`` weights of the attentional layer: tanh(a + s/2)."""
W_y: F64 = np.array([[0.0, 0.0], [2.0, 0.5], [0.5, 2.0], [-1.5, -2.0]])
"""``[4, 2]`` output weights, one row per vocabulary word."""

# Parameters of the other score functions (Luong et al. 2015, eq. 8).
W_general: F64 = np.array([[1.0, 0.5], [0.0, 1.0]])
"""``[d_q, d_k]`` = ``[2, 2]`` for the general score."""
W_concat: F64 = np.array([[0.0, -2.0, -2.0, -2.0], [-2.0, 1.0, 1.0, 2.0], [-2.0, 0.0, 0.0, -2.0]])
"""``[d_a, d_q + d_k]`` = ``[3, 4]`` for the concat score."""
v_concat: F64 = np.array([-2.0, -2.0, -2.0])
"""``[d_a]`` for the concat (and additive) score."""
W_location: F64 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [-1.0, -1.0]])
"""``[Tk, d_q]`` = ``[4, 2]`` for the location score."""
