"""The oracle's checks: one per clause, each a case strategy and a verification.

A check names the clause it enforces, the features an implementation needs
for it to apply, the cases it draws and the judges of one observed case
(:mod:`attnref.oracle.observe`). Every judge reads the same observation and
returns :class:`Measure` records (what was compared, the error, the
allowance); no judge runs anything. The runner fails the clause on the first
case whose error exceeds its allowance and lets Hypothesis shrink that case.

The composites (SDPA and ``attention``) and every step function, the local
distributions included, have their checks; the clauses no check enforces are
those the spec marks as statements about the reference alone
(:data:`attnspec.clauses.Scope`), which :func:`clauses_checked` lets a test
confirm.
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
from attnref.oracle.tolerance import SAFETY, underflow_floor, unit_roundoff
from attnspec.typing import ScoreKind

__all__ = [
    "CHECKS",
    "Check",
    "Judge",
    "Measure",
    "MismatchError",
    "checks_for",
    "clauses_checked",
    "compare",
]


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
    # Note: an infinity the truth has too (a log-sum-exp of -inf) is an exact match; its
    # difference (inf - inf = NaN) must not reach argmax, where it would hide every error.
    compared = finite & ~(np.isinf(truth) & (actual == truth))
    with np.errstate(invalid="ignore"):
        error = np.where(
            compared, np.abs(np.where(compared, actual, 0.0) - np.where(compared, truth, 0.0)), 0.0
        )
    allowed = SAFETY * np.broadcast_to(bound, error.shape) + underflow_floor(dtype)
    # Note: a NaN allowance (a bound gone wrong) allows nothing, so it can hide no error
    # elsewhere from argmax; an exact match needs no allowance.
    allowed = np.where(np.isnan(allowed), 0.0, allowed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / allowed)
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


def log_sum_exp(o: Observation) -> list[Measure]:
    """The log-sum-exp an implementation returns beside the context agrees with the spec
    (``sdpa.log-sum-exp``): :math:`-\\infty` exactly for a row with no key and no sink."""
    lse = _output(o).lse
    if lse is None:
        raise MismatchError("lse: the implementation returned none")
    return [compare("lse", lse, o.truth.lse, o.bounds.lse, o.impl.dtype)]


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
    """Returned weights are >= 0 and rows with an allowed key sum to 1, or with a sink to
    :math:`1 - e^{\\sigma_h - \\ell_i}` (``sdpa.sinks``).

    Each row's sum may be off by the sum of its weights' bounds.
    """
    w = _returned_weights(o)
    live = np.broadcast_to(o.allowed.any(axis=-1), w.shape[:-1])
    target = np.ones(w.shape[:-1])
    if o.case.sinks is not None:
        target = np.nansum(o.truth.weights, axis=-1)  # 1 less the sink's share of the row
    sums = np.where(live, w.sum(axis=-1), target)
    allowed_sum = SAFETY * o.bounds.weights.sum(axis=-1) + underflow_floor(o.impl.dtype)
    gap = np.abs(sums - target)
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
        # rows of a sequence array, or (a step's scores) the very elements not read
        where = rows if rows.shape == grad.shape else rows[..., None]
        leaked = np.abs(np.where(where, grad, 0.0))
        measures.append(Measure(f"d/d{name} at unread rows", float(leaked.max(initial=0)), 0.0))
    return measures


# --- judges of a step's one result ------------------------------------------------------


def _result(o: Observation) -> Float64Array:
    """The step's result, of the spec's shape, NaN only where a declared convention has it;
    those rows read as 0, so that the other judges can skip them."""
    got = _output(o).result
    truth = o.truth.result
    if got.shape != truth.shape:
        raise MismatchError(f"result: shape {got.shape}, the spec gives {truth.shape}")
    if np.isnan(got).any() or np.isnan(truth).any():
        compare("result", got, truth, o.bounds.result, o.impl.dtype)  # NaN where it may be
        return np.where(np.isnan(truth), 0.0, got)
    return got


def _step_raises(o: Observation) -> bool:
    """Whether the case has a row that a declared ``raises`` convention is to raise on."""
    return o.impl.conventions.fully_masked_row == "raises" and bool(
        o.case.function == "attention_distribution" and _fully_masked(o)
    )


def result(o: Observation) -> list[Measure]:
    """A step's result agrees with the spec, element by element (or raises, as declared)."""
    if _step_raises(o):
        if o.output is not None:
            raise MismatchError("declared fully_masked_row='raises' but returned a result")
        return [Measure("raises on a fully masked row", 0.0, 1.0)]
    return [compare("result", _output(o).result, o.truth.result, o.bounds.result, o.impl.dtype)]


def outside_zero(o: Observation) -> list[Measure]:
    """A softmax step's result is exactly 0 wherever it may not attend (window, mask), except
    where a declared convention fills a fully masked row."""
    if _step_raises(o):
        return []
    got = _result(o)
    leaked = np.abs(np.where(o.allowed | (o.truth.result != 0), 0.0, got))
    return [Measure("weights outside the window and mask", float(leaked.max(initial=0)), 0.0)]


def _row_sums(o: Observation, expected: Float64Array, what: str) -> list[Measure]:
    """Each row of the result sums to ``expected`` within the sum of its elements' bounds."""
    got = _result(o)
    sums = got.sum(axis=-1)
    allowed_sum = SAFETY * o.bounds.result.sum(axis=-1) + underflow_floor(o.impl.dtype)
    gap = np.abs(sums - expected)
    if gap.size == 0:
        return [Measure(what, 0.0, 1.0)]
    worst = np.unravel_index(int(np.argmax(gap / allowed_sum)), gap.shape)
    return [Measure(what, float(gap[worst]), float(allowed_sum[worst]))]


def row_distributions(o: Observation) -> list[Measure]:
    """A softmax step's rows with an allowed key sum to 1, the others to 0 (or to what a
    declared convention's rows sum to); no weight is negative."""
    if _step_raises(o):
        return []
    got = _result(o)
    live = o.allowed.any(axis=-1)
    spec_sums = np.nan_to_num(o.truth.result).sum(axis=-1)
    measures = _row_sums(o, np.where(live, 1.0, spec_sums), "|row sum - 1|")
    measures.append(Measure("negative weight", float(max(0.0, -got.min(initial=0.0))), 0.0))
    return measures


def spec_row_sums(o: Observation) -> list[Measure]:
    """Each row sums to what the spec's row sums to (local-p: no renormalisation)."""
    return _row_sums(o, o.truth.result.sum(axis=-1), "|row sum - the spec's row sum|")


def unit_interval(o: Observation) -> list[Measure]:
    """Weights lie in [0, 1] (a tanh in [-1, 1]): nothing below, nothing beyond rounding above."""
    if _step_raises(o):
        return []
    got = _result(o)
    if o.case.function == "attentional_hidden_state":
        excess, what = np.abs(got) - 1.0, "|entry| beyond 1"
    else:
        below = float(max(0.0, -got.min(initial=0.0)))
        if below > 0:
            return [Measure("negative weight", below, 0.0)]
        excess, what = got - 1.0, "weight beyond 1"
    if not excess.size:
        return [Measure(what, 0.0, 1.0)]
    allowed = SAFETY * o.bounds.result + underflow_floor(o.impl.dtype)
    worst = np.unravel_index(int(np.argmax(excess / allowed)), excess.shape)
    return [Measure(what, float(max(0.0, excess[worst])), float(allowed[worst]))]


def position_range(o: Observation) -> list[Measure]:
    """Local-p positions lie in [0, S - 1] (to rounding at the ends)."""
    got = _result(o)
    top = float(int(o.case.options["source_length"]) - 1)  # type: ignore[call-overload]
    beyond = np.maximum(-got, got - top)
    allowed = SAFETY * o.bounds.result + underflow_floor(o.impl.dtype)
    if not beyond.size:
        return [Measure("position beyond [0, S - 1]", 0.0, 1.0)]
    worst = np.unravel_index(int(np.argmax(beyond / allowed)), beyond.shape)
    return [
        Measure("position beyond [0, S - 1]", float(max(0.0, beyond[worst])), float(allowed[worst]))
    ]


def convex_hull(o: Observation) -> list[Measure]:
    """Context rows whose weights are a distribution lie between the values they read.

    A row qualifies when its weights are nonnegative and sum to 1 up to their
    rounding to the dtype; the exact context may then leave the hull by that
    sum's gap times the largest value, which is allowed on top of the bound.
    """
    got = _result(o)
    w = np.asarray(o.case.arrays["weights"])
    v = np.asarray(o.case.arrays["values"])
    batch = np.broadcast_shapes(w.shape[:-2], v.shape[:-2])
    w = np.broadcast_to(w, (*batch, *w.shape[-2:]))  # [..., Tq, Tk]
    v = np.broadcast_to(v, (*batch, *v.shape[-2:]))  # [..., Tk, d_v]
    t_k = w.shape[-1]
    gap = np.abs(w.sum(axis=-1) - 1.0)  # [..., Tq]
    rows = (w >= 0).all(axis=-1) & (gap <= 2 * t_k * unit_roundoff(o.impl.dtype))
    read = (w > 0)[..., None]  # [..., Tq, Tk, 1]
    with np.errstate(invalid="ignore"):
        top = np.max(np.where(read, v[..., None, :, :], -np.inf), axis=-2)  # [..., Tq, d_v]
        bottom = np.min(np.where(read, v[..., None, :, :], np.inf), axis=-2)
        largest = np.max(np.where(read, np.abs(v[..., None, :, :]), 0.0), axis=-2)
        outside = np.maximum(got - top, bottom - got)
    outside = np.where(rows[..., None], np.maximum(outside, 0.0), 0.0)
    allowed = SAFETY * o.bounds.result + gap[..., None] * largest + underflow_floor(o.impl.dtype)
    if not outside.size:
        return [Measure("context outside the values' hull", 0.0, 1.0)]
    worst = np.unravel_index(int(np.argmax(outside / allowed)), outside.shape)
    return [
        Measure("context outside the values' hull", float(outside[worst]), float(allowed[worst]))
    ]


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
    # the restrictions of current kernels; each is drawn with the others it offers, and
    # large logits show a cap applied after the mask (it turns -inf into -c)
    dict(
        clause="sdpa.softcap",
        draw=Draw(softcap=True, values=("normal", "large_logits"), masks=ORDINARY_MASKS),
        judges=_FORWARD,
        requires=frozenset({"softcap"}),
    ),
    dict(
        clause="sdpa.window",
        draw=Draw(window=True),
        judges=_FORWARD,
        requires=frozenset({"window"}),
    ),
    dict(
        clause="sdpa.query-offset",
        draw=Draw(query_offset=True, causal=True),
        judges=_FORWARD,
        requires=frozenset({"query_offset"}),
        requires_any=frozenset({"causal", "window"}),
    ),
    dict(
        clause="sdpa.key-lengths",
        draw=Draw(key_lengths=True, masks=("none",)),
        judges=_FORWARD,
        requires=frozenset({"key_lengths"}),
    ),
    # sink logits, drawn with every other feature; the gradient includes d/dsinks
    dict(
        clause="sdpa.sinks",
        draw=Draw(sinks=True, values=_VALUES, masks=(*ORDINARY_MASKS, "fully_masked")),
        judges=(*_FORWARD, gradients),
        requires=frozenset({"sinks"}),
        gradients=True,
    ),
    dict(
        clause="sdpa.log-sum-exp",
        draw=Draw(values=(*_VALUES, "large_logits"), masks=(*ORDINARY_MASKS, "fully_masked")),
        judges=(context, log_sum_exp),
        requires=frozenset({"lse"}),
    ),
    # every case has a row with no key (and no sink to normalise it): -inf exactly
    dict(
        clause="lse.fully-masked-row",
        draw=Draw(sinks=False, masks=("fully_masked",)),
        judges=(context, log_sum_exp),
        requires=frozenset({"lse"}),
        requires_any=_MASKS,
    ),
    dict(
        clause="sdpa.restrictions-combine",
        draw=Draw(window=True, key_lengths=True, causal=True, masks=("bool", "additive")),
        judges=_FORWARD,
        requires_any=frozenset({"window", "key_lengths"}),
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

# The steps' checks, one table a function (a row per clause, as above). Their cases
# broadcast batch dimensions between arguments throughout.
_STEP_COMMON: tuple[dict[str, Any], ...] = (
    dict(clause="input.result-dtype", draw=Draw(), judges=(result_dtype, result)),
    dict(clause="input.not-mutated", draw=Draw(), judges=(not_mutated,)),
)

_LOCAL_COMMON: tuple[dict[str, Any], ...] = (
    *_STEP_COMMON,
    dict(clause="input.batch-broadcast", draw=Draw(masks=("none", "bool")), judges=(result,)),
    dict(clause="input.unread-positions", draw=Draw(masks=("poison",)), judges=(result,)),
    dict(
        clause="input.unread-nonfinite",
        draw=Draw(masks=("nan_poison",)),
        judges=(result, gradients, unread_gradients),
        gradients=True,
    ),
)

_LOCAL_M: tuple[dict[str, Any], ...] = (
    dict(
        clause="local.m-position",
        draw=Draw(values=_VALUES, masks=("none", "bool"), unequal_lengths=True),
        judges=(result,),
    ),
    dict(
        clause="local.window",
        draw=Draw(masks=("none", "bool", "fully_masked")),
        judges=(result, outside_zero),
    ),
    dict(
        clause="local.window-softmax",
        draw=Draw(values=("normal", "near_ties", "ties", "large_logits")),
        judges=(result, row_distributions),
    ),
    *_LOCAL_COMMON,
    dict(
        clause="input.gradient",
        draw=Draw(values=_VALUES, masks=("none", "bool", "fully_masked")),
        judges=(gradients,),
        requires=_GRADIENTS,
        gradients=True,
    ),
    dict(
        clause="input.unread-gradient",
        draw=Draw(masks=("poison", "fully_masked")),
        judges=(gradients, unread_gradients),
        requires=_GRADIENTS,
        gradients=True,
    ),
)

# Note: the gradient checks of local-p draw no key on a window's edge, where the weights
# jump and the spec prescribes no derivative (input.gradient).
_OFF_EDGE: tuple[Any, ...] = ("off_grid",)
_LOCAL_P: tuple[dict[str, Any], ...] = (
    dict(
        clause="local.p-window",
        draw=Draw(masks=("none", "bool", "fully_masked")),
        judges=(result, outside_zero),
    ),
    dict(
        clause="local.p-gaussian",
        draw=Draw(values=("normal", "near_ties", "ties"), positions=("off_grid", "grid")),
        judges=(result, spec_row_sums),
    ),
    *_LOCAL_COMMON,
    dict(
        clause="input.gradient",
        draw=Draw(values=_VALUES, masks=("none", "bool", "fully_masked"), positions=_OFF_EDGE),
        judges=(gradients,),
        requires=_GRADIENTS,
        gradients=True,
    ),
    dict(
        clause="input.unread-gradient",
        draw=Draw(masks=("poison", "fully_masked"), positions=_OFF_EDGE),
        judges=(gradients, unread_gradients),
        requires=_GRADIENTS,
        gradients=True,
    ),
)

_POSITION: tuple[dict[str, Any], ...] = (
    dict(
        clause="local.p-position",
        draw=Draw(values=("normal", "large_logits")),
        judges=(result, position_range),
    ),
    *_STEP_COMMON,
)

_STEP_MASKS: frozenset[Feature] = frozenset({"bool_mask", "key_padding_mask", "additive_mask"})
_DISTRIBUTION: tuple[dict[str, Any], ...] = (
    dict(clause="distribution.softmax", draw=Draw(values=_VALUES), judges=(result,)),
    dict(
        clause="distribution.nonnegative",
        draw=Draw(values=("normal", "large_logits")),
        judges=(result, unit_interval),
    ),
    dict(clause="distribution.sums-to-one", draw=Draw(), judges=(row_distributions,)),
    dict(
        clause="distribution.masked-zero",
        draw=Draw(values=("normal", "large_logits"), masks=("bool", "key_padding", "additive")),
        judges=(result, outside_zero),
        requires_any=_STEP_MASKS,
    ),
    dict(
        clause="distribution.mask-polarity",
        draw=Draw(masks=("bool", "key_padding")),
        judges=(result,),
        requires_any=_MASKS,
    ),
    dict(
        clause="distribution.additive-mask",
        draw=Draw(masks=("additive",)),
        judges=(result,),
        requires=frozenset({"additive_mask"}),
    ),
    dict(clause="distribution.shift-invariant", draw=Draw(values=("shifted",)), judges=(result,)),
    dict(clause="distribution.stable", draw=Draw(values=("large_logits",)), judges=(result,)),
    dict(clause="distribution.ties-uniform", draw=Draw(values=("ties",)), judges=(result,)),
    dict(
        clause="distribution.fully-masked-row",
        draw=Draw(masks=("fully_masked",)),
        judges=(result, outside_zero),
        requires_any=_MASKS,
    ),
    dict(
        clause="input.unread-positions",
        draw=Draw(masks=("poison",)),
        judges=(result,),
        requires_any=_MASKS,
    ),
    dict(
        clause="input.unread-nonfinite",
        draw=Draw(masks=("nan_poison",)),
        judges=(result,),
        requires_any=_MASKS,
    ),
    *_STEP_COMMON,
)

_LOG_SUM_EXP: tuple[dict[str, Any], ...] = (
    dict(clause="lse.formula", draw=Draw(values=_VALUES), judges=(result,)),
    dict(
        clause="lse.normalizes",
        draw=Draw(masks=("bool", "key_padding", "additive")),
        judges=(result,),
        requires_any=_STEP_MASKS,
    ),
    dict(clause="lse.stable", draw=Draw(values=("large_logits", "shifted")), judges=(result,)),
    dict(
        clause="lse.fully-masked-row",
        draw=Draw(masks=("fully_masked",)),
        judges=(result,),
        requires_any=_MASKS,
    ),
    dict(
        clause="distribution.additive-mask",
        draw=Draw(masks=("additive",)),
        judges=(result,),
        requires=frozenset({"additive_mask"}),
    ),
    dict(
        clause="input.unread-positions",
        draw=Draw(masks=("poison",)),
        judges=(result,),
        requires_any=_MASKS,
    ),
    dict(
        clause="input.unread-nonfinite",
        draw=Draw(masks=("nan_poison",)),
        judges=(result,),
        requires_any=_MASKS,
    ),
    *_STEP_COMMON,
)

_VALUE: tuple[dict[str, Any], ...] = (
    dict(clause="value.weighted-sum", draw=Draw(), judges=(result,)),
    dict(clause="value.convex-hull", draw=Draw(), judges=(result, convex_hull)),
    dict(clause="value.linear", draw=Draw(values=("normal", "large_logits")), judges=(result,)),
    dict(clause="value.zero-weight-unread", draw=Draw(masks=("nan_poison",)), judges=(result,)),
    *_STEP_COMMON,
)

_CONCAT: tuple[dict[str, Any], ...] = (
    dict(clause="concat.context-first", draw=Draw(), judges=(result,)),
    *_STEP_COMMON,
)

_HIDDEN: tuple[dict[str, Any], ...] = (
    dict(
        clause="hidden.tanh",
        draw=Draw(values=("normal", "large_logits")),
        judges=(result, unit_interval),
    ),
    *_STEP_COMMON,
)

_OUTPUT: tuple[dict[str, Any], ...] = (
    dict(
        clause="output.softmax",
        draw=Draw(values=("normal", "large_logits")),
        judges=(result, row_distributions),
    ),
    *_STEP_COMMON,
)

_SCORE_KINDS: tuple[ScoreKind, ...] = (
    "dot",
    "scaled_dot",
    "general",
    "concat",
    "additive",
    "location",
)


def _score_rows(kind: ScoreKind) -> tuple[dict[str, Any], ...]:
    """The checks of ``score_<kind>``: its formula, the shape rule, and the scale's rules."""
    rows: list[dict[str, Any]] = [
        dict(clause=f"score.{kind.replace('_', '-')}", draw=Draw(values=_VALUES), judges=(result,)),
        dict(clause="score.shape", draw=Draw(), judges=(result,)),
    ]
    if kind == "scaled_dot":
        rows += [
            dict(
                clause="score.default-scale",
                draw=Draw(values=_VALUES, scales=("default",)),
                judges=(result,),
            ),
            dict(
                clause="score.scale-applied",
                draw=Draw(scales=("random", "zero", "negative", "tiny", "large")),
                judges=(result,),
                requires=frozenset({"scale"}),
            ),
        ]
    return (*rows, *_STEP_COMMON)


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
    *_checks("local_m_distribution", _LOCAL_M),
    *_checks("local_p_distribution", _LOCAL_P),
    *_checks("local_p_position", _POSITION),
    *_checks("attention_distribution", _DISTRIBUTION),
    *_checks("log_sum_exp", _LOG_SUM_EXP),
    *_checks("attention_value", _VALUE),
    *_checks("concatenate_context", _CONCAT),
    *_checks("attentional_hidden_state", _HIDDEN),
    *_checks("output_distribution", _OUTPUT),
    *(c for kind in _SCORE_KINDS for c in _checks(f"score_{kind}", _score_rows(kind))),
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


def clauses_checked() -> frozenset[str]:
    """Every clause some check enforces, for some implementation.

    The causal check of a composite enforces the clause of either alignment,
    the score check of ``attention`` that of any score kind.
    """
    found = set()
    for check in CHECKS:
        if check.clause == "sdpa.causal":
            found |= {"sdpa.causal-top-left", "sdpa.causal-bottom-right"}
        elif check.clause == "attention.score":
            found |= {f"score.{kind.replace('_', '-')}" for kind in _SCORE_KINDS}
        else:
            found.add(check.clause)
    return frozenset(found)
