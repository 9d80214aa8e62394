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
from attnref.demo.gradient_flow import GradientFlow, gradient_flow
from attnref.demo.seq2seq import ModelConfig, encode, make_weights
from attnref.testing.gradcheck import gradient_error, setting
from attnspec.typing import Array

__all__ = ["add_demo_parsers", "run_demo", "run_gradient_flow"]

DEFAULT_LENGTHS = (5, 10, 20, 40)

SOURCE = ("I", "am", "a", "student")
"""The tutorial's source sentence (wikidocs 22893), one toy vector per word."""
TARGET = ("<sos>", "je", "suis", "étudiant")
"""Decoder inputs (teacher forcing); the demo attends at the third, ``suis``, as in the tutorial."""
VOCABULARY = ("<eos>", "je", "suis", "étudiant", "I", "am")
"""Toy target vocabulary of the output distribution."""

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
        help="run the tutorial's attention steps on a toy sentence pair",
        description="Run the attention steps of the tutorial with attnref and check the twin.",
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


def _format_row(values: Sequence[float], /) -> str:
    return "  ".join(f"{v:+.4f}" for v in values)


def _demo_steps(module: Any, to: Any, weights: dict[str, Any], h: Any, s: Any) -> dict[str, Any]:
    """The six steps with the functions of ``module`` (attnref or attnref.torch)."""
    scores = module.score_dot(s, h)  # [1, N]
    distribution = module.attention_distribution(scores)  # [1, N]
    value = module.attention_value(distribution, h)  # [1, d_h]
    concatenation = module.concatenate_context(value, s)  # [1, 2 d_h]
    state = module.attentional_hidden_state(value, s, weights["W_c"], weights["b_c"])
    output = module.output_distribution(state, weights["W_y"], weights["b_y"])  # [1, V]
    return {
        "scores": to(scores),
        "attention distribution": to(distribution),
        "attention value": to(value),
        "concatenation [a; s]": to(concatenation),
        "attentional hidden state": to(state),
        "output distribution": to(output),
    }


def run_demo(out: TextIO, err: TextIO, /) -> int:
    """Run ``attnspec demo``, printing to ``out`` and ``err``; return the exit status."""
    config = ModelConfig(seed=2015, input_size=4, hidden_size=4, vocabulary_size=len(VOCABULARY))
    w = make_weights(config)
    rng = np.random.default_rng(config.seed + 1)
    x = rng.standard_normal((len(SOURCE), config.input_size))  # [N, d_in]
    y = rng.standard_normal((len(TARGET), config.input_size))  # [T, d_in]
    h = encode(x, w)  # [N, d_h]
    # Decoder states with teacher forcing, from the encoder's last state.
    s_prev = h[-1]  # [d_h]
    states = []
    for t in range(len(TARGET)):
        s_prev = np.tanh(y[t] @ w.W_ys.T + s_prev @ w.W_ss.T + w.b_s)
        states.append(s_prev)
    step = 2  # the third decoder cell, whose input is "suis"
    s = states[step][None, :]  # [1, d_h]
    params: dict[str, Array] = {"W_c": w.W_c, "b_c": w.b_c, "W_y": w.W_y, "b_y": w.b_y}
    steps = _demo_steps(attnref, np.asarray, params, h, s)

    print(
        f"source: {' '.join(SOURCE)}    decoder input at step {step + 1}: {TARGET[step]!r}",
        file=out,
    )
    print(
        f"encoder states h_j and decoder state s_t have {config.hidden_size} features\n", file=out
    )
    header = "  ".join(f"{word:>7}" for word in SOURCE)
    print(f"{'':26}{header}", file=out)
    for name in ("scores", "attention distribution"):
        row = "  ".join(f"{v:7.4f}" for v in steps[name][0])
        print(f"{name:26}{row}", file=out)
    for name in ("attention value", "concatenation [a; s]", "attentional hidden state"):
        print(f"{name:26}{_format_row(steps[name][0])}", file=out)
    probabilities = steps["output distribution"][0]
    pairs = "  ".join(f"{word} {p:.3f}" for word, p in zip(VOCABULARY, probabilities, strict=True))
    print(f"{'output distribution':26}{pairs}", file=out)
    best = int(np.argmax(probabilities))
    print(f"{'':26}(untrained toy weights: most probable word {VOCABULARY[best]!r})\n", file=out)

    if not _torch_available():
        print("attnref.torch: skipped (torch is not installed)", file=out)
        return 0
    # Note: imported here because torch is an optional dependency.
    import torch

    import attnref.torch as twin

    def tensor(a: Array) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64))

    twin_params = {name: tensor(a) for name, a in params.items()}
    twin_steps = _demo_steps(twin, lambda t: t.detach().numpy(), twin_params, tensor(h), tensor(s))
    worst = max(gradient_error(steps[name], twin_steps[name]) for name in steps)
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
    }


def run_gradient_flow(args: argparse.Namespace, out: TextIO, err: TextIO, /) -> int:
    """Run ``attnspec gradient-flow`` with parsed ``args``; return the exit status."""
    config = ModelConfig(seed=args.seed)
    confirm = not args.no_confirm and _torch_available()
    lengths: list[int] = args.lengths
    pairs = [
        (
            gradient_flow(n, attention=False, config=config, confirm=confirm),
            gradient_flow(n, attention=True, config=config, confirm=confirm),
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
        "method": "complex step" + (", confirmed by torch autograd" if confirm else ""),
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
        print(f"(norm of d y_k / d x_1, complex step; ||W_hh||_2 = {rho:.3g})\n", file=out)
        print(
            f"{'N':>5}  {'without attention':>18}  {'with attention':>15}  {'ratio':>10}", file=out
        )
        for n, (a, b) in zip(lengths, pairs, strict=True):
            ratio = b.most_distant / a.most_distant if a.most_distant > 0 else math.inf
            print(
                f"{n:>5}  {a.most_distant:>18.3e}  {b.most_distant:>15.3e}  {ratio:>10.3e}",
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
