"""NumPy side of the argument checks: turn arguments into arrays and check them.

Every public function of :mod:`attnref` passes each argument through one of
these helpers before computing, so the rules of :mod:`attnspec.general` are
enforced in one place. Nothing here copies or writes into an input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from attnref import _checks
from attnspec.errors import NonFiniteInputError
from attnspec.typing import Array, BoolArray

SEQUENCE = "[..., T, d]"


def describe(name: str, x: npt.NDArray[Any], /) -> _checks.ArrayInfo:
    """The backend-neutral description of a NumPy array."""
    kinds: dict[str, _checks.DTypeKind] = {
        "f": "real",
        "c": "complex",
        "b": "bool",
        "i": "integer",
        "u": "integer",
    }
    return _checks.ArrayInfo(name, tuple(x.shape), kinds.get(x.dtype.kind, "other"), str(x.dtype))


def floating(func: str, name: str, x: object, /) -> Array:
    """``x`` as a floating array (real or complex, ``input.complex-extension``)."""
    a = np.asarray(x)
    _checks.floating(func, describe(name, a), complex_ok=True)
    return a


def sequence(func: str, name: str, x: object, /, layout: str = SEQUENCE) -> Array:
    """A ``[..., T, d]`` floating array with a non-empty feature axis."""
    a = floating(func, name, x)
    _checks.rank_at_least(func, describe(name, a), 2, layout)
    _checks.nonempty(func, f"{name}.shape[-1]", a.shape[-1])
    return a


def matrix(func: str, name: str, x: object, /, layout: str) -> Array:
    """A two-dimensional floating weight matrix with no empty axis."""
    a = floating(func, name, x)
    _checks.rank_exactly(func, describe(name, a), 2, layout)
    _checks.nonempty(func, f"{name}.shape[0]", a.shape[0])
    _checks.nonempty(func, f"{name}.shape[1]", a.shape[1])
    return a


def vector(func: str, name: str, x: object, /, layout: str) -> Array:
    """A one-dimensional floating weight vector with at least one entry."""
    a = floating(func, name, x)
    _checks.rank_exactly(func, describe(name, a), 1, layout)
    _checks.nonempty(func, f"{name}.shape[0]", a.shape[0])
    return a


def mask(
    func: str, x: object, target: tuple[int, ...], /, *, additive_ok: bool = True
) -> tuple[BoolArray, Array | None, tuple[int, ...]]:
    """Split a mask into the positions it allows and its additive part.

    Returns ``(allowed, additive, shape)``: ``allowed`` is boolean, ``additive``
    is the float mask or ``None`` for a boolean mask, and ``shape`` is the
    scores' shape broadcast with the mask's.
    """
    m = np.asarray(x)
    info = describe("mask", m)
    kind = _checks.mask_kind(func, info, additive_ok=additive_ok)
    shape = _checks.mask_broadcasts(func, info, target)
    if kind == "bool":
        return m, None, shape
    finite(func, "mask", m, where=m != -np.inf, what="finite or -inf")
    return m != -np.inf, m, shape


def finite(
    func: str,
    name: str,
    x: npt.NDArray[Any],
    /,
    *,
    where: npt.NDArray[np.bool_] | None = None,
    what: str = "finite",
) -> None:
    """Raise :class:`NonFiniteInputError` if ``x`` is not finite where it is read."""
    bad = ~np.isfinite(x)
    if where is not None:
        bad = bad & where
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        value = np.broadcast_to(x, bad.shape)[index]
        raise NonFiniteInputError(
            f"{name} must be {what} where it is read for {func}; got {value} at index {index}"
        )


def result_dtype(*arrays: Array) -> np.dtype[Any]:
    """The promoted dtype of the floating arguments (``input.result-dtype``)."""
    return np.result_type(*arrays)


def integers(name: str, x: object, /) -> tuple[_checks.ArrayInfo, tuple[int, ...]]:
    """The description of an integer argument (a Python int or an array) and its entries."""
    if isinstance(x, bool):
        return _checks.ArrayInfo(name, (), "bool", "bool"), ()
    a = np.asarray(x)
    values = tuple(int(v) for v in a.ravel()) if a.dtype.kind in "iu" else ()
    return describe(name, a), values
