r"""Gradient checking: is a vector-Jacobian product right?

Three witnesses, all in seeded random directions, all reported as a
:class:`GradCheckResult` labelled by what was compared:

:func:`check_vjp` with ``witness="complex_step"``
    For a complex-safe NumPy function (``input.complex-extension``), the
    directional derivative :math:`J t = \operatorname{Im} f(x + i h t) / h`
    has no subtractive cancellation and is exact to rounding; the VJP is
    right when :math:`\langle \bar x, t\rangle = \langle \bar y, J t\rangle`
    to a few hundred ulp.
:func:`check_vjp` with ``witness="central_difference"``
    :math:`J t \approx (f(x + h t) - f(x - h t)) / 2h`, a second, independent
    witness that needs no complex arithmetic (and so also catches a function
    whose complex extension is not its analytic continuation).
:func:`check_inner_product`
    For a third-party function that has its own VJP and JVP (autograd, a
    hand-written backward), the identity
    :math:`\langle t, \mathrm{vjp}(\bar y)\rangle = \langle \mathrm{jvp}(t), \bar y\rangle`
    (JAX's ``check_grads`` in reverse mode).

Each argument is checked on its own (a tangent on that argument only), so a
small gradient next to a large one cannot hide. The error of a direction is

.. math::

    \frac{|\langle \bar x, t\rangle - \langle \bar y, J t\rangle|}
         {\max(\|\bar x\|\,\|t\|,\ \|\bar y\|\,\|J t\|,\ \|\bar y\|\,\|t\|)}

relative to the Cauchy-Schwarz bound of both inner products, so it does not
blow up when an inner product cancels to nearly 0. The last term is a floor
for Jacobians that vanish by cancellation (equal logits, a single allowed
key): there the exact derivative is 0 while any floating-point VJP is
rounding noise of the size of its factors, taken to be of unit scale; the
checks therefore assume inputs of unit scale. Step sizes and tolerances are
in the one table :data:`SETTINGS`.

Callables take the primal arrays as one sequence: ``f(*primals)`` returns an
array or a tuple of arrays; ``vjp(primals, cotangent)`` returns one gradient
per primal (``None`` for 0); ``jvp(primals, tangents)`` returns the output
tangent with ``f``'s structure.

>>> import numpy as np
>>> from attnref.testing.gradcheck import check_vjp
>>> square = lambda x: x * x
>>> check_vjp(square, lambda p, c: (2 * p[0] * c,), [np.array([1.0, -2.0])]).passed
True
>>> check_vjp(square, lambda p, c: (p[0] * c,), [np.array([1.0, -2.0])]).passed
False
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "SETTINGS",
    "GradCheckError",
    "GradCheckResult",
    "Outputs",
    "Setting",
    "Witness",
    "central_difference_jvp",
    "check_inner_product",
    "check_vjp",
    "complex_step_jvp",
    "gradient_error",
    "setting",
]

Outputs: TypeAlias = npt.NDArray[Any] | tuple[npt.NDArray[Any], ...]
"""What a checked function returns: one array or a tuple of arrays."""

Differentiable: TypeAlias = Callable[..., Outputs]
VJP: TypeAlias = Callable[[Sequence[npt.NDArray[Any]], Outputs], Sequence[npt.NDArray[Any] | None]]
JVP: TypeAlias = Callable[[Sequence[npt.NDArray[Any]], Sequence[npt.NDArray[Any]]], Outputs]

Witness: TypeAlias = Literal["complex_step", "central_difference"]
"""How :func:`check_vjp` computes the reference directional derivative."""


@dataclass(frozen=True)
class Setting:
    """One step size or tolerance, with the reason for its value."""

    value: float
    reason: str


_EPS64 = float(np.finfo(np.float64).eps)

SETTINGS: Mapping[str, Setting] = MappingProxyType(
    {
        "complex_step.step": Setting(
            1e-30,
            "Im f(x + iht)/h has no subtraction, so h can be tiny: the O(h^2) error is "
            "~1e-60 relative, far below rounding; derivatives below ~1e-270 would underflow "
            "h*f'(x) past the smallest normal float64",
        ),
        "complex_step.rtol": Setting(
            1e-13,
            "both sides are exact to rounding; ~450 ulp of the Cauchy-Schwarz bound (or of "
            "the unit-scale floor) allows sums and chains of a few hundred rounded terms",
        ),
        "central_difference.step": Setting(
            _EPS64 ** (1 / 3),
            "balances truncation O(h^2 f''') against rounding O(eps f / h); multiplied by "
            "max(1, max|x|) so the step is relative to the argument's scale",
        ),
        "central_difference.rtol": Setting(
            1e-6,
            "truncation plus rounding is ~eps^(2/3) = 4e-11 per unit of third derivative; "
            "1e-6 admits curvature up to ~2e4 and still fails a wrong gradient, which is off "
            "by O(1)",
        ),
        "inner_product.rtol.float64": Setting(
            1e-12,
            "two float64 evaluations, each exact to rounding, of the same bilinear form; "
            "~4500 ulp allows inputs of a few thousand elements",
        ),
        "inner_product.rtol.float32": Setting(
            1e-4,
            "as float64 with eps = 1.2e-7: ~800 ulp for float32 arithmetic in the "
            "implementation under test",
        ),
        "autograd.rtol.float64": Setting(
            1e-13,
            "an exact VJP against another float64 gradient of the same formula: a few "
            "hundred ulp of the gradient's norm",
        ),
    }
)
"""Every step size and tolerance of the gradient checks, with its reason.

``*.rtol`` entries bound the direction error defined in the module docstring
(or, for ``autograd.rtol.*``, :func:`gradient_error`)."""


def setting(name: str, /) -> float:
    """The value of the entry ``name`` of :data:`SETTINGS`.

    Raises
    ------
    KeyError
        If there is no such entry; the message lists the known names.
    """
    try:
        return SETTINGS[name].value
    except KeyError:
        raise KeyError(f"no gradcheck setting {name!r}; known: {', '.join(SETTINGS)}") from None


class GradCheckError(AssertionError):
    """A gradient check failed; the message says what was compared and by how much."""


@dataclass(frozen=True)
class GradCheckResult:
    """The outcome of one gradient check.

    Attributes
    ----------
    check
        What was compared: ``"complex_step"``, ``"central_difference"`` or
        ``"inner_product"``.
    errors
        ``{argument name: worst direction error}``.
    tolerance
        The bound every error had to meet.
    """

    check: str
    errors: Mapping[str, float]
    tolerance: float

    @property
    def worst_error(self) -> float:
        """The largest error over all arguments and directions (0 if none)."""
        return max(self.errors.values(), default=0.0)

    @property
    def passed(self) -> bool:
        """Whether every error is within the tolerance (NaN fails)."""
        return all(e <= self.tolerance for e in self.errors.values())

    def assert_passed(self) -> None:
        """Raise :class:`GradCheckError` naming the arguments that failed."""
        if self.passed:
            return
        failed = ", ".join(
            f"{name} {error:.3g}"
            for name, error in self.errors.items()
            if not error <= self.tolerance
        )
        raise GradCheckError(
            f"{self.check} check failed: relative error above {self.tolerance:.3g} for {failed}"
        )


def _outputs(y: Outputs, /) -> tuple[npt.NDArray[Any], ...]:
    return tuple(np.asarray(a) for a in y) if isinstance(y, tuple) else (np.asarray(y),)


def _structure(y: tuple[npt.NDArray[Any], ...], single: bool, /) -> Outputs:
    return y[0] if single else y


def complex_step_jvp(
    f: Differentiable,
    primals: Sequence[npt.NDArray[Any]],
    tangents: Sequence[npt.NDArray[Any]],
    /,
    *,
    step: float | None = None,
) -> tuple[npt.NDArray[np.float64], ...]:
    r"""Directional derivative :math:`J t = \mathrm{Im}\, f(x + i h t) / h` of a complex-safe ``f``.

    ``primals`` and ``tangents`` must be real; each output comes back as
    float64, one per output of ``f``.
    """
    h = setting("complex_step.step") if step is None else step
    shifted = [
        np.asarray(x, dtype=np.complex128) + 1j * h * np.asarray(t, dtype=np.float64)
        for x, t in zip(primals, tangents, strict=True)
    ]
    return tuple(np.imag(y) / h for y in _outputs(f(*shifted)))


def central_difference_jvp(
    f: Differentiable,
    primals: Sequence[npt.NDArray[Any]],
    tangents: Sequence[npt.NDArray[Any]],
    /,
    *,
    step: float | None = None,
) -> tuple[npt.NDArray[np.float64], ...]:
    r"""Directional derivative :math:`J t \approx (f(x + ht) - f(x - ht)) / 2h` in float64.

    The default step is ``central_difference.step`` times
    ``max(1, max|x|)`` over the perturbed arguments.
    """
    xs = [np.asarray(x, dtype=np.float64) for x in primals]
    ts = [np.asarray(t, dtype=np.float64) for t in tangents]
    if step is None:
        scale = max([1.0, *(float(np.max(np.abs(x), initial=0.0)) for x in xs)])
        step = setting("central_difference.step") * scale
    plus = _outputs(f(*(x + step * t for x, t in zip(xs, ts, strict=True))))
    minus = _outputs(f(*(x - step * t for x, t in zip(xs, ts, strict=True))))
    return tuple((p - m) / (2 * step) for p, m in zip(plus, minus, strict=True))


def _inner(a: Sequence[npt.NDArray[Any]], b: Sequence[npt.NDArray[Any]], /) -> float:
    # Note: math.fsum-like accuracy is not needed: each side is a sum of
    # products whose rounding is covered by the Cauchy-Schwarz denominator.
    return float(sum(np.sum(x * y) for x, y in zip(a, b, strict=True)))


def _norm(a: Sequence[npt.NDArray[Any]], /) -> float:
    """The 2-norm of the arrays taken together, scaled so that tiny entries do not underflow."""
    flat = np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in a] or [np.zeros(0)])
    # Note: sum(x**2) underflows to 0 for entries below 1e-154; dividing by the
    # largest magnitude first keeps the norm of a tiny gradient positive.
    largest = float(np.max(np.abs(flat), initial=0.0))
    if largest == 0 or not np.isfinite(largest):
        return largest
    return largest * float(np.sqrt(np.sum(np.square(flat / largest))))


def _direction_error(
    g: npt.NDArray[Any],
    t: npt.NDArray[Any],
    c: Sequence[npt.NDArray[Any]],
    jt: Sequence[npt.NDArray[Any]],
    /,
) -> float:
    """|<g, t> - <c, Jt>| over the larger Cauchy-Schwarz bound or the unit-scale floor |c| |t|."""
    left = _inner([g], [t])
    right = _inner(c, jt)
    bound = max(_norm([g]) * _norm([t]), _norm(c) * _norm(jt), _norm(c) * _norm([t]))
    difference = abs(left - right)
    if np.isnan(difference) or np.isnan(bound):
        return float("nan")
    if difference == 0:
        return 0.0
    return difference / bound if bound > 0 else float("inf")


def _worse(a: float, b: float, /) -> float:
    """The larger error, NaN if either is NaN (``max`` would drop a NaN second argument)."""
    return float("nan") if np.isnan(a) or np.isnan(b) else max(a, b)


def _names(primals: Sequence[object], names: Sequence[str] | None, /) -> list[str]:
    if names is None:
        return [f"primals[{i}]" for i in range(len(primals))]
    if len(names) != len(primals):
        raise ValueError(
            f"names must have one entry per primal; got {len(names)} and {len(primals)}"
        )
    return list(names)


def _gradients(
    vjp: VJP, primals: Sequence[npt.NDArray[Any]], cotangent: Outputs, /
) -> list[npt.NDArray[Any]]:
    grads = list(vjp(primals, cotangent))
    if len(grads) != len(primals):
        raise ValueError(
            f"vjp must return one gradient per primal; got {len(grads)} for {len(primals)}"
        )
    out: list[npt.NDArray[Any]] = []
    for i, (g, x) in enumerate(zip(grads, primals, strict=True)):
        if g is None:
            out.append(np.zeros(np.shape(x)))
            continue
        g = np.asarray(g)
        if g.shape != np.shape(x):
            raise ValueError(f"gradient {i} has shape {g.shape}; its primal has {np.shape(x)}")
        out.append(g)
    return out


def check_vjp(
    f: Differentiable,
    vjp: VJP,
    primals: Sequence[npt.NDArray[Any]],
    /,
    *,
    witness: Witness = "complex_step",
    seed: int = 0,
    directions: int = 2,
    names: Sequence[str] | None = None,
) -> GradCheckResult:
    """Check ``vjp`` against directional derivatives of ``f`` in seeded random directions.

    Parameters
    ----------
    f
        ``f(*primals)``; complex-safe for ``witness="complex_step"``.
    vjp
        ``vjp(primals, cotangent)``, one gradient per primal.
    primals
        Real float64 arrays; every one is checked.
    witness
        ``"complex_step"`` (tolerance ``complex_step.rtol``) or
        ``"central_difference"`` (``central_difference.rtol``).
    seed
        Seed of the standard normal tangents and cotangents.
    directions
        Number of (tangent, cotangent) pairs per argument.
    names
        Labels of the primals in the result (default ``primals[i]``).
    """
    xs = [np.asarray(x, dtype=np.float64) for x in primals]
    labels = _names(xs, names)
    rng = np.random.default_rng(seed)
    y = f(*xs)
    single = not isinstance(y, tuple)
    shapes = [a.shape for a in _outputs(y)]
    jvp_of = complex_step_jvp if witness == "complex_step" else central_difference_jvp
    errors = dict.fromkeys(labels, 0.0)
    for _ in range(directions):
        c = tuple(rng.standard_normal(s) for s in shapes)
        grads = _gradients(vjp, xs, _structure(c, single))
        for i, label in enumerate(labels):
            t = rng.standard_normal(xs[i].shape)
            tangents = [t if j == i else np.zeros_like(x) for j, x in enumerate(xs)]
            jt = jvp_of(f, xs, tangents)
            errors[label] = _worse(errors[label], _direction_error(grads[i], t, c, jt))
    return GradCheckResult(witness, MappingProxyType(errors), setting(f"{witness}.rtol"))


def check_inner_product(
    jvp: JVP,
    vjp: VJP,
    primals: Sequence[npt.NDArray[Any]],
    /,
    *,
    dtype: Literal["float64", "float32"] = "float64",
    seed: int = 0,
    directions: int = 2,
    names: Sequence[str] | None = None,
) -> GradCheckResult:
    r"""Check :math:`\langle t, \mathrm{vjp}(c)\rangle = \langle \mathrm{jvp}(t), c\rangle`.

    For third-party functions that bring both a JVP and a VJP (e.g. PyTorch
    autograd, wrapped to take and return NumPy arrays). The identity holds
    for any linear map and its adjoint, so it checks that the two are
    consistent, not that either is right; compare with the reference VJP
    for that.

    Parameters
    ----------
    jvp, vjp
        ``jvp(primals, tangents)`` and ``vjp(primals, cotangent)``; the
        output structure (one array or a tuple) is read from a first call of
        ``jvp`` with zero tangents.
    primals
        The point, as arrays of ``dtype``.
    dtype
        The dtype the implementation computes in; picks
        ``inner_product.rtol.<dtype>``. Tangents and cotangents are drawn in it.
    seed, directions, names
        As :func:`check_vjp`.
    """
    xs = [np.asarray(x) for x in primals]
    labels = _names(xs, names)
    probe = jvp(xs, [np.zeros_like(x) for x in xs])
    single = not isinstance(probe, tuple)
    shapes = [a.shape for a in _outputs(probe)]
    rng = np.random.default_rng(seed)
    errors = dict.fromkeys(labels, 0.0)
    for _ in range(directions):
        c = tuple(rng.standard_normal(s).astype(dtype) for s in shapes)
        grads = _gradients(vjp, xs, _structure(c, single))
        for i, label in enumerate(labels):
            t = rng.standard_normal(xs[i].shape).astype(dtype)
            tangents = [t if j == i else np.zeros_like(x) for j, x in enumerate(xs)]
            jt = [np.asarray(a, dtype=np.float64) for a in _outputs(jvp(xs, tangents))]
            g = np.asarray(grads[i], dtype=np.float64)
            cs = [np.asarray(a, dtype=np.float64) for a in c]
            error = _direction_error(g, t.astype(np.float64), cs, jt)
            errors[label] = _worse(errors[label], error)
    rtol = setting(f"inner_product.rtol.{dtype}")
    return GradCheckResult("inner_product", MappingProxyType(errors), rtol)


def gradient_error(
    expected: npt.NDArray[Any] | None,
    actual: npt.NDArray[Any] | None,
    /,
    *,
    floor: float = 0.0,
) -> float:
    r"""Normwise relative difference :math:`\|a - e\| / \max(\|a\|, \|e\|, \text{floor})`.

    ``None`` stands for an all-zero gradient. Two exactly equal gradients
    (both zero included) give 0; compare with ``autograd.rtol.<dtype>``.
    For gradients pass ``floor`` = the cotangent's norm: a gradient that
    vanishes by cancellation is rounding noise of that size (unit-scale
    inputs), as in :func:`check_vjp`.
    """
    if expected is None and actual is None:
        return 0.0
    e = (
        np.zeros_like(actual, dtype=np.float64)
        if expected is None
        else np.asarray(expected, np.float64)
    )
    a = np.zeros_like(e) if actual is None else np.asarray(actual, np.float64)
    if e.shape != a.shape:
        raise ValueError(f"gradients differ in shape: expected {e.shape}, got {a.shape}")
    difference = _norm([a - e])
    if difference == 0:
        return 0.0
    scale = max(_norm([a]), _norm([e]), floor)
    return difference / scale if scale > 0 else float("inf")
