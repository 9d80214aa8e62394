"""One observation per drawn case: what the implementation gave, what the spec says, and
how far apart a sound kernel may be.

:func:`observe` runs the implementation (and its gradients, when a check asks
for them), the extended-precision truth and the error bounds of
:mod:`attnref.oracle.tolerance` exactly once; every clause the case serves is
then judged from that one record (:mod:`attnref.oracle.checks`).
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from attnref.oracle.expected import Evaluation, evaluate
from attnref.oracle.gradients import reference_vjp, unread_rows
from attnref.oracle.protocol import Case, Float64Array, Implementation, Output
from attnref.oracle.tolerance import (
    Bounds,
    GradientBounds,
    Precision,
    gradient_bounds,
    output_bounds,
    score_terms,
)

__all__ = ["Observation", "observe", "precision_of"]


@dataclass(frozen=True)
class Observation:
    """Everything the checks judge one case by.

    Attributes
    ----------
    impl, case
        What was run on what.
    precision
        How the implementation stores and accumulates.
    output
        What it returned, or ``None`` when it raised (``failure`` says what).
    truth
        The spec's result in extended precision, conventions applied.
    bounds
        The forward error bounds, element by element.
    allowed
        ``[..., Tq, Tk]`` positions the mask and the causal flag allow.
    cotangent, gradients, exact, gradient_bounds
        With gradients observed: the direction, the implementation's
        gradients (``None`` when its autodiff raised, ``gradient_failure``
        says what), the exact VJP and its bounds.
    unread
        Rows of query, keys and values no output reads.
    """

    impl: Implementation
    case: Case
    precision: Precision
    output: Output | None
    failure: str | None
    truth: Evaluation
    bounds: Bounds
    allowed: npt.NDArray[np.bool_]
    cotangent: Float64Array | None = None
    gradients: Mapping[str, Float64Array] | None = None
    gradient_failure: str | None = None
    exact: Mapping[str, Float64Array] | None = None
    gradient_bounds: Mapping[str, Float64Array] | None = None
    unread: Mapping[str, npt.NDArray[np.bool_]] | None = None


def precision_of(impl: Implementation, /) -> Precision:
    """The storage dtype of ``impl`` and the accumulation it declares (or the default)."""
    return Precision(impl.dtype, impl.conventions.accumulates_in(impl.dtype))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the implementation's own warnings while it runs.

    The verdict is about the numbers; a library's advice (Keras warns about a
    softmax over a single key) must not become a failure where warnings are
    errors, as in this project's test suite.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _expand(x: Float64Array, groups: int) -> Float64Array:
    """Key heads repeated for their query heads (``sdpa.grouped-query-heads``)."""
    return np.repeat(x, groups, axis=-3) if groups > 1 else x


def _read_only(
    case: Case, allowed: npt.NDArray[np.bool_], *, uniform_rows: bool
) -> tuple[Float64Array, ...]:
    """Query, keys and values expanded to the query heads, zero where they are not read.

    Unread rows may hold poison (NaN, 1e30) that must not reach the bounds.
    Under a ``uniform`` convention a fully masked row reads every value.
    """
    q_read = np.asarray(allowed.any(axis=-1))[..., None]  # [..., Tq, 1]
    k_read = np.asarray(allowed.any(axis=-2))[..., None]  # [..., Tk, 1]
    v_read = k_read | (uniform_rows and bool((~q_read).any()))
    q = np.broadcast_to(case.query, (*allowed.shape[:-2], *case.query.shape[-2:]))
    k = np.broadcast_to(_expand(case.key, case.groups), (*allowed.shape[:-2], *case.key.shape[-2:]))
    v = np.broadcast_to(
        _expand(case.value, case.groups), (*allowed.shape[:-2], *case.value.shape[-2:])
    )
    with np.errstate(invalid="ignore"):
        return (
            np.where(q_read, q, 0.0),
            np.where(k_read, k, 0.0),
            np.where(v_read, v, 0.0),
        )


def _scale(case: Case) -> float:
    scale = case.options.get("scale")
    if scale is not None:
        return float(scale)  # type: ignore[arg-type]
    if case.function == "attention" and case.options.get("score", "dot") != "scaled_dot":
        return 1.0
    return float(1.0 / np.sqrt(case.query.shape[-1]))


def _run_forward(impl: Implementation, case: Case) -> tuple[Output | None, str | None]:
    try:
        with _quiet():
            return impl.forward(case), None
    except Exception as error:  # the implementation's own failure is a verdict, not a crash
        return None, f"raised {type(error).__name__}: {error}"


def _run_vjp(
    impl: Implementation, case: Case, cotangent: Float64Array
) -> tuple[Mapping[str, Float64Array] | None, str | None]:
    try:
        with _quiet():
            return impl.vjp(case, cotangent), None
    except Exception as error:
        return None, f"vjp raised {type(error).__name__}: {error}"


def observe(impl: Implementation, case: Case, /, *, gradients: bool) -> Observation:
    """Run ``impl`` on ``case`` once and evaluate the spec and the bounds for it.

    With ``gradients`` the implementation's VJP is run too (if it offers
    gradients), in a direction
    seeded by the case's bytes (not Python's salted hash), so a replayed
    counterexample sees the same direction.
    """
    conventions = impl.conventions
    precision = precision_of(impl)
    output, failure = _run_forward(impl, case)
    truth = evaluate(case, conventions)
    allowed = np.broadcast_to(
        case.allowed(conventions.causal_alignment), truth.weights.shape
    )  # [..., Tq, Tk]
    q, k, v = _read_only(case, allowed, uniform_rows=conventions.fully_masked_row == "uniform")
    additive = np.zeros(allowed.shape)
    if case.mask is not None and np.asarray(case.mask).dtype != np.bool_:
        additive = np.where(allowed, np.broadcast_to(case.mask, allowed.shape), 0.0)
    params = {n: a for n, a in case.arrays.items() if n not in case.names}
    kind = str(case.options.get("score", "scaled_dot"))
    terms = score_terms(kind, q, k, params, _scale(case), additive, precision)
    bounds = output_bounds(terms, truth.weights, v, truth.context, allowed, precision)
    observation = Observation(
        impl, case, precision, output, failure, truth, bounds, allowed, unread=None
    )
    if not gradients or "gradients" not in impl.features:
        return observation
    if np.isnan(truth.context).any():
        return observation  # declared NaN rows: their gradient is not defined
    rng = np.random.default_rng(zlib.crc32(case.query.tobytes()))
    cotangent = rng.standard_normal(truth.context.shape)
    got, gradient_failure = _run_vjp(impl, case, cotangent)
    exact = reference_vjp(case, conventions, cotangent)
    live = np.where(allowed.any(axis=-1, keepdims=True), truth.weights, 0.0)
    bound: GradientBounds = gradient_bounds(
        terms,
        bounds,
        truth.weights,
        live,
        v,
        truth.context,
        cotangent,
        precision,
        groups=case.groups,
        unread_keys=kind == "location",
    )
    names = case.names
    return Observation(
        impl,
        case,
        precision,
        output,
        failure,
        truth,
        bounds,
        allowed,
        cotangent=cotangent,
        gradients=got,
        gradient_failure=gradient_failure,
        exact=exact,
        gradient_bounds={
            names[0]: _to_shape(bound.query, exact[names[0]]),
            names[1]: _to_shape(bound.key, exact[names[1]]),
            names[2]: _to_shape(bound.value, exact[names[2]]),
        },
        unread=unread_rows(case, conventions),
    )


def _to_shape(bound: Float64Array, exact: Float64Array) -> Float64Array:
    """A bound summed down to the shape of the gradient it bounds (broadcast batch axes)."""
    while bound.ndim > exact.ndim:
        bound = bound.sum(axis=0)
    axes = tuple(
        i
        for i, (b, e) in enumerate(zip(bound.shape, exact.shape, strict=True))
        if e == 1 and b != 1
    )
    if axes:
        bound = bound.sum(axis=axes, keepdims=True)
    return np.asarray(np.broadcast_to(bound, exact.shape), dtype=np.float64)
