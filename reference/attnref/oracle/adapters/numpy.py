"""Adapters for NumPy implementations of the SDPA form and of the step functions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.expected import positional_names
from attnref.oracle.protocol import Case, Float64Array, Function, Output, ScoreForm, Step
from attnspec.errors import ArgumentError

__all__ = ["NumpySDPA", "NumpyStep"]

Vjp = Callable[..., Mapping[str, Any]]

_NAMES = ("query", "key", "value")


def _same(a: Any, b: Any, /) -> bool:
    """Whether ``a`` still equals its snapshot ``b``, NaN matching NaN."""
    floating = np.issubdtype(b.dtype, np.inexact)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=floating))


def _mask_argument(case: Case, conventions: Conventions, dtype: str, /) -> dict[str, Any]:
    """``{"mask": ...}`` as the implementation takes it (its own copy, its polarity and
    dtype), or ``{}`` for a case without a mask."""
    if case.mask is None:
        return {}
    mask = np.array(case.mask, copy=True)
    if mask.dtype == np.bool_:
        return {"mask": ~mask if conventions.mask_polarity == "ignore" else mask}
    return {"mask": mask.astype(dtype)}


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
        kwargs: dict[str, Any] = _mask_argument(case, self.conventions, self.dtype)
        kwargs.update(case.options)
        if case.sinks is not None:
            kwargs["sinks"] = np.array(case.sinks, dtype=self.dtype, copy=True)
        if "lse" in self.features:
            kwargs["return_lse"] = True
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
        lse = None
        if "return_lse" in kwargs:  # (context, lse) or (context, weights, lse)
            context, *middle, lse = result
            weights = middle[0] if middle else None
        else:
            context, weights = result if isinstance(result, tuple) else (result, None)
        mutated = tuple(n for n, a in arguments.items() if not _same(a, before[n]))
        return Output(
            self._back(context),
            None if weights is None else np.asarray(weights, dtype=np.float64),
            str(np.asarray(context).dtype),
            mutated,
            None if lse is None else np.asarray(lse, dtype=np.float64),
        )

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """The gradients of ``vjp_fn``; without one there are none to check."""
        if self.vjp_fn is None:
            raise NotImplementedError(f"{self.name} has no vjp_fn; do not claim 'gradients'")
        arrays, kwargs = self._inputs(case)
        c = np.swapaxes(cotangent, -3, -2) if self.conventions.layout == "BTHD" else cotangent
        kwargs.pop("return_lse", None)  # the gradients are those of the context alone
        grads = self.vjp_fn(*arrays, c.astype(self.dtype), **kwargs)
        named = {n: self._back(grads[n]) for n in ("query", "key", "value")}
        if case.sinks is not None:
            named["sinks"] = np.asarray(grads["sinks"], dtype=np.float64)
        return named


def _step_features(function: Step) -> frozenset[Feature]:
    """A step's default features: a mask where it takes one, the scale, no gradients."""
    if function in ("local_m_distribution", "local_p_distribution"):
        return frozenset({"bool_mask"})
    if function in ("attention_distribution", "log_sum_exp"):
        return frozenset({"bool_mask", "additive_mask"})
    return frozenset({"scale"}) if function == "score_scaled_dot" else frozenset()


@dataclass(frozen=True)
class NumpyStep:
    """A NumPy callable of a step function's form, ``fn(*arrays, **options, mask=...)``.

    It receives the spec's positional arrays in its dtype (an optional one left
    out when the case has none) and returns one array. NumPy has no autodiff:
    pass ``vjp_fn(*arrays, cotangent=..., **same_options)`` returning a
    mapping (or NamedTuple, as :mod:`attnref.vjp` does) of gradients by the
    arrays' names to have gradients checked; :meth:`reference` wires the
    reference and its exact VJP.

    >>> NumpyStep.reference("local_m_distribution", dtype="float32").name
    'attnref.local_m_distribution'

    Attributes
    ----------
    fn, function, name, dtype, device, conventions
        As for :class:`~attnref.oracle.adapters.torch.TorchStep`.
    vjp_fn
        The gradients, or ``None``.
    offered
        The features it offers, or ``None`` for the function's defaults (with
        ``gradients`` when there is a ``vjp_fn`` of a local distribution, the
        steps whose gradients the oracle checks).
    """

    fn: Callable[..., Any]
    function: Step
    name: str = "numpy-step"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(default_factory=Conventions)
    vjp_fn: Callable[..., Any] | None = None
    offered: frozenset[Feature] | None = None

    framework = "numpy"
    score_form: ScoreForm | None = None

    @classmethod
    def reference(
        cls, function: Step, /, *, dtype: str = "float64", conventions: Conventions | None = None
    ) -> NumpyStep:
        """The reference's ``function`` and its exact VJP; it computes in ``dtype`` itself.

        Raises
        ------
        ArgumentError
            If ``dtype`` is ``bfloat16``, which NumPy does not have.
        """
        import attnref
        from attnref import vjp

        if dtype == "bfloat16":
            raise ArgumentError("dtype must be a NumPy dtype; got 'bfloat16'")
        declared = conventions or Conventions.declare(accumulation=dtype)  # type: ignore[arg-type]
        return cls(
            getattr(attnref, function),
            function,
            name=f"attnref.{function}",
            dtype=dtype,
            conventions=declared,
            vjp_fn=getattr(vjp, f"vjp_{function}"),
        )

    @property
    def features(self) -> frozenset[Feature]:
        """The features it offers (:attr:`offered`, or the function's defaults)."""
        if self.offered is not None:
            return self.offered
        local = self.function in ("local_m_distribution", "local_p_distribution")
        gradients: frozenset[Feature] = frozenset({"gradients"} if self.vjp_fn and local else ())
        return _step_features(self.function) | gradients

    def _inputs(self, case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
        names = [n for n in positional_names(self.function) if n in case.arrays]
        arrays = {n: np.array(case.arrays[n], dtype=self.dtype, copy=True) for n in names}
        kwargs: dict[str, Any] = {
            **case.options,
            **_mask_argument(case, self.conventions, self.dtype),
        }
        return arrays, kwargs

    def forward(self, case: Case, /) -> Output:
        """Call the function on its own copies of the arrays, noting any it modifies."""
        arrays, kwargs = self._inputs(case)
        arguments = dict(arrays)
        if "mask" in kwargs:
            arguments["mask"] = kwargs["mask"]
        before = {n: a.copy() for n, a in arguments.items()}
        result = np.asarray(self.fn(*arrays.values(), **kwargs))
        mutated = tuple(n for n, a in arguments.items() if not _same(a, before[n]))
        return Output(np.asarray(result, dtype=np.float64), None, str(result.dtype), mutated)

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """The gradients of ``vjp_fn`` w.r.t. each array; without one there are none."""
        if self.vjp_fn is None:
            raise NotImplementedError(f"{self.name} has no vjp_fn; do not claim 'gradients'")
        arrays, kwargs = self._inputs(case)
        grads = self.vjp_fn(*arrays.values(), **kwargs, cotangent=cotangent.astype(self.dtype))
        named = grads._asdict() if hasattr(grads, "_asdict") else dict(grads)
        return {n: np.asarray(named[n], dtype=np.float64) for n in arrays}
