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

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from hypothesis import assume
from hypothesis import strategies as st

from attnref.oracle.protocol import Case, Float64Array, Implementation
from attnref.oracle.rounding import round_to
from attnref.oracle.tolerance import unit_roundoff
from attnspec.typing import CausalAlignment

__all__ = [
    "Draw",
    "MaskStyle",
    "PositionStyle",
    "ScaleStyle",
    "Sizes",
    "ValueStyle",
    "cases",
    "position_margin",
]

ValueStyle = Literal["normal", "large_logits", "ties", "near_ties", "shifted"]
"""How the values of a case are drawn: standard normal; scaled so the scores reach far past
exp()'s overflow; keys (and values) all equal; or equal up to a relative 1e-6; for the
steps also ``shifted``: normal scores plus a large constant per row."""

PositionStyle = Literal["grid", "off_grid", "edges"]
"""How local-p's positions are drawn: multiples of 1/8 and integers, so that some keys sit
exactly on the window's edge ``|j - p| = D``; reals at least :func:`position_margin` away from
every integer (the only positions with a key on an edge), so that no key is on an edge;
or the ends of the source and beyond (0, Tk - 1, just outside and far outside, which
narrow or empty the window)."""

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
    ``positions`` are the styles of local-p's positions, mixed element by
    element; ``unequal_lengths`` draws ``Tq != Tk`` only (local-m).
    """

    values: tuple[ValueStyle, ...] = ("normal",)
    masks: tuple[MaskStyle, ...] = ORDINARY_MASKS
    scales: tuple[ScaleStyle, ...] = EVERY_SCALE
    causal: bool | None = None
    gqa: bool | None = None
    long: bool = True
    positions: tuple[PositionStyle, ...] = ("grid", "off_grid", "edges")
    unequal_lengths: bool = False
    softcap: bool | None = None
    window: bool | None = None
    query_offset: bool | None = None
    key_lengths: bool | None = None
    sinks: bool | None = None


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

    restrictions = {} if seq2seq else _restrictions(draw, impl, spec, rng, sizes, causal)
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
            read = allowed & _structural(sizes, causal, alignment, restrictions, seq2seq=seq2seq)
            q, k, v = _poison(q, k, v, read, sizes, poison, seq2seq=seq2seq)

    options: dict[str, object] = {}
    if scale_style != "default":
        options["scale"] = _scale(rng, scale_style, dtype)
    if causal:
        options["is_causal"] = True
    if gqa:
        options["enable_gqa"] = True
    options.update(restrictions)
    names = ("query", "keys", "values") if seq2seq else ("query", "key", "value")
    arrays = {n: round_to(dtype, a) for n, a in zip(names, (q, k, v), strict=True)}
    if not seq2seq and _flag(draw, spec.sinks, "sinks" in features):
        arrays["sinks"] = round_to(dtype, _sink_logits(rng, sizes.heads_q))
    if seq2seq:
        arrays.update(_score_parameters(impl, rng, sizes))
        form = impl.score_form
        if form is not None:
            options["score"] = form.kind
        if form is None or form.kind != "scaled_dot":
            options.pop("scale", None)
    case = Case(impl.function, arrays, mask, options)
    if restrictions and unsupported:
        # a window, an offset or key lengths may leave a row no key; such an
        # implementation is only given cases where every row keeps one
        assume(not case.fully_masked_rows(alignment).any())
    return case


def _restrictions(
    draw: st.DrawFn,
    impl: Implementation,
    spec: Draw,
    rng: np.random.Generator,
    sizes: Sizes,
    causal: bool,
) -> dict[str, object]:
    """The softcap, window, query offset and key lengths of a case, where offered.

    Each is drawn on or off like any feature; the values come from the case's
    seed. Windows reach from nothing (0) to past every key, offsets from before
    the first key to past the last, lengths from 0 to ``Tk``.
    """
    features = impl.features
    t_q, t_k = sizes.t_q, sizes.t_k
    drawn: dict[str, object] = {}
    if _flag(draw, spec.softcap, "softcap" in features):
        # rounded to the dtype, so that the implementation and the truth cap alike
        drawn["softcap"] = float(round_to(impl.dtype, np.array(rng.uniform(0.5, 30.0))))
    if _flag(draw, spec.window, "window" in features):

        def side() -> int | None:
            return None if rng.random() < 0.25 else int(rng.integers(0, t_k + 2))

        # a causal window is mostly the sliding window (w, 0)
        right = 0 if causal and rng.random() < 0.5 else side()
        drawn["window"] = (side(), right)
    if _flag(draw, spec.query_offset, "query_offset" in features):
        if rng.random() < 0.5:
            drawn["query_offset"] = int(rng.integers(-t_q, t_k + 1))
        else:
            drawn["query_offset"] = tuple(
                int(o) for o in rng.integers(-t_q, t_k + 1, size=sizes.batch)
            )
    if _flag(draw, spec.key_lengths, "key_lengths" in features):
        drawn["key_lengths"] = tuple(int(n) for n in rng.integers(0, t_k + 1, size=sizes.batch))
    return drawn


def _sink_logits(rng: np.random.Generator, heads: int) -> Float64Array:
    """``[H]`` sink logits (``sdpa.sinks``), each head's from one of four kinds: of the
    scores' own size, exactly 0 (softmax plus one), so low it takes no weight (-20 to
    -60: ``exp`` underflows in the 16-bit dtypes), so high it takes most of it."""
    kind = rng.integers(0, 4, size=heads)
    choices = np.stack(
        [
            rng.normal(0.0, 2.0, size=heads),
            np.zeros(heads),
            -rng.uniform(20.0, 60.0, size=heads),
            rng.uniform(3.0, 10.0, size=heads),
        ]
    )
    return np.asarray(np.take_along_axis(choices, kind[None, :], axis=0)[0], dtype=np.float64)


def _structural(
    sizes: Sizes,
    causal: bool,
    alignment: CausalAlignment,
    restrictions: dict[str, object],
    *,
    seq2seq: bool,
) -> npt.NDArray[np.bool_]:
    """``[B, (H,) Tq, Tk]`` keys the causal flag and the restrictions allow."""
    from attnref.masking import allowed_positions

    lead = (sizes.batch,) if seq2seq else (sizes.batch, sizes.heads_q)
    offset = restrictions.get("query_offset")
    return allowed_positions(
        (*lead, sizes.t_q, sizes.t_k),
        is_causal=causal,
        alignment="top_left" if offset is not None else alignment,
        window=restrictions.get("window"),  # type: ignore[arg-type]
        query_offset=offset,  # type: ignore[arg-type]
        key_lengths=restrictions.get("key_lengths"),  # type: ignore[arg-type]
    )


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
    if impl.function in _STEP_CASES:
        return _STEP_CASES[impl.function](impl, spec)
    return _case(impl, spec)


# --- steps -----------------------------------------------------------------------------------

_FAR: dict[str, float] = {
    # How far past the source a "far" local-p position may lie: finite in the dtype with
    # room to spare (float16's largest number is 65504).
    "float64": 1e300,
    "float32": 1e30,
    "float16": 1e4,
    "bfloat16": 1e30,
}


def position_margin(impl: Implementation, half_width: int, /) -> float:
    """How far from every integer a non-grid local-p position stays.

    A key sits on the window's edge, :math:`|j - p| = D`, only when ``p`` is
    an integer. A kernel that decides the window by computing
    :math:`\\mathrm{fl}(j - p)` may misplace a key whose :math:`|j - p|` lies
    within that rounding, :math:`u_A (D + 1)`, of ``D``: the spec decides the
    exact value, but no rounding-level disagreement may fail a sound kernel.
    Positions are therefore either exact integers (the edge, decided exactly:
    ``j - p`` is then a small integer, exact in every dtype) or at least
    ``2**-6``, and twice that rounding, away from every integer; multiples of
    1/8 qualify wherever the margin is at most 1/8 (with float32 or wider
    accumulation, always for the half-widths drawn).
    """
    accumulation = impl.conventions.accumulates_in(impl.dtype)
    return max(2.0**-6, 2 * (half_width + 1) * unit_roundoff(accumulation))


def _long(draw: st.DrawFn, spec: Draw) -> bool:
    """One case in five is long (lengths across tile boundaries), where the check allows."""
    return spec.long and draw(st.sampled_from((False, False, False, False, True)))


@st.composite
def _lengths(draw: st.DrawFn, spec: Draw, long: bool) -> tuple[int, int]:
    """``(Tq, Tk)``, with ``Tq != Tk`` when the check asks for unequal lengths."""
    options: tuple[int, ...]
    if long:
        t_k = draw(st.sampled_from(BLOCK_LENGTHS))
        options = (1, 2, t_k, t_k // 2 + 1, 17, t_k + 5)
    else:
        t_k = draw(st.integers(1, 9))
        options = tuple(range(1, 10))
    if spec.unequal_lengths:
        options = tuple(n for n in options if n != t_k)
    if not options:
        return t_k, t_k
    return draw(st.sampled_from(options)), t_k


@st.composite
def _batch(draw: st.DrawFn, long: bool) -> tuple[int, ...]:
    """Leading batch dimensions: none, one or two of sizes 1 to 3 (one of size 1 if long)."""
    if long:
        return draw(st.sampled_from(((), (1,))))
    rank = draw(st.integers(0, 2))
    return tuple(draw(st.integers(1, 3)) for _ in range(rank))


@st.composite
def _broadcast_of(draw: st.DrawFn, batch: tuple[int, ...]) -> tuple[int, ...]:
    """A batch shape that broadcasts to ``batch``: itself, with 1s, or with fewer dimensions."""
    kept = batch[draw(st.integers(0, len(batch))) :] if batch else batch
    return tuple(1 if draw(st.booleans()) else n for n in kept) if kept else kept


def _scores(
    rng: np.random.Generator, shape: tuple[int, ...], style: ValueStyle, dtype: str
) -> Float64Array:
    """Scores ``[..., Tq, Tk]`` in a value style (ties and shifts are per row)."""
    base = rng.standard_normal(shape) * rng.uniform(0.5, 3.0)
    row = (*shape[:-1], 1)
    if style == "large_logits":
        large: Float64Array = base * 10.0 ** rng.uniform(1.5, np.log10(_MAX_LOGIT[dtype]))
        return large
    if style == "ties":
        return np.broadcast_to(base[..., :1], shape).copy()
    if style == "near_ties":
        return np.broadcast_to(base[..., :1], shape) * (1 + 1e-6 * rng.standard_normal(shape))
    if style == "shifted":
        reach = np.log10(_MAX_LOGIT[dtype])
        return base + rng.choice([-1.0, 1.0], row) * 10.0 ** rng.uniform(1.0, reach, row)
    return base


def _padding(batch: tuple[int, ...]) -> tuple[int, ...]:
    """A key-padding mask's batch shape: the first batch dimension, 1 for the others."""
    return (batch[0], *(1 for _ in batch[1:])) if batch else ()


def _step_mask(
    rng: np.random.Generator,
    batch: tuple[int, ...],
    t_q: int,
    t_k: int,
    style: MaskStyle,
    pattern: int,
) -> npt.NDArray[np.bool_]:
    """A boolean pattern broadcastable to ``batch + [Tq, Tk]`` (``batch``'s own shape if poison).

    Rows may lose every key only in the ``fully_masked`` style.
    """
    shapes = [(*batch, t_q, t_k), (t_q, t_k), (1, t_k), (*_padding(batch), 1, t_k)]
    if style in ("poison", "nan_poison"):
        shapes = shapes[:1]
    shape = shapes[pattern % len(shapes)]
    return _allowed(rng, shape, "fully_masked" if style == "fully_masked" else "bool", None)


def _positions(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    styles: tuple[PositionStyle, ...],
    t_k: int,
    d: int,
    impl: Implementation,
) -> Float64Array:
    """Local-p positions ``[..., Tq]``, each in one of ``styles``, exact in the dtype."""
    style = rng.choice(np.array(styles), shape)
    margin = position_margin(impl, d)
    low, high = -d - 1.0, t_k + d + 0.0
    integer = np.round(rng.uniform(low, high, shape))
    eighth = np.round(rng.uniform(low, high, shape) * 8) / 8
    grid = np.where(rng.random(shape) < 0.5, integer, eighth)
    fraction = rng.uniform(margin, max(margin, 1.0 - margin), shape)
    off = np.floor(rng.uniform(-1.0, float(t_k), shape)) + fraction
    far = (t_k + d + 1.0) * 10.0 ** rng.uniform(0.0, np.log10(_FAR[impl.dtype]) - 3, shape)
    ends = np.array([0.0, t_k - 1.0, -d - 1.0, t_k + d + 0.0, -d + 0.0, t_k - 1.0 + d])
    edge = np.where(
        rng.random(shape) < 0.7,
        rng.choice(ends, shape),
        rng.choice([-1.0, 1.0], shape) * far,
    )
    p = round_to(impl.dtype, np.select([style == "grid", style == "off_grid"], [grid, off], edge))
    # Note: a multiple of 1/8 within the margin of an integer (where the margin is wider
    # than 1/8) is moved onto it, where the window's edge is decided exactly; a real that
    # rounding to the dtype brought within the margin is moved far away instead, so that
    # an "off_grid" position never puts a key on an edge (position_margin says why).
    close = np.abs(p - np.round(p)) < margin
    p = np.where(close & (style == "grid"), np.round(p), p)
    return np.where(close & (style == "off_grid"), -round_to(impl.dtype, far), p)


@st.composite
def _local_case(draw: st.DrawFn, impl: Implementation, spec: Draw) -> Case:
    """A case of ``local_m_distribution`` or ``local_p_distribution``."""
    local_p = impl.function == "local_p_distribution"
    long = _long(draw, spec)
    batch = draw(_batch(long))
    t_q, t_k = draw(_lengths(spec, long))
    minimum = 1 if local_p else 0
    if long:
        d = draw(st.sampled_from((1, 7, 16, 31, 33, 64)))
    else:
        # narrow windows that clip at one end or both, and windows wider than the source
        d = draw(st.one_of(st.integers(minimum, 4), st.integers(max(minimum, t_k - 1), t_k + 2)))
    value_style = draw(st.sampled_from(spec.values))
    # Note: the window alone leaves scores unread, so poison needs no mask; a boolean
    # mask joins it where the implementation takes one.
    boolean = "bool_mask" in impl.features
    emptied = boolean and impl.conventions.fully_masked_row != "unsupported"
    masks: list[MaskStyle] = [
        m
        for m in spec.masks
        if m in ("none", "poison", "nan_poison")
        or (boolean and m == "bool")
        or (emptied and m == "fully_masked")
    ]
    mask_style: MaskStyle = draw(st.sampled_from(masks or ["none"]))
    pattern = draw(st.integers(0, 3))
    position_batch = draw(_broadcast_of(batch))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    scores = round_to(dtype, _scores(rng, (*batch, t_q, t_k), value_style, dtype))
    arrays = {"scores": scores}
    if local_p:
        arrays["positions"] = _positions(rng, (*position_batch, t_q), spec.positions, t_k, d, impl)
    mask = None
    if mask_style != "none" and boolean:
        mask = _step_mask(rng, batch, t_q, t_k, mask_style, pattern)
    case = Case(impl.function, arrays, mask, {"half_width": d})
    if mask_style in ("poison", "nan_poison"):
        from attnref.oracle.expected import step_allowed

        read = step_allowed(case)
        poison = _poison_value(rng, mask_style, dtype)
        arrays["scores"] = np.where(read, scores, poison)
        case = Case(impl.function, arrays, mask, {"half_width": d})
    return case


def _poison_value(rng: np.random.Generator, style: MaskStyle, dtype: str) -> float:
    """What is written at positions that are not read: NaN or an infinity, or huge but finite."""
    if style == "nan_poison":
        return float(rng.choice([np.nan, np.inf, -np.inf]))
    return float(round_to(dtype, np.array(POISON[dtype] * (1 + rng.random()))))


@st.composite
def _distribution_case(draw: st.DrawFn, impl: Implementation, spec: Draw) -> Case:
    """A case of ``attention_distribution`` or ``log_sum_exp``: scores and a boolean or
    additive mask."""
    long = _long(draw, spec)
    batch = draw(_batch(long))
    t_q, t_k = draw(_lengths(spec, long))
    value_style = draw(st.sampled_from(spec.values))
    mask_style = draw(st.sampled_from(_offered_masks(impl, spec.masks)))
    pattern = draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    scores = round_to(dtype, _scores(rng, (*batch, t_q, t_k), value_style, dtype))
    mask: npt.NDArray[Any] | None = None
    if mask_style in ("bool", "fully_masked", "poison", "nan_poison", "additive"):
        mask = _step_mask(rng, batch, t_q, t_k, mask_style, pattern)
    elif mask_style == "key_padding":
        mask = _allowed(rng, (*_padding(batch), 1, t_k), "bool", None)
    if mask is not None and mask_style in ("poison", "nan_poison"):
        scores = np.where(mask, scores, _poison_value(rng, mask_style, dtype))
    if mask is not None and mask_style == "additive":
        bias = rng.standard_normal(mask.shape) * rng.uniform(0.0, 3.0)
        mask = round_to(dtype, np.where(mask, bias, -np.inf))
    return Case(impl.function, {"scores": scores}, mask)


@st.composite
def _value_case(draw: st.DrawFn, impl: Implementation, spec: Draw) -> Case:
    """A case of ``attention_value``: probability rows (some value rows never read) or reals."""
    long = _long(draw, spec)
    batch = draw(_batch(long))
    t_q, t_k = draw(_lengths(spec, long))
    d_v = draw(st.sampled_from(LONG_FEATURES)) if long else draw(st.integers(1, 8))
    value_batch = draw(_broadcast_of(batch))
    value_style = draw(st.sampled_from(spec.values))
    poisoned: list[MaskStyle] = [m for m in spec.masks if m in ("none", "nan_poison")]
    mask_style: MaskStyle = draw(st.sampled_from(poisoned or ["none"]))
    probabilities = draw(st.booleans()) or mask_style != "none"
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    if probabilities:
        logits = rng.standard_normal((*batch, t_q, t_k)) * rng.uniform(0.0, 3.0)
        # columns of zero weight in every row (never the first): value rows nothing reads
        unread = (rng.random(t_k) < 0.3) & (np.arange(t_k) > 0)
        e = np.where(unread, 0.0, np.exp(logits - logits.max(axis=-1, keepdims=True)))
        weights = e / e.sum(axis=-1, keepdims=True)
    else:
        weights = rng.standard_normal((*batch, t_q, t_k))
        unread = np.zeros(t_k, dtype=bool)
    magnitude = 10.0 ** rng.uniform(1.0, 4.0) if value_style == "large_logits" else 1.0
    values = rng.standard_normal((*value_batch, t_k, d_v)) * magnitude
    values = round_to(dtype, values)
    if mask_style == "nan_poison":
        values[..., unread, :] = _poison_value(rng, mask_style, dtype)
    return Case(impl.function, {"weights": round_to(dtype, weights), "values": values})


@st.composite
def _pair_case(draw: st.DrawFn, impl: Implementation, spec: Draw) -> Case:
    """A case of ``concatenate_context`` or ``attentional_hidden_state``."""
    long = _long(draw, spec)
    batch = draw(_batch(long))
    t_q = draw(st.sampled_from(BLOCK_LENGTHS)) if long else draw(st.integers(1, 9))
    d_v, d_q = (
        (draw(st.sampled_from(LONG_FEATURES)), draw(st.sampled_from(LONG_FEATURES)))
        if long
        else (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    )
    query_batch = draw(_broadcast_of(batch))
    value_style = draw(st.sampled_from(spec.values))
    with_bias = draw(st.booleans())
    d_h = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    arrays = {
        "context": round_to(dtype, rng.standard_normal((*batch, t_q, d_v))),
        "query": round_to(dtype, rng.standard_normal((*query_batch, t_q, d_q))),
    }
    if impl.function == "attentional_hidden_state":
        # large weights drive tanh into saturation
        gain = 10.0 ** rng.uniform(0.5, 2.0) if value_style == "large_logits" else 1.0
        n = d_v + d_q
        arrays["W_c"] = round_to(dtype, rng.standard_normal((d_h, n)) * gain / np.sqrt(n))
        if with_bias:
            arrays["b_c"] = round_to(dtype, rng.standard_normal(d_h))
    return Case(impl.function, arrays)


@st.composite
def _output_case(draw: st.DrawFn, impl: Implementation, spec: Draw) -> Case:
    """A case of ``output_distribution``: attentional states and a vocabulary layer."""
    long = _long(draw, spec)
    batch = draw(_batch(long))
    t_q = draw(st.integers(1, 9))
    vocabulary = draw(st.sampled_from(BLOCK_LENGTHS)) if long else draw(st.integers(1, 9))
    d_h = draw(st.sampled_from(LONG_FEATURES)) if long else draw(st.integers(1, 8))
    value_style = draw(st.sampled_from(spec.values))
    with_bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    gain = 1.0
    if value_style == "large_logits":
        gain = 10.0 ** rng.uniform(1.5, np.log10(_MAX_LOGIT[dtype]))
    arrays = {
        "attentional_state": round_to(dtype, np.tanh(rng.standard_normal((*batch, t_q, d_h)))),
        "W_y": round_to(dtype, rng.standard_normal((vocabulary, d_h)) * gain / np.sqrt(d_h)),
    }
    if with_bias:
        arrays["b_y"] = round_to(dtype, rng.standard_normal(vocabulary) * gain)
    return Case(impl.function, arrays)


@st.composite
def _position_case(draw: st.DrawFn, impl: Implementation, spec: Draw) -> Case:
    """A case of ``local_p_position``; large weights saturate the logistic at 0 and S - 1."""
    long = _long(draw, spec)
    batch = draw(_batch(long))
    t_q = draw(st.integers(1, 9))
    source = draw(st.sampled_from(BLOCK_LENGTHS)) if long else draw(st.integers(1, 9))
    d_q, d_p = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    value_style = draw(st.sampled_from(spec.values))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    gain = 10.0 ** rng.uniform(0.5, 2.0) if value_style == "large_logits" else 1.0
    arrays = {
        "query": round_to(dtype, rng.standard_normal((*batch, t_q, d_q))),
        "W_p": round_to(dtype, rng.standard_normal((d_p, d_q)) * gain / np.sqrt(d_q)),
        "v_p": round_to(dtype, rng.standard_normal(d_p) * gain),
    }
    return Case(impl.function, arrays, options={"source_length": source})


_SCORE_PARAMETERS: dict[str, dict[str, tuple[str, ...]]] = {
    # each parameter's shape, by the names of its sizes
    "dot": {},
    "scaled_dot": {},
    "general": {"W_a": ("d_q", "d_k")},
    "concat": {"W_a": ("d_a", "d_q+d_k"), "v_a": ("d_a",)},
    "additive": {"W_q": ("d_a", "d_q"), "W_k": ("d_a", "d_k"), "v_a": ("d_a",)},
    "location": {"W_a": ("Tk", "d_q")},
}


@st.composite
def _score_case(draw: st.DrawFn, impl: Implementation, spec: Draw) -> Case:
    """A case of a score function, batch dimensions broadcast between query and keys."""
    kind = impl.function.removeprefix("score_")
    long = _long(draw, spec)
    batch = draw(_batch(long))
    t_q, t_k = draw(_lengths(spec, long))
    d_q = draw(st.sampled_from(LONG_FEATURES)) if long else draw(st.integers(1, 16))
    d_k = d_q if kind in ("dot", "scaled_dot") else draw(st.integers(1, 8))
    d_a = draw(st.integers(1, 8))
    key_batch = draw(_broadcast_of(batch))
    value_style = draw(st.sampled_from(spec.values))
    scales: list[ScaleStyle] = [
        x for x in spec.scales if x == "default" or "scale" in impl.features
    ]
    scale_style: ScaleStyle = draw(st.sampled_from(scales or ["default"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    magnitude = 1.0
    if value_style == "large_logits":
        magnitude = float(np.sqrt(10.0 ** rng.uniform(1.5, np.log10(_MAX_LOGIT[dtype])) / d_q))
    sizes = {"d_q": d_q, "d_k": d_k, "d_a": d_a, "Tk": t_k, "d_q+d_k": d_q + d_k}
    arrays = {"query": round_to(dtype, rng.standard_normal((*batch, t_q, d_q)) * magnitude)}
    if kind != "location":
        keys = rng.standard_normal((*key_batch, t_k, d_k)) * magnitude
        arrays["keys"] = round_to(dtype, keys)
    for name, dims in _SCORE_PARAMETERS[kind].items():
        shape = tuple(sizes[x] for x in dims)
        arrays[name] = round_to(dtype, rng.standard_normal(shape) / np.sqrt(shape[-1]))
    options: dict[str, object] = {}
    if kind == "scaled_dot" and scale_style != "default":
        options["scale"] = _scale(rng, scale_style, dtype)
    return Case(impl.function, arrays, options=options)


_STEP_CASES: dict[str, Callable[[Implementation, Draw], st.SearchStrategy[Case]]] = {
    "local_m_distribution": _local_case,
    "local_p_distribution": _local_case,
    "local_p_position": _position_case,
    "attention_distribution": _distribution_case,
    "log_sum_exp": _distribution_case,
    "attention_value": _value_case,
    "concatenate_context": _pair_case,
    "attentional_hidden_state": _pair_case,
    "output_distribution": _output_case,
    **{f"score_{kind}": _score_case for kind in _SCORE_PARAMETERS},
}
"""The case strategy of each step function."""
