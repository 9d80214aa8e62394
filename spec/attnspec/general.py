"""Rules that hold for every function of the spec.

Each function's own page states its formula; the clauses here govern how
every function treats its arguments: which dtypes and shapes it accepts, how
batch dimensions broadcast, what it does with NaN and infinity, which
positions it may read, and that it never modifies its inputs.

Positions that are *read*
    A position of an input is read when some output element depends on it
    under the formula and the mask. Keys and values that no query row may
    attend to, query rows with no allowed key, scores at disallowed
    positions and value rows whose weight is zero in every query row are
    *not read*.
"""

from __future__ import annotations

from attnspec.clauses import REFERENCE_ERRORS, Clause, declare

__all__: list[str] = []

declare(
    Clause(
        "input.float-dtype",
        "Array arguments other than masks have a real floating dtype (float16, float32 or "
        "float64; an implementation may add others such as bfloat16). A boolean, integer or "
        "object array raises :class:`~attnspec.errors.DTypeError`.",
        scope="reference",
        scope_reason=(
            "The oracle hands every implementation floating arrays of the one dtype it "
            "declares, so the first sentence is the oracle's precondition rather than a "
            "property to check, and the second names the reference's error for other arrays "
            "(a third-party kernel raises its own framework's errors)."
        ),
    ),
    Clause(
        "input.complex-extension",
        "An implementation may also accept complex floating arrays. Where it does, every "
        "function is the analytic continuation of its real formula (no absolute values, "
        "conjugates or branches on values; the softmax is shifted by the maximum of the "
        "real part), so that complex-step differentiation "
        ":math:`f'(x) = \\operatorname{Im} f(x + ih) / h` is exact to rounding. The NumPy "
        "reference does; masks and scales stay real.",
        scope="reference",
        scope_reason=(
            "Complex arguments are an optional extension, which the reference takes so that "
            "its derivatives can be checked by complex steps (``tests/test_gradcheck.py``); no "
            "other implementation has to accept them, and the oracle's cases are real."
        ),
    ),
    Clause(
        "input.result-dtype",
        "The result has the dtype that NumPy promotion (NEP 50, Python scalars weak) gives "
        "the floating array arguments, masks excluded: float32 inputs give a float32 result, "
        "and a float64 call is computed in float64, never in a lower precision. In the "
        "composites the weights have the dtype promoted over the arrays the scores read "
        "(query, keys and score parameters) and the context that of the weights and values.",
    ),
    Clause(
        "input.rank",
        "Sequence arrays have at least two dimensions ``[..., T, d]``; weight matrices are "
        "exactly two-dimensional and weight vectors exactly one-dimensional, acting on "
        "column vectors as in the papers (:math:`W x`). Any other rank raises "
        ":class:`~attnspec.errors.ShapeError`.",
        "raises",
        scope="reference",
        scope_reason=REFERENCE_ERRORS,
    ),
    Clause(
        "input.batch-broadcast",
        "Leading batch dimensions ``...`` of the sequence arrays and of the mask broadcast "
        "with NumPy's rules; shapes that do not broadcast raise "
        ":class:`~attnspec.errors.ShapeError`.",
    ),
    Clause(
        "input.sizes-agree",
        "Every size that two arguments share by name in a function's Parameters must be "
        "equal (for example ``d_k`` of ``keys`` and of ``W_a``); a mismatch raises "
        ":class:`~attnspec.errors.ShapeError` naming both arguments and both sizes.",
        "raises",
        scope="reference",
        scope_reason=REFERENCE_ERRORS,
    ),
    Clause(
        "input.nonempty",
        "The key axis ``Tk`` and every feature axis have at least one element; an empty one "
        "raises :class:`~attnspec.errors.ShapeError`. An empty query axis (``Tq = 0``) or "
        "batch axis is allowed and gives an empty result.",
        "raises",
        scope="reference",
        scope_reason=(
            f"{REFERENCE_ERRORS} The empty query axis it allows is part of that API too: the "
            "oracle draws at least one query row."
        ),
    ),
    Clause(
        "input.finite",
        "A NaN or an infinity at a position that is read raises "
        ":class:`~attnspec.errors.NonFiniteInputError`. The only non-finite value with a "
        "meaning is :math:`-\\infty`, in an additive mask or a score, where it marks the "
        "position as not allowed.",
        "raises",
        scope="reference",
        scope_reason=(
            f"{REFERENCE_ERRORS} A kernel need not validate what it reads (NaN there gives "
            "NaN in every library); the oracle places non-finite values only where they are "
            "not read (``input.unread-nonfinite``)."
        ),
    ),
    Clause(
        "input.unread-positions",
        "A position that is not read has no effect on any output or gradient: replacing its "
        "value by any other finite value, however large, changes nothing.",
    ),
    Clause(
        "input.unread-nonfinite",
        "NaN or an infinity at a position that is not read raises nothing and changes no "
        "output or gradient either (no ``0 * NaN`` leaks through a zero weight).",
        level="recommended",
        reason="It hardens against garbage in padding that a correct implementation never "
        "reads: with finite values there ``input.unread-positions`` already fixes every "
        "output and gradient, while every mainstream library (PyTorch's SDPA and "
        "flex_attention, JAX, flax, transformers, tinygrad) lets NaN through a zero weight "
        "as ``0 * NaN``, so a MUST would fail them all and tell a user nothing.",
    ),
    Clause(
        "input.not-mutated",
        "No function modifies any of its arguments.",
    ),
    Clause(
        "input.scale-finite",
        "A ``scale`` argument is a finite real number (``int`` or ``float``, not ``bool``) "
        "that stays finite in the result dtype; zero and negative values are legal. A "
        "non-finite value, or one that overflows the result dtype (``1e5`` in float16), "
        "raises :class:`~attnspec.errors.ArgumentError`, a value of another type "
        ":class:`~attnspec.errors.DTypeError`.",
        "raises",
        scope="reference",
        scope_reason=(
            f"{REFERENCE_ERRORS} The legal range it states, zero and negative scales "
            "included, is checked on every implementation by ``score.scale-applied``."
        ),
    ),
    Clause(
        "input.gradient",
        "Every function is differentiable with respect to each floating argument wherever its "
        "read inputs are finite, except on the boundaries of masks and local windows; an "
        "implementation's gradients (vector-Jacobian products) are the derivatives of the "
        "formula, to the accuracy allowed for its dtype.",
    ),
    Clause(
        "input.unread-gradient",
        "The gradient of every output with respect to a position that is not read is "
        "exactly zero, and every gradient is finite wherever the inputs are read and finite.",
    ),
)
