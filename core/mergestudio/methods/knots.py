"""KnOTS: merging in a basis shared by every task's update.

The task matrices are decomposed together, [τ₁ … τ_T] = U S [V₁ … V_T]ᵀ, so that
τᵢ = U S Vᵢᵀ: every task is a set of coordinates Vᵢᵀ in one shared basis U S. The
coordinates are merged with TIES or DARE-TIES and mapped back. The paper aligns LoRA
updates this way; here the same function merges full task matrices, and adapter outputs
(``lora.merge``) run it on the adapters' factors without forming any full matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mergestudio.methods.consensus import DENSITY, LAMBDA, WEIGHT, SparsifySettings, merge_task_vectors
from mergestudio.methods.registry import MergeInputs, Param, register

SPARSIFICATION = Param(
    "sparsification",
    "choice",
    "How each task's coordinates are thinned before sign election: magnitude (KnOTS-TIES) "
    "or random with l1 rescaling (KnOTS-DARE).",
    default="magnitude",
    choices=("magnitude", "random"),
)
NORMALIZE = Param(
    "normalize", "bool", "Divide by the sum of the weights that contributed to each coordinate.", default=True
)


def numerical_rank(s: torch.Tensor, rows: int, columns: int, eps: float) -> int:
    """Singular values above σ_max·max(rows, columns)·ε (torch.linalg.matrix_rank's
    tolerance, ε of the dtype the data was rounded to): directions below it are rounding
    noise, and their coordinates must not take part in the merge (TIES would count them
    when it trims by magnitude)."""
    if len(s) == 0 or float(s[0]) == 0:
        return 0
    tolerance = float(s[0]) * max(rows, columns) * eps
    return int((s > tolerance).sum())


def merge_in_shared_basis(
    name: str,
    u: torch.Tensor,
    s: torch.Tensor,
    vh: torch.Tensor,
    n_models: int,
    *,
    generator: torch.Generator | None,
    weight: Sequence[float],
    density: Sequence[float],
    sparsification: str,
    normalize: bool,
    scale: float,
    present: Sequence[bool] | None = None,
    eps: float = float(torch.finfo(torch.float32).eps),
) -> tuple[torch.Tensor, torch.Tensor]:
    """The merged update as factors: left (m, r) = U S, right (r, k) = merged coordinates.

    ``u`` (m, R), ``s`` (R,), ``vh`` (R, n·k): the SVD of the tasks' matrices joined
    along their columns (task i owns columns i·k … (i+1)·k − 1). ``present``: False for
    a task whose update is zero; its coordinates are set to exactly zero (rounding noise
    would otherwise vote in the sign election and count in the normalisation).
    """
    columns = vh.shape[1] // n_models
    rank = numerical_rank(s, u.shape[0], vh.shape[1], eps)
    if rank == 0:  # every task update is zero
        return u[:, :0], vh.new_zeros((0, columns))
    # The coordinates are merged in float32 whatever the SVD's precision, so the full and
    # the factored route draw the same DARE masks (the CPU kernels run on float32).
    u, s, vh = u[:, :rank].float(), s[:rank].float(), vh[:rank].float()
    blocks = vh.reshape(rank, n_models, columns).permute(1, 0, 2).contiguous()  # (n, r, k): Vᵢᵀ
    for index, is_present in enumerate(present or ()):
        if not is_present:
            blocks[index] = 0
    settings = _sparsify_settings(density, sparsification)
    coordinates = MergeInputs(name, blocks, torch.zeros_like(blocks[0]), generator)
    merged = merge_task_vectors(
        coordinates, weights=weight, sparsify=settings, consensus=True, normalize=normalize, scale=scale
    )
    return u * s, merged


@register(
    "knots",
    family="adapter space",
    summary="Decompose the task updates together into one shared basis, merge each task's "
    "coordinates there with TIES or DARE, map back (made for LoRA adapters).",
    math="[τ₁…τ_T] = U S [V₁…V_T]ᵀ (numerical rank); V = TIES/DARE(V₁ᵀ…V_Tᵀ; wᵢ, densityᵢ); "
    "θ = θ_base + λ U S V",
    paper="Stoica et al., Model merging with SVD to tie the KnOTS, ICLR 2025, arXiv:2410.19735",
    params=(
        WEIGHT,
        DENSITY,
        SPARSIFICATION,
        NORMALIZE,
        LAMBDA,
    ),
    needs_base=True,
    stochastic=True,
    notes="Matrices are joined along their second dimension, as stored. Vectors (norms, biases) "
    "have no basis to share: they take the same TIES/DARE merge of their task vectors. For "
    "adapter outputs the SVD comes from the LoRA factors (rank ≤ Σ ranks), exactly.",
)
def knots(
    inputs: MergeInputs,
    *,
    weight: Sequence[float],
    density: Sequence[float],
    sparsification: str,
    normalize: bool,
    **keywords: float,
) -> torch.Tensor:
    assert inputs.base is not None
    scale = float(keywords.get("lambda", 1.0))
    tau = inputs.task_vectors().float()
    if tau.dim() != 3:
        plain = MergeInputs(inputs.name, tau, torch.zeros_like(tau[0]), inputs.generator)
        settings = _sparsify_settings(density, sparsification)
        merged = merge_task_vectors(
            plain, weights=weight, sparsify=settings, consensus=True, normalize=normalize, scale=scale
        )
        return inputs.base + merged.to(inputs.base.dtype)
    n, rows, columns = tau.shape
    # float64, so the SVD adds no noise of its own to the inputs' rounding
    joined = tau.double().permute(1, 0, 2).reshape(rows, n * columns)
    u, s, vh = torch.linalg.svd(joined, full_matrices=False)
    left, right = merge_in_shared_basis(
        inputs.name,
        u,
        s,
        vh,
        n,
        generator=inputs.generator,
        weight=weight,
        density=density,
        sparsification=sparsification,
        normalize=normalize,
        scale=scale,
        present=[bool(task.any()) for task in tau],
        eps=float(torch.finfo(inputs.tensors.dtype).eps),
    )
    return inputs.base + (left @ right).to(inputs.base.dtype)


def _sparsify_settings(density: Sequence[float], sparsification: str) -> SparsifySettings:
    magnitude = sparsification == "magnitude"
    return SparsifySettings(
        kind="magnitude" if magnitude else "random",
        densities=tuple(float(d) for d in density),
        rescale=None if magnitude else "l1",
    )
