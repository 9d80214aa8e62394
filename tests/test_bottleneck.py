"""A fixed-size final state loses the source as it grows; the attention contexts keep it.

The law is checked on :mod:`attnref.demo.bottleneck`, whose read-outs are
fitted by least squares. The thresholds come from the capacity argument (a
read-out of ``d_h`` numbers explains at most ``d_h`` unit variances) or are
loose statements of the claim, not fitted to the measured values: the fixed
state measures 0.57 at two words and 0.024 at forty, the contexts 0.90.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from attnref.demo.bottleneck import (
    BottleneckConfig,
    BottleneckResult,
    bottleneck,
    capacity_bound,
    position_r2,
)
from attnref.demo.seq2seq import ModelConfig

LENGTHS = (1, 2, 5, 10, 20, 40)
# Held-out R² of a least-squares fit scatters around its expectation by about
# sqrt(features / test sentences) ~ 0.1 per number, much less in the mean over them.
SAMPLING = 0.03


@pytest.fixture(scope="module")
def result() -> BottleneckResult:
    return bottleneck(LENGTHS)


def test_a_one_word_source_is_kept_equally_by_both(result: BottleneckResult) -> None:
    """With one word, the last state is the only state, and attention can only return it."""
    assert result.fixed_state[0] == pytest.approx(result.attention[0], abs=1e-12)


def test_the_fixed_state_keeps_no_more_than_its_capacity(result: BottleneckResult) -> None:
    """Mean R² from h_N is at most d_h / (N d_in), up to the sampling of the test sentences."""
    for n, fixed, bound in zip(result.lengths, result.fixed_state, result.bound, strict=True):
        assert fixed <= bound + SAMPLING, f"N = {n}: R² {fixed:.3f} above the bound {bound:.3f}"


def test_the_fixed_state_loses_the_source_as_it_grows(result: BottleneckResult) -> None:
    """Each longer sentence is recovered worse, and at forty words almost nothing is left."""
    assert all(a > b for a, b in itertools.pairwise(result.fixed_state))
    assert result.fixed_state[-1] < 0.1


def test_the_attention_contexts_keep_the_source_at_every_length(
    result: BottleneckResult,
) -> None:
    """The contexts recover the source as well at forty words as at two."""
    two, forty = result.attention[1], result.attention[-1]
    assert forty >= two - SAMPLING
    assert min(result.attention) > 0.5
    assert all(a > f for a, f in zip(result.attention[1:], result.fixed_state[1:], strict=True))


def test_the_fixed_state_keeps_the_last_words_and_forgets_the_first() -> None:
    """h_N is dominated by the words read last (the encoder contracts, ||W_hh|| = 0.5)."""
    per_word = position_r2(20, attention=False)
    assert per_word.shape == (20,)
    assert per_word[-1] > 0.5
    assert np.all(np.abs(per_word[:10]) < SAMPLING)


def test_the_attention_contexts_keep_every_word() -> None:
    """No word of a 20-word sentence is lost to the contexts."""
    per_word = position_r2(20, attention=True)
    assert np.all(per_word > 0.5)


def test_a_blurred_alignment_loses_the_source_too() -> None:
    """With sharpness 0 every context is the mean of the states: attention no longer helps.

    This is what shows the measurement depends on the attention weights, not on
    having N vectors: a uniform average is again one fixed summary.
    """
    blurred = bottleneck((20,), config=BottleneckConfig(sharpness=0.0))
    assert blurred.attention[0] < 0.2


def test_the_experiment_is_deterministic() -> None:
    """Two runs give the same numbers to the last bit."""
    assert bottleneck((3, 7)) == bottleneck((3, 7))


def test_capacity_bound() -> None:
    """min(1, d_h / (N d_in)) for the model's sizes."""
    config = ModelConfig(hidden_size=8, input_size=4)
    assert [capacity_bound(n, config=config) for n in (1, 2, 4, 40)] == [1.0, 1.0, 0.5, 0.05]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bottleneck(()), "lengths must name at least one sentence length"),
        (lambda: position_r2(0, attention=True), "length must be at least 1; got 0"),
        (lambda: capacity_bound(0), "length must be at least 1; got 0"),
        (lambda: BottleneckConfig(train=1), "train must be at least 2; got 1"),
        (lambda: BottleneckConfig(sharpness=-1.0), "sharpness must be non-negative; got -1.0"),
    ],
    ids=["no-lengths", "position_r2-length-0", "capacity_bound-length-0", "train-1", "sharpness"],
)
def test_bad_arguments(call: Callable[[], object], message: str) -> None:
    """Each bad argument is named, with what came."""
    with pytest.raises(ValueError, match=f"^{message}"):
        call()
