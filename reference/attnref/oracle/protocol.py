"""What an implementation under test offers the oracle, and what it hands back.

The oracle speaks NumPy at the boundary: a :class:`Case` holds float64
arrays in the spec's layout and mask polarity, already rounded to the
implementation's dtype, and the implementation returns an :class:`Output`
of float64 copies of what it computed. Adapters for PyTorch, JAX and NumPy
callables (:mod:`attnref.oracle.adapters`) do the conversions; a third party
can implement :class:`Implementation` directly and type-check it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np
import numpy.typing as npt

from attnref.oracle.conventions import Conventions, Feature
from attnspec.typing import CausalAlignment, ScoreKind

__all__ = [
    "COMPOSITES",
    "STEPS",
    "Case",
    "Composite",
    "Float64Array",
    "Function",
    "Implementation",
    "Output",
    "ScoreForm",
    "Step",
]

Float64Array = npt.NDArray[np.float64]
"""A float64 array: every array crossing the boundary between the oracle and an implementation."""

Composite = Literal["scaled_dot_product_attention", "attention"]
"""The composites: queries, keys and values in, ``(context, weights)`` out."""

Step = Literal[
    "local_m_distribution",
    "local_p_distribution",
    "local_p_position",
    "attention_distribution",
    "log_sum_exp",
    "attention_value",
    "concatenate_context",
    "attentional_hidden_state",
    "output_distribution",
    "score_dot",
    "score_scaled_dot",
    "score_general",
    "score_concat",
    "score_additive",
    "score_location",
]
"""The step functions (and the local distributions): the spec's arrays in, one array out."""

Function = Literal[Composite, Step]
"""The spec functions the oracle checks implementations of."""

COMPOSITES: tuple[Composite, ...] = get_args(Composite)
"""Every composite, in the order of :data:`Composite`."""

STEPS: tuple[Step, ...] = get_args(Step)
"""Every step function, in the order of :data:`Step`."""


@dataclass(frozen=True)
class ScoreForm:
    """The score an ``attention`` implementation computes and which parameters it takes.

    Parameters of the kind that are not ``free`` are fixed by the
    implementation: weight matrices to the identity, weight vectors to ones.
    For example Keras' ``AdditiveAttention(use_scale=True)`` is
    ``ScoreForm("additive", frozenset({"v_a"}))``.
    """

    kind: ScoreKind
    free: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Case:
    """One call of a spec function, as the spec states it.

    Attributes
    ----------
    function
        The spec function.
    arrays
        Float64 arrays by the spec's parameter names (``query``, ``key``,
        ``value`` for SDPA; ``query``, ``keys``, ``values`` and the score
        parameters for ``attention``; the positional parameters of a step
        function, such as ``scores`` and ``positions``, an optional one
        absent when it is not given), already representable in the
        implementation's dtype. SDPA's ``sinks`` (``[H]``, one per query
        head) are held here too when the case has them: they are
        differentiated like query, key and value. Layout ``[B, H, T, d]`` for SDPA and
        ``[B, T, d]`` for ``attention``; a step's own layout, with any
        batch dimensions, for a step.
    mask
        ``None``, a boolean mask (``True`` = may attend) or an additive
        float64 mask, broadcastable to the scores.
    options
        Keyword options of the spec function (``scale``, ``is_causal``,
        ``enable_gqa``, ``score``; ``half_width``, ``source_length`` of the
        local steps); ``causal_alignment`` is never passed: the
        implementation's declared alignment is used.
    """

    function: Function
    arrays: Mapping[str, Float64Array]
    mask: npt.NDArray[Any] | None = None
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def sinks(self) -> Float64Array | None:
        """SDPA's ``[H]`` sink logits (``sdpa.sinks``), or ``None`` without sinks."""
        return self.arrays.get("sinks") if self.function == "scaled_dot_product_attention" else None

    @property
    def is_step(self) -> bool:
        """Whether the case calls a step function (one result) rather than a composite."""
        return self.function in STEPS

    @property
    def names(self) -> tuple[str, str, str]:
        """The spec's names of query, keys and values for this function."""
        if self.function == "attention":
            return ("query", "keys", "values")
        return ("query", "key", "value")

    @property
    def key_name(self) -> str:
        """``"keys"`` for ``attention``, ``"key"`` for SDPA."""
        return self.names[1]

    @property
    def value_name(self) -> str:
        """``"values"`` for ``attention``, ``"value"`` for SDPA."""
        return self.names[2]

    @property
    def query(self) -> Float64Array:
        """The query array."""
        return self.arrays["query"]

    @property
    def key(self) -> Float64Array:
        """The key array (``keys`` of ``attention``)."""
        return self.arrays[self.key_name]

    @property
    def value(self) -> Float64Array:
        """The value array (``values`` of ``attention``)."""
        return self.arrays[self.value_name]

    @property
    def is_causal(self) -> bool:
        """Whether the causal flag is set."""
        return bool(self.options.get("is_causal"))

    @property
    def groups(self) -> int:
        """Query heads per key head (1 without grouped query heads)."""
        if not self.options.get("enable_gqa"):
            return 1
        return int(self.query.shape[-3] // self.key.shape[-3])

    def allowed(self, alignment: CausalAlignment, /) -> npt.NDArray[np.bool_]:
        """``[..., Tq, Tk]`` positions that the mask, the causal flag and the restrictions
        (``window``, ``query_offset``, ``key_lengths``) allow, as :mod:`attnref.masking`
        derives them for the reference."""
        from attnref.masking import allowed_positions

        t_q, t_k = self.query.shape[-2], self.key.shape[-2]
        offset = self.options.get("query_offset")
        allowed = allowed_positions(
            (*self.query.shape[:-2], t_q, t_k),
            is_causal=self.is_causal,
            # an explicit offset replaces the alignment's (sdpa.query-offset)
            alignment="top_left" if offset is not None else alignment,
            window=self.options.get("window"),  # type: ignore[arg-type]
            query_offset=offset,  # type: ignore[arg-type]
            key_lengths=self.options.get("key_lengths"),  # type: ignore[arg-type]
        )
        if self.mask is not None:
            m = np.asarray(self.mask)
            allowed = allowed & (m if m.dtype == np.bool_ else m != -np.inf)
        return allowed

    def fully_masked_rows(self, alignment: CausalAlignment, /) -> npt.NDArray[np.bool_]:
        """``[..., Tq]`` rows with no allowed key."""
        return np.asarray(~self.allowed(alignment).any(axis=-1), dtype=np.bool_)

    def save(self, path: str, /) -> None:
        """Write the case to an ``.npz`` file that :meth:`load` reads back exactly."""
        payload: dict[str, Any] = {f"array_{k}": v for k, v in self.arrays.items()}
        if self.mask is not None:
            payload["mask"] = self.mask
        payload["function"] = np.array(self.function)
        payload["options"] = np.array(repr(dict(self.options)))
        np.savez(path, **payload)

    @classmethod
    def load(cls, path: str, /) -> Case:
        """Read a case written by :meth:`save`."""
        import ast

        with np.load(path, allow_pickle=False) as data:
            arrays = {k[6:]: data[k] for k in data.files if k.startswith("array_")}
            mask = data["mask"] if "mask" in data.files else None
            function = str(data["function"])
            options = ast.literal_eval(str(data["options"]))
        if function not in get_args(Function):
            raise ValueError(f"{path} holds an unknown function {function!r}")
        return cls(function, arrays, mask, options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Output:
    """What an implementation computed for a :class:`Case`, as float64 copies.

    A step function has one result; it is held in ``context`` and read as
    :attr:`result`, and ``weights`` is ``None``.

    Attributes
    ----------
    context
        The context in the spec's layout; for a step function, its result.
    weights
        The attention weights, or ``None`` when the implementation does not
        return them (always for a step function).
    dtype
        Name of the dtype the implementation's result had (``"float32"``...).
    mutated
        Names of the arguments the implementation modified in place.
    lse
        ``[..., Tq]`` log-sum-exp of each row (``sdpa.log-sum-exp``), or
        ``None`` when the implementation does not return it.
    """

    context: Float64Array
    weights: Float64Array | None = None
    dtype: str = "float64"
    mutated: tuple[str, ...] = ()
    lse: Float64Array | None = None

    @property
    def result(self) -> Float64Array:
        """The one result of a step function (held in :attr:`context`)."""
        return self.context


@runtime_checkable
class Implementation(Protocol):
    """An attention implementation the oracle can check.

    Adapters in :mod:`attnref.oracle.adapters` implement it for PyTorch, JAX
    and NumPy callables; implement it yourself for anything else. An
    implementation that compiles once per input shape may also set a class
    attribute ``compiles_per_shape = True``: the oracle then draws its cases
    from a few fixed sizes that keep the edge cases. One that takes only some
    shapes may offer ``supports(case) -> bool``: the oracle then judges only
    the cases it supports (``attnspec check --shape-limit`` builds one).
    """

    @property
    def name(self) -> str:
        """A short name for reports (``"torch.sdpa"``)."""
        ...

    @property
    def framework(self) -> str:
        """The framework that computes (``"torch"``, ``"jax"``, ``"numpy"``...)."""
        ...

    @property
    def dtype(self) -> str:
        """The dtype it computes in: ``float64``, ``float32``, ``float16`` or ``bfloat16``."""
        ...

    @property
    def device(self) -> str:
        """Where it computes (``"cpu"``, ``"cuda:0"``...)."""
        ...

    @property
    def function(self) -> Function:
        """The spec function it implements."""
        ...

    @property
    def score_form(self) -> ScoreForm | None:
        """For ``attention``: the score it computes; ``None`` for SDPA and the steps."""
        ...

    @property
    def conventions(self) -> Conventions:
        """The conventions it declares."""
        ...

    @property
    def features(self) -> frozenset[Feature]:
        """The optional features it offers."""
        ...

    def forward(self, case: Case, /) -> Output:
        """Compute the case; raise any exception the implementation raises."""
        ...

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients of ``sum(context * cotangent)`` w.r.t. the case's arrays, by the
        implementation's own autodiff, as float64 arrays in the spec's layout."""
        ...
