"""Adapter for NumPy implementations of the SDPA form."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.protocol import Case, Float64Array, Function, Output, ScoreForm

__all__ = ["NumpySDPA"]

Vjp = Callable[..., Mapping[str, Any]]

_NAMES = ("query", "key", "value")


def _same(a: Any, b: Any, /) -> bool:
    """Whether ``a`` still equals its snapshot ``b``, NaN matching NaN."""
    floating = np.issubdtype(b.dtype, np.inexact)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=floating))


@dataclass(frozen=True)
class NumpySDPA:
    """A NumPy callable ``fn(query, key, value, *, mask=None, scale=None, ...)``.

    It receives arrays of its dtype in the declared layout and mask polarity
    and returns the context or ``(context, weights)``. NumPy has no autodiff:
    pass ``vjp_fn(query, key, value, cotangent, **same_options)`` returning
    ``{"query": ..., "key": ..., "value": ...}`` and add ``"gradients"`` to
    the features to have gradients checked. bfloat16 is not a NumPy dtype.

    >>> import attnref
    >>> from attnref.oracle.adapters.numpy import NumpySDPA
    >>> impl = NumpySDPA(attnref.scaled_dot_product_attention, name="attnref")
    >>> impl.function
    'scaled_dot_product_attention'
    """

    fn: Callable[..., Any]
    name: str = "numpy-callable"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(default_factory=Conventions)
    features: frozenset[Feature] = frozenset(
        {"scale", "bool_mask", "additive_mask", "causal", "gqa", "distinct_value_dim", "weights"}
    )
    vjp_fn: Vjp | None = None

    framework = "numpy"
    function: Function = "scaled_dot_product_attention"
    score_form: ScoreForm | None = None

    def _inputs(self, case: Case) -> tuple[list[Any], dict[str, Any]]:
        swap = self.conventions.layout == "BTHD"
        # Note: copies (never views of the case), so that a function writing into its
        # arguments is reported by input.not-mutated and cannot change the case.
        arrays = [
            np.array(
                np.swapaxes(case.arrays[n], -3, -2) if swap else case.arrays[n],
                dtype=self.dtype,
                copy=True,
                order="C",
            )
            for n in _NAMES
        ]
        kwargs: dict[str, Any] = {}
        if case.mask is not None:
            mask = np.array(case.mask, copy=True)
            if mask.dtype == np.bool_:
                kwargs["mask"] = ~mask if self.conventions.mask_polarity == "ignore" else mask
            else:
                kwargs["mask"] = mask.astype(self.dtype)
        kwargs.update(case.options)
        return arrays, kwargs

    def _back(self, x: Any) -> Float64Array:
        a = np.asarray(x, dtype=np.float64)
        return np.swapaxes(a, -3, -2) if self.conventions.layout == "BTHD" else a

    def forward(self, case: Case, /) -> Output:
        """Call the function on its own copies of the arrays, noting any it modifies."""
        arrays, kwargs = self._inputs(case)
        arguments = dict(zip(_NAMES, arrays, strict=True))
        if "mask" in kwargs:
            arguments["mask"] = kwargs["mask"]
        before = {n: a.copy() for n, a in arguments.items()}
        result = self.fn(*arrays, **kwargs)
        context, weights = result if isinstance(result, tuple) else (result, None)
        mutated = tuple(n for n, a in arguments.items() if not _same(a, before[n]))
        return Output(
            self._back(context),
            None if weights is None else np.asarray(weights, dtype=np.float64),
            str(np.asarray(context).dtype),
            mutated,
        )

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """The gradients of ``vjp_fn``; without one there are none to check."""
        if self.vjp_fn is None:
            raise NotImplementedError(f"{self.name} has no vjp_fn; do not claim 'gradients'")
        arrays, kwargs = self._inputs(case)
        c = np.swapaxes(cotangent, -3, -2) if self.conventions.layout == "BTHD" else cotangent
        grads = self.vjp_fn(*arrays, c.astype(self.dtype), **kwargs)
        return {n: self._back(grads[n]) for n in ("query", "key", "value")}
