"""The NumPy adapter: the reference itself, checked through it, conforms; a bug does not."""

from __future__ import annotations

from typing import Any

import numpy as np

import attnref
from attnref.oracle import Feature, check_implementation
from attnref.oracle.adapters.numpy import NumpySDPA
from attnref.oracle.conventions import RESTRICTIONS
from attnref.vjp import vjp_scaled_dot_product_attention

EXAMPLES = 20


def reference_vjp(q: Any, k: Any, v: Any, cotangent: Any, **kwargs: Any) -> dict[str, Any]:
    """Gradients of the context only, by the reference's exact VJP."""
    _, weights = attnref.scaled_dot_product_attention(q, k, v, **kwargs)
    grads = vjp_scaled_dot_product_attention(
        q, k, v, **kwargs, cotangent=(cotangent, np.zeros_like(weights))
    )
    named = {"query": grads.query, "key": grads.key, "value": grads.value}
    return named if grads.sinks is None else named | {"sinks": grads.sinks}


# the reference takes the restrictions too (softcap, window, query_offset, key_lengths),
# sinks and return_lse
EXTRA: frozenset[Feature] = RESTRICTIONS | {"causal_with_mask", "gradients", "sinks", "lse"}
FEATURES = NumpySDPA(attnref.scaled_dot_product_attention).features | EXTRA


def test_reference_through_the_numpy_adapter_conforms() -> None:
    """input.gradient, sdpa.formula: the reference judged by the oracle passes every clause."""
    impl = NumpySDPA(
        attnref.scaled_dot_product_attention,
        name="attnref",
        features=FEATURES,
        vjp_fn=reference_vjp,
    )
    report = check_implementation(impl, max_examples=EXAMPLES)
    assert report.passed, report.table()
    assert report.counts()["skipped"] == 0, report.table()


def test_float32_reference_conforms_in_float32() -> None:
    """input.result-dtype: the reference on float32 data keeps float32 and its accuracy."""
    impl = NumpySDPA(attnref.scaled_dot_product_attention, name="attnref32", dtype="float32")
    report = check_implementation(impl, max_examples=EXAMPLES)
    assert report.passed, report.table()


def test_numpy_bug_is_caught() -> None:
    """distribution.mask-polarity: inverting the mask in a NumPy callable fails that clause."""

    def inverted(q: Any, k: Any, v: Any, *, mask: Any = None, **kwargs: Any) -> Any:
        flipped = None if mask is None or mask.dtype != np.bool_ else ~mask
        return attnref.scaled_dot_product_attention(q, k, v, mask=flipped, **kwargs)

    impl = NumpySDPA(inverted, name="inverted")
    report = check_implementation(
        impl, max_examples=EXAMPLES, clauses_to_check=frozenset({"distribution.mask-polarity"})
    )
    assert report.results[0].status == "failed"
