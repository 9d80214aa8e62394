"""Attention kernels written with other sound algorithms, and realistic bugs planted in them.

The oracle is tested in both directions: the kernels of :data:`CORRECT` compute
the spec's SDPA by algorithms other than the reference's (tiled online softmax,
split-K merging, float32 accumulation) and must conform; the kernels of
:data:`BUGS` each carry one bug of a kind real kernels have had and must fail
the clause it breaks.

Every kernel has the oracle's ``TorchSDPA`` form::

    fn(q, k, v, *, mask=None, scale=None, is_causal=False, enable_gqa=False)
        -> (context, weights)

on ``[B, H, T, d]`` tensors. The algorithms:

* :func:`blocked_attention`: FlashAttention-2 (Dao 2023, "FlashAttention-2:
  Faster Attention with Better Parallelism and Work Partitioning", Algorithms 1
  and 2; after Dao et al. 2022, "FlashAttention: Fast and Memory-Efficient
  Exact Attention with IO-Awareness"), whose forward is the online softmax of
  Milakov & Gimelshein 2018 ("Online normalizer calculation for softmax") over
  key tiles, and whose hand-written backward recomputes the weights per tile
  from the saved row log-sum-exp.
* :func:`split_k_attention`: the key axis cut into chunks whose partial
  softmaxes are merged by the log-sum-exp rule (Rabe & Staats 2021,
  "Self-attention Does Not Need O(n^2) Memory", section 2; "flash-decoding").
* :func:`float32_accumulating_attention`: the plain formula with float16 and
  bfloat16 upcast to float32, the recipe of PyTorch's math backend.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, overload

import torch

__all__ = [
    "BUGS",
    "CORRECT",
    "DTYPES",
    "LONG_KEYS",
    "SOUND",
    "AttentionFn",
    "Bug",
    "Flaws",
    "Kernel",
    "blocked",
    "blocked_attention",
    "float32_accumulating_attention",
    "split_k_attention",
]

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
"""The dtype names the oracle draws, all of which every correct kernel accepts."""

_LOW = (torch.float16, torch.bfloat16)

LONG_KEYS = 64
"""Key length above which the tail-block bug's "long sequence" path is taken."""


class AttentionFn(Protocol):
    """The oracle's ``TorchSDPA`` calling convention, returning ``(context, weights)``."""

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        /,
        *,
        mask: torch.Tensor | None = ...,
        scale: float | None = ...,
        is_causal: bool = ...,
        enable_gqa: bool = ...,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Flaws:
    """Switches that plant one bug each; all off is the sound kernel.

    The backward switches act on :func:`blocked_attention`'s hand-written
    backward only, ``merge_without_max`` on :func:`split_k_attention` only;
    the mask and scale switches act wherever the mask and scale are prepared.
    """

    backward_ignores_causal: bool = False
    backward_default_scale: bool = False
    backward_ignores_additive: bool = False
    backward_first_head_of_group: bool = False
    long_tail_dropped: bool = False
    stale_rescale: bool = False
    merge_without_max: bool = False
    mask_head_by_key_head: bool = False
    causal_drops_additive: bool = False
    mask_batch_zero: bool = False
    causal_default_scale: bool = False
    sink_ignored: bool = False
    sink_scaled: bool = False
    sink_detached: bool = False
    lse_without_sink: bool = False
    lse_plus_inf_when_empty: bool = False
    lse_base_two: bool = False


SOUND = Flaws()
"""No planted bug: the sound kernels."""


# --- shared preparation ---------------------------------------------------------------------


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 and bfloat16 compute in float32, as every fast kernel does; others in themselves."""
    return torch.float32 if dtype in _LOW else dtype


def _groups(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, enable_gqa: bool) -> int:
    """How many query heads share one key/value head (1 without grouped heads)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be [B, H, T, d]; got shape {tuple(t.shape)}")
    h_q, h_k = q.shape[1], k.shape[1]
    if enable_gqa and h_q % h_k == 0:
        return h_q // h_k
    if h_q != h_k:
        raise ValueError(f"query heads must equal key heads without enable_gqa; got {h_q}, {h_k}")
    return 1


def _scale(d: int, scale: float | None) -> float:
    return 1 / math.sqrt(d) if scale is None else float(scale)


def _causal(t_q: int, t_k: int, device: torch.device) -> torch.Tensor:
    """``[Tq, Tk]`` top-left causal mask: query i may attend key j iff j <= i."""
    i = torch.arange(t_q, device=device)[:, None]
    j = torch.arange(t_k, device=device)[None, :]
    return j <= i


def _mask_parts(
    mask: torch.Tensor | None,
    shape: tuple[int, int, int, int],
    *,
    dtype: torch.dtype,
    is_causal: bool,
    groups: int,
    flaws: Flaws,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The caller's mask as ``allowed [B, Hq, Tq, Tk]`` and ``bias [B, Hq, Tq, Tk]`` or None.

    The causal mask is not folded in: the tiled kernel derives it per tile from
    the indices, as FlashAttention does. ``bias`` is 0 where not allowed.
    """
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device), None
    if flaws.mask_batch_zero and mask.dim() == 4 and mask.shape[0] > 1:
        # the planted bug: one batch item's mask reused for all
        mask = mask[:1]
    if flaws.mask_head_by_key_head and groups > 1 and mask.dim() >= 3 and mask.shape[-3] > 1:
        # the planted bug: a loop over key heads reads the mask at the key head's index
        heads = torch.arange(mask.shape[-3], device=device) // groups
        mask = mask.index_select(-3, heads)
    if mask.dtype == torch.bool:
        return torch.broadcast_to(mask, shape), None
    # Note: an additive mask is cast to the inputs' dtype before it meets the
    # scores (masks take no part in promotion), so -1e30 disallows in float16.
    bias = torch.broadcast_to(mask.to(dtype), shape)
    allowed = bias != -math.inf
    if flaws.causal_drops_additive and is_causal:
        # the planted bug: the causal path keeps only which positions the mask forbids
        return allowed, None
    return allowed, torch.where(allowed, bias, 0).to(_compute_dtype(dtype))


def _round(x: torch.Tensor, dtype: torch.dtype, enabled: bool) -> torch.Tensor:
    """``x`` rounded to ``dtype`` and back, as FlashAttention feeds P and dS to fp16 matmuls."""
    if enabled and dtype in _LOW:
        return x.to(dtype).to(x.dtype)
    return x


# --- FlashAttention-2 ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tiling:
    """Everything about one call of the tiled kernel that is not a tensor."""

    lam: float
    default_lam: float
    causal: bool
    groups: int
    block_q: int
    block_k: int
    round_p: bool
    dtype: torch.dtype
    flaws: Flaws

    def key_tiles(self, t_k: int) -> list[tuple[int, int]]:
        """``[j0, j1)`` of each key tile; the last may be partial."""
        count = -(-t_k // self.block_k)
        if self.flaws.long_tail_dropped and t_k > LONG_KEYS:
            # the planted bug: the long-sequence path counts only whole tiles
            count = t_k // self.block_k
        return [
            (j, min(j + self.block_k, t_k)) for j in range(0, count * self.block_k, self.block_k)
        ]

    def query_tiles(self, t_q: int) -> list[tuple[int, int]]:
        """``[i0, i1)`` of each query tile; the last may be partial."""
        return [(i, min(i + self.block_q, t_q)) for i in range(0, t_q, self.block_q)]


def _tile_logits(
    q: torch.Tensor,
    k: torch.Tensor,
    allowed: torch.Tensor,
    bias: torch.Tensor | None,
    rows: tuple[int, int],
    cols: tuple[int, int],
    *,
    lam: float,
    causal: bool,
) -> torch.Tensor:
    """``[B, H, bq, bk]`` masked logits of one tile; -inf where not allowed."""
    (i0, i1), (j0, j1) = rows, cols
    s = (q[..., i0:i1, :] * lam) @ k[..., j0:j1, :].transpose(-1, -2)  # [B, H, bq, bk]
    if bias is not None:
        s = s + bias[..., i0:i1, j0:j1]
    ok = allowed[..., i0:i1, j0:j1]
    if causal:
        ok = ok & _causal(i1, j1, q.device)[i0:, j0:]
    return torch.where(ok, s, -math.inf)


def _skipped(rows: tuple[int, int], cols: tuple[int, int], causal: bool) -> bool:
    """Whether a tile lies wholly above the causal diagonal; FA2 never visits those."""
    return causal and cols[0] > rows[1] - 1


class _FlashAttention2(torch.autograd.Function):
    """FA2's tiled forward (Dao 2023, Algorithm 1) and tiled backward (Algorithm 2)."""

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        allowed: torch.Tensor,
        bias: torch.Tensor | None,
        backward_bias: torch.Tensor | None,
        tiling: _Tiling,
        sinks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        compute = _compute_dtype(q.dtype)
        # Note: a sink starts each row's online softmax as a logit already seen
        # (m = sigma, ell = e^0 = 1) that adds nothing to the accumulator.
        sink = None if sinks is None else sinks.to(compute)[None, :, None]  # [1, Hq, 1]
        g = tiling.groups
        qc = q.to(compute)  # [B, Hq, Tq, d]
        kc = k.to(compute).repeat_interleave(g, dim=1)  # [B, Hq, Tk, d]
        vc = v.to(compute).repeat_interleave(g, dim=1)  # [B, Hq, Tk, dv]
        t_q, t_k = qc.shape[-2], kc.shape[-2]
        full = allowed & _causal(t_q, t_k, q.device) if tiling.causal else allowed
        # Note: query rows and keys that nothing reads are zeroed first, so NaN
        # or inf there (input.unread-positions) reaches neither the scores nor,
        # through 0 * NaN, the context or the gradients.
        qc = torch.where(full.any(-1)[..., None], qc, 0)
        key_read = full.any(-2)[..., None]  # [B, Hq, Tk, 1]
        kc = torch.where(key_read, kc, 0)
        vc = torch.where(key_read, vc, 0)
        out = torch.zeros((*qc.shape[:-1], vc.shape[-1]), dtype=compute, device=q.device)
        lse = torch.empty(qc.shape[:-1], dtype=compute, device=q.device)  # [B, Hq, Tq]
        for rows in tiling.query_tiles(t_q):
            i0, i1 = rows
            m = torch.full((*qc.shape[:2], i1 - i0), -math.inf, dtype=compute, device=q.device)
            ell = torch.zeros_like(m)
            if sink is not None:
                m, ell = torch.broadcast_to(sink, m.shape).clone(), torch.ones_like(m)
            acc = torch.zeros_like(out[..., i0:i1, :])  # [B, Hq, bq, dv]
            for cols in tiling.key_tiles(t_k):
                if _skipped(rows, cols, tiling.causal):
                    continue
                s = _tile_logits(
                    qc, kc, allowed, bias, rows, cols, lam=tiling.lam, causal=tiling.causal
                )
                m_new = torch.maximum(m, s.amax(-1))
                # Note: a row with nothing allowed so far has max -inf; shifting
                # by 0 instead keeps exp(-inf - -inf) = NaN out of p and alpha.
                shift = torch.where(m_new == -math.inf, 0, m_new)
                p = torch.exp(s - shift[..., None])  # [B, Hq, bq, bk]
                alpha = torch.exp(m - shift)  # [B, Hq, bq]
                ell = alpha * ell + p.sum(-1)
                pv = _round(p, q.dtype, tiling.round_p) @ vc[..., cols[0] : cols[1], :]
                # with stale_rescale (the planted bug) old terms keep the old max's scale
                rescale = torch.ones_like(alpha) if tiling.flaws.stale_rescale else alpha
                acc = rescale[..., None] * acc + pv
                m = m_new
            read = ell > 0  # the row's max adds exp(0) = 1, so ell > 0 iff a key is allowed
            out[..., i0:i1, :] = torch.where(
                read[..., None], acc / torch.where(read, ell, 1)[..., None], 0
            )
            # Note: a row with no allowed key stores lse = +inf, so that the
            # recomputed weights exp(s - lse) are 0 there in the backward.
            lse[..., i0:i1] = torch.where(read, m + torch.log(torch.where(read, ell, 1)), math.inf)
        context = out.to(q.dtype)
        ctx.save_for_backward(qc, kc, vc, context, lse, allowed, backward_bias, sink)
        ctx.tiling = tiling
        ctx.dtypes = (q.dtype, k.dtype, v.dtype)
        ctx.mark_non_differentiable(lse)
        return context, lse

    @staticmethod
    def backward(
        ctx: Any, grad_context: torch.Tensor, grad_lse: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        qc, kc, vc, context, lse, allowed, bias, sink = ctx.saved_tensors
        tiling: _Tiling = ctx.tiling
        flaws = tiling.flaws
        dtype = ctx.dtypes[0]
        lam = tiling.default_lam if flaws.backward_default_scale else tiling.lam
        causal = tiling.causal and not flaws.backward_ignores_causal
        d_out = grad_context.to(qc.dtype)  # [B, Hq, Tq, dv]
        # D_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij (Dao 2023, Algorithm 2)
        D = (d_out * context.to(qc.dtype)).sum(-1)  # [B, Hq, Tq]
        dq = torch.zeros_like(qc)
        dk = torch.zeros_like(kc)
        dv = torch.zeros_like(vc)
        t_q, t_k = qc.shape[-2], kc.shape[-2]
        for cols in tiling.key_tiles(t_k):
            j0, j1 = cols
            for rows in tiling.query_tiles(t_q):
                if _skipped(rows, cols, causal):
                    continue
                i0, i1 = rows
                s = _tile_logits(qc, kc, allowed, bias, rows, cols, lam=lam, causal=causal)
                p = torch.exp(s - lse[..., i0:i1, None])  # [B, Hq, bq, bk]
                do = d_out[..., i0:i1, :]
                dv[..., j0:j1, :] += _round(p, dtype, tiling.round_p).transpose(-1, -2) @ do
                dp = do @ vc[..., j0:j1, :].transpose(-1, -2)  # [B, Hq, bq, bk]
                ds = _round(p * (dp - D[..., i0:i1, None]), dtype, tiling.round_p)
                dq[..., i0:i1, :] += (ds @ kc[..., j0:j1, :]) * lam
                dk[..., j0:j1, :] += (ds.transpose(-1, -2) @ qc[..., i0:i1, :]) * lam
        b, h_q = kc.shape[:2]
        g = tiling.groups
        if flaws.backward_first_head_of_group:
            # the planted bug: each key head gets only its group's first query head's gradient
            dk, dv = dk[:, ::g], dv[:, ::g]
        else:
            # each key/value head served the g query heads of its group
            dk = dk.view(b, h_q // g, g, t_k, -1).sum(2)
            dv = dv.view(b, h_q // g, g, t_k, -1).sum(2)
        q_dtype, k_dtype, v_dtype = ctx.dtypes
        d_sinks = None
        if sink is not None:
            # the sink is one more logit whose weight beta = e^(sigma - L) reads no value:
            # its dS is beta (0 - D), summed over the rows of its head
            d_sinks = (-(torch.exp(sink - lse) * D).sum((0, 2))).to(q_dtype)
        return dq.to(q_dtype), dk.to(k_dtype), dv.to(v_dtype), None, None, None, None, d_sinks


def _weights(
    qc: torch.Tensor,
    kc: torch.Tensor,
    allowed: torch.Tensor,
    bias: torch.Tensor | None,
    lse: torch.Tensor,
    tiling: _Tiling,
) -> torch.Tensor:
    """``[B, Hq, Tq, Tk]`` weights as the kernel has them: exp(s - lse), tile by tile."""
    t_q, t_k = qc.shape[-2], kc.shape[-2]
    w = torch.zeros((*qc.shape[:-1], t_k), dtype=qc.dtype, device=qc.device)
    for rows in tiling.query_tiles(t_q):
        for cols in tiling.key_tiles(t_k):
            if _skipped(rows, cols, tiling.causal):
                continue
            s = _tile_logits(
                qc, kc, allowed, bias, rows, cols, lam=tiling.lam, causal=tiling.causal
            )
            (i0, i1), (j0, j1) = rows, cols
            w[..., i0:i1, j0:j1] = torch.exp(s - lse[..., i0:i1, None])
    return w.to(tiling.dtype)


@overload
def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
    block_q: int = 32,
    block_k: int = 32,
    store_p_in_input_dtype: bool = True,
    flaws: Flaws = SOUND,
    sinks: torch.Tensor | None = None,
    return_lse: Literal[False] = False,
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
    block_q: int = 32,
    block_k: int = 32,
    store_p_in_input_dtype: bool = True,
    flaws: Flaws = SOUND,
    sinks: torch.Tensor | None = None,
    return_lse: Literal[True],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@overload
def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
    block_q: int = 32,
    block_k: int = 32,
    store_p_in_input_dtype: bool = True,
    flaws: Flaws = SOUND,
    sinks: torch.Tensor | None = None,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
    block_q: int = 32,
    block_k: int = 32,
    store_p_in_input_dtype: bool = True,
    flaws: Flaws = SOUND,
    sinks: torch.Tensor | None = None,
    return_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashAttention-2 (Dao 2023) in plain PyTorch: tiled forward and hand-written backward.

    For each query tile and each key tile it keeps the running row max
    :math:`m`, the running sum :math:`\\ell` and the unnormalised accumulator
    :math:`\\tilde O`, updated by the online softmax (Milakov & Gimelshein 2018)

    .. math::

        m' = \\max(m, \\max_j S_{ij}), \\quad
        \\ell' = e^{m - m'} \\ell + \\sum_j e^{S_{ij} - m'}, \\quad
        \\tilde O' = e^{m - m'} \\tilde O + e^{S - m'} V_j,

    divides once at the end, :math:`O = \\tilde O / \\ell`, and saves
    :math:`L = m + \\log \\ell`. The backward (Dao 2023, Algorithm 2) recomputes
    :math:`P = e^{S - L}` per tile, with :math:`D = \\mathrm{rowsum}(dO \\circ O)`,
    :math:`dV \\mathrel{+}= P^T dO`, :math:`dS = P \\circ (dO V^T - D)`,
    :math:`dQ \\mathrel{+}= \\lambda\\, dS K`, :math:`dK \\mathrel{+}= \\lambda\\, dS^T Q`,
    and sums :math:`dK`, :math:`dV` over the query heads of each group.

    float16 and bfloat16 are upcast per tile and accumulate in float32; with
    ``store_p_in_input_dtype`` the probabilities ``P`` (and ``dS``) are
    rounded to the input dtype before their matmul, as FlashAttention does.
    The weights returned are ``exp(S - L)``, recomputed tile by tile as the
    kernel has them; they are not differentiable, only the context is.

    ``sinks`` (``[Hq]``) start each row's online softmax at :math:`m = \\sigma_h`,
    :math:`\\ell = 1` with nothing accumulated, so :math:`L` includes them; their
    gradient is :math:`-\\sum_i e^{\\sigma_h - L_i} D_i`. With ``return_lse`` the
    result is ``(context, weights, L)``, where a row with no key and no sink has
    :math:`L = -\\infty` (FlashAttention stores :math:`+\\infty` there for its own
    backward; this kernel converts it to the spec's value).
    """
    groups = _groups(q, k, v, enable_gqa=enable_gqa)
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    d = q.shape[-1]
    lam = _scale(d, scale)
    if flaws.causal_default_scale and is_causal:
        lam = _scale(d, None)  # the planted bug: the causal path ignores the override
    allowed, bias = _mask_parts(
        mask,
        shape,
        dtype=q.dtype,
        is_causal=is_causal,
        groups=groups,
        flaws=flaws,
        device=q.device,
    )
    tiling = _Tiling(
        lam=lam,
        default_lam=_scale(d, None),
        causal=is_causal,
        groups=groups,
        block_q=block_q,
        block_k=block_k,
        round_p=store_p_in_input_dtype,
        dtype=q.dtype,
        flaws=flaws,
    )
    backward_bias = None if flaws.backward_ignores_additive else bias
    sink = sinks
    if sink is not None and flaws.sink_scaled:
        sink = sink * lam  # the planted bug: the sink is scaled like a score
    if sink is not None and flaws.sink_detached:
        sink = sink.detach()  # the planted bug: no gradient reaches the sinks
    if flaws.sink_ignored:
        sink = None  # the planted bug: the keyword is accepted and dropped
    context, lse = _FlashAttention2.apply(  # type: ignore[no-untyped-call]
        q, k, v, allowed, bias, backward_bias, tiling, sink
    )
    with torch.no_grad():
        compute = _compute_dtype(q.dtype)
        qc = q.to(compute)
        kc = k.to(compute).repeat_interleave(groups, dim=1)
        weights = _weights(qc, kc, allowed, bias, lse, tiling)
        if not return_lse:
            return context, weights
        spec_lse = lse
        if flaws.lse_without_sink and sink is not None:
            # the planted bug: the sink's term taken back out of the returned normalizer
            spec_lse = lse + torch.log(-torch.expm1(sink.to(lse.dtype)[None, :, None] - lse))
        if not flaws.lse_plus_inf_when_empty:
            spec_lse = torch.where(spec_lse == math.inf, -math.inf, spec_lse)
        if flaws.lse_base_two:
            spec_lse = spec_lse / math.log(2)  # the planted bug: log2, as the kernel's exp2
    return context, weights, spec_lse


def blocked(tile: int, *, store_p_in_input_dtype: bool = True, flaws: Flaws = SOUND) -> AttentionFn:
    """:func:`blocked_attention` with square ``tile`` x ``tile`` blocks."""
    return functools.partial(
        blocked_attention,
        block_q=tile,
        block_k=tile,
        store_p_in_input_dtype=store_p_in_input_dtype,
        flaws=flaws,
    )


# --- split-K and float32 accumulation ------------------------------------------------------


def _dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None,
    is_causal: bool,
    enable_gqa: bool,
    flaws: Flaws,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upcast, grouped, read-sanitised values and the masked logits ``[B, Hq, Tq, Tk]``.

    Differentiable by autograd in ``q``, ``k`` and ``v``; -inf where not allowed.
    """
    groups = _groups(q, k, v, enable_gqa=enable_gqa)
    compute = _compute_dtype(q.dtype)
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    lam = _scale(q.shape[-1], scale)
    if flaws.causal_default_scale and is_causal:
        lam = _scale(q.shape[-1], None)
    allowed, bias = _mask_parts(
        mask,
        shape,
        dtype=q.dtype,
        is_causal=is_causal,
        groups=groups,
        flaws=flaws,
        device=q.device,
    )
    if is_causal:
        allowed = allowed & _causal(shape[2], shape[3], q.device)
    # Note: as in the tiled kernel, what nothing reads is zeroed before use, and
    # through torch.where its gradient is exactly zero.
    qc = torch.where(allowed.any(-1)[..., None], q.to(compute), 0)  # [B, Hq, Tq, d]
    key_read = allowed.any(-2)[..., None]  # [B, Hq, Tk, 1]
    kc = torch.where(key_read, k.to(compute).repeat_interleave(groups, dim=1), 0)
    vc = torch.where(key_read, v.to(compute).repeat_interleave(groups, dim=1), 0)
    s = (qc * lam) @ kc.transpose(-1, -2)  # [B, Hq, Tq, Tk]
    if bias is not None:
        s = s + bias
    return vc, torch.where(allowed, s, -math.inf)


def _finite_max(s: torch.Tensor) -> torch.Tensor:
    """Detached row max of ``s [..., T]``, 0 where the row is all -inf.

    The softmax does not depend on the shift, so it is a constant for autograd.
    """
    m = s.detach().amax(-1)
    return torch.where(m == -math.inf, 0, m)


def split_k_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
    splits: int = 4,
    flaws: Flaws = SOUND,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-K ("flash-decoding") attention: partial softmaxes over key chunks, merged exactly.

    Chunk :math:`c` of the key axis gives its max :math:`m_c`, sum
    :math:`\\ell_c = \\sum_{j \\in c} e^{S_j - m_c}` and unnormalised output
    :math:`o_c = \\sum_{j \\in c} e^{S_j - m_c} V_j`; with :math:`M = \\max_c m_c`
    the merge is :math:`O = \\sum_c e^{m_c - M} o_c / \\sum_c e^{m_c - M} \\ell_c`
    (the log-sum-exp rule; Rabe & Staats 2021, section 2). Autograd
    differentiates it; float16 and bfloat16 compute in float32.
    """
    vc, s = _dense(q, k, v, mask, scale, is_causal, enable_gqa, flaws)
    t_k = s.shape[-1]
    size = -(-t_k // splits)
    chunks = [(j, min(j + size, t_k)) for j in range(0, t_k, size)]
    maxima = torch.stack([_finite_max(s[..., j0:j1]) for j0, j1 in chunks])  # [C, B, H, Tq]
    # Note: an empty chunk (every key masked) must not set the shared shift: its
    # stand-in max 0 could exceed every real one and underflow their factors to 0.
    empty = torch.stack([s[..., j0:j1].detach().amax(-1) == -math.inf for j0, j1 in chunks])
    exps = [
        torch.exp(s[..., j0:j1] - m[..., None]) for (j0, j1), m in zip(chunks, maxima, strict=True)
    ]
    sums = torch.stack([e.sum(-1) for e in exps])  # [C, B, H, Tq]
    outs = torch.stack([e @ vc[..., j0:j1, :] for (j0, j1), e in zip(chunks, exps, strict=True)])
    if flaws.merge_without_max:
        factor = torch.ones_like(maxima)  # the planted bug: partials on different shifts added
    else:
        # Note: a chunk with no allowed key has l_c = 0 and o_c = 0, whatever its factor.
        shared = torch.where(empty, -math.inf, maxima).amax(0)  # [B, H, Tq]
        shared = torch.where(shared == -math.inf, 0, shared)
        factor = torch.where(empty, 0, torch.exp(maxima - shared))  # [C, B, H, Tq]
    total = (factor * sums).sum(0)  # [B, H, Tq]
    read = total > 0
    safe = torch.where(read, total, 1)[..., None]
    context = torch.where(read[..., None], (factor[..., None] * outs).sum(0) / safe, 0)
    weights = torch.cat([e * f[..., None] for e, f in zip(exps, factor, strict=True)], -1) / safe
    return context.to(q.dtype), weights.detach().to(q.dtype)


def float32_accumulating_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    /,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain formula, float16 and bfloat16 computed in float32 (PyTorch's math backend).

    Scores, softmax and the weighted sum are all computed in float32 and only
    the context and weights are cast back; float32 and float64 compute in
    themselves.
    """
    vc, s = _dense(q, k, v, mask, scale, is_causal, enable_gqa, SOUND)
    row_read = (s != -math.inf).any(-1, keepdim=True)  # [B, H, Tq, 1]
    # Note: a row with nothing allowed is softmaxed as zeros and then zeroed:
    # softmax of all -inf is NaN, which torch.where would pass to the gradient.
    w = torch.softmax(torch.where(row_read, s, 0), dim=-1)
    w = torch.where(row_read, w, 0)
    return (w @ vc).to(q.dtype), w.to(q.dtype)


# --- the tables -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """A correct kernel and the dtype names it accepts."""

    fn: AttentionFn
    dtypes: tuple[str, ...] = DTYPES


@dataclass(frozen=True)
class Bug:
    """A kernel with one planted bug, the clause it breaks and when it shows.

    ``plain_agrees`` says that it agrees with the spec on a plain small case
    (Tk <= 9, default scale, no mask, not causal, no grouped heads).
    """

    fn: AttentionFn
    clause: str
    trigger: str
    plain_agrees: bool = True


CORRECT: dict[str, Kernel] = {
    "blocked-16": Kernel(blocked(16)),
    "blocked-32": Kernel(blocked(32)),
    "blocked-64": Kernel(blocked(64)),
    "blocked-32-unrounded-p": Kernel(blocked(32, store_p_in_input_dtype=False)),
    "split-k-2": Kernel(functools.partial(split_k_attention, splits=2)),
    "split-k-4": Kernel(functools.partial(split_k_attention, splits=4)),
    "float32-accumulating": Kernel(float32_accumulating_attention),
}
"""Sound kernels written with algorithms other than the reference's."""


def _flawed(**switch: bool) -> AttentionFn:
    return blocked(32, flaws=Flaws(**switch))


BUGS: dict[str, Bug] = {
    "backward forgets the causal mask": Bug(
        _flawed(backward_ignores_causal=True),
        "input.gradient",
        "The gradient is wrong when is_causal is set and some query has a key after it "
        "(Tq >= 2); the forward is right.",
    ),
    "backward uses the default scale": Bug(
        _flawed(backward_default_scale=True),
        "input.gradient",
        "The gradient is wrong when a scale other than 1/sqrt(d) is passed; the forward is right.",
    ),
    "backward forgets the additive mask": Bug(
        _flawed(backward_ignores_additive=True),
        "input.gradient",
        "The gradient is wrong for an additive mask with finite nonzero entries; "
        "the forward is right.",
    ),
    "backward takes one query head per group": Bug(
        _flawed(backward_first_head_of_group=True),
        "input.gradient",
        "The key and value gradients are wrong with enable_gqa and more than one query head "
        "per key head; the forward is right.",
    ),
    "long sequences drop the partial last key tile": Bug(
        _flawed(long_tail_dropped=True),
        "sdpa.formula",
        f"The result is wrong when Tk > {LONG_KEYS} is not a multiple of the 32-key tile.",
    ),
    "online softmax accumulator not rescaled": Bug(
        _flawed(stale_rescale=True),
        "sdpa.formula",
        "The context is wrong when a row's max grows in a later key tile (Tk > 32).",
    ),
    "split-K partials merged without the max correction": Bug(
        functools.partial(split_k_attention, splits=4, flaws=Flaws(merge_without_max=True)),
        "sdpa.formula",
        "The result is wrong whenever the keys fall in two or more chunks whose maxima differ "
        "(Tk >= 2, even for one query and no mask).",
        plain_agrees=False,
    ),
    "mask head axis indexed by the key head": Bug(
        _flawed(mask_head_by_key_head=True),
        "sdpa.grouped-query-heads",
        "The result is wrong with enable_gqa, two or more query heads per key head and a mask "
        "with a head axis of size Hq.",
    ),
    "additive mask dropped on the causal path": Bug(
        _flawed(causal_drops_additive=True),
        "sdpa.causal-with-mask",
        "The result is wrong when is_causal is set together with an additive mask with finite "
        "nonzero entries.",
    ),
    "batch item 0's mask used for every item": Bug(
        _flawed(mask_batch_zero=True),
        "input.batch-broadcast",
        "The result is wrong for a mask whose batch axis has size B > 1.",
    ),
    "scale override ignored on the causal path": Bug(
        _flawed(causal_default_scale=True),
        "sdpa.causal-top-left",
        "The result is wrong when is_causal is set and a scale other than 1/sqrt(d) is passed.",
    ),
}
"""One kernel per realistic bug class, keyed by what the bug is."""
