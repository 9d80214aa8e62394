"""Plain callables as targets: what is inferred from them, and the arrays they may not touch.

A plain PyTorch callable given as ``attnspec check module:fn`` offers what its
signature names and returns what one call shows; anything else is one clear
usage error. Every adapter hands the implementation its own copies, so a
kernel writing into its arguments fails ``input.not-mutated`` and nothing else.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import attnref
import attnref.torch as twin
from attnref.oracle import Case, Feature, check_implementation
from attnref.oracle.adapters.numpy import NumpySDPA
from attnref.oracle.adapters.torch import TorchSDPA
from attnref.oracle.targets import resolve
from attnspec.errors import ArgumentError

ALWAYS: frozenset[Feature] = frozenset({"gradients", "distinct_value_dim"})
"""What every plain PyTorch callable offers: autograd, and values of their own size."""


def context(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The twin's context, with the spec's keyword names."""
    result: torch.Tensor = twin.scaled_dot_product_attention(q, k, v, **kwargs)[0]
    return result


def mask_only(q: Any, k: Any, v: Any, *, mask: Any = None) -> Any:
    return context(q, k, v, mask=mask)


def mask_scale(q: Any, k: Any, v: Any, *, mask: Any = None, scale: Any = None) -> Any:
    return context(q, k, v, mask=mask, scale=scale)


def causal_only(q: Any, k: Any, v: Any, *, is_causal: bool = False) -> Any:
    return context(q, k, v, is_causal=is_causal)


def mask_causal(q: Any, k: Any, v: Any, mask: Any = None, causal: bool = False) -> Any:
    return context(q, k, v, mask=mask, is_causal=causal)


def gqa_only(q: Any, k: Any, v: Any, *, enable_gqa: bool = False) -> Any:
    return context(q, k, v, enable_gqa=enable_gqa)


def any_keywords(q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
    return context(q, k, v, **kwargs)


def torch_style(q: Any, k: Any, v: Any, attn_mask: Any = None, scale: Any = None) -> Any:
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, scale=scale
    )


def torch_style_rest(q: Any, k: Any, v: Any, *, attn_mask: Any = None, **kwargs: Any) -> Any:
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)


SIGNATURES: dict[str, tuple[Callable[..., Any], set[Feature], tuple[str | None, ...]]] = {
    "mask": (mask_only, {"bool_mask"}, ("mask", None, None, None)),
    "mask-scale": (mask_scale, {"bool_mask", "scale"}, ("mask", "scale", None, None)),
    "is_causal": (causal_only, {"causal"}, (None, None, "is_causal", None)),
    "mask-causal": (
        mask_causal,
        {"bool_mask", "causal", "causal_with_mask"},
        ("mask", None, "causal", None),
    ),
    "enable_gqa": (gqa_only, {"gqa"}, (None, None, None, "enable_gqa")),
    "kwargs": (
        any_keywords,
        {"bool_mask", "scale", "causal", "causal_with_mask", "gqa"},
        ("mask", "scale", "is_causal", "enable_gqa"),
    ),
    "attn_mask": (
        torch_style,
        {"bool_mask", "additive_mask", "scale"},
        ("attn_mask", "scale", None, None),
    ),
    "attn_mask-kwargs": (
        torch_style_rest,
        {"bool_mask", "additive_mask", "scale", "causal", "causal_with_mask", "gqa"},
        ("attn_mask", "scale", "is_causal", "enable_gqa"),
    ),
}


@pytest.mark.parametrize("form", list(SIGNATURES))
def test_features_are_inferred_from_the_signature(form: str) -> None:
    """Each keyword a callable names is a feature, passed by that name; nothing else is."""
    fn, features, keywords = SIGNATURES[form]
    impl = TorchSDPA.from_callable(fn)
    assert impl.features == features | ALWAYS
    assert (impl.mask_arg, impl.scale_arg, impl.causal_arg, impl.gqa_arg) == keywords


def with_weights(q: Any, k: Any, v: Any, *, mask: Any = None) -> Any:
    return twin.scaled_dot_product_attention(q, k, v, mask=mask)


RESULTS: dict[str, tuple[Callable[..., Any], bool]] = {
    "tensor": (mask_only, False),
    "tuple": (with_weights, True),
    "list": (lambda q, k, v, *, mask=None: list(with_weights(q, k, v, mask=mask)), True),
    "context-None": (lambda q, k, v, *, mask=None: (mask_only(q, k, v, mask=mask), None), False),
}


@pytest.mark.parametrize("result", list(RESULTS))
def test_weights_are_detected_from_the_result(result: str) -> None:
    """A pair of tensors is ``(context, weights)``; a single tensor is the context alone."""
    fn, weights = RESULTS[result]
    assert ("weights" in TorchSDPA.from_callable(fn).features) is weights


def _raise(q: Any, k: Any, v: Any, *, mask: Any = None) -> Any:
    raise RuntimeError("kernel not compiled")


BAD_CALLABLES: dict[str, tuple[Callable[..., Any], str]] = {
    "returns-numpy": (lambda q, k, v, *, mask=None: mask_only(q, k, v).numpy(), "returned a NumPy"),
    "returns-wrong-shape": (lambda q, k, v: mask_only(q, k, v)[0], "returned a tensor of shape"),
    "returns-three": (lambda q, k, v: (q, q, q), "returned a tuple"),
    "returns-float": (lambda q, k, v: 1.0, "returned an object of type float"),
    "two-positional": (lambda q, k: q, "'bad' must take query, key and value"),
    "raises": (_raise, "'bad' raised RuntimeError: kernel not compiled"),
    "no-signature": (torch.nn.functional.scaled_dot_product_attention, "cannot read the signature"),
}


@pytest.mark.parametrize("bad", list(BAD_CALLABLES))
def test_a_callable_of_another_form_is_one_usage_error(bad: str) -> None:
    """A callable that is not of the SDPA form fails once, naming itself and the expected form."""
    fn, start = BAD_CALLABLES[bad]
    with pytest.raises(ArgumentError, match=start):
        TorchSDPA.from_callable(fn, name="bad")


def test_declared_features_need_their_keywords() -> None:
    """Declaring a feature the signature cannot receive is a usage error, not silent skipping."""
    with pytest.raises(ArgumentError, match="'bad' declares 'scale' but takes no scale keyword"):
        TorchSDPA.from_callable(mask_only, name="bad", features=frozenset({"bool_mask", "scale"}))
    declared = TorchSDPA.from_callable(mask_only, features=frozenset({"bool_mask", "weights"}))
    assert declared.features == {"bool_mask", "weights"}


def test_documented_form_gets_exactly_what_it_offers() -> None:
    """distribution.masked-zero, distribution.sums-to-one: the README's form is judged on weights.

    ``fn(q, k, v, *, mask=None, scale=None)`` returning ``(context, weights)``
    offers masks, the scale and weights, and is never called with another keyword.
    """
    passed: set[str] = set()

    def documented(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: Any = None, scale: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        passed.update(
            name for name, given in (("mask", mask), ("scale", scale)) if given is not None
        )
        return twin.scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)

    impl = TorchSDPA.from_callable(documented, name="documented")
    assert impl.features == {"bool_mask", "scale", "weights", "gradients", "distinct_value_dim"}
    report = check_implementation(impl, max_examples=5)
    assert report.passed, report.table()
    status = {r.clause: r.status for r in report.results}
    assert status["distribution.masked-zero"] == "passed"
    assert status["distribution.sums-to-one"] == "passed"
    assert passed == {"mask", "scale"}


def scales_query_in_place(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: Any = None, scale: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A correct SDPA that scales its query in place, then computes with scale 1."""
    q.mul_(1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    return twin.scaled_dot_product_attention(q, k, v, mask=mask, scale=1.0)


def small_case(*, nonfinite: bool = False) -> Case:
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal((1, 2, 3, 4)) for n in ("query", "key", "value")}
    mask = np.array([True, True, False])  # the last key is masked
    if nonfinite:
        arrays["key"][..., -1, :] = np.nan
    return Case("scaled_dot_product_attention", arrays, mask, {"scale": 0.5})


def test_in_place_kernel_fails_only_not_mutated() -> None:
    """input.not-mutated: writing into the query fails that clause, and no other."""
    impl = TorchSDPA.from_callable(scales_query_in_place, name="in-place")
    report = check_implementation(impl, max_examples=10)
    failed = {r.clause for r in report.results if r.status == "failed"}
    assert failed == {"input.not-mutated"}, report.table()


IN_PLACE: dict[str, Callable[[], Any]] = {
    "torch": lambda: TorchSDPA.from_callable(scales_query_in_place),
    "torch-float32": lambda: TorchSDPA.from_callable(scales_query_in_place, dtype="float32"),
    "numpy": lambda: NumpySDPA(numpy_scales_query_in_place),
}


def numpy_scales_query_in_place(q: Any, k: Any, v: Any, *, mask: Any = None, **kwargs: Any) -> Any:
    q *= kwargs.pop("scale")
    return attnref.scaled_dot_product_attention(q, k, v, mask=mask, scale=1.0, **kwargs)


@pytest.mark.parametrize("adapter", list(IN_PLACE))
def test_in_place_kernel_cannot_reach_the_case(adapter: str) -> None:
    """input.not-mutated: the write is reported, and the case's own arrays stay as they were."""
    impl = IN_PLACE[adapter]()
    case = small_case()
    before = {n: a.copy() for n, a in case.arrays.items()}
    assert impl.forward(case).mutated == ("query",)
    if "gradients" in impl.features:
        impl.vjp(case, np.ones((1, 2, 3, 4)))
    for name, array in case.arrays.items():
        np.testing.assert_array_equal(array, before[name])


def test_mask_written_in_place_is_reported() -> None:
    """input.not-mutated: the mask is an argument too."""

    def flips_mask(q: Any, k: Any, v: Any, *, mask: Any = None) -> Any:
        out = context(q, k, v, mask=mask)
        if mask is not None:
            mask.logical_not_()
        return out

    case = small_case()
    assert TorchSDPA.from_callable(flips_mask).forward(case).mutated == ("mask",)
    assert case.mask is not None
    assert case.mask.tolist() == [True, True, False]


def test_nan_arguments_left_alone_are_not_mutated() -> None:
    """input.not-mutated: NaN stays NaN, which is not a modification."""
    case = small_case(nonfinite=True)
    assert TorchSDPA.from_callable(mask_scale).forward(case).mutated == ()
    assert NumpySDPA(attnref.scaled_dot_product_attention).forward(case).mutated == ()


# --- resolving module:attr targets ----------------------------------------------------------


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """An importable module ``plain_targets`` whose attributes the tests set."""
    made = types.ModuleType("plain_targets")
    monkeypatch.setitem(sys.modules, "plain_targets", made)
    return made


def test_plain_callable_target_is_inferred(module: types.ModuleType) -> None:
    """A plain callable named as ``module:attr`` is wrapped with what it offers."""
    module.fn = with_weights  # type: ignore[attr-defined]
    impl, expected = resolve("plain_targets:fn")
    assert isinstance(impl, TorchSDPA)
    assert impl.name == "plain_targets:fn"
    assert impl.features == {"bool_mask", "weights"} | ALWAYS
    assert expected == {}


def test_factory_target_builds_its_implementation(module: types.ModuleType) -> None:
    """A zero-argument factory is called; what it builds is checked as declared."""
    built = TorchSDPA(with_weights, name="declared", features=frozenset({"bool_mask"}))
    module.make = lambda: built  # type: ignore[attr-defined]
    assert resolve("plain_targets:make")[0] is built


def test_factory_raising_import_error_is_a_usage_error(module: types.ModuleType) -> None:
    """A factory whose framework is missing is a usage error, not a traceback."""

    def make() -> Any:
        raise ImportError("No module named 'flash_attn'")

    module.make = make  # type: ignore[attr-defined]
    with pytest.raises(ArgumentError, match="factory 'plain_targets:make' cannot import"):
        resolve("plain_targets:make")


@pytest.mark.parametrize("returned", [None, with_weights, 3])
def test_zero_argument_callable_returning_no_implementation(
    module: types.ModuleType, returned: object
) -> None:
    """A zero-argument callable that returns no Implementation is an error, not a kernel."""
    module.make = lambda: returned  # type: ignore[attr-defined]
    with pytest.raises(ArgumentError, match="'plain_targets:make' is a zero-argument callable"):
        resolve("plain_targets:make")
