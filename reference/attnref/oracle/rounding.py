"""Rounding float64 data to an implementation's dtype, and back, exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from attnspec.errors import ArgumentError

__all__ = ["DTYPES", "round_to"]

DTYPES = ("float64", "float32", "float16", "bfloat16")
"""The dtypes the oracle can check an implementation in."""


def _round_bfloat16(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Round to the nearest bfloat16 (ties to even), returned as float64.

    bfloat16 is float32 with the low 16 bits of the significand dropped, so
    rounding float32 bits to a multiple of 2**16 (ties to even) is exact.
    Overflow gives inf and NaN stays NaN, as a cast would.
    """
    f32 = x.astype(np.float32)
    bits = f32.view(np.uint32).astype(np.uint64)
    lsb = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lsb) >> 16) << 16
    out = rounded.astype(np.uint32).view(np.float32).astype(np.float64)
    return np.where(np.isnan(f32), np.nan, out)


def round_to(dtype: str, x: npt.ArrayLike, /) -> npt.NDArray[Any]:
    """``x`` rounded to ``dtype`` and returned as float64 (booleans are returned unchanged).

    >>> round_to("float16", [0.1]).tolist()
    [0.0999755859375]
    """
    a = np.asarray(x)
    if a.dtype == np.bool_:
        return a
    f64 = a.astype(np.float64)
    if dtype == "bfloat16":
        return _round_bfloat16(f64)
    if dtype not in DTYPES:
        raise ArgumentError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    with np.errstate(over="ignore"):
        return f64.astype(dtype).astype(np.float64)
