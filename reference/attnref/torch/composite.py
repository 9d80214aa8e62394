"""The composites in PyTorch: seq2seq attention and scaled dot-product attention."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, cast, overload

import torch

from attnref import _checks, masking
from attnref.torch import _inputs
from attnref.torch.distribution import allowed_normalize, pattern
from attnref.torch.scores import (
    score_additive,
    score_concat,
    score_dot,
    score_general,
    score_location,
    score_scaled_dot,
)
from attnref.torch.value import attention_value
from attnspec.typing import CausalAlignment, Scale, ScoreKind, Window

__all__ = ["attention", "scaled_dot_product_attention"]


ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_NO_RESTRICTIONS = _checks.Restrictions()


def _allowed(
    func: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    /,
    *,
    names: tuple[str, str, str],
    is_causal: bool = False,
    alignment: CausalAlignment = "top_left",
    restrict: _checks.Restrictions = _NO_RESTRICTIONS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mask, validated once, the causal flag and the checked structural options, as
    ``(allowed [..., Tq, Tk], bias)``.

    ``bias`` is the additive mask (``None`` for a boolean mask or none); it is
    read only where ``allowed`` is True.
    """
    batch = _checks.broadcast_shapes(
        func,
        (names[0], tuple(q.shape[:-2])),
        (names[1], tuple(k.shape[:-2])),
        (names[2], tuple(v.shape[:-2])),
    )
    target = (*batch, q.shape[-2], k.shape[-2])
    allowed = torch.ones(target, dtype=torch.bool, device=q.device)
    bias = None
    if mask is not None:
        mask_allowed, bias, target = _inputs.mask(func, mask, target)
        allowed = torch.broadcast_to(mask_allowed, target)
    if is_causal or restrict != _NO_RESTRICTIONS:
        # Note: laid out on the sequences' batch shape, as in the reference.
        structural = masking.allowed_positions(
            (*batch, q.shape[-2], k.shape[-2]),
            is_causal=is_causal,
            alignment=alignment,
            window=restrict.window,
            query_offset=restrict.query_offset,
            key_lengths=restrict.key_lengths,
        )
        allowed = allowed & pattern(structural, q)
    return allowed, bias


def _attend(
    func: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    bias: torch.Tensor | None,
    score: ScoreFn,
    /,
    *,
    keys_read: bool,
    names: tuple[str, str, str],
    sink: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores, distribution, attention value and log-sum-exp, reading only the ``allowed``
    positions: ``(context, weights, lse)``.

    ``names`` are the caller's names for query, keys and values (for messages).
    ``q``, ``k`` and ``v`` are checked sequences whose ``Tk`` agree; ``allowed``
    and ``bias`` come from :func:`_allowed`; ``sink`` is a checked sink logit
    per row, ``[..., Tq, 1]``, or ``None``.
    """
    # Note: query rows with no allowed key and keys no query may attend to are
    # not read (input.unread-positions); they are replaced by 0 so that NaN or
    # inf there can reach neither the scores nor, through 0 * NaN, the output,
    # and their gradient is exactly zero (input.unread-gradient).
    q_read = allowed.any(dim=-1)[..., None]  # [..., Tq, 1]
    k_read = allowed.any(dim=-2)[..., None]  # [..., Tk, 1]
    q_full = torch.broadcast_to(q, (*allowed.shape[:-2], *q.shape[-2:]))  # [..., Tq, d_q]
    k_full = torch.broadcast_to(k, (*allowed.shape[:-2], *k.shape[-2:]))  # [..., Tk, d_k]
    _inputs.finite(func, names[0], q_full, where=q_read)
    if keys_read:
        _inputs.finite(func, names[1], k_full, where=k_read)
    scores = score(torch.where(q_read, q_full, 0), torch.where(k_read, k_full, 0))  # [..., Tq, Tk]
    weights, lse = allowed_normalize(func, scores, allowed, bias, sink=sink)  # [..., Tq, Tk]
    context = attention_value(weights, v)  # [..., Tq, d_v]
    return context, weights, lse


def _score_fn(kind: str, params: dict[str, object], /, *, scale: float | None) -> ScoreFn:
    """The score function of ``kind`` with its weight parameters and checked scale bound."""
    # Note: weights are passed on unchecked: the score function rejects a
    # non-tensor weight with its own DTypeError naming the parameter.
    if kind == "dot":
        return score_dot
    if kind == "scaled_dot":
        return lambda q, k: score_scaled_dot(q, k, scale=scale)
    w = {name: cast(torch.Tensor, p) for name, p in params.items()}
    if kind == "location":
        return lambda q, k: score_location(q, w["W_a"])
    if kind == "general":
        return lambda q, k: score_general(q, k, w["W_a"])
    if kind == "concat":
        return lambda q, k: score_concat(q, k, w["W_a"], w["v_a"])
    return lambda q, k: score_additive(q, k, w["W_q"], w["W_k"], w["v_a"])


def attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    /,
    *,
    score: ScoreKind = "dot",
    mask: torch.Tensor | None = None,
    scale: Scale | None = None,
    W_a: torch.Tensor | None = None,
    W_q: torch.Tensor | None = None,
    W_k: torch.Tensor | None = None,
    v_a: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with a choice of score; see :func:`attnspec.attention`."""
    func = "attention"
    given: dict[str, object] = {"scale": scale, "W_a": W_a, "W_q": W_q, "W_k": W_k, "v_a": v_a}
    kind, weights = _checks.score_parameters(func, score, given)
    lam = _checks.scale_value(func, scale)
    bound = {name: given[name] for name in weights}
    q = _inputs.sequence(func, "query", query, "[..., Tq, d_q]")
    k = _inputs.sequence(func, "keys", keys, "[..., Tk, d_k]")
    v = _inputs.sequence(func, "values", values, "[..., Tk, d_v]")
    _checks.nonempty(func, "keys.shape[-2]", k.shape[-2])
    _checks.same_size(func, "values.shape[-2]", v.shape[-2], "keys.shape[-2]", k.shape[-2])
    score_fn = _score_fn(kind, bound, scale=lam)
    allowed, bias = _allowed(func, q, k, v, mask, names=("query", "keys", "values"))
    context, attended, _ = _attend(
        func,
        q,
        k,
        v,
        allowed,
        bias,
        score_fn,
        keys_read=kind != "location",
        names=("query", "keys", "values"),
    )
    return context, attended


@overload
def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    causal_alignment: CausalAlignment = "top_left",
    scale: Scale | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    window: Window | None = None,
    query_offset: int | torch.Tensor | None = None,
    key_lengths: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    return_lse: Literal[False] = False,
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    causal_alignment: CausalAlignment = "top_left",
    scale: Scale | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    window: Window | None = None,
    query_offset: int | torch.Tensor | None = None,
    key_lengths: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    return_lse: Literal[True],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@overload
def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    causal_alignment: CausalAlignment = "top_left",
    scale: Scale | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    window: Window | None = None,
    query_offset: int | torch.Tensor | None = None,
    key_lengths: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    causal_alignment: CausalAlignment = "top_left",
    scale: Scale | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    window: Window | None = None,
    query_offset: int | torch.Tensor | None = None,
    key_lengths: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    return_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention; see :func:`attnspec.scaled_dot_product_attention`."""
    func = "scaled_dot_product_attention"
    causal = _checks.flag(func, "is_causal", is_causal)
    grouped = _checks.flag(func, "enable_gqa", enable_gqa)
    with_lse = _checks.flag(func, "return_lse", return_lse)
    alignment = _checks.choice(
        func, "causal_alignment", causal_alignment, ("top_left", "bottom_right")
    )
    lam = _checks.scale_value(func, scale)
    cap = _checks.softcap_value(func, softcap)
    q = _inputs.sequence(func, "query", query, "[..., Tq, d]")
    k = _inputs.sequence(func, "key", key, "[..., Tk, d]")
    v = _inputs.sequence(func, "value", value, "[..., Tk, d_v]")
    _checks.same_size(func, "key.shape[-1]", k.shape[-1], "query.shape[-1]", q.shape[-1])
    _checks.nonempty(func, "key.shape[-2]", k.shape[-2])
    _checks.same_size(func, "value.shape[-2]", v.shape[-2], "key.shape[-2]", k.shape[-2])
    sink = None
    if sinks is not None:
        sink = _inputs.floating(func, "sinks", sinks)
        _checks.sink_heads(func, _inputs.describe("query", q), _inputs.describe("sinks", sink))
        _inputs.finite(func, "sinks", sink)
        sink = sink[:, None, None]  # [H, 1, 1]: one logit per row of head h
    if grouped:
        infos = (_inputs.describe(n, a) for n, a in (("query", q), ("key", k), ("value", v)))
        group = _checks.query_groups(func, *infos)
        # Note: query head h reads key/value head h // g (sdpa.grouped-query-heads):
        # repeat_interleave repeats each head g times in place, not tiled.
        k = k.repeat_interleave(group, dim=-3)  # [..., Hq, Tk, d]
        v = v.repeat_interleave(group, dim=-3)  # [..., Hq, Tk, d_v]
    batch = _checks.broadcast_shapes(
        func,
        ("query", tuple(q.shape[:-2])),
        ("key", tuple(k.shape[:-2])),
        ("value", tuple(v.shape[:-2])),
    )
    restrict = _checks.restrictions(
        func,
        batch,
        k.shape[-2],
        alignment,
        window=window,
        query_offset=None
        if query_offset is None
        else _inputs.integers("query_offset", query_offset),
        key_lengths=None if key_lengths is None else _inputs.integers("key_lengths", key_lengths),
    )
    allowed, bias = _allowed(
        func,
        q,
        k,
        v,
        mask,
        names=("query", "key", "value"),
        is_causal=causal,
        alignment="bottom_right" if alignment == "bottom_right" else "top_left",
        restrict=restrict,
    )

    def score(qq: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
        s = score_scaled_dot(qq, kk, scale=lam)  # [..., Tq, Tk]
        if cap is None:
            return s
        c = torch.tensor(cap, dtype=s.dtype, device=s.device)
        _checks.representable(
            func, "softcap", cap, str(s.dtype).removeprefix("torch."), bool(torch.isfinite(c))
        )
        # Note: the cap applies to the scaled scores before any mask (sdpa.softcap).
        return c * torch.tanh(s / c)

    context, weights, lse = _attend(
        func,
        q,
        k,
        v,
        allowed,
        bias,
        score,
        keys_read=True,
        names=("query", "key", "value"),
        sink=sink,
    )
    return (context, weights, lse) if with_lse else (context, weights)
