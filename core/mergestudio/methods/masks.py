"""Merging through per-entry masks built from the task vectors themselves: TALL-mask
Consensus merging and PCB-merging. Both are defined entry by entry on any tensor shape,
so biases, norms and embeddings are treated like every other tensor.

Tensors are (n_models, *shape) in the compute dtype and the base (*shape,); every
function returns a new (*shape,) tensor.
"""

from __future__ import annotations

import torch

from mergestudio.methods.registry import MergeInputs, Param, register
from mergestudio.methods.sparse import TopKMask, top_k_rules


@register(
    "tall_consensus",
    family="masks",
    summary="Task arithmetic restricted to the entries that matter to at least k tasks, judged "
    "by each task's TALL mask.",
    math="τ = Σᵢ τᵢ; mᵢ = [|τᵢ| ≥ λ·|τ − τᵢ|]; θ = θ_base + α · [Σᵢ mᵢ ≥ k] ⊙ τ",
    paper="Wang et al., Localizing Task Information for Improved Model Merging and Compression "
    "(TALL masks, Consensus Merging), ICML 2024, arXiv:2405.07813",
    params=(
        Param(
            "alpha",
            "float",
            "Task arithmetic scale of the summed task vector.",
            default=1.0,
            low=0.0,
            ui_high=2.0,
        ),
        Param(
            "mask_lambda",
            "float",
            "TALL mask threshold λ (the paper tunes it in [0.2, 0.6]).",
            default=0.4,
            low=0.0,
            ui_high=1.0,
        ),
        Param(
            "min_agreement",
            "int",
            "Keep entries whose TALL masks are on for at least this many tasks.",
            default=2,
            low=0,
            ui_high=8,
        ),
    ),
    needs_base=True,
    elementwise=True,
    min_models=1,
    aliases=("consensus_ta",),
)
def tall_consensus(
    inputs: MergeInputs, *, alpha: float, mask_lambda: float, min_agreement: int
) -> torch.Tensor:
    assert inputs.base is not None
    tau = inputs.task_vectors()
    total = tau.sum(0)
    # |τ − τᵢ| per task: the other tasks' summed change at this entry.
    others = (total - tau).abs_().mul_(float(mask_lambda))
    votes = (tau.abs() >= others).sum(0)
    keep = votes >= int(min_agreement)
    return inputs.base + total * keep * float(alpha)


@register(
    "pcb",
    family="masks",
    summary="Parameter Competition Balancing: score each entry by its importance within its task "
    "and its agreement with the other tasks, keep the top density, average by score.",
    math="βᵢ = softmax(N·norm(τᵢ²)) ⊙ Σⱼ softmax(norm(τᵢτⱼ)); mᵢ = top-density(βᵢ); "
    "θ = θ_base + λ Σᵢ mᵢβᵢτᵢ / Σᵢ mᵢβᵢ",
    paper="Du et al., Parameter Competition Balancing for Model Merging, NeurIPS 2024, arXiv:2410.02396",
    params=(
        Param(
            "density", "float", "Fraction of entries kept per task by score.", default=0.2, low=0.0, high=1.0
        ),
        Param("weight", "float", "Scale λ of the merged task vector.", default=1.0, low=0.0, ui_high=2.0),
    ),
    needs_base=True,
    min_models=1,
    notes="norm is division by the L2 norm over the tensor, softmax runs over the whole tensor. "
    "The weighted average is per entry, as in the paper (mergekit's pcb divides by the sum over "
    "all entries instead).",
)
def pcb(inputs: MergeInputs, *, density: float, weight: float) -> torch.Tensor:
    assert inputs.base is not None
    tau = inputs.task_vectors()
    n = inputs.n_models
    flat = tau.reshape(n, -1)
    intra = torch.softmax(n * _unit(flat * flat), dim=1)
    inter = torch.zeros_like(flat)
    for i in range(n):
        inter[i] = torch.softmax(_unit(flat[i] * flat), dim=1).sum(0)
    score = intra * inter
    numel = flat.shape[1]
    k = numel if density >= 1 else int(density * numel)
    keep = TopKMask(top_k_rules(score, None, [k] * n))(score, 0)
    kept = score * keep
    divisor = kept.sum(0)
    merged = (flat * kept).sum(0) / divisor.masked_fill_(divisor == 0, 1.0)
    return inputs.base + merged.view(inputs.base.shape) * float(weight)


def _unit(rows: torch.Tensor) -> torch.Tensor:
    """Each row divided by its L2 norm (zero rows stay zero)."""
    unit: torch.Tensor = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp(min=1e-12)
    return unit
