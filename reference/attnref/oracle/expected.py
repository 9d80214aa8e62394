"""What the spec says a case should give: the truth, the naive same-dtype evaluation,
and the declared conventions applied to both; for a step function, its one result and
the positions its softmax may use (:func:`step_allowed`, the local windows)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

import attnref
import attnspec
from attnref import masking
from attnref.oracle.conventions import Conventions
from attnref.oracle.protocol import Case, Float64Array
from attnref.oracle.tolerance import truth_dtype

__all__ = [
    "Evaluation",
    "evaluate",
    "explicit_mask",
    "fully_masked_rows",
    "numpy_converter",
    "positional_names",
    "reference_call",
    "step_allowed",
]


@dataclass(frozen=True)
class Evaluation:
    """Context and weights of the reference, as float64 (NaN where the convention says so).

    For a step function ``context`` holds its one result (read as
    :attr:`result`) and ``weights`` is empty. ``lse`` is SDPA's log-sum-exp
    (``sdpa.log-sum-exp``), by the spec alone whatever the conventions, and
    empty for the other functions.
    """

    context: Float64Array
    weights: Float64Array
    lse: Float64Array = field(default_factory=lambda: np.zeros((0,)))

    @classmethod
    def of_result(cls, result: Float64Array, /) -> Evaluation:
        """The evaluation of a step function, whose one result is ``result``."""
        return cls(result, np.zeros((0,)))

    @property
    def result(self) -> Float64Array:
        """A step function's result (held in ``context``)."""
        return self.context


ReferenceCall = tuple[str, tuple[Any, ...], dict[str, Any]]
"""The spec function's name, its positional arrays and its keyword options."""


def reference_call(
    case: Case, conventions: Conventions, convert: Callable[[npt.NDArray[Any]], Any], /
) -> ReferenceCall:
    """The spec function, positional arrays and keyword options that compute ``case``.

    ``convert`` turns each float64 array (and an additive mask) into the
    backend's array in the compute dtype; boolean masks pass unchanged
    through it. The ``attention`` composite has no causal flag, so a causal
    case of it gets the causal mask folded into an explicit one.
    """
    arrays = dict(case.arrays)
    options: dict[str, Any] = dict(case.options)
    mask = case.mask
    if case.is_step:
        names = positional_names(case.function)
        positional = tuple(convert(arrays[n]) for n in names if n in arrays)
        if mask is not None:
            options["mask"] = convert(mask)
        return case.function, positional, options
    if case.function == "attention":
        if options.pop("is_causal", False):
            mask = explicit_mask(case, conventions)
        positional = tuple(convert(arrays.pop(n)) for n in ("query", "keys", "values"))
        params = {n: convert(a) for n, a in arrays.items()}
        kwargs = {**options, **params, "mask": None if mask is None else convert(mask)}
        return "attention", positional, kwargs
    positional = tuple(convert(arrays[n]) for n in ("query", "key", "value"))
    if "sinks" in arrays:
        options["sinks"] = convert(arrays["sinks"])
    kwargs = {
        **options,
        "mask": None if mask is None else convert(mask),
        # an explicit query offset replaces the alignment's (sdpa.query-offset)
        "causal_alignment": (
            "top_left" if "query_offset" in options else conventions.causal_alignment
        ),
    }
    return "scaled_dot_product_attention", positional, kwargs


@functools.cache
def positional_names(function: str, /) -> tuple[str, ...]:
    """The positional parameters of a spec function, in order (``("scores", "positions")``)."""
    signature = inspect.signature(getattr(attnspec, function))
    return tuple(
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY
    )


def explicit_mask(case: Case, conventions: Conventions) -> npt.NDArray[Any] | None:
    """The mask with the causal flag folded in, at full ``[..., Tq, Tk]`` shape."""
    if case.mask is None and not case.options.get("is_causal"):
        return None
    allowed = case.allowed(conventions.causal_alignment)
    if case.mask is not None and np.asarray(case.mask).dtype != np.bool_:
        additive = np.broadcast_to(np.asarray(case.mask, dtype=np.float64), allowed.shape)
        return np.where(allowed, additive, -np.inf)
    return allowed


def numpy_converter(dtype: npt.DTypeLike) -> Callable[[npt.NDArray[Any]], Any]:
    """A ``convert`` for :func:`reference_call`: floating arrays to ``dtype``, booleans kept."""

    def convert(a: npt.NDArray[Any]) -> Any:
        x = np.asarray(a)
        return x if x.dtype == np.bool_ else x.astype(dtype)

    return convert


def _torch_bfloat16(a: npt.NDArray[Any]) -> Any:
    """NumPy has no bfloat16: the naive bfloat16 evaluation runs on the PyTorch twin."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    return t if t.dtype == torch.bool else t.to(torch.bfloat16)


def run_reference(case: Case, conventions: Conventions, dtype: str | None) -> tuple[Any, Any, Any]:
    """Context, weights and log-sum-exp of the reference on ``case`` in ``dtype``
    (``None``: the truth).

    For a step function: its result, ``None`` and ``None``; for ``attention`` the
    log-sum-exp is ``None``.
    """
    sdpa = case.function == "scaled_dot_product_attention"
    if dtype == "bfloat16":
        import attnref.torch as twin

        name, positional, kwargs = reference_call(case, conventions, _torch_bfloat16)
        if case.is_step:
            return getattr(twin, name)(*positional, **kwargs).double().numpy(), None, None
        if not sdpa:
            context, weights = getattr(twin, name)(*positional, **kwargs)
            return context.double().numpy(), weights.double().numpy(), None
        context, weights, lse = getattr(twin, name)(*positional, **kwargs, return_lse=True)
        return context.double().numpy(), weights.double().numpy(), lse.double().numpy()
    compute = truth_dtype() if dtype is None else np.dtype(dtype)
    name, positional, kwargs = reference_call(case, conventions, numpy_converter(compute))
    if case.is_step:
        return getattr(attnref, name)(*positional, **kwargs), None, None
    if not sdpa:
        context, weights = getattr(attnref, name)(*positional, **kwargs)
        return context, weights, None
    result: tuple[Any, Any, Any] = getattr(attnref, name)(*positional, **kwargs, return_lse=True)
    return result


def fully_masked_rows(case: Case, conventions: Conventions) -> npt.NDArray[np.bool_]:
    """``[..., Tq]`` rows of the weights with no allowed key (mask and causal flag)."""
    return case.fully_masked_rows(conventions.causal_alignment)


def step_allowed(case: Case, /) -> npt.NDArray[np.bool_]:
    """The positions a step's softmax may use, at its result's shape (``[..., Tq, Tk]``).

    The window and the mask of a local distribution, the mask of
    ``attention_distribution`` and ``log_sum_exp`` (scores of ``-inf`` excluded;
    the latter's result is one entry per row), every entry of the output
    distribution; for the other steps every entry of the result.
    """
    function = case.function
    if function == "output_distribution":
        state, w_y = case.arrays["attentional_state"], case.arrays["W_y"]
        return np.ones((*state.shape[:-1], w_y.shape[0]), dtype=np.bool_)
    softmaxes = ("attention_distribution", "log_sum_exp", "local_m_distribution")
    if function not in (*softmaxes, "local_p_distribution"):
        raise ValueError(f"{function} has no softmax")
    scores = case.arrays["scores"]
    allowed = np.asarray(scores != -np.inf)  # [..., Tq, Tk]
    t_q, t_k = scores.shape[-2:]
    d = int(case.options.get("half_width", 0))  # type: ignore[call-overload]
    if function == "local_m_distribution":
        allowed = allowed & masking.local_window(t_q, t_k, half_width=d)  # local.m-position
    elif function == "local_p_distribution":
        positions = np.asarray(case.arrays["positions"], dtype=np.float64)  # [..., Tq]
        # Note: the float64 value of a position of the implementation's dtype is exact, so
        # the window's edge is decided exactly (local.p-window).
        allowed = allowed & masking.local_p_window(positions, t_k, half_width=d)
    if case.mask is not None:
        m = np.asarray(case.mask)
        allowed = allowed & (m if m.dtype == np.bool_ else m != -np.inf)
    return np.asarray(allowed, dtype=np.bool_)


def evaluate(case: Case, conventions: Conventions, *, dtype: str | None = None) -> Evaluation:
    """The reference's result for ``case``, with ``conventions`` applied.

    ``dtype=None`` gives the truth (extended precision); a dtype name gives
    the naive evaluation in that dtype. Of the steps, ``attention_distribution``
    follows a declared convention for fully masked rows as the composites do;
    the other steps, the local distributions included (whose empty windows no
    library convention covers), are judged by the spec alone.
    """
    if case.is_step:
        result, _, _ = run_reference(case, conventions, dtype)
        result = np.asarray(result, dtype=np.float64)
        if case.function == "attention_distribution":
            result = _distribution_convention(case, conventions, result)
        return Evaluation.of_result(result)
    context, weights, lse = run_reference(case, conventions, dtype)
    context = np.asarray(context, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    evaluation = _apply_convention(case, conventions, context, weights)
    if lse is None:
        return evaluation
    return replace(evaluation, lse=np.asarray(lse, dtype=np.float64))


def _distribution_convention(
    case: Case, conventions: Conventions, weights: Float64Array
) -> Float64Array:
    """``attention_distribution``'s rows with no allowed key, as the declared convention
    fills them (uniform weights or NaN)."""
    rule = conventions.fully_masked_row
    rows = ~np.broadcast_to(step_allowed(case), weights.shape).any(axis=-1)  # [..., Tq]
    if rule not in ("uniform", "nan") or not rows.any():
        return weights
    weights = weights.copy()
    weights[rows] = np.nan if rule == "nan" else 1.0 / weights.shape[-1]
    return weights


def _apply_convention(
    case: Case, conventions: Conventions, context: Float64Array, weights: Float64Array
) -> Evaluation:
    """Replace the spec's zero rows by what the declared convention gives instead."""
    rows = fully_masked_rows(case, conventions)
    rule = conventions.fully_masked_row
    if rule in ("zero", "raises", "unsupported") or not rows.any():
        return Evaluation(context, weights)
    context, weights = context.copy(), weights.copy()
    rows_w = np.broadcast_to(rows, weights.shape[:-1])
    rows_c = np.broadcast_to(rows, context.shape[:-1])
    if rule == "nan":
        weights[rows_w] = np.nan
        context[rows_c] = np.nan
        return Evaluation(context, weights)
    # uniform: every key weighs 1/Tk, so the context is the mean of all values
    values = np.repeat(case.value, case.groups, axis=-3) if case.groups > 1 else case.value
    mean = np.broadcast_to(
        np.asarray(values, dtype=np.float64).mean(axis=-2, keepdims=True), context.shape
    )
    weights[rows_w] = 1.0 / weights.shape[-1]
    context[rows_c] = mean[rows_c]
    return Evaluation(context, weights)
