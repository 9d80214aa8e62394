"""Adapter for JAX implementations of the SDPA form, such as ``jax.nn.dot_product_attention``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.protocol import Case, Float64Array, Function, Output, ScoreForm

__all__ = ["JaxSDPA"]

DEFAULT_JAX_FEATURES: frozenset[Feature] = frozenset(
    {
        "scale",
        "bool_mask",
        "additive_mask",
        "causal",
        "causal_with_mask",
        "gqa",
        "gradients",
    }
)
"""What ``jax.nn.dot_product_attention`` offers; its values must have the keys' feature size."""


@dataclass(frozen=True)
class JaxSDPA:
    """A JAX callable of the form of ``jax.nn.dot_product_attention``.

    That is ``fn(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False)``.

    The layout is ``[B, T, N, H]`` (declared ``layout="BTHD"``), the boolean
    mask means *may attend*, an additive mask goes to ``bias``, and grouped
    query heads are taken from the head counts (no flag). float64 needs JAX's
    64-bit mode, which the adapter turns on.
    """

    fn: Callable[..., Any]
    name: str = "jax-callable"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(
        default_factory=lambda: Conventions.declare(layout="BTHD", fully_masked_row="uniform")
    )
    features: frozenset[Feature] = DEFAULT_JAX_FEATURES

    framework = "jax"
    # JAX compiles each operation once per shape (seconds on CPU): draw few shapes.
    compiles_per_shape = True
    function: Function = "scaled_dot_product_attention"
    score_form: ScoreForm | None = None

    def __post_init__(self) -> None:
        if self.dtype == "float64":
            # Note: without 64-bit mode JAX silently computes float64 input in float32.
            jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

    def _array(self, a: Any) -> jax.Array:
        # Note: JAX on CPU may alias a NumPy buffer without copying; a copy keeps the
        # implementation's arrays apart from the case's.
        x = np.array(a, copy=True)
        if x.dtype == np.bool_:
            return jnp.asarray(x)
        return jnp.asarray(x, dtype=getattr(jnp, self.dtype))

    def _layout(self, x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x, -3, -2) if self.conventions.layout == "BTHD" else x

    def _call(self, case: Case) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
        kwargs: dict[str, Any] = {}
        if case.mask is not None:
            mask = np.asarray(case.mask)
            if mask.dtype == np.bool_:
                if self.conventions.mask_polarity == "ignore":
                    mask = ~mask
                kwargs["mask"] = self._array(mask)
            else:
                kwargs["bias"] = self._array(mask)
        if "scale" in case.options:
            kwargs["scale"] = case.options["scale"]
        if case.options.get("is_causal"):
            kwargs["is_causal"] = True

        def call(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
            out = self.fn(self._layout(q), self._layout(k), self._layout(v), **kwargs)
            return self._layout(out)

        return call

    def _inputs(self, case: Case) -> list[jax.Array]:
        return [self._array(case.arrays[n]) for n in ("query", "key", "value")]

    def forward(self, case: Case, /) -> Output:
        """Run the callable on the case (JAX arrays are immutable: nothing can be mutated)."""
        context = self._call(case)(*self._inputs(case))
        return Output(np.asarray(context, dtype=np.float64), None, str(context.dtype))

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients by ``jax.vjp`` w.r.t. query, key and value."""
        context, pullback = jax.vjp(self._call(case), *self._inputs(case))
        grads = pullback(jnp.asarray(cotangent, dtype=context.dtype))
        names = ("query", "key", "value")
        return {n: np.asarray(g, dtype=np.float64) for n, g in zip(names, grads, strict=True)}
