"""The oracle is itself tested: broken implementations must fail the clause they break.

Each entry of the catalogue is a plausible, realistic bug (most are bugs users
have reported against real libraries, see the docs' conventions page) planted in
an otherwise sound PyTorch SDPA. The oracle
must fail exactly the clause the bug breaks; a wrong PASS there is the worst
bug attnspec can have. The sound version itself must pass every clause, so a
failure is the bug's doing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from attnref.oracle import Conventions, Feature, check_implementation
from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.checks import CHECKS, checks_for
from attnref.oracle.conventions import FEATURES, RESTRICTIONS
from attnref.oracle.examples import QUICK_EXAMPLES

EXAMPLES = 40
"""Examples per clause for the sound version and the other checks below."""

# the restrictions have their own both-direction tests (tests/test_oracle_restrictions.py)
# the checks of the restrictions, which the kernels here do not offer (skipped by design;
# tests/test_oracle_restrictions.py checks them in both directions)
# the keywords of current kernels, which the catalogue's kernels do not take
KEYWORDS: frozenset[Feature] = RESTRICTIONS | {"sinks", "lse"}
RESTRICTION_CLAUSES = {c.clause for c in CHECKS if (c.requires | c.requires_any) & KEYWORDS}

ALL: frozenset[Feature] = frozenset(FEATURES) - {"key_padding_mask"} - KEYWORDS
"""Every feature but key-padding-only masks (the kernels take masks of any shape)."""


@dataclass(frozen=True)
class Bugs:
    """Switches that plant one bug each into :func:`sdpa`."""

    softmax_axis: int = -1
    scale: Callable[[int, float | None], float] | None = None
    mask_after_softmax: bool = False
    mask_fill: float | None = None
    invert_mask: bool = False
    no_max_shift: bool = False
    fully_masked_nan: bool = False
    bottom_right: bool = False
    ignore_causal: bool = False
    gqa_tiled: bool = False
    detach_keys: bool = False
    wrong_backward: bool = False
    float32_inside: bool = False
    mutate_query: bool = False
    ignore_additive: bool = False
    head0_mask: bool = False
    dropout: float = 0.0
    average_heads: bool = False
    garbage: bool = False


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, a backward that is 1% off: a wrong hand-written gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * 1.01


def sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
    bugs: Bugs = Bugs(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """A sound SDPA in plain PyTorch, with optional planted bugs."""
    dtype = q.dtype
    if bugs.mutate_query:
        q.mul_(1.0 + 2.0**-20)
    if bugs.float32_inside:
        q, k, v = q.float(), k.float(), v.float()
    if bugs.detach_keys:
        k = k.detach()
    if enable_gqa:
        group = q.shape[-3] // k.shape[-3]
        if bugs.gqa_tiled:
            k = k.repeat(1, group, 1, 1)
            v = v.repeat(1, group, 1, 1)
        else:
            k = k.repeat_interleave(group, dim=-3)
            v = v.repeat_interleave(group, dim=-3)
    d = q.shape[-1]
    lam = bugs.scale(d, scale) if bugs.scale else (1 / math.sqrt(d) if scale is None else scale)
    t_q, t_k = q.shape[-2], k.shape[-2]
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])  # type: ignore[no-untyped-call]
    allowed = torch.ones((*batch, t_q, t_k), dtype=torch.bool)
    additive = torch.zeros((), dtype=q.dtype)
    if mask is not None:
        if mask.dtype == torch.bool:
            m = ~mask if bugs.invert_mask else mask
            if bugs.head0_mask and m.dim() == 4:
                m = m[:, :1]
            allowed = allowed & m
        elif not bugs.ignore_additive:
            additive = mask.to(q.dtype)
            allowed = allowed & (mask != -math.inf)
    if is_causal and not bugs.ignore_causal:
        offset = t_k - t_q if bugs.bottom_right else 0
        i = torch.arange(t_q)[:, None]
        j = torch.arange(t_k)[None, :]
        allowed = allowed & (j <= i + offset)
    # unread query rows and keys are zeroed first, so NaN there reaches no gradient
    q = torch.where(allowed.any(-1)[..., None], q, 0.0)
    k = torch.where(allowed.any(-2)[..., None], k, 0.0)
    s = (q @ k.transpose(-1, -2)) * lam
    logits = s + additive
    if bugs.mask_after_softmax:
        w = torch.softmax(logits, dim=bugs.softmax_axis) * allowed
    elif bugs.mask_fill is not None:
        w = torch.softmax(logits.masked_fill(~allowed, bugs.mask_fill), dim=bugs.softmax_axis)
    elif bugs.no_max_shift:
        e = torch.where(allowed, torch.exp(logits), 0.0)
        w = e / e.sum(-1, keepdim=True)
    else:
        filled = logits.masked_fill(~allowed, -math.inf)
        w = torch.softmax(filled, dim=bugs.softmax_axis)
        if not bugs.fully_masked_nan:
            w = torch.nan_to_num(w, nan=0.0)
    if bugs.dropout:
        w = torch.nn.functional.dropout(w, bugs.dropout, training=True)
    context = w @ torch.where(allowed.any(-2)[..., None], v, 0.0)
    if bugs.wrong_backward:
        context = _ScaleGradient.apply(context)  # type: ignore[no-untyped-call]
    if bugs.garbage:
        context = torch.full_like(context, 0.5)
        w = torch.full_like(w, 0.5)
    if bugs.average_heads and w.dim() == 4:
        w = w.mean(dim=1)
    return context.to(dtype) if not bugs.float32_inside else context, w


def implementation(bugs: Bugs, *, features: frozenset[Feature] = ALL) -> TorchSDPA:
    """``sdpa`` with ``bugs`` as an oracle implementation."""

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> Any:
        return sdpa(q, k, v, bugs=bugs, **kwargs)

    return TorchSDPA(fn, name="catalogue", features=features)


CATALOGUE: dict[str, tuple[Bugs, str]] = {
    "softmax over the query axis": (Bugs(softmax_axis=-2), "sdpa.formula"),
    "scale missing (always 1)": (Bugs(scale=lambda d, s: 1.0), "sdpa.default-scale"),
    "default scale 1/d instead of 1/sqrt(d)": (
        Bugs(scale=lambda d, s: 1 / d if s is None else s),
        "sdpa.default-scale",
    ),
    "scale hard-coded to 1/sqrt(64)": (Bugs(scale=lambda d, s: 0.125), "sdpa.formula"),
    "scale override ignored": (
        Bugs(scale=lambda d, s: 1 / math.sqrt(d)),
        "score.scale-applied",
    ),
    "mask applied after the softmax": (Bugs(mask_after_softmax=True), "distribution.mask-polarity"),
    "finite mask constant -1e4": (Bugs(mask_fill=-1e4), "distribution.masked-zero"),
    "inverted mask polarity": (Bugs(invert_mask=True), "distribution.mask-polarity"),
    "no max-shift in the softmax": (Bugs(no_max_shift=True), "distribution.stable"),
    "NaN for fully masked rows": (Bugs(fully_masked_nan=True), "distribution.fully-masked-row"),
    "uniform weights for fully masked rows": (
        Bugs(mask_fill=-1e300),
        "distribution.fully-masked-row",
    ),
    "bottom-right causal while declaring top-left": (
        Bugs(bottom_right=True),
        "sdpa.causal-top-left",
    ),
    "causal flag silently dropped": (Bugs(ignore_causal=True), "sdpa.causal-top-left"),
    "grouped heads tiled instead of interleaved": (
        Bugs(gqa_tiled=True),
        "sdpa.grouped-query-heads",
    ),
    "keys detached from the graph": (Bugs(detach_keys=True), "input.gradient"),
    "hand-written backward 1% off": (Bugs(wrong_backward=True), "input.gradient"),
    "float64 call computed in float32": (Bugs(float32_inside=True), "input.result-dtype"),
    "query scaled in place": (Bugs(mutate_query=True), "input.not-mutated"),
    "additive mask ignored": (Bugs(ignore_additive=True), "distribution.additive-mask"),
    "head 0's mask used for every head": (Bugs(head0_mask=True), "input.batch-broadcast"),
    "dropout left on at inference": (Bugs(dropout=0.1), "sdpa.formula"),
    "head-averaged weights returned": (Bugs(average_heads=True), "sdpa.formula"),
}


def test_catalogue_is_large_enough() -> None:
    """The issue asks for at least 15 planted bugs."""
    assert len(CATALOGUE) >= 15


def test_sound_version_passes_every_clause() -> None:
    """Without planted bugs the catalogue's SDPA conforms, so each failure below is the bug's."""
    report = check_implementation(implementation(Bugs()), max_examples=EXAMPLES)
    assert report.passed, report.table()
    skipped = [r.clause for r in report.results if r.status == "skipped"]
    assert set(skipped) <= RESTRICTION_CLAUSES, report.table()


@pytest.mark.parametrize("bug", list(CATALOGUE), ids=list(CATALOGUE))
def test_bug_fails_the_clause_it_breaks(bug: str) -> None:
    """The oracle fails the clause the bug breaks, in the quick run a user starts with."""
    bugs, clause = CATALOGUE[bug]
    report = check_implementation(
        implementation(bugs), max_examples=QUICK_EXAMPLES, clauses_to_check=frozenset({clause})
    )
    (result,) = report.results
    assert result.status == "failed", report.table()
    assert not report.passed


def test_garbage_fails_every_clause_it_claims() -> None:
    """Forced failure: a constant output fails every clause that checks values."""
    report = check_implementation(implementation(Bugs(garbage=True)), max_examples=EXAMPLES)
    judged = {"input.not-mutated"}  # garbage leaves its inputs alone, rightly
    for result in report.results:
        if result.clause in judged:
            assert result.status == "passed", result
        elif result.clause in RESTRICTION_CLAUSES:
            assert result.status == "skipped", result  # it offers no restrictions
        else:
            assert result.status == "failed", result


def test_every_check_cites_a_registered_clause() -> None:
    """Each oracle check resolves to a clause of the registry."""
    from attnspec import clauses

    for _, clause in checks_for(implementation(Bugs())):
        assert clause in clauses.ids()


def test_counterexample_replays(tmp_path: Any) -> None:
    """A failure saves its shrunk case, and replaying it fails the same clause again."""
    from attnref.oracle import replay

    impl = implementation(Bugs(invert_mask=True))
    report = check_implementation(
        impl,
        max_examples=EXAMPLES,
        clauses_to_check=frozenset({"distribution.mask-polarity"}),
        save_dir=tmp_path,
    )
    (result,) = report.results
    assert result.counterexample is not None
    assert result.reproduce is not None
    assert "--replay" in result.reproduce
    assert replay(impl, "distribution.mask-polarity", result.counterexample).status == "failed"
    assert (
        replay(implementation(Bugs()), "distribution.mask-polarity", result.counterexample).status
        == "passed"
    )


def test_declared_conventions_are_enforced() -> None:
    """A declared NaN-row convention passes NaN rows and fails zero rows."""
    nan_rows = TorchSDPA(
        lambda q, k, v, **kw: sdpa(q, k, v, bugs=Bugs(fully_masked_nan=True), **kw),
        name="nan-rows",
        conventions=Conventions.declare(fully_masked_row="nan"),
        features=ALL,
    )
    zero_rows = TorchSDPA(
        lambda q, k, v, **kw: sdpa(q, k, v, **kw),
        name="zero-rows",
        conventions=Conventions.declare(fully_masked_row="nan"),
        features=ALL,
    )
    only = frozenset({"distribution.fully-masked-row"})
    assert check_implementation(nan_rows, max_examples=EXAMPLES, clauses_to_check=only).passed
    assert not check_implementation(zero_rows, max_examples=EXAMPLES, clauses_to_check=only).passed


def test_seed_reproduces_the_same_cases() -> None:
    """The same seed draws the same cases: the same number of examples to the same failure."""
    impl = implementation(Bugs(softmax_axis=-2))
    only = frozenset({"sdpa.formula"})
    first = check_implementation(impl, max_examples=EXAMPLES, seed=7, clauses_to_check=only)
    second = check_implementation(impl, max_examples=EXAMPLES, seed=7, clauses_to_check=only)
    assert first.results[0].examples == second.results[0].examples
    assert first.results[0].message == second.results[0].message


def test_float32_implementation_is_judged_in_float32() -> None:
    """A float32 implementation passes at float32 accuracy; the same code declared float64 fails."""
    impl32 = TorchSDPA(lambda q, k, v, **kw: sdpa(q, k, v, **kw), dtype="float32", features=ALL)
    report = check_implementation(impl32, max_examples=EXAMPLES)
    assert report.passed, report.table()
    assert np.isfinite([r.worst_ratio for r in report.results if r.status == "passed"]).all()
