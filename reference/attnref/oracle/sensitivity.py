"""How small an error the oracle catches: planted relative errors in a sound kernel.

A sound SDPA (the math backends' recipe, which accumulates 16-bit inputs in
float32) is given one planted error of relative size ``e``: its scale
multiplied by ``1 + e``, or its gradients by ``1 + e``. For each dtype the
oracle checks it at decreasing ``e`` and the smallest ``e`` it still
rejects is reported. Run through ``nox -s bench`` (``python -m
attnref.oracle.bench --sensitivity``); figures come from this machine's run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.conventions import Feature
from attnref.oracle.rounding import DTYPES
from attnref.oracle.run import check_implementation

__all__ = ["CLAUSES", "ERRORS", "Sensitivity", "planted", "sensitivity"]

ERRORS: tuple[float, ...] = tuple(10.0 ** (-k / 2) for k in range(2, 31))
"""Relative errors tried, from 1e-1 down to 1e-15 in half decades."""

_FEATURES: frozenset[Feature] = frozenset(
    {"scale", "bool_mask", "additive_mask", "causal", "causal_with_mask", "gqa", "gradients"}
)


class _ScaledGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``1 + e``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def planted(kind: str, error: float) -> Callable[..., torch.Tensor]:
    """A sound SDPA whose scale (``kind="scale"``) or gradient is off by ``error``.

    The sound part is the math backends' recipe: 16-bit inputs upcast to
    float32, scores, a softmax over the allowed keys (zero for a row with
    none), the weighted sum, the result cast back.
    """

    def sdpa(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        scale: float | None = None,
        is_causal: bool = False,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        dtype = q.dtype
        if dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        if enable_gqa:
            group = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
        lam = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
        if kind == "scale":
            lam *= 1 + error
        s = (q @ k.transpose(-1, -2)) * lam
        allowed = torch.ones(s.shape, dtype=torch.bool)
        if mask is not None and mask.dtype == torch.bool:
            allowed = allowed & mask
        elif mask is not None:
            s = s + mask.to(s.dtype)
            allowed = allowed & (mask != -math.inf)
        if is_causal:
            t_q, t_k = s.shape[-2], s.shape[-1]
            allowed = allowed & torch.ones(t_q, t_k, dtype=torch.bool).tril()
        live = allowed.any(-1, keepdim=True)
        filled = torch.where(allowed, s, -math.inf)
        w = torch.where(live, torch.softmax(torch.where(live, filled, 0.0), -1), 0.0)
        out = (w @ v).to(dtype)
        if kind == "gradient":
            out = _ScaledGradient.apply(out, 1 + error)  # type: ignore[no-untyped-call]
        return out

    return sdpa


@dataclass(frozen=True)
class Sensitivity:
    """The smallest planted relative error caught, per dtype and kind."""

    dtype: str
    kind: str
    clauses: str
    smallest_caught: float | None
    largest_missed: float | None


CLAUSES: dict[str, frozenset[str]] = {
    "scale": frozenset(
        {"sdpa.formula", "sdpa.default-scale", "score.scale-applied", "sdpa.causal-top-left"}
    ),
    "gradient": frozenset({"input.gradient"}),
}
"""The clauses a planted error of each kind is judged by: those whose cases it reaches."""


def _caught(kind: str, error: float, dtype: str, examples: int) -> bool:
    impl = TorchSDPA(
        planted(kind, error), name=f"{kind}+{error:.0e}", dtype=dtype, features=_FEATURES
    )
    report = check_implementation(impl, max_examples=examples, clauses_to_check=CLAUSES[kind])
    return not report.passed


def sensitivity(*, dtypes: Sequence[str] = DTYPES, examples: int = 60) -> list[Sensitivity]:
    """For each dtype, the smallest scale and gradient error the oracle rejects.

    Errors are tried from large to small; the search stops at the first one
    that passes (the planted error is then below what the dtype resolves on
    the drawn cases).

    Raises
    ------
    AssertionError
        If the kernel without a planted error is rejected: the figures would
        then measure that, not the oracle's sensitivity.
    """
    for dtype in dtypes:
        for kind in CLAUSES:
            assert not _caught(kind, 0.0, dtype, examples), (dtype, kind)
    rows = []
    for dtype in dtypes:
        for kind in CLAUSES:
            smallest: float | None = None
            missed: float | None = None
            for error in ERRORS:
                if _caught(kind, error, dtype, examples):
                    smallest = error
                else:
                    missed = error
                    break
            clauses = ", ".join(sorted(CLAUSES[kind]))
            rows.append(Sensitivity(dtype, kind, clauses, smallest, missed))
    return rows
