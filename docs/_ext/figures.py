"""Sphinx extension: draw the documentation's figures from the code, at build time.

Every picture in the docs is computed here with :mod:`attnref` and drawn with
matplotlib's Agg backend into ``docs/_generated/figures`` (ignored by git)
when the builder starts; a page shows one with
``.. figure:: /_generated/figures/<name>.png``. A file is rewritten only when
its bytes change, so an unchanged figure does not make Sphinx re-read pages.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

# Agg draws to files only; it must be chosen before pyplot is imported.
matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import tutorial_data as toy
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle
from sphinx.application import Sphinx
from sphinx.util import logging

import attnref
from attnref.demo.bottleneck import bottleneck, position_r2
from attnref.demo.gradient_flow import gradient_flow
from attnspec.typing import Array

logger = logging.getLogger(__name__)

F64 = Array
"""The arrays the figures draw: real floating NumPy arrays."""
FIGURES: dict[str, Callable[[], Figure]] = {}
"""Every figure by file stem, in drawing order."""

BLUE, ORANGE, GREY = "#1f77b4", "#ff7f0e", "#8c8c8c"
CMAP = "Blues"


def figure(stem: str) -> Callable[[Callable[[], Figure]], Callable[[], Figure]]:
    """Register a function that draws the figure ``<stem>.png``."""

    def register(draw: Callable[[], Figure]) -> Callable[[], Figure]:
        FIGURES[stem] = draw
        return draw

    return register


def _weights() -> tuple[F64, F64]:
    """Context and weights of dot-product attention on the toy pair."""
    context, weights = attnref.attention(toy.S, toy.H, toy.H)
    return context, weights


def _heatmap(ax: Axes, weights: F64, rows: tuple[str, ...], cols: tuple[str, ...]) -> None:
    ax.imshow(weights, cmap=CMAP, vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.tick_params(length=0)
    for (i, j), w in np.ndenumerate(weights):
        ax.text(j, i, f"{w:.2f}", ha="center", va="center", color="white" if w > 0.55 else "black")


def _step_labels() -> tuple[str, ...]:
    return tuple(
        f"{inp} → {out}" for inp, out in zip(toy.DECODER_INPUTS, toy.DECODER_OUTPUTS, strict=True)
    )


# --- why attention ---------------------------------------------------------------------------


def _cell(ax: Axes, x: float, y: float, text: str, color: str) -> None:
    ax.add_patch(Rectangle((x - 0.35, y - 0.25), 0.7, 0.5, facecolor=color, edgecolor="black"))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], **style: Any) -> None:
    style = {"arrowstyle": "-|>", "mutation_scale": 10, "color": "black", **style}
    ax.add_patch(FancyArrowPatch(start, end, shrinkA=2, shrinkB=2, **style))


@figure("encoder-decoder")
def _encoder_decoder() -> Figure:
    _, weights = _weights()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.0))
    for ax, attend in zip(axes, (False, True), strict=True):
        ax.set_xlim(-0.6, 7.6)
        ax.set_ylim(-0.8, 1.9)
        ax.axis("off")
        for j, word in enumerate(toy.SOURCE):
            _cell(ax, j, 0.4, f"h{j + 1}", "#dbe9f6")
            ax.text(j, -0.2, word, ha="center", va="top", fontsize=9)
            if j:
                _arrow(ax, (j - 0.65, 0.4), (j - 0.35, 0.4))
        for t, (inp, out) in enumerate(zip(toy.DECODER_INPUTS, toy.DECODER_OUTPUTS, strict=True)):
            x = 5 + t
            _cell(ax, x, 0.4, f"s{t + 1}", "#fde3c8")
            ax.text(x, -0.2, f"{inp}\n→ {out}", ha="center", va="top", fontsize=8)
            if t:
                _arrow(ax, (x - 0.65, 0.4), (x - 0.35, 0.4))
        _arrow(ax, (3.35, 0.4), (4.65, 0.4), color=ORANGE, linewidth=2)
        if not attend:
            ax.set_title("seq2seq: the decoder sees the source only through h4", fontsize=10)
            ax.text(4.0, 0.6, "fixed vector", ha="center", fontsize=8, color=ORANGE)
            continue
        ax.set_title("with attention: step 3 looks back at every h_j", fontsize=10)
        step = toy.STEP
        for j, w in enumerate(weights[step]):
            _arrow(
                ax,
                (j, 0.65),
                (5 + step, 0.65),
                connectionstyle="arc3,rad=-0.3",
                color=BLUE,
                linewidth=0.5 + 6 * w,
                alpha=0.4 + 0.6 * w,
                arrowstyle="-",
            )
            ax.text(j - 0.05, 0.75, f"α={w:.2f}", fontsize=7, color=BLUE, ha="right")
    fig.tight_layout()
    return fig


BOTTLENECK_WORDS = 20
"""The sentence length whose words the right panel of the bottleneck figure shows."""


@figure("bottleneck")
def _bottleneck() -> Figure:
    result = bottleneck()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ax = axes[0]
    ax.plot(result.lengths, result.attention, marker="o", color=BLUE, label="attention contexts")
    ax.plot(result.lengths, result.fixed_state, marker="o", color=ORANGE, label="last state h_N")
    ax.plot(
        result.lengths,
        result.bound,
        linestyle=":",
        color=GREY,
        label="bound for any linear read-out of h_N",
    )
    ax.set_xlabel("source length N (words)")
    ax.set_ylabel("share of the source recovered (R²)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("the same 8 numbers for 1 word or 40", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    n = BOTTLENECK_WORDS
    positions = np.arange(1, n + 1)
    ax.bar(positions - 0.2, position_r2(n, attention=True), width=0.4, color=BLUE, label="a_t")
    ax.bar(positions + 0.2, position_r2(n, attention=False), width=0.4, color=ORANGE, label="h_N")
    ax.set_xlabel("source word j (1 = first)")
    ax.set_ylabel("R² of word j")
    ax.set_ylim(-0.02, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xticks(positions[::2])
    ax.set_title(f"N = {n}: which words survive", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    return fig


# --- Q, K, V and the dot-product heatmap ------------------------------------------------------


@figure("lookup")
def _lookup() -> Figure:
    _, weights = _weights()
    soft = weights[toy.STEP]
    hard = np.zeros_like(soft)
    hard[int(np.argmax(soft))] = 1.0
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), sharey=True)
    for ax, w, title in (
        (axes[0], hard, "dictionary: one key matches exactly"),
        (axes[1], soft, "attention: every key matches a little"),
    ):
        ax.bar(toy.SOURCE, w, color=BLUE)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1.1)
        for j, value in enumerate(w):
            ax.text(j, value + 0.03, f"{value:.2f}", ha="center", fontsize=8)
    axes[0].set_ylabel("weight of each value")
    fig.tight_layout()
    return fig


def _box(
    ax: Axes, x: float, y: float, text: str, color: str, width: float = 1.3, height: float = 0.6
) -> None:
    corner = (x - width / 2, y - height / 2)
    ax.add_patch(Rectangle(corner, width, height, facecolor=color, edgecolor="black"))
    ax.text(x, y, text, ha="center", va="center", fontsize=8)


@figure("query-keys-values")
def _query_keys_values() -> Figure:
    context, weights = _weights()
    t = toy.STEP
    q = toy.S[t]
    scores = attnref.score_dot(toy.S[t : t + 1], toy.H)[0]
    alpha = weights[t]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.set_xlim(-1.0, 10.6)
    ax.set_ylim(-0.9, 4.3)
    ax.axis("off")
    rows = [3.2 - 1.0 * j for j in range(len(toy.SOURCE))]
    _box(ax, 0.0, 1.7, f"query s3\n({q[0]:+.1f}, {q[1]:+.1f})\nread 'suis'", "#fde3c8", 1.5, 0.85)
    for label, x in (
        ("key k_j", 2.6),
        ("score q·k_j", 4.15),
        ("weight α_j", 5.6),
        ("value v_j", 7.3),
    ):
        ax.text(x, 4.05, label, ha="center", fontsize=9, fontweight="bold")
    for j, (y, word) in enumerate(zip(rows, toy.SOURCE, strict=True)):
        h = toy.H[j]
        _arrow(ax, (0.75, 1.7), (1.95, y), color=GREY, linewidth=0.8)
        _box(ax, 2.6, y, f"h{j + 1} {word}\n({h[0]:+.1f}, {h[1]:+.1f})", "#dbe9f6")
        ax.text(4.15, y, f"{scores[j]:+.2f}", ha="center", va="center", fontsize=9)
        ax.add_patch(
            Rectangle((5.0, y - 0.2), 1.2 * alpha[j], 0.4, facecolor=BLUE, edgecolor="none")
        )
        ax.text(5.0 + 1.2 * alpha[j] + 0.08, y, f"{alpha[j]:.2f}", va="center", fontsize=8)
        _box(ax, 7.3, y, f"h{j + 1}\n({h[0]:+.1f}, {h[1]:+.1f})", "#dbe9f6")
        _arrow(
            ax,
            (7.95, y),
            (8.75, 1.7),
            color=BLUE,
            linewidth=0.5 + 5 * alpha[j],
            alpha=0.35 + 0.65 * alpha[j],
        )
    a = context[t]
    _box(
        ax,
        9.55,
        1.7,
        f"attention value\na3 = Σ α_j v_j\n({a[0]:+.2f}, {a[1]:+.2f})",
        "#fde3c8",
        1.9,
        0.85,
    )
    ax.text(
        4.9,
        -0.75,
        "1. compare the query with every key   2. softmax: weights sum to 1   "
        "3. weighted sum of the values",
        ha="center",
        fontsize=8,
        color=GREY,
    )
    fig.tight_layout()
    return fig


@figure("heatmap-dot")
def _heatmap_dot() -> Figure:
    _, weights = _weights()
    fig, ax = plt.subplots(figsize=(5, 2.8))
    _heatmap(ax, weights, _step_labels(), toy.SOURCE)
    ax.set_xlabel("source word (key)")
    ax.set_ylabel("decoder step: input → output")
    ax.set_title("dot-product attention weights α", fontsize=10)
    fig.tight_layout()
    return fig


# --- the steps of the attention value ---------------------------------------------------------


def _bars(ax: Axes, labels: tuple[str, ...], values: F64, fmt: str = "{:.2f}") -> None:
    colors = [ORANGE if v == values.max() else BLUE for v in values]
    ax.bar(labels, values, color=colors)
    ax.axhline(0, color="black", linewidth=0.6)
    top = float(np.abs(values).max())
    for j, v in enumerate(values):
        ax.text(
            j,
            v + (0.04 if v >= 0 else -0.04) * top * 2,
            fmt.format(v),
            ha="center",
            va="bottom" if v >= 0 else "top",
            fontsize=8,
        )


@figure("step-scores")
def _step_scores() -> Figure:
    s = toy.S[toy.STEP : toy.STEP + 1]
    scores = attnref.score_dot(s, toy.H)[0]
    distribution = attnref.attention_distribution(scores[None, :])[0]
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
    _bars(axes[0], toy.SOURCE, scores)
    axes[0].set_title("step 1: scores e = s3ᵀ h_j", fontsize=10)
    axes[0].set_ylim(-2.2, 2.6)
    _bars(axes[1], toy.SOURCE, distribution)
    axes[1].set_title("step 2: distribution α = softmax(e)", fontsize=10)
    axes[1].set_ylim(0, 1.05)
    fig.tight_layout()
    return fig


def _hull(points: F64) -> F64:
    """The convex hull of 2-D points, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(map(tuple, points))

    def cross(o: tuple[float, ...], a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, ...]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, ...]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


@figure("convex-hull")
def _convex_hull() -> Figure:
    context, _ = _weights()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    ax.add_patch(Polygon(_hull(toy.H), closed=True, facecolor="#dbe9f6", edgecolor=BLUE))
    ax.scatter(toy.H[:, 0], toy.H[:, 1], color=BLUE, zorder=3)
    value_offsets = ((6, 4), (6, 4), (-40, 4), (8, -10))
    for j, word in enumerate(toy.SOURCE):
        ax.annotate(
            f"h{j + 1} {word}", toy.H[j], textcoords="offset points", xytext=value_offsets[j]
        )
    ax.scatter(context[:, 0], context[:, 1], color=ORANGE, marker="D", zorder=4)
    context_offsets = ((-60, -16), (8, -3), (8, -3))
    for t, label in enumerate(_step_labels()):
        ax.annotate(
            f"a{t + 1} ({label})",
            context[t],
            textcoords="offset points",
            xytext=context_offsets[t],
            color=ORANGE,
            fontsize=8,
        )
    ax.set_title("each context a_t is a convex combination of the values", fontsize=10)
    ax.set_aspect("equal")
    ax.set_xlim(-1.0, 1.9)
    ax.set_ylim(-1.2, 1.3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@figure("step-concat-hidden")
def _concat_hidden() -> Figure:
    context, _ = _weights()
    t = toy.STEP
    a, s = context[t : t + 1], toy.S[t : t + 1]
    v = attnref.concatenate_context(a, s)[0]
    hidden = attnref.attentional_hidden_state(a, s, toy.W_c)[0]
    pre = toy.W_c @ v
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.8), gridspec_kw={"width_ratios": [1.2, 1]})
    ax = axes[0]
    ax.imshow(v[None, :], cmap="RdBu", vmin=-2, vmax=2)
    for j, value in enumerate(v):
        ax.text(j, 0, f"{value:+.3f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(4), ["a3[0]", "a3[1]", "s3[0]", "s3[1]"])
    ax.set_yticks([])
    ax.axvline(1.5, color="black", linewidth=2)
    ax.set_title("step 4: v3 = [a3; s3], context first", fontsize=10)
    ax = axes[1]
    x = np.linspace(-3, 3, 200)
    ax.plot(x, np.tanh(x), color=GREY)
    ax.scatter(pre, hidden, color=ORANGE, zorder=3)
    for k in range(2):
        ax.annotate(
            f"s̃3[{k}] = {hidden[k]:+.3f}",
            (pre[k], hidden[k]),
            textcoords="offset points",
            xytext=(8, -4 if k else 6),
            fontsize=8,
        )
    ax.axhline(0, color="black", linewidth=0.5)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel("W_c v3")
    ax.set_title("step 5: s̃3 = tanh(W_c v3)", fontsize=10)
    fig.tight_layout()
    return fig


@figure("step-output")
def _step_output() -> Figure:
    context, _ = _weights()
    hidden = attnref.attentional_hidden_state(context, toy.S, toy.W_c)
    output = attnref.output_distribution(hidden, toy.W_y)
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.6), sharey=True)
    for t, ax in enumerate(axes):
        _bars(ax, toy.VOCABULARY, output[t])
        ax.set_title(f"step {t + 1} ({toy.DECODER_INPUTS[t]} →): ŷ{t + 1}", fontsize=10)
        ax.set_ylim(0, 1.1)
    fig.tight_layout()
    return fig


# --- score functions and the scale --------------------------------------------------------------


SCORE_KINDS: tuple[tuple[str, dict[str, F64]], ...] = (
    ("dot", {}),
    ("scaled_dot", {}),
    ("general", {"W_a": toy.W_general}),
    ("concat", {"W_a": toy.W_concat, "v_a": toy.v_concat}),
    ("additive", {"W_q": toy.W_concat[:, :2], "W_k": toy.W_concat[:, 2:], "v_a": toy.v_concat}),
    ("location", {"W_a": toy.W_location}),
)


@figure("score-kinds")
def _score_kinds() -> Figure:
    fig, axes = plt.subplots(2, 3, figsize=(11, 4.6))
    for ax, (kind, params) in zip(axes.flat, SCORE_KINDS, strict=True):
        _, weights = attnref.attention(toy.S, toy.H, toy.H, score=kind, **params)  # type: ignore[arg-type]
        _heatmap(ax, weights, toy.DECODER_OUTPUTS, toy.SOURCE)
        ax.set_title(kind, fontsize=10)
    fig.tight_layout()
    return fig


@figure("scale")
def _scale() -> Figure:
    rng = np.random.default_rng(0)
    dims = np.array([2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    t_k, draws = 16, 200
    peak: dict[str, list[float]] = {"unscaled": [], "scaled": []}
    for d in dims:
        q = rng.standard_normal((draws, 1, d))
        k = rng.standard_normal((draws, t_k, d))
        for name, scale in (("unscaled", 1.0), ("scaled", None)):
            w = attnref.attention_distribution(attnref.score_scaled_dot(q, k, scale=scale))
            peak[name].append(float(w.max(axis=-1).mean()))
    d = 256
    q = rng.standard_normal((1, d))
    k = rng.standard_normal((t_k, d))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    ax = axes[0]
    for label, scale, color in (
        ("λ = 1 (dot)", 1.0, ORANGE),
        ("λ = 1/√d (scaled dot)", None, BLUE),
        ("λ = 0", 0.0, GREY),
    ):
        w = attnref.attention_distribution(attnref.score_scaled_dot(q, k, scale=scale))[0]
        ax.plot(
            range(1, t_k + 1), np.sort(w)[::-1], marker="o", markersize=3, label=label, color=color
        )
    ax.set_xlabel("key, by decreasing weight")
    ax.set_ylabel("weight")
    ax.set_title(f"one query, {t_k} keys, d = {d}", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.semilogx(dims, peak["unscaled"], marker="o", color=ORANGE, label="λ = 1", base=2)
    ax.semilogx(dims, peak["scaled"], marker="o", color=BLUE, label="λ = 1/√d", base=2)
    ax.axhline(1 / t_k, color=GREY, linestyle=":", label="uniform 1/Tk")
    ax.set_xlabel("feature size d")
    ax.set_ylabel("mean largest weight")
    ax.set_ylim(0, 1.05)
    ax.set_title("unit-variance q, k: the unscaled softmax saturates", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- local attention ---------------------------------------------------------------------------

LOCAL_LENGTH = 16
LOCAL_HALF_WIDTH = 3


def local_example() -> tuple[F64, float, F64, F64]:
    """Scores, the predicted position, the window softmax and the local-p weights of one query."""
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((1, LOCAL_LENGTH))
    query = np.array([[0.6, -0.2]])
    W_p = np.array([[1.0, 0.5], [-0.5, 1.0]])
    v_p = np.array([0.8, -0.4])
    position = attnref.local_p_position(query, W_p, v_p, source_length=LOCAL_LENGTH)
    j = np.arange(LOCAL_LENGTH)
    window = np.abs(j - position[:, None]) <= LOCAL_HALF_WIDTH
    inside = attnref.attention_distribution(scores, mask=window)[0]
    local_p = attnref.local_p_distribution(scores, position, half_width=LOCAL_HALF_WIDTH)[0]
    return scores[0], float(position[0]), inside, local_p


@figure("local-p-window")
def _local_p_window() -> Figure:
    _, p, inside, local_p = local_example()
    d = LOCAL_HALF_WIDTH
    sigma = d / 2
    j = np.arange(LOCAL_LENGTH)
    x = np.linspace(0, LOCAL_LENGTH - 1, 400)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.axvspan(p - d, p + d, color="#dbe9f6", label=f"window |j − p| ≤ D = {d}")
    ax.bar(j - 0.2, inside, width=0.4, color=GREY, label="softmax over the window")
    ax.bar(j + 0.2, local_p, width=0.4, color=BLUE, label="× Gaussian = local-p weight")
    ax.plot(
        x,
        np.exp(-((x - p) ** 2) / (2 * sigma**2)),
        color=ORANGE,
        label=f"exp(−(j − p)²/2σ²), σ = D/2 = {sigma}",
    )
    ax.axvline(p, color=ORANGE, linestyle="--")
    ax.text(p + 0.15, 1.04, f"p = {p:.2f}", color=ORANGE, ha="left")
    ax.set_xticks(j)
    ax.set_xlabel("source position j (0-based)")
    ax.set_ylim(0, 1.12)
    ax.set_title(f"local-p: row sum {local_p.sum():.3f} ≤ 1 (no renormalisation)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


@figure("local-m")
def _local_m() -> Figure:
    rng = np.random.default_rng(4)
    scores = rng.standard_normal((6, 8))
    weights = attnref.local_m_distribution(scores, half_width=1)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    _heatmap(ax, weights, tuple(str(i) for i in range(6)), tuple(str(j) for j in range(8)))
    ax.set_xlabel("key j")
    ax.set_ylabel("query i (p_i = i)")
    ax.set_title("local-m, D = 1: window [i − 1, i + 1]", fontsize=10)
    fig.tight_layout()
    return fig


# --- masks ---------------------------------------------------------------------------------------


@figure("masks")
def _masks() -> Figure:
    panels = []
    q = np.zeros((3, 1))
    k = np.zeros((5, 1))
    v = np.eye(5)
    padding = np.array([True, True, True, False, False])
    _, w = attnref.scaled_dot_product_attention(q, k, v, mask=padding)
    panels.append(("key padding (Tk = 5, 2 padded)", w))
    for alignment in ("top_left", "bottom_right"):
        _, w = attnref.scaled_dot_product_attention(
            q, k, v, is_causal=True, causal_alignment=alignment
        )
        panels.append((f"causal {alignment}, Tq=3, Tk=5", w))
    _, w = attnref.scaled_dot_product_attention(
        np.zeros((5, 1)),
        np.zeros((3, 1)),
        np.eye(3),
        is_causal=True,
        causal_alignment="bottom_right",
    )
    panels.append(("bottom_right,\nTq=5, Tk=3", w))
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.9), gridspec_kw={"width_ratios": [5, 5, 5, 3]})
    for ax, (title, weights) in zip(axes, panels, strict=True):
        rows, cols = weights.shape
        _heatmap(
            ax, weights, tuple(str(i) for i in range(rows)), tuple(str(j) for j in range(cols))
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key j")
    axes[0].set_ylabel("query i")
    fig.tight_layout()
    return fig


# --- gradients -----------------------------------------------------------------------------------


@figure("gradient-flow")
def _gradient_flow() -> Figure:
    n = 30
    without = gradient_flow(n, attention=False, confirm=False)
    with_ = gradient_flow(n, attention=True, confirm=False)
    lengths = [2, 4, 6, 8, 10, 15, 20, 25, 30, 40]
    far = {
        flag: [gradient_flow(m, attention=flag, confirm=False).most_distant for m in lengths]
        for flag in (False, True)
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ax = axes[0]
    positions = np.arange(1, n + 1)
    ax.semilogy(
        positions, without.norms, marker="o", markersize=3, color=ORANGE, label="without attention"
    )
    ax.semilogy(
        positions, with_.norms, marker="o", markersize=3, color=BLUE, label="with attention"
    )
    ax.set_xlabel("source position j (1 = most distant)")
    ax.set_ylabel("‖∂ŷ_k / ∂x_j‖")
    ax.set_title(f"N = {n}: gradient reaching each source word", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.semilogy(lengths, far[False], marker="o", color=ORANGE, label="without attention")
    ax.semilogy(lengths, far[True], marker="o", color=BLUE, label="with attention")
    ax.set_xlabel("source length N")
    ax.set_ylabel("‖∂ŷ_k / ∂x_1‖")
    ax.set_title("gradient reaching the first word", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@figure("gradient-checks")
def _gradient_checks() -> Figure:
    n = 30
    flow = gradient_flow(n, attention=False, confirm=True, differences=True)
    assert flow.difference_norms is not None
    assert flow.difference_noise is not None
    assert flow.autograd_norms is not None
    positions = np.arange(1, n + 1)
    central = np.array(flow.difference_norms)
    floor = 1e-26  # where a central difference of exactly 0 is drawn on the log axis
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.semilogy(positions, flow.norms, color=BLUE, label="complex step")
    ax.semilogy(
        positions,
        flow.autograd_norms,
        linestyle="none",
        marker="x",
        color="black",
        markersize=5,
        label="PyTorch autograd",
    )
    shown = np.where(central > 0, central, floor)
    ax.semilogy(
        positions,
        shown,
        linestyle="none",
        marker="o",
        markerfacecolor="none",
        color=ORANGE,
        label="central differences (0 drawn at the bottom)",
    )
    ax.axhline(flow.difference_noise, color=GREY, linestyle="--")
    ax.text(
        1,
        flow.difference_noise * 3,
        f"rounding noise of central differences ≈ {flow.difference_noise:.0e}",
        fontsize=8,
        color=GREY,
    )
    ax.set_ylim(floor / 3, 1)
    ax.set_xlabel("source position j (1 = most distant)")
    ax.set_ylabel("‖∂ŷ_k / ∂x_j‖")
    ax.set_title(
        f"N = {n}, without attention: three ways to measure the same gradient", fontsize=10
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# --- the Sphinx side -----------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def draw_all(directory: Path) -> list[Path]:
    """Draw every figure into ``directory``; return the files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    with plt.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        for stem, draw in FIGURES.items():
            data = _png(draw())
            path = directory / f"{stem}.png"
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                changed.append(path)
    return changed


def generate(app: Sphinx) -> None:
    """``builder-inited``: draw the figures into ``<srcdir>/_generated/figures``."""
    start = time.perf_counter()
    changed = draw_all(Path(app.srcdir) / "_generated" / "figures")
    logger.info(
        "figures: %d drawn, %d changed, %.1f s",
        len(FIGURES),
        len(changed),
        time.perf_counter() - start,
    )


def setup(app: Sphinx) -> dict[str, Any]:
    """Draw the figures when the builder starts."""
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
