"""What the spec says a case should give: the truth, the naive same-dtype evaluation,
and the declared conventions applied to both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import attnref
from attnref.oracle.conventions import Conventions
from attnref.oracle.protocol import Case, Float64Array
from attnref.oracle.tolerance import truth_dtype

__all__ = [
    "Evaluation",
    "allowed_positions",
    "evaluate",
    "explicit_mask",
    "fully_masked_rows",
    "numpy_converter",
    "reference_call",
]


@dataclass(frozen=True)
class Evaluation:
    """Context and weights of the reference, as float64 (NaN where the convention says so)."""

    context: Float64Array
    weights: Float64Array


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
    if case.function == "attention":
        if options.pop("is_causal", False):
            mask = explicit_mask(case, conventions)
        positional = tuple(convert(arrays.pop(n)) for n in ("query", "keys", "values"))
        params = {n: convert(a) for n, a in arrays.items()}
        kwargs = {**options, **params, "mask": None if mask is None else convert(mask)}
        return "attention", positional, kwargs
    positional = tuple(convert(arrays[n]) for n in ("query", "key", "value"))
    kwargs = {
        **options,
        "mask": None if mask is None else convert(mask),
        "causal_alignment": conventions.causal_alignment,
    }
    return "scaled_dot_product_attention", positional, kwargs


def explicit_mask(case: Case, conventions: Conventions) -> npt.NDArray[Any] | None:
    """The mask with the causal flag folded in, at full ``[..., Tq, Tk]`` shape."""
    if case.mask is None and not case.options.get("is_causal"):
        return None
    allowed = allowed_positions(case, conventions)
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


def run_reference(case: Case, conventions: Conventions, dtype: str | None) -> tuple[Any, Any]:
    """Context and weights of the reference on ``case`` in ``dtype`` (``None``: the truth)."""
    if dtype == "bfloat16":
        import attnref.torch as twin

        name, positional, kwargs = reference_call(case, conventions, _torch_bfloat16)
        context, weights = getattr(twin, name)(*positional, **kwargs)
        return context.double().numpy(), weights.double().numpy()
    compute = truth_dtype() if dtype is None else np.dtype(dtype)
    name, positional, kwargs = reference_call(case, conventions, numpy_converter(compute))
    result: tuple[Any, Any] = getattr(attnref, name)(*positional, **kwargs)
    return result


def allowed_positions(case: Case, conventions: Conventions) -> npt.NDArray[np.bool_]:
    """``[..., Tq, Tk]`` positions that the mask and the causal flag allow."""
    return case.allowed(conventions.causal_alignment)


def fully_masked_rows(case: Case, conventions: Conventions) -> npt.NDArray[np.bool_]:
    """``[..., Tq]`` rows of the weights with no allowed key (mask and causal flag)."""
    return case.fully_masked_rows(conventions.causal_alignment)


def evaluate(case: Case, conventions: Conventions, *, dtype: str | None = None) -> Evaluation:
    """The reference's result for ``case``, with ``conventions`` applied.

    ``dtype=None`` gives the truth (extended precision); a dtype name gives
    the naive evaluation in that dtype.
    """
    context, weights = run_reference(case, conventions, dtype)
    context = np.asarray(context, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    return _apply_convention(case, conventions, context, weights)


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
