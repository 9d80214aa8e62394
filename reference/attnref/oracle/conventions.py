"""Conventions an implementation may declare, and the features it offers.

Established libraries differ in a few legitimate choices (fully masked rows,
causal alignment, mask polarity, layout; the docs' conventions page lists who
chooses what). An
implementation declares its choices; the oracle translates its inputs to
them, checks that the implementation follows what it declares, and judges
everything else by the spec. An undeclared choice means the spec's default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from attnspec.errors import ArgumentError
from attnspec.typing import CausalAlignment

__all__ = [
    "DECLARABLE",
    "FEATURES",
    "Accumulation",
    "Conventions",
    "Feature",
    "FullyMaskedRow",
    "Layout",
    "MaskPolarity",
    "parse_declarations",
]

FullyMaskedRow = Literal["zero", "uniform", "nan", "raises", "unsupported"]
"""What a row with no allowed key gives: the spec's zero weights and context
(PyTorch SDPA, ONNX); uniform weights over every key, i.e. the mean of the
values (JAX, onnxruntime CUDA); NaN (``nn.MultiheadAttention`` and many
ports); an exception; or ``unsupported``: the implementation documents that
every row must keep a key (Keras), so the oracle draws no fully masked rows
and reports the clause as skipped."""

MaskPolarity = Literal["attend", "ignore"]
"""Meaning of ``True`` in a boolean mask: *may attend* (the spec, SDPA, JAX)
or *ignore this key* (``nn.MultiheadAttention``'s ``key_padding_mask``)."""

Layout = Literal["BHTD", "BTHD"]
"""Axis order of query/key/value: ``[B, H, T, d]`` (the spec, PyTorch, ONNX) or
``[B, T, H, d]`` (JAX)."""

Accumulation = Literal["float64", "float32", "float16", "bfloat16", "storage"]
"""The dtype an implementation accumulates its sums and computes its softmax in;
``storage``: whatever dtype it is given (a naive evaluation, such as the reference's
twin, which computes float16 inputs in float16)."""

Feature = Literal[
    "scale",
    "bool_mask",
    "key_padding_mask",
    "additive_mask",
    "causal",
    "causal_with_mask",
    "gqa",
    "weights",
    "gradients",
    "distinct_value_dim",
    "softcap",
    "window",
    "query_offset",
    "key_lengths",
    "sinks",
    "lse",
]
"""Optional capabilities: a scale override; boolean masks of any broadcastable
shape; key-padding masks only (``[B, Tk]``); additive masks; a causal flag;
the causal flag and a mask together; grouped query heads; returning the
weights; gradients by the implementation's own autodiff; values whose
feature size differs from the keys'; and the restrictions of current kernels,
taken as the spec's keywords ``softcap``, ``window``, ``query_offset`` and
``key_lengths`` (``sdpa.softcap``, ``sdpa.window``, ``sdpa.query-offset``,
``sdpa.key-lengths``); per-head sink logits, the keyword ``sinks``
(``sdpa.sinks``); and returning each row's log-sum-exp beside the context
(``sdpa.log-sum-exp``)."""


FEATURES: tuple[Feature, ...] = get_args(Feature)
"""Every :data:`Feature`, in the order of its definition."""

RESTRICTIONS: frozenset[Feature] = frozenset({"softcap", "window", "query_offset", "key_lengths"})
"""The keywords of the spec's SDPA beyond the classic ones that restrict or reshape the scores."""


@dataclass(frozen=True)
class Conventions:
    """The legitimate choices an implementation declares.

    Attributes
    ----------
    fully_masked_row
        See :data:`FullyMaskedRow`; the spec's default is ``"zero"``.
    causal_alignment
        Alignment of the implementation's causal flag when ``Tq != Tk``.
    mask_polarity
        See :data:`MaskPolarity`; the spec's default is ``"attend"``.
    layout
        See :data:`Layout`; the spec's default is ``"BHTD"``.
    accumulation
        The dtype its sums and softmax are computed in, or ``None`` for the
        default: float32 for float16 and bfloat16 storage (PyTorch's math and
        fused kernels, FlashAttention, JAX's softmax), the storage dtype
        itself otherwise. Declare ``"bfloat16"`` for a kernel that really
        accumulates in bfloat16 to be judged at that (much lower) precision.
    declared
        Names of the fields the implementation declared explicitly; the
        report lists them, the rest are the spec's defaults.
    """

    fully_masked_row: FullyMaskedRow = "zero"
    causal_alignment: CausalAlignment = "top_left"
    mask_polarity: MaskPolarity = "attend"
    layout: Layout = "BHTD"
    accumulation: Accumulation | None = None
    declared: frozenset[str] = field(default=frozenset(), compare=False)

    @classmethod
    def declare(
        cls,
        *,
        fully_masked_row: FullyMaskedRow | None = None,
        causal_alignment: CausalAlignment | None = None,
        mask_polarity: MaskPolarity | None = None,
        layout: Layout | None = None,
        accumulation: Accumulation | None = None,
    ) -> Conventions:
        """Conventions with the given fields declared and the rest left at the spec default.

        >>> Conventions.declare(layout="BTHD").describe().split("; ")[-1]
        'layout=BTHD (declared)'
        """
        given = {
            "fully_masked_row": (fully_masked_row, get_args(FullyMaskedRow)),
            "causal_alignment": (causal_alignment, get_args(CausalAlignment)),
            "mask_polarity": (mask_polarity, get_args(MaskPolarity)),
            "layout": (layout, get_args(Layout)),
            "accumulation": (accumulation, get_args(Accumulation)),
        }
        for name, (value, options) in given.items():
            if value is not None and value not in options:
                listed = ", ".join(repr(o) for o in options)
                raise ArgumentError(f"{name} must be one of {listed}; got {value!r}")
        return cls(
            fully_masked_row=fully_masked_row or "zero",
            causal_alignment=causal_alignment or "top_left",
            mask_polarity=mask_polarity or "attend",
            layout=layout or "BHTD",
            accumulation=accumulation,
            declared=frozenset(name for name, (value, _) in given.items() if value is not None),
        )

    def describe(self) -> str:
        """One line: every convention, marking the declared ones."""
        parts = []
        for name in ("fully_masked_row", "causal_alignment", "mask_polarity", "layout"):
            mark = " (declared)" if name in self.declared else ""
            parts.append(f"{name}={getattr(self, name)}{mark}")
        if self.accumulation is not None:
            parts.append(f"accumulation={self.accumulation} (declared)")
        return "; ".join(parts)

    def accumulates_in(self, storage: str, /) -> str:
        """The accumulation dtype for ``storage``: the declared one or the default.

        >>> Conventions().accumulates_in("bfloat16"), Conventions().accumulates_in("float64")
        ('float32', 'float64')
        >>> Conventions.declare(accumulation="storage").accumulates_in("float16")
        'float16'

        Raises
        ------
        ArgumentError
            If the declared accumulation is narrower than the storage dtype.
        """
        if self.accumulation is None:
            return "float32" if storage in ("float16", "bfloat16") else storage
        if self.accumulation == "storage":
            return storage
        width = {"float64": 4, "float32": 3, "float16": 1, "bfloat16": 1}
        if width[self.accumulation] < width[storage] or (
            width[self.accumulation] == width[storage] and self.accumulation != storage
        ):
            raise ArgumentError(
                f"accumulation must be at least as wide as the dtype {storage!r}; "
                f"got {self.accumulation!r}"
            )
        return self.accumulation


DECLARABLE: tuple[str, ...] = (
    "fully_masked_row",
    "causal_alignment",
    "mask_polarity",
    "layout",
    "accumulation",
)
"""The fields of :meth:`Conventions.declare`: what ``--declare NAME=VALUE`` may name."""


def parse_declarations(texts: Iterable[str], /) -> dict[str, str]:
    """``NAME=VALUE`` items (``attnspec check --declare``) as ``{name: value}``, validated.

    A name may be written with hyphens (``fully-masked-row``); each value is
    checked as :meth:`Conventions.declare` checks it, and a name given twice
    with two values is an error.

    >>> parse_declarations(["fully-masked-row=nan", "layout=BTHD"])
    {'fully_masked_row': 'nan', 'layout': 'BTHD'}

    Raises
    ------
    ArgumentError
        If an item is not ``NAME=VALUE``, names no convention, repeats one
        with another value or gives a value outside its domain.
    """
    declared: dict[str, str] = {}
    names = ", ".join(DECLARABLE)
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip().replace("-", "_")
        value = value.strip()
        if not sep or not value:
            raise ArgumentError(
                f"--declare must be NAME=VALUE with NAME one of {names}; got {text!r}"
            )
        if name not in DECLARABLE:
            raise ArgumentError(f"--declare names a convention, one of {names}; got {name!r}")
        if declared.get(name, value) != value:
            raise ArgumentError(
                f"--declare {name} given twice, as {declared[name]!r} and {value!r}"
            )
        try:
            Conventions.declare(**{name: value})  # type: ignore[arg-type]  # validates it
        except ArgumentError as error:
            raise ArgumentError(f"--declare {error}") from None
        declared[name] = value
    return declared
