"""Small tensor helpers shared by method families."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mergestudio.methods.registry import ParamValues


def per_model_column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-model scalars as a (n_models, 1, ..., 1) tensor that broadcasts against
    ``like`` of shape (n_models, *shape), in ``like``'s dtype and device."""
    column = torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device)
    return column.reshape((-1,) + (1,) * (like.dim() - 1))


WEIGHT_DOC = "How much of this model goes into the merge."


def weighted_sum(
    tensors: torch.Tensor, weights: Sequence[float], out: torch.Tensor | None = None
) -> torch.Tensor:
    """Σᵢ wᵢ tensors[i] for tensors (n, *shape): a (*shape,) tensor, accumulated in place
    one model at a time so no (n, *shape) temporary is made; in ``out`` (any shape with
    as many entries, e.g. ``MergeInputs.scratch``) when given, else new."""
    if out is not None:
        merged = torch.mul(tensors[0], float(weights[0]), out=out.view(tensors.shape[1:]))
    else:
        merged = tensors[0] * float(weights[0])
    for tensor, weight in zip(tensors[1:], weights[1:], strict=True):
        merged.add_(tensor, alpha=float(weight))
    return merged


def zero_weight_sum_check(weight_key: str, flag_key: str) -> Callable[[ParamValues], str | None]:
    """A plan-time check for methods that divide by Σ weights when ``flag_key`` is true:
    a sum of (almost) zero would make every value of the tensor infinite or NaN."""

    def check(params: ParamValues) -> str | None:
        weights = params.get(weight_key)
        if not params.get(flag_key) or not isinstance(weights, tuple):
            return None
        total = sum(float(w) for w in weights)
        if abs(total) >= 1e-8:
            return None
        shown = ", ".join(f"{float(w):g}" for w in weights)
        return (
            f"{flag_key} divides by the sum of the weights, which is {total:g} here ({weight_key}s {shown}); "
            f"change the weights or set {flag_key}: false"
        )

    return check
