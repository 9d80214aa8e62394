"""Every score form of ``attention`` is checkable, in both directions.

The seq2seq composite takes one of six scores; the oracle draws the
parameters of each (``W_a``, ``W_q``, ``W_k``, ``v_a``) and bounds the error
of each form. The PyTorch twin, checked through a small adapter here, must
conform with every form; a concat score with its halves swapped, and a
location score read from the wrong axis, must fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

import attnref.torch as twin
from attnref.oracle import Case, Conventions, Output, ScoreForm, check_implementation
from attnref.oracle.conventions import Feature
from attnref.oracle.examples import QUICK_EXAMPLES
from attnref.oracle.protocol import Float64Array, Function
from attnspec.typing import ScoreKind

Attention = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TwinAttention:
    """``attnref.torch.attention`` (or a variant of it) as an oracle implementation."""

    kind: ScoreKind
    fn: Attention = twin.attention
    dtype: str = "float64"
    name: str = "attnref.torch.attention"
    framework: str = "torch"
    device: str = "cpu"
    function: Function = "attention"
    conventions: Conventions = field(default_factory=Conventions)
    features: frozenset[Feature] = frozenset({"bool_mask", "weights", "gradients"})

    @property
    def score_form(self) -> ScoreForm:
        params = {"general": {"W_a"}, "concat": {"W_a", "v_a"}, "location": {"W_a"}}
        free = params.get(self.kind, {"W_q", "W_k", "v_a"} if self.kind == "additive" else set())
        return ScoreForm(self.kind, frozenset(free))

    def _run(self, case: Case, *, grad: bool) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        def tensor(a: Float64Array) -> torch.Tensor:
            return torch.tensor(np.array(a), dtype=torch.float64, requires_grad=grad)

        leaves = [tensor(case.arrays[n]) for n in case.names]
        params = {n: tensor(a) for n, a in case.arrays.items() if n not in case.names}
        options: dict[str, Any] = {"score": self.kind, **params}
        if "scale" in case.options:
            options["scale"] = case.options["scale"]
        if case.mask is not None:
            options["mask"] = torch.tensor(np.array(case.mask))
        context, weights = self.fn(*leaves, **options)
        return context, weights, leaves

    def forward(self, case: Case, /) -> Output:
        with torch.no_grad():
            context, weights, _ = self._run(case, grad=False)
        return Output(context.numpy().copy(), weights.numpy().copy(), "float64")

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        context, _, leaves = self._run(case, grad=True)
        torch.autograd.backward((context * torch.from_numpy(cotangent)).sum())
        return {
            n: (leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)).numpy().copy()
            for n, leaf in zip(case.names, leaves, strict=True)
        }


KINDS: tuple[ScoreKind, ...] = ("dot", "scaled_dot", "general", "concat", "additive", "location")


@pytest.mark.parametrize("kind", KINDS)
def test_twin_conforms_with_every_score_form(kind: ScoreKind) -> None:
    """attention.composition holds for every score form, forward and backward."""
    report = check_implementation(TwinAttention(kind), max_examples=QUICK_EXAMPLES)
    assert report.passed, report.table()
    clause = f"score.{kind.replace('_', '-')}"
    assert [r.status for r in report.results if r.clause == clause] == ["passed"], report.table()


def _swapped_concat(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, **kw: Any
) -> Any:
    """Concat with W_a's halves applied the wrong way round ([h; s] instead of [s; h])."""
    w = kw.pop("W_a")
    d = query.shape[-1]
    swapped = torch.cat([w[:, d:], w[:, :d]], dim=1)
    return twin.attention(query, keys, values, W_a=swapped, **kw)


def _transposed_location(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, **kw: Any
) -> Any:
    """Location scores with W_a's rows reversed: position j scored by row Tk - 1 - j."""
    return twin.attention(query, keys, values, W_a=kw.pop("W_a").flip(0), **kw)


@pytest.mark.parametrize(
    ("kind", "bug"), [("concat", _swapped_concat), ("location", _transposed_location)]
)
def test_wrong_score_form_fails_its_clause(kind: ScoreKind, bug: Attention) -> None:
    """score.concat and score.location catch a score computed from the wrong parameters."""
    clause = f"score.{kind}"
    report = check_implementation(
        TwinAttention(kind, fn=bug, name=bug.__name__),
        max_examples=QUICK_EXAMPLES,
        clauses_to_check=frozenset({clause}),
    )
    assert report.results[0].status == "failed", report.table()
