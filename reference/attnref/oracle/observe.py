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
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from attnref.oracle.expected import (
    Evaluation,
    evaluate,
    numpy_converter,
    step_allowed,
)
from attnref.oracle.gradients import reference_vjp, unread_rows
from attnref.oracle.protocol import Case, Float64Array, Implementation, Output
from attnref.oracle.tolerance import (
    Bounds,
    GradientBounds,
    LocalBounds,
    Precision,
    dense_logit_error,
    dense_tanh_error,
    gradient_bounds,
    local_gradient_bounds,
    local_m_bounds,
    local_p_bounds,
    log_sum_exp_error,
    output_bounds,
    position_error,
    score_terms,
    softmax_step_error,
    truth_dtype,
    unit_roundoff,
    weighted_sum_error,
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
        ``[..., Tq, Tk]`` positions the mask and the causal flag allow (for a
        step with a softmax: the positions it may use, the local window
        included; for the other steps every entry of the result).
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
    if case.is_step:
        return _observe_step(impl, case, gradients=gradients)
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
    cap = case.options.get("softcap")
    terms = score_terms(
        kind,
        q,
        k,
        params,
        _scale(case),
        additive,
        precision,
        softcap=None if cap is None else float(cap),  # type: ignore[arg-type]
    )
    sink = case.sinks
    if sink is not None:
        # Note: each row's sink is one more logit of its softmax (sdpa.sinks), with a
        # zero value row; the bounds are taken over Tk + 1 columns, then the sink's dropped.
        rows = truth.weights.shape[:-1]  # [..., H, Tq]
        sink_logits = np.broadcast_to(sink[:, None], rows)
        terms = terms.with_sink(sink_logits)
        sink_weight = np.exp(sink_logits - truth.lse)[..., None]
        weights_in = np.concatenate([truth.weights, sink_weight], axis=-1)
        allowed_in = np.concatenate([allowed, np.ones((*rows, 1), dtype=np.bool_)], axis=-1)
        v = np.concatenate([v, np.zeros((*v.shape[:-2], 1, v.shape[-1]))], axis=-2)
    else:
        weights_in, allowed_in = truth.weights, allowed
    full = output_bounds(terms, weights_in, v, truth.context, allowed_in, precision)
    lse_bound = np.zeros((0,))
    if truth.lse.size:
        lse_bound = log_sum_exp_error(
            terms.scores, terms.score_error, truth.lse, allowed_in, precision
        )
    bounds = replace(
        full, weights=full.weights[..., : allowed.shape[-1]], lse=lse_bound
    )  # the sink's column dropped
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
    live = np.where(allowed_in.any(axis=-1, keepdims=True), weights_in, 0.0)
    bound: GradientBounds = gradient_bounds(
        terms,
        full,
        weights_in,
        live,
        v,
        truth.context,
        cotangent,
        precision,
        groups=case.groups,
        unread_keys=kind == "location",
        sink=sink is not None,
    )
    names = case.names
    sink_bound = {}
    if bound.sinks is not None:
        sink_bound["sinks"] = _to_shape(bound.sinks, exact["sinks"])
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
            **sink_bound,
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


# --- steps -----------------------------------------------------------------------------------


def _broadcast_batch(*arrays: Float64Array) -> list[Float64Array]:
    """The arrays with their batch dimensions (all but the last two) broadcast together."""
    batch = np.broadcast_shapes(*(a.shape[:-2] for a in arrays))
    return [np.broadcast_to(a, (*batch, *a.shape[-2:])) for a in arrays]


def _gaussian_parts(case: Case, allowed: npt.NDArray[np.bool_]) -> tuple[Float64Array, ...]:
    """Local-p's offsets ``j - p``, exponent ``x`` and Gaussian ``g`` (0 outside ``allowed``)."""
    positions = np.asarray(case.arrays["positions"], dtype=truth_dtype())
    t_k = allowed.shape[-1]
    offsets = np.arange(t_k, dtype=truth_dtype()) - positions[..., None]  # [..., Tq, Tk]
    offsets = np.where(allowed, np.broadcast_to(offsets, allowed.shape), 0.0)
    sigma = int(case.options["half_width"]) / 2  # type: ignore[call-overload]
    exponent = offsets**2 / (2 * sigma**2)
    gaussian = np.where(allowed, np.exp(-exponent), 0.0)
    as64 = (np.asarray(a, dtype=np.float64) for a in (offsets, exponent, gaussian))
    return tuple(as64)


def _window_softmax(case: Case, allowed: npt.NDArray[np.bool_]) -> Float64Array:
    """The truth's softmax of the scores over ``allowed`` (before local-p's Gaussian)."""
    import attnref

    convert = numpy_converter(truth_dtype())
    weights = attnref.attention_distribution(convert(case.arrays["scores"]), mask=allowed)
    return np.asarray(weights, dtype=np.float64)


def _local_bounds(
    case: Case,
    truth: Evaluation,
    allowed: npt.NDArray[np.bool_],
    precision: Precision,
) -> tuple[LocalBounds, Float64Array, tuple[Float64Array, ...] | None]:
    """The forward bounds of a local distribution, its window softmax and Gaussian parts."""
    scores = np.broadcast_to(case.arrays["scores"], allowed.shape)
    if case.function == "local_m_distribution":
        return local_m_bounds(scores, truth.result, allowed, precision), truth.result, None
    window = _window_softmax(case, allowed)
    parts = _gaussian_parts(case, allowed)
    _, exponent, gaussian = parts
    return local_p_bounds(scores, window, gaussian, exponent, allowed, precision), window, parts


def _read_values(weights: Float64Array, values: Float64Array) -> Float64Array:
    """The values at the weights' batch shape, 0 in rows no weight reads (they may hold NaN)."""
    w, v = _broadcast_batch(weights, values)
    read = (w != 0).any(axis=-2)[..., None]  # [..., Tk, 1]
    with np.errstate(invalid="ignore"):
        return np.where(read, v, 0.0)


def _step_bound(
    case: Case, truth: Evaluation, allowed: npt.NDArray[np.bool_], precision: Precision
) -> Float64Array:
    """The bound on a step's result other than a local distribution's (tolerance, *Steps*)."""
    function, arrays = case.function, case.arrays
    result = np.nan_to_num(truth.result)  # a declared convention's NaN rows: no bound to add
    u_t = unit_roundoff(precision.storage)
    if function in ("attention_distribution", "log_sum_exp"):
        scores = np.broadcast_to(arrays["scores"], allowed.shape)
        additive = np.zeros(allowed.shape)
        if case.mask is not None and np.asarray(case.mask).dtype != np.bool_:
            additive = np.where(allowed, np.broadcast_to(case.mask, allowed.shape), 0.0)
        logits = np.where(allowed, scores, 0.0) + additive
        with np.errstate(invalid="ignore"):
            error = unit_roundoff(precision.accumulation) * np.where(
                additive != 0, np.abs(np.where(allowed, scores, 0.0)) + np.abs(additive), 0.0
            )
        if function == "log_sum_exp":
            return log_sum_exp_error(logits, error, result, allowed, precision, per_row=True)
        return softmax_step_error(logits, error, result, allowed, precision)
    if function == "output_distribution":
        state, w_y = arrays["attentional_state"], arrays["W_y"]
        bias = arrays.get("b_y")
        logits = state @ w_y.T + (0.0 if bias is None else bias)
        error = dense_logit_error(w_y, state, bias, precision)
        return softmax_step_error(logits, error, result, allowed, precision)
    if function == "attention_value":
        weights, values = arrays["weights"], arrays["values"]
        w, _ = _broadcast_batch(weights, values)
        return weighted_sum_error(w, _read_values(weights, values), result, precision)
    if function == "concatenate_context":
        return np.zeros(result.shape)  # a copy: exact
    if function == "attentional_hidden_state":
        context, query = _broadcast_batch(arrays["context"], arrays["query"])
        stacked = np.concatenate([context, query], axis=-1)
        return dense_tanh_error(arrays["W_c"], stacked, arrays.get("b_c"), precision)
    if function == "local_p_position":
        n = int(case.options["source_length"])  # type: ignore[call-overload]
        return position_error(arrays["query"], arrays["W_p"], arrays["v_p"], n, precision)
    # the score functions
    kind = function.removeprefix("score_")
    query = arrays["query"]
    if kind == "location":
        keys = np.zeros((*query.shape[:-2], arrays["W_a"].shape[0], 1))
    else:
        query, keys = _broadcast_batch(query, arrays["keys"])
    params = {n: a for n, a in arrays.items() if n not in ("query", "keys")}
    scale = 1.0
    if kind == "scaled_dot":
        given = case.options.get("scale")
        scale = float(given) if given is not None else 1.0 / float(np.sqrt(query.shape[-1]))  # type: ignore[arg-type]
    terms = score_terms(kind, query, keys, params, scale, np.zeros(result.shape), precision)
    return terms.score_error + u_t * np.abs(result)


def _observe_step(impl: Implementation, case: Case, /, *, gradients: bool) -> Observation:
    """:func:`observe` for a step function: one result, its truth and its bound."""
    precision = precision_of(impl)
    output, failure = _run_forward(impl, case)
    truth = evaluate(case, impl.conventions)
    local = case.function in ("local_m_distribution", "local_p_distribution")
    softmax = local or case.function in ("attention_distribution", "output_distribution")
    if case.function == "log_sum_exp":  # one result per row of the allowed positions
        positions = step_allowed(case)
        allowed = np.broadcast_to(positions, (*truth.result.shape, positions.shape[-1]))
    elif softmax:
        allowed = np.broadcast_to(step_allowed(case), truth.result.shape)
    else:
        allowed = np.ones(truth.result.shape, dtype=np.bool_)
    if not local:
        bound = _step_bound(case, truth, allowed, precision)
        return Observation(
            impl, case, precision, output, failure, truth, Bounds.of_result(bound), allowed
        )
    forward, window, parts = _local_bounds(case, truth, allowed, precision)
    observation = Observation(
        impl, case, precision, output, failure, truth, Bounds.of_result(forward.result), allowed
    )
    if not gradients or "gradients" not in impl.features:
        return observation
    rng = np.random.default_rng(zlib.crc32(case.arrays["scores"].tobytes()))
    cotangent = rng.standard_normal(truth.result.shape)
    got, gradient_failure = _run_vjp(impl, case, cotangent)
    exact = reference_vjp(case, impl.conventions, cotangent)
    live = np.where(allowed, window, 0.0)
    offsets = None if parts is None else parts[0]
    gaussian = None if parts is None else parts[2]
    half_width = int(case.options["half_width"])  # type: ignore[call-overload]
    grad_bound = local_gradient_bounds(
        forward, live, gaussian, offsets, half_width, cotangent, precision
    )
    return Observation(
        impl,
        case,
        precision,
        output,
        failure,
        truth,
        Bounds.of_result(forward.result),
        allowed,
        cotangent=cotangent,
        gradients=got,
        gradient_failure=gradient_failure,
        exact=exact,
        gradient_bounds={n: _to_shape(grad_bound[n], exact[n]) for n in exact},
        unread=unread_rows(case, impl.conventions),
    )
