"""Argument checks shared by the NumPy reference and the PyTorch twin.

The checks work on shapes, dtype descriptions and Python scalars only, so
both backends raise the same exception with the same message for the same
bad call. Each backend describes its arrays with :class:`ArrayInfo`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

from attnspec.errors import ArgumentError, DTypeError, ShapeError

DTypeKind = Literal["real", "complex", "bool", "integer", "other"]


@dataclass(frozen=True)
class ArrayInfo:
    """What the checks need to know about one array argument."""

    name: str
    shape: tuple[int, ...]
    kind: DTypeKind
    dtype: str


def floating(func: str, info: ArrayInfo, /, *, complex_ok: bool) -> None:
    """Reject arrays that are not floating (``input.float-dtype``)."""
    if info.kind == "real" or (info.kind == "complex" and complex_ok):
        return
    expected = "a real or complex floating dtype" if complex_ok else "a real floating dtype"
    raise DTypeError(f"{info.name} must have {expected} for {func}; got {info.dtype}")


def rank_at_least(func: str, info: ArrayInfo, /, rank: int, layout: str) -> None:
    """Reject arrays of lower rank than ``rank`` (``input.rank``)."""
    if len(info.shape) < rank:
        raise ShapeError(
            f"{info.name} must have at least {rank} dimensions {layout} for {func}; "
            f"got shape {info.shape}"
        )


def rank_exactly(func: str, info: ArrayInfo, /, rank: int, layout: str) -> None:
    """Reject weight matrices and vectors of the wrong rank (``input.rank``)."""
    if len(info.shape) != rank:
        raise ShapeError(
            f"{info.name} must have exactly {rank} dimension{'s' if rank > 1 else ''} "
            f"{layout} for {func}; got shape {info.shape}"
        )


def nonempty(func: str, name: str, size: int, /) -> None:
    """Reject an empty key or feature axis (``input.nonempty``)."""
    if size < 1:
        raise ShapeError(f"{name} must be at least 1 for {func}; got 0")


def same_size(func: str, name: str, size: int, other: str, other_size: int, /) -> None:
    """Reject two sizes that the spec names alike but differ (``input.sizes-agree``)."""
    if size != other_size:
        raise ShapeError(f"{name} must equal {other} for {func}; got {size} and {other_size}")


def broadcast_shapes(func: str, /, *shapes: tuple[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Broadcast named batch shapes with NumPy's rules (``input.batch-broadcast``)."""
    result: list[int] = []
    for name, shape in shapes:
        for offset, size in enumerate(reversed(shape)):
            if offset == len(result):
                result.insert(0, size)
                continue
            here = result[-1 - offset]
            if here == 1:
                result[-1 - offset] = size
            elif size not in (1, here):
                named = ", ".join(f"{n} {s}" for n, s in shapes)
                raise ShapeError(
                    f"batch dimensions must broadcast for {func}; got {named} "
                    f"(first clash in {name})"
                )
    return tuple(result)


def _real_or_none(func: str, name: str, x: object, /) -> float | None:
    """``x`` as a float (``int`` and ``float`` but not ``bool``), or ``None``."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise DTypeError(f"{name} must be a real number or None for {func}; got {type(x).__name__}")
    return float(x)


def scale_value(func: str, scale: object, /) -> float | None:
    """A finite real scale, or ``None`` (``input.scale-finite``)."""
    value = _real_or_none(func, "scale", scale)
    if value is None:
        return None
    if not math.isfinite(value):
        raise ArgumentError(f"scale must be finite for {func}; got {value}")
    return value


def representable(func: str, name: str, value: float, dtype: str, finite: bool, /) -> None:
    """Reject a scale or softcap that overflows the result dtype (``input.scale-finite``,
    ``sdpa.arguments``).

    ``finite`` says whether the number, converted to ``dtype``, is still finite.
    """
    if not finite:
        raise ArgumentError(
            f"{name} must be finite in the result dtype {dtype} for {func}; got {value}"
        )


def query_groups(func: str, query: ArrayInfo, key: ArrayInfo, value: ArrayInfo, /) -> int:
    """How many query heads share each key/value head (``sdpa.gqa-heads-divisible``).

    The heads axis is ``-3``; the key and value head counts must agree and
    divide the query's.
    """
    layout = "[..., H, T, d] with enable_gqa=True"
    for info in (query, key, value):
        rank_at_least(func, info, 3, layout)
    h_q, h_k, h_v = query.shape[-3], key.shape[-3], value.shape[-3]
    same_size(func, "value.shape[-3]", h_v, "key.shape[-3]", h_k)
    if h_k == 0 or h_q % h_k != 0:
        raise ShapeError(
            f"query.shape[-3] must be a multiple of key.shape[-3] for {func} with "
            f"enable_gqa=True; got {h_q} and {h_k}"
        )
    return h_q // h_k


def sink_heads(func: str, query: ArrayInfo, sinks: ArrayInfo, /) -> None:
    """Check that ``sinks`` holds one logit per query head (``sdpa.sinks``).

    The heads axis is ``-3`` of the query, as with grouped query heads.
    """
    rank_at_least(func, query, 3, "[..., H, Tq, d] with sinks")
    floating(func, sinks, complex_ok=True)
    rank_exactly(func, sinks, 1, "[H]")
    same_size(func, "sinks.shape[0]", sinks.shape[0], "query.shape[-3]", query.shape[-3])


def default_scale(d: int, /) -> float:
    r"""The default scale :math:`1/\sqrt{d}` in float64 (``score.default-scale``)."""
    return 1.0 / math.sqrt(d)


def integer(func: str, name: str, value: object, /, *, minimum: int) -> int:
    """An ``int`` at least ``minimum`` (``local.half-width``, ``source_length``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DTypeError(f"{name} must be an int for {func}; got {type(value).__name__}")
    if int(value) < minimum:
        raise ArgumentError(f"{name} must be at least {minimum} for {func}; got {value}")
    return int(value)


def flag(func: str, name: str, value: object, /) -> bool:
    """A ``bool`` option; a truthy array or string is a caller's bug, not a flag."""
    if not isinstance(value, bool):
        raise DTypeError(f"{name} must be a bool for {func}; got {type(value).__name__}")
    return value


def choice(func: str, name: str, value: object, options: tuple[str, ...], /) -> str:
    """One of the named options (``sdpa.causal-alignment-known``, score kinds)."""
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ArgumentError(f"{name} must be one of {listed} for {func}; got {value!r}")
    return value


SCORE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "dot": (),
    "scaled_dot": ("scale",),
    "general": ("W_a",),
    "concat": ("W_a", "v_a"),
    "additive": ("W_q", "W_k", "v_a"),
    "location": ("W_a",),
}
"""The parameters each score kind of ``attention`` takes (``attention.score-parameters``)."""


def score_parameters(
    func: str, kind: object, given: dict[str, object], /
) -> tuple[str, tuple[str, ...]]:
    """Check ``attention``'s score kind and parameters (``attention.score-parameters``).

    Returns the kind and its weight parameters in the order of its score
    function's signature (the optional scale excluded).
    """
    checked = choice(func, "score", kind, tuple(SCORE_PARAMETERS))
    takes = SCORE_PARAMETERS[checked]
    for name, value in given.items():
        if value is not None and name not in takes:
            listed = ", ".join(takes) or "no parameters"
            raise ArgumentError(
                f"{name} does not belong to score={checked!r} for {func}; it takes {listed}"
            )
        if value is None and name in takes and name != "scale":
            raise ArgumentError(f"score={checked!r} needs {name} for {func}; got None")
    return checked, tuple(name for name in takes if name != "scale")


MaskKind = Literal["bool", "additive"]


def mask_kind(func: str, info: ArrayInfo, /, *, additive_ok: bool = True) -> MaskKind:
    """Whether a mask is boolean or additive (``distribution.mask-shape``)."""
    if info.kind == "bool":
        return "bool"
    if info.kind == "real" and additive_ok:
        return "additive"
    expected = (
        "boolean (True = may attend) or real floating (additive)" if additive_ok else "boolean"
    )
    raise DTypeError(f"{info.name} must be {expected} for {func}; got {info.dtype}")


def mask_broadcasts(func: str, info: ArrayInfo, target: tuple[int, ...], /) -> tuple[int, ...]:
    """The shape of the mask broadcast with ``target`` (``distribution.mask-shape``).

    A mask may add leading batch dimensions; the result then has them too.
    """
    try:
        shape: tuple[int, ...] | None = broadcast_shapes(
            func, ("scores", target), (info.name, info.shape)
        )
    except ShapeError:
        shape = None
    # Note: a mask may add batch dimensions but never stretch the query or key axis.
    if shape is None or shape[-2:] != target[-2:]:
        raise ShapeError(
            f"{info.name} must broadcast to the scores' shape {target} for {func}; "
            f"got shape {info.shape}"
        )
    return shape


def softcap_value(func: str, softcap: object, /) -> float | None:
    """A finite real softcap greater than 0, or ``None`` (``sdpa.softcap``)."""
    value = _real_or_none(func, "softcap", softcap)
    if value is None:
        return None
    if not (math.isfinite(value) and value > 0):
        raise ArgumentError(
            f"softcap must be finite and greater than 0 for {func} (None: no softcap); got {value}"
        )
    return value


def window_value(func: str, window: object, /) -> tuple[int | None, int | None] | None:
    """``None`` or ``(left, right)`` of ints at least 0 or ``None`` (``sdpa.window``)."""
    if window is None:
        return None
    if not isinstance(window, tuple | list) or len(window) != 2:
        raise ArgumentError(
            f"window must be a pair (left, right) of ints >= 0 or None for {func}; got {window!r}"
        )
    sides: list[int | None] = []
    for name, side in zip(("left", "right"), window, strict=True):
        sides.append(None if side is None else integer(func, f"window {name}", side, minimum=0))
    return sides[0], sides[1]


def per_batch_integers(
    func: str,
    info: ArrayInfo,
    values: tuple[int, ...],
    batch: tuple[int, ...],
    /,
    *,
    scalar_ok: bool,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | tuple[int, ...]:
    """An int (when ``scalar_ok``) or one int per item of the first batch axis.

    ``info`` describes the argument and ``values`` are its entries in order;
    ``batch`` is the broadcast batch shape of the call (``sdpa.query-offset``,
    ``sdpa.key-lengths``).
    """
    expected = "an int or an integer array [B]" if scalar_ok else "an integer array [B]"
    if info.kind != "integer":
        raise DTypeError(f"{info.name} must be {expected} for {func}; got {info.dtype}")
    if info.shape == () and scalar_ok:
        result: int | tuple[int, ...] = values[0]
    elif len(info.shape) == 1 and len(batch) >= 1 and info.shape[0] == batch[0]:
        result = values
    else:
        wanted = f"[{batch[0]}] (the first batch axis)" if batch else "a scalar"
        raise ShapeError(f"{info.name} must have shape {wanted} for {func}; got shape {info.shape}")
    for value in values:
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"[{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
            raise ArgumentError(f"{info.name} must lie in {bounds} for {func}; got {value}")
    return result


@dataclass(frozen=True)
class Restrictions:
    """The checked structural options of SDPA beyond the causal flag (see ``attnref.masking``)."""

    window: tuple[int | None, int | None] | None = None
    query_offset: int | tuple[int, ...] | None = None
    key_lengths: tuple[int, ...] | None = None


def restrictions(
    func: str,
    batch: tuple[int, ...],
    t_k: int,
    alignment: str,
    /,
    *,
    window: object,
    query_offset: tuple[ArrayInfo, tuple[int, ...]] | None,
    key_lengths: tuple[ArrayInfo, tuple[int, ...]] | None,
) -> Restrictions:
    """Check ``window``, ``query_offset`` and ``key_lengths`` of one call (``sdpa.arguments``).

    ``query_offset`` and ``key_lengths`` come described by the backend as
    ``(info, entries)``; ``batch`` is the call's broadcast batch shape.
    """
    offset = None
    if query_offset is not None:
        if alignment == "bottom_right":
            raise ArgumentError(
                f"query_offset and causal_alignment='bottom_right' both say where query row 0 "
                f"sits on the key axis for {func}; give one of them"
            )
        offset = per_batch_integers(func, *query_offset, batch, scalar_ok=True)
    lengths = None
    if key_lengths is not None:
        checked = per_batch_integers(
            func, *key_lengths, batch, scalar_ok=False, minimum=0, maximum=t_k
        )
        lengths = checked if isinstance(checked, tuple) else (checked,)
    return Restrictions(window_value(func, window), offset, lengths)
