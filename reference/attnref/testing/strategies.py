"""Hypothesis strategies for valid, and deliberately adversarial, attention inputs.

Everything is built on :mod:`hypothesis.extra.numpy` (``arrays``, ``array_shapes``,
``mutually_broadcastable_shapes``, ``from_dtype``), so shrinking and the example
database work as for any NumPy strategy. Every strategy produces arrays of one
requested real floating dtype (float16, float32 or float64); masks are boolean or
additive in that dtype.

Shapes
    :func:`batch_shapes`, :func:`attention_shapes` (batch dimensions of query,
    keys, values and mask that broadcast together; ``Tq != Tk``, ``Tk = 1`` and
    feature sizes of 1 included).
Values
    :func:`well_conditioned_arrays`; :func:`score_arrays` with the regimes of
    :data:`REGIMES` (large logits up to the dtype's range, exact ties, near-ties);
    :func:`poison_values` and :func:`poisoned` for positions that must not be read.
Masks
    :func:`boolean_masks` and :func:`additive_masks` with the patterns of
    :data:`MASK_PATTERNS` (random, key padding, causal in both alignments), with
    or without fully masked rows; :func:`masks` chooses among none, boolean and
    additive.
Calls
    :func:`scales`, :func:`score_parameters` (the parameters of each score kind of
    :func:`attnref.attention`), :func:`attention_inputs`, :func:`attention_calls`
    and :func:`sdpa_calls`.

Bad arguments raise :class:`hypothesis.errors.InvalidArgument` when the strategy is
built, with a message that names the argument, the value and the remedy, e.g.
``min_queries=3 is larger than max_queries=2``.

>>> from attnref.testing import strategies as ats
>>> ats.attention_shapes(min_keys=3, max_keys=2)
Traceback (most recent call last):
    ...
hypothesis.errors.InvalidArgument: min_keys=3 is larger than max_keys=2
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias, TypeVar, get_args

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from attnref import masking
from attnspec.typing import Array, BoolArray, CausalAlignment, Mask, Scale, ScoreKind

__all__ = [
    "FLOAT_DTYPES",
    "MASK_KINDS",
    "MASK_PATTERNS",
    "REGIMES",
    "SCORE_KINDS",
    "AttentionCall",
    "AttentionInputs",
    "AttentionShapes",
    "MaskKind",
    "MaskPattern",
    "Regime",
    "SDPACall",
    "additive_masks",
    "attention_calls",
    "attention_inputs",
    "attention_shapes",
    "batch_shapes",
    "boolean_masks",
    "causal_mask",
    "float_dtypes",
    "masks",
    "poison_values",
    "poisoned",
    "safe_magnitude",
    "scales",
    "score_arrays",
    "score_parameters",
    "sdpa_calls",
    "unread_by_mask",
    "well_conditioned_arrays",
]

FloatDType: TypeAlias = np.dtype[np.floating[Any]]

MaskPattern: TypeAlias = Literal["random", "key_padding", "causal_top_left", "causal_bottom_right"]
"""Which positions a mask allows: independent random bits; a key-padding prefix per
batch element (``j < length``); or a causal mask in one of the two alignments
(``sdpa.causal-top-left``, ``sdpa.causal-bottom-right``)."""

MaskKind: TypeAlias = Literal["none", "boolean", "additive"]
"""No mask, a boolean mask (``True`` = may attend) or an additive float mask."""

Regime: TypeAlias = Literal["well_conditioned", "large", "ties", "near_ties"]
"""How score-like values are drawn: small magnitudes; anywhere in the dtype's finite
range; a few distinct values repeated (exact ties); or within a few ulps of one value."""

FLOAT_DTYPES: tuple[FloatDType, ...] = (
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
)
"""The real floating dtypes every implementation accepts (``input.float-dtype``)."""

SCORE_KINDS: tuple[ScoreKind, ...] = get_args(ScoreKind)
"""The score kinds of :func:`attnref.attention`, in the spec's order."""

MASK_PATTERNS: tuple[MaskPattern, ...] = get_args(MaskPattern)
MASK_KINDS: tuple[MaskKind, ...] = get_args(MaskKind)
REGIMES: tuple[Regime, ...] = get_args(Regime)

_T = TypeVar("_T")


# --- argument validation ------------------------------------------------------------


def _is_int(value: object, /) -> bool:
    """Whether ``value`` is a Python or NumPy integer (``bool`` is not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _int(name: str, value: object, /, *, minimum: int) -> int:
    """``value`` as an ``int`` at least ``minimum``; anything else is an InvalidArgument."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an int")
    if int(value) < minimum:
        raise InvalidArgument(f"{name}={value!r} must be at least {minimum}")
    return int(value)


def _order(low_name: str, low: int, high_name: str, high: int, /) -> None:
    """Refuse an empty range, naming both bounds."""
    if low > high:
        raise InvalidArgument(f"{low_name}={low} is larger than {high_name}={high}")


def _dtype(dtype: npt.DTypeLike, /, name: str = "dtype") -> FloatDType:
    """A supported real floating dtype; ``None`` is refused (NumPy would read it as float64)."""
    remedy = "use float16, float32 or float64"
    if dtype is None:
        raise InvalidArgument(f"{name}=None is not a dtype; {remedy}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InvalidArgument(f"{name}={dtype!r} is not a dtype; {remedy}") from None
    if dt not in FLOAT_DTYPES:
        raise InvalidArgument(f"{name}={dtype!r} is not a real floating dtype; {remedy}")
    return FLOAT_DTYPES[FLOAT_DTYPES.index(dt)]


def _shape(name: str, shape: object, /, *, min_dims: int) -> tuple[int, ...]:
    """A concrete shape with at least ``min_dims`` axes of non-negative sizes."""
    if _is_int(shape):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(_is_int(s) and s >= 0 for s in shape):
        raise InvalidArgument(f"{name}={shape!r} must be a tuple of non-negative ints")
    if len(shape) < min_dims:
        raise InvalidArgument(f"{name}={shape!r} must have at least {min_dims} dimensions")
    return tuple(int(s) for s in shape)


def _subset(name: str, values: Sequence[_T], options: tuple[_T, ...], /) -> tuple[_T, ...]:
    """A non-empty selection from ``options``, in the caller's order, without repeats."""
    if isinstance(values, str):
        raise InvalidArgument(f"{name}={values!r} must be a sequence of names, not one string")
    chosen = tuple(dict.fromkeys(values))
    unknown = [v for v in chosen if v not in options]
    if unknown:
        raise InvalidArgument(f"{name} has unknown entries {unknown!r}; choose from {options!r}")
    if not chosen:
        raise InvalidArgument(f"{name} is empty; choose at least one of {options!r}")
    return chosen


def _magnitude(name: str, value: object, dt: FloatDType, /) -> float:
    """A finite positive bound that the dtype can represent."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{name}={value!r} must be a real number")
    bound = float(value)
    if not (math.isfinite(bound) and bound > 0):
        raise InvalidArgument(f"{name}={value!r} must be finite and positive")
    largest = float(np.finfo(dt).max)
    if bound > largest:
        raise InvalidArgument(
            f"{name}={value!r} is larger than the largest {dt.name} ({largest}); "
            f"pass at most {largest}"
        )
    return bound


# --- dtypes and magnitudes ------------------------------------------------------------


def float_dtypes(*, sizes: Sequence[int] = (16, 32, 64)) -> st.SearchStrategy[FloatDType]:
    """Strategy for the real floating dtypes of the given bit sizes (shrinks to float16)."""
    chosen = _subset("sizes", sizes, (16, 32, 64))
    return st.sampled_from([np.dtype(f"float{bits}") for bits in chosen])


def _dtypes(dtype: npt.DTypeLike | None, /) -> st.SearchStrategy[FloatDType]:
    """One fixed dtype, or any of :data:`FLOAT_DTYPES` when ``dtype`` is ``None``."""
    return float_dtypes() if dtype is None else st.just(_dtype(dtype))


def safe_magnitude(dtype: npt.DTypeLike, /, *, terms: int) -> float:
    r"""The largest entry magnitude :math:`M` for which a sum of ``terms`` products stays finite.

    :math:`M = \sqrt{\text{finfo.max} / (2\,\text{terms})}`: the exact sum of ``terms``
    products of two entries bounded by :math:`M` is at most half the largest finite
    value, which leaves room for the rounding of the sum (at most a relative
    ``terms * eps``) and for adding a bounded mask.

    >>> round(safe_magnitude("float16", terms=2), 1)
    128.0
    """
    dt = _dtype(dtype)
    n = _int("terms", terms, minimum=1)
    return math.sqrt(float(np.finfo(dt).max) / (2 * n))


# --- shapes ---------------------------------------------------------------------------


def batch_shapes(
    *, min_dims: int = 0, max_dims: int = 2, min_side: int = 1, max_side: int = 3
) -> st.SearchStrategy[tuple[int, ...]]:
    """Strategy for batch shapes ``...`` (``min_dims`` may be 0: no batch axis)."""
    lo_d = _int("min_dims", min_dims, minimum=0)
    hi_d = _int("max_dims", max_dims, minimum=0)
    lo_s = _int("min_side", min_side, minimum=0)
    hi_s = _int("max_side", max_side, minimum=0)
    _order("min_dims", lo_d, "max_dims", hi_d)
    _order("min_side", lo_s, "max_side", hi_s)
    return hnp.array_shapes(min_dims=lo_d, max_dims=hi_d, min_side=lo_s, max_side=hi_s)


@dataclass(frozen=True)
class AttentionShapes:
    """Shapes of one attention call; the four batch shapes broadcast together.

    Attributes
    ----------
    query_batch, keys_batch, values_batch, mask_batch
        Batch dimensions ``...`` of each argument (``mask_batch`` may have more
        dimensions than the others: a mask may add leading batch dimensions).
    batch
        The four batch shapes broadcast together: the batch of the result.
    tq, tk, d_q, d_k, d_v
        Queries, keys, and the query, key and value feature sizes.
    """

    query_batch: tuple[int, ...]
    keys_batch: tuple[int, ...]
    values_batch: tuple[int, ...]
    mask_batch: tuple[int, ...]
    batch: tuple[int, ...]
    tq: int
    tk: int
    d_q: int
    d_k: int
    d_v: int

    @property
    def query(self) -> tuple[int, ...]:
        """``[..., Tq, d_q]``."""
        return (*self.query_batch, self.tq, self.d_q)

    @property
    def keys(self) -> tuple[int, ...]:
        """``[..., Tk, d_k]``."""
        return (*self.keys_batch, self.tk, self.d_k)

    @property
    def values(self) -> tuple[int, ...]:
        """``[..., Tk, d_v]``."""
        return (*self.values_batch, self.tk, self.d_v)

    @property
    def mask(self) -> tuple[int, ...]:
        """``[..., Tq, Tk]`` with the mask's own batch dimensions."""
        return (*self.mask_batch, self.tq, self.tk)

    @property
    def scores(self) -> tuple[int, ...]:
        """``[..., Tq, Tk]`` with the broadcast batch: the shape of the weights."""
        return (*self.batch, self.tq, self.tk)


def attention_shapes(
    *,
    min_batch_dims: int = 0,
    max_batch_dims: int = 2,
    min_batch_side: int = 1,
    max_batch_side: int = 3,
    min_queries: int = 1,
    max_queries: int = 4,
    min_keys: int = 1,
    max_keys: int = 4,
    min_features: int = 1,
    max_features: int = 4,
    same_features: bool = True,
) -> st.SearchStrategy[AttentionShapes]:
    """Strategy for :class:`AttentionShapes`.

    Batch shapes come from ``mutually_broadcastable_shapes`` (so size-1 and missing
    axes broadcast); ``Tq``, ``Tk`` and the feature sizes are drawn independently
    (``Tq != Tk``, ``Tk = 1`` and ``d = 1`` all occur). ``min_queries`` may be 0
    (``input.nonempty`` allows an empty query axis); ``min_keys`` and
    ``min_features`` must be at least 1. With ``same_features`` ``d_k == d_q``, as
    the dot-product scores need.
    """
    lo_b = _int("min_batch_dims", min_batch_dims, minimum=0)
    hi_b = _int("max_batch_dims", max_batch_dims, minimum=0)
    lo_bs = _int("min_batch_side", min_batch_side, minimum=0)
    hi_bs = _int("max_batch_side", max_batch_side, minimum=0)
    lo_q = _int("min_queries", min_queries, minimum=0)
    hi_q = _int("max_queries", max_queries, minimum=0)
    lo_k = _int("min_keys", min_keys, minimum=1)
    hi_k = _int("max_keys", max_keys, minimum=1)
    lo_f = _int("min_features", min_features, minimum=1)
    hi_f = _int("max_features", max_features, minimum=1)
    _order("min_batch_dims", lo_b, "max_batch_dims", hi_b)
    _order("min_batch_side", lo_bs, "max_batch_side", hi_bs)
    _order("min_queries", lo_q, "max_queries", hi_q)
    _order("min_keys", lo_k, "max_keys", hi_k)
    _order("min_features", lo_f, "max_features", hi_f)
    if not isinstance(same_features, bool):
        raise InvalidArgument(f"same_features={same_features!r} must be a bool")
    batches = hnp.mutually_broadcastable_shapes(
        num_shapes=4, min_dims=lo_b, max_dims=hi_b, min_side=lo_bs, max_side=hi_bs
    )
    features = st.integers(lo_f, hi_f)

    @st.composite
    def draw_shapes(draw: st.DrawFn) -> AttentionShapes:
        shapes = draw(batches)
        q_batch, k_batch, v_batch, m_batch = shapes.input_shapes
        d_q = draw(features)
        return AttentionShapes(
            query_batch=q_batch,
            keys_batch=k_batch,
            values_batch=v_batch,
            mask_batch=m_batch,
            batch=shapes.result_shape,
            tq=draw(st.integers(lo_q, hi_q)),
            tk=draw(st.integers(lo_k, hi_k)),
            d_q=d_q,
            d_k=d_q if same_features else draw(features),
            d_v=draw(features),
        )

    return draw_shapes()


# --- values ---------------------------------------------------------------------------


def _representable(bound: float, dt: FloatDType, /) -> float:
    """The largest value of ``dt`` not above ``bound`` (``from_dtype`` needs exact bounds)."""
    rounded = dt.type(bound)
    if float(rounded) > bound:
        rounded = np.nextafter(rounded, dt.type(0))
    return float(rounded)


def _finite_elements(dt: FloatDType, /, bound: float | None = None) -> st.SearchStrategy[float]:
    """Finite elements of ``dt``, within ``[-bound, bound]`` if given."""
    if bound is None:
        return hnp.from_dtype(dt, allow_nan=False, allow_infinity=False)
    edge = _representable(bound, dt)
    return hnp.from_dtype(
        dt, min_value=-edge, max_value=edge, allow_nan=False, allow_infinity=False
    )


def _extreme_elements(dt: FloatDType, /, bound: float | None = None) -> st.SearchStrategy[float]:
    """Finite elements of ``dt`` up to ``bound`` (default: the largest finite value), with the
    extremes ``±bound`` and ``±bound/2`` drawn first."""
    edge = float(np.finfo(dt).max) if bound is None else _representable(bound, dt)
    extremes = [edge, -edge, _representable(edge / 2, dt), -_representable(edge / 2, dt)]
    return st.one_of(st.sampled_from(extremes), _finite_elements(dt, edge))


def well_conditioned_arrays(
    dtype: npt.DTypeLike, shape: int | tuple[int, ...], /, *, max_magnitude: float = 2.0
) -> st.SearchStrategy[Array]:
    """Strategy for arrays of ``dtype`` with entries in ``[-max_magnitude, max_magnitude]``.

    Subnormals are left out, so that flush-to-zero hardware computes the same thing.
    """
    dt = _dtype(dtype)
    dims = _shape("shape", shape, min_dims=0)
    bound = _representable(_magnitude("max_magnitude", max_magnitude, dt), dt)
    elements = hnp.from_dtype(
        dt,
        min_value=-bound,
        max_value=bound,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    )
    return hnp.arrays(dt, dims, elements=elements)


def _tied_arrays(
    dt: FloatDType, shape: tuple[int, ...], /, bound: float | None = None
) -> st.SearchStrategy[Array]:
    """Arrays whose entries repeat one to three finite values: exact ties everywhere."""

    @st.composite
    def draw_tied(draw: st.DrawFn) -> Array:
        pool = draw(st.lists(_finite_elements(dt, bound), min_size=1, max_size=3))
        return draw(hnp.arrays(dt, shape, elements=st.sampled_from(pool)))

    return draw_tied()


def _near_tied_arrays(
    dt: FloatDType, shape: tuple[int, ...], /, bound: float | None = None
) -> st.SearchStrategy[Array]:
    """Arrays within three ulps of one finite value (ties included), at most ``bound`` apart from
    those ulps (default: half the largest finite value, so that the ulps cannot overflow)."""
    centre_bound = float(np.finfo(dt).max) / 2 if bound is None else bound

    @st.composite
    def draw_near(draw: st.DrawFn) -> Array:
        centre = np.asarray(draw(_finite_elements(dt, centre_bound)), dtype=dt)
        ulps = draw(hnp.arrays(np.int8, shape, elements=st.integers(-3, 3)))
        step = np.spacing(np.abs(centre))  # [] one ulp at the centre
        return np.asarray(centre + ulps.astype(dt) * step, dtype=dt)

    return draw_near()


def score_arrays(
    dtype: npt.DTypeLike,
    shape: int | tuple[int, ...],
    /,
    *,
    regimes: Sequence[Regime] = REGIMES,
    max_magnitude: float = 8.0,
    neg_inf: bool = False,
) -> st.SearchStrategy[Array]:
    """Strategy for score-like arrays in one of ``regimes`` (see :data:`Regime`).

    ``"large"`` draws anywhere in the dtype's finite range, the largest finite
    values included (``distribution.stable``); the other regimes stay within
    ``max_magnitude`` (pass ``numpy.finfo(dtype).max`` for ties among huge values).
    With ``neg_inf`` some entries become :math:`-\\infty`, which marks a score as
    disallowed (``input.finite``).
    """
    dt = _dtype(dtype)
    dims = _shape("shape", shape, min_dims=0)
    chosen = _subset("regimes", regimes, REGIMES)
    bound = _magnitude("max_magnitude", max_magnitude, dt)
    if not isinstance(neg_inf, bool):
        raise InvalidArgument(f"neg_inf={neg_inf!r} must be a bool")
    by_regime: dict[Regime, st.SearchStrategy[Array]] = {
        "well_conditioned": well_conditioned_arrays(dt, dims, max_magnitude=bound),
        "large": hnp.arrays(dt, dims, elements=_extreme_elements(dt)),
        "ties": _tied_arrays(dt, dims, bound),
        "near_ties": _near_tied_arrays(dt, dims, min(bound, float(np.finfo(dt).max) / 2)),
    }
    base = st.one_of(*(by_regime[r] for r in chosen))
    if not neg_inf:
        return base

    @st.composite
    def draw_with_neg_inf(draw: st.DrawFn) -> Array:
        x = draw(base)
        where = draw(hnp.arrays(np.bool_, dims))
        return np.where(where, -np.inf, x).astype(dt)

    return draw_with_neg_inf()


def poison_values(
    dtype: npt.DTypeLike, /, *, allow_nonfinite: bool = True
) -> st.SearchStrategy[float]:
    """Strategy for values that must never reach a result: NaN, infinities, huge values.

    Any value of the dtype may be drawn, but NaN, :math:`\\pm\\infty` and
    :math:`\\pm` ``finfo.max`` come first (the ONNX tests use 1000 at masked values).
    Without ``allow_nonfinite`` only finite values are drawn, the largest first
    (``input.unread-positions``; NaN and infinities are ``input.unread-nonfinite``).
    """
    dt = _dtype(dtype)
    if not isinstance(allow_nonfinite, bool):
        raise InvalidArgument(f"allow_nonfinite={allow_nonfinite!r} must be a bool")
    largest = float(np.finfo(dt).max)
    huge = [largest, -largest, 1000.0]
    if not allow_nonfinite:
        return st.one_of(st.sampled_from(huge), _finite_elements(dt))
    nasty = st.sampled_from([math.nan, math.inf, -math.inf, *huge])
    return st.one_of(nasty, hnp.from_dtype(dt))


def poisoned(
    array: Array, where: BoolArray, /, *, allow_nonfinite: bool = True
) -> st.SearchStrategy[Array]:
    """Strategy for a copy of ``array`` with :func:`poison_values` wherever ``where`` holds.

    ``where`` must broadcast to ``array.shape``; ``array`` is never modified.
    ``allow_nonfinite`` is passed on to :func:`poison_values`.
    """
    a = np.asarray(array)
    if a.dtype not in FLOAT_DTYPES:
        raise InvalidArgument(f"array has dtype {a.dtype}; poisoned needs float16/32/64")
    w = np.asarray(where)
    if w.dtype != np.bool_:
        raise InvalidArgument(f"where has dtype {w.dtype}; it must be boolean")
    try:
        fits = np.broadcast_shapes(w.shape, a.shape) == a.shape
    except ValueError:
        fits = False
    if not fits:
        raise InvalidArgument(f"where of shape {w.shape} does not broadcast to {a.shape}")
    elements = poison_values(a.dtype, allow_nonfinite=allow_nonfinite)
    poison = hnp.arrays(a.dtype, a.shape, elements=elements)
    return poison.map(lambda p: np.where(w, p, a).astype(a.dtype))


# --- masks ----------------------------------------------------------------------------


def causal_mask(t_q: int, t_k: int, /, *, alignment: CausalAlignment) -> BoolArray:
    """``[Tq, Tk]`` causal mask as the spec states it, ``True`` = may attend.

    ``top_left``: key ``j`` is allowed for query ``i`` iff ``j <= i``
    (``sdpa.causal-top-left``); ``bottom_right``: iff ``j <= i + Tk - Tq``
    (``sdpa.causal-bottom-right``).
    """
    n_q = _int("t_q", t_q, minimum=0)
    n_k = _int("t_k", t_k, minimum=0)
    if alignment not in ("top_left", "bottom_right"):
        raise InvalidArgument(f"alignment={alignment!r} must be 'top_left' or 'bottom_right'")
    return masking.causal_mask(n_q, n_k, alignment=alignment)  # [Tq, Tk]


def boolean_masks(
    shape: tuple[int, ...],
    /,
    *,
    patterns: Sequence[MaskPattern] = MASK_PATTERNS,
    fully_masked_rows: bool = True,
) -> st.SearchStrategy[BoolArray]:
    """Strategy for boolean masks of exactly ``shape`` ``[..., Tq, Tk]``, ``True`` = may attend.

    ``patterns`` chooses among :data:`MaskPattern`. With ``fully_masked_rows``
    rows with no allowed key may occur (random masks, key-padding length 0, and
    bottom-right causal masks with ``Tq > Tk`` have them); without, every row
    allows at least one key, and bottom-right causal masks are left out when
    ``Tq > Tk`` (they cannot avoid empty rows).
    """
    dims = _shape("shape", shape, min_dims=2)
    chosen = _subset("patterns", patterns, MASK_PATTERNS)
    if not isinstance(fully_masked_rows, bool):
        raise InvalidArgument(f"fully_masked_rows={fully_masked_rows!r} must be a bool")
    t_q, t_k = dims[-2], dims[-1]
    if t_k < 1:
        raise InvalidArgument(f"shape={dims!r} has no keys; Tk = shape[-1] must be at least 1")
    if not fully_masked_rows and t_q > t_k:
        chosen = tuple(p for p in chosen if p != "causal_bottom_right")
        if not chosen:
            raise InvalidArgument(
                f"a bottom-right causal mask of shape {dims!r} (Tq > Tk) always has fully "
                "masked rows; pass fully_masked_rows=True or another pattern"
            )

    @st.composite
    def random_mask(draw: st.DrawFn) -> BoolArray:
        m = draw(hnp.arrays(np.bool_, dims))
        if not fully_masked_rows:
            keep = draw(hnp.arrays(np.intp, dims[:-1], elements=st.integers(0, t_k - 1)))
            m = m | (np.arange(t_k) == keep[..., None])  # [..., Tq, Tk]
        return m

    @st.composite
    def key_padding_mask(draw: st.DrawFn) -> BoolArray:
        shortest = 0 if fully_masked_rows else 1
        lengths = draw(hnp.arrays(np.intp, dims[:-2], elements=st.integers(shortest, t_k)))
        allowed = np.arange(t_k) < np.asarray(lengths)[..., None, None]  # [..., 1, Tk]
        return np.broadcast_to(allowed, dims).copy()

    def causal(alignment: CausalAlignment) -> st.SearchStrategy[BoolArray]:
        return st.builds(
            lambda: np.broadcast_to(causal_mask(t_q, t_k, alignment=alignment), dims).copy()
        )

    by_pattern: dict[MaskPattern, st.SearchStrategy[BoolArray]] = {
        "random": random_mask(),
        "key_padding": key_padding_mask(),
        "causal_top_left": causal("top_left"),
        "causal_bottom_right": causal("bottom_right"),
    }
    return st.one_of(*(by_pattern[p] for p in chosen))


def additive_masks(
    dtype: npt.DTypeLike,
    shape: tuple[int, ...],
    /,
    *,
    patterns: Sequence[MaskPattern] = MASK_PATTERNS,
    fully_masked_rows: bool = True,
    max_bias: float = 4.0,
) -> st.SearchStrategy[npt.NDArray[np.floating[Any]]]:
    """Strategy for additive masks: :math:`-\\infty` where :func:`boolean_masks` disallows.

    Allowed positions hold 0 or a finite bias in ``[-max_bias, max_bias]``
    (``distribution.additive-mask``); a large ``max_bias`` probes too-weak mask
    constants such as ``-1e4``, which must bias, not disallow.
    """
    dt = _dtype(dtype)
    bound = _magnitude("max_bias", max_bias, dt)
    allowed = boolean_masks(shape, patterns=patterns, fully_masked_rows=fully_masked_rows)
    dims = tuple(shape)
    biases = st.one_of(
        st.just(np.zeros(dims, dtype=dt)),
        hnp.arrays(dt, dims, elements=_finite_elements(dt, bound)),
    )
    return st.tuples(allowed, biases).map(lambda ab: np.where(ab[0], ab[1], -np.inf).astype(dt))


def masks(
    dtype: npt.DTypeLike,
    shape: tuple[int, ...],
    /,
    *,
    kinds: Sequence[MaskKind] = MASK_KINDS,
    patterns: Sequence[MaskPattern] = MASK_PATTERNS,
    fully_masked_rows: bool = True,
) -> st.SearchStrategy[Mask | None]:
    """Strategy for the ``mask`` argument: ``None``, boolean or additive (see :data:`MaskKind`)."""
    chosen = _subset("kinds", kinds, MASK_KINDS)
    options: list[st.SearchStrategy[Mask | None]] = []
    for kind in chosen:
        if kind == "none":
            options.append(st.none())
        elif kind == "boolean":
            options.append(
                boolean_masks(shape, patterns=patterns, fully_masked_rows=fully_masked_rows)
            )
        else:
            options.append(
                additive_masks(dtype, shape, patterns=patterns, fully_masked_rows=fully_masked_rows)
            )
    return st.one_of(*options)


def unread_by_mask(mask: Mask | None, target: tuple[int, ...], /, *, axis: int) -> BoolArray:
    """Rows of an argument of batch-and-axis shape ``target`` that no allowed pair reads.

    With ``axis=-1`` the rows are keys (or values): key ``j`` is unread when no
    query of any batch element that uses it may attend to it. With ``axis=-2``
    they are queries: row ``i`` is unread when it has no allowed key. ``target``
    is the argument's ``[..., T]`` shape (its batch and its own sequence axis); the
    result has that shape plus a trailing axis of 1, ready to broadcast over
    features (``input.unread-positions``).
    """
    if axis not in (-1, -2):
        raise InvalidArgument(f"axis={axis!r} must be -1 (keys) or -2 (queries)")
    dims = _shape("target", target, min_dims=1)
    if mask is None:
        return np.zeros((*dims, 1), dtype=bool)
    m = np.asarray(mask)
    allowed = m if m.dtype == np.bool_ else m != -np.inf  # [..., Tq, Tk]
    read = allowed.any(axis=-1 if axis == -2 else -2)  # [..., T]
    full = np.broadcast_shapes(read.shape, dims)
    read = np.broadcast_to(read, full)
    # Reduce the batch axes that the argument broadcasts over: a row is read if
    # any batch element using it reads it.
    extra = len(full) - len(dims)
    read = np.any(read, axis=tuple(range(extra))) if extra else read
    squeeze = tuple(i for i, size in enumerate(dims[:-1]) if size == 1 and read.shape[i] != 1)
    read = np.any(read, axis=squeeze, keepdims=True) if squeeze else read
    return np.asarray(~read)[..., None]


# --- parameters and calls -------------------------------------------------------------


def scales(
    dtype: npt.DTypeLike | None = None,
    /,
    *,
    max_magnitude: float = 8.0,
    allow_none: bool = True,
) -> st.SearchStrategy[Scale | None]:
    """Strategy for a ``scale`` argument: ``None``, 0, negative, ints and finite floats.

    All values are finite and at most ``max_magnitude`` in magnitude
    (``input.scale-finite``); with ``dtype`` the bound must be representable in it,
    so that the scale rounds to a finite number of that dtype.
    """
    dt = _dtype(dtype) if dtype is not None else FLOAT_DTYPES[-1]
    bound = _magnitude("max_magnitude", max_magnitude, dt)
    floats = st.floats(-bound, bound, allow_nan=False, allow_infinity=False)
    ints = st.integers(-math.floor(bound), math.floor(bound))
    choices: list[st.SearchStrategy[Scale | None]] = [floats, ints]
    if allow_none:
        choices.insert(0, st.none())
    return st.one_of(*choices)


def score_parameters(
    kind: ScoreKind,
    /,
    *,
    dtype: npt.DTypeLike,
    d_q: int,
    d_k: int,
    tk: int,
    max_hidden: int = 4,
    max_magnitude: float = 1.0,
) -> st.SearchStrategy[dict[str, Any]]:
    """Strategy for the keyword parameters of :func:`attnref.attention` for score ``kind``.

    ``dot``: none; ``scaled_dot``: ``scale`` (maybe ``None``); ``general``: ``W_a``
    ``[d_q, d_k]``; ``concat``: ``W_a`` ``[d_a, d_q + d_k]`` and ``v_a``; ``additive``:
    ``W_q``, ``W_k`` and ``v_a``; ``location``: ``W_a`` ``[Tk, d_q]``
    (``attention.score-parameters``). Weights are well conditioned, with entries in
    ``[-max_magnitude, max_magnitude]`` and ``d_a`` up to ``max_hidden``.
    """
    if kind not in SCORE_KINDS:
        raise InvalidArgument(f"kind={kind!r} is not a score kind; choose from {SCORE_KINDS!r}")
    dt = _dtype(dtype)
    n_q = _int("d_q", d_q, minimum=1)
    n_k = _int("d_k", d_k, minimum=1)
    n_t = _int("tk", tk, minimum=1)
    hidden = _int("max_hidden", max_hidden, minimum=1)
    bound = _magnitude("max_magnitude", max_magnitude, dt)
    if kind in ("dot", "scaled_dot") and n_q != n_k:
        raise InvalidArgument(f"score {kind!r} needs d_q == d_k; got d_q={n_q} and d_k={n_k}")

    def weights(*dims: int) -> st.SearchStrategy[Array]:
        return well_conditioned_arrays(dt, dims, max_magnitude=bound)

    if kind == "dot":
        return st.just({})
    if kind == "scaled_dot":
        return st.fixed_dictionaries({"scale": scales(dt)})
    if kind == "general":
        return st.fixed_dictionaries({"W_a": weights(n_q, n_k)})
    if kind == "location":
        return st.fixed_dictionaries({"W_a": weights(n_t, n_q)})

    @st.composite
    def tanh_layer(draw: st.DrawFn) -> dict[str, Any]:
        d_a = draw(st.integers(1, hidden))
        if kind == "concat":
            return {"W_a": draw(weights(d_a, n_q + n_k)), "v_a": draw(weights(d_a))}
        return {
            "W_q": draw(weights(d_a, n_q)),
            "W_k": draw(weights(d_a, n_k)),
            "v_a": draw(weights(d_a)),
        }

    return tanh_layer()


@dataclass(frozen=True, eq=False)
class AttentionInputs:
    """Query, keys, values and mask of one call, with the shapes they were drawn for."""

    query: Array
    keys: Array
    values: Array
    mask: Mask | None
    shapes: AttentionShapes


_SEQUENCE_MAGNITUDE = 2.0
"""Entry bound of well-conditioned query, key and value arrays: scores stay within a few
units for small feature sizes, so no weight underflows even in float16."""


def _sequence(
    dt: FloatDType, shape: tuple[int, ...], regimes: tuple[Regime, ...], terms: int, /
) -> st.SearchStrategy[Array]:
    """Query/key/value arrays: well conditioned, or large up to the safe magnitude."""
    options: list[st.SearchStrategy[Array]] = []
    for regime in regimes:
        if regime == "well_conditioned":
            options.append(well_conditioned_arrays(dt, shape, max_magnitude=_SEQUENCE_MAGNITUDE))
        elif regime == "large":
            bound = safe_magnitude(dt, terms=terms)
            options.append(hnp.arrays(dt, shape, elements=_extreme_elements(dt, bound)))
        elif regime == "ties":
            options.append(_tied_arrays(dt, shape, _SEQUENCE_MAGNITUDE))
        else:
            options.append(_near_tied_arrays(dt, shape, _SEQUENCE_MAGNITUDE))
    return st.one_of(*options)


def attention_inputs(
    *,
    dtype: npt.DTypeLike | None = None,
    shapes: st.SearchStrategy[AttentionShapes] | None = None,
    regimes: Sequence[Regime] = ("well_conditioned",),
    mask_kinds: Sequence[MaskKind] = MASK_KINDS,
    mask_patterns: Sequence[MaskPattern] = MASK_PATTERNS,
    fully_masked_rows: bool = True,
    poison_unread: bool = False,
) -> st.SearchStrategy[AttentionInputs]:
    """Strategy for :class:`AttentionInputs` of one dtype (any of the three when ``None``).

    ``regimes`` selects how query, keys and values are drawn: ``"large"`` goes up
    to :func:`safe_magnitude` with ``terms = d_q * d_k`` (scores stay finite for
    every score kind with unit weights), ``"ties"`` repeats a few values so that
    scores and values tie exactly, ``"near_ties"`` stays within a few ulps of one
    value. With ``poison_unread`` every query row, key and value that the mask
    leaves unread holds :func:`poison_values`, NaN and infinities included
    (``input.unread-positions``, ``input.unread-nonfinite``).
    """
    dtypes = _dtypes(dtype)
    shape_strategy = attention_shapes() if shapes is None else shapes
    chosen = _subset("regimes", regimes, REGIMES)
    kinds = _subset("mask_kinds", mask_kinds, MASK_KINDS)
    patterns = _subset("mask_patterns", mask_patterns, MASK_PATTERNS)
    for name, flag in (("fully_masked_rows", fully_masked_rows), ("poison_unread", poison_unread)):
        if not isinstance(flag, bool):
            raise InvalidArgument(f"{name}={flag!r} must be a bool")

    @st.composite
    def draw_inputs(draw: st.DrawFn) -> AttentionInputs:
        dt = draw(dtypes)
        s = draw(shape_strategy)
        terms = s.d_q * s.d_k
        q = draw(_sequence(dt, s.query, chosen, terms))
        k = draw(_sequence(dt, s.keys, chosen, terms))
        v = draw(_sequence(dt, s.values, chosen, s.tk))
        usable = patterns
        if not fully_masked_rows and s.tq > s.tk:
            usable = tuple(p for p in patterns if p != "causal_bottom_right") or ("random",)
        mask = draw(
            masks(dt, s.mask, kinds=kinds, patterns=usable, fully_masked_rows=fully_masked_rows)
        )
        if poison_unread and mask is not None:
            q = draw(poisoned(q, unread_by_mask(mask, s.query[:-1], axis=-2)))
            k = draw(poisoned(k, unread_by_mask(mask, s.keys[:-1], axis=-1)))
            v = draw(poisoned(v, unread_by_mask(mask, s.values[:-1], axis=-1)))
        return AttentionInputs(q, k, v, mask, s)

    return draw_inputs()


@dataclass(frozen=True, eq=False)
class AttentionCall:
    """One call of :func:`attnref.attention`: inputs, score kind and its parameters."""

    inputs: AttentionInputs
    score: ScoreKind
    parameters: dict[str, Any]

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments: ``score``, ``mask`` and the score's parameters."""
        return {"score": self.score, "mask": self.inputs.mask, **self.parameters}


def attention_calls(
    *,
    dtype: npt.DTypeLike | None = None,
    kinds: Sequence[ScoreKind] = SCORE_KINDS,
    shapes: st.SearchStrategy[AttentionShapes] | None = None,
    regimes: Sequence[Regime] = ("well_conditioned",),
    mask_kinds: Sequence[MaskKind] = MASK_KINDS,
    mask_patterns: Sequence[MaskPattern] = MASK_PATTERNS,
    fully_masked_rows: bool = True,
    poison_unread: bool = False,
) -> st.SearchStrategy[AttentionCall]:
    """Strategy for :class:`AttentionCall` with a score kind from ``kinds``.

    The shapes come from ``shapes`` (default :func:`attention_shapes` with
    ``same_features=False``); for ``dot`` and ``scaled_dot`` ``d_k`` is set to
    ``d_q``. The other arguments are those of :func:`attention_inputs`.
    """
    chosen = _subset("kinds", kinds, SCORE_KINDS)
    dtypes = _dtypes(dtype)
    shape_strategy = attention_shapes(same_features=False) if shapes is None else shapes

    @st.composite
    def draw_call(draw: st.DrawFn) -> AttentionCall:
        kind = draw(st.sampled_from(chosen))
        dt = draw(dtypes)
        s = draw(shape_strategy)
        if kind in ("dot", "scaled_dot"):
            s = replace(s, d_k=s.d_q)
        inputs = draw(
            attention_inputs(
                dtype=dt,
                shapes=st.just(s),
                regimes=regimes,
                mask_kinds=mask_kinds,
                mask_patterns=mask_patterns,
                fully_masked_rows=fully_masked_rows,
                poison_unread=poison_unread,
            )
        )
        params = draw(score_parameters(kind, dtype=dt, d_q=s.d_q, d_k=s.d_k, tk=s.tk))
        return AttentionCall(inputs, kind, params)

    return draw_call()


@dataclass(frozen=True, eq=False)
class SDPACall:
    """One call of :func:`attnref.scaled_dot_product_attention`.

    With ``enable_gqa`` axis ``-3`` of query, key and value is the heads axis,
    ``query`` with ``groups`` times as many heads as ``key`` and ``value``.
    """

    query: Array
    key: Array
    value: Array
    mask: Mask | None
    is_causal: bool
    causal_alignment: CausalAlignment
    scale: Scale | None
    enable_gqa: bool
    groups: int

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the call."""
        return {
            "mask": self.mask,
            "is_causal": self.is_causal,
            "causal_alignment": self.causal_alignment,
            "scale": self.scale,
            "enable_gqa": self.enable_gqa,
        }


def sdpa_calls(
    *,
    dtype: npt.DTypeLike | None = None,
    shapes: st.SearchStrategy[AttentionShapes] | None = None,
    regimes: Sequence[Regime] = ("well_conditioned",),
    mask_kinds: Sequence[MaskKind] = MASK_KINDS,
    mask_patterns: Sequence[MaskPattern] = MASK_PATTERNS,
    fully_masked_rows: bool = True,
    gqa: bool | None = None,
    max_heads: int = 3,
) -> st.SearchStrategy[SDPACall]:
    """Strategy for :class:`SDPACall`: causal in either alignment, any scale, maybe GQA.

    ``gqa`` forces grouped-query heads on (``True``) or off (``False``); ``None``
    draws both. With GQA a heads axis is inserted before ``Tq``/``Tk``: ``Hk`` key
    heads in ``[1, max_heads]`` and ``Hq = g * Hk`` query heads, ``g`` in
    ``[1, max_heads]``; the mask gets ``Hq`` or 1 heads.
    """
    dtypes = _dtypes(dtype)
    shape_strategy = attention_shapes() if shapes is None else shapes
    chosen = _subset("regimes", regimes, REGIMES)
    kinds = _subset("mask_kinds", mask_kinds, MASK_KINDS)
    patterns = _subset("mask_patterns", mask_patterns, MASK_PATTERNS)
    heads = _int("max_heads", max_heads, minimum=1)
    if gqa is not None and not isinstance(gqa, bool):
        raise InvalidArgument(f"gqa={gqa!r} must be True, False or None")
    gqa_options = [False, True] if gqa is None else [gqa]

    @st.composite
    def draw_call(draw: st.DrawFn) -> SDPACall:
        dt = draw(dtypes)
        s = draw(shape_strategy)
        s = replace(s, d_k=s.d_q)
        grouped = draw(st.sampled_from(gqa_options))
        groups = 1
        if grouped:
            h_k = draw(st.integers(1, heads))
            groups = draw(st.integers(1, heads))
            h_m = draw(st.sampled_from([h_k * groups, 1]))
            s = replace(
                s,
                query_batch=(*s.query_batch, h_k * groups),
                keys_batch=(*s.keys_batch, h_k),
                values_batch=(*s.values_batch, h_k),
                mask_batch=(*s.mask_batch, h_m),
                batch=(*s.batch, h_k * groups),
            )
        terms = s.d_q
        q = draw(_sequence(dt, s.query, chosen, terms))
        k = draw(_sequence(dt, s.keys, chosen, terms))
        v = draw(_sequence(dt, s.values, chosen, s.tk))
        usable = patterns
        if not fully_masked_rows and s.tq > s.tk:
            usable = tuple(p for p in patterns if p != "causal_bottom_right") or ("random",)
        mask = draw(
            masks(dt, s.mask, kinds=kinds, patterns=usable, fully_masked_rows=fully_masked_rows)
        )
        alignment: CausalAlignment = draw(st.sampled_from(["top_left", "bottom_right"]))
        is_causal = draw(st.booleans())
        if is_causal and not fully_masked_rows and s.tq > s.tk:
            alignment = "top_left"  # bottom-right with Tq > Tk always empties rows
        if is_causal and not fully_masked_rows and mask is not None:
            is_causal = False  # the intersection of two masks may empty a row
        scale = draw(scales(dt, max_magnitude=2.0))
        return SDPACall(q, k, v, mask, is_causal, alignment, scale, grouped, groups)

    return draw_call()
