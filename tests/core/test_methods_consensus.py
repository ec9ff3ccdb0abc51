"""TIES, DARE, DELLA, Model Breadcrumbs: hand-computed cases from the definitions (mergekit's
semantics), statistics for the random ones, invariants, and the exact top-k selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mergestudio.errors import RecipeError
from mergestudio.methods import MergeInputs, get_method
from mergestudio.methods.sparse import TopKMask, top_k_rules

GTA = ["ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear"]


def call(method: str, tensors, base, seed: int = 0, **params):
    spec = get_method(method)
    n = len(tensors)
    full = {p.name: (p.default,) * n if p.per_model else p.default for p in spec.params if not p.required}
    full["weight"] = (1.0,) * n
    for key, value in params.items():
        param = spec.param(key)
        assert param is not None, key
        full[key] = (
            tuple(value)
            if param.per_model and isinstance(value, list | tuple)
            else ((value,) * n if param.per_model else value)
        )
    generator = torch.Generator().manual_seed(seed) if spec.stochastic else None
    stacked = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in tensors])
    return spec.function(MergeInputs("model.layers.0.mlp.up_proj.weight", stacked, base, generator), **full)


def test_ties_hand_computed() -> None:
    base = torch.zeros(4)
    # density 0.5 keeps the two largest magnitudes of each task vector.
    a = torch.tensor([3.0, -1.0, 0.5, -2.0])  # keeps 3, -2
    b = torch.tensor([-1.0, 2.0, 0.1, -4.0])  # keeps 2, -4
    merged = call("ties", [a, b], base, density=0.5)
    # entry 0: only a (3) -> 3; entry 1: only b (2) -> 2; entry 2: none -> 0;
    # entry 3: -2 and -4 agree -> mean -3.
    assert torch.allclose(merged, torch.tensor([3.0, 2.0, 0.0, -3.0]))


def test_ties_sign_election_uses_weighted_sum() -> None:
    base = torch.zeros(1)
    a, b, c = torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([-3.0])
    # Weighted sum 1 + 1 - 3 < 0: the negative entry wins although two models are positive.
    merged = call("ties", [a, b, c], base, weight=(1.0, 1.0, 1.0))
    assert torch.allclose(merged, torch.tensor([-3.0]))
    # With weight 0.2 on c the sum is positive: mean of the agreeing entries (weights 1, 1).
    merged = call("ties", [a, b, c], base, weight=(1.0, 1.0, 0.2))
    assert torch.allclose(merged, torch.tensor([1.0]))


def test_ties_without_normalize_sums_and_lambda_scales() -> None:
    base = torch.ones(2)
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([3.0, 2.0])  # deltas [1, -1], [2, 1]
    merged = call("ties", [a, b], base, normalize=False, weight=(0.5, 1.0), **{"lambda": 2.0})
    # entry 0: 0.5*1 + 2 = 2.5, entry 1: sum -0.5 + 1 > 0: only +1 -> 1; times lambda 2.
    assert torch.allclose(merged, base + 2.0 * torch.tensor([2.5, 1.0]))


def test_ties_zero_sum_elects_positive() -> None:
    base = torch.zeros(1)
    merged = call("ties", [torch.tensor([1.0]), torch.tensor([-1.0])], base)
    assert torch.allclose(merged, torch.tensor([1.0]))


def test_breadcrumbs_drops_outliers_and_smallest() -> None:
    base = torch.zeros(10)
    a = torch.arange(1.0, 11.0)  # magnitudes 1..10
    merged = call("breadcrumbs", [a], base, density=0.5, gamma=0.2)
    # drop top 2 (9, 10) and bottom 10-5-2 = 3 (1, 2, 3): keep 4..8
    expected = torch.where((a >= 4) & (a <= 8), a, torch.zeros(10))
    assert torch.allclose(merged, expected)


def test_breadcrumbs_gamma_too_large_keeps_density() -> None:
    a = torch.arange(1.0, 11.0)
    merged = call("breadcrumbs", [a], torch.zeros(10), density=0.8, gamma=0.5)
    # n_top reduced to 10 - 8 = 2: keeps 1..8
    assert torch.allclose(merged, torch.where(a <= 8, a, torch.zeros(10)))


def test_density_one_leaves_task_vectors_untouched() -> None:
    base = torch.randn(5, 7)
    a, b = base + torch.randn(5, 7), base + torch.randn(5, 7)
    for method in ("dare_linear", "della_linear", "breadcrumbs"):
        merged = call(method, [a, b], base, density=1.0)
        assert torch.allclose(merged, a + b - base, atol=1e-5), method


def test_dare_keeps_density_and_preserves_l1() -> None:
    base = torch.zeros(200_000)
    delta = torch.randn(200_000)
    merged = call("dare_linear", [delta], base, density=0.3)
    kept = merged != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.01
    assert torch.allclose(merged.abs().sum(), delta.abs().sum(), rtol=1e-4)
    # kept entries keep their direction, scaled by one factor
    ratio = merged[kept] / delta[kept]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)


def test_dare_inverse_density_option() -> None:
    delta = torch.randn(100_000)
    merged = call("dare_linear", [delta], torch.zeros(100_000), density=0.25, rescale_norm="inverse_density")
    kept = merged != 0
    assert torch.allclose(merged[kept], delta[kept] * 4.0)


def test_dare_without_rescale_only_drops() -> None:
    delta = torch.randn(50_000)
    merged = call("dare_linear", [delta], torch.zeros(50_000), density=0.5, rescale=False)
    kept = merged != 0
    assert torch.equal(merged[kept], delta[kept])


def test_della_keep_probability_rises_with_rank() -> None:
    rows, columns = 400, 256
    magnitudes = torch.arange(1.0, columns + 1).repeat(rows, 1)
    signs = torch.where(torch.rand(rows, columns, generator=torch.Generator().manual_seed(1)) < 0.5, -1, 1)
    delta = magnitudes * signs
    merged = call("della_linear", [delta], torch.zeros(rows, columns), density=0.5, epsilon=0.3)
    kept = (merged != 0).float()
    assert abs(kept.mean().item() - 0.5) < 0.01
    low_rate = kept[:, :32].mean().item()  # smallest magnitudes: p ≈ 0.2..0.27
    high_rate = kept[:, -32:].mean().item()  # largest: p ≈ 0.73..0.8
    assert 0.18 < low_rate < 0.29 and 0.71 < high_rate < 0.82
    assert torch.allclose(merged.abs().sum(), delta.abs().sum(), rtol=1e-4)


def test_della_rejects_epsilon_outside_range() -> None:
    with pytest.raises(RecipeError, match="epsilon"):
        call("della", [torch.ones(4, 4)], torch.zeros(4, 4), density=0.2, epsilon=0.3)


@pytest.mark.parametrize("method", ["dare_ties", "della"])
def test_stochastic_methods_are_reproducible(method: str) -> None:
    base = torch.randn(64, 48)
    tensors = [base + torch.randn(64, 48) for _ in range(3)]
    first = (
        call(method, tensors, base, seed=7, density=0.5, epsilon=0.1)
        if method == "della"
        else call(method, tensors, base, seed=7, density=0.5)
    )
    again = (
        call(method, tensors, base, seed=7, density=0.5, epsilon=0.1)
        if method == "della"
        else call(method, tensors, base, seed=7, density=0.5)
    )
    other = (
        call(method, tensors, base, seed=8, density=0.5, epsilon=0.1)
        if method == "della"
        else call(method, tensors, base, seed=8, density=0.5)
    )
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("method", GTA)
def test_degenerate_inputs_stay_finite(method: str) -> None:
    base = torch.randn(16, 8)
    extra = {"epsilon": 0.1} if method.startswith("della") else {}
    # identical models (zero task vectors) -> the base
    merged = call(method, [base.clone(), base.clone()], base, density=0.5, **extra)
    assert torch.isfinite(merged).all() and torch.allclose(merged, base)
    # all-zero masks (density 0) -> the base
    merged = call(method, [base + 1, base - 2], base, density=0.0, **({"epsilon": 0.0} if extra else {}))
    assert torch.isfinite(merged).all() and torch.allclose(merged, base)


@pytest.mark.parametrize("method", ["ties", "breadcrumbs_ties", "dare_ties", "della"])
def test_consensus_methods_ignore_input_order(method: str) -> None:
    base = torch.randn(32, 16)
    tensors = [base + torch.randn(32, 16) for _ in range(3)]
    if method in ("dare_ties", "della"):
        tensors_params: dict[str, object] = {"density": 1.0}
    else:
        tensors_params = {"density": 0.6}
    one = call(method, tensors, base, **tensors_params)
    two = call(method, tensors[::-1], base, **tensors_params)
    assert torch.allclose(one, two, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    data=st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=4, max_size=40),
    density=st.floats(0.05, 1.0),
)
def test_ties_single_model_weight_one_is_its_trimmed_task_vector(data: list[float], density: float) -> None:
    delta = torch.tensor(data)
    merged = call("ties", [delta], torch.zeros(len(data)), density=density)
    k = int(density * len(data)) if density < 1 else len(data)
    assert int(torch.count_nonzero(merged)) <= k
    kept = merged != 0
    assert torch.equal(merged[kept], delta[kept])
    # every dropped nonzero entry is no larger than every kept one
    if kept.any() and (~kept & (delta != 0)).any():
        assert delta[~kept].abs().max() <= delta[kept].abs().min()


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(GTA), st.integers(1, 3))
def test_identical_inputs_return_the_input(method: str, n: int) -> None:
    base = torch.randn(6, 5)
    model = base + torch.randn(6, 5)
    extra = {"epsilon": 0.1} if method.startswith("della") else {}
    # one model, density 1: every method reduces to base + τ
    merged = call(method, [model] * n, base, density=1.0, weight=(1.0 / n,) * n if n > 1 else (1.0,), **extra)
    expected = model if method in ("ties", "della") else base + (model - base)
    assert torch.allclose(merged, expected, atol=1e-5)


def _reference_top_k(values: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-values, kind="stable")
    mask = np.zeros(values.size, dtype=bool)
    mask[order[:k]] = True
    return mask


@pytest.mark.parametrize("quantized", [False, True])
def test_top_k_selection_is_exact_on_large_tensors(quantized: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(2, 300_000, generator=generator)
    if quantized:  # bf16-like heavy ties
        values = torch.round(values * 8) / 8
    ks = [90_000, 299_999]
    rules = top_k_rules(values, None, ks)
    masks = []
    mask = TopKMask(rules)
    for start in range(0, 300_000, 1 << 16):
        masks.append(mask(values[:, start : start + (1 << 16)].abs(), start))
    full = torch.cat(masks, dim=1)
    for i, k in enumerate(ks):
        assert int(full[i].sum()) == k
        expected = _reference_top_k(values[i].abs().numpy(), k)
        assert np.array_equal(full[i].numpy(), expected)


def _reference_ties(tensors: np.ndarray, base: np.ndarray, density: float) -> np.ndarray:
    """TIES by the book, with a full sort (ties in magnitude go to earlier positions)."""
    tau = tensors - base
    k = int(density * base.size)
    kept = np.stack([tau[i] * _reference_top_k(np.abs(tau[i]), k) for i in range(len(tau))])
    sign = np.where(kept.sum(0) >= 0, 1.0, -1.0)
    agreeing = kept * sign > 0
    divisor = agreeing.sum(0)
    merged = (kept * agreeing).sum(0) / np.where(divisor == 0, 1, divisor)
    return base + merged


@pytest.mark.parametrize("n_models", [3, 5])  # the compiled kernel (≤ 4 models) and numpy's loop
@pytest.mark.parametrize("quantized", [False, True])  # collected bracket; counts per value
def test_ties_on_large_tensors_matches_a_full_sort(n_models: int, quantized: bool) -> None:
    generator = torch.Generator().manual_seed(11)
    base = torch.randn(400_000, generator=generator)
    tensors = base + 0.01 * torch.randn(n_models, 400_000, generator=generator)
    if quantized:  # bf16 checkpoints: few distinct task-vector magnitudes, heavy ties
        base, tensors = base.bfloat16().float(), tensors.bfloat16().float()
    merged = call("ties", list(tensors), base, density=0.3)
    expected = _reference_ties(tensors.double().numpy(), base.double().numpy(), 0.3)
    assert np.allclose(merged.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("method", ["ties", "breadcrumbs_ties", "breadcrumbs"])
def test_compiled_cpu_path_matches_the_torch_path(method: str) -> None:
    """float32 on the CPU runs the compiled kernels; float64 the torch code that other
    devices run: the same merge to rounding. (DARE and DELLA draw their keep decisions
    from a different stream on each path: their tests check the statistics.)"""
    generator = torch.Generator().manual_seed(5)
    base = torch.randn(200_000, generator=generator).bfloat16().float()
    tensors = (base + 0.02 * torch.randn(3, 200_000, generator=generator)).bfloat16().float()
    compiled = call(method, list(tensors), base, seed=2, density=0.4)
    spec = get_method(method)
    params = {p.name: (p.default,) * 3 if p.per_model else p.default for p in spec.params if not p.required}
    params.update(weight=(1.0,) * 3, density=(0.4,) * 3)
    rng = torch.Generator().manual_seed(2) if spec.stochastic else None
    reference = spec.function(MergeInputs("t", tensors.double(), base.double(), rng), **params)
    assert torch.allclose(compiled.double(), reference, atol=1e-6)


def test_compiled_dare_draws_depend_on_the_position_alone() -> None:
    """The CPU path's keep decisions are a function of (seed, model, position): the same
    for any chunking, with the declared keep probability, and different per model."""
    from mergestudio.methods import kernels

    key, other = kernels.stream_key(123456789, 0), kernels.stream_key(123456789, 1)
    whole = np.empty(300_000, dtype=np.bool_)
    kernels.random_mask(key, 0, np.uint32(9830), whole)  # p = 9830 / 32768 = 0.3
    pieces = [np.empty(n, dtype=np.bool_) for n in (70_001, 229_999)]
    kernels.random_mask(key, 0, np.uint32(9830), pieces[0])
    kernels.random_mask(key, 70_001, np.uint32(9830), pieces[1])
    assert np.array_equal(whole, np.concatenate(pieces))
    assert abs(whole.mean() - 9830 / 32768) < 0.005
    second = np.empty(300_000, dtype=np.bool_)
    kernels.random_mask(other, 0, np.uint32(9830), second)
    assert abs(np.mean(whole & second) - (9830 / 32768) ** 2) < 0.005  # independent streams


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
def test_compiled_dare_merges_the_hashed_draws(method: str) -> None:
    """The compiled DARE pass hashes its keep decisions inside the norm and combining
    loops; the result must equal DARE by the book (L1 rescale, then TIES or a sum) over
    the masks that ``random_mask`` draws for the tensor's seed."""
    from mergestudio.methods import kernels

    generator = torch.Generator().manual_seed(3)
    base = torch.randn(300_001, generator=generator)
    tensors = base + 0.02 * torch.randn(3, 300_001, generator=generator)
    merged = call(method, list(tensors), base, seed=4, density=0.3)

    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(4)))
    tau = (tensors - base).double().numpy()
    kept = []
    for i in range(3):
        mask = np.empty(base.numel(), dtype=np.bool_)
        kernels.random_mask(kernels.stream_key(seed, i), 0, np.uint32(round(0.3 * 32768)), mask)
        kept.append(tau[i] * mask * (np.abs(tau[i]).sum() / np.abs(tau[i] * mask).sum()))
    stacked = np.stack(kept)
    if method == "dare_ties":
        sign = np.where(stacked.sum(0) >= 0, 1.0, -1.0)
        expected = (stacked * (stacked * sign > 0)).sum(0)
    else:
        expected = stacked.sum(0)
    assert np.allclose(merged.double().numpy(), base.double().numpy() + expected, atol=1e-5)


def _murmur_words(key: int, positions: np.ndarray) -> np.ndarray:
    """The 15-bit words of the kernels' hashed stream, in numpy (uint32 wraps)."""
    h = (np.uint32(key) + positions.astype(np.uint32)).astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h >> np.uint32(17)


def test_compiled_della_keeps_by_rank_as_defined() -> None:
    """DELLA's compiled keep decisions against the definition in float64: entry kept when
    its uniform draw u < density − ε + 2ε·rank/(C−1), rank the highest of its tie group
    among its row's magnitudes. Decisions may differ only where u and p nearly touch."""
    from mergestudio.methods import kernels

    rng = np.random.default_rng(8)
    magnitudes = np.abs(rng.standard_normal((40, 512)).astype(np.float32))
    magnitudes[::3] = np.round(magnitudes[::3] * 8) / 8  # heavy ties in some rows
    ordered = np.sort(magnitudes, axis=1)
    key, start, density, epsilon = kernels.stream_key(99, 2), 1_000, 0.4, 0.15
    kept = np.empty(magnitudes.shape, dtype=np.bool_)
    kernels.della_mask(magnitudes, ordered, key, start, density, epsilon, kept)

    rows, columns = magnitudes.shape
    uniform = (_murmur_words(int(key), start + np.arange(rows * columns)) + 0.5) / 32768
    uniform = uniform.reshape(rows, columns)
    rank = np.stack([np.searchsorted(o, m, side="right") - 1 for o, m in zip(ordered, magnitudes, strict=True)])
    probability = density - epsilon + 2 * epsilon * rank / (columns - 1)
    clear = np.abs(uniform - probability) > 1e-6
    assert np.array_equal(kept[clear], (uniform < probability)[clear])
    assert clear.mean() > 0.99
