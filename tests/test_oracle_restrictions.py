"""The oracle's checks of the restrictions (softcap, window, query offset, key lengths), in both
directions: planted bugs fail the clause they break, correct kernels conform.

The kernels here are written independently of :mod:`attnref.masking`: a "math backend"
SDPA that builds its allowed set by index arithmetic, caps the scores, fills the
disallowed scores with -inf and takes a softmax, in the dtype or with float32
accumulation. Each planted bug changes one line of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from attnref.oracle import check_implementation
from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.conventions import FEATURES as EVERY_FEATURE
from attnref.oracle.conventions import RESTRICTIONS, Conventions, Feature
from attnref.oracle.targets import _twin

# every feature but key-padding-only masks, grouped heads, sinks and the log-sum-exp, which
# the math kernel lacks
FEATURES: frozenset[Feature] = frozenset(EVERY_FEATURE) - {
    "key_padding_mask",
    "gqa",
    "sinks",
    "lse",
}
RESTRICTION_CLAUSES = (
    "sdpa.softcap",
    "sdpa.window",
    "sdpa.query-offset",
    "sdpa.key-lengths",
    "sdpa.restrictions-combine",
)


@dataclass(frozen=True)
class Bugs:
    """One planted bug each (all off: the correct kernel)."""

    cap_after_mask: bool = False
    cap_without_division: bool = False
    window_strict_left: bool = False
    window_from_row: bool = False
    lengths_inclusive: bool = False
    lengths_keep_global_alignment: bool = False
    offset_first_item_only: bool = False
    accumulate_in_float32: bool = False


def kernel(bugs: Bugs, *, bottom_right: bool = False) -> Any:
    """A math-backend SDPA with the restrictions, as a plain callable."""

    def sdpa(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        scale: float | None = None,
        is_causal: bool = False,
        softcap: float | None = None,
        window: tuple[int | None, int | None] | None = None,
        query_offset: int | torch.Tensor | None = None,
        key_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = q.dtype
        if bugs.accumulate_in_float32 or dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        t_q, t_k, batch = q.shape[-2], k.shape[-2], q.shape[0]
        lam = q.shape[-1] ** -0.5 if scale is None else scale
        s = lam * (q @ k.transpose(-1, -2))  # [B, H, Tq, Tk]
        if softcap is not None and not bugs.cap_after_mask:
            s = softcap * torch.tanh(s if bugs.cap_without_division else s / softcap)
        if mask is not None and mask.dtype != torch.bool:
            s = s + mask.to(s.dtype)
        if softcap is not None and bugs.cap_after_mask:
            s = softcap * torch.tanh(s / softcap)
        i = torch.arange(t_q).view(1, 1, t_q, 1)
        j = torch.arange(t_k).view(1, 1, 1, t_k)
        lengths = (
            torch.full((batch,), t_k) if key_lengths is None else key_lengths.to(torch.int64)
        ).view(batch, 1, 1, 1)
        if query_offset is not None:
            offset = torch.as_tensor(query_offset).to(torch.int64)
            if offset.ndim == 1:
                offset = offset[:1] if bugs.offset_first_item_only else offset
                offset = offset.view(-1, 1, 1, 1)
        elif bottom_right:
            use_lengths = key_lengths is not None and not bugs.lengths_keep_global_alignment
            offset = (lengths if use_lengths else torch.tensor(t_k)) - t_q
        else:
            offset = torch.tensor(0)
        position = i if bugs.window_from_row else i + offset
        allowed = torch.ones((batch, 1, t_q, t_k), dtype=torch.bool)
        allowed = allowed & ((j <= lengths) if bugs.lengths_inclusive else (j < lengths))
        if is_causal:
            allowed = allowed & (j <= i + offset)
        if window is not None:
            left, right = window
            if left is not None:
                allowed = allowed & (
                    (j > position - left) if bugs.window_strict_left else (j >= position - left)
                )
            if right is not None:
                allowed = allowed & (j <= position + right)
        if mask is not None:
            allowed = allowed & (mask if mask.dtype == torch.bool else mask != -torch.inf)
        s = s.masked_fill(~allowed, -torch.inf)
        live = allowed.any(dim=-1, keepdim=True)
        weights = torch.softmax(s.masked_fill(~live, 0.0), dim=-1) * live
        return (weights @ v).to(dtype), weights.to(dtype)

    return sdpa


def implementation(bugs: Bugs, *, dtype: str = "float64", bottom_right: bool = False) -> TorchSDPA:
    conventions = Conventions(causal_alignment="bottom_right" if bottom_right else "top_left")
    return TorchSDPA(
        kernel(bugs, bottom_right=bottom_right),
        name="math-restrictions",
        dtype=dtype,
        features=FEATURES,
        conventions=conventions,
    )


def _statuses(impl: Any, *, examples: int, seed: int = 0) -> dict[str, str]:
    report = check_implementation(
        impl, max_examples=examples, seed=seed, clauses_to_check=frozenset(RESTRICTION_CLAUSES)
    )
    return {r.clause: r.status for r in report.results}


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("bottom_right", [False, True])
def test_a_correct_math_kernel_with_restrictions_conforms(dtype: str, bottom_right: bool) -> None:
    """sdpa.softcap, sdpa.window, sdpa.query-offset, sdpa.key-lengths,
    sdpa.restrictions-combine: an independently written correct kernel passes every
    restriction clause, in float64, float32 and bfloat16 (float32 accumulation), in both
    alignments."""
    impl = implementation(Bugs(), dtype=dtype, bottom_right=bottom_right)
    statuses = _statuses(impl, examples=30)
    assert statuses == dict.fromkeys(RESTRICTION_CLAUSES, "passed"), statuses


def test_the_twin_conforms_to_the_restriction_clauses() -> None:
    """sdpa.restrictions-combine: the PyTorch twin, a built-in target, passes them too."""
    statuses = _statuses(_twin(), examples=30, seed=3)
    assert statuses == dict.fromkeys(RESTRICTION_CLAUSES, "passed"), statuses


PLANTED = {
    "cap_after_mask": ("sdpa.softcap", False),
    "cap_without_division": ("sdpa.softcap", False),
    "window_strict_left": ("sdpa.window", False),
    "window_from_row": ("sdpa.query-offset", False),
    "lengths_inclusive": ("sdpa.key-lengths", False),
    "lengths_keep_global_alignment": ("sdpa.key-lengths", True),
    "offset_first_item_only": ("sdpa.query-offset", False),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_each_planted_restriction_bug_fails_its_clause(bug: str) -> None:
    """sdpa.softcap, sdpa.window, sdpa.query-offset, sdpa.key-lengths: each planted bug
    fails the clause it breaks in the quick run."""
    clause, bottom_right = PLANTED[bug]
    impl = implementation(Bugs(**{bug: True}), bottom_right=bottom_right)
    statuses = _statuses(impl, examples=8)
    assert statuses[clause] == "failed", statuses


def test_a_plain_callable_offers_the_restrictions_it_names() -> None:
    """sdpa.softcap, sdpa.window, sdpa.query-offset, sdpa.key-lengths: a callable whose
    signature names the spec's restriction keywords offers them; ``**kwargs`` does not."""
    named = TorchSDPA.from_callable(kernel(Bugs()), name="math")
    assert named.features >= RESTRICTIONS

    def any_keywords(q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        return kernel(Bugs())(q, k, v, **kwargs)[0]

    assert not TorchSDPA.from_callable(any_keywords, name="any").features & RESTRICTIONS
