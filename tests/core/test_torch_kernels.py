"""The torch path (CUDA, MPS, other dtypes) against the compiled CPU kernels, both run on
the CPU here: the torch versions of the random keep decisions draw the very same words,
and every sparsifier keeps the same entries through either path. No GPU is needed: the
code a CUDA merge runs is the torch code forced here onto the CPU device."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from mergestudio.methods import consensus, kernels, sparse, torch_kernels
from mergestudio.methods.registry import MergeInputs, get_method

CPU = torch.device("cpu")


@pytest.mark.parametrize("seed, model", [(0, 0), (12345, 2), (2**62 - 7, 3), (0xDEADBEEF12345678 >> 2, 1)])
def test_stream_keys_match(seed: int, model: int) -> None:
    assert torch_kernels.stream_key(seed, model) == int(kernels.stream_key(seed, model))


@pytest.mark.parametrize("start", [0, 70_000, 2**32 - 1000])  # the last one wraps the counter
@pytest.mark.parametrize("threshold", [0, 1, 16384, 32767, 32768])
def test_random_mask_matches_the_compiled_kernel(start: int, threshold: int) -> None:
    key = int(kernels.stream_key(987654321, 1))
    expected = np.empty(5000, dtype=np.bool_)
    kernels.random_mask(np.uint32(key), start, np.uint32(threshold), expected)
    got = torch_kernels.random_mask(key, start, threshold, 5000, CPU)
    assert np.array_equal(got.numpy(), expected)
    if threshold == 16384:
        assert 0 < int(got.sum()) < 5000  # the comparison is not trivially all or none


@pytest.mark.parametrize("columns", [1, 7, 256])
@pytest.mark.parametrize("density, epsilon", [(0.5, 0.1), (0.3, 0.25), (0.7, 0.0)])
def test_della_mask_matches_the_compiled_kernel(columns: int, density: float, epsilon: float) -> None:
    generator = torch.Generator().manual_seed(columns)
    # Quantised magnitudes, so rows hold ties (they take their group's highest rank).
    magnitudes = (torch.randn(40, columns, generator=generator).abs() * 8).round() / 8
    ordered = magnitudes.sort(dim=1).values
    key = int(kernels.stream_key(4242, 2))
    start = 123_456
    expected = np.empty((40, columns), dtype=np.bool_)
    kernels.della_mask(magnitudes.numpy(), ordered.numpy(), np.uint32(key), start, density, epsilon, expected)
    got = torch_kernels.della_mask(magnitudes, ordered, key, start, density, epsilon)
    assert np.array_equal(got.numpy(), expected)


@pytest.fixture
def torch_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every sparsifier step on the torch path, as on a GPU, though on the CPU."""
    monkeypatch.setattr(consensus, "_on_compiled", lambda chunks: False)
    monkeypatch.setattr(sparse, "_on_compiled_chunks", lambda chunks: False)
    yield


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three bf16-rounded fine-tunes of a (640, 512) base: 327,680 entries, past the size
    where thresholds are found through a sample, with ties in the task vectors."""
    generator = torch.Generator().manual_seed(seed)
    base = (torch.randn(640, 512, generator=generator) * 0.05).bfloat16().float()
    tunes = torch.stack([base + 0.01 * torch.randn(640, 512, generator=generator) for _ in range(3)])
    return tunes.bfloat16().float(), base


def _merge(method: str, params: dict[str, object], tunes: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    spec = get_method(method)
    generator = torch.Generator().manual_seed(7) if spec.stochastic else None
    values: dict[str, object] = {p.name: p.default for p in spec.params if p.default is not None}
    values.update(params)
    return spec.function(MergeInputs(method, tunes, base, generator), **values).clone()


CASES = {
    "ties": {"weight": (1.0, 0.5, 0.8), "density": (0.5, 0.3, 0.7)},
    "breadcrumbs_ties": {"weight": (1.0, 1.0, 1.0), "density": (0.4,) * 3, "gamma": (0.02,) * 3},
    "dare_ties": {"weight": (1.0, 1.0, 1.0), "density": (0.5, 0.4, 0.6)},
    "dare_linear": {"weight": (0.3, 0.3, 0.4), "density": (0.5,) * 3, "rescale_norm": "l2"},
    "della": {"weight": (1.0, 1.0, 1.0), "density": (0.5,) * 3, "epsilon": (0.1,) * 3},
    "della_linear": {"weight": (0.3, 0.3, 0.4), "density": (0.5,) * 3, "epsilon": (0.2,) * 3},
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_torch_path_keeps_what_the_compiled_path_keeps(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tunes, base = _inputs()
    compiled = _merge(method, CASES[method], tunes, base)
    with monkeypatch.context() as patch:
        patch.setattr(consensus, "_on_compiled", lambda chunks: False)
        patch.setattr(sparse, "_on_compiled_chunks", lambda chunks: False)
        through_torch = _merge(method, CASES[method], tunes, base)
    changed = compiled != base
    assert 0.2 < float(changed.float().mean()) < 0.99  # the sparsifier did drop entries
    # Same entries kept, and values equal up to the order float64 norms are summed in
    # (the rescale factors) and float32 rounding.
    assert torch.equal(through_torch != base, changed)
    torch.testing.assert_close(through_torch, compiled, rtol=2e-6, atol=1e-7)
    if not get_method(method).stochastic:
        assert torch.equal(through_torch, compiled)  # no rescaling: bit for bit


def test_torch_path_on_float64_matches_float32_draws() -> None:
    """Other compute dtypes take the torch path too, with the same draws: a float64 DARE
    keeps the entries the float32 (compiled) one keeps."""
    tunes, base = _inputs(1)
    params = CASES["dare_ties"]
    single = _merge("dare_ties", params, tunes, base)
    double = _merge("dare_ties", params, tunes.double(), base.double())
    assert torch.equal(double != base.double(), single != base)
