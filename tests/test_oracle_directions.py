"""The oracle in both directions: realistic bugs fail, sound kernels of other algorithms pass.

A wrong PASS is the worst verdict the oracle can give and a wrong FAIL the
second worst; each is tested here with the kernels of ``tests/kernels.py``,
written with other sound algorithms than the reference (blocked online
softmax with a FlashAttention-2 backward, split-K decoding, float32
accumulation of 16-bit inputs) and with bugs planted where such kernels
really go wrong; then each step function's own checks, with kernels of the
steps written another way and a bug in each. Every check runs in the quick
mode a user starts with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import kernels
from attnref.oracle import check_implementation
from attnref.oracle.adapters.torch import TorchSDPA, TorchStep
from attnref.oracle.cases import Draw, cases
from attnref.oracle.checks import CHECKS, compare
from attnref.oracle.conventions import FEATURES as EVERY_FEATURE
from attnref.oracle.conventions import RESTRICTIONS, Conventions, Feature
from attnref.oracle.examples import QUICK_EXAMPLES
from attnref.oracle.observe import observe
from attnref.oracle.protocol import STEPS, Case, Step
from attnref.oracle.targets import TARGETS, resolve
from attnref.oracle.witnesses import naive_evaluations

# the kernels of tests/kernels.py offer no restrictions; tests/test_oracle_restrictions.py
# checks those in both directions
# the checks of the restrictions, which the kernels here do not offer (skipped by design;
# tests/test_oracle_restrictions.py checks them in both directions)
KEYWORDS: frozenset[Feature] = RESTRICTIONS | {"sinks", "lse"}
"""The keywords of current kernels that the kernels here do not take (tests/test_oracle_
restrictions.py and tests/test_oracle_sinks_lse.py check them)."""
RESTRICTION_CLAUSES = {c.clause for c in CHECKS if (c.requires | c.requires_any) & KEYWORDS}

FEATURES: frozenset[Feature] = frozenset(EVERY_FEATURE) - {"key_padding_mask"} - KEYWORDS
"""Every feature but key-padding-only masks (the kernels take masks of any shape) and the
keywords they do not take."""
SEEDS = (0, 1)


@pytest.mark.parametrize("bug", list(kernels.BUGS))
def test_planted_bug_fails_its_clause_in_the_quick_run(bug: str) -> None:
    """Each bug of a blocked, split-K or hand-differentiated kernel fails the clause it breaks."""
    planted = kernels.BUGS[bug]
    impl = TorchSDPA(planted.fn, name=bug, features=FEATURES)
    report = check_implementation(
        impl, max_examples=QUICK_EXAMPLES, clauses_to_check=frozenset({planted.clause})
    )
    (result,) = report.results
    assert result.status == "failed", (planted.trigger, report.table())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", kernels.DTYPES)
@pytest.mark.parametrize("name", list(kernels.CORRECT))
def test_sound_kernel_of_another_algorithm_conforms(name: str, dtype: str, seed: int) -> None:
    """Blocked, split-K and float32-accumulating kernels conform in every dtype they support."""
    kernel = kernels.CORRECT[name]
    if dtype not in kernel.dtypes:
        pytest.skip(f"{name} does not support {dtype}")
    impl = TorchSDPA(kernel.fn, name=name, dtype=dtype, features=FEATURES)
    report = check_implementation(impl, max_examples=QUICK_EXAMPLES, seed=seed)
    assert report.passed, report.table()
    skipped = [r.clause for r in report.results if r.status == "skipped"]
    assert set(skipped) <= RESTRICTION_CLAUSES, report.table()


@pytest.mark.parametrize("backend", ["MATH", "default"])
@pytest.mark.parametrize("dtype", kernels.DTYPES)
def test_pytorch_backends_conform_in_every_dtype(backend: str, dtype: str) -> None:
    """PyTorch's math backend and its default CPU kernel conform in each dtype.

    The default kernel's known departure (NaN rows for a causal call with a
    scale of 0 or less) is confined to the clause it is listed under.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    base, expected = resolve("torch.sdpa")
    assert isinstance(base, TorchSDPA)
    fn = base.fn
    if backend == "MATH":
        default = base.fn

        def math(*args: object, **kwargs: object) -> object:
            with sdpa_kernel(SDPBackend.MATH):
                return default(*args, **kwargs)

        fn = math
    impl = TorchSDPA(
        fn, name=f"torch.sdpa[{backend}]", dtype=dtype, features=base.features, mask_arg="attn_mask"
    )
    departures = TARGETS["torch.sdpa"].departure_cases
    report = check_implementation(
        impl,
        max_examples=QUICK_EXAMPLES,
        expected_failures=expected,
        departure_cases=departures,
    )
    assert report.passed, report.table()


def _naive_ratio(case: Case, impl: TorchSDPA) -> float:
    """The naive evaluation's worst error over its allowance, across key orders."""
    o = observe(impl, case, gradients=False)
    worst = 0.0
    for naive in naive_evaluations(case, impl.conventions, impl.dtype):
        context = compare("context", naive.context, o.truth.context, o.bounds.context, impl.dtype)
        weights = compare("weights", naive.weights, o.truth.weights, o.bounds.weights, impl.dtype)
        worst = max(worst, context.ratio, weights.ratio)
    return worst


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_bound_covers_the_naive_evaluation(dtype: str) -> None:
    """The derived bound holds for the plain evaluation in the dtype itself, in any key order.

    A naive float16 evaluation accumulates in float16, so it is judged with
    that accumulation declared; float64 and float32 accumulate in themselves.
    """
    from attnref.oracle.conventions import Conventions

    conventions = Conventions.declare(accumulation=dtype)  # type: ignore[arg-type]
    impl = TorchSDPA(
        kernels.CORRECT["float32-accumulating"].fn,
        dtype=dtype,
        features=FEATURES,
        conventions=conventions,
    )
    ratios: list[float] = []

    @settings(max_examples=40, deadline=None, database=None)
    @given(cases(impl, Draw(values=("normal", "near_ties", "large_logits"))))
    def probe(case: Case) -> None:
        ratios.append(_naive_ratio(case, impl))

    probe()
    assert max(ratios) <= 1.0, max(ratios)
    # the bound is a bound, not a blanket: it sits within a few hundred times the error
    assert max(ratios) > 1e-3, max(ratios)


# --- the step functions -------------------------------------------------------------------
#
# Each step of the spec is checkable on its own: kernels written another way (PyTorch's
# own softmax, einsum, linear layers, all accumulating 16-bit inputs in float32) conform,
# and a realistic bug in each fails the clause it breaks. The local distributions have
# their own file, tests/test_oracle_local.py.

StepFn = Callable[..., torch.Tensor]


def _shapes(*shapes: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    """The broadcast of tensor shapes (NumPy's rule, which PyTorch follows)."""
    return tuple(np.broadcast_shapes(*(tuple(s) for s in shapes)))


def _up(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """16-bit tensors upcast to float32 (the accumulation of fast kernels); others kept."""
    return [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]


def softmax_distribution(
    scores: torch.Tensor, *, mask: torch.Tensor | None = None, bug: str = ""
) -> torch.Tensor:
    """``torch.softmax`` under ``-inf`` at disallowed keys, a fully masked row set to 0."""
    (s,) = _up(scores)
    allowed = torch.ones_like(s, dtype=torch.bool)
    if mask is not None and mask.dtype == torch.bool:
        allowed = ~mask if bug == "inverted mask" else mask
    elif mask is not None and bug != "additive mask ignored":
        s = s + mask.to(s.dtype)
    allowed = torch.broadcast_to(allowed, _shapes(allowed.shape, s.shape))
    allowed = allowed & (torch.broadcast_to(s, allowed.shape) != -torch.inf)
    if bug == "mask fill -1e4":
        return torch.softmax(torch.where(allowed, s, -1e4), dim=-1).to(scores.dtype)
    if bug == "no max shift":
        e = torch.where(allowed, torch.exp(torch.where(allowed, s, 0.0)), 0.0)
        return (e / e.sum(-1, keepdim=True)).to(scores.dtype)
    live = allowed.any(-1, keepdim=True)
    filled = torch.where(allowed, s, -torch.inf)
    axis = -2 if bug == "softmax over queries" else -1
    if bug == "log-softmax returned":
        return torch.where(allowed, torch.log_softmax(torch.where(live, filled, 0.0), -1), 0.0).to(
            scores.dtype
        )
    if bug == "fully masked row uniform":
        return torch.softmax(torch.where(allowed, s, torch.finfo(s.dtype).min), -1).to(scores.dtype)
    weights = torch.softmax(torch.where(live, filled, 0.0), dim=axis)
    return torch.where(live & allowed, weights, 0.0).to(scores.dtype)


def einsum_value(weights: torch.Tensor, values: torch.Tensor, *, bug: str = "") -> torch.Tensor:
    """``einsum`` over the keys; rows of zero weight everywhere are left out of the sum."""
    w, v = _up(weights, values)
    if bug == "weights used as a mask":
        w = (w != 0).to(w.dtype)
    if bug == "values clipped at 100":
        v = v.clamp(-100.0, 100.0)
    if bug != "plain matmul":
        read = torch.broadcast_to(w, _shapes(w.shape, (*v.shape[:-2], 1, 1)))
        read = (read != 0).any(dim=-2)[..., None]  # [..., Tk, 1]
        v = torch.where(read, v, 0.0)
    return torch.einsum("...qk,...kd->...qd", w, v).to(weights.dtype)


def cat_context(context: torch.Tensor, query: torch.Tensor, *, bug: str = "") -> torch.Tensor:
    """``torch.cat`` of the context and the query, batch dimensions broadcast first."""
    batch = _shapes(context.shape[:-2], query.shape[:-2])
    a = context.expand(*batch, *context.shape[-2:])
    s = query.expand(*batch, *query.shape[-2:])
    return torch.cat([s, a] if bug == "query first" else [a, s], dim=-1)


def linear_hidden(
    context: torch.Tensor,
    query: torch.Tensor,
    W_c: torch.Tensor,
    b_c: torch.Tensor | None = None,
    *,
    bug: str = "",
) -> torch.Tensor:
    """``tanh(linear([a; s]))`` in float32."""
    a, s, w = _up(context, query, W_c)
    stacked = cat_context(a, s, bug="query first" if bug == "query first" else "")
    bias = None if b_c is None or bug == "bias ignored" else _up(b_c)[0]
    z = torch.nn.functional.linear(stacked, w, bias)
    h = torch.sigmoid(z) if bug == "sigmoid" else torch.tanh(z)
    return h.to(context.dtype)


def linear_output(
    attentional_state: torch.Tensor,
    W_y: torch.Tensor,
    b_y: torch.Tensor | None = None,
    *,
    bug: str = "",
) -> torch.Tensor:
    """``softmax(linear(state))`` over the vocabulary, in float32."""
    h, w = _up(attentional_state, W_y)
    bias = None if b_y is None or bug == "bias ignored" else _up(b_y)[0]
    z = torch.nn.functional.linear(h, w, bias)
    if bug == "log-softmax returned":
        return torch.log_softmax(z, dim=-1).to(attentional_state.dtype)
    return torch.softmax(z, dim=-1).to(attentional_state.dtype)


def einsum_score(kind: str, *, bug: str = "") -> StepFn:
    """A score function of ``kind`` by ``einsum`` and broadcasting, in float32."""

    def score(query: torch.Tensor, *args: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        q, *rest = _up(query, *args)
        if kind == "location":
            (w,) = rest
            out = torch.einsum("...qd,kd->...qk", q, w.flip(0) if bug == "rows reversed" else w)
            return out.to(query.dtype)
        keys, *params = rest
        if bug == "keys transposed with .T":
            k_t = keys.transpose(0, -1)
            return (q @ k_t).to(query.dtype)
        if kind in ("dot", "scaled_dot"):
            out = torch.einsum("...qd,...kd->...qk", q, keys)
            if kind == "scaled_dot":
                d = query.shape[-1]
                lam = (
                    (1.0 / d if bug == "default scale 1/d" else d**-0.5) if scale is None else scale
                )
                out = out * lam * (lam if bug == "scale applied twice" else 1.0)
            return out.to(query.dtype)
        if kind == "general":
            (w,) = params
            w = w.T if bug == "W_a transposed" else w
            return torch.einsum("...qi,ij,...kj->...qk", q, w, keys).to(query.dtype)
        if kind == "concat":
            w, v = params
            d_q = q.shape[-1]
            w_q, w_k = (
                (w[:, -d_q:], w[:, :-d_q])
                if bug == "halves swapped"
                else (
                    w[:, :d_q],
                    w[:, d_q:],
                )
            )
        else:
            w_q, w_k, v = params
            if bug == "W_q and W_k swapped":
                w_q, w_k = w_k, w_q
        hq = torch.einsum("...qi,ai->...qa", q, w_q)[..., :, None, :]
        hk = torch.einsum("...ki,ai->...ka", keys, w_k)[..., None, :, :]
        return (torch.tanh(hq + hk) @ v).to(query.dtype)

    return score


def _bug(fn: StepFn, bug: str) -> StepFn:
    return functools.partial(fn, bug=bug)


SCORE_KINDS = ("dot", "scaled_dot", "general", "concat", "additive", "location")

STEP_KERNELS: dict[str, tuple[Step, StepFn]] = {
    "torch.softmax distribution": ("attention_distribution", softmax_distribution),
    "einsum attention value": ("attention_value", einsum_value),
    "torch.cat concatenation": ("concatenate_context", cat_context),
    "linear-tanh hidden state": ("attentional_hidden_state", linear_hidden),
    "linear-softmax output": ("output_distribution", linear_output),
    **{f"einsum score_{k}": (f"score_{k}", einsum_score(k)) for k in SCORE_KINDS},  # type: ignore[misc]
}
"""Sound kernels of each step other than the local ones, written without the reference."""

STEP_BUGS: dict[str, tuple[Step, StepFn, str]] = {
    "softmax without the max shift": (
        "attention_distribution",
        _bug(softmax_distribution, "no max shift"),
        "distribution.shift-invariant",
    ),
    "softmax over the query axis": (
        "attention_distribution",
        _bug(softmax_distribution, "softmax over queries"),
        "distribution.softmax",
    ),
    "log-softmax returned as the weights": (
        "attention_distribution",
        _bug(softmax_distribution, "log-softmax returned"),
        "distribution.nonnegative",
    ),
    "masked keys filled with -1e4": (
        "attention_distribution",
        _bug(softmax_distribution, "mask fill -1e4"),
        "distribution.masked-zero",
    ),
    "boolean mask inverted": (
        "attention_distribution",
        _bug(softmax_distribution, "inverted mask"),
        "distribution.mask-polarity",
    ),
    "additive mask ignored": (
        "attention_distribution",
        _bug(softmax_distribution, "additive mask ignored"),
        "distribution.additive-mask",
    ),
    "fully masked row uniform (finfo.min fill)": (
        "attention_distribution",
        _bug(softmax_distribution, "fully masked row uniform"),
        "distribution.fully-masked-row",
    ),
    "weights used as a mask": (
        "attention_value",
        _bug(einsum_value, "weights used as a mask"),
        "value.convex-hull",
    ),
    "values clipped at 100": (
        "attention_value",
        _bug(einsum_value, "values clipped at 100"),
        "value.linear",
    ),
    "plain matmul reads NaN at zero weight": (
        "attention_value",
        _bug(einsum_value, "plain matmul"),
        "value.zero-weight-unread",
    ),
    "query before the context": (
        "concatenate_context",
        _bug(cat_context, "query first"),
        "concat.context-first",
    ),
    "hidden layer reads [s; a]": (
        "attentional_hidden_state",
        _bug(linear_hidden, "query first"),
        "hidden.tanh",
    ),
    "hidden bias ignored": (
        "attentional_hidden_state",
        _bug(linear_hidden, "bias ignored"),
        "hidden.tanh",
    ),
    "sigmoid instead of tanh": (
        "attentional_hidden_state",
        _bug(linear_hidden, "sigmoid"),
        "hidden.tanh",
    ),
    "output log-softmax": (
        "output_distribution",
        _bug(linear_output, "log-softmax returned"),
        "output.softmax",
    ),
    "output bias ignored": (
        "output_distribution",
        _bug(linear_output, "bias ignored"),
        "output.softmax",
    ),
    "default scale 1/d": (
        "score_scaled_dot",
        einsum_score("scaled_dot", bug="default scale 1/d"),
        "score.default-scale",
    ),
    "scale applied twice": (
        "score_scaled_dot",
        einsum_score("scaled_dot", bug="scale applied twice"),
        "score.scale-applied",
    ),
    "general W_a transposed": (
        "score_general",
        einsum_score("general", bug="W_a transposed"),
        "score.general",
    ),
    "concat halves swapped": (
        "score_concat",
        einsum_score("concat", bug="halves swapped"),
        "score.concat",
    ),
    "additive W_q and W_k swapped": (
        "score_additive",
        einsum_score("additive", bug="W_q and W_k swapped"),
        "score.additive",
    ),
    "location rows reversed": (
        "score_location",
        einsum_score("location", bug="rows reversed"),
        "score.location",
    ),
    "keys transposed with .T (batch axes reversed)": (
        "score_dot",
        einsum_score("dot", bug="keys transposed with .T"),
        "score.shape",
    ),
}
"""A realistic bug in each step kernel: function, kernel, the clause it breaks."""


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", kernels.DTYPES)
@pytest.mark.parametrize("name", list(STEP_KERNELS))
def test_sound_step_kernel_conforms(name: str, dtype: str, seed: int) -> None:
    """distribution.softmax, value.weighted-sum, hidden.tanh, score.shape... hold for sound
    step kernels in every dtype; only the recommended ``value.zero-weight-unread`` may be a
    finding (none of them is expected to have one)."""
    function, fn = STEP_KERNELS[name]
    impl = TorchStep(fn, function, name=name, dtype=dtype)
    report = check_implementation(impl, max_examples=QUICK_EXAMPLES, seed=seed)
    assert report.passed, report.table()
    assert not report.findings, report.table()
    skipped = [r.clause for r in report.results if r.status == "skipped"]
    assert set(skipped) <= RESTRICTION_CLAUSES, report.table()


@pytest.mark.parametrize("dtype", kernels.DTYPES)
@pytest.mark.parametrize("function", [s for s in STEPS if not s.startswith("local")])
def test_twin_step_conforms_computing_in_the_dtype(function: Step, dtype: str) -> None:
    """output.softmax, concat.context-first, score.default-scale... hold for each step of
    the twin, which computes in the dtype itself and declares so."""
    report = check_implementation(
        TorchStep.twin(function, dtype=dtype), max_examples=QUICK_EXAMPLES
    )
    assert report.passed, report.table()


@pytest.mark.parametrize("bug", list(STEP_BUGS))
def test_planted_step_bug_fails_its_clause_in_the_quick_run(bug: str) -> None:
    """Each step kernel's bug fails the clause it breaks (distribution.stable and the rest)."""
    function, fn, clause = STEP_BUGS[bug]
    impl = TorchStep(fn, function, name=bug)
    report = check_implementation(
        impl, max_examples=QUICK_EXAMPLES, clauses_to_check=frozenset({clause})
    )
    (result,) = report.results
    assert result.status == "failed", report.table()


def test_distribution_step_follows_its_declared_fully_masked_convention() -> None:
    """distribution.fully-masked-row: a softmax filling masked keys with finfo.min (uniform
    rows, as JAX) conforms when it declares ``uniform`` and fails when it declares nothing."""
    function, fn, clause = STEP_BUGS["fully masked row uniform (finfo.min fill)"]
    declared = TorchStep(
        fn,
        function,
        name="uniform rows",
        conventions=Conventions.declare(fully_masked_row="uniform"),
    )
    report = check_implementation(declared, max_examples=QUICK_EXAMPLES)
    assert report.passed, report.table()
    assert [r.status for r in report.results if r.clause == clause] == ["passed"]
    silent = TorchStep(fn, function, name="uniform rows, undeclared")
    report = check_implementation(
        silent, max_examples=QUICK_EXAMPLES, clauses_to_check=frozenset({clause})
    )
    assert report.results[0].status == "failed", report.table()


def test_distribution_step_with_nan_rows_is_judged_everywhere_else() -> None:
    """distribution.softmax: a kernel declaring NaN for fully masked rows is still held to the
    softmax on every other row (NaN rows give no allowance that hides an error elsewhere)."""

    def nan_rows_and_wrong(scores: torch.Tensor, *, mask: torch.Tensor | None = None) -> Any:
        weights = softmax_distribution(scores, mask=mask)
        if mask is not None and mask.dtype == torch.bool:
            empty = ~torch.broadcast_to(mask, weights.shape).any(-1, keepdim=True)
            weights = torch.where(empty, torch.nan, weights)
        return weights * 1.01  # 1% too large wherever it is a number

    impl = TorchStep(
        nan_rows_and_wrong,
        "attention_distribution",
        conventions=Conventions.declare(fully_masked_row="nan"),
    )
    report = check_implementation(
        impl,
        max_examples=QUICK_EXAMPLES,
        clauses_to_check=frozenset({"distribution.fully-masked-row"}),
    )
    assert report.results[0].status == "failed", report.table()
