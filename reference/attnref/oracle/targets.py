"""The built-in targets, and how the command line names and declares any target.

``attnspec check`` with no target checks all of them. Each declares the
conventions it follows and lists, with the reason, the clauses it is known
to break: those are reported as ``xfail``, and the cases that show a
departure can be confined to its clause (``departure_cases``); any other
failing required clause fails the run. Failures of recommended clauses are
findings, never listed here: every library leaks NaN from masked keys through
0 * NaN (pytorch/pytorch#101967), which ``input.unread-nonfinite`` reports.

:func:`resolve` turns a name (built-in or ``package.module:attr``) into an
implementation; a :class:`Declaration` (``--dtype``, ``--device``,
``--layout``, ``--declare``, the feature switches and ``--shape-limit``)
declares on the command line what a Python factory would: what the target
does not say itself, or says otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, get_args

import numpy as np

from attnref.oracle.conventions import FEATURES, Conventions, Feature
from attnref.oracle.protocol import Case, Float64Array, Function, Implementation, Output, ScoreForm
from attnref.oracle.rounding import DTYPES
from attnspec.errors import ArgumentError

__all__ = [
    "MASK_KINDS",
    "TARGETS",
    "Declaration",
    "Limited",
    "MaskKind",
    "ShapeLimit",
    "Target",
    "check_device",
    "resolve",
]


@dataclass(frozen=True)
class Target:
    """A named implementation the command line knows.

    Attributes
    ----------
    name
        The name to pass to ``attnspec check``.
    description
        One line for ``attnspec check --list``.
    factory
        Builds the implementation (imports its framework lazily).
    expected_failures
        ``{clause: reason}`` for the clauses it is known to break.
    needs
        Modules it imports; a target whose modules are missing is reported,
        not crashed on.
    departure_cases
        ``{clause: predicate}`` for expected failures whose cases other
        clauses must not draw (:data:`attnref.oracle.run.DepartureCases`).
    environment
        Environment variables its framework needs before it is first
        imported (Keras' ``KERAS_BACKEND=torch``); set when unset.
    """

    name: str
    description: str
    factory: Callable[[], Implementation]
    expected_failures: Mapping[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    departure_cases: Mapping[str, Callable[[Case], bool]] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)

    def prepare(self) -> None:
        """Set :attr:`environment` where unset.

        Raises
        ------
        ArgumentError
            If a variable is already set to another value.
        """
        for name, value in self.environment.items():
            current = os.environ.setdefault(name, value)
            if current != value:
                raise ArgumentError(
                    f"target {self.name!r} needs {name}={value}; the environment sets "
                    f"{name}={current!r}"
                )

    def missing(self) -> list[str]:
        """The modules of :attr:`needs` that cannot be imported (after :meth:`prepare`)."""
        self.prepare()
        absent = []
        for module in self.needs:
            try:
                importlib.import_module(module)
            except ImportError:
                absent.append(module)
        return absent


# the twin offers every feature; key-padding-only is a limitation, not a feature
_TWIN_FEATURES: frozenset[Feature] = frozenset(FEATURES) - {"key_padding_mask"}


def _twin() -> Implementation:
    import attnref.torch as twin
    from attnref.oracle.adapters.torch import TorchSDPA

    def sdpa(q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        return twin.scaled_dot_product_attention(q, k, v, **kwargs)

    # Note: the twin computes in the dtype it is given (float16 in float16), so with
    # --dtype float16 it is held to what that accumulation delivers, not float32's.
    return TorchSDPA(
        sdpa,
        name="attnref.torch",
        features=_TWIN_FEATURES,
        conventions=Conventions.declare(accumulation="storage"),
    )


def _torch_sdpa() -> Implementation:
    from torch.nn import functional

    from attnref.oracle.adapters.torch import TorchSDPA

    return TorchSDPA(
        functional.scaled_dot_product_attention,
        name="torch.sdpa",
        mask_arg="attn_mask",
    )


def _torch_mha() -> Implementation:
    from attnref.oracle.adapters.torch import TorchMultiheadAttention

    return TorchMultiheadAttention(
        conventions=Conventions.declare(mask_polarity="ignore", fully_masked_row="nan")
    )


def _torch_flex() -> Implementation:
    from attnref.oracle.adapters.flex import FlexAttention

    return FlexAttention()


def _jax() -> Implementation:
    import jax

    from attnref.oracle.adapters.jax import JaxSDPA

    return JaxSDPA(
        jax.nn.dot_product_attention, name="jax.nn.dot_product_attention", dtype="float32"
    )


def _keras(kind: str) -> Callable[[], Implementation]:
    def build() -> Implementation:
        from attnref.oracle.adapters.keras import KerasAttention

        return KerasAttention(kind=kind, name=f"keras.layers.{kind}", dtype="float32")

    return build


_KERAS_ENVIRONMENT = MappingProxyType({"KERAS_BACKEND": "torch"})
"""The adapter hands Keras torch tensors: Keras must run on its PyTorch backend."""

_KERAS_MASK = (
    "Keras masks by subtracting 1e9 from a masked score, so a masked key whose score "
    "exceeds about 1e9 keeps its weight (keras attention.py, _apply_scores)"
)


_KERAS_MASK_CLAUSES = (
    "distribution.masked-zero",
    "input.unread-positions",
    "input.unread-gradient",
)
"""The clauses Keras' finite mask constant breaks."""


def _causal_nonpositive_scale(case: Case) -> bool:
    """The cases of PyTorch's causal NaN rows: the causal flag with a scale of 0 or less."""
    scale = case.options.get("scale")
    return case.is_causal and isinstance(scale, float) and scale <= 0


def _masked_huge_scores(case: Case) -> bool:
    """The cases of Keras' weak mask constant: a mask or causal flag, scores that may pass 1e8."""
    q, k = np.abs(case.query), np.abs(case.key)
    finite = np.isfinite(q).all() and np.isfinite(k).all()
    reach = float(q.max(initial=0) * k.max(initial=0) * case.query.shape[-1]) if finite else np.inf
    return (case.mask is not None or case.is_causal) and reach > 1e8


def _onnxruntime() -> Implementation:
    from attnref.oracle.adapters.onnxruntime import OnnxAttention

    return OnnxAttention(name="onnxruntime", dtype="float32")


def _nonpositive_scale(case: Case) -> bool:
    """The cases onnxruntime's Attention kernel refuses: a scale of 0 or less."""
    scale = case.options.get("scale")
    return isinstance(scale, float) and scale <= 0


TARGETS: Mapping[str, Target] = MappingProxyType(
    {
        t.name: t
        for t in (
            Target(
                "attnref.torch",
                "the PyTorch twin of the reference, float64, every feature",
                _twin,
                needs=("torch",),
            ),
            Target(
                "torch.sdpa",
                "torch.nn.functional.scaled_dot_product_attention, float64",
                _torch_sdpa,
                {
                    "distribution.stable": (
                        "with a tiny scale (2**-600) and inputs near 2**512 the unscaled "
                        "product overflows, giving NaN (golden vector overflow-before-scale)"
                    ),
                    "sdpa.causal-top-left": (
                        "the default CPU kernel of PyTorch 2.13 returns NaN rows with "
                        "is_causal=True and a scale of 0 or less (its math backend is right)"
                    ),
                },
                needs=("torch",),
                departure_cases={"sdpa.causal-top-left": _causal_nonpositive_scale},
            ),
            Target(
                "torch.mha",
                "torch.nn.MultiheadAttention with identity projections, float64",
                _torch_mha,
                {
                    "distribution.fully-masked-row": (
                        "a fully masked row is NaN, and the output projection spreads it to "
                        "every head of that query (pytorch/pytorch#41508)"
                    ),
                },
                needs=("torch",),
            ),
            Target(
                "torch.flex",
                "torch.nn.attention.flex_attention (eager, CPU), float64, with its log-sum-exp",
                _torch_flex,
                {
                    "distribution.stable": (
                        "its eager kernel multiplies query @ key.T by the scale afterwards, so "
                        "with a tiny scale (2**-600) and inputs near 2**512 the unscaled "
                        "product overflows, giving NaN (golden vector overflow-before-scale)"
                    ),
                },
                needs=("torch",),
            ),
            Target(
                "jax.nn.dot_product_attention",
                "jax.nn.dot_product_attention, float32 (its softmax is always float32)",
                _jax,
                needs=("jax",),
            ),
            Target(
                "keras.Attention",
                "keras.layers.Attention (dot score) on the torch backend, float32",
                _keras("Attention"),
                dict.fromkeys(_KERAS_MASK_CLAUSES, _KERAS_MASK),
                needs=("keras", "torch"),
                # one cause, three clauses: each is judged on the cases that show it
                departure_cases=dict.fromkeys(_KERAS_MASK_CLAUSES, _masked_huge_scores),
                environment=_KERAS_ENVIRONMENT,
            ),
            Target(
                "keras.AdditiveAttention",
                "keras.layers.AdditiveAttention (additive score) on the torch backend, float32",
                _keras("AdditiveAttention"),
                needs=("keras", "torch"),
                environment=_KERAS_ENVIRONMENT,
            ),
            Target(
                "onnxruntime",
                "ONNX Attention (opset 24) on onnxruntime's CPU provider, float32",
                _onnxruntime,
                {
                    "score.scale-applied": (
                        "onnxruntime's CPU Attention kernel refuses a scale of 0 or less when "
                        "the session is built ('scale must be greater than 0 if specified', "
                        "attention.cc), though ONNX allows any scale"
                    ),
                    "input.unread-positions": (
                        "the kernel computes the score of a key the mask or the causal flag "
                        "disallows and adds the mask to it (a finite sentinel, lowest(), for "
                        "False) rather than selecting it out, so a masked score past the "
                        "dtype's range (float16's 65504, float32's 3.4e38) stays inf: the row "
                        "is NaN or weighs only the masked keys; float32's drawn poison (1e30) "
                        "stays within that range"
                    ),
                },
                needs=("onnxruntime", "onnx"),
                departure_cases={"score.scale-applied": _nonpositive_scale},
            ),
        )
    }
)
"""Every built-in target by name, in the order ``attnspec check`` runs them."""


MaskKind = Literal["bool", "additive", "key-padding"]
"""The kinds of mask ``--mask-kinds`` names: boolean masks of any broadcastable shape,
additive float masks, key-padding masks only."""

MASK_KINDS: tuple[MaskKind, ...] = get_args(MaskKind)
"""Every :data:`MaskKind`."""

_MASK_FEATURES: Mapping[MaskKind, Feature] = MappingProxyType(
    {"bool": "bool_mask", "additive": "additive_mask", "key-padding": "key_padding_mask"}
)

ShapeName = Literal["B", "H", "Tq", "Tk", "d", "d_v"]
"""The sizes a :class:`ShapeLimit` can bound: batch, heads (query and key heads
alike), query and key lengths, the feature size of query and keys, that of values."""

_LIMIT = re.compile(r"^\s*(?P<name>B|H|Tq|Tk|d_v|d)\s*(?P<op>%|<=|>=)\s*(?P<value>\d+)\s*$")


@dataclass(frozen=True)
class ShapeLimit:
    """A size an implementation supports: ``d%8`` (a multiple of 8), ``Tk<=4096``, ``d>=16``.

    A kernel that takes only some shapes declares them, and the oracle draws
    only cases within them; every clause is still judged, on the shapes the
    kernel takes.

    >>> limit = ShapeLimit.parse("d%8")
    >>> limit, limit.allows_size(16), limit.allows_size(12)
    (ShapeLimit(name='d', op='%', value=8), True, False)
    """

    name: ShapeName
    op: Literal["%", "<=", ">="]
    value: int

    @classmethod
    def parse(cls, text: str, /) -> ShapeLimit:
        """A limit from its text (``--shape-limit``).

        Raises
        ------
        ArgumentError
            If it is not ``NAME%N``, ``NAME<=N`` or ``NAME>=N`` with NAME one
            of B, H, Tq, Tk, d, d_v and a positive N.
        """
        m = _LIMIT.match(text)
        if m is None or int(m["value"]) < 1:
            names = ", ".join(get_args(ShapeName))
            raise ArgumentError(
                "--shape-limit must be NAME%N (a multiple of N), NAME<=N or NAME>=N with NAME "
                f"one of {names} and N >= 1, e.g. d%8; got {text!r}"
            )
        return cls(m["name"], m["op"], int(m["value"]))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"

    def allows_size(self, size: int, /) -> bool:
        """Whether a size meets the limit."""
        if self.op == "%":
            return size % self.value == 0
        return size <= self.value if self.op == "<=" else size >= self.value

    def sizes(self, case: Case, /) -> tuple[int, ...]:
        """The sizes of ``case`` this limit bounds (none for a step function's case)."""
        if case.names[0] not in case.arrays:
            return ()
        q, k, v = case.query.shape, case.key.shape, case.value.shape
        sdpa = case.function == "scaled_dot_product_attention"
        if self.name == "B":
            return (q[0],)
        if self.name == "H":
            return (q[1], k[1]) if sdpa else ()
        if self.name == "Tq":
            return (q[-2],)
        if self.name == "Tk":
            return (k[-2],)
        if self.name == "d":
            return (q[-1], k[-1])
        return (v[-1],)

    def allows(self, case: Case, /) -> bool:
        """Whether every size of ``case`` that it bounds meets it."""
        return all(self.allows_size(n) for n in self.sizes(case))


class Limited:
    """An implementation that takes only the shapes its :class:`ShapeLimit` list allows.

    It behaves as the implementation it wraps and adds ``supports(case)``,
    which the oracle consults before running a drawn case (cases outside
    the limits are not drawn), the golden vectors (those outside are
    skipped) and the full-size check.
    """

    def __init__(self, impl: Implementation, limits: Iterable[ShapeLimit], /) -> None:
        self.impl = impl
        self.limits = tuple(limits)

    def __getattr__(self, name: str) -> Any:
        # Optional attributes of the wrapped implementation (compiles_per_shape...).
        return getattr(self.impl, name)

    @property
    def name(self) -> str:
        """The wrapped implementation's name."""
        return self.impl.name

    @property
    def framework(self) -> str:
        """The wrapped implementation's framework."""
        return self.impl.framework

    @property
    def dtype(self) -> str:
        """The wrapped implementation's dtype."""
        return self.impl.dtype

    @property
    def device(self) -> str:
        """The wrapped implementation's device."""
        return self.impl.device

    @property
    def function(self) -> Function:
        """The wrapped implementation's function."""
        return self.impl.function

    @property
    def score_form(self) -> ScoreForm | None:
        """The wrapped implementation's score form."""
        return self.impl.score_form

    @property
    def conventions(self) -> Conventions:
        """The wrapped implementation's conventions."""
        return self.impl.conventions

    @property
    def features(self) -> frozenset[Feature]:
        """The wrapped implementation's features."""
        return self.impl.features

    def supports(self, case: Case, /) -> bool:
        """Whether ``case`` is within every limit (and the wrapped implementation's own)."""
        inner = getattr(self.impl, "supports", None)
        if inner is not None and not inner(case):
            return False
        return all(limit.allows(case) for limit in self.limits)

    def forward(self, case: Case, /) -> Output:
        """The wrapped implementation's forward pass."""
        return self.impl.forward(case)

    def vjp(self, case: Case, cotangent: Float64Array, /) -> Mapping[str, Float64Array]:
        """The wrapped implementation's gradients."""
        return self.impl.vjp(case, cotangent)

    def describe(self) -> str:
        """The limits, for the report: ``shapes: d%8, Tk<=4096``."""
        return "shapes: " + ", ".join(str(limit) for limit in self.limits)


# Adapters that do not translate a declared layout or mask polarity (they build their own
# inputs), or that compute on a fixed device: a command-line declaration of those would be
# silently ignored, so it is refused.
_NO_TRANSLATION = frozenset({"TorchMultiheadAttention", "KerasAttention"})
_FIXED_DEVICE = frozenset({"JaxSDPA", "KerasAttention", "NumpySDPA"})


@dataclass(frozen=True)
class Declaration:
    """What the command line declares about a target, as a Python factory would.

    Every field left at its default keeps what the target declares itself.

    Attributes
    ----------
    dtype, device
        What it computes in and on (``--dtype``, ``--device``).
    conventions
        ``{name: value}`` of :meth:`Conventions.declare
        <attnref.oracle.conventions.Conventions.declare>` (``--declare``,
        ``--layout``), added to those the target declares.
    features
        Exactly these features (``--features``); ``None`` keeps the target's
        own or, for a plain callable, those inferred.
    without
        Features it does not offer after all (``--without``, ``--no-gradients``).
    mask_kinds
        The masks it takes (``--mask-kinds``), replacing the mask features.
    shape_limits
        The shapes it takes (``--shape-limit``).
    """

    dtype: str | None = None
    device: str | None = None
    conventions: Mapping[str, str] = field(default_factory=dict)
    features: frozenset[Feature] | None = None
    without: frozenset[Feature] = frozenset()
    mask_kinds: frozenset[MaskKind] | None = None
    shape_limits: tuple[ShapeLimit, ...] = ()

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ArgumentError(f"--dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        for name in sorted((self.features or frozenset()) | self.without):
            if name not in FEATURES:
                raise ArgumentError(
                    f"--features and --without name features, one of {', '.join(FEATURES)}; "
                    f"got {name!r}"
                )
        for kind in sorted(self.mask_kinds or ()):
            if kind not in MASK_KINDS:
                raise ArgumentError(
                    f"--mask-kinds must list {', '.join(MASK_KINDS)} or none; got {kind!r}"
                )

    @property
    def empty(self) -> bool:
        """Whether it declares nothing."""
        return self == Declaration()

    def arguments(self) -> list[str]:
        """The ``attnspec check`` options that make this declaration (for reproduce commands)."""
        args: list[str] = []
        if self.dtype is not None:
            args += ["--dtype", self.dtype]
        if self.device is not None:
            args += ["--device", self.device]
        for name, value in self.conventions.items():
            args += ["--declare", f"{name}={value}"]
        if self.features is not None:
            args += ["--features", ",".join(sorted(self.features)) or "none"]
        if self.without:
            args += ["--without", ",".join(sorted(self.without))]
        if self.mask_kinds is not None:
            args += ["--mask-kinds", ",".join(sorted(self.mask_kinds)) or "none"]
        for limit in self.shape_limits:
            args += ["--shape-limit", str(limit)]
        return args

    def offered(self, features: frozenset[Feature], /) -> frozenset[Feature]:
        """The features after this declaration, starting from ``features``."""
        result = set(self.features if self.features is not None else features)
        if self.mask_kinds is not None:
            result -= set(_MASK_FEATURES.values())
            result |= {_MASK_FEATURES[kind] for kind in self.mask_kinds}
            if not self.mask_kinds:
                result.discard("causal_with_mask")
        result -= self.without
        return frozenset(result)

    def conventions_for(self, conventions: Conventions, /) -> Conventions:
        """``conventions`` with this declaration's added (and winning)."""
        if not self.conventions:
            return conventions
        declared = {name: getattr(conventions, name) for name in conventions.declared}
        return Conventions.declare(**{**declared, **self.conventions})

    def apply(self, impl: Implementation, /, *, spec: str) -> Implementation:
        """``impl`` with this declaration applied.

        Raises
        ------
        ArgumentError
            If the implementation cannot take it: it has no such field, or an
            adapter would ignore it (the layout of ``nn.MultiheadAttention``,
            the device of a JAX or NumPy function).
        """
        if self.empty:
            return impl
        if isinstance(impl, Limited):  # declare on what it wraps; keep its limits
            inner = replace(self, shape_limits=()).apply(impl.impl, spec=spec)
            return Limited(inner, (*impl.limits, *self.shape_limits))
        kind = type(impl).__name__
        changes: dict[str, Any] = {}
        if self.dtype is not None and self.dtype != impl.dtype:
            if kind == "NumpySDPA" and self.dtype == "bfloat16":
                raise ArgumentError(f"--dtype bfloat16: {spec!r} is NumPy, which has no bfloat16")
            changes["dtype"] = self.dtype
        if self.device is not None and self.device != impl.device:
            if kind in _FIXED_DEVICE:
                raise ArgumentError(
                    f"--device {self.device}: {spec!r} ({kind}) computes on the CPU only; "
                    "--device applies to PyTorch implementations"
                )
            changes["device"] = self.device
        translated = {"layout", "mask_polarity"} & set(self.conventions)
        if translated and impl.function == "attention" and "layout" in translated:
            raise ArgumentError(
                f"--layout applies to scaled_dot_product_attention; {spec!r} implements attention"
            )
        if translated and kind in _NO_TRANSLATION:
            raise ArgumentError(
                f"{spec!r} ({kind}) builds its own inputs, so a declared "
                f"{' and '.join(sorted(translated))} would be ignored"
            )
        if self.conventions:
            changes["conventions"] = self.conventions_for(impl.conventions)
        features = self.offered(impl.features)
        if features != impl.features:
            changes["features"] = features
        if changes:
            impl = _replaced(impl, changes, spec=spec)
        if self.shape_limits:
            impl = Limited(impl, self.shape_limits)
        return impl


def _replaced(impl: Implementation, changes: Mapping[str, Any], /, *, spec: str) -> Implementation:
    obj: Any = impl  # any object that happens to implement the protocol
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise ArgumentError(
            f"{spec!r} is a {type(impl).__name__}, not a dataclass, so "
            f"{', '.join(changes)} cannot be changed from the command line; set them where "
            "it is built"
        )
    names = {f.name for f in dataclasses.fields(obj)}
    absent = sorted(set(changes) - names)
    if absent:
        raise ArgumentError(
            f"{spec!r} ({type(impl).__name__}) has no field {', '.join(absent)} to set from "
            "the command line; set it where it is built"
        )
    made: Any = dataclasses.replace(obj, **changes)
    check = getattr(made, "_check_declared", None)  # TorchSDPA: declared features need keywords
    if callable(check):
        check()
    result: Implementation = made
    return result


def check_device(impl: Implementation, /) -> None:
    """Check that ``impl``'s device exists here, before any case is run.

    Raises
    ------
    ArgumentError
        If the device is not available (``cuda`` on a machine without CUDA,
        an index past the last GPU, a name the framework does not know).
    """
    device = impl.device
    if impl.framework == "torch":
        import torch

        try:
            torch.empty(1, device=device)
        except Exception as error:  # the framework's own words say why
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ArgumentError(
                f"device {device!r} is not available to torch here: {reason}"
            ) from None
    elif device != "cpu":
        raise ArgumentError(
            f"device {device!r}: {impl.name} ({impl.framework}) is checked on the CPU only"
        )


def resolve(
    spec: str, /, *, declared: Declaration | None = None
) -> tuple[Implementation, Mapping[str, str]]:
    """The implementation named by ``spec`` and its expected failures.

    ``spec`` is a built-in name (:data:`TARGETS`) or ``package.module:attr``
    where ``attr`` is an :class:`~attnref.oracle.protocol.Implementation`, a
    zero-argument factory of one, or a plain PyTorch callable of the SDPA
    form ``fn(query, key, value, *, mask=None, scale=None)``, whose features
    are inferred from its signature and one call
    (:meth:`~attnref.oracle.adapters.torch.TorchSDPA.from_callable`).
    ``declared`` adds what the command line declares (:class:`Declaration`);
    a plain callable is built with its dtype, device and conventions, so
    that the call that infers its features runs as the checks will.

    Raises
    ------
    ArgumentError
        If the name is unknown, the module cannot be imported, a factory
        fails to import what it needs or returns no Implementation, the
        attribute is none of the above, or the declaration does not apply.
    """
    declared = declared or Declaration()
    if spec in TARGETS:
        target = TARGETS[spec]
        absent = target.missing()
        if absent:
            raise ArgumentError(
                f"target {spec!r} needs {', '.join(absent)}, which cannot be imported; "
                f"install it (e.g. pip install 'attnspec[{absent[0]}]')"
            )
        return declared.apply(target.factory(), spec=spec), target.expected_failures
    if ":" not in spec:
        known = ", ".join(TARGETS)
        raise ArgumentError(
            f"target must be a built-in name ({known}) or 'package.module:attr'; got {spec!r}"
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ArgumentError(f"cannot import {module_name!r} for target {spec!r}: {error}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ArgumentError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, Implementation):
        return declared.apply(obj, spec=spec), {}
    if callable(obj):
        made = _try_factory(obj, spec)
        if made is not None:
            return declared.apply(made, spec=spec), {}
        return _plain(obj, spec, declared), {}
    raise ArgumentError(
        f"{spec!r} is neither an Implementation, a factory of one, nor a callable; "
        f"got {type(obj).__name__}"
    )


def _plain(fn: Callable[..., Any], spec: str, declared: Declaration, /) -> Implementation:
    """A plain PyTorch callable with what the command line declares."""
    try:
        from attnref.oracle.adapters.torch import TorchSDPA
    except ImportError as error:
        raise ArgumentError(
            f"{spec!r} is a plain callable, checked as a PyTorch one, but torch cannot "
            f"be imported: {error}"
        ) from None
    conventions = declared.conventions_for(Conventions())
    dtype, device = declared.dtype or "float64", declared.device or "cpu"
    probe = TorchSDPA(fn, name=spec, dtype=dtype, device=device, conventions=conventions)
    check_device(probe)  # before the call that infers the features runs on it
    if declared.shape_limits:
        # The adapter's own probe is a [1, 1, 2, 2] call, outside limits such as d%8.
        probed = TorchSDPA.from_callable(
            fn,
            name=spec,
            dtype=dtype,
            device=device,
            conventions=conventions,
            probe_shapes=_shapes_within(declared.shape_limits),
        )
        impl: Implementation = replace(probed, features=declared.offered(probed.features))
        return Limited(impl, declared.shape_limits)
    impl = TorchSDPA.from_callable(
        fn, name=spec, dtype=dtype, device=device, conventions=conventions
    )
    features = declared.offered(impl.features)
    if features != impl.features:
        impl = TorchSDPA.from_callable(
            fn, name=spec, dtype=dtype, device=device, conventions=conventions, features=features
        )
    return impl


def _smallest(name: str, limits: tuple[ShapeLimit, ...], start: int, /) -> int:
    """The smallest size from ``start`` up that every limit on ``name`` allows."""
    own = [limit for limit in limits if limit.name == name]
    for size in range(start, 65537):
        if all(limit.allows_size(size) for limit in own):
            return size
    raise ArgumentError(
        f"--shape-limit allows no {name} up to 65536: {', '.join(str(x) for x in own)}"
    )


def _shapes_within(
    limits: tuple[ShapeLimit, ...], /
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Query, key and value shapes ``[B, H, T, d]``, the smallest that the limits allow."""
    b, h = _smallest("B", limits, 1), _smallest("H", limits, 1)
    t_q, t_k, d = _smallest("Tq", limits, 2), _smallest("Tk", limits, 2), _smallest("d", limits, 2)
    d_v = (
        d
        if all(x.allows_size(d) for x in limits if x.name == "d_v")
        else _smallest("d_v", limits, 2)
    )
    return (b, h, t_q, d), (b, h, t_k, d), (b, h, t_k, d_v)


def _try_factory(obj: Callable[..., Any], spec: str, /) -> Implementation | None:
    """``obj()`` if ``obj`` is a factory: it takes no arguments (not even ``*args``).

    ``None`` when it takes arguments (a kernel, for the caller to wrap).

    Raises
    ------
    ArgumentError
        If the factory raises (ImportError: what to install) or returns
        something that is not an Implementation (a kernel is wrapped, not
        returned).
    """
    import inspect

    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    # Note: a callable taking *args is a kernel fn(*tensors, ...), never a factory.
    takes = [
        p
        for p in signature.parameters.values()
        if p.kind is p.VAR_POSITIONAL or (p.default is p.empty and p.kind is not p.VAR_KEYWORD)
    ]
    if takes:
        return None
    try:
        made = obj()
    except ImportError as error:
        raise ArgumentError(
            f"factory {spec!r} cannot import what it needs: {error}; install it"
        ) from None
    except Exception as error:  # the factory cannot build it: a usage error, not a verdict
        raise ArgumentError(f"factory {spec!r} raised {type(error).__name__}: {error}") from None
    if isinstance(made, Implementation):
        return made
    got = "None" if made is None else f"an object of type {type(made).__name__}"
    raise ArgumentError(
        f"{spec!r} is a zero-argument callable but returned {got}, not an Implementation; "
        "a factory returns one (e.g. TorchSDPA.from_callable(fn)), a kernel takes "
        "fn(query, key, value, *, mask=None, scale=None)"
    )
