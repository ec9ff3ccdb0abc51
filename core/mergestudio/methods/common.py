"""Small tensor helpers shared by method families."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def per_model_column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-model scalars as a (n_models, 1, ..., 1) tensor that broadcasts against
    ``like`` of shape (n_models, *shape), in ``like``'s dtype and device."""
    column = torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device)
    return column.reshape((-1,) + (1,) * (like.dim() - 1))


WEIGHT_DOC = "How much of this model goes into the merge."


def weighted_sum(tensors: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Σᵢ wᵢ tensors[i] for tensors (n, *shape): a new (*shape,) tensor, accumulated in
    place one model at a time so no (n, *shape) temporary is made."""
    merged = tensors[0] * float(weights[0])
    for tensor, weight in zip(tensors[1:], weights[1:], strict=True):
        merged.add_(tensor, alpha=float(weight))
    return merged
