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
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st

from attnref.oracle.protocol import Case, Float64Array, Implementation
from attnref.oracle.rounding import round_to

__all__ = ["CaseSpec", "MaskStyle", "ValueStyle", "cases"]

ValueStyle = Literal["normal", "large_logits", "ties", "near_ties"]
"""How the values of a case are drawn: standard normal; scaled so the scores reach far past
exp()'s overflow; keys (and values) all equal; or equal up to a relative 1e-6."""

MaskStyle = Literal[
    "none", "bool", "additive", "key_padding", "fully_masked", "poison", "nan_poison"
]
"""The mask of a case: none; random boolean (every row keeps a key); additive with -inf;
key padding only; with fully masked rows; or boolean with huge finite (``poison``) or
NaN/inf (``nan_poison``) values written at every position that is not read."""

ScaleStyle = Literal["default", "random", "zero", "negative", "large"]
"""The scale of a case: the default, or an override drawn positive, zero, negative or large."""

_MAX_LOGIT: dict[str, float] = {
    # The largest score magnitude drawn for "large_logits": far past exp()'s
    # overflow threshold (so a softmax without max-shift overflows), yet
    # q . k stays representable in the dtype.
    "float64": 1e150,
    "float32": 1e18,
    "float16": 2e2,
    "bfloat16": 1e18,
}


@dataclass(frozen=True)
class CaseSpec:
    """What kind of cases a check draws."""

    values: tuple[ValueStyle, ...] = ("normal",)
    masks: tuple[MaskStyle, ...] = ("none",)
    scales: tuple[ScaleStyle, ...] = ("default",)
    causal: bool = False
    unequal_lengths: bool = False
    gqa: bool = False
    broadcast_masks: bool = False


@dataclass(frozen=True)
class _Sizes:
    batch: int
    heads_q: int
    heads_k: int
    t_q: int
    t_k: int
    d: int
    d_v: int


# (batch, key heads, groups, Tq, Tk, d, d_v): the few sizes drawn for implementations
# that compile once per shape (see ``compiles_per_shape``). They keep the edge
# cases: one key, one feature, Tq < Tk, Tq > Tk, grouped heads.
_MENU: tuple[tuple[int, int, int, int, int, int, int], ...] = (
    (1, 1, 1, 1, 1, 1, 1),
    (2, 2, 1, 3, 3, 4, 3),
    (1, 1, 1, 3, 6, 8, 5),
    (2, 1, 1, 5, 2, 2, 4),
    (1, 2, 2, 4, 4, 4, 2),
    (1, 1, 3, 2, 5, 16, 8),
)


def _sizes(
    *, gqa: bool, unequal: bool, distinct_value_dim: bool, menu: bool
) -> st.SearchStrategy[_Sizes]:
    @st.composite
    def draw_sizes(draw: st.DrawFn) -> _Sizes:
        if menu:
            fits = [m for m in _MENU if (m[2] > 1) == gqa and (m[3] != m[4]) == unequal]
            choices = fits or [m for m in _MENU if (m[2] > 1) == gqa]
            batch, heads_k, groups, t_q, t_k, d, d_v = draw(st.sampled_from(choices))
            if not unequal:
                t_q = t_k
        else:
            heads_k = draw(st.integers(1, 3))
            groups = draw(st.integers(1, 3)) if gqa else 1
            t_k = draw(st.integers(1, 9))
            t_q = draw(st.integers(1, 9)) if unequal else t_k
            if unequal and t_q == t_k:
                t_q = t_k + 1 if draw(st.booleans()) or t_k == 1 else t_k - 1
            d = draw(st.integers(1, 16))
            d_v = draw(st.integers(1, 8))
            batch = draw(st.integers(1, 2))
        return _Sizes(
            batch=batch,
            heads_q=heads_k * groups,
            heads_k=heads_k,
            t_q=t_q,
            t_k=t_k,
            d=d,
            d_v=d_v if distinct_value_dim else d,
        )

    return draw_sizes()


def _mask_shape(sizes: _Sizes, pattern: int, rank: int) -> tuple[int, ...]:
    """One of the broadcast patterns of a mask over ``[B, H, Tq, Tk]`` (or ``[B, Tq, Tk]``)."""
    b, h, tq, tk = sizes.batch, sizes.heads_q, sizes.t_q, sizes.t_k
    if rank == 3:
        return [(b, tq, tk), (tq, tk), (1, tq, tk), (b, 1, tk)][pattern % 4]
    shapes = [
        (b, h, tq, tk),
        (tq, tk),
        (1, 1, tq, tk),
        (b, 1, tq, tk),
        (1, h, tq, tk),
        (b, 1, 1, tk),
    ]
    return shapes[pattern % len(shapes)]


def _allowed(
    rng: np.random.Generator, shape: tuple[int, ...], style: MaskStyle
) -> npt.NDArray[np.bool_]:
    """A boolean pattern; every row keeps a key unless the style asks for fully masked rows."""
    allowed = rng.random(shape) < rng.uniform(0.3, 0.9)
    if style == "fully_masked":
        rows = rng.random(shape[:-1]) < 0.4
        rows.flat[0] = True
        allowed[rows] = False
        return allowed
    first = rng.integers(0, shape[-1], size=shape[:-1])
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


@st.composite
def _case(draw: st.DrawFn, impl: Implementation, spec: CaseSpec) -> Case:
    sizes = draw(
        _sizes(
            gqa=spec.gqa,
            unequal=spec.unequal_lengths,
            distinct_value_dim="distinct_value_dim" in impl.features,
            menu=bool(getattr(impl, "compiles_per_shape", False)),
        )
    )
    value_style = draw(st.sampled_from(spec.values))
    mask_style = draw(st.sampled_from(spec.masks))
    if mask_style == "fully_masked" and impl.conventions.fully_masked_row == "unsupported":
        mask_style = "bool"  # outside the implementation's declared domain
    scale_style = draw(st.sampled_from(spec.scales))
    if "scale" not in impl.features:
        scale_style = "default"  # the implementation has no scale override
    pattern = draw(st.integers(0, 5)) if spec.broadcast_masks else 0
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = impl.dtype
    seq2seq = impl.function == "attention"
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

    mask: npt.NDArray[Any] | None = None
    if mask_style != "none":
        shape = _mask_shape(sizes, pattern, rank)
        padding_only = "bool_mask" not in impl.features
        if mask_style == "key_padding" or padding_only:
            shape = (sizes.batch, 1, sizes.t_k) if seq2seq else (sizes.batch, 1, 1, sizes.t_k)
        allowed = _allowed(rng, shape, mask_style)
        if mask_style == "additive":
            bias = rng.standard_normal(shape) * rng.uniform(0.0, 3.0)
            mask = round_to(dtype, np.where(allowed, bias, -np.inf))
        else:
            mask = allowed
        if mask_style in ("poison", "nan_poison"):
            if mask_style == "nan_poison":
                poison = float(rng.choice([np.nan, np.inf, -np.inf]))
            else:
                poison = 1e30 * (1 + rng.random())
            q, k, v = _poison(q, k, v, allowed, sizes, poison, seq2seq=seq2seq)

    options: dict[str, object] = {}
    if scale_style != "default":
        options["scale"] = _scale(rng, scale_style, dtype)
    if spec.causal:
        options["is_causal"] = True
    if spec.gqa:
        options["enable_gqa"] = True
    names = ("query", "keys", "values") if seq2seq else ("query", "key", "value")
    arrays = {n: round_to(dtype, a) for n, a in zip(names, (q, k, v), strict=True)}
    if seq2seq:
        arrays.update(_score_parameters(impl, rng, sizes))
        form = impl.score_form
        if form is not None:
            options["score"] = form.kind
    return Case(impl.function, arrays, mask, options)


def _scale(rng: np.random.Generator, style: ScaleStyle, dtype: str) -> float:
    """A scale override; rounded to the dtype so the implementation sees the same number."""
    value = {
        "random": rng.uniform(0.05, 2.0),
        "zero": 0.0,
        "negative": -rng.uniform(0.05, 2.0),
        "large": rng.uniform(10.0, 100.0),
    }[style]
    return float(round_to(dtype, np.array(value)))


def _poison(
    q: Float64Array,
    k: Float64Array,
    v: Float64Array,
    allowed: npt.NDArray[np.bool_],
    sizes: _Sizes,
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
    impl: Implementation, rng: np.random.Generator, sizes: _Sizes
) -> dict[str, Float64Array]:
    """Parameters of the implementation's score form: free ones random, the rest fixed."""
    form = impl.score_form
    if form is None or form.kind in ("dot", "scaled_dot"):
        return {}
    d = sizes.d
    fixed: dict[str, Float64Array] = {
        "W_q": np.eye(d),
        "W_k": np.eye(d),
        "W_a": np.eye(d),
        "v_a": np.ones(d),
    }
    drawn: dict[str, Callable[[], Float64Array]] = {
        "W_q": lambda: rng.standard_normal((d, d)) / np.sqrt(d),
        "W_k": lambda: rng.standard_normal((d, d)) / np.sqrt(d),
        "W_a": lambda: rng.standard_normal((d, d)) / np.sqrt(d),
        "v_a": lambda: rng.standard_normal(d),
    }
    takes = {"general": ("W_a",), "additive": ("W_q", "W_k", "v_a")}
    if form.kind not in takes:
        raise NotImplementedError(f"the oracle draws no parameters for score={form.kind!r} yet")
    return {
        name: round_to(impl.dtype, drawn[name]() if name in form.free else fixed[name])
        for name in takes[form.kind]
    }


def cases(impl: Implementation, spec: CaseSpec, /) -> st.SearchStrategy[Case]:
    """Cases of ``impl``'s function drawn as ``spec`` describes."""
    return _case(impl, spec)
