"""Whole-tensor inner products (norms, dot products, cosines) from flat ranges.

Spherical and geometric methods (slerp, NuSLERP, Model Stock, the Karcher mean) need only
a few scalars of each whole tensor: its rows' norms and the angles between them. These
are all read off the Gram matrix G (G_ij = r_i · r_j) of the rows r, which one pass over
the ranges of ``methods.chunks`` gives: each block of ``GRAM_BLOCK`` entries at a fixed
flat position is summed on its own in float64 (products of float32 values are exact
there), and the blocks are added in flat order, so every read range gives the same G,
bit for bit. The method's combining pass is then elementwise over the same ranges.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from mergestudio.methods.chunks import FlatChunks, spans
from mergestudio.parallel import run_parallel

# Entries per summed block, and what a combining range is cut into (its temporaries stay
# in the cache).
GRAM_BLOCK = 1 << 16
# The read ranges of a Gram method (``MethodSpec.stream_bytes``): its statistics are a few
# scalars, so ranges as small as an elementwise method's row chunks cost nothing.
GRAM_STREAM_BYTES = 8 << 20
# x_i (m = n); x_i − base (task vectors, m = n); x_0 … x_{n−1} then the base (m = n + 1).
GramRows = Literal["inputs", "task_vectors", "inputs_and_base"]
_ROW_KINDS: dict[GramRows, int] = {"inputs": 0, "task_vectors": 1, "inputs_and_base": 2}


def streamed_gram(chunks: FlatChunks, rows: GramRows) -> np.ndarray:
    """(m, m) float64 Gram matrix of the whole tensors' ``rows``, from one pass over
    ``chunks`` (which must have a base unless ``rows`` is "inputs")."""
    m = chunks.n_models + (1 if rows == "inputs_and_base" else 0)
    total = np.zeros((m, m), dtype=np.float64)
    compiled = chunks.device.type == "cpu" and chunks.dtype == torch.float32
    for start, stop in spans(chunks, GRAM_BLOCK):
        if rows == "inputs":
            x = chunks.read_inputs(start, stop)
            base = None
        else:
            x, base = chunks.read(start, stop)
        blocks = _compiled_blocks(x, base, rows, m) if compiled else _torch_blocks(x, base, rows)
        _add_in_order(total, blocks)
    return total


def _compiled_blocks(x: torch.Tensor, base: torch.Tensor | None, rows: GramRows, m: int) -> np.ndarray:
    """(blocks, m, m) per-block Gram matrices of one read range, by the compiled kernel:
    the blocks in two halves side by side on the cores."""
    from mergestudio.methods import kernels

    values = np.ascontiguousarray(x.numpy())
    base_values = np.ascontiguousarray(base.numpy()) if base is not None else values[0]
    count = -(-values.shape[1] // GRAM_BLOCK)
    out = np.empty((count, m, m), dtype=np.float64)
    middle = (count + 1) // 2
    groups = [(0, middle), (middle, count)] if count > 1 else [(0, count)]

    def run(group: tuple[int, int]) -> None:
        first, last = group
        kernels.block_gram(values, base_values, _ROW_KINDS[rows], GRAM_BLOCK, first, out[first:last])

    run_parallel(run, groups)
    return out


def _torch_blocks(x: torch.Tensor, base: torch.Tensor | None, rows: GramRows) -> np.ndarray:
    """``_compiled_blocks`` in torch (GPUs, other compute dtypes), one block at a time."""
    grams = []
    for lo in range(0, x.shape[1], GRAM_BLOCK):
        hi = min(x.shape[1], lo + GRAM_BLOCK)
        block = x[:, lo:hi]
        if rows == "task_vectors":
            assert base is not None
            block = block - base[lo:hi]
        elif rows == "inputs_and_base":
            assert base is not None
            block = torch.cat([block, base[lo:hi].unsqueeze(0)])
        wide = block.double()
        grams.append((wide @ wide.T).cpu().numpy())
    return np.stack(grams)


def _add_in_order(total: np.ndarray, blocks: np.ndarray) -> None:
    """total += each block in turn: one fixed order of additions for any grouping."""
    for block in blocks:
        total += block


def cosine(gram: np.ndarray, i: int, j: int, floor: float) -> float:
    """r_i · r_j / (max(‖r_i‖, floor) · max(‖r_j‖, floor)) from a Gram matrix."""
    return float(gram[i, j]) / (max(norm(gram, i), floor) * max(norm(gram, j), floor))


def norm(gram: np.ndarray, i: int) -> float:
    """‖r_i‖ from a Gram matrix."""
    return float(np.sqrt(max(float(gram[i, i]), 0.0)))


__all__ = ["GRAM_BLOCK", "GRAM_STREAM_BYTES", "GramRows", "cosine", "norm", "streamed_gram"]
