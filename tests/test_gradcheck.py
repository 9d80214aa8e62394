"""The gradient checker itself: it accepts right gradients and rejects wrong ones.

A checker that passes everything is worthless, so each witness is shown a
correct VJP and deliberately broken ones (a wrong factor, a missing term, a
transposition, a NaN, an error far below the central-difference tolerance)
and must tell them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import attnref
import tolerances as tol
from attnref import vjp as V  # noqa: N812
from attnref.testing import gradcheck
from attnref.testing.gradcheck import GradCheckError, check_inner_product, check_vjp

torch: ModuleType | None
twin: ModuleType | None
try:
    import torch

    import attnref.torch as twin
except ImportError:  # the torch extra is optional for users; the nox tests install it
    torch = twin = None

F64 = np.ndarray[Any, np.dtype[np.float64]]
RNG = np.random.default_rng(1409)
EPS = float(np.finfo(np.float64).eps)
Q, K, V_ = RNG.standard_normal((3, 4)), RNG.standard_normal((5, 4)), RNG.standard_normal((5, 2))
WITNESSES: tuple[gradcheck.Witness, ...] = ("complex_step", "central_difference")


def sdpa(q: Any, k: Any, v: Any) -> tuple[Any, Any]:
    """The reference composite with a mask, so the softmax and the masking are both exercised."""
    mask = np.array([[True, True, False, True, True]] * 3)
    return attnref.scaled_dot_product_attention(q, k, v, mask=mask)


def sdpa_vjp(xs: Sequence[Any], c: Any) -> list[Any]:
    mask = np.array([[True, True, False, True, True]] * 3)
    g = V.vjp_scaled_dot_product_attention(*xs, mask=mask, cotangent=c)
    return [g.query, g.key, g.value]


def softmax(s: Any) -> Any:
    return attnref.attention_distribution(s)


def softmax_vjp(xs: Sequence[Any], c: Any) -> list[Any]:
    a = attnref.attention_distribution(xs[0])
    return [a * (c - (a * c).sum(axis=-1, keepdims=True))]


def scaled(vjp: Callable[[Sequence[Any], Any], list[Any]], factor: float) -> Any:
    """``vjp`` with every gradient multiplied by ``factor``."""
    return lambda xs, c: [g * factor for g in vjp(xs, c)]


# --- accepting the right gradient ------------------------------------------------------------


@pytest.mark.parametrize("witness", WITNESSES)
def test_a_correct_vjp_passes(witness: gradcheck.Witness) -> None:
    """The analytic VJP of a composite with a tuple output passes both witnesses."""
    result = check_vjp(sdpa, sdpa_vjp, [Q, K, V_], witness=witness, names=["q", "k", "v"])
    assert result.passed, result
    assert set(result.errors) == {"q", "k", "v"}
    assert result.worst_error <= gradcheck.setting(f"{witness}.rtol")
    result.assert_passed()


def test_complex_step_derivative_is_exact_to_rounding() -> None:
    """The complex step of sin at many points equals cos to a few ulp (no cancellation)."""
    x = np.linspace(-3, 3, 61)
    (derivative,) = gradcheck.complex_step_jvp(np.sin, [x], [np.ones_like(x)])
    # Im sin(x + ih) / h = cos(x) sinh(h) / h: cos(x) to O(h^2), with a few roundings of
    # the complex sine (sin, cos, sinh, cosh and a product, each 1-Lipschitz here)
    tol.assert_within(derivative, np.cos(x), tol.bound("elementwise", 3, 1.0))


def test_central_difference_is_accurate_to_its_tolerance() -> None:
    """Central differences of a cubic are within central_difference.rtol of the derivative."""
    x = np.linspace(-3, 3, 61)
    (derivative,) = gradcheck.central_difference_jvp(lambda a: a**3, [x], [np.ones_like(x)])
    np.testing.assert_allclose(
        derivative, 3 * x**2, rtol=0, atol=gradcheck.setting("central_difference.rtol")
    )


def test_a_vanishing_jacobian_tolerates_rounding_noise() -> None:
    """A derivative that is exactly 0 by cancellation accepts a VJP of rounding-noise size."""
    equal = np.zeros((1, 3))  # equal logits: softmax(e + s * 1) does not depend on s
    along_ones = lambda s: attnref.attention_distribution(equal + s[..., None])  # noqa: E731

    def noisy(xs: Sequence[Any], c: Any) -> list[Any]:
        return [np.full(xs[0].shape, EPS)]

    assert check_vjp(along_ones, noisy, [np.zeros(1)]).passed

    def wrong(xs: Sequence[Any], c: Any) -> list[Any]:
        return [np.full(xs[0].shape, 1e-6)]

    assert not check_vjp(along_ones, wrong, [np.zeros(1)]).passed


# --- rejecting wrong gradients ---------------------------------------------------------------


@pytest.mark.parametrize("witness", WITNESSES)
@pytest.mark.parametrize("factor", [2.0, -1.0, 0.0, 1.001])
def test_a_scaled_vjp_fails(witness: gradcheck.Witness, factor: float) -> None:
    """Twice, minus, zero or 0.1 % more than the gradient fails both witnesses."""
    result = check_vjp(sdpa, scaled(sdpa_vjp, factor), [Q, K, V_], witness=witness)
    assert not result.passed
    with pytest.raises(GradCheckError, match=f"{witness} check failed"):
        result.assert_passed()


def test_an_error_below_central_differences_is_caught_by_the_complex_step() -> None:
    """A relative error of 1e-9 passes central differences but not the complex step."""
    bad = scaled(sdpa_vjp, 1 + 1e-9)
    assert check_vjp(sdpa, bad, [Q, K, V_], witness="central_difference").passed
    assert not check_vjp(sdpa, bad, [Q, K, V_], witness="complex_step").passed


@pytest.mark.parametrize("witness", WITNESSES)
def test_a_missing_term_fails(witness: gradcheck.Witness) -> None:
    """The softmax VJP without its ``- <a, c>`` term (diag(a) instead of diag(a) - a a^T) fails."""
    s = RNG.standard_normal((2, 4))

    def no_shift(xs: Sequence[Any], c: Any) -> list[Any]:
        return [attnref.attention_distribution(xs[0]) * c]

    assert check_vjp(softmax, softmax_vjp, [s], witness=witness).passed
    assert not check_vjp(softmax, no_shift, [s], witness=witness).passed


@pytest.mark.parametrize("witness", WITNESSES)
def test_one_wrong_argument_is_named(witness: gradcheck.Witness) -> None:
    """Only the broken argument's gradient (keys, transposed heads swapped) is reported."""

    def keys_wrong(xs: Sequence[Any], c: Any) -> list[Any]:
        g = sdpa_vjp(xs, c)
        return [g[0], g[1][::-1], g[2]]

    result = check_vjp(sdpa, keys_wrong, [Q, K, V_], witness=witness, names=["q", "k", "v"])
    assert result.errors["q"] <= result.tolerance
    assert result.errors["v"] <= result.tolerance
    assert not result.errors["k"] <= result.tolerance
    with pytest.raises(GradCheckError, match=r"for k "):
        result.assert_passed()


def test_a_small_gradient_next_to_a_large_one_is_checked_on_its_own() -> None:
    """A 1 % error in a gradient 1e-6 times smaller than its neighbour's still fails."""
    x, y = np.array([2.0]), np.array([3.0])
    f = lambda a, b: 1e6 * a + 1e-6 * b  # noqa: E731

    def bad(xs: Sequence[Any], c: Any) -> list[Any]:
        return [1e6 * c, 1.01e-6 * c]

    result = check_vjp(f, bad, [x, y], names=["big", "small"])
    assert result.errors["big"] <= result.tolerance
    assert not result.errors["small"] <= result.tolerance


def test_a_nan_gradient_fails() -> None:
    """NaN in a gradient is a failure, never a pass (NaN comparisons are False)."""

    def nan(xs: Sequence[Any], c: Any) -> list[Any]:
        g = softmax_vjp(xs, c)
        g[0][0, 0] = np.nan
        return g

    result = check_vjp(softmax, nan, [RNG.standard_normal((2, 3))])
    assert np.isnan(result.worst_error)
    assert not result.passed
    with pytest.raises(GradCheckError, match=r"primals\[0\] nan"):
        result.assert_passed()


@pytest.mark.parametrize(
    ("vjp", "message"),
    [
        (lambda xs, c: [c], "one gradient per primal"),
        (lambda xs, c: [c, c[:1]], "gradient 1 has shape"),
    ],
    ids=["too-few-gradients", "wrong-shape"],
)
def test_malformed_vjps_are_rejected(vjp: Any, message: str) -> None:
    """A VJP must return one gradient per primal, each shaped like it."""
    f = lambda a, b: a * b  # noqa: E731
    with pytest.raises(ValueError, match=message):
        check_vjp(f, vjp, [np.ones(3), np.ones(3)])


def test_names_must_match_the_primals() -> None:
    """One label per primal."""
    with pytest.raises(ValueError, match="one entry per primal; got 1 and 2"):
        check_vjp(lambda a, b: a * b, lambda xs, c: [xs[1], xs[0]], [np.ones(2)] * 2, names=["a"])


def test_none_stands_for_a_zero_gradient() -> None:
    """A ``None`` gradient means 0: right for an unused argument, wrong for a used one."""
    f = lambda a, b: 2 * a  # noqa: E731
    assert check_vjp(f, lambda xs, c: [2 * np.asarray(c), None], [np.ones(2), np.ones(2)]).passed
    assert not check_vjp(f, lambda xs, c: [None, None], [np.ones(2), np.ones(2)]).passed


# --- the inner-product identity for third-party functions ------------------------------------


def _torch_pair(fn: Callable[..., Any], dtype: Any) -> tuple[Any, Any]:
    """NumPy-facing JVP and VJP of a torch function by ``torch.func``."""
    assert torch is not None

    def tensors(xs: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(torch.tensor(x, dtype=dtype) for x in xs)

    def numpy(ys: Any) -> Any:
        return tuple(y.numpy() for y in ys) if isinstance(ys, tuple) else ys.numpy()

    def jvp(xs: Sequence[Any], ts: Sequence[Any]) -> Any:
        _, tangent_out = torch.func.jvp(fn, tensors(xs), tensors(ts))
        return numpy(tangent_out)

    def vjp(xs: Sequence[Any], c: Any) -> list[Any]:
        _, pullback = torch.func.vjp(fn, *tensors(xs))
        cs = (
            tuple(torch.tensor(x, dtype=dtype) for x in c)
            if isinstance(c, tuple)
            else torch.tensor(c, dtype=dtype)
        )
        return [g.numpy() for g in pullback(cs)]

    return jvp, vjp


# torch.func.jvp registers its decompositions with torch.jit.script on first use, which
# warns that TorchScript is deprecated; the warning is torch's, not the code under test.
TORCHSCRIPT_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


@TORCHSCRIPT_DEPRECATED
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_autograd_satisfies_the_inner_product_identity(dtype: str) -> None:
    """<t, vjp(c)> = <jvp(t), c> for the twin's SDPA under torch.func, in its own dtype."""
    if torch is None or twin is None:
        pytest.skip("torch is not installed")
    torch_dtype = getattr(torch, dtype)
    fn = lambda q, k, v: twin.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    jvp, vjp = _torch_pair(fn, torch_dtype)
    primals = [x.astype(dtype) for x in (Q, K, V_)]
    result = check_inner_product(jvp, vjp, primals, dtype=dtype, names=["q", "k", "v"])  # type: ignore[arg-type]
    result.assert_passed()


@TORCHSCRIPT_DEPRECATED
def test_an_inconsistent_third_party_pair_fails_the_identity() -> None:
    """A VJP that is not the adjoint of the JVP (0.1 % off, or transposed) fails."""
    if torch is None or twin is None:
        pytest.skip("torch is not installed")
    fn = lambda q, k, v: twin.scaled_dot_product_attention(q, k, v)  # noqa: E731
    jvp, vjp = _torch_pair(fn, torch.float64)
    assert check_inner_product(jvp, vjp, [Q, K, V_]).passed
    assert not check_inner_product(jvp, scaled(vjp, 1.001), [Q, K, V_]).passed
    flipped = lambda xs, c: [g[::-1] for g in vjp(xs, c)]  # noqa: E731
    assert not check_inner_product(jvp, flipped, [Q, K, V_]).passed


# --- the table and the error measure ---------------------------------------------------------


def test_every_setting_has_a_positive_value_and_a_one_line_reason() -> None:
    """Step sizes and tolerances live in one table, each with its reason."""
    assert {"complex_step.step", "complex_step.rtol", "central_difference.step"} <= set(
        gradcheck.SETTINGS
    )
    for name, entry in gradcheck.SETTINGS.items():
        assert 0 < entry.value < 1, name
        assert entry.reason.strip(), name
        assert "\n" not in entry.reason, name


def test_an_unknown_setting_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"no gradcheck setting 'complex_step\.atol'; known: "):
        gradcheck.setting("complex_step.atol")


def test_gradient_error_is_normwise_and_relative() -> None:
    """||a - e|| / max(||a||, ||e||, floor); None is 0; equal gradients give exactly 0."""
    e = np.array([3.0, 4.0])
    assert gradcheck.gradient_error(e, e) == 0
    assert gradcheck.gradient_error(None, None) == 0
    assert gradcheck.gradient_error(e, e * (1 + 1e-10)) == pytest.approx(1e-10 / (1 + 1e-10))
    assert gradcheck.gradient_error(None, e) == 1
    assert gradcheck.gradient_error(np.zeros(2), np.array([1e-20, 0]), floor=1.0) == 1e-20
    tiny = np.array([3e-200, 4e-200])  # squares underflow; the norm must not
    assert gradcheck.gradient_error(tiny, 2 * tiny) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="gradients differ in shape"):
        gradcheck.gradient_error(np.zeros(2), np.zeros(3))
