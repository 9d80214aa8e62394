"""Adapters for PyTorch implementations: SDPA-form callables, ``nn.MultiheadAttention``, and
callables of a step function (the local distributions, the scores, ...)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from attnref.oracle.conventions import RESTRICTIONS, Conventions, Feature
from attnref.oracle.expected import positional_names
from attnref.oracle.protocol import STEPS, Case, Float64Array, Function, Output, ScoreForm, Step
from attnspec.errors import ArgumentError

__all__ = [
    "DEFAULT_SDPA_FEATURES",
    "STEP_FEATURES",
    "TorchMultiheadAttention",
    "TorchSDPA",
    "TorchStep",
    "torch_dtype",
]

_SDPA_NAMES = ("query", "key", "value")

_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def torch_dtype(name: str, /) -> torch.dtype:
    """The torch dtype of a dtype name."""
    return _DTYPES[name]


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _numpy(t: torch.Tensor) -> Float64Array:
    """A float64 NumPy copy of a tensor (exact for every floating dtype)."""
    return np.asarray(t.detach().to(device="cpu", dtype=torch.float64).numpy(), dtype=np.float64)


def _own(a: Any, /) -> torch.Tensor:
    """A CPU tensor holding a copy of ``a``, sharing no memory with it.

    Note: ``torch.from_numpy`` alone shares memory with a float64 array, so an
    implementation writing into its argument would write into the case.
    """
    return torch.from_numpy(np.array(a, copy=True, order="C"))


def _same(a: torch.Tensor, b: torch.Tensor, /) -> bool:
    """Whether ``a`` still equals its snapshot ``b``, NaN matching NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.where(a.isnan(), b.isnan(), a == b).all())
    return torch.equal(a, b)


def _changed(
    arguments: Mapping[str, torch.Tensor], before: Mapping[str, torch.Tensor]
) -> tuple[str, ...]:
    """Names of the arguments that no longer equal their snapshots."""
    return tuple(n for n, t in arguments.items() if not _same(t, before[n]))


DEFAULT_SDPA_FEATURES: frozenset[Feature] = frozenset(
    {"scale", "bool_mask", "additive_mask", "causal", "gqa", "gradients", "distinct_value_dim"}
)
"""What ``torch.nn.functional.scaled_dot_product_attention`` offers (it returns no weights)."""

_MASK_ARGS = ("mask", "attn_mask")
_CAUSAL_ARGS = ("is_causal", "causal")
_EXPECTED_FORM = (
    "fn(query, key, value, *, mask=None, scale=None) on tensors, returning the context "
    "tensor or a pair (context, weights) of tensors"
)
_PROBE_SHAPE = (1, 1, 2, 2)
"""``[B, H, T, d]`` of the one call :meth:`TorchSDPA.from_callable` makes to see what comes back."""


@dataclass(frozen=True)
class _Keywords:
    """The keyword names a callable of the SDPA form takes (``None``: it takes none)."""

    mask_arg: str | None
    scale_arg: str | None
    causal_arg: str | None
    gqa_arg: str | None
    restrictions: frozenset[Feature] = frozenset()

    @classmethod
    def of(cls, fn: Callable[..., Any], /, *, name: str) -> _Keywords:
        """The keywords of ``fn``'s signature; ``**kwargs`` takes every one by its usual name.

        Raises
        ------
        ArgumentError
            If the signature cannot be read or does not take three positional arguments.
        """
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            raise ArgumentError(
                f"cannot read the signature of {name!r}, so what it offers cannot be inferred; "
                "construct TorchSDPA(fn, features=..., mask_arg=...) and pass module:attr"
            ) from None
        try:
            bound = signature.bind(0, 1, 2)
        except TypeError:
            raise ArgumentError(
                f"{name!r} must take query, key and value positionally, as {_EXPECTED_FORM}; "
                f"its signature is {signature}"
            ) from None
        keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = signature.parameters.values()
        names = {p.name for p in params if p.kind in keyword_kinds} - set(bound.arguments)
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

        def first(options: Sequence[str]) -> str | None:
            named = next((n for n in options if n in names), None)
            return options[0] if named is None and takes_all else named

        # the restrictions, the sinks and the log-sum-exp go by the spec's keyword names only
        restrictions = frozenset(f for f in RESTRICTIONS if f in names)
        if "sinks" in names:
            restrictions |= {"sinks"}
        if "return_lse" in names:
            restrictions |= {"lse"}
        return cls(
            first(_MASK_ARGS),
            first(("scale",)),
            first(_CAUSAL_ARGS),
            first(("enable_gqa",)),
            restrictions,
        )

    def features(self) -> frozenset[Feature]:
        """What these keywords let the oracle pass: everything but ``weights``.

        An additive float mask cannot be told from a name, except PyTorch's
        ``attn_mask``, which takes boolean and additive masks alike.
        """
        found: set[Feature] = {"gradients", "distinct_value_dim"}
        if self.mask_arg is not None:
            found.add("bool_mask")
            if self.mask_arg == "attn_mask":
                found.add("additive_mask")
        if self.scale_arg is not None:
            found.add("scale")
        if self.causal_arg is not None:
            found.add("causal")
            if self.mask_arg is not None:
                found.add("causal_with_mask")
        if self.gqa_arg is not None:
            found.add("gqa")
        return frozenset(found) | self.restrictions


def _describe(x: Any, /) -> str:
    """What a callable returned, in words: ``"a NumPy array of shape (1, 1, 2, 2)"``."""
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray):
        return f"a NumPy array of shape {x.shape}"
    if isinstance(x, tuple | list):
        inner = ", ".join(_describe(item) for item in x)
        return f"a {type(x).__name__} ({inner})"
    return "None" if x is None else f"an object of type {type(x).__name__}"


@dataclass(frozen=True)
class TorchSDPA:
    """A PyTorch callable of the SDPA form, checked as the spec's SDPA.

    It is held to :func:`attnspec.scaled_dot_product_attention`.

    The callable is ``fn(query, key, value, *, mask=None, scale=None)`` on
    ``[B, H, T, d]`` tensors (``[B, T, H, d]`` with ``layout="BTHD"``) and
    returns the context or ``(context, weights)``. Keyword names are
    configurable, so ``torch.nn.functional.scaled_dot_product_attention`` is
    ``TorchSDPA(F.scaled_dot_product_attention, mask_arg="attn_mask")``.
    :meth:`from_callable` infers the features and keyword names instead.

    Every tensor it receives is its own copy: writing into one cannot reach
    the case, and is reported as ``input.not-mutated``.

    Attributes
    ----------
    fn
        The callable.
    name
        Name in reports.
    dtype, device
        What the inputs are converted to.
    conventions
        The conventions it declares.
    features
        The features it offers, as declared (:meth:`from_callable` infers them).
    mask_arg, scale_arg, causal_arg, gqa_arg
        Its keyword names for the mask, the scale, the causal flag and the
        grouped-query flag (``None``: it has none).
    """

    fn: Callable[..., Any]
    name: str = "torch-callable"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(default_factory=Conventions)
    features: frozenset[Feature] = DEFAULT_SDPA_FEATURES
    mask_arg: str | None = "mask"
    scale_arg: str | None = "scale"
    causal_arg: str | None = "is_causal"
    gqa_arg: str | None = "enable_gqa"

    framework = "torch"
    function: Function = "scaled_dot_product_attention"
    score_form: ScoreForm | None = None

    @classmethod
    def from_callable(
        cls,
        fn: Callable[..., Any],
        /,
        *,
        name: str | None = None,
        dtype: str = "float64",
        device: str = "cpu",
        conventions: Conventions | None = None,
        features: frozenset[Feature] | None = None,
        probe_shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None,
    ) -> TorchSDPA:
        """A plain callable, its features inferred from its signature and its result.

        Only keywords ``fn`` takes are ever passed to it:

        - ``mask`` or ``attn_mask``: boolean masks (``bool_mask``), passed by
          that name; ``attn_mask`` also takes additive float masks
          (``additive_mask``), as in PyTorch;
        - ``scale``: ``scale``;
        - ``is_causal`` or ``causal``: ``causal``, and ``causal_with_mask``
          when it also takes a mask;
        - ``enable_gqa``: ``gqa``;
        - ``softcap``, ``window``, ``query_offset``, ``key_lengths``,
          ``sinks``: the features of those names (by these names only);
        - ``return_lse``: ``lse``; it is then called with ``return_lse=True``
          and returns ``(context, lse)`` or ``(context, weights, lse)``;
        - ``**kwargs``: ``mask``, ``scale``, ``is_causal`` and ``enable_gqa``
          by these names (no additive masks);
        - always ``gradients`` (autograd) and ``distinct_value_dim``.

        ``weights`` is found by one call on a tiny case (``[1, 1, 2, 2]``, or
        query, key and value of ``probe_shapes`` in ``[B, H, T, d]`` for a
        kernel that takes only some shapes): a pair of tensors is
        ``(context, weights)`` (``(context, None)``: no weights), a single
        tensor is the context. Given ``features``, they are taken as declared
        and nothing is called.

        Raises
        ------
        ArgumentError
            If the signature does not take three positional arguments, the
            declared features need a keyword ``fn`` lacks, or the call on the
            tiny case raises or returns anything else.
        """
        label = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
        keywords = _Keywords.of(fn, name=label)
        impl = cls(
            fn,
            name=label,
            dtype=dtype,
            device=device,
            conventions=conventions or Conventions(),
            features=keywords.features() if features is None else features,
            mask_arg=keywords.mask_arg,
            scale_arg=keywords.scale_arg,
            causal_arg=keywords.causal_arg,
            gqa_arg=keywords.gqa_arg,
        )
        if features is not None:
            impl._check_declared()
            return impl
        if impl._probe(probe_shapes):
            return replace(impl, features=impl.features | {"weights"})
        return impl

    def _check_declared(self) -> None:
        needs: dict[Feature, tuple[str, str | None]] = {
            "bool_mask": ("mask", self.mask_arg),
            "additive_mask": ("mask", self.mask_arg),
            "key_padding_mask": ("mask", self.mask_arg),
            "scale": ("scale", self.scale_arg),
            "causal": ("is_causal", self.causal_arg),
            "causal_with_mask": ("is_causal", self.causal_arg),
        }
        for feature in sorted(self.features):
            if feature in needs and needs[feature][1] is None:
                raise ArgumentError(
                    f"{self.name!r} declares {feature!r} but takes no {needs[feature][0]} "
                    f"keyword; expected {_EXPECTED_FORM}"
                )

    def _probe(
        self, shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
    ) -> bool:
        """Whether ``fn`` returns ``(context, weights)``, by one call on a small case."""
        if shapes is None:
            values = np.arange(4.0).reshape(_PROBE_SHAPE) / 4  # [1, 1, 2, 2]
            arrays = [values + i for i in range(3)]
        else:
            rng = np.random.default_rng(0)
            arrays = [rng.standard_normal(shape) for shape in shapes]
        q, k, v = (self._to_layout(self._tensor(a)) for a in arrays)
        try:
            with torch.no_grad():
                result = self.fn(q, k, v)
        except Exception as error:
            raise ArgumentError(
                f"{self.name!r} raised {type(error).__name__}: {error} when called as "
                f"fn(query, key, value) on tensors of shape {tuple(q.shape)}; "
                f"expected {_EXPECTED_FORM}"
            ) from error

        def tensor(x: Any, shape: tuple[int, ...]) -> bool:
            return isinstance(x, torch.Tensor) and tuple(x.shape) == shape

        context_shape = (*q.shape[:-1], v.shape[-1])
        weights_shape = (*arrays[0].shape[:-1], arrays[1].shape[-2])  # [B, H, Tq, Tk]
        if tensor(result, context_shape):
            return False
        if isinstance(result, tuple | list) and len(result) == 2:
            context, weights = result
            if tensor(context, context_shape):
                if weights is None:
                    return False
                if tensor(weights, weights_shape):
                    return True
        raise ArgumentError(
            f"{self.name!r} returned {_describe(result)} for query, key and value of shape "
            f"{tuple(q.shape)}; expected {_EXPECTED_FORM}"
        )

    def _tensor(self, a: Any) -> torch.Tensor:
        t = _own(a)
        if t.dtype == torch.bool:
            return t.to(self.device)
        return t.to(device=self.device, dtype=torch_dtype(self.dtype))

    def _to_layout(self, t: torch.Tensor) -> torch.Tensor:
        return t.transpose(-3, -2) if self.conventions.layout == "BTHD" else t

    def _inputs(self, case: Case) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {n: self._to_layout(self._tensor(case.arrays[n])) for n in _SDPA_NAMES}
        kwargs: dict[str, Any] = {}
        if case.mask is not None and self.mask_arg is not None:
            mask = self._tensor(case.mask)
            if mask.dtype == torch.bool and self.conventions.mask_polarity == "ignore":
                mask = ~mask
            kwargs[self.mask_arg] = mask
        options = case.options
        if "scale" in options and self.scale_arg is not None:
            kwargs[self.scale_arg] = options["scale"]
        if options.get("is_causal") and self.causal_arg is not None:
            kwargs[self.causal_arg] = True
        if options.get("enable_gqa") and self.gqa_arg is not None:
            kwargs[self.gqa_arg] = True
        # the restrictions go by the spec's keywords; per-batch integers as int64 tensors
        for name in sorted(RESTRICTIONS & self.features):
            if name in options:
                value = options[name]
                if isinstance(value, tuple) and name != "window":
                    value = torch.tensor(value, dtype=torch.int64, device=self.device)
                kwargs[name] = value
        if "lse" in self.features:
            kwargs["return_lse"] = True
        return tensors, kwargs

    def _sinks(self, case: Case) -> dict[str, torch.Tensor]:
        """``{"sinks": [H] tensor}`` when the case has sinks (one per query head), else ``{}``."""
        sinks = case.sinks
        return {} if sinks is None else {"sinks": self._tensor(sinks)}

    def _call(
        self,
        tensors: Sequence[torch.Tensor],
        kwargs: Mapping[str, Any],
        sinks: Mapping[str, torch.Tensor],
    ) -> tuple[Any, Any, Any]:
        """``(context, weights or None, lse or None)`` of one call."""
        result = self.fn(*tensors, **kwargs, **sinks)
        if "return_lse" in kwargs:
            if not isinstance(result, tuple | list) or len(result) not in (2, 3):
                raise ArgumentError(
                    f"{self.name!r} was called with return_lse=True and returned "
                    f"{_describe(result)}; expected (context, lse) or (context, weights, lse)"
                )
            weights = result[1] if len(result) == 3 else None
            return result[0], weights, result[-1]
        if isinstance(result, tuple | list):
            return result[0], result[1], None
        return result, None, None

    def forward(self, case: Case, /) -> Output:
        """Run the callable on the case, checking that it leaves its arguments alone."""
        tensors, kwargs = self._inputs(case)
        sinks = self._sinks(case)
        arguments = dict(tensors) | dict(sinks)
        if self.mask_arg in kwargs:
            arguments["mask"] = kwargs[self.mask_arg]
        before = {n: t.clone() for n, t in arguments.items()}
        with torch.no_grad():
            context, weights, lse = self._call(list(tensors.values()), kwargs, sinks)
        return Output(
            context=_numpy(self._to_layout(context)),
            weights=None if weights is None else _numpy(weights),
            dtype=_name(context.dtype),
            mutated=_changed(arguments, before),
            lse=None if lse is None else _numpy(lse),
        )

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients by autograd of ``sum(context * cotangent)`` w.r.t. query, key, value
        (and the sinks, when the case has them)."""
        tensors, kwargs = self._inputs(case)
        leaves = [t.detach().requires_grad_(True) for t in tensors.values()]
        sink_leaves = {n: t.detach().requires_grad_(True) for n, t in self._sinks(case).items()}
        # Note: the callable gets differentiable copies of the leaves, as it would get a
        # projection's output in a model, so that writing into an argument (reported by
        # input.not-mutated) does not make autograd refuse to differentiate it.
        copies = {n: leaf.clone() for n, leaf in sink_leaves.items()}
        context, _, _ = self._call([leaf.clone() for leaf in leaves], kwargs, copies)
        c = torch.from_numpy(cotangent).to(self.device)
        torch.autograd.backward((self._to_layout(context).to(torch.float64) * c).sum())
        grads = {}
        for name, leaf in zip(_SDPA_NAMES, leaves, strict=True):
            g = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
            grads[name] = _numpy(self._to_layout(g))
        for name, leaf in sink_leaves.items():
            grads[name] = _numpy(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
        return grads


@dataclass(frozen=True)
class TorchMultiheadAttention:
    """``torch.nn.MultiheadAttention`` with identity projections, checked as SDPA.

    With ``in_proj`` and ``out_proj`` set to the identity and no biases, the
    module splits ``E = H * d`` features into ``H`` heads and computes the
    spec's SDPA on each, with the default scale. It declares boolean masks
    as *ignore* (``key_padding_mask``/``attn_mask`` convention).
    """

    name: str = "torch.nn.MultiheadAttention"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(
        default_factory=lambda: Conventions.declare(mask_polarity="ignore")
    )
    features: frozenset[Feature] = frozenset({"bool_mask", "additive_mask", "weights", "gradients"})

    framework = "torch"
    function: Function = "scaled_dot_product_attention"
    score_form: ScoreForm | None = None

    def _module(self, heads: int, d: int) -> torch.nn.MultiheadAttention:
        e = heads * d
        mha = torch.nn.MultiheadAttention(
            e,
            heads,
            bias=False,
            batch_first=True,
            device=self.device,
            dtype=torch_dtype(self.dtype),
        )
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.eye(e).repeat(3, 1))
            mha.out_proj.weight.copy_(torch.eye(e))
        return mha.eval()

    def _run(
        self, case: Case, *, grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        q, k, v = (case.arrays[n] for n in ("query", "key", "value"))
        b, h, t_q, d = q.shape
        t_k = k.shape[-2]
        dtype = torch_dtype(self.dtype)

        def flat(a: Float64Array, t: int) -> torch.Tensor:
            x = _own(a).to(self.device, dtype)
            return x.transpose(1, 2).reshape(b, t, h * d)  # [B, T, H*d]

        inputs = [flat(q, t_q), flat(k, t_k), flat(v, t_k)]
        if grad:
            inputs = [x.detach().requires_grad_(True) for x in inputs]
        before = [x.detach().clone() for x in inputs]
        attn_mask = None
        if case.mask is not None:
            m = torch.from_numpy(np.broadcast_to(case.mask, (b, h, t_q, t_k)).copy())
            m = m.reshape(b * h, t_q, t_k).to(self.device)
            attn_mask = ~m if m.dtype == torch.bool else m.to(dtype)
        out, weights = self._module(h, d)(
            *inputs, attn_mask=attn_mask, need_weights=True, average_attn_weights=False
        )
        context = out.reshape(b, t_q, h, d).transpose(1, 2)  # [B, H, Tq, d]
        return context, weights, inputs, before

    def forward(self, case: Case, /) -> Output:
        """Run the module on the case."""
        with torch.no_grad():
            context, weights, inputs, before = self._run(case, grad=False)
        mutated = _changed(
            dict(zip(_SDPA_NAMES, inputs, strict=True)), dict(zip(_SDPA_NAMES, before, strict=True))
        )
        return Output(_numpy(context), _numpy(weights), _name(context.dtype), mutated)

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients by autograd w.r.t. query, key and value (identity projections)."""
        context, _, inputs, _ = self._run(case, grad=True)
        torch.autograd.backward(
            (context.to(torch.float64) * torch.from_numpy(cotangent).to(self.device)).sum()
        )
        b, h, _, d = case.arrays["query"].shape
        grads = {}
        for name, x in zip(("query", "key", "value"), inputs, strict=True):
            assert x.grad is not None
            t = x.shape[1]
            grads[name] = _numpy(x.grad.reshape(b, t, h, d).transpose(1, 2))
        return grads


def _step_features(step: Step) -> frozenset[Feature]:
    """A step's features: a mask where it takes one, the scale override, and gradients for
    the local distributions (the steps whose gradients the oracle checks)."""
    found: set[Feature] = set()
    if step in ("local_m_distribution", "local_p_distribution"):
        found |= {"bool_mask", "gradients"}
    if step in ("attention_distribution", "log_sum_exp"):
        found |= {"bool_mask", "additive_mask"}
    if step == "score_scaled_dot":
        found.add("scale")
    return frozenset(found)


STEP_FEATURES: dict[Step, frozenset[Feature]] = {step: _step_features(step) for step in STEPS}
"""What a step function of the spec offers: a mask where it takes one, a scale override for
``score_scaled_dot``, and gradients for the local distributions (the other steps' gradients
are checked through the composites, ``input.gradient``)."""


@dataclass(frozen=True)
class TorchStep:
    """A PyTorch callable of a step function's form, checked as that spec function.

    The callable takes the spec function's positional arrays as tensors, in
    the spec's order and layout (an optional one, such as ``b_c``, left out
    when the case has none), and its keyword options (``half_width``,
    ``source_length``, ``scale``) and ``mask=`` when the case has them; it
    returns one tensor. So ``attnref.torch.local_m_distribution`` is
    ``TorchStep(attnref.torch.local_m_distribution, "local_m_distribution")``,
    which :meth:`twin` builds.

    >>> import attnref.torch
    >>> impl = TorchStep(attnref.torch.local_p_distribution, "local_p_distribution")
    >>> sorted(impl.features)
    ['bool_mask', 'gradients']

    Attributes
    ----------
    fn
        The callable.
    function
        The step function it implements (:data:`~attnref.oracle.protocol.Step`).
    name, dtype, device, conventions
        As for :class:`TorchSDPA`; ``conventions.accumulation`` says where
        its sums and exponentials are computed (a kernel working entirely in
        a 16-bit dtype declares that dtype).
    offered
        The features it offers, or ``None`` for the function's defaults
        (:data:`STEP_FEATURES`).
    """

    fn: Callable[..., Any]
    function: Step
    name: str = "torch-step"
    dtype: str = "float64"
    device: str = "cpu"
    conventions: Conventions = field(default_factory=Conventions)
    offered: frozenset[Feature] | None = None

    framework = "torch"
    score_form: ScoreForm | None = None

    @classmethod
    def twin(
        cls, function: Step, /, *, dtype: str = "float64", conventions: Conventions | None = None
    ) -> TorchStep:
        """The PyTorch twin's ``function``; it computes in ``dtype`` itself unless told otherwise.

        >>> TorchStep.twin("local_m_distribution", dtype="bfloat16").conventions.accumulation
        'bfloat16'
        """
        import attnref.torch as twin

        declared = conventions or Conventions.declare(accumulation=dtype)  # type: ignore[arg-type]
        return cls(
            getattr(twin, function),
            function,
            name=f"attnref.torch.{function}",
            dtype=dtype,
            conventions=declared,
        )

    @property
    def features(self) -> frozenset[Feature]:
        """The features it offers (:attr:`offered`, or the function's defaults)."""
        return STEP_FEATURES[self.function] if self.offered is None else self.offered

    def _tensor(self, a: Any) -> torch.Tensor:
        t = _own(a)
        if t.dtype == torch.bool:
            return t.to(self.device)
        return t.to(device=self.device, dtype=torch_dtype(self.dtype))

    def _inputs(self, case: Case) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        names = [n for n in positional_names(self.function) if n in case.arrays]
        tensors = {n: self._tensor(case.arrays[n]) for n in names}
        kwargs: dict[str, Any] = dict(case.options)
        if case.mask is not None:
            mask = self._tensor(case.mask)
            if mask.dtype == torch.bool and self.conventions.mask_polarity == "ignore":
                mask = ~mask
            kwargs["mask"] = mask
        return tensors, kwargs

    def forward(self, case: Case, /) -> Output:
        """Run the callable on its own copies of the case's arrays."""
        tensors, kwargs = self._inputs(case)
        arguments = dict(tensors)
        if "mask" in kwargs:
            arguments["mask"] = kwargs["mask"]
        before = {n: t.clone() for n, t in arguments.items()}
        with torch.no_grad():
            result = self.fn(*tensors.values(), **kwargs)
        return Output(_numpy(result), None, _name(result.dtype), _changed(arguments, before))

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """Gradients by autograd of ``sum(result * cotangent)`` w.r.t. each array."""
        tensors, kwargs = self._inputs(case)
        leaves = {n: t.detach().requires_grad_(True) for n, t in tensors.items()}
        result = self.fn(*(leaf.clone() for leaf in leaves.values()), **kwargs)
        c = torch.from_numpy(cotangent).to(self.device)
        torch.autograd.backward((result.to(torch.float64) * c).sum())
        return {
            n: _numpy(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
            for n, leaf in leaves.items()
        }
