"""The analytic VJPs of :mod:`attnref.vjp` against three independent witnesses.

For every spec function, on Hypothesis inputs drawn with plain
``hypothesis.extra.numpy`` strategies (broadcast batches, boolean and additive
masks with fully masked rows, causal masks of both alignments, grouped query
heads), the VJP agrees with

- complex-step differentiation of the NumPy forward, to ``complex_step.rtol``;
- central differences of the forward, to ``central_difference.rtol``;
- PyTorch autograd of the :mod:`attnref.torch` twin in float64, to
  ``autograd.rtol.float64``;

all from the one table :data:`attnref.testing.gradcheck.SETTINGS`. Masked,
unread and fully masked positions get exactly zero, finite gradients.

SDPA draws take a cap, sink logits (a differentiable keyword array, so their
gradient is checked like the query's) and ``return_lse`` (a third output, whose
``-inf`` rows are constants). The cap is a keyword number that the forward
requires to be real, out of the complex step's reach: its derivative is checked
against :func:`mpmath.diff` of the forward written afresh at 50 digits, within
:func:`tolerances.cap_derivative_bound`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import mpmath  # type: ignore[import-untyped]
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import attnref
import attnspec
import tolerances as tol
from attnref import vjp as V  # noqa: N812
from attnref.testing import gradcheck
from attnspec.errors import ShapeError
from attnspec.typing import Array

torch: ModuleType | None
twin: ModuleType | None
try:
    import torch

    import attnref.torch as twin
except ImportError:  # the torch extra is optional for users; the nox tests install it
    torch = twin = None

F64 = np.ndarray[Any, np.dtype[np.float64]]


# --- cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call of a spec function: its differentiable arrays and its fixed options.

    ``positional`` arrays go first, in order; ``keyword`` arrays are the
    differentiable keyword arguments (the score parameters of ``attention``);
    ``options`` are everything else (masks, scale, flags). ``smooth`` is
    False when a local-p position sits exactly on a window boundary, where
    the function jumps (``input.gradient``) and finite differences are
    meaningless.
    """

    name: str
    positional: tuple[tuple[str, F64], ...]
    keyword: tuple[tuple[str, F64], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    smooth: bool = True

    @property
    def names(self) -> list[str]:
        return [n for n, _ in (*self.positional, *self.keyword)]

    @property
    def primals(self) -> list[F64]:
        return [x for _, x in (*self.positional, *self.keyword)]

    def _split(self, xs: Sequence[Any]) -> tuple[list[Any], dict[str, Any]]:
        n = len(self.positional)
        return list(xs[:n]), dict(zip((k for k, _ in self.keyword), xs[n:], strict=True))

    def forward(self, *xs: Any) -> Any:
        """The NumPy reference, options bound."""
        args, kwargs = self._split(xs)
        return getattr(attnref, self.name)(*args, **kwargs, **self.options)

    def vjp(self, xs: Sequence[Any], cotangent: Any) -> list[Any]:
        """The analytic VJP, one gradient per primal."""
        args, kwargs = self._split(xs)
        grads = V.VJPS[self.name](*args, **kwargs, **self.options, cotangent=cotangent)
        return [getattr(grads, n) for n in self.names]

    def twin(self, *xs: Any) -> Any:
        """The PyTorch twin, options (masks) converted to tensors."""
        assert torch is not None
        assert twin is not None
        args, kwargs = self._split(xs)
        options = {
            k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in self.options.items()
        }
        return getattr(twin, self.name)(*args, **kwargs, **options)


TINY = 2.0**-20
"""Smallest non-zero magnitude drawn: the inputs are well conditioned, and a complex step of
``1e-30`` times a derivative of ``1e-300`` would underflow (see ``complex_step.step``)."""


def elements(bound: float = 3.0) -> st.SearchStrategy[float]:
    """Float64 values in ``[-bound, bound]``: zero, or of magnitude at least :data:`TINY`."""
    return st.just(0.0) | st.floats(TINY, bound) | st.floats(-bound, -TINY)


def array(draw: st.DrawFn, shape: tuple[int, ...], bound: float = 3.0) -> F64:
    """A float64 array of ``shape`` with elements in ``[-bound, bound]``."""
    return draw(hnp.arrays(np.float64, shape, elements=elements(bound)))


def batches(draw: st.DrawFn, count: int) -> list[tuple[int, ...]]:
    """``count`` mutually broadcastable batch shapes of up to two dimensions."""
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=count, max_dims=2, max_side=2))
    return list(shapes.input_shapes)


def mask_for(draw: st.DrawFn, shape: tuple[int, ...], *, additive: bool = True) -> Any:
    """``None``, a boolean or an additive (``-inf`` or finite) mask broadcastable to ``shape``."""
    kinds = ["none", "bool", "additive"] if additive else ["none", "bool"]
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    # Note: each mask axis is 1 or the scores' size, so the mask broadcasts *to* the scores;
    # hnp.broadcastable_shapes may also stretch a size-1 axis of the scores, which the spec
    # rejects (distribution.mask-shape).
    ndim = draw(st.integers(1, len(shape)), label="mask ndim")
    mask_shape = tuple(draw(st.sampled_from([1, n])) for n in shape[len(shape) - ndim :])
    if kind == "bool":
        return draw(hnp.arrays(np.bool_, mask_shape))
    return draw(hnp.arrays(np.float64, mask_shape, elements=st.just(-np.inf) | elements(2.0)))


def sizes(draw: st.DrawFn, name: str, low: int = 1, high: int = 3) -> int:
    return draw(st.integers(low, high), label=name)


@st.composite
def score_cases(draw: st.DrawFn, name: str) -> Case:
    """Inputs of one score function, batches broadcasting between query and keys."""
    bq, bk = batches(draw, 2)
    t_q, t_k = sizes(draw, "Tq"), sizes(draw, "Tk", 1, 4)
    d_q = sizes(draw, "d_q")
    d_k = d_q if name in ("score_dot", "score_scaled_dot") else sizes(draw, "d_k")
    d_a = sizes(draw, "d_a")
    q = ("query", array(draw, (*bq, t_q, d_q)))
    k = ("keys", array(draw, (*bk, t_k, d_k)))
    if name == "score_dot":
        return Case(name, (q, k))
    if name == "score_scaled_dot":
        scale = draw(st.none() | elements(2.0))
        return Case(name, (q, k), options={"scale": scale})
    if name == "score_general":
        return Case(name, (q, k, ("W_a", array(draw, (d_q, d_k)))))
    if name == "score_concat":
        w_a, v_a = array(draw, (d_a, d_q + d_k)), array(draw, (d_a,))
        return Case(name, (q, k, ("W_a", w_a), ("v_a", v_a)))
    if name == "score_additive":
        w_q, w_k, v_a = array(draw, (d_a, d_q)), array(draw, (d_a, d_k)), array(draw, (d_a,))
        return Case(name, (q, k, ("W_q", w_q), ("W_k", w_k), ("v_a", v_a)))
    assert name == "score_location"
    return Case(name, (q, ("W_a", array(draw, (t_k, d_q)))))


@st.composite
def distribution_cases(draw: st.DrawFn, name: str) -> Case:
    """Scores, masks (with fully masked rows), windows and local-p positions."""
    (batch,) = batches(draw, 1)
    t_q, t_k = sizes(draw, "Tq"), sizes(draw, "Tk", 1, 5)
    shape = (*batch, t_q, t_k)
    # Note: scores up to 10 in magnitude make rows far from uniform (weights down to e^-20).
    scores = ("scores", array(draw, shape, 10.0))
    if name in ("attention_distribution", "log_sum_exp"):
        return Case(name, (scores,), options={"mask": mask_for(draw, shape)})
    if name == "local_m_distribution":
        half_width = draw(st.integers(0, 3), label="half_width")
        mask = mask_for(draw, shape, additive=False)
        return Case(name, (scores,), options={"half_width": half_width, "mask": mask})
    if name == "local_p_position":
        d_q, d_p = sizes(draw, "d_q"), sizes(draw, "d_p")
        q = ("query", array(draw, (*batch, t_q, d_q)))
        w_p, v_p = ("W_p", array(draw, (d_p, d_q))), ("v_p", array(draw, (d_p,)))
        source_length = draw(st.integers(1, 6), label="source_length")
        return Case(name, (q, w_p, v_p), options={"source_length": source_length})
    assert name == "local_p_distribution"
    half_width = draw(st.integers(1, 3), label="half_width")
    # Note: an integer plus a fraction; a zero fraction puts keys exactly on
    # the window boundary |j - p| = D, where only the complex step is defined.
    whole = draw(hnp.arrays(np.int64, (t_q,), elements=st.integers(-1, t_k)))
    fraction = draw(hnp.arrays(np.float64, (t_q,), elements=st.just(0.0) | st.floats(0.125, 0.875)))
    positions = ("positions", (whole + fraction).astype(np.float64))
    mask = mask_for(draw, shape, additive=False)
    return Case(
        name,
        (scores, positions),
        options={"half_width": half_width, "mask": mask},
        smooth=bool(np.all(fraction != 0)),
    )


@st.composite
def step_cases(draw: st.DrawFn, name: str) -> Case:
    """Inputs of the attention value, the concatenation and the output layers."""
    b1, b2 = batches(draw, 2)
    t_q, t_k, d_v, d_q, d_h = (sizes(draw, n) for n in ("Tq", "Tk", "d_v", "d_q", "d_h"))
    if name == "attention_value":
        # Note: weights bounded away from 0, so no value row is unread; a column
        # of exact zeros is the boundary of the read set (tested separately).
        away = st.floats(0.125, 2.0) | st.floats(-2.0, -0.125)
        weights = draw(hnp.arrays(np.float64, (*b1, t_q, t_k), elements=away))
        return Case(name, (("weights", weights), ("values", array(draw, (*b2, t_k, d_v)))))
    context = ("context", array(draw, (*b1, t_q, d_v)))
    query = ("query", array(draw, (*b2, t_q, d_q)))
    if name == "concatenate_context":
        return Case(name, (context, query))
    bias = draw(st.booleans(), label="bias")
    if name == "attentional_hidden_state":
        w_c = ("W_c", array(draw, (d_h, d_v + d_q), 1.0))
        b_c = (("b_c", array(draw, (d_h,))),) if bias else ()
        return Case(name, (context, query, w_c, *b_c))
    assert name == "output_distribution"
    v = sizes(draw, "V", 1, 4)
    state = ("attentional_state", array(draw, (*b1, t_q, d_h)))
    b_y = (("b_y", array(draw, (v,))),) if bias else ()
    return Case(name, (state, ("W_y", array(draw, (v, d_h))), *b_y))


@st.composite
def attention_cases(draw: st.DrawFn) -> Case:
    """:func:`attnref.attention` with every score kind, broadcast batches and masks."""
    kind = draw(st.sampled_from(["dot", "scaled_dot", "general", "concat", "additive", "location"]))
    bq, bk, bv = batches(draw, 3)
    t_q, t_k, d_v, d_a = sizes(draw, "Tq"), sizes(draw, "Tk", 1, 4), sizes(draw, "d_v"), 2
    d_q = sizes(draw, "d_q")
    d_k = d_q if kind in ("dot", "scaled_dot") else sizes(draw, "d_k")
    q = ("query", array(draw, (*bq, t_q, d_q)))
    k = ("keys", array(draw, (*bk, t_k, d_k)))
    v = ("values", array(draw, (*bv, t_k, d_v)))
    batch = np.broadcast_shapes(bq, bk, bv)
    options: dict[str, Any] = {"score": kind, "mask": mask_for(draw, (*batch, t_q, t_k))}
    params: tuple[tuple[str, F64], ...] = ()
    if kind == "scaled_dot":
        options["scale"] = draw(st.none() | elements(2.0))
    elif kind == "general":
        params = (("W_a", array(draw, (d_q, d_k))),)
    elif kind == "concat":
        params = (("W_a", array(draw, (d_a, d_q + d_k))), ("v_a", array(draw, (d_a,))))
    elif kind == "additive":
        params = (
            ("W_q", array(draw, (d_a, d_q))),
            ("W_k", array(draw, (d_a, d_k))),
            ("v_a", array(draw, (d_a,))),
        )
    elif kind == "location":
        params = (("W_a", array(draw, (t_k, d_q))),)
    return Case("attention", (q, k, v), params, options)


def sinks_for(draw: st.DrawFn, query_batch: tuple[int, ...]) -> tuple[tuple[str, F64], ...]:
    """No sinks, or one sink logit per query head (axis -3) when the query has a heads axis."""
    if not query_batch or not draw(st.booleans(), label="sinks"):
        return ()
    extremes = st.sampled_from([-30.0, 30.0])  # a sink that takes all, or almost none
    sinks = draw(hnp.arrays(np.float64, (query_batch[-1],), elements=elements(4.0) | extremes))
    return (("sinks", sinks),)


@st.composite
def sdpa_cases(draw: st.DrawFn) -> Case:
    """:func:`attnref.scaled_dot_product_attention`: masks, both causal alignments, GQA, a cap,
    sinks (a differentiable keyword array) and the log-sum-exp as a third output."""
    gqa = draw(st.booleans(), label="enable_gqa")
    bq, bk, bv = batches(draw, 3)
    t_q, t_k, d, d_v = sizes(draw, "Tq", 1, 4), sizes(draw, "Tk", 1, 4), sizes(draw, "d"), 2
    if gqa:
        h_k, group = sizes(draw, "Hk", 1, 2), sizes(draw, "group", 1, 3)
        bq, bk, bv = (*bq, h_k * group), (*bk, h_k), (*bv, h_k)
    q = ("query", array(draw, (*bq, t_q, d)))
    k = ("key", array(draw, (*bk, t_k, d)))
    v = ("value", array(draw, (*bv, t_k, d_v)))
    # Note: with GQA the key/value heads are repeated up to the query's heads.
    heads = (bq[-1],) if gqa else ()
    batch = np.broadcast_shapes(
        bq, (*bk[: len(bk) - len(heads)], *heads), (*bv[: len(bv) - len(heads)], *heads)
    )
    options = {
        "mask": mask_for(draw, (*batch, t_q, t_k)),
        "is_causal": draw(st.booleans(), label="is_causal"),
        "causal_alignment": draw(st.sampled_from(["top_left", "bottom_right"])),
        "scale": draw(st.none() | elements(2.0)),
        "enable_gqa": gqa,
        "softcap": draw(st.none() | st.floats(0.5, 20.0), label="softcap"),
        "return_lse": draw(st.booleans(), label="return_lse"),
    }
    sinks = sinks_for(draw, bq)
    return Case("scaled_dot_product_attention", (q, k, v), sinks, options)


CASES: dict[str, Callable[[], st.SearchStrategy[Case]]] = {
    **{n: functools.partial(score_cases, n) for n in attnspec.FUNCTIONS if n.startswith("score_")},
    **{
        n: functools.partial(distribution_cases, n)
        for n in (
            "attention_distribution",
            "log_sum_exp",
            "local_m_distribution",
            "local_p_position",
            "local_p_distribution",
        )
    },
    **{
        n: functools.partial(step_cases, n)
        for n in (
            "attention_value",
            "concatenate_context",
            "attentional_hidden_state",
            "output_distribution",
        )
    },
    "attention": attention_cases,
    "scaled_dot_product_attention": sdpa_cases,
}


# --- the VJP API -----------------------------------------------------------------------------


def test_every_spec_function_has_a_vjp() -> None:
    """VJPS holds one VJP per spec function and the case table covers them all."""
    assert tuple(V.VJPS) == attnspec.FUNCTIONS
    assert set(CASES) == set(attnspec.FUNCTIONS)


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
def test_vjp_takes_the_forward_arguments_and_a_cotangent(name: str) -> None:
    """vjp_<name> has the forward's parameters, then a keyword-only ``cotangent``."""
    forward = list(inspect.signature(getattr(attnspec, name)).parameters.values())
    vjp = list(inspect.signature(V.VJPS[name]).parameters.values())
    shape = [(p.name, p.kind, p.default) for p in vjp]
    assert shape[:-1] == [(p.name, p.kind, p.default) for p in forward]
    assert shape[-1] == ("cotangent", inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.empty)
    assert V.VJPS[name].__name__ == f"vjp_{name}"


def test_cotangent_of_the_wrong_shape_is_rejected() -> None:
    """A cotangent must have exactly the result's shape (no silent broadcasting)."""
    q, k = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ShapeError, match=r"cotangent.shape must equal the result's shape \(2, 4\)"):
        V.vjp_score_dot(q, k, cotangent=np.ones((4,)))
    with pytest.raises(ShapeError, match="cotangent must be a pair"):
        V.vjp_scaled_dot_product_attention(q, k, k, cotangent=np.ones((2, 3)))  # type: ignore[arg-type]


# --- the three witnesses ---------------------------------------------------------------------


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_vjp_agrees_with_complex_step(name: str, data: st.DataObject, seed: int) -> None:
    """input.gradient: every VJP equals the complex-step derivative of the forward."""
    case = data.draw(CASES[name](), label="case")
    result = gradcheck.check_vjp(
        case.forward, case.vjp, case.primals, witness="complex_step", seed=seed, names=case.names
    )
    result.assert_passed()


def without_empty_rows(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` with each ``-inf`` output replaced by 0.

    A row with no allowed key (and no sink) has log-sum-exp ``-inf`` at every point
    (``lse.fully-masked-row``): a constant, whose difference quotient ``-inf - -inf`` would be
    NaN. The mask, not the primals, decides which rows those are, so 0 there keeps the
    derivative 0; a row that became empty or non-empty under the step would show as a jump.
    """

    def finite(y: Any) -> Any:
        return np.where(np.isneginf(y), 0.0, y)

    def wrapped(*xs: Any) -> Any:
        out = forward(*xs)
        return tuple(finite(o) for o in out) if isinstance(out, tuple) else finite(out)

    return wrapped


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_vjp_agrees_with_central_differences(name: str, data: st.DataObject, seed: int) -> None:
    """input.gradient: every VJP equals central differences of the forward (off boundaries)."""
    case = data.draw(CASES[name](), label="case")
    forward: Callable[..., Any] = without_empty_rows(case.forward)
    vjp: Callable[[Sequence[Any], Any], list[Any]] = case.vjp
    primals, names = case.primals, case.names
    if not case.smooth:
        # Note: a key sits exactly on a window boundary, where the weights jump as
        # the position moves (input.gradient excepts it); the scores stay smooth.
        (_, positions) = case.positional[1]
        scores = case.primals[:1]

        def forward(s: Any) -> Any:
            return attnref.local_p_distribution(s, positions, **case.options)

        def vjp(xs: Sequence[Any], c: Any) -> list[Any]:
            grads = V.vjp_local_p_distribution(xs[0], positions, **case.options, cotangent=c)
            return [grads.scores]

        primals, names = scores, names[:1]
    result = gradcheck.check_vjp(
        forward, vjp, primals, witness="central_difference", seed=seed, names=names
    )
    result.assert_passed()


def cotangents_of(cotangent: Any) -> tuple[F64, ...]:
    """The cotangent arrays of a single or a tuple output."""
    return cotangent if isinstance(cotangent, tuple) else (cotangent,)


def _autograd(case: Case, cotangent: Any) -> list[F64]:
    """Gradients of the twin by ``torch.autograd.grad``, in float64 (0 where unused)."""
    assert torch is not None
    inputs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in case.primals]
    out = case.twin(*inputs)
    outputs = out if isinstance(out, tuple) else (out,)
    cotangents = cotangents_of(cotangent)
    grads = torch.autograd.grad(
        outputs,
        inputs,
        grad_outputs=[torch.from_numpy(c) for c in cotangents],
        allow_unused=True,
    )
    return [
        np.zeros_like(x) if g is None else g.numpy()
        for g, x in zip(grads, case.primals, strict=True)
    ]


@pytest.mark.parametrize("name", attnspec.FUNCTIONS)
@settings(deadline=None)  # the first example on a worker pays PyTorch's cold start (~2 s)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_vjp_agrees_with_torch_autograd(name: str, data: st.DataObject, seed: int) -> None:
    """input.gradient: every VJP equals autograd of the attnref.torch twin in float64."""
    if torch is None:
        pytest.skip("torch is not installed")
    case = data.draw(CASES[name](), label="case")
    rng = np.random.default_rng(seed)
    out = case.forward(*case.primals)
    cotangent = (
        tuple(rng.standard_normal(o.shape) for o in out)
        if isinstance(out, tuple)
        else rng.standard_normal(out.shape)
    )
    expected = case.vjp(case.primals, cotangent)
    actual = _autograd(case, cotangent)
    tolerance = gradcheck.setting("autograd.rtol.float64")
    floor = float(np.sqrt(sum(np.sum(np.square(c)) for c in cotangents_of(cotangent))))
    for name, e, a in zip(case.names, expected, actual, strict=True):
        error = gradcheck.gradient_error(e, a, floor=floor)
        assert error <= tolerance, f"{case.name} gradient of {name}: relative error {error:.3g}"


# --- unread positions and fully masked rows --------------------------------------------------

RNG = np.random.default_rng(20150817)


def normal(*shape: int) -> F64:
    return RNG.standard_normal(shape)


def _finite(grads: Sequence[Array | None]) -> bool:
    return all(g is None or bool(np.isfinite(g).all()) for g in grads)


def test_fully_masked_rows_have_zero_gradients() -> None:
    """distribution.fully-masked-row: a row with no allowed key has zero, finite gradients."""
    scores = normal(2, 3, 4)
    scores[:, 1] = np.nan  # not read: the row is fully masked
    mask = np.ones((3, 4), dtype=bool)
    mask[1] = False
    additive = np.where(mask, 0.0, -np.inf)
    for m in (mask, additive):
        (g,) = V.vjp_attention_distribution(scores, mask=m, cotangent=normal(2, 3, 4))
        assert _finite([g])
        assert np.all(g[:, 1] == 0)
        assert np.any(g[:, 0] != 0)
    (g,) = V.vjp_local_m_distribution(scores, half_width=1, mask=mask, cotangent=normal(2, 3, 4))
    assert _finite([g])
    assert np.all(g[:, 1] == 0)


def test_sdpa_gradients_vanish_exactly_at_unread_positions() -> None:
    """input.unread-gradient: masked keys, values and queries get exactly 0, finite gradients."""
    q, k, v = normal(2, 4, 3), normal(2, 5, 3), normal(2, 5, 2)
    mask = np.ones((4, 5), dtype=bool)
    mask[:, 3] = False  # key 3 is read by no query
    mask[2] = False  # query 2 reads no key
    q[:, 2] = np.nan
    k[:, 3] = np.inf
    v[:, 3] = np.nan
    cotangent = (normal(2, 4, 2), normal(2, 4, 5))
    for causal in (False, True):
        g = V.vjp_scaled_dot_product_attention(
            q, k, v, mask=mask, is_causal=causal, cotangent=cotangent
        )
        assert _finite(g)
        assert np.all(g.query[:, 2] == 0)
        assert np.all(g.key[:, 3] == 0)
        assert np.all(g.value[:, 3] == 0)
        assert np.any(g.query[:, 1] != 0)  # query 1 has two allowed keys in both cases


def test_attention_location_score_does_not_differentiate_the_keys() -> None:
    """input.unread-gradient: the location score never reads the keys; their gradient is 0."""
    q, k, v, w = normal(3, 2), normal(4, 2), normal(4, 2), normal(4, 2)
    k[0] = np.nan
    g = V.vjp_attention(q, k, v, score="location", W_a=w, cotangent=(normal(3, 2), normal(3, 4)))
    assert np.all(g.keys == 0)
    assert g.W_a is not None
    assert _finite([g.query, g.values, g.W_a])
    assert (g.W_q, g.W_k, g.v_a) == (None, None, None)


def test_unread_value_rows_do_not_reach_any_gradient() -> None:
    """value.zero-weight-unread: a value row with zero weight everywhere affects no gradient.

    The gradient of a weight in that all-zero column is taken with the value row as 0, as
    the forward reads it; the rows that are read keep ``c_i . v_j``.
    """
    weights = np.array([[0.7, 0.0, 0.3], [0.2, 0.0, 0.8]])
    values = normal(3, 2)
    cotangent = normal(2, 2)
    clean = V.vjp_attention_value(weights, values, cotangent=cotangent)
    poisoned_values = values.copy()
    poisoned_values[1] = np.nan
    poisoned = V.vjp_attention_value(weights, poisoned_values, cotangent=cotangent)
    assert _finite(poisoned)
    np.testing.assert_array_equal(poisoned.weights, clean.weights)
    np.testing.assert_array_equal(poisoned.values, clean.values)
    assert np.all(poisoned.values[1] == 0)
    assert np.all(poisoned.weights[:, 1] == 0)
    # A length-2 dot product computed by two different BLAS calls: a few roundings apart.
    expected = cotangent @ values[[0]].T
    bound = 4 * np.finfo(np.float64).eps * np.abs(cotangent).sum() * np.abs(values).max()
    np.testing.assert_allclose(clean.weights[:, [0]], expected, rtol=0, atol=bound)


def test_grouped_heads_sum_the_gradients_of_their_query_heads() -> None:
    """sdpa.grouped-query-heads: a shared key head's gradient is the sum over its query heads."""
    q, k, v = normal(1, 4, 3, 2), normal(1, 2, 5, 2), normal(1, 2, 5, 3)
    cotangent = (normal(1, 4, 3, 3), normal(1, 4, 3, 5))
    grouped = V.vjp_scaled_dot_product_attention(q, k, v, enable_gqa=True, cotangent=cotangent)
    repeated = V.vjp_scaled_dot_product_attention(
        q, np.repeat(k, 2, axis=-3), np.repeat(v, 2, axis=-3), cotangent=cotangent
    )
    # Note: the same floating-point operations in the same order, so equal bit for bit.
    np.testing.assert_array_equal(grouped.query, repeated.query)
    np.testing.assert_array_equal(grouped.key, repeated.key[:, 0::2] + repeated.key[:, 1::2])
    np.testing.assert_array_equal(grouped.value, repeated.value[:, 0::2] + repeated.value[:, 1::2])


# --- log-sum-exp, sinks and the cap ---------------------------------------------------------


def test_the_sdpa_cotangent_has_one_entry_per_output() -> None:
    """sdpa.log-sum-exp: with return_lse=True the result, and so the cotangent, is the triple
    (context, weights, lse); a pair is refused then, a triple without it, and the lse entry
    must have the result's shape [..., Tq]."""
    q, k, v = normal(2, 3, 4), normal(2, 5, 4), normal(2, 5, 6)
    context, weights, lse = attnref.scaled_dot_product_attention(q, k, v, return_lse=True)
    with pytest.raises(ShapeError, match=r"cotangent must be a triple \(context, weights, lse\)"):
        V.vjp_scaled_dot_product_attention(q, k, v, return_lse=True, cotangent=(context, weights))
    with pytest.raises(ShapeError, match=r"cotangent must be a pair \(context, weights\)"):
        V.vjp_scaled_dot_product_attention(q, k, v, cotangent=(context, weights, lse))
    with pytest.raises(
        ShapeError, match=r"cotangent\[2\].shape must equal the result's shape \(2, 3\)"
    ):
        V.vjp_scaled_dot_product_attention(
            q, k, v, return_lse=True, cotangent=(context, weights, lse[..., None])
        )


def test_sdpa_grads_name_sinks_and_softcap_only_when_given() -> None:
    """sdpa.sinks, sdpa.softcap: the gradient of the sinks is an [H] array and that of the cap a
    0-d array when they are given, None when not; a zero lse cotangent changes nothing."""
    q, k, v = normal(3, 2, 4), normal(3, 5, 4), normal(3, 5, 2)
    context, weights, lse = attnref.scaled_dot_product_attention(q, k, v, return_lse=True)
    pair = (normal(*context.shape), normal(*weights.shape))
    plain = V.vjp_scaled_dot_product_attention(q, k, v, cotangent=pair)
    assert (plain.sinks, plain.softcap) == (None, None)
    triple = V.vjp_scaled_dot_product_attention(
        q, k, v, return_lse=True, cotangent=(*pair, np.zeros_like(lse))
    )
    for a, b in zip(plain[:3], triple[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    full = V.vjp_scaled_dot_product_attention(q, k, v, sinks=normal(3), softcap=2.5, cotangent=pair)
    assert full.sinks is not None
    assert full.softcap is not None
    assert full.sinks.shape == (3,)
    assert full.softcap.shape == ()
    assert np.isfinite(full.sinks).all()
    assert np.isfinite(full.softcap)


@dataclass(frozen=True)
class CapCase:
    """An SDPA call with a cap, for the derivative with respect to the cap.

    ``query``, ``key`` and ``value`` are ``[*B, H, T, d]`` with one batch shape; the mask is
    ``[Tq, Tk]`` or broadcasts to it.
    """

    query: F64
    key: F64
    value: F64
    options: dict[str, Any]

    @property
    def sinks(self) -> F64 | None:
        sinks: F64 | None = self.options["sinks"]
        return sinks

    def allowed(self) -> Any:
        """``[Tq, Tk]``: the mask's allowed keys joined with the causal mask, by loops."""
        t_q, t_k = self.query.shape[-2], self.key.shape[-2]
        mask = self.options["mask"]
        allowed = np.ones((t_q, t_k), dtype=bool)
        if mask is not None:
            full = np.broadcast_to(mask, (t_q, t_k))
            allowed = np.array(full if full.dtype == np.bool_ else full > -np.inf)
        offset = t_k - t_q if self.options["causal_alignment"] == "bottom_right" else 0
        for i in range(t_q):
            for j in range(t_k):
                if self.options["is_causal"] and j > i + offset:
                    allowed[i, j] = False
        return allowed

    def bias(self) -> F64:
        """``[Tq, Tk]``: the additive mask where it is finite, else 0."""
        t_q, t_k = self.query.shape[-2], self.key.shape[-2]
        mask = self.options["mask"]
        if mask is None or mask.dtype == np.bool_:
            return np.zeros((t_q, t_k))
        full = np.broadcast_to(mask, (t_q, t_k))
        return np.where(np.isfinite(full), full, 0.0)


@st.composite
def cap_cases(draw: st.DrawFn) -> CapCase:
    """Caps from ``10**-0.3`` to ``10**5``: ``|s/c|`` from about 20 (saturated) through the
    series' edge 1/2 down to ``1e-6`` (where tanh u - u sech^2 u cancels to 2u^3/3)."""
    batch = draw(st.sampled_from([(), (2,)]), label="batch")
    h, t_q, t_k, d = (
        sizes(draw, "H", 1, 2),
        sizes(draw, "Tq"),
        sizes(draw, "Tk", 1, 4),
        sizes(draw, "d"),
    )
    q = array(draw, (*batch, h, t_q, d))
    k = array(draw, (*batch, h, t_k, d))
    v = array(draw, (*batch, h, t_k, 2))
    cap = 10.0 ** draw(st.floats(-0.3, 5.0), label="log10 cap")
    options = {
        "mask": mask_for(draw, (t_q, t_k)),
        "is_causal": draw(st.booleans(), label="is_causal"),
        "causal_alignment": draw(st.sampled_from(["top_left", "bottom_right"])),
        "scale": draw(st.none() | elements(2.0)),
        "softcap": cap,
        "sinks": draw(st.none() | hnp.arrays(np.float64, (h,), elements=elements(4.0))),
        "return_lse": draw(st.booleans(), label="return_lse"),
    }
    return CapCase(q, k, v, options)


def _mp(x: Any) -> Any:
    """A float64 array as an object array of exact mpmath numbers."""
    return np.vectorize(mpmath.mpf, otypes=[object])(np.asarray(x, dtype=np.float64))


def exact_cap_derivative(case: CapCase, cotangent: tuple[F64, ...]) -> Any:
    r"""``d/dc <cotangent, sdpa(c)>`` by :func:`mpmath.diff` of the spec's formulas at 50 digits.

    The forward is written afresh: :math:`t_{ij} = c \tanh(\lambda\, q_i \cdot k_j / c) +
    m_{ij}` over the allowed keys, the softmax with the sink in its denominator, the context
    and :math:`\ell_i = \log(e^{\sigma_h} + \sum_j e^{t_{ij}})`; a row with neither keys nor a
    sink contributes nothing (its result is the constant 0 or ``-inf``).
    """
    o = case.options
    d = case.query.shape[-1]
    with mpmath.workdps(50):
        lam = 1 / mpmath.sqrt(d) if o["scale"] is None else mpmath.mpf(o["scale"])
        q, k, v = _mp(case.query), _mp(case.key), _mp(case.value)
        scores = np.einsum("...id,...jd->...ij", q, k) * lam  # exact products and sums
        c_ctx, c_w = _mp(cotangent[0]), _mp(cotangent[1])
        c_lse = _mp(cotangent[2]) if o["return_lse"] else None
        sinks = None if case.sinks is None else _mp(case.sinks)
        allowed, bias = case.allowed(), _mp(case.bias())
        keys = [np.flatnonzero(row) for row in allowed]

        def objective(c: Any) -> Any:
            total = mpmath.mpf(0)
            for index in np.ndindex(*case.query.shape[:-2]):
                for i, row_keys in enumerate(keys):
                    t = [c * mpmath.tanh(scores[index][i, j] / c) + bias[i, j] for j in row_keys]
                    e = [mpmath.exp(x) for x in t]
                    denominator = e + ([] if sinks is None else [mpmath.exp(sinks[index[-1]])])
                    if not denominator:
                        continue
                    z = mpmath.fsum(denominator)
                    for j, e_j in zip(row_keys, e, strict=True):
                        w = e_j / z
                        read = mpmath.fsum(c_ctx[index][i] * v[index][j])
                        total += w * (c_w[index][i, j] + read)
                    if c_lse is not None:
                        total += c_lse[index][i] * mpmath.log(z)
            return total

        return mpmath.diff(objective, mpmath.mpf(o["softcap"]))


def cap_derivative_tolerance(case: CapCase, cotangent: tuple[F64, ...], weights: F64) -> float:
    """:func:`tolerances.cap_derivative_bound` for this case: the errors of ``u = s/c`` and of
    the bars of the capped scores, from the sizes of the computation on absolute values."""
    o = case.options
    eps, tr = tol.unit_roundoff(np.float64), tol.transcendental(np.float64)
    q, k, v = case.query, case.key, case.value
    d, t_k = q.shape[-1], k.shape[-2]
    lam = 1 / math.sqrt(d) if o["scale"] is None else float(o["scale"])
    c = float(o["softcap"])
    s = lam * (q @ np.swapaxes(k, -1, -2))  # [*B, H, Tq, Tk]
    # the d-term dot product, the scale's product, and 1/sqrt(d)'s sqrt and division
    ds = tol.gamma(d + 3, np.float64) * abs(lam) * (np.abs(q) @ np.swapaxes(np.abs(k), -1, -2))
    u = s / c
    du = (ds + eps * (np.abs(s) + ds)) / c  # and the division by c
    t = c * np.tanh(u)
    # a capped logit: ds (tanh is 1-Lipschitz), the division (u |s|), tanh and the product
    dt = ds + eps * np.abs(s) + (tr + eps) * np.abs(t)
    allowed = case.allowed()
    logits = t + case.bias()
    sinks = case.sinks
    top = np.where(allowed, logits, -np.inf).max(axis=-1, initial=-np.inf)  # [*B, H, Tq]
    if sinks is not None:
        top = np.maximum(top, sinks[:, None])
    top = np.where(np.isfinite(top), np.abs(top), 0.0)
    # each term's exponent: its logit error, the half-logit sum and its centring (2u |t + m|),
    # and the shift (u |top|); the sink's own centring u |sigma|
    exponent = np.where(allowed, dt + 2 * eps * np.abs(logits), 0).max(axis=-1, initial=0)
    if sinks is not None:
        exponent = np.maximum(exponent, eps * np.abs(sinks)[:, None])
    exponent = exponent + eps * top + tol.underflow_floor(np.float64)
    terms = t_k + (0 if sinks is None else 1)
    rho = tol.weight_relative_bound(np.float64, terms, exponent)[..., None]  # [*B, H, Tq, 1]
    c_ctx, c_w = cotangent[0], cotangent[1]
    c_lse = np.abs(cotangent[2])[..., None] if o["return_lse"] else 0.0
    a_bar = np.abs(c_w) + np.abs(c_ctx) @ np.swapaxes(np.abs(v), -1, -2)  # [*B, H, Tq, Tk]
    inner = (weights * a_bar).sum(axis=-1, keepdims=True)
    grown = (1 + rho) ** 2  # the exact weights, from the computed ones, in both places
    bars = grown * weights * (a_bar + c_lse + inner)
    # the bar of the weights (d_v + 1), its inner product (Tk), the lse bar, the sum and product
    rounded = 1 + tol.gamma(2 + t_k + 4, np.float64)
    bar_error = (grown * rounded - 1) * bars
    return tol.cap_derivative_bound(u=u, u_error=du, bars=bars, bar_error=bar_error)


def _cap_gradient(case: CapCase, seed: int) -> tuple[float, Any, float]:
    """``(grads.softcap, the exact derivative, the tolerance)`` for one random cotangent."""
    result = attnref.scaled_dot_product_attention(case.query, case.key, case.value, **case.options)
    rng = np.random.default_rng(seed)
    cotangent = tuple(rng.standard_normal(r.shape) for r in result)
    grads = V.vjp_scaled_dot_product_attention(
        case.query, case.key, case.value, **case.options, cotangent=cotangent
    )
    assert grads.softcap is not None
    assert grads.softcap.shape == ()
    tolerance = cap_derivative_tolerance(case, cotangent, result[1])
    return float(grads.softcap), exact_cap_derivative(case, cotangent), tolerance


@settings(max_examples=30, deadline=None)  # mpmath.diff of a 50-digit forward: ~0.1 s each
@given(cap_cases(), st.integers(0, 2**32 - 1))
def test_the_cap_gradient_is_the_high_precision_derivative(case: CapCase, seed: int) -> None:
    """sdpa.softcap, input.gradient: the gradient with respect to the cap c equals mpmath.diff of
    the forward at 50 digits, within a bound derived from the computation (for |s/c| from 1e-6,
    where tanh u - u sech^2 u cancels, to 20), with sinks and the lse cotangent."""
    got, exact, tolerance = _cap_gradient(case, seed)
    error = abs(mpmath.mpf(got) - exact)
    assert error <= tolerance, f"d/dc: got {got}, exact {mpmath.nstr(exact, 20)}, bound {tolerance}"


def test_the_cap_gradient_bound_sees_a_cancelling_derivative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sdpa.softcap: at |s/c| ~ 1e-4 the direct tanh u - u sech^2 u loses about half its digits;
    the derived bound rejects that, and accepts the series."""
    rng = np.random.default_rng(7)
    case = CapCase(
        rng.standard_normal((2, 3, 2)),
        rng.standard_normal((2, 4, 2)),
        rng.standard_normal((2, 4, 2)),
        {
            "mask": None,
            "is_causal": False,
            "causal_alignment": "top_left",
            "scale": None,
            "softcap": 1e4,
            "sinks": None,
            "return_lse": False,
        },
    )
    got, exact, tolerance = _cap_gradient(case, 0)
    assert abs(mpmath.mpf(got) - exact) <= tolerance
    direct: Callable[[Array], Array] = lambda u: np.tanh(u) - u * V._tanh_derivative(u)  # noqa: E731
    monkeypatch.setattr(V, "_cap_derivative", direct)
    broken, _, _ = _cap_gradient(case, 0)
    assert abs(mpmath.mpf(broken) - exact) > tolerance, "the bound cannot tell the cancellation"
