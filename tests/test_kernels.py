"""The kernels of :mod:`kernels`: the correct ones compute the spec's SDPA, the planted bugs do not.

The truth is the PyTorch twin :func:`attnref.torch.scaled_dot_product_attention`
in float64, differentiated by autograd. A correct kernel must agree with it to
rounding on a grid of shapes, masks and options; each bug must differ from it
by a clear margin on an input meeting its trigger and agree on inputs that miss
the trigger only just, so that the oracle tests that use these kernels test the
oracle and not the kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import pytest
import torch

import attnref.torch as twin
from attnspec import clauses
from kernels import BUGS, CORRECT, DTYPES, LONG_KEYS, AttentionFn

MaskKind = Literal["none", "bool", "additive", "zero-additive"]

FLOAT64 = 1e-12
"""Agreement in float64, relative to the largest magnitude compared: sums of up to
a few hundred terms and exp() of logits up to a few hundred stay below 1e-13."""

LOW: dict[torch.dtype, float] = {
    torch.bfloat16: 4 * 2.0**-8,
    torch.float16: 4 * 2.0**-11,
}
"""Agreement of a low-precision call with the float64 truth on the same rounded inputs:
a few units of the dtype's roundoff, the rounding of the output and of P (and dS) before
their matmuls; a loose sanity check, not an accuracy claim."""

LOW_GRADIENT = 2
"""Gradients round P and dS before two more matmuls each, so they get this many times
the context's allowance."""

MARGIN = 1e-6
"""A bug must move some compared number by more than this, relative to its magnitude:
six orders of magnitude above float64 rounding, so no rounding can be mistaken for it."""


@dataclass(frozen=True)
class Case:
    """One call of a kernel: sizes, mask and options.

    ``mask_shape`` spells the mask's shape over ``[B, H, Tq, Tk]`` with ``B``,
    ``H``, ``Q``, ``K`` for the full axis and ``1`` for a broadcast one.
    ``empty_rows`` leaves some query rows with no allowed key.
    """

    id: str
    batch: int = 1
    heads_k: int = 1
    groups: int = 1
    t_q: int = 4
    t_k: int = 4
    d: int = 8
    d_v: int = 5
    mask: MaskKind = "none"
    mask_shape: str = "BHQK"
    empty_rows: bool = False
    causal: bool = False
    scale: float | None = None
    gqa: bool = False
    seed: int = 0

    def shape_of(self, axes: str) -> tuple[int, ...]:
        sizes = {"B": self.batch, "H": self.heads_k * self.groups, "Q": self.t_q, "K": self.t_k}
        return tuple(sizes.get(a, 1) for a in axes)


def _inputs(
    case: Case, dtype: torch.dtype = torch.float64
) -> tuple[list[torch.Tensor], dict[str, object]]:
    """Random ``[q, k, v]`` rounded to ``dtype`` and the keyword arguments of the call."""
    gen = torch.Generator().manual_seed(case.seed)
    h_q = case.heads_k * case.groups

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)

    q = normal(case.batch, h_q, case.t_q, case.d)
    k = normal(case.batch, case.heads_k, case.t_k, case.d)
    v = normal(case.batch, case.heads_k, case.t_k, case.d_v)
    kwargs: dict[str, object] = {
        "is_causal": case.causal,
        "enable_gqa": case.gqa or case.groups > 1,
    }
    if case.scale is not None:
        kwargs["scale"] = case.scale
    if case.mask != "none":
        shape = case.shape_of(case.mask_shape)
        allowed = torch.rand(shape, generator=gen, dtype=torch.float64) < 0.7
        if case.empty_rows:
            # the first and last query rows (or, with no query axis, batch item 0) read nothing
            if "Q" in case.mask_shape:
                allowed[..., 0, :] = False
                allowed[..., -1, :] = False
            else:
                allowed[0] = False
        if case.mask == "bool":
            kwargs["mask"] = allowed
        else:
            bias = 2 * torch.randn(shape, generator=gen, dtype=torch.float64)
            if case.mask == "zero-additive":
                bias = torch.zeros(shape, dtype=torch.float64)
            kwargs["mask"] = torch.where(allowed, bias, -math.inf).to(dtype)
    return [q, k, v], kwargs


@dataclass(frozen=True)
class Result:
    """Context, weights and the gradients of ``sum(context * cotangent)`` w.r.t. q, k, v."""

    context: torch.Tensor
    weights: torch.Tensor
    grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    def parts(self) -> dict[str, torch.Tensor]:
        names = ("d/dq", "d/dk", "d/dv")
        return {
            "context": self.context,
            "weights": self.weights,
            **dict(zip(names, self.grads, strict=True)),
        }


def _run(
    fn: AttentionFn,
    tensors: list[torch.Tensor],
    kwargs: dict[str, object],
    cotangent: torch.Tensor | None = None,
) -> Result:
    """Call ``fn`` on fresh leaves and differentiate ``sum(context * cotangent)`` by autograd."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    context, weights = fn(*leaves, **kwargs)  # type: ignore[arg-type]
    if cotangent is None:
        gen = torch.Generator().manual_seed(1)
        cotangent = torch.randn(context.shape, generator=gen, dtype=torch.float64)
    torch.autograd.backward((context.to(torch.float64) * cotangent).sum())
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]
    return Result(context.detach(), weights.detach(), (grads[0], grads[1], grads[2]))


def _truth(tensors: list[torch.Tensor], kwargs: dict[str, object]) -> Result:
    """The float64 twin on the same (possibly low-precision) inputs, upcast exactly."""
    wide = [t.to(torch.float64) for t in tensors]
    options = dict(kwargs)
    mask = options.get("mask")
    if isinstance(mask, torch.Tensor) and mask.dtype != torch.bool:
        options["mask"] = mask.to(torch.float64)
    return _run(twin.scaled_dot_product_attention, wide, options)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    """``max |got - want| / max(max |want|, 1)``; NaN counts as infinitely far.

    The floor 1 is the size of the terms (inputs and cotangent are standard
    normal) where the result cancels to 0: with one key the gradients in q and
    k are exactly 0, which a kernel computing ``dO V^T - rowsum(dO * O)``
    reaches only to rounding.
    """
    diff = (got.to(torch.float64) - want).abs().nan_to_num(nan=math.inf)
    return float(diff.max()) / max(float(want.abs().max()), 1.0)


def _distances(got: Result, want: Result) -> dict[str, float]:
    want_parts = want.parts()
    return {name: _relative(t, want_parts[name]) for name, t in got.parts().items()}


# --- the float64 grid -----------------------------------------------------------------------

_KEY_LENGTHS = (1, 2, 15, 16, 17, 31, 33, 63, 64, 65, 129, 257)
_FEATURE_DIMS = (1, 8, 64, 128)


def _styles(case: Case) -> list[Case]:
    """The feature styles the grid cycles through, applied to a base case."""
    return [
        replace(case, id=f"{case.id}-plain"),
        replace(case, id=f"{case.id}-bool-QK", mask="bool", mask_shape="QK"),
        replace(case, id=f"{case.id}-additive-11QK", mask="additive", mask_shape="11QK"),
        replace(case, id=f"{case.id}-causal", causal=True),
        replace(
            case, id=f"{case.id}-causal-bool-B1QK", causal=True, mask="bool", mask_shape="B1QK"
        ),
        replace(case, id=f"{case.id}-gqa-bool-1HQK", groups=2, mask="bool", mask_shape="1HQK"),
        replace(
            case,
            id=f"{case.id}-additive-B11K-negscale",
            mask="additive",
            mask_shape="B11K",
            scale=-0.7,
        ),
        replace(
            case,
            id=f"{case.id}-emptyrows-BHQK-zeroscale",
            mask="bool",
            empty_rows=True,
            scale=0.0,
        ),
        replace(
            case,
            id=f"{case.id}-gqa-causal-additive-BHQK",
            groups=3,
            causal=True,
            mask="additive",
            mask_shape="BHQK",
            scale=0.3,
        ),
    ]


def _grid() -> list[Case]:
    """Every key length with Tq = 1, Tq = Tk and one other Tq, each in a different style.

    Styles and feature sizes rotate so that each appears with every kind of Tq
    without the full product; long sequences get one batch item and one head.
    """
    cases = []
    for n, t_k in enumerate(_KEY_LENGTHS):
        other = t_k + t_k // 2 + 1 if n % 2 else max(1, t_k // 2)
        for r, t_q in enumerate((1, t_k, other)):
            small = t_k <= 64
            base = Case(
                id=f"Tq{t_q}-Tk{t_k}",
                batch=2 if small else 1,
                heads_k=2 if small else 1,
                t_q=t_q,
                t_k=t_k,
                d=_FEATURE_DIMS[(n + r) % 4],
                d_v=3 if (n + r) % 2 else 8,
                seed=3 * n + r,
            )
            style = _styles(base)[(n + 4 * r) % 9]
            cases.append(replace(style, id=f"{style.id}-d{style.d}"))
    return cases


_EXTRA = [
    Case("all-masked", batch=2, heads_k=2, t_q=5, t_k=40, mask="bool", empty_rows=True),
    Case(
        "all-keys-masked-B11K",
        batch=2,
        t_q=3,
        t_k=70,
        mask="bool",
        mask_shape="B11K",
        empty_rows=True,
    ),
    Case("additive-emptyrows", batch=2, t_q=35, t_k=35, mask="additive", empty_rows=True),
    Case("causal-Tq-gt-Tk", t_q=50, t_k=20, causal=True, scale=-1.5),
    Case("causal-empty-first-row", t_q=40, t_k=40, causal=True, mask="bool", empty_rows=True),
    Case("gqa-4-groups-bool-BHQK", heads_k=2, groups=4, t_q=9, t_k=70, mask="bool"),
    Case("gqa-flag-one-group", heads_k=3, gqa=True, t_q=6, t_k=33),
    Case("large-scale", t_q=10, t_k=50, d=4, scale=100.0),
    Case("tiny-scale", t_q=10, t_k=50, scale=1e-3),
]

GRID = _grid() + _EXTRA


@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_kernel_matches_twin_in_float64(name: str, case: Case) -> None:
    """Context, weights and autograd gradients agree with the float64 twin to rounding."""
    tensors, kwargs = _inputs(case)
    got = _run(CORRECT[name].fn, tensors, kwargs)
    distances = _distances(got, _truth(tensors, kwargs))
    assert max(distances.values()) <= FLOAT64, distances
    assert got.context.dtype == torch.float64


_LOW_CASES = [
    Case("plain-Tk65", batch=2, heads_k=2, t_q=20, t_k=65, d=16),
    Case("decode-Tk257", t_q=1, t_k=257, d=64, mask="bool", mask_shape="B11K"),
    Case("causal-bool", batch=2, t_q=33, t_k=33, causal=True, mask="bool", mask_shape="B1QK"),
    Case(
        "gqa-additive-emptyrows",
        heads_k=2,
        groups=2,
        t_q=17,
        t_k=40,
        mask="additive",
        empty_rows=True,
    ),
]


@pytest.mark.parametrize("case", _LOW_CASES, ids=[c.id for c in _LOW_CASES])
@pytest.mark.parametrize("dtype", list(LOW), ids=str)
@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_kernel_is_close_in_low_precision(
    name: str, dtype: torch.dtype, case: Case
) -> None:
    """In float16 and bfloat16 the result is within a few units of the dtype, in that dtype."""
    tensors, kwargs = _inputs(case, dtype)
    got = _run(CORRECT[name].fn, tensors, kwargs)
    distances = _distances(got, _truth(tensors, kwargs))
    allowance = {"context": LOW[dtype], "weights": LOW[dtype]}
    for part, distance in distances.items():
        assert distance <= allowance.get(part, LOW_GRADIENT * LOW[dtype]), (part, distances)
    for t in (got.context, got.weights, *got.grads):
        assert t.dtype == dtype


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_kernel_ignores_nan_where_nothing_reads(name: str) -> None:
    """NaN in unread query rows, keys and values changes nothing and gets exactly zero gradient."""
    case = Case("poison", batch=2, heads_k=2, t_q=6, t_k=40, mask="bool", empty_rows=True)
    (q, k, v), kwargs = _inputs(case)
    mask = kwargs["mask"]
    assert isinstance(mask, torch.Tensor)
    mask[..., :, 37:] = False  # keys 37.. are read by no query
    q[:, :, 0] = math.nan  # row 0 reads nothing (empty_rows)
    k[..., 37:, :] = math.nan
    v[..., 37:, :] = math.inf
    got = _run(CORRECT[name].fn, [q, k, v], kwargs)
    distances = _distances(got, _truth([q, k, v], kwargs))
    assert max(distances.values()) <= FLOAT64, distances
    dq, dk, dv = got.grads
    assert torch.equal(got.context[:, :, 0], torch.zeros_like(got.context[:, :, 0]))
    assert not dq[:, :, 0].any()
    assert not dk[..., 37:, :].any()
    assert not dv[..., 37:, :].any()


def test_correct_kernels_accept_every_dtype() -> None:
    """Each correct kernel declares the four dtypes the oracle draws."""
    for name, kernel in CORRECT.items():
        assert set(kernel.dtypes) == set(DTYPES), name


# --- the planted bugs -----------------------------------------------------------------------

PLAIN = Case("plain", batch=2, heads_k=2, t_q=7, t_k=7, d=8, d_v=4)
"""The plain small case: Tk <= 9 (one tile, one split), default scale, no features."""

_P = PLAIN


@dataclass(frozen=True)
class Trigger:
    """An input meeting a bug's trigger, and inputs that miss it only just."""

    meets: Case
    misses: tuple[Case, ...]


TRIGGERS: dict[str, Trigger] = {
    "backward forgets the causal mask": Trigger(
        replace(_P, id="causal", causal=True),
        (replace(_P, id="bool-mask", mask="bool"),),
    ),
    "backward uses the default scale": Trigger(
        replace(_P, id="scale-0.3", scale=0.3),
        (
            replace(_P, id="scale-default-given", scale=1 / math.sqrt(8)),
            replace(_P, id="causal-bool", causal=True, mask="bool"),
        ),
    ),
    "backward forgets the additive mask": Trigger(
        replace(_P, id="additive", mask="additive"),
        (
            replace(_P, id="bool", mask="bool"),
            replace(_P, id="zero-additive", mask="zero-additive"),
        ),
    ),
    "backward takes one query head per group": Trigger(
        replace(_P, id="gqa-2-groups", groups=2),
        (replace(_P, id="gqa-1-group", gqa=True),),
    ),
    "long sequences drop the partial last key tile": Trigger(
        replace(_P, id=f"Tk{LONG_KEYS + 1}", batch=1, t_k=LONG_KEYS + 1),
        (
            replace(_P, id=f"Tk{LONG_KEYS - 1}", batch=1, t_k=LONG_KEYS - 1),
            replace(_P, id="Tk96", batch=1, t_k=96),
        ),
    ),
    "online softmax accumulator not rescaled": Trigger(
        replace(_P, id="Tk40", t_k=40),
        (replace(_P, id="Tk32", t_k=32), replace(_P, id="Tk32-causal-bool", t_k=32, causal=True)),
    ),
    "split-K partials merged without the max correction": Trigger(
        Case("decode-Tk2", t_q=1, t_k=2),
        (Case("decode-Tk1", t_q=1, t_k=1),),
    ),
    "mask head axis indexed by the key head": Trigger(
        replace(_P, id="gqa-bool-BHQK", groups=2, mask="bool", mask_shape="BHQK"),
        (
            replace(_P, id="gqa-bool-B1QK", groups=2, mask="bool", mask_shape="B1QK"),
            replace(_P, id="bool-BHQK", mask="bool", mask_shape="BHQK"),
        ),
    ),
    "additive mask dropped on the causal path": Trigger(
        replace(_P, id="causal-additive", causal=True, mask="additive"),
        (
            replace(_P, id="additive", mask="additive"),
            replace(_P, id="causal-zero-additive", causal=True, mask="zero-additive"),
            replace(_P, id="causal-bool", causal=True, mask="bool"),
        ),
    ),
    "batch item 0's mask used for every item": Trigger(
        replace(_P, id="bool-B1QK", mask="bool", mask_shape="B1QK"),
        (
            replace(_P, id="bool-11QK", mask="bool", mask_shape="11QK"),
            replace(_P, id="one-item-bool-B1QK", batch=1, mask="bool", mask_shape="B1QK"),
        ),
    ),
    "scale override ignored on the causal path": Trigger(
        replace(_P, id="causal-scale-0.3", causal=True, scale=0.3),
        (
            replace(_P, id="causal", causal=True),
            replace(_P, id="scale-0.3", scale=0.3),
        ),
    ),
}
"""For each bug of :data:`kernels.BUGS`, where it shows and where it must not."""

_MISSES = [(bug, case) for bug, trigger in TRIGGERS.items() for case in trigger.misses]


def _backward_only(bug: str) -> bool:
    return BUGS[bug].clause == "input.gradient"


def test_every_bug_has_a_trigger_and_a_registered_clause() -> None:
    """The trigger table covers the bug table, and each bug cites a clause of the registry."""
    assert set(TRIGGERS) == set(BUGS)
    for name, bug in BUGS.items():
        assert bug.clause in clauses.ids(), name
        assert bug.trigger.endswith("."), name


@pytest.mark.parametrize("bug", list(BUGS))
def test_bug_differs_from_twin_on_its_trigger(bug: str) -> None:
    """On an input meeting its trigger the bug moves the numbers by far more than rounding."""
    tensors, kwargs = _inputs(TRIGGERS[bug].meets)
    distances = _distances(_run(BUGS[bug].fn, tensors, kwargs), _truth(tensors, kwargs))
    assert max(distances.values()) > MARGIN, distances
    if _backward_only(bug):
        forward = max(distances["context"], distances["weights"])
        gradient = max(distances["d/dq"], distances["d/dk"], distances["d/dv"])
        assert forward <= FLOAT64 < MARGIN < gradient, distances


@pytest.mark.parametrize(("bug", "case"), _MISSES, ids=[f"{b}-{c.id}" for b, c in _MISSES])
def test_bug_agrees_with_twin_just_off_its_trigger(bug: str, case: Case) -> None:
    """On inputs that miss its trigger only just, the bug is indistinguishable from correct."""
    tensors, kwargs = _inputs(case)
    distances = _distances(_run(BUGS[bug].fn, tensors, kwargs), _truth(tensors, kwargs))
    assert max(distances.values()) <= FLOAT64, distances


@pytest.mark.parametrize("bug", list(BUGS))
def test_bug_on_the_plain_small_case(bug: str) -> None:
    """On the plain small case a subtle bug agrees with the twin; the others say they do not."""
    tensors, kwargs = _inputs(PLAIN)
    distances = _distances(_run(BUGS[bug].fn, tensors, kwargs), _truth(tensors, kwargs))
    if BUGS[bug].plain_agrees:
        assert max(distances.values()) <= FLOAT64, distances
    else:
        assert max(distances.values()) > MARGIN, distances
