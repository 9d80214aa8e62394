"""A kernel author's module, as the page "Checking a GPU or low-precision kernel" checks it.

``attn`` is correct in every dtype: it computes float16 and bfloat16 inputs in
float32, as PyTorch's kernels and FlashAttention do. ``naive`` computes them in
their own dtype throughout. ``forgets_scale`` has a bug. ``attn_d8`` is
``attn`` for head sizes that are a multiple of 8 only, as many fused kernels.
"""

from __future__ import annotations

import math

import torch

_LOW = (torch.float16, torch.bfloat16)


def _sdpa(q, k, v, mask, scale, is_causal, compute):
    dtype = q.dtype
    q, k, v = q.to(compute), k.to(compute), v.to(compute)
    s = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    allowed = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device)
    if is_causal:
        allowed = torch.tril(allowed)
    if mask is not None:
        allowed = allowed & mask
    s = s.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(s, dim=-1).nan_to_num(0.0)  # a fully masked row gives zeros
    return (weights @ v).to(dtype)


def attn(q, k, v, *, mask=None, scale=None, is_causal=False):
    """Scaled dot-product attention; 16-bit inputs computed in float32."""
    compute = torch.float32 if q.dtype in _LOW else q.dtype
    return _sdpa(q, k, v, mask, scale, is_causal, compute)


def naive(q, k, v, *, mask=None, scale=None, is_causal=False):
    """The same, computed in the inputs' own dtype, softmax and sums included."""
    return _sdpa(q, k, v, mask, scale, is_causal, q.dtype)


def forgets_scale(q, k, v, *, mask=None, scale=None, is_causal=False):
    """A bug: the scale argument is never used."""
    return attn(q, k, v, mask=mask, is_causal=is_causal)


def attn_d8(q, k, v, *, mask=None, scale=None, is_causal=False):
    """``attn`` for head sizes that are a multiple of 8 (like many fused kernels)."""
    if q.shape[-1] % 8:
        raise ValueError(f"head size {q.shape[-1]} is not a multiple of 8")
    return attn(q, k, v, mask=mask, scale=scale, is_causal=is_causal)
