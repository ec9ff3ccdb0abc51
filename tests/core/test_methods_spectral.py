"""TSV, Iso-C, Iso-CTS, STAR, DRM, TALL consensus, PCB: hand-computed cases, invariants,
and degenerate inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mergestudio.methods import MergeInputs, get_method

MATRIX = "model.layers.0.self_attn.q_proj.weight"
SPECTRAL = ["tsv", "iso_c", "iso_cts", "star", "drm"]
ALL = [*SPECTRAL, "tall_consensus", "pcb"]


def call(method: str, tensors, base, name: str = MATRIX, **params):
    spec = get_method(method)
    full = {p.name: p.default for p in spec.params}
    full.update(params)
    stacked = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in tensors])
    return spec.function(MergeInputs(name, stacked, base), **full)


def rank_one(u: list[float], v: list[float], s: float) -> torch.Tensor:
    a, b = torch.tensor(u, dtype=torch.float32), torch.tensor(v, dtype=torch.float32)
    return s * torch.outer(a / a.norm(), b / b.norm())


def test_iso_c_flattens_the_spectrum() -> None:
    base = torch.zeros(2, 2)
    a = torch.diag(torch.tensor([3.0, 0.0]))
    b = torch.diag(torch.tensor([0.0, 1.0]))
    # sum = diag(3, 1): singular values 3, 1 -> both become 2
    merged = call("iso_c", [a, b], base)
    assert torch.allclose(merged, torch.diag(torch.tensor([2.0, 2.0])), atol=1e-6)


def test_tsv_orthogonal_tasks_add_up() -> None:
    base = torch.zeros(3, 3)
    a = rank_one([1.0, 0, 0], [0, 1.0, 0], 2.0)
    b = rank_one([0, 1.0, 0], [0, 0, 1.0], 3.0)
    # rank fraction 1/2 of rank 3 keeps 1 direction each; already orthogonal -> a + b
    merged = call("tsv", [a, b], base, rank_fraction=0.34)
    assert torch.allclose(merged, a + b, atol=1e-5)


def test_tsv_single_task_full_rank_is_the_task_vector() -> None:
    base = torch.randn(5, 4)
    model = base + torch.randn(5, 4)
    assert torch.allclose(call("tsv", [model], base, rank_fraction=1.0), model, atol=1e-4)


def test_star_keeps_mass_and_truncates_small_components() -> None:
    base = torch.zeros(3, 3)
    task = torch.diag(torch.tensor([6.0, 3.0, 1.0]))  # nuclear norm 10
    merged = call("star", [task], base, eta=0.5)
    # 6 >= 5: keep one component, rescaled to 10
    assert torch.allclose(merged, torch.diag(torch.tensor([10.0, 0.0, 0.0])), atol=1e-5)
    # eta 1 keeps everything unchanged
    assert torch.allclose(call("star", [task], base, eta=1.0), task, atol=1e-5)


def test_iso_cts_with_full_common_subspace_is_iso_c() -> None:
    base = torch.zeros(4, 4)
    tasks = [torch.randn(4, 4) for _ in range(2)]
    assert torch.allclose(
        call("iso_cts", tasks, base, common_fraction=1.0), call("iso_c", tasks, base), atol=1e-5
    )


def test_iso_cts_on_orthogonal_tasks_keeps_each_tasks_own_directions() -> None:
    """Two tasks share a strong common part C on directions 0-4 and each has its own weaker
    part on directions the other lacks (all rotated by random orthogonal P, Q). With
    common_fraction 0.5 of rank 10 the common subspace is exactly C's, each task adds its
    own two strongest directions, and the merge is σ̄ · P diag(mask) Qᵀ with σ̄ the mean of
    the selected singular values: task 1's weakest direction (7) is left out, which Iso-C
    (all directions of the sum) would keep."""
    generator = torch.Generator().manual_seed(4)
    p, _ = torch.linalg.qr(torch.randn(10, 10, generator=generator, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=generator, dtype=torch.float64))
    common = [5.0, 4.5, 4.0, 3.5, 3.0]

    def task(own: dict[int, float]) -> torch.Tensor:
        values = torch.zeros(10, dtype=torch.float64)
        values[:5] = torch.tensor(common)
        for index, value in own.items():
            values[index] = value
        return p @ torch.diag(values) @ q.T

    base = torch.randn(10, 10, generator=generator, dtype=torch.float64)
    tasks = [base + task({5: 2.0, 6: 1.6, 7: 0.3}), base + task({8: 1.8, 9: 1.2})]
    sigma = sum([2 * c for c in common] + [2.0, 1.6, 1.8, 1.2]) / 9
    mask = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=torch.float64)
    expected = base + sigma * p @ torch.diag(mask) @ q.T
    assert torch.allclose(call64("iso_cts", tasks, base, common_fraction=0.5), expected, atol=1e-9)
    assert not torch.allclose(call64("iso_c", tasks, base), expected, atol=1e-2)


def test_drm_identical_tasks_at_full_density_return_the_task() -> None:
    base = torch.randn(6, 5)
    model = base + torch.randn(6, 5)
    merged = call("drm", [model, model.clone()], base, density=1.0)
    assert torch.allclose(merged, model, atol=1e-4)


@pytest.mark.parametrize("method", SPECTRAL)
def test_vectors_and_embeddings_take_the_mean_task_vector(method: str) -> None:
    base = torch.randn(8)
    a, b = base + 1.0, base + 3.0
    assert torch.allclose(call(method, [a, b], base, name="model.norm.weight", alpha=0.5), base + 1.0)
    base2 = torch.randn(10, 4)
    merged = call(method, [base2 + 1, base2 + 3], base2, name="model.embed_tokens.weight")
    assert torch.allclose(merged, base2 + 2.0)


def test_tall_consensus_hand_computed() -> None:
    base = torch.zeros(3)
    a = torch.tensor([1.0, 1.0, 0.01])
    b = torch.tensor([1.0, -0.01, 0.01])
    c = torch.tensor([0.0, 0.0, 5.0])
    # entry 0: tasks a, b both large vs the others -> 2 votes -> kept (sum 2)
    # entry 1: only a -> 1 vote -> dropped; entry 2: only c -> dropped
    merged = call("tall_consensus", [a, b, c], base, mask_lambda=0.4, min_agreement=2)
    assert torch.allclose(merged, torch.tensor([2.0, 0.0, 0.0]))
    # min_agreement 0 is plain task arithmetic
    assert torch.allclose(call("tall_consensus", [a, b, c], base, min_agreement=0), a + b + c)


def test_pcb_single_task_full_density_is_the_task_vector() -> None:
    base = torch.randn(4, 4)
    model = base + torch.randn(4, 4)
    assert torch.allclose(call("pcb", [model], base, density=1.0), model, atol=1e-5)


def test_pcb_keeps_density_per_task() -> None:
    base = torch.zeros(100)
    task = torch.randn(100)
    merged = call("pcb", [task], base, density=0.3)
    assert int(torch.count_nonzero(merged)) == 30
    kept = merged != 0
    assert torch.allclose(merged[kept], task[kept])


@pytest.mark.parametrize("method", ALL)
def test_zero_task_vectors_give_the_base(method: str) -> None:
    base = torch.randn(6, 5)
    merged = call(method, [base.clone(), base.clone()], base)
    assert torch.isfinite(merged).all()
    assert torch.allclose(merged, base, atol=1e-6)


# Parameters that make each method do its real work on (8, 7) matrices of three tasks:
# Iso-CTS keeps int(0.5·7) = 3 common directions and (7 - 3) // 3 = 1 per task; DRM and
# PCB trim (density < 1), so sign election and the per-task masks run.
ORDER_CASES: dict[str, dict[str, float]] = {
    "iso_c": {},
    "iso_cts": {"common_fraction": 0.5},
    "star": {},
    "tall_consensus": {},
    "pcb": {"density": 0.3},
    "tsv": {},
    "drm": {"density": 0.4},
}


@pytest.mark.parametrize("method", sorted(ORDER_CASES))
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), order=st.permutations([0, 1, 2]))
def test_order_of_tasks_does_not_matter(method: str, seed: int, order: list[int]) -> None:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(8, 7, generator=generator, dtype=torch.float64)
    tasks = [base + torch.randn(8, 7, generator=generator, dtype=torch.float64) * (1 + i) for i in range(3)]
    one = call64(method, tasks, base, **ORDER_CASES[method])
    two = call64(method, [tasks[i] for i in order], base, **ORDER_CASES[method])
    assert torch.allclose(one, two, atol=1e-9)
    # The parameters above reach the code they are meant to: not the plain mean task vector.
    assert not torch.allclose(one, base + sum(t - base for t in tasks) / 3, atol=1e-3)


def call64(method: str, tensors: list[torch.Tensor], base: torch.Tensor, **params: float) -> torch.Tensor:
    """Like ``call`` in float64, where the SVDs are exact enough to compare orders at 1e-9."""
    spec = get_method(method)
    full = {p.name: p.default for p in spec.params}
    full.update(params)
    return spec.function(MergeInputs(MATRIX, torch.stack(tensors), base), **full)
