"""The oracle's checks of sinks and of the log-sum-exp, in both directions: planted bugs fail
the clause they break, correct kernels conform.

The correct kernel is the FlashAttention-2 kernel of ``tests/kernels.py`` (tiled online
softmax, hand-written backward, float32 accumulation for 16-bit inputs), whose sinks start
each row's running softmax and whose log-sum-exp is the one it keeps for its backward;
the step kernels of ``log_sum_exp`` are written here. Each planted bug changes one thing.
"""

from __future__ import annotations

import functools
import math
from typing import Any, cast

import pytest
import torch

from attnref.oracle import check_implementation
from attnref.oracle.adapters.torch import TorchSDPA, TorchStep
from attnref.oracle.conventions import Feature
from attnref.oracle.targets import _twin
from kernels import SOUND, Flaws, blocked_attention

FEATURES: frozenset[Feature] = frozenset(
    {
        "scale",
        "bool_mask",
        "additive_mask",
        "causal",
        "causal_with_mask",
        "gqa",
        "gradients",
        "weights",
        "distinct_value_dim",
        "sinks",
        "lse",
    }
)
CLAUSES = frozenset(
    {"sdpa.sinks", "sdpa.log-sum-exp", "lse.fully-masked-row", "distribution.sums-to-one"}
)


def _flash(flaws: Flaws, tile: int) -> Any:
    """The FA2 kernel in the oracle's calling convention, with sinks and ``return_lse``."""

    def sdpa(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        scale: float | None = None,
        is_causal: bool = False,
        enable_gqa: bool = False,
        sinks: torch.Tensor | None = None,
        return_lse: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        return blocked_attention(
            q,
            k,
            v,
            mask=mask,
            scale=scale,
            is_causal=is_causal,
            enable_gqa=enable_gqa,
            block_q=tile,
            block_k=tile,
            flaws=flaws,
            sinks=sinks,
            return_lse=return_lse,
        )

    return sdpa


def flash(flaws: Flaws = SOUND, *, dtype: str = "float64", tile: int = 16) -> TorchSDPA:
    return TorchSDPA(_flash(flaws, tile), name="fa2-sinks", dtype=dtype, features=FEATURES)


def _statuses(impl: Any, clauses: frozenset[str], *, examples: int) -> dict[str, str]:
    report = check_implementation(impl, max_examples=examples, clauses_to_check=clauses)
    return {r.clause: r.status for r in report.results}


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_a_tiled_kernel_with_sinks_and_lse_conforms(dtype: str) -> None:
    """sdpa.sinks, sdpa.log-sum-exp, distribution.sums-to-one: FlashAttention-2's online
    softmax seeded with the sink, its saved log-sum-exp returned and d/dsinks from its own
    backward, conforms in float64, float32 and bfloat16 (float32 accumulation)."""
    statuses = _statuses(flash(dtype=dtype), CLAUSES, examples=15)
    assert statuses == dict.fromkeys(CLAUSES, "passed")


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_the_twin_conforms_with_sinks_and_lse(dtype: str) -> None:
    """sdpa.sinks, sdpa.log-sum-exp: the PyTorch twin (it computes in the dtype it is
    given) passes both clauses and the gradient check that draws sinks among the features."""
    from dataclasses import replace

    impl = replace(cast(TorchSDPA, _twin()), dtype=dtype)
    statuses = _statuses(impl, CLAUSES | {"input.gradient"}, examples=12)
    assert statuses == dict.fromkeys(CLAUSES | {"input.gradient"}, "passed")


BUGS: dict[str, tuple[Flaws, str]] = {
    "the sink is dropped": (Flaws(sink_ignored=True), "sdpa.sinks"),
    "the sink is scaled like a score": (Flaws(sink_scaled=True), "sdpa.sinks"),
    "no gradient reaches the sinks": (Flaws(sink_detached=True), "sdpa.sinks"),
    "the returned lse leaves the sink out": (Flaws(lse_without_sink=True), "sdpa.log-sum-exp"),
    "an empty row's lse is +inf (FlashAttention's stored value)": (
        Flaws(lse_plus_inf_when_empty=True),
        "lse.fully-masked-row",
    ),
    "the lse is in base 2": (Flaws(lse_base_two=True), "sdpa.log-sum-exp"),
}


@pytest.mark.parametrize("name", sorted(BUGS))
def test_a_planted_sink_or_lse_bug_fails_its_clause(name: str) -> None:
    """sdpa.sinks, sdpa.log-sum-exp: each planted bug fails the clause it breaks, at the
    quick example count, while the same kernel without it passes (the test above)."""
    flaws, clause = BUGS[name]
    statuses = _statuses(flash(flaws), frozenset({clause}), examples=8)
    assert statuses[clause] == "failed", statuses


# --- the step function ---------------------------------------------------------------------


def _lse_step(*, shift: bool = True, empty: float = -math.inf, ignore_bias: bool = False) -> Any:
    """``log_sum_exp(scores, mask=...)`` by torch.logsumexp over the allowed keys; each
    switch plants one bug: no max shift (overflow), a wrong empty-row value, or an
    additive mask read as boolean."""

    def log_sum_exp(scores: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        s = scores.to(torch.float64) if scores.dtype != torch.float64 else scores
        if mask is not None:
            if mask.dtype == torch.bool:
                s = s.masked_fill(~mask, -math.inf)
            elif ignore_bias:
                s = s.masked_fill(mask == -math.inf, -math.inf)
            else:
                s = s + mask.to(s.dtype)
        s = s.to(torch.float32) if scores.dtype in (torch.float16, torch.bfloat16) else s
        lse = torch.logsumexp(s, dim=-1) if shift else torch.log(torch.exp(s).sum(-1))
        lse = torch.where(torch.isneginf(lse), torch.tensor(empty, dtype=lse.dtype), lse)
        return lse.to(scores.dtype)

    return log_sum_exp


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_a_log_sum_exp_by_torch_logsumexp_conforms(dtype: str) -> None:
    """lse.formula, lse.normalizes, lse.stable, lse.fully-masked-row: torch.logsumexp over
    the allowed keys, float32 accumulation for 16-bit scores, conforms (the twin's step, which
    computes in the dtype itself, is checked with the other steps in test_oracle_directions)."""
    impl = TorchStep(_lse_step(), "log_sum_exp", name="logsumexp", dtype=dtype)
    report = check_implementation(impl, max_examples=15)
    failed = {r.clause: r.message for r in report.results if r.status != "passed"}
    assert not failed, failed
    assert {r.clause for r in report.results} >= {
        "lse.formula",
        "lse.normalizes",
        "lse.stable",
        "lse.fully-masked-row",
    }


STEP_BUGS: dict[str, tuple[Any, str]] = {
    "exp without the max shift overflows": (
        functools.partial(_lse_step, shift=False),
        "lse.stable",
    ),
    "an empty row gives NaN": (
        functools.partial(_lse_step, empty=math.nan),
        "lse.fully-masked-row",
    ),
    "an empty row gives +inf": (
        functools.partial(_lse_step, empty=math.inf),
        "lse.fully-masked-row",
    ),
    "the additive mask is read as a boolean one": (
        functools.partial(_lse_step, ignore_bias=True),
        "distribution.additive-mask",
    ),
}


@pytest.mark.parametrize("name", sorted(STEP_BUGS))
def test_a_planted_log_sum_exp_bug_fails_its_clause(name: str) -> None:
    """lse.stable, lse.fully-masked-row: each planted bug of a log-sum-exp step fails the
    clause it breaks at the quick example count."""
    build, clause = STEP_BUGS[name]
    impl = TorchStep(build(), "log_sum_exp", name=name, dtype="float64")
    statuses = _statuses(impl, frozenset({clause}), examples=8)
    assert statuses[clause] == "failed", statuses
