"""Methods that choose, per entry, which model's change to take: Nearswap, Arcee Fusion,
RAM / RAM+ (tensor-local) and SCE, with mergekit's parameters and behaviour.

Tensors are (n_models, *shape) in the compute dtype and the base (*shape,); every
function returns a new (*shape,) tensor.
"""

from __future__ import annotations

import numpy as np
import torch

from mergestudio.methods.registry import MergeInputs, Param, register
from mergestudio.methods.sparse import TopKMask, top_k_rules


@register(
    "nearswap",
    family="selection",
    summary="Take the other model's value where it is already close to the base; keep the base "
    "where they differ.",
    math="w = clamp(t / |θ_base − θ₁|, 0, 1) (1 where equal); θ = w θ₁ + (1 − w) θ_base",
    paper="alchemonaut, QuartetAnemoi-70B-t0.0001 (Hugging Face, 2024); mergekit nearswap",
    params=(
        Param(
            "t",
            "float",
            "Similarity scale: differences below t are taken in full.",
            default=None,
            low=0.0,
            ui_low=0.0,
            ui_high=0.01,
        ),
    ),
    needs_base=True,
    elementwise=True,
    min_models=1,
    max_models=1,
)
def nearswap(inputs: MergeInputs, *, t: float) -> torch.Tensor:
    assert inputs.base is not None
    base, other = inputs.base, inputs.tensors[0]
    difference = (base - other).abs_()
    # t/0 would be inf (or NaN for t = 0); equal entries take the other model, which is the base.
    weight = (float(t) / difference.clamp_(min=torch.finfo(difference.dtype).tiny)).clamp_(0, 1)
    return torch.lerp(base, other, weight)


def _quantiles(values: torch.Tensor, fractions: tuple[float, ...]) -> list[float]:
    """Exact order statistics at floor(q·(n−1)) of the flattened values (mergekit's index
    convention), by partial selection; mergekit samples a million entries instead."""
    flat = values.reshape(-1).float().cpu().numpy()
    positions = [int(q * (flat.size - 1)) for q in fractions]
    selected = np.partition(flat, positions)
    return [float(selected[p]) for p in positions]


@register(
    "arcee_fusion",
    family="selection",
    summary="Take the other model's changes only where their importance (size of the change times "
    "the row's KL divergence) is an outlier.",
    math="I = |θ₁ − θ_base| · KL(softmax θ₁ ‖ softmax θ_base) per row; keep τ where "
    "I ≥ median(I) + 1.5·IQR(I)",
    paper="Arcee AI, MergeKit v0.1 / Arcee Fusion (2025)",
    needs_base=True,
    min_models=1,
    max_models=1,
    notes="Quantiles are exact here (mergekit estimates them from a random sample of 10⁶ entries). "
    "The softmax runs over the last dimension; a 1-D tensor is one row.",
)
def arcee_fusion(inputs: MergeInputs) -> torch.Tensor:
    assert inputs.base is not None
    base, other = inputs.base, inputs.tensors[0]
    eps = 1e-8
    p = torch.softmax(other.float(), dim=-1) + eps
    q = torch.softmax(base.float(), dim=-1) + eps
    kl = (p * (p / q).log()).sum(-1, keepdim=True)
    importance = (other - base).abs() * kl.to(other.dtype)
    q1, median, q3 = _quantiles(importance, (0.25, 0.5, 0.75))
    threshold = median + 1.5 * (q3 - q1)
    mask = importance >= threshold
    return base + (other - base) * mask


_EPSILON = Param(
    "epsilon",
    "float",
    "Changes at or below this magnitude count as untouched.",
    default=1e-5,
    low=0.0,
    ui_high=1e-3,
)


def _ram_parts(inputs: MergeInputs, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task vectors with untouched entries zeroed (n, *shape), the touched mask, and the
    number of models touching each entry (*shape,)."""
    tau = inputs.task_vectors()
    touched = tau.abs() > epsilon
    tau.mul_(touched)
    return tau, touched, touched.sum(0)


@register(
    "ram",
    family="selection",
    summary="Add each model's changes; where several models change an entry, average them "
    "instead of summing.",
    math="θ = θ_base + Σᵢ τᵢ[|τᵢ|>ε] / max(1, #{i : |τᵢ|>ε})",
    paper="Reinforced Agent Merging (RAM), arXiv:2601.13572",
    params=(_EPSILON,),
    needs_base=True,
    elementwise=True,
    min_models=1,
)
def ram(inputs: MergeInputs, *, epsilon: float) -> torch.Tensor:
    assert inputs.base is not None
    tau, _, counts = _ram_parts(inputs, float(epsilon))
    return (tau.sum(0) / counts.clamp(min=1)).add_(inputs.base)


@register(
    "ramplus_tl",
    family="selection",
    summary="RAM with each model's unique changes boosted by how much of its change is shared "
    "(ratio measured per tensor).",
    math="ρᵢ = #shared touched / #unique touched; λᵢ = 1 + r·clamp(ρᵢ, 0, α); θ = θ_base + "
    "Σᵢ (λᵢ τᵢ on unique entries + τᵢ / count on shared entries)",
    paper="Reinforced Agent Merging (RAM+), arXiv:2601.13572",
    params=(
        Param("r", "float", "Strength of the boost on unique changes.", default=0.1, low=0.0, ui_high=1.0),
        Param("alpha", "float", "Cap on the shared/unique ratio.", default=0.2, low=0.0, ui_high=1.0),
        _EPSILON,
    ),
    needs_base=True,
    min_models=1,
)
def ramplus_tl(inputs: MergeInputs, *, r: float, alpha: float, epsilon: float) -> torch.Tensor:
    assert inputs.base is not None
    tau, touched, counts = _ram_parts(inputs, float(epsilon))
    unique = counts == 1
    shared = counts > 1
    n = inputs.n_models
    flat_touched = touched.reshape(n, -1)
    shared_counts = (flat_touched & shared.reshape(1, -1)).sum(1).to(tau.dtype)
    unique_counts = (flat_touched & unique.reshape(1, -1)).sum(1).to(tau.dtype)
    rho = shared_counts / unique_counts.clamp(min=float(epsilon))
    boost = 1 + float(r) * rho.clamp(0, float(alpha))
    boost = boost.reshape((n,) + (1,) * (tau.dim() - 1))
    merged = (tau * unique * boost).sum(0) + (tau * shared).sum(0) / counts.clamp(min=1)
    return merged.add_(inputs.base)


@register(
    "sce",
    family="task arithmetic",
    summary="Select the entries whose task vectors vary most across models, weight each model by "
    "its mean squared change, erase minority signs, average.",
    math="keep top select_topk of Var_i τᵢ; wᵢ ∝ mean(τᵢ²); s = sgn Σᵢ τᵢ; "
    "θ = θ_base + Σᵢ wᵢτᵢ[sgn τᵢ = s] / Σᵢ wᵢ[sgn τᵢ = s]",
    paper="Wan et al., FuseChat (SCE), arXiv:2408.07990",
    params=(
        Param(
            "select_topk",
            "float",
            "Fraction of entries (of those with nonzero variance) kept by variance across models.",
            default=1.0,
            low=0.0,
            high=1.0,
        ),
        Param("int8_mask", "bool", "Accepted for mergekit recipes; changes nothing here.", default=False),
    ),
    needs_base=True,
    min_models=1,
)
def sce(inputs: MergeInputs, *, select_topk: float, int8_mask: bool) -> torch.Tensor:
    assert inputs.base is not None
    tau = inputs.task_vectors()
    n = inputs.n_models
    flat = tau.reshape(n, -1)
    if select_topk < 1:
        variance = flat.var(0, unbiased=False).unsqueeze(0)
        k = int(abs(float(select_topk)) * int(torch.count_nonzero(variance)))
        keep = TopKMask(top_k_rules(variance, None, [k]))(variance, 0)
        flat.mul_(keep)
    energies = [float(row.square().sum()) / max(row.numel(), 1) for row in flat]
    total = sum(energies)
    weights = [e / total for e in energies] if total > 0 else [1.0 / n] * n
    weight_col = torch.tensor(weights, dtype=flat.dtype, device=flat.device).unsqueeze(1)
    elected_positive = flat.sum(0) >= 0
    agree = torch.where(elected_positive, flat > 0, flat < 0)
    erased = agree * weight_col
    divisor = erased.sum(0)
    merged = (flat * erased).sum(0) / divisor.masked_fill_(divisor == 0, 1.0)
    return merged.view(inputs.base.shape) + inputs.base
