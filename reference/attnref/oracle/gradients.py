"""The gradients the spec prescribes for a case, and the rows no gradient may reach."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from attnref import vjp
from attnref.oracle.conventions import Conventions
from attnref.oracle.expected import (
    evaluate,
    fully_masked_rows,
    numpy_converter,
    reference_call,
    step_allowed,
)
from attnref.oracle.protocol import Case, Float64Array
from attnref.oracle.tolerance import truth_dtype

__all__ = ["reference_vjp", "unread_rows"]


def reference_vjp(
    case: Case, conventions: Conventions, cotangent: Float64Array, /
) -> dict[str, Float64Array]:
    """Gradients of ``sum(context * cotangent)`` w.r.t. the case's query, keys and values.

    The exact VJP of :mod:`attnref.vjp`, evaluated in extended precision
    (the truth). Rows a declared convention fills with the mean of the values
    (``uniform``) contribute ``cotangent / Tk`` to every value row. For a step
    function: the gradients of ``sum(result * cotangent)`` w.r.t. each of its
    arrays.
    """
    compute = truth_dtype()
    name, positional, kwargs = reference_call(case, conventions, numpy_converter(compute))
    if case.is_step:
        c = np.asarray(cotangent, dtype=compute)
        grads = getattr(vjp, f"vjp_{name}")(*positional, **kwargs, cotangent=c)._asdict()
        return {n: np.asarray(g, dtype=np.float64) for n, g in grads.items() if n in case.arrays}
    names = case.names
    spec_rows = Conventions(causal_alignment=conventions.causal_alignment)
    weights_shape = evaluate(case, spec_rows).weights.shape
    pair = (np.asarray(cotangent, dtype=compute), np.zeros(weights_shape, dtype=compute))
    raw = getattr(vjp, f"vjp_{name}")(*positional, **kwargs, cotangent=pair)._asdict()
    differentiated = (*names, "sinks") if "sinks" in case.arrays else names
    grads = {n: np.asarray(raw[n], dtype=np.float64) for n in differentiated}
    if conventions.fully_masked_row == "uniform":
        grads[names[2]] = grads[names[2]] + _uniform_rows_vjp(case, conventions, cotangent)
    return grads


def _uniform_rows_vjp(
    case: Case, conventions: Conventions, cotangent: Float64Array
) -> Float64Array:
    """``d/dvalues`` of the rows that a ``uniform`` convention sets to the mean of the values."""
    values = case.value
    rows = np.broadcast_to(fully_masked_rows(case, conventions), cotangent.shape[:-1])
    c = np.where(rows[..., None], cotangent, 0.0)  # [..., Tq, d_v]
    per_row = c.sum(axis=-2, keepdims=True) / values.shape[-2]  # [..., 1, d_v]
    if case.options.get("enable_gqa"):
        heads_k = values.shape[-3]
        per_row = per_row.reshape(*per_row.shape[:-3], heads_k, -1, 1, per_row.shape[-1]).sum(-3)
    return np.broadcast_to(per_row, values.shape).copy()


def _reduced(unread: npt.NDArray[np.bool_], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """``unread`` at a broadcast shape, brought to an argument's ``shape``: unread only if
    unread at every position the argument was broadcast to."""
    reduced = np.asarray(unread, dtype=np.bool_)
    while reduced.ndim > len(shape):
        reduced = np.asarray(reduced.all(axis=0), dtype=np.bool_)
    axes = tuple(
        i for i, (u, n) in enumerate(zip(reduced.shape, shape, strict=True)) if n == 1 != u
    )
    if axes:
        reduced = np.asarray(reduced.all(axis=axes, keepdims=True), dtype=np.bool_)
    return np.asarray(np.broadcast_to(reduced, shape), dtype=np.bool_)


def unread_rows(case: Case, conventions: Conventions) -> dict[str, npt.NDArray[np.bool_]]:
    """Rows of query/key/value that no output reads, so their gradient must be exactly 0.

    For a local distribution: the scores outside the window and the mask
    (element by element, at the scores' shape) and the positions of rows with
    no allowed key.
    """
    if case.is_step:
        allowed = step_allowed(case)  # [..., Tq, Tk]
        unread = {"scores": _reduced(~allowed, case.arrays["scores"].shape)}
        if "positions" in case.arrays:
            empty = np.asarray(~allowed.any(axis=-1), dtype=np.bool_)  # [..., Tq]
            unread["positions"] = _reduced(empty, case.arrays["positions"].shape)
        return unread
    names = case.names
    allowed = case.allowed(conventions.causal_alignment)
    q_unread = np.asarray(~allowed.any(axis=-1), dtype=np.bool_)  # [..., Tq]
    k_unread = np.asarray(~allowed.any(axis=-2), dtype=np.bool_)  # [..., Tk] per query head
    if case.options.get("enable_gqa"):
        heads_k = case.arrays[names[1]].shape[-3]
        grouped = k_unread.reshape(*k_unread.shape[:-2], heads_k, -1, k_unread.shape[-1])
        k_unread = np.asarray(grouped.all(axis=-2), dtype=np.bool_)
    rows: dict[str, npt.NDArray[np.bool_]] = {names[0]: q_unread, names[1]: k_unread}
    if conventions.fully_masked_row == "zero":
        rows[names[2]] = k_unread  # under "uniform" a fully masked row reads every value
    return rows
