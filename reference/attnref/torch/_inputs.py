"""PyTorch side of the argument checks: describe tensors and check them.

Every public function of :mod:`attnref.torch` passes each argument through
one of these helpers before computing, so the rules of
:mod:`attnspec.general` are enforced in one place and with the messages of
:mod:`attnref._checks`. Nothing here copies, moves or writes into an input;
only a rejected call brings a value to the host, to name it in the message.
"""

from __future__ import annotations

from typing import cast

import torch

from attnref import _checks
from attnspec.errors import NonFiniteInputError

SEQUENCE = "[..., T, d]"

_REAL = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
"""The real floating dtypes the twin computes in (``input.float-dtype``)."""


def describe(name: str, x: object, /) -> _checks.ArrayInfo:
    """The backend-neutral description of a tensor; anything else is of kind ``"other"``."""
    if not isinstance(x, torch.Tensor):
        return _checks.ArrayInfo(name, (), "other", f"{type(x).__name__} (not a torch.Tensor)")
    kind: _checks.DTypeKind
    if x.dtype in _REAL:
        kind = "real"
    elif x.dtype.is_complex:
        kind = "complex"
    elif x.dtype == torch.bool:
        kind = "bool"
    elif not x.dtype.is_floating_point:
        kind = "integer"
    else:
        kind = "other"
    # Note: "torch.float64" is named "float64", as NumPy names it, so both
    # backends raise the same message for the same bad dtype.
    return _checks.ArrayInfo(name, tuple(x.shape), kind, str(x.dtype).removeprefix("torch."))


def floating(func: str, name: str, x: object, /) -> torch.Tensor:
    """``x`` as a real floating tensor (``input.float-dtype``)."""
    # Note: the twin rejects complex tensors: it is differentiated by autograd,
    # not by complex steps (input.complex-extension is optional).
    _checks.floating(func, describe(name, x), complex_ok=False)
    return cast(torch.Tensor, x)  # describe() gives every non-tensor the kind "other"


def sequence(func: str, name: str, x: object, /, layout: str = SEQUENCE) -> torch.Tensor:
    """A ``[..., T, d]`` floating tensor with a non-empty feature axis."""
    a = floating(func, name, x)
    _checks.rank_at_least(func, describe(name, a), 2, layout)
    _checks.nonempty(func, f"{name}.shape[-1]", a.shape[-1])
    return a


def matrix(func: str, name: str, x: object, /, layout: str) -> torch.Tensor:
    """A two-dimensional floating weight matrix with no empty axis."""
    a = floating(func, name, x)
    _checks.rank_exactly(func, describe(name, a), 2, layout)
    _checks.nonempty(func, f"{name}.shape[0]", a.shape[0])
    _checks.nonempty(func, f"{name}.shape[1]", a.shape[1])
    return a


def vector(func: str, name: str, x: object, /, layout: str) -> torch.Tensor:
    """A one-dimensional floating weight vector with at least one entry."""
    a = floating(func, name, x)
    _checks.rank_exactly(func, describe(name, a), 1, layout)
    _checks.nonempty(func, f"{name}.shape[0]", a.shape[0])
    return a


def mask(
    func: str, x: object, target: tuple[int, ...], /, *, additive_ok: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...]]:
    """Split a mask into the positions it allows and its additive part.

    Returns ``(allowed, additive, shape)``: ``allowed`` is boolean, ``additive``
    is the float mask or ``None`` for a boolean mask, and ``shape`` is the
    scores' shape broadcast with the mask's.
    """
    info = describe("mask", x)
    kind = _checks.mask_kind(func, info, additive_ok=additive_ok)
    shape = _checks.mask_broadcasts(func, info, target)
    m = cast(torch.Tensor, x)  # mask_kind() rejects every non-tensor
    if kind == "bool":
        return m, None, shape
    finite(func, "mask", m, where=m != -torch.inf, what="finite or -inf")
    return m != -torch.inf, m, shape


def finite(
    func: str,
    name: str,
    x: torch.Tensor,
    /,
    *,
    where: torch.Tensor | None = None,
    what: str = "finite",
) -> None:
    """Raise :class:`NonFiniteInputError` if ``x`` is not finite where it is read."""
    bad = ~torch.isfinite(x)
    if where is not None:
        bad = bad & where
    # Note: deciding whether to raise needs one boolean on the host; the index
    # and the value are fetched only to write the message of a rejected call.
    if bool(bad.any()):
        index = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
        value = torch.broadcast_to(x, bad.shape)[index].item()
        raise NonFiniteInputError(
            f"{name} must be {what} where it is read for {func}; got {value} at index {index}"
        )


def promoted(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in their promoted dtype (``input.result-dtype``).

    NumPy's matmul and concatenate promote mixed floating inputs; PyTorch's
    refuse them, so the twin casts first (a cast that changes nothing is free).
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


def integers(name: str, x: object, /) -> tuple[_checks.ArrayInfo, tuple[int, ...]]:
    """The description of an integer argument (a Python int or a tensor) and its entries.

    A tensor's entries are read on the host: they decide which keys are allowed
    (``attnref.masking``), and there are only ``B`` of them.
    """
    if isinstance(x, bool):
        return _checks.ArrayInfo(name, (), "bool", "bool"), ()
    if isinstance(x, int):
        return _checks.ArrayInfo(name, (), "integer", "int"), (x,)
    if isinstance(x, tuple | list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in x
    ):
        # a sequence of Python ints, as NumPy would read it
        return _checks.ArrayInfo(name, (len(x),), "integer", "int64"), tuple(x)
    info = describe(name, x)
    if info.kind != "integer":
        return info, ()
    t = cast(torch.Tensor, x)
    return info, tuple(int(v) for v in t.detach().cpu().reshape(-1).tolist())
