"""Singular spectra of task matrices, and which matrices get one.

An SVD costs about m·n·min(m, n) for an m×n matrix, which for a 1B model's MLP matrices
is seconds each on a laptop CPU. So every 2-D matrix is analysed when the whole model
fits a budget of that cost; otherwise a deterministic sample is, and the report says
which matrices and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from mergestudio.architecture import layer_index

SpectraMode = Literal["auto", "all", "sample", "none"]
SPECTRA_MODES: tuple[SpectraMode, ...] = ("auto", "all", "sample", "none")
# About 10-20 s of single-threaded float32 SVD on a laptop core, all models together.
DEFAULT_SPECTRUM_BUDGET = 3.0e10
ENERGY_FRACTION = 0.95
KEEP_SINGULAR_VALUES = 256  # leading values stored per spectrum (the plot's range)


@dataclass(frozen=True)
class SpectrumPlan:
    """Which task matrices get a spectrum, and the rule that chose them."""

    mode: str  # "all", "sample" or "none"
    matrices: tuple[str, ...]
    rule: str
    sampled_layers: tuple[int, ...] = ()


def svd_cost(shape: Sequence[int]) -> float:
    """Relative cost of ``svdvals`` on a matrix: m·n·min(m, n)."""
    rows, cols = int(shape[0]), int(np.prod(shape[1:]))
    return float(rows) * cols * min(rows, cols)


def is_task_matrix(shape: Sequence[int]) -> bool:
    return len(shape) == 2 and min(shape) > 1


def plan_spectra(
    shapes: Mapping[str, Sequence[int]],
    mode: SpectraMode = "auto",
    budget: float = DEFAULT_SPECTRUM_BUDGET,
    n_models: int = 1,
) -> SpectrumPlan:
    """Choose the matrices (names in ``shapes`` order) whose spectra are computed.

    ``budget`` bounds Σ svd_cost over the chosen matrices times ``n_models``. Sampling
    takes the middle, first and last layers (in that order of priority) and, within
    each, every matrix that still fits the budget, in name order.
    """
    matrices = [name for name, shape in shapes.items() if is_task_matrix(shape)]
    if mode == "none" or not matrices:
        return SpectrumPlan("none", (), "spectra not requested" if mode == "none" else "no 2-D tensors")
    total = n_models * sum(svd_cost(shapes[name]) for name in matrices)
    if mode == "all" or (mode == "auto" and total <= budget):
        return SpectrumPlan("all", tuple(matrices), "every 2-D task matrix")
    return _sample(shapes, matrices, budget, n_models)


def _sample(
    shapes: Mapping[str, Sequence[int]], matrices: list[str], budget: float, n_models: int
) -> SpectrumPlan:
    by_layer: dict[int, list[str]] = {}
    for name in matrices:
        index = layer_index(name)
        if index is not None:
            by_layer.setdefault(index, []).append(name)
    layers = sorted(by_layer)
    if not layers:
        return SpectrumPlan("sample", (), "no per-layer matrices to sample")
    middle, first, last = layers[len(layers) // 2], layers[0], layers[-1]
    chosen_layers = tuple(dict.fromkeys((middle, first, last)))
    chosen: list[str] = []
    spent = 0.0
    for index in chosen_layers:
        for name in by_layer[index]:
            cost = n_models * svd_cost(shapes[name])
            if spent + cost <= budget:
                chosen.append(name)
                spent += cost
    order = {name: i for i, name in enumerate(shapes)}
    chosen.sort(key=order.__getitem__)
    rule = (
        f"sampled: layers {', '.join(map(str, chosen_layers))} (middle, first, last), every matrix "
        f"there that fits a budget of {budget:.3g} (Σ m·n·min(m, n) over models); "
        f"all {len(matrices)} matrices would cost {n_models * sum(svd_cost(shapes[m]) for m in matrices):.3g}"
    )
    sampled = tuple(sorted({layer_index(name) or 0 for name in chosen}))
    return SpectrumPlan("sample", tuple(chosen), rule, sampled)


def singular_values(task_matrix: torch.Tensor) -> np.ndarray:
    """Singular values (descending, float64 numpy) of a float32 (m, n) task matrix."""
    values: np.ndarray = torch.linalg.svdvals(task_matrix.to(torch.float32)).double().numpy()
    return values


def effective_rank(values: np.ndarray, energy: float = ENERGY_FRACTION) -> int:
    """Smallest r with Σ_{i<r} σᵢ² ≥ energy · Σ σᵢ² (0 for a zero matrix)."""
    squares = np.asarray(values, dtype=np.float64) ** 2
    total = squares.sum()
    if total <= 0:
        return 0
    cumulative = np.cumsum(squares) / total
    return int(np.searchsorted(cumulative, energy - 1e-12) + 1)


def spectrum_record(values: np.ndarray) -> dict[str, Any]:
    """What the report keeps of one spectrum: the leading values, the rank, the energy."""
    squares = np.asarray(values, dtype=np.float64) ** 2
    return {
        "singular_values": [float(v) for v in values[:KEEP_SINGULAR_VALUES]],
        "full_rank": len(values),
        "effective_rank": effective_rank(values),
        "energy": float(squares.sum()),
    }
