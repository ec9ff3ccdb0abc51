"""Data-free merging in the spectrum of each weight matrix: TSV-Merge, Iso-C, Iso-CTS,
STAR and DRM.

These methods are defined for 2-D weight matrices (out_features, in_features). Every other
tensor, 1-D biases and norms included, and 2-D embeddings/LM heads (whose first dimension
is the vocabulary, not a feature space, and whose SVD would dominate the merge time) gets
the methods' own fallback: the mean task vector, scaled like the matrices,
θ = θ_base + α · mean(τᵢ). SVDs run in float32 (float64 when the compute dtype is), on
the compute device.
"""

from __future__ import annotations

import torch

from mergestudio.methods.registry import MergeInputs, Param, register
from mergestudio.methods.sparse import TopKMask, top_k_rules

EMBEDDING_MARKERS = ("embed", "lm_head", "wte", "wpe", "output.weight")

ALPHA = Param(
    "alpha", "float", "Scale of the merged task vector.", default=1.0, low=0.0, ui_low=0.0, ui_high=3.0
)
_FALLBACK_NOTE = "Non-matrix tensors (biases, norms) and embeddings / LM heads: θ_base + α·mean(τᵢ)."


def is_spectral_matrix(name: str, tensor: torch.Tensor) -> bool:
    """True for 2-D weights the spectral methods decompose; False for vectors and
    embeddings, which take the mean-task-vector fallback."""
    return tensor.dim() == 2 and min(tensor.shape) > 1 and not any(m in name for m in EMBEDDING_MARKERS)


def _svd_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fallback(inputs: MergeInputs, alpha: float) -> torch.Tensor:
    assert inputs.base is not None
    tau = inputs.task_vectors()
    return inputs.base + tau.mean(0) * alpha


def _task_matrices(inputs: MergeInputs) -> torch.Tensor:
    """(n, m, k) task vectors in the SVD dtype."""
    return inputs.task_vectors().to(_svd_dtype(inputs.tensors.dtype))


def _polar(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (U Vᵀ of its SVD): TSV's whitening."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    polar: torch.Tensor = u @ vh
    return polar


def _finish(inputs: MergeInputs, delta: torch.Tensor, alpha: float) -> torch.Tensor:
    assert inputs.base is not None
    return inputs.base + (delta * alpha).to(inputs.base.dtype)


# ---- TSV-Merge -------------------------------------------------------------------------


@register(
    "tsv",
    family="spectral",
    summary="Keep each task vector's top singular directions, decorrelate the directions of all "
    "tasks (whitening), and rebuild the sum.",
    math="τᵢ ≈ Uᵢ Sᵢ Vᵢᵀ (top k = fraction·rank); U = polar[U₁…U_T], V = polar[V₁…V_T]; "
    "θ = θ_base + α U diag(S₁…S_T) Vᵀ",
    paper="Gargiulo et al., Task Singular Vectors: Reducing Task Interference in Model Merging, "
    "CVPR 2025, arXiv:2412.00081",
    params=(
        ALPHA,
        Param(
            "rank_fraction",
            "float",
            "Fraction of each task's singular directions kept; 0 means 1/number of models (the paper's).",
            default=0.0,
            low=0.0,
            high=1.0,
        ),
    ),
    needs_base=True,
    min_models=1,
    aliases=("tsv_merge",),
    notes=_FALLBACK_NOTE,
)
def tsv(inputs: MergeInputs, *, alpha: float, rank_fraction: float) -> torch.Tensor:
    if not is_spectral_matrix(inputs.name, inputs.tensors[0]):
        return _fallback(inputs, alpha)
    tau = _task_matrices(inputs)
    n = inputs.n_models
    rank = min(tau.shape[1:])
    fraction = rank_fraction if rank_fraction > 0 else 1.0 / n
    keep = max(1, min(rank, int(fraction * rank)))
    us, ss, vs = [], [], []
    for task in tau:
        u, s, vh = torch.linalg.svd(task, full_matrices=False)
        us.append(u[:, :keep])
        ss.append(s[:keep])
        vs.append(vh[:keep].T)
    u_all, s_all, v_all = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)
    if s_all.abs().max() == 0:
        return _finish(inputs, torch.zeros_like(tau[0]), alpha)
    delta = _polar(u_all) @ torch.diag(s_all) @ _polar(v_all).T
    return _finish(inputs, delta, alpha)


# ---- Iso-C and Iso-CTS -----------------------------------------------------------------


@register(
    "iso_c",
    family="spectral",
    summary="Sum the task vectors and flatten the sum's spectrum: every singular value becomes "
    "their mean (isotropic merging in the common subspace).",
    math="Σᵢ τᵢ = U S Vᵀ; θ = θ_base + α · mean(S) · U Vᵀ",
    paper="Marczak et al., No Task Left Behind: Isotropic Model Merging with Common and "
    "Task-Specific Subspaces, ICML 2025, arXiv:2502.04959",
    params=(ALPHA,),
    needs_base=True,
    min_models=1,
    notes=_FALLBACK_NOTE,
)
def iso_c(inputs: MergeInputs, *, alpha: float) -> torch.Tensor:
    if not is_spectral_matrix(inputs.name, inputs.tensors[0]):
        return _fallback(inputs, alpha)
    total = _task_matrices(inputs).sum(0)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    return _finish(inputs, s.mean() * (u @ vh), alpha)


@register(
    "iso_cts",
    family="spectral",
    summary="Iso-C with room for each task: the sum's top directions plus each task's own top "
    "directions outside them, orthogonalised, with an isotropic spectrum.",
    math="U_c = top-k of Σᵢτᵢ (k = common_fraction·r); Uᵢ' = top (r−k)/T of (I − U_cU_cᵀ)τᵢ; "
    "U, V = polar[U_c, U₁'…]; θ = θ_base + α · mean(S) · U Vᵀ",
    paper="Marczak et al., No Task Left Behind: Isotropic Model Merging with Common and "
    "Task-Specific Subspaces, ICML 2025, arXiv:2502.04959",
    params=(
        ALPHA,
        Param(
            "common_fraction",
            "float",
            "Share of the rank given to the common subspace.",
            default=0.8,
            low=0.0,
            high=1.0,
        ),
    ),
    needs_base=True,
    min_models=1,
    notes=_FALLBACK_NOTE + " The isotropic value is the mean of all selected singular values.",
)
def iso_cts(inputs: MergeInputs, *, alpha: float, common_fraction: float) -> torch.Tensor:
    if not is_spectral_matrix(inputs.name, inputs.tensors[0]):
        return _fallback(inputs, alpha)
    tau = _task_matrices(inputs)
    n = inputs.n_models
    rank = min(tau.shape[1:])
    common = max(1, min(rank, int(common_fraction * rank)))
    per_task = (rank - common) // n
    u, s, vh = torch.linalg.svd(tau.sum(0), full_matrices=False)
    us, vs, ss = [u[:, :common]], [vh[:common].T], [s[:common]]
    if per_task > 0:
        projector = u[:, :common]
        for task in tau:
            residual = task - projector @ (projector.T @ task)
            tu, ts, tvh = torch.linalg.svd(residual, full_matrices=False)
            us.append(tu[:, :per_task])
            vs.append(tvh[:per_task].T)
            ss.append(ts[:per_task])
    spectrum = torch.cat(ss)
    if spectrum.abs().max() == 0:
        return _finish(inputs, torch.zeros_like(tau[0]), alpha)
    delta = spectrum.mean() * (_polar(torch.cat(us, 1)) @ _polar(torch.cat(vs, 1)).T)
    return _finish(inputs, delta, alpha)


# ---- STAR ------------------------------------------------------------------------------


@register(
    "star",
    family="spectral",
    summary="Truncate each task vector's small singular components (keep eta of the spectrum's "
    "mass), rescale the rest to the original nuclear norm, then average.",
    math="τᵢ = Uᵢ Sᵢ Vᵢᵀ; rᵢ = min r with Σ_{j≤r} sⱼ ≥ eta·Σⱼ sⱼ; "
    "τ̃ᵢ = Σ_{j≤rᵢ} sⱼ·(Σⱼ sⱼ / Σ_{j≤rᵢ} sⱼ) uⱼvⱼᵀ; θ = θ_base + α · mean(τ̃ᵢ)",
    paper="Lee et al., STAR: Spectral Truncation and Rescale for Model Merging, NAACL 2025, arXiv:2502.10339",
    params=(
        ALPHA,
        Param(
            "eta",
            "float",
            "Fraction of the singular-value mass (nuclear norm) each truncated task vector keeps.",
            default=0.4,
            low=0.0,
            high=1.0,
        ),
    ),
    needs_base=True,
    min_models=1,
    notes=_FALLBACK_NOTE,
)
def star(inputs: MergeInputs, *, alpha: float, eta: float) -> torch.Tensor:
    if not is_spectral_matrix(inputs.name, inputs.tensors[0]):
        return _fallback(inputs, alpha)
    tau = _task_matrices(inputs)
    merged = torch.zeros_like(tau[0])
    for task in tau:
        u, s, vh = torch.linalg.svd(task, full_matrices=False)
        total = float(s.sum())
        if total == 0:
            continue
        cumulative = torch.cumsum(s, 0)
        keep = int(torch.searchsorted(cumulative, torch.tensor(eta * total, dtype=s.dtype))) + 1
        keep = min(keep, s.numel())
        kept = s[:keep] * (total / float(cumulative[keep - 1]))
        merged += (u[:, :keep] * kept) @ vh[:keep]
    return _finish(inputs, merged / inputs.n_models, alpha)


# ---- DRM -------------------------------------------------------------------------------


@register(
    "drm",
    family="spectral",
    summary="Decompose the task vectors together (one SVD of their concatenation), renormalise "
    "each task's coordinates in the shared basis, merge them TIES-style there, map back.",
    math="[τ₁…τ_T] = U S [V₁…V_T]ᵀ; Xᵢ = Vᵢᵀ rows renormalised (nᵢⱼ = ‖Vᵢ[:, j]‖); "
    "X = TIES(Xᵢ, density); θ = θ_base + α U S diag(meanᵢ nᵢⱼ) X",
    paper="Chaichana et al., Decom-Renorm-Merge: Model Merging on the Right Space Improves "
    "Multitasking, arXiv:2505.23117",
    params=(
        ALPHA,
        Param(
            "density",
            "float",
            "Fraction of each task's joint-space coordinates kept before sign election.",
            default=0.2,
            low=0.0,
            high=1.0,
        ),
    ),
    needs_base=True,
    min_models=1,
    notes=_FALLBACK_NOTE + " Concatenation is along the input dimension (each task's columns).",
)
def drm(inputs: MergeInputs, *, alpha: float, density: float) -> torch.Tensor:
    if not is_spectral_matrix(inputs.name, inputs.tensors[0]):
        return _fallback(inputs, alpha)
    tau = _task_matrices(inputs)
    n, rows, columns = tau.shape
    joined = tau.permute(1, 0, 2).reshape(rows, n * columns)
    u, s, vh = torch.linalg.svd(joined, full_matrices=False)
    blocks = vh.reshape(-1, n, columns).permute(1, 0, 2)  # (n, r, columns): Vᵢᵀ
    norms = torch.linalg.vector_norm(blocks, dim=2, keepdim=True)  # (n, r, 1)
    coordinates = blocks / norms.clamp(min=1e-12)
    merged = _ties_merge(coordinates.reshape(n, -1), density).reshape(blocks.shape[1:])
    scale = s.unsqueeze(1) * norms.mean(0)
    return _finish(inputs, u @ (scale * merged), alpha)


def _ties_merge(flat: torch.Tensor, density: float) -> torch.Tensor:
    """TIES on (n, numel) vectors with unit weights: top-density magnitudes, sign of the
    sum, mean of the agreeing entries."""
    n, numel = flat.shape
    k = numel if density >= 1 else int(density * numel)
    keep = TopKMask(top_k_rules(flat, None, [k] * n))(flat.abs(), 0)
    trimmed = flat * keep
    positive = trimmed.sum(0) >= 0
    agree = torch.where(positive, trimmed > 0, trimmed < 0)
    count = agree.sum(0).clamp(min=1)
    return (trimmed * agree).sum(0) / count
