"""Gradients reach distant encoder steps with attention, and vanish without it.

The law is checked on :mod:`attnref.demo.seq2seq`'s toy encoder-decoder, with
every threshold derived from the model's weights or from the mechanism, none
fitted to the measured values. ``g(N)`` is the norm of the gradient of one
decoder output with respect to the most distant source word ``x_1`` for a
source of ``N`` words; ``ḡ(N)`` its geometric mean over :data:`SAMPLES`
random sources, which averages out how well a particular first word happens
to align with the decoder state.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest

from attnref.demo.gradient_flow import gradient_flow
from attnref.demo.seq2seq import ModelConfig, make_weights
from attnref.testing.gradcheck import setting

CONFIG = ModelConfig()
LENGTHS = (5, 10, 20, 40)
SAMPLES = 6
WEIGHTS = make_weights(CONFIG)
RHO = float(np.linalg.norm(WEIGHTS.W_hh, 2))
"""Spectral norm of the recurrent matrix: the most one encoder step can scale a gradient by."""


@functools.cache
def distant(attention: bool, length: int) -> tuple[float, ...]:
    """``g(N)`` for each of the :data:`SAMPLES` sources of length ``N`` (complex step)."""
    return tuple(
        gradient_flow(
            length, attention=attention, config=CONFIG, sample=s, confirm=False
        ).most_distant
        for s in range(SAMPLES)
    )


def mean(attention: bool, length: int) -> float:
    """``ḡ(N)``, the geometric mean of ``g(N)`` over the sources."""
    return math.exp(float(np.mean(np.log(distant(attention, length)))))


def pairs() -> list[tuple[int, int]]:
    """Successive lengths ``(N_k, N_{k+1})``."""
    return list(itertools.pairwise(LENGTHS))


def test_the_encoder_forgets_geometrically() -> None:
    """The premise: the recurrent matrix contracts (spectral norm below 1)."""
    assert RHO < 1


@pytest.mark.parametrize("length", LENGTHS)
def test_without_attention_the_distant_gradient_is_below_a_geometric_bound(length: int) -> None:
    """Without attention, g(N) <= B rho^(N-1), with B and rho from the weights' spectral norms.

    x_1 reaches the output only through h_1 -> h_N -> s -> s~ -> y_k, so by the chain rule
    and |tanh'| <= 1: ||dh_1/dx_1|| <= ||W_xh||, each of the N-1 encoder steps contributes
    at most ||W_hh|| = rho, ||ds/dh_N|| <= ||W_ss||, ||ds~/ds|| <= ||W_c[:, d_h:]|| (the
    context is 0), and the softmax row gradient y_k (e_k - y) has norm at most sqrt(2)/4.
    """
    d_h = CONFIG.hidden_size
    norm = functools.partial(np.linalg.norm, ord=2)
    bound = (
        math.sqrt(2)
        / 4
        * float(norm(WEIGHTS.W_y))
        * float(norm(WEIGHTS.W_c[:, d_h:]))
        * float(norm(WEIGHTS.W_ss))
        * float(norm(WEIGHTS.W_xh))
        * RHO ** (length - 1)
    )
    assert max(distant(False, length)) <= bound


@pytest.mark.parametrize(("shorter", "longer"), pairs())
def test_without_attention_each_extra_word_shrinks_the_gradient_by_rho(
    shorter: int, longer: int
) -> None:
    """Without attention, ḡ(N') / ḡ(N) <= rho^(N' - N): every encoder step scales by <= rho.

    The typical growth rate of a product of Jacobians diag(tanh') W_hh (its top Lyapunov
    exponent) is at most log ||W_hh|| = log rho; the geometric mean over sources measures it.
    """
    assert mean(False, longer) / mean(False, shorter) <= RHO ** (longer - shorter)


@pytest.mark.parametrize(("shorter", "longer"), pairs())
def test_with_attention_the_distant_gradient_decays_at_most_quadratically(
    shorter: int, longer: int
) -> None:
    """With attention, ḡ(N') / ḡ(N) >= (N / N')^2: a modest polynomial, not a geometric decay.

    x_1 is one attention step from the output: the gradient through the context is
    alpha_1 (I + (h_1 - a) s^T) dh_1/dx_1, and the weight alpha_1 of one word among N is of
    order 1/N because the scores s.h_j are bounded (states lie in (-1, 1)^d). One power of N
    is the mechanism; the second grants a factor N for the source-dependent O(1) factors.
    """
    assert mean(True, longer) / mean(True, shorter) >= (shorter / longer) ** 2


@pytest.mark.parametrize(("shorter", "longer"), pairs())
def test_attention_makes_the_ratio_grow_exponentially(shorter: int, longer: int) -> None:
    """The ratio r(N) = ḡ_att(N) / ḡ_no(N) grows by at least rho^-(N' - N) (N / N')^2.

    That is the quotient of the two laws above: exponential growth at rate log(1/rho) per
    source word, less at most a quadratic factor.
    """
    growth = (mean(True, longer) / mean(False, longer)) / (
        mean(True, shorter) / mean(False, shorter)
    )
    assert growth >= RHO ** -(longer - shorter) * (shorter / longer) ** 2
    assert growth > 1


@pytest.mark.parametrize("attention", [False, True], ids=["without-attention", "with-attention"])
@pytest.mark.parametrize("length", LENGTHS)
def test_complex_step_is_confirmed_by_autograd(length: int, attention: bool) -> None:
    """The complex-step gradient at every position agrees with torch autograd of the twin."""
    pytest.importorskip("torch")
    flow = gradient_flow(length, attention=attention, config=CONFIG)
    assert flow.disagreement is not None
    assert flow.autograd_norms is not None
    assert flow.disagreement <= setting("autograd.rtol.float64")
    assert len(flow.norms) == len(flow.autograd_norms) == length
    assert all(n > 0 for n in flow.norms)


@pytest.mark.parametrize("attention", [False, True], ids=["without-attention", "with-attention"])
def test_central_differences_err_by_no_more_than_their_rounding_noise(attention: bool) -> None:
    """At every position |‖fd‖ - ‖cs‖| <= 2 noise: central differences are right to their noise.

    The complex-step norm is exact to rounding (confirmed above), so it serves as the truth;
    the factor 2 covers the norm's triangle inequality over the word's d_in entries, whose
    estimate already assumes each is off by the full eps |y| / h.
    """
    flow = gradient_flow(30, attention=attention, config=CONFIG, confirm=False, differences=True)
    assert flow.difference_norms is not None
    assert flow.difference_noise is not None
    for j, (exact, central) in enumerate(zip(flow.norms, flow.difference_norms, strict=True)):
        assert abs(central - exact) <= 2 * flow.difference_noise, f"word {j + 1}"


def test_central_differences_agree_where_they_can_measure() -> None:
    """Where the gradient is 1e4 times the noise or more, they agree to 1e-3 relative."""
    flow = gradient_flow(30, attention=False, config=CONFIG, confirm=False, differences=True)
    assert flow.difference_norms is not None
    assert flow.difference_noise is not None
    measurable = [
        (exact, central)
        for exact, central in zip(flow.norms, flow.difference_norms, strict=True)
        if exact >= 1e4 * flow.difference_noise
    ]
    assert len(measurable) >= 5
    for exact, central in measurable:
        assert abs(central - exact) <= 1e-3 * exact


def test_central_differences_cannot_see_a_gradient_below_their_noise() -> None:
    """The distant words' gradients (down to 1e-24) are below the noise, and come out wrong.

    The complex step still measures them, and they shrink word after word; central
    differences give 0 or noise there, off by at least the gradient itself.
    """
    flow = gradient_flow(30, attention=False, config=CONFIG, confirm=False, differences=True)
    assert flow.difference_norms is not None
    assert flow.difference_noise is not None
    lost = [
        (exact, central)
        for exact, central in zip(flow.norms, flow.difference_norms, strict=True)
        if exact < flow.difference_noise / 100
    ]
    assert len(lost) >= 10
    assert all(abs(central - exact) >= exact for exact, central in lost)
    assert all(a < b for a, b in itertools.pairwise(exact for exact, _ in lost))


def test_gradient_flow_rejects_an_empty_source() -> None:
    """A source has at least one word."""
    with pytest.raises(ValueError, match="source_length must be at least 1; got 0"):
        gradient_flow(0, attention=True, confirm=False)
