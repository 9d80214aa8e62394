"""The oracle's checks: one per clause, each a case strategy and a verification.

A check names the clause it enforces, the features an implementation needs
for it to apply, the cases it draws and how it judges one case. Judging
returns :class:`Measure` records (what was compared, the error, the
allowance); the runner fails the clause on the first case whose error
exceeds its allowance and lets Hypothesis shrink that case.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from attnref.oracle.cases import CaseSpec, MaskStyle
from attnref.oracle.conventions import Feature
from attnref.oracle.expected import Evaluation, evaluate, fully_masked_rows
from attnref.oracle.gradients import reference_vjp, unread_rows
from attnref.oracle.protocol import Case, Float64Array, Implementation, Output
from attnref.oracle.tolerance import EPSILON, K_OUTPUT, ROUNDING_FLOOR, Tolerance
from attnref.oracle.witnesses import naive_evaluations, naive_vjps

__all__ = ["CHECKS", "Check", "Measure", "MismatchError", "checks_for"]


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


Verify = Callable[[Implementation, Case], list[Measure]]


@dataclass(frozen=True)
class Check:
    """A conformance check of one clause.

    Attributes
    ----------
    clause
        The clause ID it enforces.
    function
        The spec function it applies to.
    requires
        Features the implementation must offer for the check to apply; any
        one of ``requires_any`` as well, when that is not empty.
    spec
        The cases it draws.
    verify
        How one case is judged.
    """

    clause: str
    function: str
    requires: frozenset[Feature]
    spec: CaseSpec
    verify: Verify
    requires_any: frozenset[Feature] = field(default=frozenset())

    @property
    def id(self) -> str:
        """A readable ID for pytest: ``sdpa/distribution.masked-zero``."""
        short = "sdpa" if self.function == "scaled_dot_product_attention" else self.function
        return f"{short}/{self.clause}"

    def missing(self, impl: Implementation) -> str | None:
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


# --- measuring ---------------------------------------------------------------------------


def max_abs_error(actual: npt.NDArray[np.float64], expected: npt.NDArray[np.float64]) -> float:
    """Max-abs difference; a NaN where the other is not NaN, or an infinity, counts as inf."""
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    if np.any(nan_a != nan_e):
        return float("inf")
    both = ~nan_e
    if not both.any():
        return 0.0
    a, e = actual[both], expected[both]
    if np.any(np.isinf(a) | np.isinf(e)):
        return 0.0 if np.array_equal(a, e) else float("inf")
    return float(np.max(np.abs(a - e)))


def magnitude(x: npt.NDArray[np.float64]) -> float:
    """Max-abs of the finite entries (0 for none)."""
    finite = x[np.isfinite(x)]
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def compare(
    what: str,
    actual: npt.NDArray[np.float64] | None,
    truth: npt.NDArray[np.float64],
    naive: Sequence[npt.NDArray[np.float64]],
    dtype: str,
    *,
    gradient: bool = False,
) -> Measure:
    """Error of ``actual`` against the truth, with the allowance of :mod:`.tolerance`.

    ``naive`` holds the naive evaluations in ``dtype`` over several key
    orderings; the largest of their errors is the one the tolerance scales.
    """
    if actual is None:
        raise MismatchError(f"{what}: the implementation returned nothing")
    if actual.shape != truth.shape:
        raise MismatchError(f"{what}: shape {actual.shape}, the spec gives {truth.shape}")
    naive_error = max(max_abs_error(n, truth) for n in naive)
    tolerance = Tolerance(dtype, naive_error, magnitude(truth), gradient)
    return Measure(what, max_abs_error(actual, truth), tolerance.allowed)


def _forward(impl: Implementation, case: Case) -> Output:
    """Run the implementation, turning its exceptions into a mismatch."""
    try:
        with _quiet():
            return impl.forward(case)
    except Exception as error:
        raise MismatchError(f"raised {type(error).__name__}: {error}") from error


def _vjp(impl: Implementation, case: Case, cotangent: Float64Array) -> Mapping[str, Float64Array]:
    """The implementation's gradients, turning its exceptions into a mismatch."""
    try:
        with _quiet():
            return impl.vjp(case, cotangent)
    except Exception as error:
        raise MismatchError(f"vjp raised {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the implementation's own warnings while it runs.

    The verdict is about the numbers; a library's advice (Keras warns about a
    softmax over a single key) must not become a failure where warnings are
    errors, as in this project's test suite.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _expected(impl: Implementation, case: Case) -> tuple[Evaluation, list[Evaluation]]:
    truth = evaluate(case, impl.conventions)
    return truth, naive_evaluations(case, impl.conventions, impl.dtype)


# --- verifications -------------------------------------------------------------------------


def agree(impl: Implementation, case: Case) -> list[Measure]:
    """Context (and weights when returned) agree with the spec within the tolerance."""
    if (
        impl.conventions.fully_masked_row == "raises"
        and fully_masked_rows(case, impl.conventions).any()
    ):
        return raises_on_fully_masked(impl, case)
    out = _forward(impl, case)
    truth, naive = _expected(impl, case)
    measures = [
        compare("context", out.context, truth.context, [n.context for n in naive], impl.dtype)
    ]
    if out.weights is not None:
        naive_weights = [n.weights for n in naive]
        measures.append(compare("weights", out.weights, truth.weights, naive_weights, impl.dtype))
    return measures


def raises_on_fully_masked(impl: Implementation, case: Case) -> list[Measure]:
    """The declared convention ``raises``: a fully masked row must raise."""
    try:
        with _quiet():
            impl.forward(case)
    except Exception:
        return [Measure("raises on a fully masked row", 0.0, 0.0)]
    raise MismatchError("declared fully_masked_row='raises' but returned a result")


def masked_weights_exactly_zero(impl: Implementation, case: Case) -> list[Measure]:
    """Disallowed positions get weight exactly 0 (not merely small)."""
    measures = agree(impl, case)
    out = _forward(impl, case)
    truth = evaluate(case, impl.conventions)
    if out.weights is None:
        raise MismatchError("weights: the implementation returned none")
    disallowed = (truth.weights == 0) & ~np.isnan(truth.weights)
    leaked = np.abs(np.where(disallowed, out.weights, 0.0))
    measures.append(Measure("weights at disallowed positions", float(leaked.max(initial=0)), 0.0))
    return measures


def rows_are_distributions(impl: Implementation, case: Case) -> list[Measure]:
    """Returned weights are >= 0 and rows with an allowed key sum to 1."""
    out = _forward(impl, case)
    if out.weights is None:
        raise MismatchError("weights: the implementation returned none")
    w = out.weights
    live = ~fully_masked_rows(case, impl.conventions)
    live = np.broadcast_to(live, w.shape[:-1])
    t_k = w.shape[-1]
    # Note: a sum of Tk weights each within the allowance carries at most Tk
    # roundings more; the floor covers the final division.
    allowed_sum = (K_OUTPUT * t_k + ROUNDING_FLOOR) * EPSILON[impl.dtype]
    sums = np.where(live, w.sum(axis=-1), 1.0)
    return [
        Measure("|row sum - 1|", float(np.max(np.abs(sums - 1.0), initial=0.0)), allowed_sum),
        Measure("negative weight", float(max(0.0, -np.nanmin(w, initial=0.0))), 0.0),
    ]


def result_dtype(impl: Implementation, case: Case) -> list[Measure]:
    """The result has the implementation's dtype and that dtype's accuracy."""
    measures = agree(impl, case)
    out = _forward(impl, case)
    if out.dtype != impl.dtype:
        raise MismatchError(f"result dtype {out.dtype}, the inputs were {impl.dtype}")
    return measures


def not_mutated(impl: Implementation, case: Case) -> list[Measure]:
    """No argument is modified in place."""
    out = _forward(impl, case)
    if out.mutated:
        raise MismatchError(f"modified its argument(s) {', '.join(out.mutated)} in place")
    return [Measure("arguments modified", 0.0, 0.0)]


def gradients_agree(impl: Implementation, case: Case) -> list[Measure]:
    """Gradients by the implementation's autodiff agree with the reference's exact VJP."""
    if np.isnan(evaluate(case, impl.conventions).context).any():
        return []  # declared NaN rows: their gradient is not defined
    # Note: the cotangent is seeded by the case's bytes (not Python's salted
    # hash), so a replayed counterexample sees the same direction.
    rng = np.random.default_rng(zlib.crc32(case.arrays["query"].tobytes()))
    truth = evaluate(case, impl.conventions)
    cotangent = rng.standard_normal(truth.context.shape)
    got = _vjp(impl, case, cotangent)
    exact = reference_vjp(case, impl.conventions, cotangent)
    naive = naive_vjps(case, impl.conventions, cotangent, impl.dtype)
    measures = []
    for name, expected in exact.items():
        witnesses = [n[name] for n in naive]
        measures.append(
            compare(f"d/d{name}", got.get(name), expected, witnesses, impl.dtype, gradient=True)
        )
    return measures


def unread_gradients_zero(impl: Implementation, case: Case) -> list[Measure]:
    """Gradients are finite, and exactly zero at rows that are not read."""
    measures = gradients_agree(impl, case)
    rows_nan = fully_masked_rows(case, impl.conventions).any()
    if impl.conventions.fully_masked_row == "nan" and rows_nan:
        return measures  # the declared NaN rows have no gradient to hold to anything
    cotangent = np.ones(evaluate(case, impl.conventions).context.shape)
    got = _vjp(impl, case, cotangent)
    for name, rows in unread_rows(case, impl.conventions).items():
        grad = got.get(name)
        if grad is None:
            raise MismatchError(f"d/d{name}: the implementation returned no gradient")
        if not np.isfinite(grad).all():
            raise MismatchError(f"d/d{name}: not finite")
        leaked = np.abs(np.where(rows[..., None], grad, 0.0))
        measures.append(Measure(f"d/d{name} at unread rows", float(leaked.max(initial=0)), 0.0))
    return measures


def nonfinite_unread(impl: Implementation, case: Case) -> list[Measure]:
    """NaN or inf at unread positions changes neither the result nor, if offered, a gradient."""
    measures = agree(impl, case)
    if "gradients" in impl.features:
        measures += unread_gradients_zero(impl, case)
    return measures


# --- the catalogue -------------------------------------------------------------------------

SDPA = "scaled_dot_product_attention"
_NO: frozenset[Feature] = frozenset()


def _f(*names: Feature) -> frozenset[Feature]:
    return frozenset(names)


def _masked(styles: Sequence[MaskStyle], **spec: object) -> CaseSpec:
    return CaseSpec(masks=tuple(styles), **spec)  # type: ignore[arg-type]


def _common(function: str, formula: str) -> list[Check]:
    """Checks every implementation of ``function`` is held to."""
    masks = _f("bool_mask", "key_padding_mask")
    return [
        Check(formula, function, _NO, CaseSpec(values=("normal",)), agree),
        Check("distribution.stable", function, _NO, CaseSpec(values=("large_logits",)), agree),
        Check("distribution.ties-uniform", function, _NO, CaseSpec(values=("ties",)), agree),
        Check(
            "distribution.mask-polarity",
            function,
            _NO,
            _masked(("bool", "key_padding")),
            agree,
            masks,
        ),
        Check(
            "distribution.masked-zero",
            function,
            _f("weights"),
            # large logits expose finite mask constants (-1e4, score - 1e9) that leak
            _masked(("bool", "key_padding"), values=("normal", "large_logits")),
            masked_weights_exactly_zero,
            masks,
        ),
        Check(
            "distribution.fully-masked-row",
            function,
            _NO,
            _masked(("fully_masked",)),
            agree,
            masks,
        ),
        Check(
            "distribution.sums-to-one",
            function,
            _f("weights"),
            _masked(("none", "bool", "key_padding")),
            rows_are_distributions,
        ),
        Check("input.unread-positions", function, _NO, _masked(("poison",)), agree, masks),
        Check(
            "input.unread-nonfinite",
            function,
            _NO,
            _masked(("nan_poison",)),
            nonfinite_unread,
            masks,
        ),
        Check(
            "input.result-dtype",
            function,
            _NO,
            CaseSpec(values=("normal", "near_ties")),
            result_dtype,
        ),
        Check("input.not-mutated", function, _NO, _masked(("none", "bool")), not_mutated),
        Check(
            "input.gradient", function, _f("gradients"), _masked(("none", "bool")), gradients_agree
        ),
        Check(
            "input.unread-gradient",
            function,
            _f("gradients"),
            _masked(("poison", "fully_masked")),
            unread_gradients_zero,
            masks,
        ),
    ]


def _sdpa_only() -> list[Check]:
    return [
        Check("sdpa.default-scale", SDPA, _NO, CaseSpec(values=("normal", "near_ties")), agree),
        Check(
            "score.scale-applied",
            SDPA,
            _f("scale"),
            CaseSpec(scales=("random", "zero", "negative", "large")),
            agree,
        ),
        Check(
            "distribution.additive-mask",
            SDPA,
            _f("additive_mask"),
            _masked(("additive",)),
            agree,
        ),
        Check(
            "input.batch-broadcast",
            SDPA,
            _f("bool_mask"),
            _masked(("bool",), broadcast_masks=True),
            agree,
        ),
        Check(
            "sdpa.causal",
            SDPA,
            _f("causal"),
            # with scale overrides too: a kernel may special-case the causal path
            CaseSpec(causal=True, unequal_lengths=True, scales=("default", "random", "negative")),
            agree,
        ),
        Check(
            "sdpa.causal-with-mask",
            SDPA,
            _f("causal_with_mask"),
            _masked(("bool",), causal=True, unequal_lengths=True),
            agree,
        ),
        Check("sdpa.grouped-query-heads", SDPA, _f("gqa"), CaseSpec(gqa=True), agree),
    ]


CHECKS: tuple[Check, ...] = (
    *_common(SDPA, "sdpa.formula"),
    *_sdpa_only(),
    *_common("attention", "attention.composition"),
    Check("attention.score", "attention", _NO, CaseSpec(values=("normal", "near_ties")), agree),
    Check(
        "sdpa.causal",
        "attention",
        _f("causal"),
        CaseSpec(causal=True, unequal_lengths=True),
        agree,
    ),
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
