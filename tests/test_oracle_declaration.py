"""What the command line declares about a target: conventions, features, shapes, dtype, device.

:class:`~attnref.oracle.targets.Declaration` is what ``attnspec check``'s
options build; everything a Python factory can declare can be declared with
it, and each bad declaration is refused with a message naming the option.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
import torch

import attnref
from attnref.oracle import Case, Conventions, Feature
from attnref.oracle.adapters.numpy import NumpySDPA
from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.conventions import DECLARABLE, parse_declarations
from attnref.oracle.targets import Declaration, Limited, ShapeLimit, check_device, resolve
from attnspec.errors import ArgumentError


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> Any:
    """A plain callable of the SDPA form returning (context, weights)."""
    import attnref.torch as twin

    return twin.scaled_dot_product_attention(q, k, v, **kwargs)


def sdpa_bthd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> Any:
    """The same on [B, T, H, d] tensors (weights stay [B, H, Tq, Tk])."""
    context, weights = sdpa(*(x.transpose(-3, -2) for x in (q, k, v)), **kwargs)
    return context.transpose(-3, -2), weights


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """An importable module ``declared_targets`` holding ``sdpa``."""
    made = types.ModuleType("declared_targets")
    made.sdpa = sdpa  # type: ignore[attr-defined]
    made.sdpa_bthd = sdpa_bthd  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "declared_targets", made)
    return made


def test_every_field_of_conventions_declare_can_be_declared() -> None:
    """--declare names exactly the keyword arguments of Conventions.declare."""
    import inspect

    assert set(DECLARABLE) == set(inspect.signature(Conventions.declare).parameters)
    declared = parse_declarations(
        [
            "fully-masked-row=nan",
            "causal_alignment=bottom_right",
            "mask_polarity=ignore",
            "layout=BTHD",
            "accumulation=float32",
        ]
    )
    assert Conventions.declare(**declared).declared == frozenset(DECLARABLE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["layout"], "--declare must be NAME=VALUE"),
        (["layout="], "--declare must be NAME=VALUE"),
        (["colour=blue"], "--declare names a convention, one of fully_masked_row"),
        (["layout=HBTD"], "--declare layout must be one of 'BHTD', 'BTHD'; got 'HBTD'"),
        (["layout=BTHD", "layout=BHTD"], "--declare layout given twice"),
    ],
    ids=["no value sign", "empty value", "unknown name", "value out of domain", "contradiction"],
)
def test_bad_declarations(texts: list[str], message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        parse_declarations(texts)


def test_shape_limits_parse_and_judge_cases() -> None:
    """d%8, Tk<=4 and H>=2 read a case's sizes: query/key feature size, key length, heads."""
    case = Case(
        "scaled_dot_product_attention",
        {
            "query": np.zeros((1, 2, 3, 8)),
            "key": np.zeros((1, 2, 5, 8)),
            "value": np.zeros((1, 2, 5, 4)),
        },
    )
    assert ShapeLimit.parse("d%8").allows(case)
    assert not ShapeLimit.parse("d_v%8").allows(case)
    assert not ShapeLimit.parse("Tk<=4").allows(case)
    assert ShapeLimit.parse(" Tq <= 3 ").allows(case)
    assert ShapeLimit.parse("H>=2").allows(case)
    assert str(ShapeLimit.parse("d %  16")) == "d%16"


@pytest.mark.parametrize("text", ["d", "d%0", "x%8", "d<8", "d%-8", "d%8%2"])
def test_bad_shape_limits(text: str) -> None:
    with pytest.raises(ArgumentError, match="--shape-limit must be NAME%N"):
        ShapeLimit.parse(text)


def test_feature_switches_edit_the_features() -> None:
    """--mask-kinds replaces the mask features; --without removes; --features replaces all."""
    offered: frozenset[Feature] = frozenset(
        {"bool_mask", "causal", "causal_with_mask", "gradients", "scale"}
    )
    masks = Declaration(mask_kinds=frozenset({"additive", "key-padding"}))
    assert masks.offered(offered) == {
        "additive_mask",
        "key_padding_mask",
        "causal",
        "causal_with_mask",
        "gradients",
        "scale",
    }
    none = Declaration(mask_kinds=frozenset())
    assert none.offered(offered) == {"causal", "gradients", "scale"}
    assert Declaration(without=frozenset({"gradients"})).offered(offered) == offered - {"gradients"}
    assert Declaration(features=frozenset({"scale"})).offered(offered) == {"scale"}


def test_declared_conventions_add_to_the_targets_own() -> None:
    """A target declaring MHA's polarity keeps it; the command line adds fully masked rows."""
    own = Conventions.declare(mask_polarity="ignore")
    made = Declaration(conventions={"fully_masked_row": "nan"}).conventions_for(own)
    assert made.mask_polarity == "ignore"
    assert made.fully_masked_row == "nan"
    assert made.declared == {"mask_polarity", "fully_masked_row"}


def test_arguments_rebuild_the_declaration() -> None:
    """The options a reproduce command repeats are those that made the declaration."""
    declared = Declaration(
        dtype="bfloat16",
        device="cpu",
        conventions={"layout": "BTHD"},
        without=frozenset({"gradients"}),
        mask_kinds=frozenset({"bool"}),
        shape_limits=(ShapeLimit.parse("d%8"),),
    )
    assert declared.arguments() == [
        "--dtype", "bfloat16", "--device", "cpu", "--declare", "layout=BTHD",
        "--without", "gradients", "--mask-kinds", "bool", "--shape-limit", "d%8",
    ]  # fmt: skip


def test_a_plain_callable_is_built_as_declared(module: types.ModuleType) -> None:
    """--dtype, --layout and --no-gradients reach the adapter of a plain callable."""
    declared = Declaration(
        dtype="float32", conventions={"layout": "BTHD"}, without=frozenset({"gradients"})
    )
    impl, _ = resolve("declared_targets:sdpa_bthd", declared=declared)
    assert isinstance(impl, TorchSDPA)
    assert impl.dtype == "float32"
    assert impl.conventions.layout == "BTHD"
    assert "gradients" not in impl.features
    assert "weights" in impl.features  # still found by the call that infers them


def test_a_builtin_target_is_declared_too() -> None:
    """The dtype of a built-in target changes; its own conventions stay."""
    impl, expected = resolve("torch.mha", declared=Declaration(dtype="float32"))
    assert impl.dtype == "float32"
    assert impl.conventions.mask_polarity == "ignore"
    assert "distribution.fully-masked-row" in expected


def test_an_implementation_that_is_no_dataclass_cannot_be_redeclared() -> None:
    """A hand-written class: the command line cannot change what it has no field for."""

    class Mine:
        name, framework, dtype, device = "mine", "numpy", "float64", "cpu"
        function, score_form = "scaled_dot_product_attention", None
        conventions = Conventions()
        features: frozenset[Feature] = frozenset()

    with pytest.raises(ArgumentError, match="is a Mine, not a dataclass"):
        Declaration(dtype="float32").apply(Mine(), spec="m:Mine")  # type: ignore[arg-type]


def test_limited_behaves_as_what_it_wraps() -> None:
    """Limited forwards every property and call, adds ``supports``, keeps declaring on top."""
    inner = NumpySDPA(attnref.scaled_dot_product_attention, name="ref")
    limited = Limited(inner, [ShapeLimit.parse("d%2")])
    assert (limited.name, limited.dtype) == (inner.name, "float64")
    assert limited.features == inner.features
    names = ("query", "key", "value")
    case = Case("scaled_dot_product_attention", {n: np.ones((1, 1, 2, 3)) for n in names})
    assert not limited.supports(case)
    redeclared = Declaration(dtype="float32", shape_limits=(ShapeLimit.parse("Tk<=8"),)).apply(
        limited, spec="ref"
    )
    assert isinstance(redeclared, Limited)
    assert redeclared.dtype == "float32"
    assert [str(x) for x in redeclared.limits] == ["d%2", "Tk<=8"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available here")
def test_an_absent_device_is_refused_before_any_case() -> None:
    """check_device says in one line that the device is not available."""
    impl = TorchSDPA(sdpa, dtype="float16", device="cuda")
    with pytest.raises(ArgumentError, match="device 'cuda' is not available to torch here"):
        check_device(impl)
    with pytest.raises(ArgumentError, match="device 'gpu' is not available to torch here"):
        check_device(TorchSDPA(sdpa, device="gpu"))
