"""Checking an implementation at full size: long sequences and wide heads.

Every row of attention's output depends on its own query and on all keys
and values, never on other queries. So at a size where the truth cannot be
computed whole in extended precision (``Tq = Tk = 4096``, ``d = 128``,
``B·H = 8`` is 137 billion extended-precision multiply-adds), the oracle runs
the implementation on the whole case and judges a sample of its rows: the
truth and the error bounds are evaluated on those rows only, which is exact
for them. The rows sampled include the first and the last.

:func:`check_full_size` (``attnspec check TARGET --full-size [LENGTH]``)
judges one full-size case per variant the implementation offers: plain
(``sdpa.formula``), with the causal flag (its declared alignment's clause)
and with a boolean key-padding mask (``distribution.mask-polarity``). A
causal case restricted to some rows keeps its meaning by turning the flag
into the explicit mask of those rows. Each variant records how long the
implementation and the judging took and the peak memory of the call.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from attnref.masking import causal_mask
from attnref.oracle.checks import MismatchError, context, weights
from attnref.oracle.observe import observe
from attnref.oracle.protocol import Case, Float64Array, Implementation, Output
from attnref.oracle.report import ClauseResult, FullSizeRun, Report, Status
from attnref.oracle.rounding import round_to
from attnspec.errors import ArgumentError

__all__ = ["FULL_LENGTH", "check_full_size", "check_large", "large_case"]

FULL_LENGTH = 4096
"""``Tq = Tk`` of the full-size check unless given: a long-context prefill."""


def large_case(
    impl: Implementation,
    /,
    *,
    batch: int,
    heads: int,
    length: int,
    d: int,
    seed: int = 0,
    causal: bool = False,
    masked: bool = False,
) -> Case:
    """A random SDPA case of shape ``[batch, heads, length, d]``, in ``impl``'s dtype.

    With ``causal`` the causal flag is set; with ``masked`` a boolean
    key-padding mask ``[batch, 1, 1, length]`` hides about one key in eight
    (never the first, so that no row is fully masked).
    """
    rng = np.random.default_rng(seed)
    shape = (batch, heads, length, d)
    arrays = {
        n: round_to(impl.dtype, rng.standard_normal(shape)) for n in ("query", "key", "value")
    }
    mask = None
    if masked:
        keep = rng.random((batch, 1, 1, length)) >= 0.125  # [B, 1, 1, Tk]
        keep[..., 0] = True
        mask = keep
    options: dict[str, object] = {"is_causal": True} if causal else {}
    return Case("scaled_dot_product_attention", arrays, mask, options)


def _rows(case: Case, rows: npt.NDArray[np.int64], alignment: str) -> Case:
    """The same case restricted to some query rows (exact: rows are independent).

    The causal flag becomes the explicit mask of those rows, since the rows
    kept are no longer the first ``len(rows)`` of the case.
    """
    arrays = dict(case.arrays)
    arrays["query"] = np.take(case.arrays["query"], rows, axis=-2)
    mask = case.mask
    options = dict(case.options)
    if options.pop("is_causal", False):
        t = case.query.shape[-2]
        allowed = causal_mask(t, case.key.shape[-2], alignment=alignment)[rows]  # type: ignore[arg-type]
        mask = allowed if mask is None else np.asarray(mask) & allowed
    elif mask is not None and np.shape(mask)[-2] != 1:
        mask = np.take(mask, rows, axis=-2)
    return replace(case, arrays=arrays, mask=mask, options=options)


class _Computed:
    """``impl`` with its result on the sampled rows already computed (observed, not re-run)."""

    def __init__(self, impl: Implementation, output: Output) -> None:
        self._impl, self._output = impl, output
        self.name, self.framework, self.dtype = impl.name, impl.framework, impl.dtype
        self.device, self.function, self.score_form = impl.device, impl.function, impl.score_form
        self.conventions, self.features = impl.conventions, impl.features

    def forward(self, case: Case, /) -> Output:
        return self._output

    def vjp(self, case: Case, cotangent: Float64Array, /) -> dict[str, Float64Array]:
        raise NotImplementedError("the full-size check judges the forward pass only")


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@contextmanager
def _peak_memory(impl: Implementation) -> Iterator[list[int | None]]:
    """The peak memory once what runs inside is done: the GPU allocator's peak on a CUDA
    device (reset before), else the process' peak resident memory so far."""
    measured: list[int | None] = [None]
    if impl.framework == "torch" and impl.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(impl.device)
        torch.cuda.reset_peak_memory_stats(impl.device)
        yield measured
        torch.cuda.synchronize(impl.device)
        measured[0] = int(torch.cuda.max_memory_allocated(impl.device))
        return
    yield measured
    measured[0] = _peak_rss_bytes()


def _memory_of(impl: Implementation) -> str:
    cuda = impl.framework == "torch" and impl.device.startswith("cuda")
    return impl.device if cuda else "process"


def check_large(
    impl: Implementation,
    /,
    *,
    batch: int = 1,
    heads: int = 8,
    length: int = FULL_LENGTH,
    d: int = 128,
    rows: int = 16,
    seed: int = 0,
    causal: bool = False,
    masked: bool = False,
    clause: str = "sdpa.formula",
) -> tuple[ClauseResult, FullSizeRun]:
    """Check one full-size case, judging ``rows`` sampled query rows, as ``clause``.

    Returns the verdict and what the case cost (time and memory).
    """
    case = large_case(
        impl, batch=batch, heads=heads, length=length, d=d, seed=seed, causal=causal, masked=masked
    )
    picked = np.unique(
        np.concatenate([[0, length - 1], np.random.default_rng(seed).integers(0, length, rows)])
    )[:rows]
    with _peak_memory(impl) as memory:
        start = time.perf_counter()
        out = impl.forward(case)
        middle = time.perf_counter()
    sub = _rows(case, picked, impl.conventions.causal_alignment)
    rows_out = replace(
        out,
        context=np.take(out.context, picked, axis=-2),
        weights=None if out.weights is None else np.take(out.weights, picked, axis=-2),
    )
    check = "sdpa/full-size"
    try:
        observation = observe(_Computed(impl, rows_out), sub, gradients=False)
        measures = context(observation) + weights(observation)
        worst = max(measures, key=lambda m: m.ratio)
        status: Status = "passed" if worst.ratio <= 1 else "failed"
        result = ClauseResult(clause, check, status, 1, worst.ratio, worst.describe())
    except MismatchError as mismatch:
        result = ClauseResult(clause, check, "failed", 1, float("inf"), str(mismatch))
    end = time.perf_counter()
    cost = FullSizeRun(
        clause,
        (batch, heads, length, d),
        len(picked),
        middle - start,
        end - middle,
        memory[0],
        _memory_of(impl),
    )
    return result, cost


def check_full_size(
    impl: Implementation,
    /,
    *,
    length: int = FULL_LENGTH,
    batch: int = 1,
    heads: int = 8,
    d: int = 128,
    rows: int = 16,
    seed: int = 0,
    clauses_to_check: frozenset[str] | None = None,
    target: str | None = None,
) -> Report:
    """Check ``impl`` on one full-size case per variant it offers: plain, causal, masked.

    Raises
    ------
    ArgumentError
        If ``impl`` does not implement scaled dot-product attention, the
        sizes are not positive, the shape is outside the shapes it declares
        it supports, or no variant is left after ``clauses_to_check``.
    """
    if impl.function != "scaled_dot_product_attention":
        raise ArgumentError(
            f"--full-size checks scaled_dot_product_attention; {impl.name} implements "
            f"{impl.function}"
        )
    if min(length, batch, heads, d, rows) < 1:
        raise ArgumentError(f"--full-size LENGTH must be at least 1; got {length}")
    probe = large_case(impl, batch=batch, heads=heads, length=length, d=d, seed=seed)
    supports = getattr(impl, "supports", None)
    if supports is not None and not supports(probe):
        raise ArgumentError(
            f"the full-size shape {[batch, heads, length, length, d]} ([B, H, Tq, Tk, d]) is "
            "outside the shapes it declares it supports (--shape-limit)"
        )
    causal_clause = f"sdpa.causal-{impl.conventions.causal_alignment.replace('_', '-')}"
    variants = [("sdpa.formula", False, False)]
    if "causal" in impl.features:
        variants.append((causal_clause, True, False))
    if {"bool_mask", "key_padding_mask"} & impl.features:
        variants.append(("distribution.mask-polarity", False, True))
    if clauses_to_check is not None:
        variants = [v for v in variants if v[0] in clauses_to_check]
        if not variants:
            asked = ", ".join(sorted(clauses_to_check))
            raise ArgumentError(
                "--full-size judges sdpa.formula, the causal clause and "
                f"distribution.mask-polarity; --clause asked for {asked}"
            )
    start = time.perf_counter()
    results, runs = [], []
    for clause, causal, masked in variants:
        result, cost = check_large(
            impl,
            batch=batch,
            heads=heads,
            length=length,
            d=d,
            rows=rows,
            seed=seed,
            causal=causal,
            masked=masked,
            clause=clause,
        )
        results.append(result)
        runs.append(cost)
    return Report.of(
        impl,
        target=target,
        seed=seed,
        max_examples=1,
        results=results,
        seconds=time.perf_counter() - start,
        mode="full-size",
        full_size=runs,
    )
