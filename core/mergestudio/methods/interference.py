"""WUDI merging: optimise each linear layer's merged task vector against the task
vectors' own row subspaces (Cheng et al., ICML 2025).

The paper shows that a linear layer's task vector τᵢ (out, in) approximately spans the
inputs that layer sees for task i, so the interference a merged update τ_m causes on task
i's inputs is measured, without data, by (τ_m − τᵢ) τᵢᵀ. WUDI minimises

    L(τ_m) = Σᵢ ‖(τ_m − τᵢ) τᵢᵀ‖_F² / ‖τᵢ‖_F²

starting from the task-arithmetic sum Σᵢ τᵢ, with Adam (the paper: 300 steps, lr 1e-5).
L is quadratic, so it also has a closed form: ∇L = 2 (τ_m G − B) with
G = Σᵢ wᵢ τᵢᵀτᵢ (in, in) and B = Σᵢ wᵢ τᵢ τᵢᵀ τᵢ (out, in); the minimiser nearest to the
start (the one plain gradient descent converges to) is τ₀ + (B − τ₀ G) G⁺.

Other tensors (biases, norms) and embeddings / LM heads take the paper code's fallback,
the mean task vector: θ = θ_base + α · mean(τᵢ).
"""

from __future__ import annotations

import torch

from mergestudio.methods.registry import MergeInputs, Param, register
from mergestudio.methods.spectral import is_spectral_matrix

# Eigenvalues of G below this fraction of the largest are treated as zero: directions no
# task vector spans, which gradient descent never moves either.
PINV_RCOND = 1e-6


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def interference_weights(tau: torch.Tensor) -> torch.Tensor:
    """(n,) the paper's wᵢ = 1/‖τᵢ‖_F²; zero for an all-zero task vector (no term)."""
    squared = tau.flatten(1).square().sum(1)
    return torch.where(squared > 0, 1.0 / squared.clamp(min=torch.finfo(tau.dtype).tiny), 0.0)


def interference_loss(merged: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """WUDI's objective Σᵢ ‖(τ_m − τᵢ) τᵢᵀ‖_F² / ‖τᵢ‖_F² as a 0-d tensor.

    ``merged``: (out, in); ``tau``: (n, out, in), same floating dtype."""
    weights = interference_weights(tau)
    residual = (merged.unsqueeze(0) - tau) @ tau.transpose(1, 2)  # (n, out, out)
    return (residual.square().sum((1, 2)) * weights).sum()


def _gradient(merged: torch.Tensor, tau: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """∇L at ``merged``: 2 Σᵢ wᵢ (τ_m − τᵢ) τᵢᵀ τᵢ, (out, in). Computed task by task so
    only one (out, out) product is alive at a time."""
    gradient = torch.zeros_like(merged)
    for task, weight in zip(tau, weights.tolist(), strict=True):
        if weight:
            gradient += (2.0 * weight) * (((merged - task) @ task.T) @ task)
    return gradient


def _normal_equations(tau: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """G = Σᵢ wᵢ τᵢᵀτᵢ (in, in) and B = Σᵢ wᵢ τᵢ τᵢᵀ τᵢ (out, in): ∇L = 2 (τ_m G − B)."""
    gram = torch.einsum("n,nij,nik->jk", weights, tau, tau)
    target = torch.einsum("n,nij->ij", weights, tau @ tau.transpose(1, 2) @ tau)
    return gram, target


def _gram_is_cheaper(tau: torch.Tensor) -> bool:
    """Whether a step costs less as τ_m G (2·out·in² flops) than task by task
    (4·n·out²·in): true for wide-output matrices such as an MLP's up projection."""
    n, out, columns = tau.shape
    return columns <= 2 * n * out


def solve_adam(tau: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """The paper's solver: Adam from Σᵢτᵢ for ``steps`` steps at learning rate ``lr``,
    with the exact gradient (no autograd graph: half the memory), in whichever of its two
    equal forms costs fewer flops for this shape. Deterministic: no randomness, and the
    same operations in the same order on every run."""
    weights = interference_weights(tau)
    normal = _normal_equations(tau, weights) if _gram_is_cheaper(tau) else None
    # The engine computes under inference mode; the optimiser needs ordinary tensors.
    with torch.inference_mode(False):
        merged = tau.sum(0).clone()
        optimizer = torch.optim.Adam([merged], lr=lr)
        for _ in range(steps):
            if normal is None:
                merged.grad = _gradient(merged, tau, weights)
            else:
                merged.grad = 2.0 * (merged @ normal[0] - normal[1])
            optimizer.step()
        return merged.detach().clone()


def solve_closed_form(tau: torch.Tensor) -> torch.Tensor:
    """The minimiser of L nearest to Σᵢτᵢ: τ₀ + (B − τ₀G) G⁺, G⁺ from an eigendecomposition
    of the (in, in) matrix G with eigenvalues below ``PINV_RCOND``·max dropped."""
    start = tau.sum(0)
    gram, target = _normal_equations(tau, interference_weights(tau))
    values, vectors = torch.linalg.eigh(gram)
    if float(values.max()) <= 0:
        return start
    keep = values > PINV_RCOND * values.max()
    basis = vectors[:, keep]
    inverse = basis / values[keep]  # columns qⱼ/λⱼ: G⁺ = inverse @ basisᵀ
    merged: torch.Tensor = start + ((target - start @ gram) @ inverse) @ basis.T
    return merged


@register(
    "wudi",
    family="interference",
    summary="Per linear layer, optimise the merged task vector so it disturbs each task's "
    "inputs (approximated by that task vector's own row subspace) as little as possible.",
    math="τ_m = argmin Σᵢ ‖(τ_m − τᵢ) τᵢᵀ‖²_F / ‖τᵢ‖²_F from τ_m = Στᵢ (Adam, or closed form "
    "τ₀ + (B − τ₀G)G⁺ with G = Σwᵢτᵢᵀτᵢ, B = Σwᵢτᵢτᵢᵀτᵢ); θ = θ_base + α τ_m",
    paper="Cheng et al., Whoever Started the Interference Should End It: Guiding Data-Free Model "
    "Merging via Task Vectors (WUDI merging), ICML 2025, arXiv:2503.08099",
    params=(
        Param(
            "alpha",
            "float",
            "Scale of the merged task vector (the paper uses 1: no rescaling).",
            default=1.0,
            low=0.0,
            ui_low=0.0,
            ui_high=2.0,
        ),
        Param(
            "solver",
            "choice",
            "adam: the paper's gradient descent; closed_form: the exact minimiser nearest the "
            "task-arithmetic start (one eigendecomposition of an in×in matrix per layer).",
            default="adam",
            choices=("adam", "closed_form"),
        ),
        Param(
            "steps",
            "int",
            "Adam steps per weight matrix (the paper's 300).",
            default=300,
            low=1,
            high=100000,
            ui_low=10,
            ui_high=2000,
        ),
        Param(
            "lr",
            "float",
            "Adam learning rate (the paper's 1e-5, for fine-tuning-sized task vectors; larger "
            "task vectors need a larger rate or the closed form).",
            default=1e-5,
            low=0.0,
            high=1.0,
            ui_low=0.0,
            ui_high=1e-3,
            step=1e-6,
        ),
    ),
    needs_base=True,
    min_models=1,
    notes="Non-matrix tensors (biases, norms) and embeddings / LM heads: θ_base + α·mean(τᵢ), "
    "as the paper's code. Computed in float32 (float64 when the compute dtype is) on the compute "
    "device. Deterministic: the same inputs give bit-identical output on the same device. "
    "Progress is per tensor; a cancel takes effect between tensors.",
)
def wudi(inputs: MergeInputs, *, alpha: float, solver: str, steps: int, lr: float) -> torch.Tensor:
    assert inputs.base is not None
    if not is_spectral_matrix(inputs.name, inputs.tensors[0]):
        return inputs.base + inputs.task_vectors().mean(0) * alpha
    tau = inputs.task_vectors().to(_work_dtype(inputs.tensors.dtype))
    merged = solve_closed_form(tau) if solver == "closed_form" else solve_adam(tau, int(steps), lr)
    return inputs.base + (merged * alpha).to(inputs.base.dtype)
