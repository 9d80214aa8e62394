"""The public strategies of :mod:`attnref.testing.strategies`: what they draw, what they refuse."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from attnref.testing import strategies as ats

BAD_CALLS: dict[str, tuple[Callable[[], object], str]] = {
    "attention_shapes(min_keys=3, max_keys=2)": (
        lambda: ats.attention_shapes(min_keys=3, max_keys=2),
        r"min_keys=3 is larger than max_keys=2",
    ),
    "attention_shapes(min_keys=0)": (
        lambda: ats.attention_shapes(min_keys=0),
        r"min_keys=0 must be at least 1",
    ),
    "attention_shapes(max_features=2.5)": (
        lambda: ats.attention_shapes(max_features=2.5),  # type: ignore[arg-type]
        r"max_features=2.5 must be an int",
    ),
    "batch_shapes(min_dims=3, max_dims=2)": (
        lambda: ats.batch_shapes(min_dims=3, max_dims=2),
        r"min_dims=3 is larger than max_dims=2",
    ),
    "float_dtypes(sizes=(8,))": (
        lambda: ats.float_dtypes(sizes=(8,)),
        r"sizes has unknown entries \[8\]",
    ),
    "well_conditioned_arrays('int32', 3)": (
        lambda: ats.well_conditioned_arrays("int32", 3),
        r"dtype='int32' is not a real floating dtype; use float16, float32 or float64",
    ),
    "well_conditioned_arrays(None, 3)": (
        lambda: ats.well_conditioned_arrays(None, 3),  # type: ignore[arg-type]
        r"dtype=None is not a dtype",
    ),
    "well_conditioned_arrays('float16', 3, max_magnitude=1e6)": (
        lambda: ats.well_conditioned_arrays("float16", 3, max_magnitude=1e6),
        r"max_magnitude=1000000.0 is larger than the largest float16",
    ),
    "well_conditioned_arrays('float32', (2, -1))": (
        lambda: ats.well_conditioned_arrays("float32", (2, -1)),
        r"shape=\(2, -1\) must be a tuple of non-negative ints",
    ),
    "score_arrays('float64', 3, regimes=())": (
        lambda: ats.score_arrays("float64", 3, regimes=()),
        r"regimes is empty",
    ),
    "score_arrays('float64', 3, regimes='ties')": (
        lambda: ats.score_arrays("float64", 3, regimes="ties"),  # type: ignore[arg-type]
        r"regimes='ties' must be a sequence of names, not one string",
    ),
    "score_arrays('float64', 3, max_magnitude=nan)": (
        lambda: ats.score_arrays("float64", 3, max_magnitude=float("nan")),
        r"max_magnitude=nan must be finite and positive",
    ),
    "boolean_masks((3,))": (
        lambda: ats.boolean_masks((3,)),
        r"shape=\(3,\) must have at least 2 dimensions",
    ),
    "boolean_masks((2, 0))": (
        lambda: ats.boolean_masks((2, 0)),
        r"has no keys",
    ),
    "boolean_masks((3, 2), patterns=['causal_bottom_right'], fully_masked_rows=False)": (
        lambda: ats.boolean_masks(
            (3, 2), patterns=["causal_bottom_right"], fully_masked_rows=False
        ),
        r"always has fully masked rows",
    ),
    "boolean_masks((2, 2), patterns=['diagonal'])": (
        lambda: ats.boolean_masks((2, 2), patterns=["diagonal"]),  # type: ignore[list-item]
        r"patterns has unknown entries \['diagonal'\]",
    ),
    "additive_masks('float16', (2, 2), max_bias=inf)": (
        lambda: ats.additive_masks("float16", (2, 2), max_bias=float("inf")),
        r"max_bias=inf must be finite and positive",
    ),
    "poisoned(int array, where)": (
        lambda: ats.poisoned(np.zeros(3, dtype=np.int64), np.ones(3, dtype=bool)),
        r"array has dtype int64",
    ),
    "poisoned(array, where[4])": (
        lambda: ats.poisoned(np.zeros(3), np.ones(4, dtype=bool)),
        r"where of shape \(4,\) does not broadcast to \(3,\)",
    ),
    "score_parameters('bilinear', ...)": (
        lambda: ats.score_parameters("bilinear", dtype="float64", d_q=2, d_k=2, tk=3),  # type: ignore[arg-type]
        r"kind='bilinear' is not a score kind",
    ),
    "score_parameters('dot', d_q=2, d_k=3, ...)": (
        lambda: ats.score_parameters("dot", dtype="float64", d_q=2, d_k=3, tk=3),
        r"score 'dot' needs d_q == d_k; got d_q=2 and d_k=3",
    ),
    "scales('float16', max_magnitude=1e5)": (
        lambda: ats.scales("float16", max_magnitude=1e5),
        r"max_magnitude=100000.0 is larger than the largest float16",
    ),
    "safe_magnitude('float64', terms=0)": (
        lambda: ats.safe_magnitude("float64", terms=0),
        r"terms=0 must be at least 1",
    ),
    "attention_calls(kinds=['dot', 'cosine'])": (
        lambda: ats.attention_calls(kinds=["dot", "cosine"]),  # type: ignore[list-item]
        r"kinds has unknown entries \['cosine'\]",
    ),
    "sdpa_calls(gqa=1)": (
        lambda: ats.sdpa_calls(gqa=1),  # type: ignore[arg-type]
        r"gqa=1 must be True, False or None",
    ),
    "unread_by_mask(None, (2, 3), axis=0)": (
        lambda: ats.unread_by_mask(None, (2, 3), axis=0),
        r"axis=0 must be -1 \(keys\) or -2 \(queries\)",
    ),
}


@pytest.mark.parametrize("call", list(BAD_CALLS), ids=list(BAD_CALLS))
def test_bad_arguments_are_refused_when_the_strategy_is_built(call: str) -> None:
    """A bad argument raises InvalidArgument at once, naming the argument, value and remedy."""
    make, message = BAD_CALLS[call]
    with pytest.raises(InvalidArgument, match=message):
        make()


@given(st.data(), ats.float_dtypes())
def test_every_strategy_draws_the_requested_dtype(data: st.DataObject, dtype: Any) -> None:
    """Arrays, additive masks and attention inputs all have exactly the requested dtype."""
    assert data.draw(ats.well_conditioned_arrays(dtype, (2, 3))).dtype == dtype
    assert data.draw(ats.score_arrays(dtype, (2, 3), neg_inf=True)).dtype == dtype
    assert data.draw(ats.additive_masks(dtype, (2, 3))).dtype == dtype
    assert data.draw(ats.boolean_masks((2, 3))).dtype == np.bool_
    inputs = data.draw(ats.attention_inputs(dtype=dtype, poison_unread=True))
    for array in (inputs.query, inputs.keys, inputs.values):
        assert array.dtype == dtype
    call = data.draw(ats.attention_calls(dtype=dtype))
    for value in call.parameters.values():
        assert not isinstance(value, np.ndarray) or value.dtype == dtype
    sdpa = data.draw(ats.sdpa_calls(dtype=dtype))
    assert sdpa.query.dtype == sdpa.key.dtype == sdpa.value.dtype == dtype


@given(ats.attention_shapes())
def test_attention_shapes_broadcast_together(shape: ats.AttentionShapes) -> None:
    """The four batch shapes broadcast to ``batch``, and the array shapes end in the sizes."""
    batches = (shape.query_batch, shape.keys_batch, shape.values_batch, shape.mask_batch)
    assert np.broadcast_shapes(*batches) == shape.batch
    assert shape.query[-2:] == (shape.tq, shape.d_q)
    assert shape.keys[-2:] == (*shape.values[-2:-1], shape.d_k)
    assert shape.scores == (*shape.batch, shape.tq, shape.tk)


@given(st.data(), st.sampled_from(ats.MASK_PATTERNS), st.integers(1, 4), st.integers(1, 4))
def test_masks_without_fully_masked_rows_allow_a_key_in_every_row(
    data: st.DataObject, pattern: ats.MaskPattern, t_q: int, t_k: int
) -> None:
    """With ``fully_masked_rows=False`` every row of every pattern allows at least one key."""
    if pattern == "causal_bottom_right" and t_q > t_k:
        pattern = "causal_top_left"
    mask = data.draw(ats.boolean_masks((2, t_q, t_k), patterns=[pattern], fully_masked_rows=False))
    assert mask.shape == (2, t_q, t_k)
    assert mask.any(axis=-1).all()


@given(st.integers(0, 5), st.integers(1, 5))
def test_causal_masks_follow_the_spec(t_q: int, t_k: int) -> None:
    """``causal_mask`` allows key j for query i iff j <= i (top-left) or j <= i + Tk - Tq."""
    top = ats.causal_mask(t_q, t_k, alignment="top_left")
    bottom = ats.causal_mask(t_q, t_k, alignment="bottom_right")
    for i in range(t_q):
        for j in range(t_k):
            assert top[i, j] == (j <= i)
            assert bottom[i, j] == (j <= i + t_k - t_q)


@given(st.data(), st.integers(1, 4), st.integers(1, 4))
def test_key_padding_masks_are_prefixes_shared_by_all_queries(
    data: st.DataObject, t_q: int, t_k: int
) -> None:
    """A key-padding mask allows one prefix ``j < length`` to every query of a batch element."""
    mask = data.draw(ats.boolean_masks((3, t_q, t_k), patterns=["key_padding"]))
    for b in range(3):
        assert (mask[b] == mask[b, :1]).all()
        length = int(mask[b, 0].sum())
        assert (mask[b, 0] == (np.arange(t_k) < length)).all()


def source_index(full: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index into an array of ``shape`` that NumPy broadcasting reads for index ``full``."""
    aligned = full[len(full) - len(shape) :]
    return tuple(0 if size == 1 else i for i, size in zip(aligned, shape, strict=True))


@given(
    ats.boolean_masks((2, 3, 4)) | ats.boolean_masks((3, 4)),
    st.sampled_from([(4,), (2, 4), (1, 4), (2, 1, 4), (3, 2, 4)]),
)
def test_unread_rows_are_the_keys_no_query_may_attend_to(
    mask: Any, target: tuple[int, ...]
) -> None:
    """``unread_by_mask`` marks a key row unread exactly when no batch element using it reads it."""
    got = ats.unread_by_mask(mask, target, axis=-1)
    assert got.shape == (*target, 1)
    batch = np.broadcast_shapes(mask.shape[:-2], target[:-1])
    read = np.zeros(target, dtype=bool)
    for full in np.ndindex(*batch):
        m = mask[source_index(full, mask.shape[:-2])]  # [Tq, Tk]
        row = source_index(full, target[:-1])
        for j in range(target[-1]):
            read[(*row, j)] |= bool(m[:, j].any())
    np.testing.assert_array_equal(got[..., 0], ~read)


EDGE_CASES: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], bool]]] = {
    "Tk = 1": (ats.attention_shapes(), lambda s: s.tk == 1),
    "Tq != Tk": (ats.attention_shapes(), lambda s: s.tq != s.tk),
    "d = 1": (ats.attention_shapes(), lambda s: s.d_q == 1 and s.d_v == 1),
    "mask adds a batch axis": (
        ats.attention_shapes(),
        lambda s: len(s.mask_batch) > len(s.query_batch),
    ),
    "a fully masked row": (ats.boolean_masks((2, 3)), lambda m: not m.any(axis=-1).all()),
    "an -inf additive entry": (
        ats.additive_masks("float32", (2, 3)),
        lambda m: bool(np.isneginf(m).any()),
    ),
    "exact ties": (
        ats.score_arrays("float16", (4,), regimes=["ties"]),
        lambda x: len(set(x.tolist())) < 4,
    ),
    "near-ties": (
        ats.score_arrays("float64", (3,), regimes=["near_ties"]),
        lambda x: 0 < np.ptp(x) <= 6 * np.spacing(np.abs(x).max()),
    ),
    "the largest float16": (
        ats.score_arrays("float16", (3,), regimes=["large"]),
        lambda x: bool((np.abs(x) == np.finfo(np.float16).max).any()),
    ),
    "NaN poison": (ats.poison_values("float32"), lambda v: v != v),
    "grouped heads": (ats.sdpa_calls(gqa=True), lambda c: c.groups > 1),
}


@pytest.mark.parametrize("case", list(EDGE_CASES), ids=list(EDGE_CASES))
def test_strategies_reach_the_edge_cases(case: str) -> None:
    """Each edge case the issue names is drawn by the strategies (found by search)."""
    strategy, condition = EDGE_CASES[case]
    find(strategy, condition, settings=settings(max_examples=2000, database=None))


def test_the_core_reference_does_not_import_hypothesis() -> None:
    """Hypothesis is optional: ``import attnref`` loads neither it nor ``attnref.testing``."""
    code = (
        "import sys, attnref; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'hypothesis' "
        "or m.startswith('attnref.testing')); print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
