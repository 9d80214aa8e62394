"""Adapter for ``torch.nn.attention.flex_attention.flex_attention``, checked as the spec's SDPA.

flex_attention takes no mask, causal flag or window. A ``score_mod`` rewrites each
scaled score and a ``mask_mod``, held by a ``BlockMask``, says which keys each query
may attend to; :class:`FlexAttention` writes the spec's options as those two
functions, as a user of flex would, and flex computes the rest:

- ``softcap`` :math:`c` and an additive mask :math:`m` go into the ``score_mod``,
  :math:`c \\tanh(s / c) + m`: the cap before the mask (``sdpa.softcap``); the mask's
  ``-inf`` entries also go into the ``mask_mod``;
- the causal flag, ``window``, ``query_offset``, ``key_lengths`` and a boolean mask
  go into the ``mask_mod``, measured from the key-axis position :math:`i + o` of
  query row :math:`i` (``sdpa.query-offset``), with the offset :math:`o` of the
  declared causal alignment when no ``query_offset`` is given;
- the scale, grouped query heads (``enable_gqa``), a value feature size of its own
  and each row's log-sum-exp (``return_aux=AuxRequest(lse=True)``) are flex's.

flex returns no weights. On the CPU it has no backward pass, eager or compiled
(``NotImplementedError: FlexAttention does not support backward on CPU``), so the
built-in target offers no gradients; :meth:`FlexAttention.vjp` asks flex anyway,
for a device that has one.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn.attention.flex_attention import (
    AuxRequest,
    BlockMask,
    create_block_mask,
    flex_attention,
)

from attnref.oracle.adapters.torch import _changed, _name, _numpy, _own, torch_dtype
from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.protocol import Case, Float64Array, Function, Output, ScoreForm
from attnspec.errors import ArgumentError

__all__ = ["FLEX_FEATURES", "FlexAttention"]

FLEX_FEATURES: frozenset[Feature] = frozenset(
    {
        "scale",
        "bool_mask",
        "additive_mask",
        "causal",
        "causal_with_mask",
        "gqa",
        "distinct_value_dim",
        "softcap",
        "window",
        "query_offset",
        "key_lengths",
        "lse",
    }
)
"""What flex_attention offers through its ``score_mod`` and ``mask_mod`` on the CPU: no
weights, no gradients (no backward pass on the CPU), no sinks."""

ScoreMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Any]
MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Any]

_BLOCK_MASKS: OrderedDict[tuple[object, ...], BlockMask] = OrderedDict()
"""Block masks by the signature of what they allow (:meth:`FlexAttention._block_mask`)."""

_BLOCK_MASKS_KEPT = 512
"""How many block masks the cache keeps, the most recently used."""

# Note: on the CPU flex_attention evaluates the score_mod and the mask_mod under four nested
# vmaps (the mask_mod once more when the block mask is built), and dynamo traces each call
# first, again (about 1 s) for each new mod, Python constant or pattern of sizes of 1. The
# time goes to Python overhead per operation and to those traces, not to arithmetic. So:
# - one score_mod and one mask_mod for every case, with all their data in tensors: skipping
#   them where they have nothing to do saves 1-2 ms a call but gives dynamo more to trace
#   (28 traces instead of 10 in a default run, 43 s instead of 35 s);
# - a captured tensor is read with index_select at a flat index: [] on it costs about 5 ms
#   a read (an index operation under vmap), and torch.take, which vmap runs one element
#   at a time, seconds on [1, 1, 129, 257];
# - a block mask per signature of what its mask_mod reads, built once.


def _read(flat: torch.Tensor, index: torch.Tensor, /) -> torch.Tensor:
    """``flat[index]`` for a one-dimensional ``flat`` and a scalar ``index``, as a mod reads it."""
    return flat.index_select(0, index.reshape(1)).squeeze(0)


def _flat_index(
    heads: torch.Tensor, t_q: torch.Tensor, t_k: torch.Tensor
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The position of ``[b, h, q_idx, kv_idx]`` in a ``[B, H, Tq, Tk]`` array, flattened."""

    def index(
        b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return ((b * heads + h) * t_q + q_idx) * t_k + kv_idx

    return index


def _score_mod(
    cap: torch.Tensor, capped: torch.Tensor, bias: torch.Tensor, heads: int, t_q: int, t_k: int
) -> ScoreMod:
    """``c * tanh(s / c) + m`` (``s + m`` where ``capped`` is false): ``bias`` flattened."""
    index = _flat_index(*(torch.tensor(n, device=bias.device) for n in (heads, t_q, t_k)))

    def score_mod(
        score: torch.Tensor,
        b: torch.Tensor,
        h: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
    ) -> torch.Tensor:
        # the cap applies to the scaled score, before the mask is added (sdpa.softcap)
        score = torch.where(capped, cap * torch.tanh(score / cap), score)
        return score + _read(bias, index(b, h, q_idx, kv_idx))

    return score_mod


@dataclass(frozen=True)
class _Allowed:
    """What the ``mask_mod`` reads: ``[B]`` offsets and lengths, the window's reach on each
    side and the causal reach (0, or past every key), and a flattened boolean mask."""

    offset: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    causal_reach: torch.Tensor
    lengths: torch.Tensor
    given: torch.Tensor
    heads: int
    t_q: int
    t_k: int

    def mask_mod(self) -> MaskMod:
        """The ``mask_mod``: the spec's restrictions, all of them together."""
        offset, left, right, reach = self.offset, self.left, self.right, self.causal_reach
        lengths, given = self.lengths, self.given
        sizes = (self.heads, self.t_q, self.t_k)
        index = _flat_index(*(torch.tensor(n, device=given.device) for n in sizes))

        def mask_mod(
            b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
        ) -> torch.Tensor:
            position = q_idx + _read(offset, b)  # i' = i + o (sdpa.query-offset)
            window = (kv_idx >= position - left) & (kv_idx <= position + right)  # sdpa.window
            causal = kv_idx <= position + reach  # sdpa.causal-top-left, from i'
            valid = kv_idx < _read(lengths, b)  # sdpa.key-lengths
            return window & causal & valid & _read(given, index(b, h, q_idx, kv_idx))

        return mask_mod


def _per_batch(value: object, batch: int, /) -> list[int]:
    """An ``int`` or ``[B]`` integers (a tuple, list or array) as ``B`` ints."""
    if isinstance(value, int | np.integer):
        return [int(value)] * batch
    return [int(x) for x in np.asarray(value).reshape(-1)]


@dataclass(frozen=True)
class FlexAttention:
    """``torch.nn.attention.flex_attention.flex_attention``, checked as the spec's SDPA.

    It takes ``[B, H, T, d]`` arrays only (:meth:`supports`), with the mask
    polarity of the spec; its mask and restrictions are built here, so no
    layout or mask polarity can be declared.

    Attributes
    ----------
    name, dtype, device
        As for :class:`~attnref.oracle.adapters.torch.TorchSDPA`.
    conventions
        What it declares: the spec's zero rows (flex returns a zero context and
        a log-sum-exp of ``-inf`` for a row with no allowed key); its causal
        mask is built here, in the declared alignment. The accumulation is the
        default: flex's eager kernel computes the scores, the softmax and the
        log-sum-exp in float64 for float64 and in float32 otherwise (it rounds
        the weights to the storage dtype before their product with the values).
    features
        The features it offers (:data:`FLEX_FEATURES`).
    attend
        The function called; flex_attention itself, or a wrapper of it with
        the same signature (the test suite plants bugs this way).
    """

    name: str = "torch.flex"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(
        default_factory=lambda: Conventions.declare(
            fully_masked_row="zero", causal_alignment="top_left"
        )
    )
    features: frozenset[Feature] = FLEX_FEATURES
    attend: Callable[..., Any] = flex_attention

    framework = "torch"
    # flex's eager path traces each call with dynamo, again (about 1 s) for each new pattern
    # of sizes (which are 1, which are not) and each new mod: draw few shapes.
    compiles_per_shape = True
    function: Function = "scaled_dot_product_attention"
    score_form: ScoreForm | None = None

    def __post_init__(self) -> None:
        c = self.conventions
        if c.layout != "BHTD" or c.mask_polarity != "attend":
            raise ArgumentError(
                f"{self.name!r} takes [B, H, T, d] and builds its mask_mod from the spec's "
                f"mask; layout and mask_polarity cannot be declared; got layout={c.layout}, "
                f"mask_polarity={c.mask_polarity}"
            )

    def supports(self, case: Case, /) -> bool:
        """Whether flex takes the case: query, key and value ``[B, H, T, d]``, one batch size."""
        shapes = [case.arrays[n].shape for n in case.names if n in case.arrays]
        return len(shapes) == 3 and all(len(s) == 4 and s[0] == shapes[0][0] for s in shapes)

    def _tensor(self, a: Any, /) -> torch.Tensor:
        return _own(a).to(device=self.device, dtype=torch_dtype(self.dtype))

    def _offset(self, case: Case, batch: int, t_q: int, t_k: int) -> list[int]:
        """The key-axis position of query row 0, per batch item (``sdpa.query-offset``)."""
        options = case.options
        if options.get("query_offset") is not None:
            return _per_batch(options["query_offset"], batch)
        if self.conventions.causal_alignment == "top_left":
            return [0] * batch
        lengths = options.get("key_lengths")
        if lengths is not None:  # each item's last query sees its own last valid key
            return [n - t_q for n in _per_batch(lengths, batch)]
        return [t_k - t_q] * batch

    def _allowed(self, case: Case, shape: tuple[int, int, int, int]) -> _Allowed:
        """What the mask_mod reads."""
        batch, heads, t_q, t_k = shape
        options = case.options
        window = options.get("window")
        lengths = options.get("key_lengths")
        offset = self._offset(case, batch, t_q, t_k)
        # Note: a side that is None reaches past every key from every query position.
        unbounded = t_q + t_k + max(abs(o) for o in offset) + 1
        left, right = window if isinstance(window, tuple | list) else (None, None)
        given = np.ones(shape, dtype=bool)
        if case.mask is not None:
            m = np.asarray(case.mask)
            given = np.broadcast_to(m if m.dtype == np.bool_ else m != -np.inf, shape).copy()

        def scalar(n: int | None) -> torch.Tensor:
            return torch.tensor(unbounded if n is None else n, device=self.device)

        return _Allowed(
            offset=torch.tensor(offset, device=self.device),
            left=scalar(left),
            right=scalar(right),
            causal_reach=scalar(0 if case.is_causal else None),
            lengths=torch.tensor(
                [t_k] * batch if lengths is None else _per_batch(lengths, batch),
                device=self.device,
            ),
            given=torch.from_numpy(given.reshape(-1)).to(self.device),
            heads=heads,
            t_q=t_q,
            t_k=t_k,
        )

    def _block_mask(self, case: Case, shape: tuple[int, int, int, int]) -> BlockMask:
        """The block mask of the case's allowed set, built by ``create_block_mask`` once per
        signature of what its mask_mod reads."""
        allowed = self._allowed(case, shape)
        key = (
            self.device,
            shape,
            tuple(
                t.cpu().numpy().tobytes()
                for t in (
                    allowed.offset,
                    allowed.left,
                    allowed.right,
                    allowed.causal_reach,
                    allowed.lengths,
                )
            ),
            np.packbits(allowed.given.cpu().numpy()).tobytes(),
        )
        if key in _BLOCK_MASKS:
            _BLOCK_MASKS.move_to_end(key)
            return _BLOCK_MASKS[key]
        made = create_block_mask(allowed.mask_mod(), *shape, device=self.device)
        _BLOCK_MASKS[key] = made
        if len(_BLOCK_MASKS) > _BLOCK_MASKS_KEPT:
            _BLOCK_MASKS.popitem(last=False)
        return made

    def _score_mod(self, case: Case, shape: tuple[int, int, int, int]) -> ScoreMod:
        """The score_mod of the cap and the additive mask."""
        cap = case.options.get("softcap")
        additive = case.mask is not None and np.asarray(case.mask).dtype != np.bool_
        bias = np.zeros(shape)
        if additive:
            bias = np.broadcast_to(np.asarray(case.mask, dtype=np.float64), shape)
        return _score_mod(
            self._tensor(1.0 if cap is None else cap),
            torch.tensor(cap is not None, device=self.device),
            self._tensor(np.ascontiguousarray(bias).reshape(-1)),
            *shape[1:],
        )

    def _call(
        self, tensors: Sequence[torch.Tensor], case: Case
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """flex's context and log-sum-exp for query, key and value ``tensors``."""
        q, k, v = tensors
        shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        scale = case.options.get("scale")
        with warnings.catch_warnings():
            # its advice to compile, given once per process
            warnings.filterwarnings("ignore", message="flex_attention called without torch")
            out, aux = self.attend(
                q,
                k,
                v,
                score_mod=self._score_mod(case, shape),
                block_mask=self._block_mask(case, shape),
                scale=None if scale is None else float(scale),  # type: ignore[arg-type]
                enable_gqa=bool(case.options.get("enable_gqa")),
                return_aux=AuxRequest(lse=True),
            )
        lse: torch.Tensor = aux.lse
        return out, lse

    def forward(self, case: Case, /) -> Output:
        """Run flex_attention on the case, checking that it leaves its arguments alone."""
        tensors = {n: self._tensor(case.arrays[n]) for n in case.names}
        before = {n: t.clone() for n, t in tensors.items()}
        with torch.no_grad():
            context, lse = self._call(list(tensors.values()), case)
        return Output(
            context=_numpy(context),
            dtype=_name(context.dtype),
            mutated=_changed(tensors, before),
            lse=_numpy(lse),
        )

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients by autograd of ``sum(context * cotangent)``; on the CPU flex raises
        ``NotImplementedError`` (it has no backward pass there)."""
        leaves = [self._tensor(case.arrays[n]).requires_grad_(True) for n in case.names]
        context, _ = self._call([leaf.clone() for leaf in leaves], case)
        c = torch.from_numpy(cotangent).to(self.device)
        torch.autograd.backward((context.to(torch.float64) * c).sum())
        return {
            n: _numpy(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
            for n, leaf in zip(case.names, leaves, strict=True)
        }
