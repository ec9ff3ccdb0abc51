"""The compiled bf16 kernels write exactly the bits of the torch path they replace:
widening and narrowing against torch's conversions (NaN, Inf, subnormals, ties to
even), the fused linear and task arithmetic against the methods' torch functions, and
whole merges with the kernels against the same merges through torch only."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mergestudio.engine import execute
from mergestudio.engine.merge import merge
from mergestudio.methods import bf16_kernels, get_method
from mergestudio.methods.registry import _REGISTRY, MergeInputs
from safetensors.torch import load_file, save_file

from tests.checkpoints import TinyLlama, write_checkpoint

SPEC = TinyLlama(layers=1, hidden=64, intermediate=48, vocab=300, heads=2)


def _bf16(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(bits.astype(np.uint16).view(np.int16)).view(torch.bfloat16)


def _float_bits(values: torch.Tensor) -> np.ndarray:
    return values.numpy().view(np.uint32)


def _hard_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 bit patterns (n,) that stress a bf16 rounding: any pattern at all, exact
    halfway cases with an even and an odd kept part, values next to the largest bf16,
    subnormals, ±0, ±Inf and NaNs of both signs and several payloads."""
    patterns = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    kept = rng.integers(0, 1 << 16, n, dtype=np.uint64).astype(np.uint32) << np.uint32(16)
    special = np.array(
        [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF,
         0x7F7FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001, 0x00000001, 0x00008000, 0x00018000, 0x807FFFFF],
        dtype=np.uint32,
    )  # fmt: skip
    halfway = np.concatenate([kept | np.uint32(0x8000), kept | np.uint32(0x7FFF), kept | np.uint32(0x8001)])
    return np.concatenate([patterns, halfway, special]).view(np.float32)


def test_widening_is_exact_for_every_bf16_pattern() -> None:
    every = np.arange(1 << 16, dtype=np.uint16)
    out = np.empty(every.size, np.float32)
    nonfinite = bf16_kernels.widen_into(every, out, True)
    expected = _bf16(every).float()
    assert np.array_equal(out.view(np.uint32), _float_bits(expected))
    assert nonfinite == int((~torch.isfinite(expected)).sum()) > 0
    assert bf16_kernels.widen_into(every, out, False) == 0  # not scanned


@pytest.mark.parametrize("length", [1, 17, 4097, 100_003])
def test_narrowing_rounds_as_torch_does(length: int) -> None:
    rng = np.random.default_rng(length)
    values = _hard_floats(rng, length)
    out = np.empty(values.size, np.uint16)
    nonfinite = bf16_kernels.narrow_into(values, out)
    expected = torch.from_numpy(values.copy()).to(torch.bfloat16)
    assert np.array_equal(out, bf16_kernels.bits(expected))
    assert nonfinite == int((~np.isfinite(values)).sum())


def _stored(rng: np.random.Generator, n: int) -> torch.Tensor:
    """bf16 data (n,) like a checkpoint's, with some subnormals, zeros and large values."""
    values = rng.standard_normal(n).astype(np.float32) * np.float32(0.02)
    values[rng.integers(0, n, n // 50)] = rng.standard_normal(n // 50).astype(np.float32) * np.float32(1e-39)
    values[rng.integers(0, n, n // 50)] = 0.0
    values[rng.integers(0, n, n // 100)] *= np.float32(1e36)
    return torch.from_numpy(values).to(torch.bfloat16)


_CASES = [
    ("linear", 3, {"weight": (0.33, 0.5, 0.25), "normalize": True}),
    ("linear", 3, {"weight": (1.0, 1.0, 1.0), "normalize": True}),
    ("linear", 2, {"weight": (0.7, -0.2), "normalize": False}),
    ("linear", 1, {"weight": (0.9,), "normalize": False}),
    ("task_arithmetic", 3, {"weight": (0.33, 0.33, 0.33), "normalize": False, "lambda": 1.0}),
    ("task_arithmetic", 3, {"weight": (0.5, 0.3, 0.1), "normalize": True, "lambda": 0.7}),
    ("task_arithmetic", 2, {"weight": (1e-9, -1e-9), "normalize": True, "lambda": 1.3}),
    ("task_arithmetic", 1, {"weight": (0.8,), "normalize": False, "lambda": 2.0}),
]


@pytest.mark.parametrize(("method", "n", "params"), _CASES)
def test_fused_forms_write_the_bits_of_the_torch_path(method: str, n: int, params: dict[str, Any]) -> None:
    spec = get_method(method)
    assert spec.fused is not None
    rng = np.random.default_rng(n)
    length = 50_021  # not a multiple of the block or of a vector
    inputs = [_stored(rng, length) for _ in range(n)]
    base = _stored(rng, length) if spec.needs_base else None
    stacked = torch.stack([t.float() for t in inputs])
    scratch = torch.empty(length)
    merged = spec.function(MergeInputs("t", stacked, base.float() if base is not None else None, None, scratch), **params)
    expected = merged.to(torch.bfloat16)
    out = np.empty(length, np.uint16)
    rows = [bf16_kernels.bits(t) for t in inputs]
    nonfinite = spec.fused(rows, bf16_kernels.bits(base) if base is not None else None, out, **params)
    assert np.array_equal(out, bf16_kernels.bits(expected)), f"{int((out != bf16_kernels.bits(expected)).sum())} differ"
    assert nonfinite == int((~torch.isfinite(merged)).sum())


def test_fused_forms_count_nonfinite_results() -> None:
    spec = get_method("linear")
    assert spec.fused is not None
    rows = [bf16_kernels.bits(torch.tensor([1.0, float("nan"), float("inf"), 2.0], dtype=torch.bfloat16))] * 2
    out = np.empty(4, np.uint16)
    assert spec.fused(rows, None, out, weight=(0.5, 0.5), normalize=False) == 2


# The torch path the kernels replace: method functions on converted inputs, torch's
# conversions for the streamed methods' ranges.
def _torch_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("linear", "task_arithmetic"):
        monkeypatch.setitem(_REGISTRY, name, dataclasses.replace(_REGISTRY[name], fused=None))
    monkeypatch.setattr(execute, "_widen_bf16", execute._copy_in_inference_mode)

    def narrow_in_torch(values: torch.Tensor, destination: torch.Tensor) -> bool:
        destination.copy_(values.view(destination.shape))
        return execute._all_finite(values)

    monkeypatch.setattr(execute, "_narrow_into", narrow_in_torch)
    monkeypatch.setattr(execute._StoredChunks, "weighted_sum_stored", lambda *args: False)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base and three bf16 fine-tunes; ``ft3`` holds a NaN and an Inf in its embedding."""
    root = tmp_path_factory.mktemp("family")
    folders = {
        name: write_checkpoint(root / name, SPEC, seed=seed, dtype=torch.bfloat16)
        for seed, name in enumerate(["base", "ft1", "ft2", "ft3"])
    }
    file = folders["ft3"] / "model.safetensors"
    tensors = load_file(str(file))
    embedding = tensors["model.embed_tokens.weight"]
    embedding[5, 3], embedding[200, 0] = float("nan"), float("inf")
    save_file(tensors, str(file), metadata={"format": "pt"})
    return folders


def _recipe(method: str, family: dict[str, Path], tunes: int) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "merge_method": method,
        "models": [
            {"model": str(family[f"ft{i}"]), "parameters": {"weight": w}}
            for i, w in zip(range(1, tunes + 1), (0.33, 0.5, 0.25), strict=False)
        ],
        "dtype": "bfloat16",
    }
    if method != "linear":
        recipe["base_model"] = str(family["base"])
    if method == "ties":
        for model in recipe["models"]:
            model["parameters"]["density"] = 0.5
    if method == "slerp":
        recipe["models"] = [{"model": str(family["base"])}, {"model": str(family[f"ft{tunes}"])}]
        recipe["parameters"] = {"t": 0.4}
    return recipe


def _bytes(folder: Path) -> bytes:
    return (folder / "model.safetensors").read_bytes()


@pytest.mark.parametrize(("method", "tunes"), [("linear", 2), ("task_arithmetic", 2), ("ties", 2), ("slerp", 1)])
@pytest.mark.parametrize("chunk_bytes", [None, 16 << 10])
def test_merges_write_the_bytes_of_the_torch_path(
    method: str, tunes: int, chunk_bytes: int | None, family: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = _recipe(method, family, tunes)
    merge(recipe, tmp_path / "kernels", device="cpu", chunk_bytes=chunk_bytes)
    _torch_only(monkeypatch)
    merge(recipe, tmp_path / "torch", device="cpu", chunk_bytes=chunk_bytes)
    assert _bytes(tmp_path / "kernels") == _bytes(tmp_path / "torch")


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "slerp"])
def test_nonfinite_inputs_take_the_torch_path_and_its_policy(
    method: str, family: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows with NaN/Inf results are redone in torch: the same error without
    --allow-nonfinite, the same bytes (NaN and Inf included) with it."""
    recipe = _recipe(method, family, 3)
    with pytest.raises(Exception, match="ft3: tensor 'model.embed_tokens.weight' holds 2 NaN/Inf"):
        merge(recipe, tmp_path / "refused", device="cpu")
    merge(recipe, tmp_path / "kernels", device="cpu", allow_nonfinite=True, chunk_bytes=16 << 10)
    _torch_only(monkeypatch)
    merge(recipe, tmp_path / "torch", device="cpu", allow_nonfinite=True, chunk_bytes=16 << 10)
    assert _bytes(tmp_path / "kernels") == _bytes(tmp_path / "torch")
