"""WUDI's time on a model shape: one decoder layer's weight matrices merged with each
solver, timed per matrix and extrapolated to all layers (the other tensors take the
mean-task-vector fallback, whose time is negligible next to these).

    python benchmarks/wudi_speed.py --shape 1.1b --models 3 --steps 2 --device cpu

Adam's time is linear in its steps: ``--steps`` few, and the table also shows the
paper's 300 by scaling the measured time per step. The task vectors are random
(fine-tuning updates are dense too), so the numbers are about arithmetic, not data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mergestudio.methods.interference import (
    _gradient,
    _gram_is_cheaper,
    _normal_equations,
    interference_weights,
    solve_closed_form,
)

from benchmarks.llama_family import SHAPES

PAPER_STEPS = 300


def _time(function, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = function(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def adam_costs(tau: torch.Tensor, steps: int) -> tuple[float, float]:
    """(setup seconds, seconds per Adam step) of ``solve_adam`` on ``tau``, measured on
    the same operations it runs (setup: the normal equations where they are cheaper)."""
    weights = interference_weights(tau)
    setup, normal = (0.0, None)
    if _gram_is_cheaper(tau):
        setup, normal = _time(_normal_equations, tau, weights)
    merged = tau.sum(0).clone()
    optimizer = torch.optim.Adam([merged], lr=1e-5)

    def step() -> None:
        if normal is None:
            merged.grad = _gradient(merged, tau, weights)
        else:
            merged.grad = 2.0 * (merged @ normal[0] - normal[1])
        optimizer.step()

    step()  # the optimiser's first step allocates its state
    seconds, _ = _time(lambda: [step() for _ in range(steps)])
    return setup, seconds / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="Adam steps timed (extrapolated to 300)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--solvers", default="adam,closed_form")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shape]
    layer = {
        name.rsplit(".", 2)[-2]: size
        for name, size in shape.tensor_shapes().items()
        if name.startswith("model.layers.0.") and len(size) == 2
    }
    generator = torch.Generator().manual_seed(0)
    totals = {"adam": 0.0, "closed_form": 0.0}
    print(f"{args.shape}: {shape.layers} layers, {args.models} task vectors, {args.device}, {args.threads} thread(s)")
    print(f"{'matrix':10} {'shape':>12} {'adam setup':>10} {'s/step':>8} {'adam x300':>10} {'closed':>8}")
    for name, size in layer.items():
        tau = (torch.randn((args.models, *size), generator=generator) * 1e-3).to(args.device)
        setup, per_step, closed = float("nan"), float("nan"), float("nan")
        if "adam" in args.solvers:
            setup, per_step = adam_costs(tau, args.steps)
            totals["adam"] += setup + per_step * PAPER_STEPS
        if "closed_form" in args.solvers:
            closed, _ = _time(solve_closed_form, tau)
            totals["closed_form"] += closed
        print(
            f"{name:10} {tuple(size)!s:>12} {setup:>10.1f} {per_step:>8.2f} "
            f"{setup + per_step * PAPER_STEPS:>10.0f} {closed:>8.1f}",
            flush=True,
        )
    for solver, seconds in totals.items():
        if seconds:
            print(f"{solver}: {seconds:.0f} s per layer -> {seconds * shape.layers / 60:.0f} min for {shape.layers} layers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
