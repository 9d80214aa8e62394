"""The torch.flex target: flex_attention conforms, a broken adapter of it does not, and its
one listed departure is real.

Planted bugs wrap the adapter's flex call or the data of its ``mask_mod``, so flex still
computes; each must fail the clause it breaks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn.attention.flex_attention import (
    AuxRequest,
    BlockMask,
    create_block_mask,
    flex_attention,
)

import attnref
from attnref.oracle import check_implementation
from attnref.oracle.adapters.flex import FlexAttention, _Allowed
from attnref.oracle.conventions import Conventions
from attnref.oracle.protocol import Case
from attnref.oracle.targets import TARGETS
from attnref.oracle.vector_check import check_vectors
from attnspec.errors import ArgumentError

EXAMPLES = 20
"""Examples per clause for the planted bugs: each is caught within them (at 8, the
window's is missed with seed 0: a causal window hides its right side)."""


def _flex(*args: Any, **kwargs: Any) -> Any:
    """flex_attention without its advice to compile (warnings are errors in this suite)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch")
        return flex_attention(*args, **kwargs)


def _status(impl: FlexAttention, clause: str) -> str:
    report = check_implementation(impl, max_examples=EXAMPLES, clauses_to_check=frozenset({clause}))
    return report.results[0].status


def _softcap_after_mask(q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
    """flex with the mask applied inside the score_mod, before the cap: a masked key's
    ``-inf`` becomes ``-c`` and keeps weight (onnx/onnx#7867)."""
    score_mod, block_mask = kwargs.pop("score_mod"), kwargs.pop("block_mask")
    mask_mod = block_mask.mask_mod

    def masked_then_capped(s: Any, b: Any, h: Any, i: Any, j: Any) -> Any:
        return score_mod(torch.where(mask_mod(b, h, i, j), s, -torch.inf), b, h, i, j)

    return flex_attention(q, k, v, score_mod=masked_then_capped, **kwargs)


@dataclass(frozen=True)
class _RightIgnored(FlexAttention):
    """A window whose right side reaches past every key (jax-ml/jax#32300's class)."""

    def _allowed(self, case: Case, shape: tuple[int, int, int, int]) -> _Allowed:
        allowed = super()._allowed(case, shape)
        return replace(allowed, right=allowed.right.new_tensor(10**6))


@dataclass(frozen=True)
class _LengthsOffByOne(FlexAttention):
    """Key lengths that admit one padding key more."""

    def _allowed(self, case: Case, shape: tuple[int, int, int, int]) -> _Allowed:
        allowed = super()._allowed(case, shape)
        return replace(allowed, lengths=allowed.lengths + 1)


@pytest.mark.parametrize(
    ("impl", "clause"),
    [
        (FlexAttention(name="softcap-after-mask", attend=_softcap_after_mask), "sdpa.softcap"),
        (_RightIgnored(name="window-right-ignored"), "sdpa.window"),
        (_LengthsOffByOne(name="key-lengths-plus-one"), "sdpa.key-lengths"),
    ],
    ids=["softcap-after-mask", "window-right-ignored", "key-lengths-plus-one"],
)
def test_a_planted_bug_fails_its_clause(impl: FlexAttention, clause: str) -> None:
    """sdpa.softcap, sdpa.window, sdpa.key-lengths: each broken adapter fails its clause."""
    assert _status(impl, clause) == "failed"


# q . k = 2**1024 overflows float64; scale * q . k = 2**424 does not
_OVERFLOW = {
    "query": np.array([[[[2.0**511, 2.0**511]]]]),
    "key": np.array([[[[2.0**512, 2.0**512], [2.0**511, -(2.0**511)]]]]),
    "value": np.array([[[[1.0, 2.0], [3.0, 4.0]]]]),
}


def test_flex_scales_after_the_product_overflows() -> None:
    """distribution.stable (listed for torch.flex): flex multiplies query @ key.T by the scale
    afterwards, so the product overflows to inf and the row is NaN; the spec gives [1, 2]."""
    q, k, v = (torch.from_numpy(_OVERFLOW[n]) for n in ("query", "key", "value"))
    out = _flex(q, k, v, scale=2.0**-600)
    assert torch.isnan(out).all()
    expected, _ = attnref.scaled_dot_product_attention(
        _OVERFLOW["query"][0, 0], _OVERFLOW["key"][0, 0], _OVERFLOW["value"][0, 0], scale=2.0**-600
    )
    np.testing.assert_array_equal(expected, [[1.0, 2.0]])
    report = check_vectors(FlexAttention(), clauses_to_check=frozenset({"distribution.stable"}))
    assert report.results[0].status == "failed", report.table()
    listed = TARGETS["torch.flex"].expected_failures
    report = check_vectors(
        FlexAttention(),
        expected_failures=listed,
        clauses_to_check=frozenset({"distribution.stable"}),
    )
    assert report.results[0].status == "xfail", report.table()


def test_a_fully_masked_row_is_zero_with_lse_minus_infinity() -> None:
    """distribution.fully-masked-row, lse.fully-masked-row: flex gives a row with no allowed
    key a zero context and a log-sum-exp of -inf (fully_masked_row="zero")."""
    rng = np.random.default_rng(0)
    q, k, v = (torch.from_numpy(rng.standard_normal((1, 1, 3, 4))) for _ in range(3))

    def row_one_masked(b: Any, h: Any, i: Any, j: Any) -> Any:
        return i != 1

    block_mask: BlockMask = create_block_mask(row_one_masked, 1, 1, 3, 3, device="cpu")
    out, aux = _flex(q, k, v, block_mask=block_mask, return_aux=AuxRequest(lse=True))
    lse = aux.lse
    assert torch.equal(out[0, 0, 1], torch.zeros(4, dtype=torch.float64))
    assert lse[0, 0, 1].item() == -np.inf
    assert torch.isfinite(lse[0, 0, [0, 2]]).all()


def test_flex_has_no_backward_on_the_cpu() -> None:
    """input.gradient: flex raises NotImplementedError for inputs that require gradients on
    the CPU, so torch.flex does not declare gradients."""
    impl = FlexAttention()
    assert "gradients" not in impl.features
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal((1, 1, 2, 2)) for n in ("query", "key", "value")}
    case = Case("scaled_dot_product_attention", arrays)
    with pytest.raises(NotImplementedError, match="does not support backward on CPU"):
        impl.vjp(case, np.ones((1, 1, 2, 2)))


def test_a_layout_cannot_be_declared() -> None:
    """flex takes [B, H, T, d] and the adapter builds its mask: a declared layout is refused."""
    with pytest.raises(ArgumentError, match="layout and mask_polarity cannot be declared"):
        FlexAttention(conventions=Conventions.declare(layout="BTHD"))
