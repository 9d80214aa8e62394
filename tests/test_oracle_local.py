"""The oracle's checks of local attention, in both directions.

Luong et al. (2015, section 3.2) attend over a window :math:`[p_i - D, p_i + D]`:
local-m aligns :math:`p_i = i`, local-p predicts a real :math:`p_i` and multiplies
the window softmax by a Gaussian of :math:`\\sigma = D/2`. The oracle checks
``local_m_distribution``, ``local_p_distribution`` and ``local_p_position``
clause by clause. Here kernels written with other sound algorithms than the
reference's (a full softmax under a banded ``-inf`` mask, a gather of each
window, a blocked online softmax, the Gaussian folded into the exponent), all
accumulating 16-bit inputs in float32, must conform in every dtype over
several seeds, as must the PyTorch twin and the NumPy reference computing in
the dtype itself; and each realistic bug planted in those kernels must fail
the clause it breaks, in the quick run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from attnref.oracle import Case, check_implementation
from attnref.oracle.adapters.numpy import NumpyStep
from attnref.oracle.adapters.torch import TorchStep
from attnref.oracle.cases import Draw, cases, position_margin
from attnref.oracle.checks import checks_for
from attnref.oracle.examples import QUICK_EXAMPLES
from attnref.oracle.observe import observe
from attnref.oracle.protocol import Step

DTYPES = ("float64", "float32", "float16", "bfloat16")
SEEDS = (0, 1)
LocalFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Flaws:
    """Switches that plant one bug each into the kernels below; all off is sound."""

    off_by_one: bool = False
    bottom_right: bool = False
    unclipped_slice: bool = False
    mask_ignored: bool = False
    global_normalise: bool = False
    renormalise: bool = False
    sigma_is_d: bool = False
    round_position: bool = False
    gaussian_inside: bool = False
    detach_positions: bool = False
    source_length_factor: bool = False
    no_tanh: bool = False


SOUND = Flaws()


def _shapes(*shapes: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    """The broadcast of tensor shapes (NumPy's rule, which PyTorch follows)."""
    return tuple(np.broadcast_shapes(*(tuple(s) for s in shapes)))


def _compute(dtype: torch.dtype) -> torch.dtype:
    """float16 and bfloat16 compute in float32, as fast kernels do; the rest in themselves."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _allowed(
    shape: torch.Size, window: torch.Tensor, mask: torch.Tensor | None, flaws: Flaws
) -> torch.Tensor:
    """The window and the mask, broadcast to ``shape`` (the mask dropped by one bug)."""
    allowed = window if mask is None or flaws.mask_ignored else window & mask
    return torch.broadcast_to(allowed, _shapes(shape, allowed.shape))


def _softmax_over(s: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """A full softmax under a ``-inf`` mask; a row with nothing allowed gets zeros.

    Disallowed scores are replaced *before* anything reads them, so poison there
    reaches neither the result nor, through ``0 * inf``, the gradient.
    """
    s = torch.broadcast_to(s, allowed.shape)
    filled = torch.where(allowed, s, -torch.inf)
    live = allowed.any(dim=-1, keepdim=True)
    safe = torch.where(live, filled, 0.0)
    return torch.where(live & allowed, torch.softmax(safe, dim=-1), 0.0)


def _m_window(t_q: int, t_k: int, d: int, flaws: Flaws, device: torch.device) -> torch.Tensor:
    """``[Tq, Tk]`` local-m windows, |j - i| <= D around p_i = i."""
    i = torch.arange(t_q, device=device)[:, None]
    if flaws.bottom_right:
        i = i + (t_k - t_q)
    j = torch.arange(t_k, device=device)[None, :]
    return (j - i).abs() < d if flaws.off_by_one else (j - i).abs() <= d


def banded_local_m(
    scores: torch.Tensor,
    *,
    half_width: int,
    mask: torch.Tensor | None = None,
    flaws: Flaws = SOUND,
) -> torch.Tensor:
    """Local-m as a full softmax under a banded ``-inf`` mask."""
    s = scores.to(_compute(scores.dtype))
    t_q, t_k = s.shape[-2:]
    window = _m_window(t_q, t_k, half_width, flaws, s.device)
    allowed = _allowed(s.shape, window, mask, flaws)
    if flaws.global_normalise:
        # a softmax over every key (of the mask), then cut to the window
        everything = _allowed(s.shape, torch.ones_like(window), mask, flaws)
        return torch.where(allowed, _softmax_over(s, everything), 0.0).to(scores.dtype)
    return _softmax_over(s, allowed).to(scores.dtype)


def gathered_local_m(
    scores: torch.Tensor,
    *,
    half_width: int,
    mask: torch.Tensor | None = None,
    flaws: Flaws = SOUND,
) -> torch.Tensor:
    """Local-m by gathering each row's 2D + 1 window keys, a softmax there, and a scatter back.

    With ``unclipped_slice`` the window of row ``i`` is Python's slice
    ``keys[i - D : i + D + 1]``, whose negative start counts from the end: rows
    ``i < D`` lose their window (or get the last keys), a classic bug.
    """
    s = scores.to(_compute(scores.dtype))
    t_q, t_k = s.shape[-2:]
    d = half_width
    keys = torch.arange(t_k, device=s.device)
    if flaws.unclipped_slice:
        rows = [keys[i - d : i + d + 1] for i in range(t_q)]
        window = torch.zeros(t_q, t_k, dtype=torch.bool, device=s.device)
        for i, picked in enumerate(rows):
            window[i, picked] = True
        return _softmax_over(s, _allowed(s.shape, window, mask, flaws)).to(scores.dtype)
    offsets = torch.arange(-d, d + 1, device=s.device)
    index = torch.arange(t_q, device=s.device)[:, None] + offsets  # [Tq, 2D+1]
    inside = (index >= 0) & (index < t_k)
    clamped = index.clamp(0, t_k - 1)
    full = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device)
    allowed = _allowed(s.shape, full, mask, flaws)
    shape = (*allowed.shape[:-1], clamped.shape[-1])
    picked = torch.gather(torch.broadcast_to(s, allowed.shape), -1, clamped.expand(shape))
    picked_allowed = torch.gather(allowed, -1, clamped.expand(shape)) & inside
    weights = _softmax_over(picked, picked_allowed)
    out = torch.zeros(allowed.shape, dtype=weights.dtype, device=s.device)
    return out.scatter_add(-1, clamped.expand(shape), weights).to(scores.dtype)


def blocked_local_m(
    scores: torch.Tensor,
    *,
    half_width: int,
    mask: torch.Tensor | None = None,
    tile: int = 4,
    flaws: Flaws = SOUND,
) -> torch.Tensor:
    """Local-m by an online softmax over key tiles (Milakov & Gimelshein 2018).

    The running maximum and sum are rescaled at each tile; the weights are
    ``exp(s - m) / l`` with the final ``m`` and ``l``.
    """
    s = scores.to(_compute(scores.dtype))
    t_q, t_k = s.shape[-2:]
    window = _m_window(t_q, t_k, half_width, flaws, s.device)
    allowed = _allowed(s.shape, window, mask, flaws)
    s = torch.where(allowed, torch.broadcast_to(s, allowed.shape), 0.0)
    m = torch.full((*allowed.shape[:-1], 1), -torch.inf, dtype=s.dtype, device=s.device)
    total = torch.zeros_like(m)
    for start in range(0, t_k, tile):
        block, ok = s[..., start : start + tile], allowed[..., start : start + tile]
        grown = torch.maximum(m, torch.where(ok, block, -torch.inf).amax(-1, keepdim=True))
        safe = torch.where(torch.isfinite(grown), grown, 0.0)
        kept = torch.where(torch.isfinite(m), torch.exp(m - safe), 0.0)
        total = total * kept + torch.where(ok, torch.exp(block - safe), 0.0).sum(-1, keepdim=True)
        m = grown
    safe_m = torch.where(torch.isfinite(m), m, 0.0)
    safe_total = torch.where(total > 0, total, 1.0)
    return torch.where(allowed, torch.exp(s - safe_m) / safe_total, 0.0).to(scores.dtype)


def _p_window(
    positions: torch.Tensor, t_k: int, d: int, flaws: Flaws
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., Tq, Tk]`` local-p windows and offsets ``j - p``, in the compute dtype."""
    p = positions.to(_compute(positions.dtype))[..., None]
    j = torch.arange(t_k, dtype=p.dtype, device=p.device)
    centre = torch.round(p) if flaws.round_position else p
    window = (j - d <= centre) & (centre <= j + d)
    return window, j - p


def banded_local_p(
    scores: torch.Tensor,
    positions: torch.Tensor,
    *,
    half_width: int,
    mask: torch.Tensor | None = None,
    flaws: Flaws = SOUND,
) -> torch.Tensor:
    """Local-p: a banded full softmax times ``exp(-((j - p) / sigma)^2 / 2)``."""
    s = scores.to(_compute(scores.dtype))
    window, offset = _p_window(positions, s.shape[-1], half_width, flaws)
    if flaws.detach_positions:
        offset = offset.detach()
    allowed = _allowed(s.shape, window, mask, flaws)
    sigma = half_width if flaws.sigma_is_d else half_width / 2
    near = torch.where(allowed, torch.broadcast_to(offset, allowed.shape), 0.0)
    gaussian = torch.exp(-0.5 * (near / sigma) ** 2)
    if flaws.gaussian_inside:
        # the Gaussian applied inside the softmax (to the scores), then normalised
        weights = _softmax_over(torch.where(allowed, s + torch.log(gaussian), 0.0), allowed)
        return weights.to(scores.dtype)
    weights = _softmax_over(s, allowed) * gaussian
    if flaws.renormalise:
        total = weights.sum(-1, keepdim=True)
        weights = torch.where(total > 0, weights / torch.where(total > 0, total, 1.0), 0.0)
    return torch.where(allowed, weights, 0.0).to(scores.dtype)


def folded_local_p(
    scores: torch.Tensor,
    positions: torch.Tensor,
    *,
    half_width: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local-p with the Gaussian folded into the exponent: ``exp(s - m - x) / sum exp(s - m)``."""
    s = scores.to(_compute(scores.dtype))
    window, offset = _p_window(positions, s.shape[-1], half_width, SOUND)
    allowed = _allowed(s.shape, window, mask, SOUND)
    s = torch.where(allowed, torch.broadcast_to(s, allowed.shape), 0.0)
    near = torch.where(allowed, torch.broadcast_to(offset, allowed.shape), 0.0)
    x = near * near * (2.0 / half_width**2)  # (j - p)^2 / (2 sigma^2), sigma = D / 2
    live = allowed.any(dim=-1, keepdim=True)
    m = torch.where(live, torch.where(allowed, s, -torch.inf).amax(-1, keepdim=True), 0.0)
    e = torch.where(allowed, torch.exp(s - m), 0.0)
    total = torch.where(live, e.sum(-1, keepdim=True), 1.0)
    return torch.where(allowed, torch.exp(s - m - x) / total, 0.0).to(scores.dtype)


def position_kernel(
    query: torch.Tensor,
    W_p: torch.Tensor,
    v_p: torch.Tensor,
    *,
    source_length: int,
    flaws: Flaws = SOUND,
) -> torch.Tensor:
    """Local-p positions by ``torch.nn.functional.linear`` and ``torch.sigmoid``, in float32."""
    compute = _compute(query.dtype)
    q, w, v = (t.to(compute) for t in (query, W_p, v_p))
    hidden = torch.nn.functional.linear(q, w)
    if not flaws.no_tanh:
        hidden = torch.tanh(hidden)
    factor = source_length if flaws.source_length_factor else source_length - 1
    return (factor * torch.sigmoid(hidden @ v)).to(query.dtype)


def _with(fn: LocalFn, **switch: bool) -> LocalFn:
    def flawed(*args: Any, **kwargs: Any) -> torch.Tensor:
        return fn(*args, **kwargs, flaws=Flaws(**switch))

    flawed.__name__ = f"{fn.__name__}[{', '.join(switch)}]"
    return flawed


@dataclass(frozen=True)
class Kernel:
    """A correct kernel of one local function."""

    function: Step
    fn: LocalFn


CORRECT: dict[str, Kernel] = {
    "banded local-m": Kernel("local_m_distribution", banded_local_m),
    "gathered local-m": Kernel("local_m_distribution", gathered_local_m),
    "blocked local-m (tile 4)": Kernel("local_m_distribution", blocked_local_m),
    "banded local-p": Kernel("local_p_distribution", banded_local_p),
    "folded local-p": Kernel("local_p_distribution", folded_local_p),
    "linear-sigmoid position": Kernel("local_p_position", position_kernel),
}
"""Sound local kernels written with algorithms other than the reference's."""


@dataclass(frozen=True)
class Bug:
    """A kernel with one planted bug and the clause it breaks."""

    function: Step
    fn: LocalFn
    clause: str


BUGS: dict[str, Bug] = {
    "window off by one, |j - i| < D": Bug(
        "local_m_distribution", _with(banded_local_m, off_by_one=True), "local.window"
    ),
    "local-m aligned bottom-right, p_i = i + Tk - Tq": Bug(
        "local_m_distribution", _with(blocked_local_m, bottom_right=True), "local.m-position"
    ),
    "window slice not clipped at the start": Bug(
        "local_m_distribution", _with(gathered_local_m, unclipped_slice=True), "local.window"
    ),
    "local-m mask ignored": Bug(
        "local_m_distribution", _with(banded_local_m, mask_ignored=True), "local.window"
    ),
    "local-m normalised over every key": Bug(
        "local_m_distribution",
        _with(banded_local_m, global_normalise=True),
        "local.window-softmax",
    ),
    "local-p mask ignored": Bug(
        "local_p_distribution", _with(banded_local_p, mask_ignored=True), "local.p-window"
    ),
    "local-p position rounded to an integer for the window": Bug(
        "local_p_distribution", _with(banded_local_p, round_position=True), "local.p-window"
    ),
    "Gaussian sigma = D instead of D / 2": Bug(
        "local_p_distribution", _with(banded_local_p, sigma_is_d=True), "local.p-gaussian"
    ),
    "rows renormalised after the Gaussian": Bug(
        "local_p_distribution", _with(banded_local_p, renormalise=True), "local.p-gaussian"
    ),
    "Gaussian inside the softmax": Bug(
        "local_p_distribution", _with(banded_local_p, gaussian_inside=True), "local.p-gaussian"
    ),
    "positions detached from the graph": Bug(
        "local_p_distribution", _with(banded_local_p, detach_positions=True), "input.gradient"
    ),
    "position scaled by S instead of S - 1": Bug(
        "local_p_position", _with(position_kernel, source_length_factor=True), "local.p-position"
    ),
    "position without the tanh layer": Bug(
        "local_p_position", _with(position_kernel, no_tanh=True), "local.p-position"
    ),
}
"""One kernel per realistic bug of local attention, keyed by what the bug is."""


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CORRECT))
def test_sound_local_kernel_conforms(name: str, dtype: str, seed: int) -> None:
    """local.window, local.window-softmax, local.p-gaussian and the rest hold for sound kernels.

    Every clause the kernel's function has is checked, none skipped, in each dtype.
    """
    kernel = CORRECT[name]
    impl = TorchStep(kernel.fn, kernel.function, name=name, dtype=dtype)
    report = check_implementation(impl, max_examples=QUICK_EXAMPLES, seed=seed)
    assert report.passed, report.table()
    assert not [r for r in report.results if r.status == "skipped"], report.table()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "function", ["local_m_distribution", "local_p_distribution", "local_p_position"]
)
def test_twin_conforms_computing_in_the_dtype(function: Step, dtype: str) -> None:
    """local.m-position, local.p-window and local.p-position hold for the twin in each dtype.

    The twin computes in the dtype itself, and declares that accumulation.
    """
    report = check_implementation(
        TorchStep.twin(function, dtype=dtype), max_examples=QUICK_EXAMPLES
    )
    assert report.passed, report.table()


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("function", ["local_m_distribution", "local_p_distribution"])
def test_reference_conforms_through_the_numpy_adapter(function: Step, dtype: str) -> None:
    """The NumPy reference and its exact VJP conform through ``NumpyStep`` (``input.gradient``)."""
    impl = NumpyStep.reference(function, dtype=dtype)
    report = check_implementation(impl, max_examples=QUICK_EXAMPLES)
    assert report.passed, report.table()
    assert "input.gradient" in {r.clause for r in report.results if r.status == "passed"}


@pytest.mark.parametrize("bug", list(BUGS))
def test_planted_local_bug_fails_its_clause_in_the_quick_run(bug: str) -> None:
    """Each bug of a local kernel fails the clause it breaks (local.window, local.p-gaussian...)."""
    planted = BUGS[bug]
    impl = TorchStep(planted.fn, planted.function, name=bug)
    report = check_implementation(
        impl, max_examples=QUICK_EXAMPLES, clauses_to_check=frozenset({planted.clause})
    )
    (result,) = report.results
    assert result.status == "failed", report.table()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_planted_local_bugs_are_caught_in_low_precision(dtype: str) -> None:
    """The window and Gaussian bugs stand far above bfloat16's allowance too (local.p-gaussian)."""
    for bug in ("window off by one, |j - i| < D", "Gaussian sigma = D instead of D / 2"):
        planted = BUGS[bug]
        impl = TorchStep(planted.fn, planted.function, name=bug, dtype=dtype)
        report = check_implementation(
            impl, max_examples=QUICK_EXAMPLES, clauses_to_check=frozenset({planted.clause})
        )
        assert report.results[0].status == "failed", (bug, report.table())


def test_every_local_clause_has_a_check() -> None:
    """local.m-position, local.window, local.window-softmax, local.p-window, local.p-gaussian
    and local.p-position are each checked for the function that states them."""
    checked = {
        clause
        for function in ("local_m_distribution", "local_p_distribution", "local_p_position")
        for _, clause in checks_for(TorchStep.twin(function))
    }
    assert {
        "local.m-position",
        "local.window",
        "local.window-softmax",
        "local.p-window",
        "local.p-gaussian",
        "local.p-position",
    } <= checked


def test_drawn_cases_reach_the_edge_cases() -> None:
    """local.window, local.p-window: the cases clip windows at both ends, empty them, put
    keys exactly on an edge and positions on 0, Tk - 1 and beyond, and keep other positions
    away from the edges."""
    seen: dict[str, bool] = dict.fromkeys(
        ("clips low", "clips high", "empty row", "on edge", "beyond", "D = 0", "Tq != Tk"), False
    )
    impl_m = TorchStep.twin("local_m_distribution")
    impl_p = TorchStep.twin("local_p_distribution", dtype="bfloat16")
    margins_kept = []

    @settings(max_examples=150, deadline=None, database=None)
    @given(cases(impl_m, Draw(masks=("none", "bool", "fully_masked"))))
    def probe_m(case: Case) -> None:
        t_q, t_k = case.arrays["scores"].shape[-2:]
        d = int(case.options["half_width"])  # type: ignore[call-overload]
        seen["D = 0"] |= d == 0
        seen["Tq != Tk"] |= t_q != t_k
        seen["clips low"] |= d >= 1 and t_k > d
        seen["clips high"] |= t_q > t_k - d >= 1
        seen["empty row"] |= t_q > t_k + d

    @settings(max_examples=150, deadline=None, database=None)
    @given(cases(impl_p, Draw()))
    def probe_p(case: Case) -> None:
        p = case.arrays["positions"]
        t_k = case.arrays["scores"].shape[-1]
        d = int(case.options["half_width"])  # type: ignore[call-overload]
        seen["on edge"] |= bool((p == np.round(p)).any() and (np.abs(p) < t_k + d).any())
        seen["beyond"] |= bool(((p < -d) | (p > t_k - 1 + d)).any())
        fraction = np.abs(p - np.round(p))
        off = fraction[fraction > 0]
        margins_kept.append(bool((off >= position_margin(impl_p, d)).all()))

    probe_m()
    probe_p()
    assert all(seen.values()), seen
    assert all(margins_kept)


def test_gradient_cases_of_local_p_draw_no_position_on_an_edge() -> None:
    """input.gradient: local-p's gradient cases keep every key off its window's edge."""
    impl = TorchStep.twin("local_p_distribution")
    (check,) = [c for c, clause in checks_for(impl) if clause == "input.gradient"]

    @settings(max_examples=60, deadline=None, database=None)
    @given(cases(impl, check.draw))
    def probe(case: Case) -> None:
        p = case.arrays["positions"][..., None]
        t_k = case.arrays["scores"].shape[-1]
        d = int(case.options["half_width"])  # type: ignore[call-overload]
        on_edge = np.abs(np.abs(np.arange(t_k) - p) - d) == 0
        assert not on_edge.any()

    probe()


def test_local_bounds_are_tight_for_a_sound_kernel() -> None:
    """input.gradient and local.p-gaussian: the derived bound is a bound, not a blanket.

    The float32-accumulating bfloat16 kernel sits below its allowance but within
    a factor of a few hundred of it on some case.
    """
    impl = TorchStep(banded_local_p, "local_p_distribution", dtype="bfloat16")
    ratios: list[float] = []

    @settings(max_examples=40, deadline=None, database=None)
    @given(cases(impl, Draw(positions=("off_grid",))))
    def probe(case: Case) -> None:
        o = observe(impl, case, gradients=True)
        assert o.output is not None
        got, truth, bound = o.output.result, o.truth.result, o.bounds.result
        ratios.append(float(np.max(np.abs(got - truth) / (bound + 1e-300), initial=0.0)))

    probe()
    assert max(ratios) <= 1.0, max(ratios)
    assert max(ratios) > 3e-3, max(ratios)


def test_local_counterexample_replays(tmp_path: Any) -> None:
    """local.p-gaussian: a failing local case is saved, and replays failing on the bug and
    passing on the twin."""
    from attnref.oracle import replay

    planted = BUGS["Gaussian sigma = D instead of D / 2"]
    impl = TorchStep(planted.fn, planted.function, name="sigma = D")
    report = check_implementation(
        impl,
        max_examples=QUICK_EXAMPLES,
        clauses_to_check=frozenset({planted.clause}),
        save_dir=tmp_path,
    )
    (result,) = report.results
    assert result.status == "failed"
    assert result.counterexample is not None
    assert replay(impl, planted.clause, result.counterexample).status == "failed"
    twin = TorchStep.twin(planted.function)
    assert replay(twin, planted.clause, result.counterexample).status == "passed"
