"""The oracle in both directions: realistic bugs fail, sound kernels of other algorithms pass.

A wrong PASS is the worst verdict the oracle can give and a wrong FAIL the
second worst; each is tested here with the kernels of ``tests/kernels.py``,
written with other sound algorithms than the reference (blocked online
softmax with a FlashAttention-2 backward, split-K decoding, float32
accumulation of 16-bit inputs) and with bugs planted where such kernels
really go wrong. Every check runs in the quick mode a user starts with.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

import kernels
from attnref.oracle import check_implementation
from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.cases import Draw, cases
from attnref.oracle.checks import compare
from attnref.oracle.command import QUICK_EXAMPLES
from attnref.oracle.conventions import FEATURES as EVERY_FEATURE
from attnref.oracle.conventions import Feature
from attnref.oracle.observe import observe
from attnref.oracle.protocol import Case
from attnref.oracle.targets import TARGETS, resolve
from attnref.oracle.witnesses import naive_evaluations

FEATURES: frozenset[Feature] = frozenset(EVERY_FEATURE) - {"key_padding_mask"}
"""Every feature but key-padding-only masks (the kernels take masks of any shape)."""
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
    assert not [r for r in report.results if r.status == "skipped"], report.table()


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
