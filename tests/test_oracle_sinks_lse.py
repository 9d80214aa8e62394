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

import attnref.torch as twin
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


def _sink_of_the_key_head(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any) -> Any:
    """Grouped heads share their key head's first sink (sinks read as ``[Hk]``)."""
    sinks = kw.get("sinks")
    if sinks is not None and q.shape[-3] != k.shape[-3]:
        groups = q.shape[-3] // k.shape[-3]
        kw["sinks"] = sinks[::groups].repeat_interleave(groups)
    return twin.scaled_dot_product_attention(q, k, v, **kw)


def _sink_capped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any) -> Any:
    """The sink is appended to the scores before the softcap, and so capped with them."""
    sinks, cap = kw.get("sinks"), kw.get("softcap")
    if sinks is not None and cap is not None:
        kw["sinks"] = cap * torch.tanh(sinks / cap)
    return twin.scaled_dot_product_attention(q, k, v, **kw)


def _sink_gradient_of_the_first_item(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any
) -> Any:
    """Batch items are computed one at a time, and only the first one's d/dsinks is kept."""
    sinks = kw.get("sinks")
    if sinks is None or q.ndim < 4 or q.shape[0] == 1:
        return twin.scaled_dot_product_attention(q, k, v, **kw)
    batch, heads, t_q, t_k = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    parts = []
    for b in range(batch):
        item = dict(kw, sinks=sinks if b == 0 else sinks.detach())
        if kw.get("mask") is not None:
            item["mask"] = torch.broadcast_to(kw["mask"], (batch, heads, t_q, t_k))[b : b + 1]
        if kw.get("key_lengths") is not None:
            item["key_lengths"] = kw["key_lengths"][b : b + 1]
        offset = kw.get("query_offset")
        if isinstance(offset, torch.Tensor) and offset.ndim == 1:
            item["query_offset"] = offset[b : b + 1]
        parts.append(
            twin.scaled_dot_product_attention(q[b : b + 1], k[b : b + 1], v[b : b + 1], **item)
        )
    return tuple(torch.cat(outputs, dim=0) for outputs in zip(*parts, strict=True))


def _lse_of_the_uncapped_scores(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any
) -> Any:
    """The softcap reaches the weights but not the returned log-sum-exp."""
    out = twin.scaled_dot_product_attention(q, k, v, **kw)
    if not kw.get("return_lse") or kw.get("softcap") is None:
        return out
    return out[0], out[1], twin.scaled_dot_product_attention(q, k, v, **dict(kw, softcap=None))[2]


def _lse_zero_when_restricted_empty(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any
) -> Any:
    """A row that key lengths or a window leave empty gets lse 0, not -inf."""
    out = twin.scaled_dot_product_attention(q, k, v, **kw)
    if not kw.get("return_lse") or (kw.get("key_lengths") is None and kw.get("window") is None):
        return out
    lse = out[2]
    return out[0], out[1], torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)


TWIN_BUGS: dict[str, tuple[Any, str]] = {
    "grouped heads read their key head's sink": (_sink_of_the_key_head, "sdpa.sinks"),
    "the sink is capped with the scores": (_sink_capped, "sdpa.sinks"),
    "d/dsinks of the first batch item only": (_sink_gradient_of_the_first_item, "sdpa.sinks"),
    "the lse of the uncapped scores": (_lse_of_the_uncapped_scores, "sdpa.log-sum-exp"),
    "lse 0 for a row that key lengths or a window empty": (
        _lse_zero_when_restricted_empty,
        "lse.fully-masked-row",
    ),
}
"""Bugs planted in the twin's call, where sinks and the lse meet grouped heads, batches and
the restrictions (the FlashAttention-2 kernel above offers none of the restrictions)."""


@pytest.mark.parametrize("name", sorted(TWIN_BUGS))
def test_a_sink_or_lse_bug_among_the_other_features_fails_its_clause(name: str) -> None:
    """sdpa.sinks, sdpa.log-sum-exp, lse.fully-masked-row: sinks and the lse are drawn with
    grouped heads, batches, softcaps, windows and key lengths, so a bug that only shows in
    such a combination fails its clause at the quick example count; the twin itself passes
    (test_the_twin_conforms_with_sinks_and_lse)."""
    from dataclasses import replace

    fn, clause = TWIN_BUGS[name]
    impl = replace(cast(TorchSDPA, _twin()), fn=fn, name=name)
    statuses = _statuses(impl, frozenset({clause}), examples=8)
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
