"""The onnxruntime target: ONNX ``Attention`` (opset 24) on onnxruntime's CPU provider.

It conforms once its declared conventions and departures count; each departure
it declares is reproduced here on the operator directly; and a planted bug in
its adapter (a dropped attribute, a shifted causal diagonal) fails the clause
it breaks, so the conformance above is not the adapter's doing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnxruntime.capi.onnxruntime_pybind11_state import (  # type: ignore[import-untyped]
    Fail,  # what onnxruntime raises when a kernel refuses its inputs
)

from attnref.oracle import check_implementation
from attnref.oracle.adapters.onnxruntime import OnnxAttention, _Node, _session
from attnref.oracle.conventions import Conventions
from attnref.oracle.protocol import Case
from attnref.oracle.report import Report
from attnref.oracle.targets import TARGETS, resolve
from attnspec.errors import ArgumentError

QUICK = 8
"""Examples per clause: the quick run (``attnspec check --quick``) a user starts with."""

TARGET = TARGETS["onnxruntime"]


def _check(impl: OnnxAttention, clauses: set[str], /) -> Report:
    """The quick run of ``clauses`` with the target's departures declared, so that a failure
    is not a refused scale's."""
    return check_implementation(
        impl,
        max_examples=QUICK,
        clauses_to_check=frozenset(clauses),
        expected_failures=TARGET.expected_failures,
        departure_cases=TARGET.departure_cases,
    )


def _sdpa(
    shapes: tuple[tuple[int, ...], tuple[int, ...]],
    /,
    *,
    mask: npt.NDArray[Any] | None = None,
    seed: int = 0,
    **options: object,
) -> Case:
    """An SDPA case with normal query/key/value of ``[B, H, Tq, d]`` and ``[B, H, Tk, d]``."""
    rng = np.random.default_rng(seed)
    q_shape, k_shape = shapes
    arrays = {
        "query": rng.standard_normal(q_shape),
        "key": rng.standard_normal(k_shape),
        "value": rng.standard_normal(k_shape),
    }
    return Case("scaled_dot_product_attention", arrays, mask, options)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_target_conforms(dtype: str) -> None:
    """sdpa.formula and every clause it claims: the built-in target conforms in the quick run,
    in float32 and float16, with only its declared departures."""
    built, expected = resolve("onnxruntime")
    assert isinstance(built, OnnxAttention)
    impl = replace(built, dtype=dtype)
    report = check_implementation(
        impl,
        max_examples=QUICK,
        expected_failures=expected,
        departure_cases=TARGET.departure_cases,
    )
    assert report.passed, report.table()
    assert report.counts()["passed"] >= 15, report.table()


def test_declared_top_left_alignment_conforms() -> None:
    """sdpa.causal-top-left: declared top-left, the causal flag runs without a cache and
    conforms; causal cases with key lengths are outside what it supports."""
    impl = OnnxAttention(conventions=Conventions.declare(causal_alignment="top_left"))
    report = _check(impl, {"sdpa.causal-top-left", "sdpa.causal-with-mask", "sdpa.key-lengths"})
    assert report.passed, report.table()
    assert report.counts()["passed"] == 3, report.table()
    padded = _sdpa(((2, 1, 3, 4), (2, 1, 5, 4)), is_causal=True, key_lengths=(3, 5))
    assert not impl.supports(padded)
    assert impl.supports(_sdpa(((2, 1, 3, 4), (2, 1, 5, 4)), is_causal=True, key_lengths=(3, 3)))
    assert OnnxAttention().supports(padded)


def test_3d_layout_conforms() -> None:
    """sdpa.formula, sdpa.grouped-query-heads: declared BTHD, the operator's 3-D form
    [B, T, H*d] with q_num_heads and kv_num_heads conforms too."""
    conventions = Conventions.declare(causal_alignment="bottom_right", layout="BTHD")
    impl = OnnxAttention(conventions=conventions)
    report = _check(impl, {"sdpa.formula", "sdpa.grouped-query-heads", "sdpa.causal-bottom-right"})
    assert report.passed, report.table()
    assert report.counts()["passed"] == 3, report.table()


@pytest.mark.parametrize("scale", [0.0, -0.5])
def test_nonpositive_scale_is_refused(scale: float) -> None:
    """score.scale-applied (declared departure): the kernel refuses a scale of 0 or less when
    its session is built, while a positive scale is taken."""
    shapes = ((1, 1, 2, 3), (1, 1, 4, 3))
    assert "score.scale-applied" in TARGET.expected_failures
    assert TARGET.departure_cases["score.scale-applied"](_sdpa(shapes, scale=scale))
    with pytest.raises(Fail, match="scale must be greater than 0"):
        OnnxAttention().forward(_sdpa(shapes, scale=scale))
    OnnxAttention().forward(_sdpa(shapes, scale=0.5))


@pytest.mark.parametrize(("dtype", "poison"), [("float16", 2e4), ("float32", 1e38)])
def test_masked_score_beyond_the_range_reaches_the_row(dtype: str, poison: float) -> None:
    """input.unread-positions (declared departure): the value of a key the mask disallows
    changes nothing while its score stays in the dtype's range, and changes the row once
    the score passes it, though the clause says that any finite value there changes nothing."""
    assert "input.unread-positions" in TARGET.expected_failures
    mask = np.array([True, True, False]).reshape(1, 1, 1, 3)
    case = _sdpa(((1, 1, 1, 2), (1, 1, 3, 2)), mask=mask, scale=8.0)
    query = 1 + np.abs(case.query)  # the masked key's score grows with its value
    impl = OnnxAttention(dtype=dtype)

    def context(masked_value: float) -> npt.NDArray[Any]:
        key = case.key.copy()
        key[..., 2, :] = masked_value  # finite in the dtype
        arrays = dict(case.arrays, query=query, key=key)
        return impl.forward(replace(case, arrays=arrays)).context

    assert np.isfinite(context(0.0)).all()
    assert np.array_equal(context(0.0), context(1.0))
    assert not np.array_equal(context(0.0), context(poison), equal_nan=True)


def test_the_oracle_finds_the_float16_unread_departure() -> None:
    """input.unread-positions: the oracle's own float16 poison shows the departure, with the
    refused scales set aside, so its xfail is not the scale's."""
    impl = OnnxAttention(dtype="float16")
    report = check_implementation(
        impl,
        max_examples=QUICK,
        clauses_to_check=frozenset({"input.unread-positions"}),
        expected_failures={"score.scale-applied": "refused"},
        departure_cases={"score.scale-applied": TARGET.departure_cases["score.scale-applied"]},
    )
    (result,) = report.results
    assert result.status == "failed", report.table()
    assert "scale must be greater than 0" not in result.message


def test_float16_declared_float32_accumulation_does_not_conform() -> None:
    """sdpa.formula: the float16 kernel rounds its scores to float16, so declared with the
    default float32 accumulation it fails; its float16 declaration is not a free pass."""
    impl = OnnxAttention(dtype="float16")
    assert impl.conventions.accumulation == "float16"
    conventions = Conventions.declare(causal_alignment="bottom_right", accumulation="float32")
    claimed = OnnxAttention(dtype="float16", conventions=conventions)
    report = _check(claimed, {"sdpa.causal-bottom-right", "sdpa.softcap", "input.batch-broadcast"})
    assert not report.passed, report.table()
    assert all("scale must be" not in r.message for r in report.results), report.table()
    assert _check(
        impl, {"sdpa.causal-bottom-right", "sdpa.softcap", "input.batch-broadcast"}
    ).passed


class _NoSoftcap(OnnxAttention):
    """Planted bug: the softcap keyword is dropped before the operator sees it."""

    def forward(self, case: Case, /) -> Any:
        options = {k: v for k, v in case.options.items() if k != "softcap"}
        return super().forward(replace(case, options=options))


class _TopLeftCausal(OnnxAttention):
    """Planted bug: declared bottom-right, but the cache length that moves the diagonal to
    ``Tk - Tq`` is never handed over, so the causal flag stays top-left."""

    def _key_lengths(self, case: Case) -> Any:
        lengths = case.options.get("key_lengths")
        return None if lengths is None else np.array(lengths, dtype=np.int64)


class _SharedHeads(OnnxAttention):
    """Planted bug: grouped query heads tiled (head h reads key head h % Hk), not interleaved."""

    def forward(self, case: Case, /) -> Any:
        groups = case.groups
        if groups == 1:
            return super().forward(case)
        tiled = {
            name: np.tile(case.arrays[name], (1, groups, 1, 1)) for name in (case.key_name, "value")
        }
        options = {k: v for k, v in case.options.items() if k != "enable_gqa"}
        return super().forward(replace(case, arrays=dict(case.arrays, **tiled), options=options))


@pytest.mark.parametrize(
    ("bug", "clause"),
    [
        (_NoSoftcap, "sdpa.softcap"),
        (_TopLeftCausal, "sdpa.causal-bottom-right"),
        (_SharedHeads, "sdpa.grouped-query-heads"),
    ],
    ids=["softcap-dropped", "causal-offset-shifted", "gqa-tiled"],
)
def test_planted_bug_fails_its_clause(bug: type[OnnxAttention], clause: str) -> None:
    """The oracle rejects the adapter with a planted bug, on the clause the bug breaks."""
    report = _check(bug(), {clause})
    (result,) = report.results
    assert result.status == "failed", report.table()
    assert "scale must be" not in result.message, report.table()
    assert _check(OnnxAttention(), {clause}).passed


def test_the_kernel_refuses_a_broadcast_query_axis() -> None:
    """input.batch-broadcast: the kernel itself refuses a mask [B, 1, 1, Tk]; the adapter
    repeats it along the query axis, and the result is the operator's on the full mask."""
    keep = np.array([True, False, True, True]).reshape(1, 1, 1, 4)
    case = _sdpa(((1, 2, 3, 5), (1, 2, 4, 5)), mask=keep)
    node = _Node(
        dtype="float32", rank=4, mask="bool", mask_rank=4, key_lengths=False, attributes=()
    )
    feeds = {n: case.arrays[a].astype(np.float32) for n, a in zip("QKV", case.names, strict=True)}
    with pytest.raises(Fail, match="q_sequence_length"):
        _session(node).run(["Y", "weights"], {**feeds, "attn_mask": keep})
    full = np.broadcast_to(keep, (1, 1, 3, 4)).copy()
    expected, _ = _session(node).run(["Y", "weights"], {**feeds, "attn_mask": full})
    assert np.array_equal(OnnxAttention().forward(case).context, expected.astype(np.float64))


def test_sessions_are_built_once_per_attribute_set() -> None:
    """One session serves every shape with the same attributes and inputs."""
    impl = OnnxAttention()
    impl.forward(_sdpa(((1, 1, 2, 3), (1, 1, 4, 3)), scale=0.375))
    before = _session.cache_info()
    impl.forward(_sdpa(((2, 3, 5, 7), (2, 3, 6, 7)), scale=0.375, seed=1))
    after = _session.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_dtypes_without_a_kernel_are_refused(dtype: str) -> None:
    """float64 and bfloat16 would run ONNX's function body, not the kernel under test."""
    with pytest.raises(ArgumentError, match="dtype must be float32 or float16"):
        OnnxAttention(dtype=dtype)


def test_options_it_cannot_pass_are_refused() -> None:
    """A keyword the operator has no input for (a window) raises rather than being dropped."""
    case = _sdpa(((1, 1, 2, 3), (1, 1, 4, 3)), window=(1, 0))
    with pytest.raises(NotImplementedError, match="takes no window"):
        OnnxAttention().forward(case)
