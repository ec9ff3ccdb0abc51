"""Low-rank factorisations for LoRA outputs: truncated SVDs of full matrices (exact or
randomised) and the SVD of a product of thin factors without forming it.

"Energy" is the fraction of a matrix's squared Frobenius norm that a factorisation
keeps. Every factorisation here is an orthogonal projection of the matrix onto its top
singular directions (randomised ones onto directions inside the sampled range), so
energy kept = Σ kept σ² / ‖M‖²_F = 1 − (relative error)².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Above this share of the smaller dimension a randomised SVD saves nothing.
_RANDOMISED_UP_TO = 0.25
_OVERSAMPLE = 8
_POWER_ITERATIONS = 2


@dataclass(frozen=True)
class LowRank:
    """``left @ right`` ≈ the matrix: left (m, k), right (k, n), float32.
    ``energy``: the share of ‖M‖²_F kept (1.0 for a zero matrix)."""

    left: torch.Tensor
    right: torch.Tensor
    energy: float

    @property
    def rank(self) -> int:
        return int(self.right.shape[0])

    @property
    def relative_error(self) -> float:
        """‖M − left·right‖_F / ‖M‖_F."""
        return float(max(0.0, 1.0 - self.energy) ** 0.5)


def _split(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int, total: float) -> LowRank:
    """Balanced factors U√S, √S Vᵀ (equal scales keep half-precision copies accurate)."""
    root = s[:rank].sqrt()
    kept = float((s[:rank].double() ** 2).sum())
    energy = 1.0 if total == 0 else min(1.0, kept / total)
    return LowRank((u[:, :rank] * root).contiguous(), (root[:, None] * vh[:rank]).contiguous(), energy)


def _energy_total(matrix: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(matrix, dtype=torch.float64) ** 2)


def truncated_svd(matrix: torch.Tensor, rank: int, *, generator_seed: int = 0) -> LowRank:
    """The best rank-``rank`` approximation of ``matrix`` (m, n): torch.svd_lowrank
    (randomised, a few power iterations) when the rank is small next to the matrix,
    a full SVD otherwise."""
    rank = max(0, min(rank, *matrix.shape))
    total = _energy_total(matrix)
    if rank == 0 or total == 0:
        return _empty(matrix, total)
    if rank + _OVERSAMPLE <= _RANDOMISED_UP_TO * min(matrix.shape):
        u, s, v = _randomised(matrix, rank + _OVERSAMPLE, generator_seed)
        return _split(u, s, v.T, rank, total)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return _split(u, s, vh, rank, total)


def svd_for_energy(matrix: torch.Tensor, energy: float, *, max_rank: int | None = None) -> LowRank:
    """The smallest rank whose factorisation keeps ``energy`` of ‖M‖²_F (capped at
    ``max_rank``). The spectrum is sampled with randomised SVDs of growing width and
    computed in full only when the rank needed is a large part of the matrix."""
    total = _energy_total(matrix)
    limit = min(matrix.shape) if max_rank is None else min(max_rank, *matrix.shape)
    if total == 0 or limit == 0:
        return _empty(matrix, total)
    width = min(32, limit)
    while width + _OVERSAMPLE <= _RANDOMISED_UP_TO * min(matrix.shape):
        u, s, v = _randomised(matrix, width + _OVERSAMPLE, 0)
        rank = _rank_reaching(s, energy * total)
        if rank is not None and rank <= width:
            return _split(u, s, v.T, min(rank, limit), total)
        if width >= limit:
            return _split(u, s, v.T, limit, total)
        width = min(limit, width * 2)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = _rank_reaching(s, energy * total) or len(s)
    return _split(u, s, vh, min(rank, limit), total)


def _randomised(
    matrix: torch.Tensor, width: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.svd_lowrank, seeded (it draws from the global generator, which is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(matrix, q=width, niter=_POWER_ITERATIONS)
    return u, s, v


def _rank_reaching(s: torch.Tensor, target: float) -> int | None:
    cumulative = torch.cumsum(s.double() ** 2, 0)
    reached = torch.nonzero(cumulative >= target * (1 - 1e-9))
    return int(reached[0]) + 1 if len(reached) else None


def product_svd(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of ``left @ right`` (left (m, R), right (R, n), R small) without forming the
    (m, n) product: QR of both factors and the SVD of an (R, R) core.
    Returns U (m, R), S (R,), Vh (R, n)."""
    q_left, r_left = torch.linalg.qr(left)
    q_right, r_right = torch.linalg.qr(right.T)
    u, s, vh = torch.linalg.svd(r_left @ r_right.T)
    return q_left @ u, s, vh @ q_right.T


def truncate_product(left: torch.Tensor, right: torch.Tensor, rank: int | None) -> LowRank:
    """``left @ right`` re-factorised at ``rank`` (None keeps every direction)."""
    u, s, vh = product_svd(left, right)
    total = float((s.double() ** 2).sum())
    return _split(u, s, vh, len(s) if rank is None else min(rank, len(s)), total)


def _empty(matrix: torch.Tensor, total: float) -> LowRank:
    rows, columns = matrix.shape
    empty = matrix.new_zeros
    return LowRank(empty((rows, 0)), empty((0, columns)), 1.0 if total == 0 else 0.0)
