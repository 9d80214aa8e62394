"""Adapter for Keras 3 seq2seq attention layers (``Attention``, ``AdditiveAttention``).

Keras must run on the PyTorch backend: set ``KERAS_BACKEND=torch`` before
Keras is first imported. The layers are checked as :func:`attnspec.attention`
with the score form they compute:

- ``keras.layers.Attention(use_scale=False)`` is the *dot* score;
- ``keras.layers.AdditiveAttention(use_scale=True)`` is the *additive* score
  with ``W_q = W_k = I`` and ``v_a`` its learned ``scale`` vector.

Keras' masks are key-padding masks (``value_mask``, ``True`` = keep), its
causal flag is top-left, and it documents that every row must keep a key:
fully masked rows are outside its domain (declared ``unsupported``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.protocol import Case, Float64Array, Function, Output, ScoreForm

__all__ = ["KerasAttention", "keras_layer"]


def keras_layer(kind: str, dtype: str) -> Any:
    """A fresh Keras attention layer of ``kind`` (``"Attention"`` or ``"AdditiveAttention"``)."""
    if os.environ.get("KERAS_BACKEND", "torch") != "torch":
        raise RuntimeError("the Keras adapter needs KERAS_BACKEND=torch")
    os.environ["KERAS_BACKEND"] = "torch"
    import keras  # type: ignore[import-untyped]

    if kind == "Attention":
        return keras.layers.Attention(use_scale=False, score_mode="dot", dtype=dtype)
    return keras.layers.AdditiveAttention(use_scale=True, dtype=dtype)


@dataclass(frozen=True)
class KerasAttention:
    """A Keras 3 attention layer, checked as :func:`attnspec.attention`.

    Attributes
    ----------
    kind
        ``"Attention"`` (dot score) or ``"AdditiveAttention"`` (additive score).
    """

    kind: str = "Attention"
    name: str = "keras.layers.Attention"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(
        default_factory=lambda: Conventions.declare(fully_masked_row="unsupported")
    )
    features: frozenset[Feature] = frozenset(
        {
            "key_padding_mask",
            "causal",
            "causal_with_mask",
            "weights",
            "gradients",
            "distinct_value_dim",
        }
    )
    layer_factory: Callable[[str, str], Any] = keras_layer

    framework = "keras"
    function: Function = "attention"

    @property
    def score_form(self) -> ScoreForm:
        """Dot for ``Attention``; additive with a free ``v_a`` for ``AdditiveAttention``."""
        if self.kind == "Attention":
            return ScoreForm("dot")
        return ScoreForm("additive", frozenset({"v_a"}))

    def _run(self, case: Case, *, grad: bool) -> tuple[Any, Any, list[torch.Tensor]]:
        dtype = getattr(torch, self.dtype)
        # Note: copies; torch.from_numpy alone would share a float64 array's memory.
        inputs = [
            torch.from_numpy(np.array(case.arrays[n], copy=True, order="C")).to(dtype)
            for n in ("query", "keys", "values")
        ]
        if grad:
            inputs = [x.requires_grad_(True) for x in inputs]
        query, keys, values = inputs
        layer = self.layer_factory(self.kind, self.dtype)
        value_mask = None
        if case.mask is not None:
            # a key-padding mask [B, 1, Tk]: Keras' value_mask [B, Tk], True = keep
            m = np.broadcast_to(case.mask, (query.shape[0], 1, keys.shape[-2]))
            value_mask = torch.from_numpy(np.array(m[:, 0, :], copy=True, order="C"))
        layer.build([tuple(query.shape), tuple(values.shape), tuple(keys.shape)])
        if self.kind == "AdditiveAttention":
            layer.scale.assign(case.arrays["v_a"])
        context, weights = layer(
            [query, values, keys],
            mask=[None, value_mask],
            return_attention_scores=True,
            use_causal_mask=bool(case.options.get("is_causal")),
        )
        return context, weights, inputs

    def forward(self, case: Case, /) -> Output:
        """Run a freshly built layer on the case."""
        before = [np.array(case.arrays[n]) for n in ("query", "keys", "values")]
        with torch.no_grad():
            context, weights, inputs = self._run(case, grad=False)
        names = ("query", "keys", "values")
        mutated = tuple(
            n
            for n, x, b in zip(names, inputs, before, strict=True)
            if not np.array_equal(x.double().numpy(), b, equal_nan=True)
        )
        return Output(
            context.double().numpy(),
            weights.double().numpy(),
            str(context.dtype).removeprefix("torch."),
            mutated,
        )

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients by torch autograd through the layer w.r.t. query, keys and values."""
        context, _, inputs = self._run(case, grad=True)
        torch.autograd.backward((context.double() * torch.from_numpy(cotangent)).sum())
        grads = {}
        for name, x in zip(("query", "keys", "values"), inputs, strict=True):
            grads[name] = (x.grad if x.grad is not None else torch.zeros_like(x)).double().numpy()
        return grads
