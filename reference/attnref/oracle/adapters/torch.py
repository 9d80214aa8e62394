"""Adapters for PyTorch implementations: SDPA-form callables and ``nn.MultiheadAttention``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.protocol import Case, Float64Array, Function, Output, ScoreForm

__all__ = ["TorchMultiheadAttention", "TorchSDPA", "torch_dtype"]

_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def torch_dtype(name: str, /) -> torch.dtype:
    """The torch dtype of a dtype name."""
    return _DTYPES[name]


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _numpy(t: torch.Tensor) -> Float64Array:
    """A float64 NumPy copy of a tensor (exact for every floating dtype)."""
    return np.asarray(t.detach().to(device="cpu", dtype=torch.float64).numpy(), dtype=np.float64)


DEFAULT_SDPA_FEATURES: frozenset[Feature] = frozenset(
    {"scale", "bool_mask", "additive_mask", "causal", "gqa", "gradients", "distinct_value_dim"}
)


@dataclass(frozen=True)
class TorchSDPA:
    """A PyTorch callable of the SDPA form, checked as the spec's SDPA.

    It is held to :func:`attnspec.scaled_dot_product_attention`.

    The callable is ``fn(query, key, value, *, mask=None, scale=None)`` on
    ``[B, H, T, d]`` tensors (``[B, T, H, d]`` with ``layout="BTHD"``) and
    returns the context or ``(context, weights)``. Keyword names are
    configurable, so ``torch.nn.functional.scaled_dot_product_attention`` is
    ``TorchSDPA(F.scaled_dot_product_attention, mask_arg="attn_mask")``.

    Attributes
    ----------
    fn
        The callable.
    name
        Name in reports.
    dtype, device
        What the inputs are converted to.
    conventions
        The conventions it declares.
    features
        The features it offers; ``"weights"`` is detected from its result.
    mask_arg, scale_arg, causal_arg, gqa_arg
        Its keyword names for the mask, the scale, the causal flag and the
        grouped-query flag (``None``: it has none).
    """

    fn: Callable[..., Any]
    name: str = "torch-callable"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(default_factory=Conventions)
    features: frozenset[Feature] = DEFAULT_SDPA_FEATURES
    mask_arg: str | None = "mask"
    scale_arg: str | None = "scale"
    causal_arg: str | None = "is_causal"
    gqa_arg: str | None = "enable_gqa"

    framework = "torch"
    function: Function = "scaled_dot_product_attention"
    score_form: ScoreForm | None = None

    def _tensor(self, a: Any) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if t.dtype == torch.bool:
            return t.to(self.device)
        return t.to(device=self.device, dtype=torch_dtype(self.dtype))

    def _to_layout(self, t: torch.Tensor) -> torch.Tensor:
        return t.transpose(-3, -2) if self.conventions.layout == "BTHD" else t

    def _inputs(self, case: Case) -> tuple[list[torch.Tensor], dict[str, Any]]:
        q, k, v = (self._to_layout(self._tensor(case.arrays[n])) for n in ("query", "key", "value"))
        kwargs: dict[str, Any] = {}
        if case.mask is not None and self.mask_arg is not None:
            mask = self._tensor(case.mask)
            if mask.dtype == torch.bool and self.conventions.mask_polarity == "ignore":
                mask = ~mask
            kwargs[self.mask_arg] = mask
        options = case.options
        if "scale" in options and self.scale_arg is not None:
            kwargs[self.scale_arg] = options["scale"]
        if options.get("is_causal") and self.causal_arg is not None:
            kwargs[self.causal_arg] = True
        if options.get("enable_gqa") and self.gqa_arg is not None:
            kwargs[self.gqa_arg] = True
        return [q, k, v], kwargs

    def _call(self, tensors: list[torch.Tensor], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        result = self.fn(*tensors, **kwargs)
        if isinstance(result, tuple):
            return result[0], result[1]
        return result, None

    def forward(self, case: Case, /) -> Output:
        """Run the callable on the case, checking that it leaves its arguments alone."""
        tensors, kwargs = self._inputs(case)
        before = [t.clone() for t in tensors]
        with torch.no_grad():
            context, weights = self._call(tensors, kwargs)
        names = ("query", "key", "value")
        mutated = tuple(n for n, a, b in zip(names, tensors, before, strict=True) if not a.equal(b))
        return Output(
            context=_numpy(self._to_layout(context)),
            weights=None if weights is None else _numpy(weights),
            dtype=_name(context.dtype),
            mutated=mutated,
        )

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients by autograd of ``sum(context * cotangent)`` w.r.t. query, key, value."""
        tensors, kwargs = self._inputs(case)
        leaves = [t.detach().requires_grad_(True) for t in tensors]
        context, _ = self._call(leaves, kwargs)
        c = torch.from_numpy(cotangent).to(self.device)
        torch.autograd.backward((self._to_layout(context).to(torch.float64) * c).sum())
        grads = {}
        for name, leaf in zip(("query", "key", "value"), leaves, strict=True):
            g = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
            grads[name] = _numpy(self._to_layout(g))
        return grads


@dataclass(frozen=True)
class TorchMultiheadAttention:
    """``torch.nn.MultiheadAttention`` with identity projections, checked as SDPA.

    With ``in_proj`` and ``out_proj`` set to the identity and no biases, the
    module splits ``E = H * d`` features into ``H`` heads and computes the
    spec's SDPA on each, with the default scale. It declares boolean masks
    as *ignore* (``key_padding_mask``/``attn_mask`` convention).
    """

    name: str = "torch.nn.MultiheadAttention"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(
        default_factory=lambda: Conventions.declare(mask_polarity="ignore")
    )
    features: frozenset[Feature] = frozenset({"bool_mask", "additive_mask", "weights", "gradients"})

    framework = "torch"
    function: Function = "scaled_dot_product_attention"
    score_form: ScoreForm | None = None

    def _module(self, heads: int, d: int) -> torch.nn.MultiheadAttention:
        e = heads * d
        mha = torch.nn.MultiheadAttention(
            e,
            heads,
            bias=False,
            batch_first=True,
            device=self.device,
            dtype=torch_dtype(self.dtype),
        )
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.eye(e).repeat(3, 1))
            mha.out_proj.weight.copy_(torch.eye(e))
        return mha.eval()

    def _run(
        self, case: Case, *, grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        q, k, v = (case.arrays[n] for n in ("query", "key", "value"))
        b, h, t_q, d = q.shape
        t_k = k.shape[-2]
        dtype = torch_dtype(self.dtype)

        def flat(a: Float64Array, t: int) -> torch.Tensor:
            x = torch.from_numpy(np.ascontiguousarray(a)).to(self.device, dtype)
            return x.transpose(1, 2).reshape(b, t, h * d)  # [B, T, H*d]

        inputs = [flat(q, t_q), flat(k, t_k), flat(v, t_k)]
        if grad:
            inputs = [x.detach().requires_grad_(True) for x in inputs]
        before = [x.detach().clone() for x in inputs]
        attn_mask = None
        if case.mask is not None:
            m = torch.from_numpy(np.broadcast_to(case.mask, (b, h, t_q, t_k)).copy())
            m = m.reshape(b * h, t_q, t_k).to(self.device)
            attn_mask = ~m if m.dtype == torch.bool else m.to(dtype)
        out, weights = self._module(h, d)(
            *inputs, attn_mask=attn_mask, need_weights=True, average_attn_weights=False
        )
        context = out.reshape(b, t_q, h, d).transpose(1, 2)  # [B, H, Tq, d]
        return context, weights, inputs, before

    def forward(self, case: Case, /) -> Output:
        """Run the module on the case."""
        with torch.no_grad():
            context, weights, inputs, before = self._run(case, grad=False)
        names = ("query", "key", "value")
        mutated = tuple(n for n, a, b in zip(names, inputs, before, strict=True) if not a.equal(b))
        return Output(_numpy(context), _numpy(weights), _name(context.dtype), mutated)

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients by autograd w.r.t. query, key and value (identity projections)."""
        context, _, inputs, _ = self._run(case, grad=True)
        torch.autograd.backward(
            (context.to(torch.float64) * torch.from_numpy(cotangent).to(self.device)).sum()
        )
        b, h, _, d = case.arrays["query"].shape
        grads = {}
        for name, x in zip(("query", "key", "value"), inputs, strict=True):
            assert x.grad is not None
            t = x.shape[1]
            grads[name] = _numpy(x.grad.reshape(b, t, h, d).transpose(1, 2))
        return grads
