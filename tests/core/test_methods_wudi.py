"""WUDI merging on constructed task vectors: the paper's objective goes down from the
task-arithmetic start, the result beats task arithmetic on it, the closed form is its
minimum, and runs are deterministic."""

from __future__ import annotations

import pytest
import torch
from mergestudio.methods import MergeInputs, get_method
from mergestudio.methods.interference import interference_loss, solve_adam, solve_closed_form

MATRIX = "model.layers.0.mlp.down_proj.weight"


def call(tensors: torch.Tensor, base: torch.Tensor, name: str = MATRIX, **params: object) -> torch.Tensor:
    spec = get_method("wudi")
    full = {p.name: p.default for p in spec.params}
    full.update(params)
    return spec.function(MergeInputs(name, tensors, base), **full)


def low_rank_tasks(n: int, rows: int, columns: int, rank: int, seed: int) -> torch.Tensor:
    """(n, rows, columns) low-rank task vectors with overlapping row subspaces: like
    fine-tuning updates, each spans a few input directions, some shared."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn(rank, columns, generator=generator)
    tasks = []
    for _ in range(n):
        own = torch.randn(rank, columns, generator=generator)
        rows_of = torch.cat([shared, own])
        tasks.append(torch.randn(rows, 2 * rank, generator=generator) @ rows_of * 0.1)
    return torch.stack(tasks)


def test_adam_decreases_the_objective_and_beats_task_arithmetic() -> None:
    tau = low_rank_tasks(3, 12, 20, 2, seed=0)
    start = interference_loss(tau.sum(0), tau)
    losses = [float(interference_loss(solve_adam(tau, steps, 1e-2), tau)) for steps in (10, 50, 200)]
    assert losses[0] < float(start)
    assert losses[0] > losses[1] > losses[2]
    # and below task arithmetic with either scaling (the sum, the mean)
    assert losses[2] < float(interference_loss(tau.mean(0), tau))


def test_closed_form_is_the_minimum_and_adam_approaches_it() -> None:
    tau = low_rank_tasks(4, 10, 16, 2, seed=1).double()
    exact = solve_closed_form(tau)
    best = float(interference_loss(exact, tau))
    # the gradient vanishes at the closed form
    probe = exact.clone().requires_grad_(True)
    interference_loss(probe, tau).backward()
    assert probe.grad is not None and float(probe.grad.abs().max()) < 1e-8
    # no perturbation does better (a quadratic's minimum)
    generator = torch.Generator().manual_seed(2)
    for _ in range(5):
        nudged = exact + 1e-3 * torch.randn(exact.shape, generator=generator, dtype=exact.dtype)
        assert float(interference_loss(nudged, tau)) >= best
    adam = float(interference_loss(solve_adam(tau, 2000, 1e-2), tau))
    assert adam < best + 0.01 * float(interference_loss(tau.sum(0), tau))


def test_identical_tasks_merge_to_the_task_itself() -> None:
    # Summing T copies of one update over-counts it T times; WUDI undoes exactly that.
    task = low_rank_tasks(1, 6, 9, 2, seed=3)[0]
    tau = torch.stack([task, task, task])
    base = torch.zeros(6, 9)
    merged = call(base + tau, base, solver="closed_form")
    assert torch.allclose(merged, task, atol=1e-4)


def test_method_adds_alpha_times_the_solution_to_the_base() -> None:
    tau = low_rank_tasks(2, 5, 7, 1, seed=4)
    base = torch.randn(5, 7, generator=torch.Generator().manual_seed(5))
    merged = call(base + tau, base, solver="closed_form", alpha=0.5)
    assert torch.allclose(merged, base + 0.5 * solve_closed_form(tau), atol=1e-5)


def test_same_inputs_give_bit_identical_results() -> None:
    tau = low_rank_tasks(3, 8, 8, 2, seed=6)
    base = torch.zeros(8, 8)
    first = call(base + tau, base, steps=40, lr=1e-3)
    second = call(base + tau, base, steps=40, lr=1e-3)
    assert torch.equal(first, second)
    assert not torch.equal(first, base + tau.sum(0))  # the optimiser did move


@pytest.mark.parametrize("name", ["model.norm.weight", "model.embed_tokens.weight"])
def test_vectors_and_embeddings_take_the_mean_task_vector(name: str) -> None:
    shape = (4,) if name.endswith("norm.weight") else (6, 4)
    base = torch.ones(shape)
    tau = torch.stack([torch.full(shape, 1.0), torch.full(shape, 3.0)])
    merged = call(base + tau, base, name=name, alpha=1.0)
    assert torch.allclose(merged, base + 2.0)


def test_an_all_zero_task_vector_adds_nothing() -> None:
    task = low_rank_tasks(1, 4, 6, 1, seed=7)[0]
    tau = torch.stack([task, torch.zeros_like(task)])
    assert torch.allclose(solve_closed_form(tau), task, atol=1e-5)
    assert torch.isfinite(solve_adam(tau, 5, 1e-3)).all()


@pytest.mark.parametrize("shape", [(3, 12, 20), (2, 3, 40)])
def test_both_gradient_forms_take_the_same_steps(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...]
) -> None:
    # The solver picks τ_m·G or task by task by cost; the steps must not depend on it.
    from mergestudio.methods import interference

    n, rows, columns = shape
    tau = low_rank_tasks(n, rows, columns, 1, seed=8).double()
    results = []
    for gram in (True, False):
        monkeypatch.setattr(interference, "_gram_is_cheaper", lambda _tau, use=gram: use)
        results.append(solve_adam(tau, 30, 1e-2))
    assert torch.allclose(results[0], results[1], atol=1e-9)
    assert not torch.allclose(results[0], tau.sum(0))
