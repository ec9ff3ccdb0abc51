"""Whole-tensor inner products from flat ranges (``methods.gram``), and the methods built
on them: any read range gives the same Gram matrix bit for bit, it is the float64 one, and
the Karcher mean read off it is the iteration on the vectors themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mergestudio.methods import MergeInputs, get_method
from mergestudio.methods.chunks import TensorChunks
from mergestudio.methods.gram import GRAM_BLOCK, GramRows, streamed_gram

# Not a whole number of blocks, so the last block of every read range is short.
NUMEL = 5 * GRAM_BLOCK + 1234
ROWS: list[GramRows] = ["inputs", "task_vectors", "inputs_and_base"]


def _family(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    base = torch.randn(NUMEL, generator=generator)
    inputs = base + 0.3 * torch.randn(3, NUMEL, generator=generator)
    return inputs.to(dtype), base.to(dtype)


def _reference(inputs: torch.Tensor, base: torch.Tensor, rows: GramRows) -> np.ndarray:
    wide, wide_base = inputs.double(), base.double()
    if rows == "task_vectors":
        # Task vectors are made in the compute dtype, as the methods make them.
        wide = (inputs - base).double()
    elif rows == "inputs_and_base":
        wide = torch.cat([wide, wide_base.unsqueeze(0)])
    return (wide @ wide.T).numpy()


@pytest.mark.parametrize("rows", ROWS)
def test_every_read_range_gives_the_same_gram_matrix(rows: GramRows) -> None:
    inputs, base = _family()
    result = torch.empty(NUMEL)
    whole = streamed_gram(TensorChunks(inputs, base, result), rows)
    for entries in (GRAM_BLOCK, 3 * GRAM_BLOCK):
        assert np.array_equal(streamed_gram(TensorChunks(inputs, base, result, entries), rows), whole)
    np.testing.assert_allclose(whole, _reference(inputs, base, rows), rtol=1e-12)


def test_torch_path_agrees_with_the_compiled_one() -> None:
    # float64 compute runs the torch blocks (as GPUs do); the entries are float32 values.
    inputs, base = _family()
    compiled = streamed_gram(TensorChunks(inputs, base, torch.empty(NUMEL)), "task_vectors")
    wide = streamed_gram(TensorChunks(inputs.double(), base.double(), torch.empty(NUMEL)), "task_vectors")
    np.testing.assert_allclose(wide, compiled, rtol=1e-6)


def _karcher_on_vectors(tensors: torch.Tensor, max_iter: int = 10, tol: float = 1e-5) -> torch.Tensor:
    """The Karcher mean iterated on the float64 vectors themselves (equal weights)."""
    flat = tensors.double()
    norms = [float(torch.linalg.vector_norm(row)) for row in flat]
    units = torch.stack([row / length for row, length in zip(flat, norms, strict=True)])
    mean = units.mean(0)
    mean = mean / torch.linalg.vector_norm(mean)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for unit in units:
            dot = float(torch.dot(mean, unit).clamp(-1, 1))
            angle = math.acos(dot)
            if angle >= tol:
                tangent += (unit - dot * mean) * (angle / math.sin(angle) / len(units))
        step = float(torch.linalg.vector_norm(tangent))
        if step < tol:
            break
        mean = mean * math.cos(step) + tangent * (math.sin(step) / step)
        mean = mean / torch.linalg.vector_norm(mean)
    return mean * (sum(norms) / len(norms))


def test_karcher_from_the_gram_matrix_is_the_iteration_on_vectors() -> None:
    generator = torch.Generator().manual_seed(3)
    # Directions far apart (not a near-average), norms unequal: several iterations.
    tensors = torch.randn(3, 4096, generator=generator) * torch.tensor([[1.0], [2.0], [0.5]])
    tensors[1] += tensors[0]
    merged = get_method("karcher").function(
        MergeInputs("w", tensors, None), weight=(1.0, 1.0, 1.0), max_iter=10, tol=1e-5
    )
    expected = _karcher_on_vectors(tensors)
    torch.testing.assert_close(merged.double(), expected, rtol=0, atol=2e-6 * float(expected.abs().max()))
    # And it moved away from the normalised average, so the iterations mattered.
    average = (tensors / tensors.norm(dim=1, keepdim=True)).mean(0)
    assert not torch.allclose(merged, average / average.norm() * expected.norm(), atol=1e-3)
