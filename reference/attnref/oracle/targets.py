"""The built-in targets: established implementations, with their declared conventions.

``attnspec check`` with no target checks all of them. Each declares the
conventions it follows and lists, with the reason, the clauses it is known
to break: those are reported as ``xfail``, and the cases that show a
departure can be confined to its clause (``departure_cases``); any other
failing required clause fails the run. Failures of recommended clauses are
findings, never listed here: every library leaks NaN from masked keys through
0 * NaN (pytorch/pytorch#101967), which ``input.unread-nonfinite`` reports.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from attnref.oracle.conventions import Conventions, Feature
from attnref.oracle.protocol import Case, Implementation
from attnspec.errors import ArgumentError

__all__ = ["TARGETS", "Target", "resolve"]


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
    """

    name: str
    description: str
    factory: Callable[[], Implementation]
    expected_failures: Mapping[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    departure_cases: Mapping[str, Callable[[Case], bool]] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """The modules of :attr:`needs` that cannot be imported."""
        absent = []
        for module in self.needs:
            try:
                importlib.import_module(module)
            except ImportError:
                absent.append(module)
        return absent


_TWIN_FEATURES: frozenset[Feature] = frozenset(
    {
        "scale",
        "bool_mask",
        "additive_mask",
        "causal",
        "causal_with_mask",
        "gqa",
        "weights",
        "gradients",
        "distinct_value_dim",
    }
)


def _twin() -> Implementation:
    import attnref.torch as twin
    from attnref.oracle.adapters.torch import TorchSDPA

    def sdpa(q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        return twin.scaled_dot_product_attention(q, k, v, **kwargs)

    return TorchSDPA(sdpa, name="attnref.torch", features=_TWIN_FEATURES)


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


def _jax() -> Implementation:
    import jax

    from attnref.oracle.adapters.jax import JaxSDPA

    return JaxSDPA(
        jax.nn.dot_product_attention, name="jax.nn.dot_product_attention", dtype="float32"
    )


def _keras(kind: str) -> Callable[[], Implementation]:
    def build() -> Implementation:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        from attnref.oracle.adapters.keras import KerasAttention

        return KerasAttention(kind=kind, name=f"keras.layers.{kind}", dtype="float32")

    return build


_KERAS_MASK = (
    "Keras masks by subtracting 1e9 from a masked score, so a masked key whose score "
    "exceeds about 1e9 keeps its weight (keras attention.py, _apply_scores)"
)


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
                "jax.nn.dot_product_attention",
                "jax.nn.dot_product_attention, float32 (its softmax is always float32)",
                _jax,
                needs=("jax",),
            ),
            Target(
                "keras.Attention",
                "keras.layers.Attention (dot score) on the torch backend, float32",
                _keras("Attention"),
                {
                    "distribution.masked-zero": _KERAS_MASK,
                    "input.unread-positions": _KERAS_MASK,
                    "input.unread-gradient": _KERAS_MASK,
                },
                needs=("keras", "torch"),
                departure_cases={"distribution.masked-zero": _masked_huge_scores},
            ),
            Target(
                "keras.AdditiveAttention",
                "keras.layers.AdditiveAttention (additive score) on the torch backend, float32",
                _keras("AdditiveAttention"),
                needs=("keras", "torch"),
            ),
        )
    }
)
"""Every built-in target by name, in the order ``attnspec check`` runs them."""


def resolve(spec: str, /) -> tuple[Implementation, Mapping[str, str]]:
    """The implementation named by ``spec`` and its expected failures.

    ``spec`` is a built-in name (:data:`TARGETS`) or ``package.module:attr``
    where ``attr`` is an :class:`~attnref.oracle.protocol.Implementation`, a
    zero-argument factory of one, or a plain PyTorch callable of the SDPA
    form ``fn(query, key, value, *, mask=None, scale=None)``, whose features
    are inferred from its signature and one call
    (:meth:`~attnref.oracle.adapters.torch.TorchSDPA.from_callable`).

    Raises
    ------
    ArgumentError
        If the name is unknown, the module cannot be imported, a factory
        fails to import what it needs or returns no Implementation, or the
        attribute is none of the above.
    """
    if spec in TARGETS:
        target = TARGETS[spec]
        absent = target.missing()
        if absent:
            raise ArgumentError(
                f"target {spec!r} needs {', '.join(absent)}, which cannot be imported; "
                f"install it (e.g. pip install 'attnspec[{absent[0]}]')"
            )
        return target.factory(), target.expected_failures
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
        return obj, {}
    if callable(obj):
        made = _try_factory(obj, spec)
        if made is not None:
            return made, {}
        try:
            from attnref.oracle.adapters.torch import TorchSDPA
        except ImportError as error:
            raise ArgumentError(
                f"{spec!r} is a plain callable, checked as a PyTorch one, but torch cannot "
                f"be imported: {error}"
            ) from None
        return TorchSDPA.from_callable(obj, name=spec), {}
    raise ArgumentError(
        f"{spec!r} is neither an Implementation, a factory of one, nor a callable; "
        f"got {type(obj).__name__}"
    )


def _try_factory(obj: Callable[..., Any], spec: str, /) -> Implementation | None:
    """``obj()`` if ``obj`` is a factory: it takes no arguments (not even ``*args``).

    ``None`` when it takes arguments (a kernel, for the caller to wrap).

    Raises
    ------
    ArgumentError
        If the factory raises ImportError or returns something that is not
        an Implementation (a kernel is wrapped, not returned).
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
    if isinstance(made, Implementation):
        return made
    got = "None" if made is None else f"an object of type {type(made).__name__}"
    raise ArgumentError(
        f"{spec!r} is a zero-argument callable but returned {got}, not an Implementation; "
        "a factory returns one (e.g. TorchSDPA.from_callable(fn)), a kernel takes "
        "fn(query, key, value, *, mask=None, scale=None)"
    )
