"""Adapter for the ONNX ``Attention`` operator (opset 24) run by onnxruntime's CPU provider.

Each case becomes a one-node ONNX model, built with ``onnx.helper`` and run
by an ``onnxruntime.InferenceSession`` on ``CPUExecutionProvider``. What
the operator takes, as measured on onnxruntime 1.32 (1.28 is the first release
that behaves so: 1.26 and 1.27 keep the causal flag top-left with a cache and give
a fully masked row uniform weights, or NaN under a ``-inf`` mask):

- ``Q, K, V`` as ``[B, H, T, d]`` (or ``[B, T, H*d]`` with ``q_num_heads`` and
  ``kv_num_heads``, the adapter's ``BTHD`` layout); grouped query heads
  interleaved, from the head counts; values of their own feature size.
- ``scale`` (only greater than 0: the kernel refuses 0 and negative scales),
  ``is_causal``, ``softcap`` (applied before the mask).
- ``attn_mask``, boolean (``True`` = may attend) or added to the scores, whose
  last two axes must be the full ``[Tq, Tk]``.
- ``nonpad_kv_seqlen`` (opset 24): keys ``j >= L_b`` are padding; with
  ``is_causal`` the diagonal moves to ``L_b - Tq`` (bottom-right per batch item).
- output 3 ``qk_matmul_output`` with ``qk_matmul_output_mode=3``: the weights.
- a row with no allowed key gives zero weights and a zero context.

The kernel exists for float32 and float16 only. float64 and bfloat16 models
run ONNX's function body instead (float64 takes ``sqrt(scale)`` in float32;
bfloat16 fails on ``Expand``), which is not the kernel under test, so the
adapter refuses them. Opset 25 (sliding windows) has no kernel in 1.32: it too
would run the function body, so the adapter builds opset 24 and offers no
``window``. onnxruntime is inference only: no gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime  # type: ignore[import-untyped]  # onnxruntime ships no type stubs
from onnx import TensorProto, helper

from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.protocol import Case, Float64Array, Function, Output, ScoreForm
from attnspec.errors import ArgumentError

__all__ = ["DEFAULT_ONNX_FEATURES", "OPSET", "OnnxAttention"]

OPSET = 24
"""The newest opset whose ``Attention`` onnxruntime's CPU provider runs as a kernel."""

DEFAULT_ONNX_FEATURES: frozenset[Feature] = frozenset(
    {
        "scale",
        "bool_mask",
        "additive_mask",
        "causal",
        "causal_with_mask",
        "gqa",
        "weights",
        "distinct_value_dim",
        "softcap",
        "key_lengths",
    }
)
"""What the opset-24 operator takes on onnxruntime's CPU provider (see the module docstring)."""

_ELEMENT_TYPES: Mapping[str, int] = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
"""The dtypes of onnxruntime's CPU ``Attention`` kernel and their ONNX element types."""

_INPUTS = ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")
"""The operator's inputs, in order; an absent optional one is named ``""``."""

_OPTIONS = frozenset({"scale", "is_causal", "enable_gqa", "softcap", "key_lengths"})
"""The spec's keywords the adapter hands over; any other is refused, never dropped."""

_WEIGHTS_MODE = 3
"""``qk_matmul_output_mode`` for output 3 to hold the softmax's result (the weights)."""


@dataclass(frozen=True)
class _Node:
    """What one built session depends on: dtype, attributes and which inputs are given.

    The model declares only the rank of ``Q, K, V``, so one session serves every
    shape; each distinct scale or softcap (attributes) builds one session.
    """

    dtype: str
    rank: int
    mask: str | None  # None, "bool" or the dtype of an additive mask
    mask_rank: int
    key_lengths: bool
    attributes: tuple[tuple[str, float | int], ...]


@functools.lru_cache(maxsize=512)
def _session(node: _Node, /) -> Any:
    """The InferenceSession of the one-node model ``node`` describes (built once)."""
    element = _ELEMENT_TYPES[node.dtype]
    given = {"Q", "K", "V"}
    if node.mask is not None:
        given.add("attn_mask")
    if node.key_lengths:
        given.add("nonpad_kv_seqlen")
    names = [n if n in given else "" for n in _INPUTS]
    while names[-1] == "":
        names.pop()
    mask_type = TensorProto.BOOL if node.mask == "bool" else element
    types = {"attn_mask": mask_type, "nonpad_kv_seqlen": TensorProto.INT64}
    ranks = {"attn_mask": node.mask_rank, "nonpad_kv_seqlen": 1}
    inputs = [
        helper.make_tensor_value_info(n, types.get(n, element), [None] * ranks.get(n, node.rank))
        for n in names
        if n
    ]
    outputs = [
        helper.make_tensor_value_info("Y", element, [None] * node.rank),
        helper.make_tensor_value_info("weights", element, [None] * 4),
    ]
    # Note: the weights are always asked for; Y is bitwise the same with and without
    # output 3 (the kernel writes the softmax's buffer out, it takes no other path).
    attributes: dict[str, Any] = {"qk_matmul_output_mode": _WEIGHTS_MODE, **dict(node.attributes)}
    attention = helper.make_node("Attention", names, ["Y", "", "", "weights"], **attributes)
    graph = helper.make_graph([attention], "attention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    options = onnxruntime.SessionOptions()
    # Note: one thread, so that the pool does not spin on a shared machine; the kernel
    # splits its work over batch and heads, so every row is computed as with more.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # its refusals reach the caller as exceptions
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _same(a: npt.NDArray[Any], b: npt.NDArray[Any], /) -> bool:
    """Whether ``a`` still equals its snapshot ``b``, NaN matching NaN."""
    floating = np.issubdtype(b.dtype, np.inexact)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=floating))


@dataclass(frozen=True)
class OnnxAttention:
    """The ONNX ``Attention`` operator on onnxruntime's CPU provider, checked as the spec's SDPA.

    >>> impl = OnnxAttention()
    >>> impl.dtype, impl.conventions.causal_alignment
    ('float32', 'bottom_right')

    Attributes
    ----------
    name
        Name in reports.
    dtype
        ``float32`` or ``float16``, the kernel's dtypes.
    conventions
        ``causal_alignment`` bottom-right: the operator aligns its causal flag
        at ``nonpad_kv_seqlen[b] - Tq`` with a cache, so a causal case with
        ``Tq != Tk`` is given ``nonpad_kv_seqlen = Tk`` (a cache of ``Tk`` valid
        keys) and one with key lengths their lengths. Declared ``top_left``,
        the flag runs without a cache (offset 0), and causal cases with key
        lengths other than ``Tq`` are outside what the operator can express
        (:meth:`supports`). ``layout="BTHD"`` feeds the operator's 3-D form
        ``[B, T, H*d]``. ``mask_polarity="ignore"`` inverts boolean masks on
        the way in, as for any adapter; it is never the operator's (``True``
        means *may attend*), so declared it fails.
    features
        The features it offers (:data:`DEFAULT_ONNX_FEATURES`).
    """

    name: str = "onnxruntime"
    dtype: str = "float32"
    device: str = "cpu"
    conventions: Conventions = field(
        default_factory=lambda: Conventions.declare(
            causal_alignment="bottom_right", fully_masked_row="zero"
        )
    )
    features: frozenset[Feature] = DEFAULT_ONNX_FEATURES

    framework = "onnxruntime"
    function: Function = "scaled_dot_product_attention"
    score_form: ScoreForm | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _ELEMENT_TYPES:
            raise ArgumentError(
                "dtype must be float32 or float16, the dtypes of onnxruntime's CPU Attention "
                f"kernel (others run ONNX's function body instead); got {self.dtype!r}"
            )
        if self.device != "cpu":
            raise ArgumentError(
                f"device must be 'cpu': the adapter runs CPUExecutionProvider; got {self.device!r}"
            )
        if self.dtype == "float16" and "accumulation" not in self.conventions.declared:
            # Note: the float16 kernel sums its products and takes its softmax in float32,
            # but rounds the scores to float16 after each step (AttentionGemm downcasts
            # Q K^T; the softcap and the mask's addition write float16), a rounding of every
            # score that the float32-accumulation bound does not count: declared float16.
            declared = {n: getattr(self.conventions, n) for n in self.conventions.declared}
            conventions = Conventions.declare(**declared, accumulation="float16")
            object.__setattr__(self, "conventions", conventions)

    def supports(self, case: Case, /) -> bool:
        """Whether the operator can express ``case``: not a top-left causal flag with key
        lengths other than ``Tq``, since its cache moves the diagonal to ``L_b - Tq``."""
        lengths = case.options.get("key_lengths")
        if not case.is_causal or lengths is None:
            return True
        if self.conventions.causal_alignment == "bottom_right":
            return True
        return bool(np.all(np.asarray(lengths) == case.query.shape[-2]))

    def _key_lengths(self, case: Case) -> npt.NDArray[np.int64] | None:
        """``nonpad_kv_seqlen``: the key lengths, or for a bottom-right causal flag with
        ``Tq != Tk`` a cache of ``Tk`` valid keys (the operator's offset ``Tk - Tq``)."""
        lengths = case.options.get("key_lengths")
        if lengths is not None:
            return np.array(lengths, dtype=np.int64)
        b, _, t_q, _ = case.query.shape
        t_k = case.key.shape[-2]
        if case.is_causal and self.conventions.causal_alignment == "bottom_right" and t_q != t_k:
            return np.full(b, t_k, dtype=np.int64)
        return None

    def _mask(self, case: Case) -> npt.NDArray[Any] | None:
        if case.mask is None:
            return None
        mask = np.asarray(case.mask)
        if mask.dtype == np.bool_:
            if self.conventions.mask_polarity == "ignore":
                mask = ~mask
        else:
            mask = mask.astype(self.dtype)
        # Note: the kernel requires the mask's last two axes to be [Tq, Tk] in full and
        # refuses a broadcast query axis ([B, 1, 1, Tk]: "inconsistent q_sequence_length"),
        # which ONNX allows; repeating the mask along them changes no allowed set or bias,
        # so this is a translation: what the operator computes from it is still judged.
        # The leading axes are left as given, for the kernel to broadcast.
        t_q, t_k = case.query.shape[-2], case.key.shape[-2]
        lead = mask.shape[:-2] if mask.ndim > 2 else ()
        return np.ascontiguousarray(np.broadcast_to(mask, (*lead, t_q, t_k)))

    def _attributes(
        self, case: Case, heads: tuple[int, int]
    ) -> tuple[tuple[str, float | int], ...]:
        options = case.options
        attributes: dict[str, float | int] = {}
        if "scale" in options:
            attributes["scale"] = float(options["scale"])  # type: ignore[arg-type]
        if case.is_causal:
            attributes["is_causal"] = 1
        if "softcap" in options:
            attributes["softcap"] = float(options["softcap"])  # type: ignore[arg-type]
        if self.conventions.layout == "BTHD":
            attributes["q_num_heads"], attributes["kv_num_heads"] = heads
        return tuple(sorted(attributes.items()))

    def _tensor(self, a: Float64Array) -> npt.NDArray[Any]:
        """``[B, H, T, d]`` float64 as the operator's input: its dtype, its layout, a copy."""
        x = a.astype(self.dtype)
        if self.conventions.layout == "BTHD":
            b, h, t, d = x.shape
            x = x.transpose(0, 2, 1, 3).reshape(b, t, h * d)  # [B, T, H*d]
        return np.ascontiguousarray(x)

    def forward(self, case: Case, /) -> Output:
        """Run the operator on the case, checking that it leaves its inputs alone."""
        unknown = sorted(set(case.options) - _OPTIONS)
        if unknown:
            raise NotImplementedError(
                f"{self.name} takes no {', '.join(unknown)}: the operator has no such input"
            )
        q, k = case.query, case.key
        heads = (q.shape[-3], k.shape[-3])
        feeds: dict[str, npt.NDArray[Any]] = {
            "Q": self._tensor(q),
            "K": self._tensor(k),
            "V": self._tensor(case.value),
        }
        mask = self._mask(case)
        if mask is not None:
            feeds["attn_mask"] = mask
        lengths = self._key_lengths(case)
        if lengths is not None:
            feeds["nonpad_kv_seqlen"] = lengths
        node = _Node(
            dtype=self.dtype,
            rank=feeds["Q"].ndim,
            mask=None if mask is None else ("bool" if mask.dtype == np.bool_ else self.dtype),
            mask_rank=0 if mask is None else mask.ndim,
            key_lengths=lengths is not None,
            attributes=self._attributes(case, heads),
        )
        before = {n: a.copy() for n, a in feeds.items()}
        context, weights = _session(node).run(["Y", "weights"], feeds)
        names = {"Q": "query", "K": "key", "V": "value", "attn_mask": "mask"}
        mutated = tuple(names.get(n, n) for n, a in feeds.items() if not _same(a, before[n]))
        y = np.asarray(context)
        if self.conventions.layout == "BTHD":
            b, t_q, _ = y.shape
            y = y.reshape(b, t_q, heads[0], -1).transpose(0, 2, 1, 3)  # [B, H, Tq, d_v]
        return Output(
            context=np.array(y, dtype=np.float64),
            weights=np.array(weights, dtype=np.float64),
            dtype=str(y.dtype),
            mutated=mutated,
        )

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """onnxruntime runs inference only: it has no gradients to check."""
        raise NotImplementedError(f"{self.name} runs inference only; do not claim 'gradients'")
