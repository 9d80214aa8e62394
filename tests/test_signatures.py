"""Every implementation function has exactly its spec stub's signature."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import attnref
import attnspec

torch_twin: ModuleType | None
try:
    import attnref.torch as torch_twin
except ImportError:  # the torch extra is optional for users; the nox tests install it
    torch_twin = None


def _shape(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults of the parameters (annotations differ between backends)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
def test_reference_signature_equals_spec(name: str) -> None:
    """attnref.<name> has the stub's parameters, kinds, defaults and annotations."""
    spec = inspect.signature(getattr(attnspec, name))
    ref = inspect.signature(getattr(attnref, name))
    assert ref == spec


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
def test_torch_twin_signature_equals_spec(name: str) -> None:
    """attnref.torch.<name> has the stub's parameters, kinds and defaults."""
    if torch_twin is None:
        pytest.skip("torch is not installed")
    assert _shape(getattr(torch_twin, name)) == _shape(getattr(attnspec, name))


def test_reference_exports_exactly_the_spec_functions() -> None:
    """attnref's public functions are the spec's, no more and no fewer."""
    assert sorted(attnref.__all__) == sorted(attnspec.FUNCTIONS)


def test_torch_twin_exports_exactly_the_spec_functions() -> None:
    """attnref.torch's public functions are the spec's, no more and no fewer."""
    if torch_twin is None:
        pytest.skip("torch is not installed")
    assert sorted(torch_twin.__all__) == sorted(attnspec.FUNCTIONS)
