"""Hypothesis strategies that draw oracle cases for an implementation.

Hypothesis draws the *structure* of a case (sizes, mask pattern, value
style, scale, a seed) and NumPy draws the values from the seed. Shrinking
therefore moves towards small shapes and plain styles, and a counterexample
is small, while drawing a 4-D case costs microseconds rather than the
milliseconds element-wise array strategies would. Every value is rounded to
the implementation's dtype before the case is built, so the implementation
and the truth see the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st

from attnref.oracle.protocol import Case, Float64Array, Implementation
from attnref.oracle.rounding import round_to

__all__ = ["Draw", "MaskStyle", "ScaleStyle", "Sizes", "ValueStyle", "cases"]

ValueStyle = Literal["normal", "large_logits", "ties", "near_ties"]
"""How the values of a case are drawn: standard normal; scaled so the scores reach far past
exp()'s overflow; keys (and values) all equal; or equal up to a relative 1e-6."""

MaskStyle = Literal[
    "none", "bool", "additive", "key_padding", "fully_masked", "poison", "nan_poison"
]
"""The mask of a case: none; random boolean (every row keeps a key); additive with -inf;
key padding only; with fully masked rows; or boolean with huge finite (``poison``) or
NaN/inf (``nan_poison``) values written at every position that is not read."""

ScaleStyle = Literal["default", "random", "zero", "negative", "tiny", "large"]
"""The scale of a case: the default, or an override drawn positive, zero, negative, tiny
(1e-3 to 1e-2) or large (10 to 100)."""

EVERY_SCALE: tuple[ScaleStyle, ...] = ("default", "random", "negative", "tiny", "large", "zero")
"""Every scale style, the default first (Hypothesis shrinks towards the first)."""

ORDINARY_MASKS: tuple[MaskStyle, ...] = ("none", "bool", "additive", "key_padding")
"""The mask styles of ordinary cases, no mask first."""

_MAX_LOGIT: dict[str, float] = {
    # The largest score magnitude drawn for "large_logits": far past exp()'s
    # overflow threshold (so a softmax without max-shift overflows), yet
    # q . k stays representable in the dtype.
    "float64": 1e150,
    "float32": 1e18,
    "float16": 2e2,
    "bfloat16": 1e18,
}

POISON: dict[str, float] = {
    # Huge but finite in every dtype (float16's largest is 65504), so the finite-poison
    # clause stays distinct from the NaN one: read, it dominates every score it enters.
    "float64": 1e30,
    "float32": 1e30,
    "float16": 1e4,
    "bfloat16": 1e30,
}
"""The magnitude of the finite poison written at unread positions, per dtype."""

BLOCK_LENGTHS: tuple[int, ...] = (
    15,
    16,
    17,
    31,
    32,
    33,
    63,
    64,
    65,
    100,
    127,
    128,
    129,
    200,
    255,
    256,
    257,
)
"""Key lengths of the long cases: at, just below and just above the tile sizes of blocked
kernels (16 to 256), and two that are a multiple of none of them beyond the first."""

LONG_FEATURES: tuple[int, ...] = (8, 16, 32, 64, 128)
"""Feature sizes of the long cases, the head sizes kernels specialise for."""


@dataclass(frozen=True)
class Draw:
    """What kind of cases a check draws.

    Every feature the implementation offers is drawn on or off in
    combination with the others, unless the check forces it (``True``) or
    excludes it (``False``); masks and scales are drawn from the styles
    listed that the implementation offers. Hypothesis shrinks a failure
    towards the first style of each tuple, features off and small sizes.
    """

    values: tuple[ValueStyle, ...] = ("normal",)
    masks: tuple[MaskStyle, ...] = ORDINARY_MASKS
    scales: tuple[ScaleStyle, ...] = EVERY_SCALE
    causal: bool | None = None
    gqa: bool | None = None
    long: bool = True


@dataclass(frozen=True)
class Sizes:
    """The sizes of one case."""

    batch: int
    heads_q: int
    heads_k: int
    t_q: int
    t_k: int
    d: int
    d_v: int


# (batch, key heads, groups, Tq, Tk, d, d_v): the few sizes drawn for implementations
# that compile once per shape (see ``compiles_per_shape``). They keep the edge
# cases: one key, one feature, Tq < Tk, Tq > Tk, grouped heads, decoding (Tq = 1),
# and lengths past a tile boundary.
_MENU: tuple[tuple[int, int, int, int, int, int, int], ...] = (
    (1, 1, 1, 1, 1, 1, 1),
    (2, 2, 1, 3, 3, 4, 3),
    (1, 1, 1, 3, 6, 8, 5),
    (2, 1, 1, 5, 2, 2, 4),
    (1, 2, 2, 4, 4, 4, 2),
    (1, 1, 3, 2, 5, 16, 8),
    (1, 1, 1, 1, 9, 8, 8),
    (1, 1, 2, 1, 65, 32, 32),
    (1, 1, 1, 33, 129, 64, 64),
)


@st.composite
def _sizes(draw: st.DrawFn, impl: Implementation, spec: Draw, gqa: bool) -> Sizes:
    distinct_value_dim = "distinct_value_dim" in impl.features
    if getattr(impl, "compiles_per_shape", False):
        fits = [m for m in _MENU if (m[2] > 1) == gqa]
        batch, heads_k, groups, t_q, t_k, d, d_v = draw(st.sampled_from(fits))
    elif spec.long and draw(st.sampled_from((False, False, False, False, True))):
        # One case in five is long: lengths across tile boundaries, head sizes up to 128,
        # one batch item and key head so that the extended-precision truth stays cheap.
        batch, heads_k = 1, 1
        groups = draw(st.integers(1, 2)) if gqa else 1
        t_k = draw(st.sampled_from(BLOCK_LENGTHS))
        t_q = draw(st.sampled_from((1, 2, t_k, t_k // 2 + 1, 17)))
        d = draw(st.sampled_from(LONG_FEATURES))
        d_v = draw(st.sampled_from((d, 8)))
    else:
        heads_k = draw(st.integers(1, 3))
        groups = draw(st.integers(1, 3)) if gqa else 1
        t_k = draw(st.integers(1, 9))
        t_q = draw(st.integers(1, 9))
        d = draw(st.integers(1, 16))
        d_v = draw(st.integers(1, 8))
        batch = draw(st.integers(1, 3))
    return Sizes(
        batch=batch,
        heads_q=heads_k * groups,
        heads_k=heads_k,
        t_q=t_q,
        t_k=t_k,
        d=d,
        d_v=d_v if distinct_value_dim else d,
    )


def _mask_shape(sizes: Sizes, pattern: int, rank: int) -> tuple[int, ...]:
    """One of the broadcast patterns of a mask over ``[B, H, Tq, Tk]`` (or ``[B, Tq, Tk]``)."""
    b, h, tq, tk = sizes.batch, sizes.heads_q, sizes.t_q, sizes.t_k
    if rank == 3:
        return [(b, tq, tk), (tq, tk), (1, tq, tk), (b, 1, tk), (1, 1, tk)][pattern % 5]
    shapes = [
        (b, h, tq, tk),
        (tq, tk),
        (1, 1, tq, tk),
        (b, 1, tq, tk),
        (1, h, tq, tk),
        (b, 1, 1, tk),
        (h, tq, tk),
        (1, h, 1, tk),
        (b, h, 1, tk),
    ]
    return shapes[pattern % len(shapes)]


MASK_PATTERNS = 9
"""How many broadcast patterns :func:`_mask_shape` knows (full shape first)."""


def _allowed(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    style: MaskStyle,
    causal: npt.NDArray[np.bool_] | None,
) -> npt.NDArray[np.bool_]:
    """A boolean pattern; every row keeps a key unless the style asks for fully masked rows.

    With a causal mask, the key each row keeps is one the causal mask allows too,
    so a row loses every key only where the causal mask alone empties it.
    """
    allowed = rng.random(shape) < rng.uniform(0.3, 0.9)
    if style == "fully_masked":
        rows = rng.random(shape[:-1]) < 0.4
        rows.flat[0] = True
        allowed[rows] = False
        return allowed
    t_k = shape[-1]
    if causal is None or shape[-2] == 1:
        # a mask that broadcasts over the query axis keeps a key for every row
        reach = np.full(shape[:-1], t_k)
    else:
        reach = np.broadcast_to(np.maximum(causal.sum(axis=-1), 1), shape[:-1])
    first = np.minimum((rng.random(shape[:-1]) * reach).astype(int), t_k - 1)
    if causal is not None and shape[-2] == 1:
        first = np.zeros(shape[:-1], dtype=int)  # key 0 is causally allowed to every row
    np.put_along_axis(allowed, first[..., None], True, axis=-1)
    return allowed


def _values(
    rng: np.random.Generator, shape: tuple[int, ...], style: ValueStyle, magnitude: float
) -> Float64Array:
    base = rng.standard_normal(shape)
    if style == "ties":
        base = np.broadcast_to(base[..., :1, :], shape).copy()
    elif style == "near_ties":
        base = np.broadcast_to(base[..., :1, :], shape) * (1 + 1e-6 * rng.standard_normal(shape))
    return base * magnitude


def _offered_masks(impl: Implementation, styles: tuple[MaskStyle, ...]) -> list[MaskStyle]:
    """The styles of ``styles`` the implementation can be given (``none`` when none is)."""
    features = impl.features
    boolean = bool({"bool_mask", "key_padding_mask"} & features)
    offered = {
        "none": True,
        "bool": boolean,
        "key_padding": boolean,
        "additive": "additive_mask" in features,
        "fully_masked": boolean and impl.conventions.fully_masked_row != "unsupported",
        "poison": boolean,
        "nan_poison": boolean,
    }
    kept = [m for m in styles if offered[m]]
    return kept or ["none"]


def _flag(draw: st.DrawFn, forced: bool | None, offered: bool) -> bool:
    """A feature flag: forced on or off by the check, else drawn where offered."""
    if forced is not None:
        return forced and offered
    return offered and draw(st.booleans())


@st.composite
def _case(draw: st.DrawFn, impl: Implementation, spec: Draw) -> Case:
    seq2seq = impl.function == "attention"
    features = impl.features
    gqa = not seq2seq and _flag(draw, spec.gqa, "gqa" in features)
    causal = _flag(draw, spec.causal, "causal" in features)
    sizes = draw(_sizes(impl, spec, gqa))
    alignment = impl.conventions.causal_alignment
    unsupported = impl.conventions.fully_masked_row == "unsupported"
    if causal and alignment == "bottom_right" and sizes.t_q > sizes.t_k and unsupported:
        sizes = replace(sizes, t_q=sizes.t_k)  # its first rows would have no key
    value_style = draw(st.sampled_from(spec.values))
    masks = _offered_masks(impl, spec.masks)
    if causal and "causal_with_mask" not in features:
        masks = [m for m in masks if m == "none"] or masks[:0] or ["none"]
    mask_style = draw(st.sampled_from(masks))
    scales = [s for s in spec.scales if s == "default" or "scale" in features] or ["default"]
    scale_style = draw(st.sampled_from(scales))
    pattern = draw(st.integers(0, MASK_PATTERNS - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    rank = 3 if seq2seq else 4

    def lead(heads: int) -> tuple[int, ...]:
        return (sizes.batch,) if seq2seq else (sizes.batch, heads)

    magnitude = 1.0
    if value_style == "large_logits":
        logit = float(10.0 ** rng.uniform(1.5, np.log10(_MAX_LOGIT[dtype])))
        magnitude = float(np.sqrt(logit / sizes.d))
    q = _values(rng, (*lead(sizes.heads_q), sizes.t_q, sizes.d), "normal", magnitude)
    k = _values(rng, (*lead(sizes.heads_k), sizes.t_k, sizes.d), value_style, magnitude)
    v = _values(rng, (*lead(sizes.heads_k), sizes.t_k, sizes.d_v), value_style, 1.0)

    causal_allowed = None
    if causal:
        from attnref.masking import causal_mask

        causal_allowed = causal_mask(sizes.t_q, sizes.t_k, alignment=alignment)
    mask: npt.NDArray[Any] | None = None
    if mask_style != "none":
        shape = _mask_shape(sizes, pattern, rank)
        padding_only = "bool_mask" not in features and mask_style != "additive"
        if mask_style == "key_padding" or padding_only:
            shape = (sizes.batch, 1, sizes.t_k) if seq2seq else (sizes.batch, 1, 1, sizes.t_k)
        allowed = _allowed(rng, shape, mask_style, causal_allowed)
        if mask_style == "additive":
            bias = rng.standard_normal(shape) * rng.uniform(0.0, 3.0)
            mask = round_to(dtype, np.where(allowed, bias, -np.inf))
        else:
            mask = allowed
        if mask_style in ("poison", "nan_poison"):
            if mask_style == "nan_poison":
                poison = float(rng.choice([np.nan, np.inf, -np.inf]))
            else:
                poison = POISON[dtype] * (1 + rng.random())
            read = allowed if causal_allowed is None else allowed & causal_allowed
            q, k, v = _poison(q, k, v, read, sizes, poison, seq2seq=seq2seq)

    options: dict[str, object] = {}
    if scale_style != "default":
        options["scale"] = _scale(rng, scale_style, dtype)
    if causal:
        options["is_causal"] = True
    if gqa:
        options["enable_gqa"] = True
    names = ("query", "keys", "values") if seq2seq else ("query", "key", "value")
    arrays = {n: round_to(dtype, a) for n, a in zip(names, (q, k, v), strict=True)}
    if seq2seq:
        arrays.update(_score_parameters(impl, rng, sizes))
        form = impl.score_form
        if form is not None:
            options["score"] = form.kind
        if form is None or form.kind != "scaled_dot":
            options.pop("scale", None)
    return Case(impl.function, arrays, mask, options)


def _scale(rng: np.random.Generator, style: ScaleStyle, dtype: str) -> float:
    """A scale override; rounded to the dtype so the implementation sees the same number."""
    value = {
        "random": rng.uniform(0.05, 2.0),
        "zero": 0.0,
        "negative": -rng.uniform(0.05, 2.0),
        "tiny": rng.uniform(1e-3, 1e-2),
        "large": rng.uniform(10.0, 100.0),
    }[style]
    return float(round_to(dtype, np.array(value)))


def _poison(
    q: Float64Array,
    k: Float64Array,
    v: Float64Array,
    allowed: npt.NDArray[np.bool_],
    sizes: Sizes,
    poison: float,
    *,
    seq2seq: bool,
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Write ``poison`` into every key/value row and query row that is not read."""
    lead = (sizes.batch,) if seq2seq else (sizes.batch, sizes.heads_q)
    full = np.broadcast_to(allowed, (*lead, sizes.t_q, sizes.t_k))
    q_unread = ~full.any(axis=-1)  # [..., Tq]
    k_unread = ~full.any(axis=-2)  # [..., Tk] per query head
    if not seq2seq:
        groups = sizes.heads_q // sizes.heads_k
        # a key head is unread only if no query head of its group reads it
        k_unread = k_unread.reshape(sizes.batch, sizes.heads_k, groups, sizes.t_k).all(axis=2)
    q, k, v = q.copy(), k.copy(), v.copy()
    q[q_unread] = poison
    k[k_unread] = poison
    v[k_unread] = poison
    return q, k, v


def _score_parameters(
    impl: Implementation, rng: np.random.Generator, sizes: Sizes
) -> dict[str, Float64Array]:
    """Parameters of the implementation's score form: free ones random, the rest fixed."""
    form = impl.score_form
    if form is None or form.kind in ("dot", "scaled_dot"):
        return {}
    d, t_k = sizes.d, sizes.t_k
    by_kind: dict[str, dict[str, tuple[int, ...]]] = {
        "general": {"W_a": (d, d)},
        "additive": {"W_q": (d, d), "W_k": (d, d), "v_a": (d,)},
        "concat": {"W_a": (d, 2 * d), "v_a": (d,)},
        "location": {"W_a": (t_k, d)},
    }
    shapes = by_kind[form.kind]

    def fixed(name: str, shape: tuple[int, ...]) -> Float64Array:
        # a parameter the implementation fixes: ones for a vector, identity blocks for a matrix
        if len(shape) == 1:
            return np.ones(shape)
        if shape[0] == d:
            return np.tile(np.eye(d), (1, shape[1] // d))
        return np.eye(shape[0], shape[1])

    return {
        name: round_to(
            impl.dtype,
            rng.standard_normal(shape) / np.sqrt(shape[-1])
            if name in form.free
            else fixed(name, shape),
        )
        for name, shape in shapes.items()
    }


def cases(impl: Implementation, spec: Draw, /) -> st.SearchStrategy[Case]:
    """Cases of ``impl``'s function drawn as ``spec`` describes."""
    return _case(impl, spec)
