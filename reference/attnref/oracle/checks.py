"""The oracle's checks: one per clause, each a case strategy and a verification.

A check names the clause it enforces, the features an implementation needs
for it to apply, the cases it draws and the judges of one observed case
(:mod:`attnref.oracle.observe`). Every judge reads the same observation and
returns :class:`Measure` records (what was compared, the error, the
allowance); no judge runs anything. The runner fails the clause on the first
case whose error exceeds its allowance and lets Hypothesis shrink that case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnref.oracle.cases import ORDINARY_MASKS, Draw, ValueStyle
from attnref.oracle.conventions import Feature
from attnref.oracle.observe import Observation
from attnref.oracle.protocol import Float64Array, Implementation, Output
from attnref.oracle.tolerance import SAFETY, underflow_floor

__all__ = ["CHECKS", "Check", "Judge", "Measure", "MismatchError", "checks_for", "compare"]


class MismatchError(AssertionError):
    """A case on which the implementation departs from the spec."""


@dataclass(frozen=True)
class Measure:
    """One comparison: what was compared, the error found and the error allowed."""

    what: str
    error: float
    allowed: float

    @property
    def ratio(self) -> float:
        """``error / allowed``; above 1 fails."""
        if self.allowed == 0.0:
            return 0.0 if self.error == 0.0 else float("inf")
        return self.error / self.allowed

    def describe(self) -> str:
        """``"context: error 3.1e-07 > allowed 2.2e-15"``."""
        relation = ">" if self.ratio > 1 else "<="
        return f"{self.what}: error {self.error:.3g} {relation} allowed {self.allowed:.3g}"


Judge = Callable[[Observation], list[Measure]]
"""How one clause judges an observation: the comparisons it makes (raising
:class:`MismatchError` for a departure that is not a number, such as a
missing result or NaN where the spec gives a number)."""


@dataclass(frozen=True)
class Check:
    """A conformance check of one clause.

    Attributes
    ----------
    clause
        The clause ID it enforces.
    function
        The spec function it applies to.
    draw
        The cases it draws.
    judges
        What it judges each observed case by.
    requires
        Features the implementation must offer for the check to apply.
    requires_any
        Of these, at least one (when not empty).
    gradients
        Whether the observation includes the implementation's gradients.
    """

    clause: str
    function: str
    draw: Draw
    judges: tuple[Judge, ...]
    requires: frozenset[Feature] = frozenset()
    requires_any: frozenset[Feature] = frozenset()
    gradients: bool = False

    @property
    def id(self) -> str:
        """A readable ID for pytest: ``sdpa/distribution.masked-zero``."""
        short = "sdpa" if self.function == SDPA else self.function
        return f"{short}/{self.clause}"

    def inapplicable(self, impl: Implementation) -> str | None:
        """Why the check does not apply to ``impl``, or ``None`` if it does."""
        if impl.function != self.function:
            return f"{impl.name} implements {impl.function}, not {self.function}"
        absent = sorted(self.requires - impl.features)
        if absent:
            return f"{impl.name} does not offer {', '.join(absent)}"
        if self.requires_any and not (self.requires_any & impl.features):
            return f"{impl.name} offers none of {', '.join(sorted(self.requires_any))}"
        if (
            self.clause == "distribution.fully-masked-row"
            and impl.conventions.fully_masked_row == "unsupported"
        ):
            return f"{impl.name} declares fully masked rows unsupported"
        return None

    def judge(self, observation: Observation) -> list[Measure]:
        """Every measure of the check's judges on one observation."""
        return [m for judge in self.judges for m in judge(observation)]


# --- measuring ---------------------------------------------------------------------------


def compare(
    what: str, actual: Float64Array | None, truth: Float64Array, bound: Float64Array, dtype: str
) -> Measure:
    """The worst element of ``actual`` against the truth, allowed ``SAFETY`` times its bound.

    NaN must stand exactly where the truth has NaN (a declared convention);
    anywhere else a NaN or an infinity is a departure said as such.
    """
    if actual is None:
        raise MismatchError(f"{what}: the implementation returned nothing")
    if actual.shape != truth.shape:
        raise MismatchError(f"{what}: shape {actual.shape}, the spec gives {truth.shape}")
    nan_a, nan_t = np.isnan(actual), np.isnan(truth)
    if np.any(nan_a & ~nan_t):
        raise MismatchError(
            f"{what}: NaN at {int(np.sum(nan_a & ~nan_t))} of {actual.size} positions "
            "where the spec gives a number"
        )
    if np.any(nan_t & ~nan_a):
        raise MismatchError(f"{what}: a number where the declared convention gives NaN")
    finite = ~nan_t
    inf_a = np.isinf(actual) & finite
    if np.any(inf_a & (actual != truth)):
        raise MismatchError(f"{what}: infinite at {int(np.sum(inf_a))} positions")
    error = np.where(
        finite, np.abs(np.where(finite, actual, 0.0) - np.where(finite, truth, 0.0)), 0.0
    )
    allowed = SAFETY * np.broadcast_to(bound, error.shape) + underflow_floor(dtype)
    ratio = error / allowed
    if ratio.size == 0:
        return Measure(what, 0.0, 1.0)
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return Measure(what, float(error[worst]), float(allowed[worst]))


def _output(o: Observation) -> Output:
    if o.output is None:
        raise MismatchError(o.failure or "the implementation returned nothing")
    return o.output


def _fully_masked(o: Observation) -> bool:
    return bool((~o.allowed.any(axis=-1)).any())


# --- judges: each reads one observation ------------------------------------------------


def context(o: Observation) -> list[Measure]:
    """The context agrees with the spec (a declared ``raises`` convention: it raises)."""
    if o.impl.conventions.fully_masked_row == "raises" and _fully_masked(o):
        if o.output is not None:
            raise MismatchError("declared fully_masked_row='raises' but returned a result")
        return [Measure("raises on a fully masked row", 0.0, 1.0)]
    out = _output(o)
    return [compare("context", out.context, o.truth.context, o.bounds.context, o.impl.dtype)]


def weights(o: Observation) -> list[Measure]:
    """The weights agree with the spec, when the implementation returns them."""
    if o.output is None or o.output.weights is None:
        return []
    w = o.output.weights
    return [compare("weights", w, o.truth.weights, o.bounds.weights, o.impl.dtype)]


def _returned_weights(o: Observation) -> Float64Array:
    w = _output(o).weights
    if w is None:
        raise MismatchError("weights: the implementation returned none")
    return w


def masked_zero(o: Observation) -> list[Measure]:
    """Disallowed positions get weight exactly 0 (not merely small)."""
    w = _returned_weights(o)
    disallowed = (o.truth.weights == 0) & ~o.allowed
    leaked = np.abs(np.where(disallowed, w, 0.0))
    return [Measure("weights at disallowed positions", float(leaked.max(initial=0)), 0.0)]


def distributions(o: Observation) -> list[Measure]:
    """Returned weights are >= 0 and rows with an allowed key sum to 1.

    Each row's sum may be off by the sum of its weights' bounds.
    """
    w = _returned_weights(o)
    live = np.broadcast_to(o.allowed.any(axis=-1), w.shape[:-1])
    sums = np.where(live, w.sum(axis=-1), 1.0)
    allowed_sum = SAFETY * o.bounds.weights.sum(axis=-1) + underflow_floor(o.impl.dtype)
    gap = np.abs(sums - 1.0)
    worst = np.unravel_index(int(np.argmax(gap / allowed_sum)), gap.shape) if gap.size else ()
    measures = [Measure("|row sum - 1|", float(gap[worst]), float(allowed_sum[worst]))]
    measures.append(Measure("negative weight", float(max(0.0, -np.nanmin(w, initial=0.0))), 0.0))
    return measures


def result_dtype(o: Observation) -> list[Measure]:
    """The result has the implementation's dtype."""
    out = _output(o)
    if out.dtype != o.impl.dtype:
        raise MismatchError(f"result dtype {out.dtype}, the inputs were {o.impl.dtype}")
    return [Measure("result dtype", 0.0, 1.0)]


def not_mutated(o: Observation) -> list[Measure]:
    """No argument is modified in place."""
    out = _output(o)
    if out.mutated:
        raise MismatchError(f"modified its argument(s) {', '.join(out.mutated)} in place")
    return [Measure("arguments modified", 0.0, 1.0)]


def gradients(o: Observation) -> list[Measure]:
    """Gradients by the implementation's autodiff agree with the exact VJP."""
    if o.exact is None or o.gradient_bounds is None:
        return []  # declared NaN rows: no gradient to compare
    if o.gradients is None:
        raise MismatchError(o.gradient_failure or "vjp returned nothing")
    return [
        compare(f"d/d{name}", o.gradients.get(name), exact, o.gradient_bounds[name], o.impl.dtype)
        for name, exact in o.exact.items()
    ]


def unread_gradients(o: Observation) -> list[Measure]:
    """Gradients are finite, and exactly zero at rows that are not read."""
    if o.exact is None or o.unread is None:
        return []
    if o.gradients is None:
        raise MismatchError(o.gradient_failure or "vjp returned nothing")
    measures = []
    for name, rows in o.unread.items():
        grad = o.gradients.get(name)
        if grad is None:
            raise MismatchError(f"d/d{name}: the implementation returned no gradient")
        if not np.isfinite(grad).all():
            raise MismatchError(f"d/d{name}: not finite")
        leaked = np.abs(np.where(rows[..., None], grad, 0.0))
        measures.append(Measure(f"d/d{name} at unread rows", float(leaked.max(initial=0)), 0.0))
    return measures


# --- the catalogue -------------------------------------------------------------------------

SDPA = "scaled_dot_product_attention"
_MASKS: frozenset[Feature] = frozenset({"bool_mask", "key_padding_mask"})
_VALUES: tuple[ValueStyle, ...] = ("normal", "near_ties")
_FORWARD = (context, weights)
_GRADIENTS: frozenset[Feature] = frozenset({"gradients"})
_WEIGHTS: frozenset[Feature] = frozenset({"weights"})

# Every function's checks, one row a clause: the keyword arguments of its Check
# (the function is added below). Unlisted features are drawn in combination.
_COMMON: tuple[dict[str, Any], ...] = (
    dict(clause="formula", draw=Draw(values=_VALUES), judges=_FORWARD),
    dict(clause="distribution.stable", draw=Draw(values=("large_logits",)), judges=_FORWARD),
    dict(clause="distribution.ties-uniform", draw=Draw(values=("ties",)), judges=_FORWARD),
    dict(
        clause="distribution.mask-polarity",
        draw=Draw(masks=("bool", "key_padding")),
        judges=_FORWARD,
        requires_any=_MASKS,
    ),
    dict(
        clause="distribution.masked-zero",
        # large logits expose finite mask constants (-1e4, score - 1e9) that leak
        draw=Draw(values=("normal", "large_logits"), masks=("bool", "key_padding", "additive")),
        judges=(*_FORWARD, masked_zero),
        requires=_WEIGHTS,
        requires_any=_MASKS,
    ),
    dict(
        clause="distribution.fully-masked-row",
        draw=Draw(masks=("fully_masked",)),
        judges=_FORWARD,
        requires_any=_MASKS,
    ),
    dict(
        clause="distribution.sums-to-one", draw=Draw(), judges=(distributions,), requires=_WEIGHTS
    ),
    dict(
        clause="input.unread-positions",
        draw=Draw(masks=("poison",)),
        judges=_FORWARD,
        requires_any=_MASKS,
    ),
    dict(
        clause="input.unread-nonfinite",
        draw=Draw(masks=("nan_poison",)),
        judges=(*_FORWARD, gradients, unread_gradients),
        requires_any=_MASKS,
        gradients=True,
    ),
    dict(clause="input.result-dtype", draw=Draw(values=_VALUES), judges=(result_dtype, *_FORWARD)),
    dict(clause="input.not-mutated", draw=Draw(), judges=(not_mutated,)),
    dict(
        clause="input.gradient",
        draw=Draw(values=_VALUES, masks=(*ORDINARY_MASKS, "fully_masked")),
        judges=(gradients,),
        requires=_GRADIENTS,
        gradients=True,
    ),
    dict(
        clause="input.unread-gradient",
        draw=Draw(masks=("poison", "fully_masked")),
        judges=(gradients, unread_gradients),
        requires=_GRADIENTS,
        requires_any=_MASKS,
        gradients=True,
    ),
)

_SDPA_ONLY: tuple[dict[str, Any], ...] = (
    dict(
        clause="sdpa.default-scale", draw=Draw(values=_VALUES, scales=("default",)), judges=_FORWARD
    ),
    dict(
        clause="score.scale-applied",
        draw=Draw(scales=("random", "zero", "negative", "tiny", "large")),
        judges=_FORWARD,
        requires=frozenset({"scale"}),
    ),
    dict(
        clause="distribution.additive-mask",
        draw=Draw(masks=("additive",)),
        judges=_FORWARD,
        requires=frozenset({"additive_mask"}),
    ),
    dict(
        clause="input.batch-broadcast",
        draw=Draw(masks=("bool", "additive")),
        judges=_FORWARD,
        requires_any=frozenset({"bool_mask", "additive_mask"}),
    ),
    # the causal check draws scale overrides too: a kernel may special-case the causal path
    dict(
        clause="sdpa.causal",
        draw=Draw(causal=True),
        judges=_FORWARD,
        requires=frozenset({"causal"}),
    ),
    dict(
        clause="sdpa.causal-with-mask",
        draw=Draw(causal=True, masks=("bool", "additive")),
        judges=_FORWARD,
        requires=frozenset({"causal_with_mask"}),
    ),
    dict(
        clause="sdpa.grouped-query-heads",
        draw=Draw(gqa=True),
        judges=_FORWARD,
        requires=frozenset({"gqa"}),
    ),
)

_ATTENTION_ONLY: tuple[dict[str, Any], ...] = (
    dict(clause="attention.score", draw=Draw(values=_VALUES), judges=_FORWARD),
    dict(
        clause="sdpa.causal",
        draw=Draw(causal=True),
        judges=_FORWARD,
        requires=frozenset({"causal"}),
    ),
)

_FORMULA = {SDPA: "sdpa.formula", "attention": "attention.composition"}


def _checks(function: str, rows: tuple[dict[str, Any], ...]) -> list[Check]:
    made = []
    for row in rows:
        clause = _FORMULA[function] if row["clause"] == "formula" else row["clause"]
        made.append(Check(**{**row, "clause": clause, "function": function}))
    return made


CHECKS: tuple[Check, ...] = (
    *_checks(SDPA, _COMMON),
    *_checks(SDPA, _SDPA_ONLY),
    *_checks("attention", _COMMON),
    *_checks("attention", _ATTENTION_ONLY),
)
"""Every check the oracle knows, in the order they run."""


def checks_for(impl: Implementation, /) -> list[tuple[Check, str]]:
    """The checks of ``impl``'s function with their clause IDs resolved for ``impl``.

    The causal check enforces the clause of the implementation's declared
    alignment (``sdpa.causal-top-left`` or ``sdpa.causal-bottom-right``), the
    score check that of its score kind (``score.additive``...).
    """
    resolved = []
    for check in CHECKS:
        if check.function != impl.function:
            continue
        clause = check.clause
        if clause == "sdpa.causal":
            clause = f"sdpa.causal-{impl.conventions.causal_alignment.replace('_', '-')}"
        elif clause == "attention.score":
            form = impl.score_form
            clause = f"score.{(form.kind if form else 'dot').replace('_', '-')}"
        resolved.append((check, clause))
    return resolved
