"""Geometric averages: Model Stock, NuSLERP, Multi-SLERP and the Karcher mean, with
mergekit's parameters and behaviour.

NuSLERP and Multi-SLERP take an optional base (they then work on task vectors); they
use ``inputs.base`` when the planner supplies one. Tensors are (n_models, *shape) in the
compute dtype; every function returns a new (*shape,) tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mergestudio.errors import RecipeError
from mergestudio.methods.common import WEIGHT_DOC, zero_weight_sum_check
from mergestudio.methods.registry import MergeInputs, Param, register

_REQUIRED_WEIGHT = Param("weight", "float", WEIGHT_DOC, per_model=True, ui_low=0.0, ui_high=2.0)
_OPTIONAL_BASE = (
    "A base_model is optional: with one, the task vectors (model − base) are interpolated and the "
    "result added to the base."
)


@register(
    "model_stock",
    family="geometric",
    summary="Interpolate between the base and the average of the fine-tunes by a ratio set by the "
    "angle between their task vectors.",
    math="cos θ = mean pairwise cosine of τᵢ; t = N cos θ / (1 + (N−1) cos θ); θ = t·mean(θᵢ) + (1−t)·θ_base",
    paper="Jang et al., Model Stock, ECCV 2024, arXiv:2403.19522",
    params=(
        Param(
            "filter_wise",
            "bool",
            "Compute the ratio per row (1-D tensors are one row) instead of per tensor.",
            default=False,
        ),
    ),
    needs_base=True,
    min_models=2,
    notes="Cosines are clamped to [−1, 1] with norms floored at 1e-6, as in mergekit.",
)
def model_stock(inputs: MergeInputs, *, filter_wise: bool) -> torch.Tensor:
    assert inputs.base is not None
    base = inputs.base
    n = inputs.n_models
    if filter_wise:
        rows = base.reshape(1, -1) if base.dim() <= 1 else base.reshape(base.shape[0], -1)
        models = inputs.tensors.reshape(n, *rows.shape)
    else:
        rows = base.reshape(1, -1)
        models = inputs.tensors.reshape(n, 1, -1)
    offsets = models - rows
    norms = torch.linalg.vector_norm(offsets, dim=-1)  # (n, rows)
    cosines = []
    for i in range(n):
        for j in range(i + 1, n):
            dot = (offsets[i] * offsets[j]).sum(-1)
            cosines.append((dot / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(0).unsqueeze(-1)  # (rows, 1)
    t = (n * cos) / (1 + (n - 1) * cos)
    average = models.mean(0)
    return (t * average + (1 - t) * rows).reshape(base.shape)


def _nuslerp_pair(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Slerp along the last dimension of v0, v1 (..., d): every leading index is its own
    pair of vectors; nearly colinear pairs (|sin θ| < eps) are interpolated linearly."""
    u0 = v0 / torch.linalg.vector_norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.linalg.vector_norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    theta = torch.acos((u0 * u1).sum(-1, keepdim=True).clamp(-1, 1))
    sin_theta = torch.sin(theta)
    colinear = sin_theta.abs() < eps
    safe_sin = torch.where(colinear, torch.ones_like(sin_theta), sin_theta)
    curved = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / safe_sin
    return torch.where(colinear, (1 - t) * v0 + t * v1, curved)


@register(
    "nuslerp",
    family="spherical",
    summary="Spherical interpolation between two models (or their task vectors), weighted, "
    "over the whole tensor, its rows or its columns.",
    math="t = w₂/(w₁+w₂); θ = slerp(t, θ₁, θ₂) (on task vectors with a base, then + θ_base)",
    paper="mergekit (Goddard et al., 2024, arXiv:2403.13257); Shoemake 1985",
    params=(
        _REQUIRED_WEIGHT,
        Param("nuslerp_flatten", "bool", "Treat the whole tensor as one vector.", default=True),
        Param(
            "nuslerp_row_wise",
            "bool",
            "Without flatten: interpolate along dimension 0 (each column is a vector, as mergekit "
            "computes it) instead of the last dimension.",
            default=False,
        ),
    ),
    min_models=1,
    max_models=2,
    optional_base=True,
    notes=_OPTIONAL_BASE + " With a weight sum of ~0, t = 0.5.",
)
def nuslerp(
    inputs: MergeInputs, *, weight: Sequence[float], nuslerp_flatten: bool, nuslerp_row_wise: bool
) -> torch.Tensor:
    if inputs.n_models == 1:
        return inputs.tensors[0].clone()
    total = float(weight[0]) + float(weight[1])
    t = 0.5 if abs(total) < 1e-6 else float(weight[1]) / total
    base = inputs.base
    v0, v1 = inputs.tensors[0], inputs.tensors[1]
    if base is not None:
        v0, v1 = v0 - base, v1 - base
    shape = v0.shape
    if nuslerp_flatten or v0.dim() <= 1:
        result = _nuslerp_pair(t, v0.reshape(-1), v1.reshape(-1)).reshape(shape)
    elif nuslerp_row_wise:
        result = _nuslerp_pair(t, v0.transpose(0, -1), v1.transpose(0, -1)).transpose(0, -1)
    else:
        result = _nuslerp_pair(t, v0, v1)
    return result + base if base is not None else result.contiguous()


@register(
    "multislerp",
    family="spherical",
    summary="Weighted spherical barycentre of any number of models, through the tangent space at "
    "their normalised weighted mean.",
    math="uᵢ = θᵢ/‖θᵢ‖; m = Σwᵢuᵢ/‖Σwᵢuᵢ‖; v = Σwᵢ(uᵢ − (uᵢ·m)m); θ = (Σwᵢ‖θᵢ‖)(m cos‖v‖ + v sin‖v‖/‖v‖)",
    paper="Goddard, Multi-SLERP (mergekit); Buss & Fillmore 2001, spherical averages",
    params=(
        _REQUIRED_WEIGHT,
        Param("normalize_weights", "bool", "Divide the weights by their sum.", default=True),
        Param("eps", "float", "Small constant for numerical stability.", default=1e-8, low=0.0, high=1e-2),
    ),
    min_models=1,
    optional_base=True,
    check=zero_weight_sum_check("weight", "normalize_weights"),
    notes=_OPTIONAL_BASE + " When the weighted mean direction vanishes, two models fall back to a "
    "linear blend; more raise an error, as in mergekit.",
)
def multislerp(
    inputs: MergeInputs, *, weight: Sequence[float], normalize_weights: bool, eps: float
) -> torch.Tensor:
    if inputs.n_models == 1:
        return inputs.tensors[0].clone()
    base = inputs.base
    tensors = inputs.tensors - base if base is not None else inputs.tensors
    flat = tensors.reshape(inputs.n_models, -1)
    weights = torch.tensor([float(w) for w in weight], dtype=flat.dtype, device=flat.device)
    if normalize_weights:
        weights = weights / weights.sum()
    norms = torch.linalg.vector_norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights[:, None]).sum(0)
    mean_norm = float(torch.linalg.vector_norm(mean))
    if mean_norm < eps:
        if inputs.n_models == 2:
            result = (flat * weights[:, None]).sum(0)
            return _with_base(result.reshape(inputs.tensors.shape[1:]), base)
        raise RecipeError(
            f"{inputs.name}: multislerp: the weighted mean direction is zero (antipodal models with "
            "balancing weights); change the weights"
        )
    mean = mean / mean_norm
    tangents = units - (units @ mean)[:, None] * mean
    tangent = (tangents * weights[:, None]).sum(0)
    tangent_norm = float(torch.linalg.vector_norm(tangent)) + eps
    direction = mean * math.cos(tangent_norm) + tangent * (math.sin(tangent_norm) / tangent_norm)
    scale = (norms.squeeze(-1) * weights).sum()
    return _with_base((direction * scale).reshape(inputs.tensors.shape[1:]), base)


def _with_base(result: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    return result + base if base is not None else result


@register(
    "karcher",
    family="spherical",
    summary="Riemannian (Karcher) mean of the models' directions on the unit sphere, scaled by "
    "their mean norm.",
    math="m ← exp_m(Σᵢ αᵢ log_m(uᵢ)) until ‖Σᵢ αᵢ log_m(uᵢ)‖ < tol; θ = (Σᵢ αᵢ‖θᵢ‖) m",
    paper="Karcher 1977; Grove & Karcher 1973 (Riemannian centre of mass)",
    params=(
        Param(
            "weight",
            "float",
            "Relative weight (our extension; mergekit weighs models equally).",
            default=1.0,
            per_model=True,
            low=0.0,
            ui_high=2.0,
        ),
        Param("max_iter", "int", "Maximum iterations.", default=10, low=1, high=1000, ui_high=50),
        Param("tol", "float", "Convergence tolerance.", default=1e-5, low=0.0, high=1.0, ui_high=1e-2),
    ),
    min_models=1,
    notes="Zero tensors are left out of the direction (their norm still counts in the scale).",
)
def karcher(inputs: MergeInputs, *, weight: Sequence[float], max_iter: int, tol: float) -> torch.Tensor:
    if inputs.n_models == 1:
        return inputs.tensors[0].clone()
    total = float(sum(weight))
    alphas = [float(w) / total if total else 1.0 / inputs.n_models for w in weight]
    flat = inputs.tensors.reshape(inputs.n_models, -1)
    norms = [float(torch.linalg.vector_norm(row)) for row in flat]
    valid = [i for i, norm in enumerate(norms) if norm > tol]
    if not valid:
        return torch.zeros_like(inputs.tensors[0])
    valid_sum = sum(alphas[i] for i in valid)
    weights = [alphas[i] / valid_sum for i in valid] if valid_sum else [1.0 / len(valid)] * len(valid)
    units = torch.stack([flat[i] / norms[i] for i in valid])
    mean = (units * torch.tensor(weights, dtype=flat.dtype, device=flat.device)[:, None]).sum(0)
    mean_norm = float(torch.linalg.vector_norm(mean))
    mean = units[0].clone() if mean_norm < tol else mean / mean_norm
    for _ in range(int(max_iter)):
        tangent = torch.zeros_like(mean)
        for unit, alpha in zip(units, weights, strict=True):
            dot = float(torch.dot(mean, unit).clamp(-1.0, 1.0))
            angle = math.acos(dot)
            if angle < tol:
                continue
            tangent.add_(unit - dot * mean, alpha=alpha * angle / math.sin(angle))
        step = float(torch.linalg.vector_norm(tangent))
        if step < tol:
            break
        mean = mean * math.cos(step) + tangent * (math.sin(step) / step)
        length = float(torch.linalg.vector_norm(mean))
        if length > tol:
            mean = mean / length
    scale = sum(alpha * norm for alpha, norm in zip(alphas, norms, strict=True))
    return (mean * scale).reshape(inputs.tensors.shape[1:])
