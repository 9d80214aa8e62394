"""``attnspec demo`` and ``attnspec gradient-flow``: the tutorial's demonstrations.

:func:`add_demo_parsers` adds both subcommands to the ``attnspec`` parser;
:func:`run_demo` and :func:`run_gradient_flow` run them. Exit status: 0 on
success, 1 when the twin or autograd disagrees, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

import attnref
from attnref.demo import running_example as example
from attnref.demo.gradient_flow import GradientFlow, gradient_flow
from attnref.demo.seq2seq import ModelConfig, make_weights
from attnref.testing.gradcheck import gradient_error, setting
from attnspec.typing import Array

__all__ = ["add_demo_parsers", "run_demo", "run_gradient_flow"]

DEFAULT_LENGTHS = (5, 10, 20, 40)

NOISE_MARGIN = 100.0
"""A central-difference value under this many times its rounding noise is starred: the
noise is then at least 1 % of it, and below the noise the value measures nothing."""

TWIN_RTOL = 1e-13
"""Largest normwise relative difference between attnref and attnref.torch on a demo step:
both compute the same float64 formula exactly to rounding, so a few hundred ulp of the
step's norm; a wrong twin differs by O(1)."""


def _positive(text: str) -> int:
    """An ``int`` of at least 1, for ``--lengths``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def add_demo_parsers(commands: Any, /) -> None:
    """Add the ``demo`` and ``gradient-flow`` subcommands to ``commands`` (argparse subparsers)."""
    commands.add_parser(
        "demo",
        help="replay the tutorial's running example, step by step",
        description=(
            "Replay the running example of the tutorial (I am a student -> je suis étudiant): "
            "the six steps of the attention value at the decoder step that has read 'suis', "
            "with the tutorial's numbers, computed by attnref and checked against its "
            "PyTorch twin."
        ),
    )
    flow = commands.add_parser(
        "gradient-flow",
        help="gradient reaching the most distant source word, with and without attention",
        description=(
            "Norm of the gradient of one decoder output with respect to the most distant "
            "source word, for each source length, with and without attention; by complex "
            "step, confirmed by PyTorch autograd when torch is installed."
        ),
    )
    flow.add_argument(
        "--lengths",
        nargs="+",
        type=_positive,
        default=list(DEFAULT_LENGTHS),
        metavar="N",
        help="source lengths (default: %(default)s)",
    )
    flow.add_argument(
        "--json",
        metavar="PATH",
        help="also write the full result (every position) as JSON to PATH; '-' for stdout "
        "instead of the table",
    )
    flow.add_argument("--seed", type=int, default=0, help="seed of the weights and sources")
    flow.add_argument(
        "--no-confirm",
        action="store_true",
        help="skip the PyTorch autograd confirmation",
    )


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _vector(values: Sequence[float], /) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def _by_word(words: Sequence[str], values: Sequence[float], /) -> str:
    return "  ".join(f"{word} {v:.4f}" for word, v in zip(words, values, strict=True))


def _demo_steps(module: Any, to: Any, h: Any, s: Any, W_c: Any, W_y: Any) -> dict[str, Any]:
    """The six steps with the functions of ``module`` (attnref or attnref.torch)."""
    scores = module.score_dot(s, h)  # [1, N]
    distribution = module.attention_distribution(scores)  # [1, N]
    value = module.attention_value(distribution, h)  # [1, d]
    concatenation = module.concatenate_context(value, s)  # [1, 2 d]
    state = module.attentional_hidden_state(value, s, W_c)  # [1, d]
    output = module.output_distribution(state, W_y)  # [1, V]
    return {
        "scores": to(scores),
        "distribution": to(distribution),
        "value": to(value),
        "concatenation": to(concatenation),
        "hidden": to(state),
        "output": to(output),
    }


STEP_LINES = (
    ("1. attention scores", "e = s3ᵀ h_j", "scores"),
    ("2. attention distribution", "α = softmax(e)", "distribution"),
    ("3. attention value", "a3 = Σ α_j h_j", "value"),
    ("4. concatenation", "[a3; s3]", "concatenation"),
    ("5. attentional hidden state", "s̃3 = tanh(W_c [a3; s3])", "hidden"),
    ("6. output distribution", "ŷ3 = softmax(W_y s̃3)", "output"),
)
"""Each step of the attention value as the tutorial names it, its formula, its key."""


def run_demo(out: TextIO, err: TextIO, /) -> int:
    """Run ``attnspec demo``, printing to ``out`` and ``err``; return the exit status.

    It replays the running example of the tutorial (:mod:`attnref.demo.running_example`):
    the six steps of the third decoder step, which has read *suis*, with the
    tutorial's numbers, then checks that the PyTorch twin computes the same.
    """
    t = example.STEP
    s = example.S[t : t + 1]  # [1, d]
    steps = _demo_steps(attnref, np.asarray, example.H, s, example.W_c, example.W_y)
    source, vocabulary = example.SOURCE, example.VOCABULARY
    print(
        f"The tutorial's running example: {' '.join(source)} → {' '.join(example.DECODER_OUTPUTS)}",
        file=out,
    )
    print(
        f"Decoder step {t + 1} has read {example.DECODER_INPUTS[t]!r} and must predict the "
        "next word.\n"
        f"Query: its state s{t + 1} = {_vector(s[0])}.\n"
        "Keys and values: the encoder states "
        + ", ".join(f"h{j + 1} {word}" for j, word in enumerate(source))
        + ".\n",
        file=out,
    )
    width = max(len(name) for name, _, _ in STEP_LINES)
    for name, formula, key in STEP_LINES:
        row = steps[key][0]
        if key in ("scores", "distribution"):
            shown = _by_word(source, row)
        elif key == "output":
            shown = _by_word(vocabulary, row)
        else:
            shown = _vector(row)
        print(f"{name:<{width}}  {formula}\n{'':<{width}}  {shown}", file=out)
    alpha = steps["distribution"][0]
    probabilities = steps["output"][0]
    attended = int(np.argmax(alpha))
    predicted = int(np.argmax(probabilities))
    print(
        f"\nThe decoder predicts {vocabulary[predicted]!r} "
        f"(probability {probabilities[predicted]:.2f}), attending most to "
        f"{source[attended]!r} (weight {alpha[attended]:.2f}).",
        file=out,
    )
    _, weights = attnref.attention(example.S, example.H, example.H)
    alignment = ", ".join(
        f"{word} ← {source[int(np.argmax(row))]}"
        for word, row in zip(example.DECODER_OUTPUTS, weights, strict=True)
    )
    print(f"Over the three steps the attention aligns {alignment}.\n", file=out)

    if not _torch_available():
        print("attnref.torch: skipped (torch is not installed)", file=out)
        return 0
    # Note: imported here because torch is an optional dependency.
    import torch

    import attnref.torch as twin

    def tensor(a: Array) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64))

    twin_steps = _demo_steps(
        twin,
        lambda x: x.detach().numpy(),
        tensor(example.H),
        tensor(s),
        tensor(example.W_c),
        tensor(example.W_y),
    )
    worst = max(gradient_error(steps[key], twin_steps[key]) for key in steps)
    if worst <= TWIN_RTOL:
        print(f"attnref.torch agrees on all six steps: relative difference {worst:.1e}", file=out)
        return 0
    print(
        f"attnspec: error: attnref.torch disagrees: relative difference {worst:.1e} "
        f"> {TWIN_RTOL:.0e}",
        file=err,
    )
    return 1


def _flow_record(flow: GradientFlow, /) -> dict[str, Any]:
    return {
        "attention": flow.attention,
        "norms": list(flow.norms),
        "autograd_norms": None if flow.autograd_norms is None else list(flow.autograd_norms),
        "disagreement": flow.disagreement,
        "central_difference_norms": (
            None if flow.difference_norms is None else list(flow.difference_norms)
        ),
        "central_difference_noise": flow.difference_noise,
    }


def _difference_cell(flow: GradientFlow, /) -> str:
    """The central-difference norm at ``x_1``, starred when it is within the noise."""
    norms, noise = flow.difference_norms, flow.difference_noise
    if norms is None or noise is None:
        raise ValueError("the flow was computed without differences=True")
    value = norms[0]
    star = "*" if value < NOISE_MARGIN * noise else " "
    return f"{value:.3e}{star}"


def run_gradient_flow(args: argparse.Namespace, out: TextIO, err: TextIO, /) -> int:
    """Run ``attnspec gradient-flow`` with parsed ``args``; return the exit status."""
    config = ModelConfig(seed=args.seed)
    confirm = not args.no_confirm and _torch_available()
    lengths: list[int] = args.lengths
    pairs = [
        (
            gradient_flow(n, attention=False, config=config, confirm=confirm, differences=True),
            gradient_flow(n, attention=True, config=config, confirm=confirm, differences=True),
        )
        for n in lengths
    ]
    weights = make_weights(config)
    rho = float(np.linalg.norm(weights.W_hh, 2))
    tolerance = setting("autograd.rtol.float64")
    disagreements = [f.disagreement for pair in pairs for f in pair if f.disagreement is not None]
    worst = max(disagreements, default=None)

    document = {
        "model": {**vars(config), "recurrent_spectral_norm": rho},
        "output": f"probability of target word {config.target} at the first decoder step",
        "method": "complex step"
        + (", confirmed by torch autograd" if confirm else "")
        + "; central differences beside it",
        "results": [
            {
                "source_length": n,
                "without_attention": _flow_record(a),
                "with_attention": _flow_record(b),
            }
            for n, (a, b) in zip(lengths, pairs, strict=True)
        ],
    }
    if args.json == "-":
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        if args.json is not None:
            try:
                with open(args.json, "w", encoding="utf-8") as handle:
                    json.dump(document, handle, indent=2)
                    handle.write("\n")
            except OSError as error:
                print(
                    f"attnspec: error: argument --json: cannot write {args.json!r}: "
                    f"{error.strerror}",
                    file=err,
                )
                return 2
        print(
            "Gradient of one decoder output with respect to the most distant source word x_1",
            file=out,
        )
        print(
            f"(norm of d y_k / d x_1 by complex step, and by central differences beside it; "
            f"||W_hh||_2 = {rho:.3g})\n",
            file=out,
        )
        print(
            f"{'N':>5}  {'without attention':>18}  {'central diff.':>14}  "
            f"{'with attention':>15}  {'central diff.':>14}  {'ratio':>10}",
            file=out,
        )
        for n, (a, b) in zip(lengths, pairs, strict=True):
            ratio = b.most_distant / a.most_distant if a.most_distant > 0 else math.inf
            print(
                f"{n:>5}  {a.most_distant:>18.3e}  {_difference_cell(a):>14}  "
                f"{b.most_distant:>15.3e}  {_difference_cell(b):>14}  {ratio:>10.3e}",
                file=out,
            )
        noise = max(f.difference_noise or 0.0 for pair in pairs for f in pair)
        print(
            f"\n* within {NOISE_MARGIN:.0f} times the rounding noise of central differences "
            f"(about {noise:.1e}):\n"
            "  lost in it, not measured. The complex step has no such floor: it never\n"
            "  subtracts two nearby values.",
            file=out,
        )
        if worst is not None:
            print(f"\ntorch autograd agrees: largest relative difference {worst:.1e}", file=out)
        elif not args.no_confirm:
            print("\ntorch autograd: skipped (torch is not installed)", file=out)
    if worst is not None and not worst <= tolerance:
        print(
            f"attnspec: error: complex step and autograd disagree by {worst:.1e} > {tolerance:.0e}",
            file=err,
        )
        return 1
    return 0
