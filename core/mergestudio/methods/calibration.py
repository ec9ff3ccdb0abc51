"""Singular Value Calibration (SVC), a post-processing plug-in for any merge method
(Li et al., arXiv:2602.05536).

When tasks share singular directions, adding their updates counts the shared knowledge
several times and inflates the merged update's top singular values. SVC measures, in
each left singular direction u_r of the merged update Δ = U Σ Vᵀ, how much the merged
response a_r = u_rᵀΔ = σ_r v_rᵀ scales each task's response a_r^i = u_rᵀτᵢ:

    s_r^i = ⟨a_r, a_r^i⟩ / ‖a_r^i‖²,    γ_r = T / Σᵢ max(α, s_r^i),

and rescales only the singular values: θ = θ_base + U diag(γ ⊙ σ) Vᵀ. T copies of one
update merged by plain addition (s = T everywhere) come back as that one update.
"""

from __future__ import annotations

import torch

from mergestudio.methods.plugins import register_post_process
from mergestudio.methods.registry import MergeInputs, Param
from mergestudio.methods.spectral import is_spectral_matrix


def calibration_factors(
    merged_delta: torch.Tensor, tau: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, ...]:
    """(U, σ, Vᵀ, γ) for the merged update ``merged_delta`` (out, in) and task vectors
    ``tau`` (n, out, in), all in ``merged_delta``'s dtype (float32 or float64)."""
    u, sigma, vh = torch.linalg.svd(merged_delta, full_matrices=False)  # (out, r), (r,), (r, in)
    task_responses = torch.einsum("or,noi->nri", u, tau)  # a_r^i: (n, r, in)
    merged_responses = sigma.unsqueeze(1) * vh  # a_r: (r, in)
    inner = (task_responses * merged_responses.unsqueeze(0)).sum(2)  # (n, r)
    energy = task_responses.square().sum(2)  # (n, r)
    # A task with no response along u_r gives no evidence of over-counting there:
    # its coefficient is 0, floored to alpha below.
    coefficient = torch.where(energy > 0, inner / energy.clamp(min=torch.finfo(energy.dtype).tiny), 0.0)
    gamma = tau.shape[0] / coefficient.clamp(min=alpha).sum(0)
    return u, sigma, vh, gamma


@register_post_process(
    "svc",
    summary="Singular Value Calibration: shrink the merged update's singular values where "
    "tasks' shared directions were counted several times; singular vectors unchanged.",
    math="Δ = θ_merged − θ_base = U Σ Vᵀ; s_r^i = ⟨σ_r v_r, u_rᵀτᵢ⟩ / ‖u_rᵀτᵢ‖²; "
    "γ_r = T / Σᵢ max(α, s_r^i); θ = θ_base + U diag(γ ⊙ σ) Vᵀ",
    paper="Li et al., When Shared Knowledge Hurts: Spectral Over-Accumulation in Model Merging "
    "(SVC), arXiv:2602.05536",
    params=(
        Param(
            "alpha",
            "float",
            "Floor of each task's projection coefficient: higher calibrates more strongly "
            "(the paper's default 0.1).",
            default=0.1,
            low=0.0,
            high=10.0,
            ui_low=0.0,
            ui_high=1.0,
        ),
    ),
    notes="Applied to 2-D weight matrices; vectors (biases, norms) and embeddings / LM heads "
    "are left as the method made them (their SVD would dominate the time). Computed in "
    "float32 (float64 when the compute dtype is).",
)
def svc(inputs: MergeInputs, merged: torch.Tensor, *, alpha: float) -> torch.Tensor:
    if inputs.base is None or not is_spectral_matrix(inputs.name, merged):
        return merged
    work = torch.float64 if merged.dtype == torch.float64 else torch.float32
    base = inputs.base.to(work)
    tau = inputs.task_vectors().to(work)
    u, sigma, vh, gamma = calibration_factors(merged.to(work) - base, tau, alpha)
    if alpha <= 0 and not torch.isfinite(gamma).all():
        # alpha 0 with no positive coefficient in some direction: leave that one alone.
        gamma = torch.where(torch.isfinite(gamma), gamma, torch.ones_like(gamma))
    calibrated = (u * (gamma * sigma)) @ vh
    return (base + calibrated).to(merged.dtype)
