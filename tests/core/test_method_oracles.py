"""One non-degenerate oracle per spectral / mask method, from the paper's own definition:
a float64 NumPy reimplementation on small random matrices (no torch, no code shared with
the engine), or a property the paper proves on hand-built tasks.

The engine runs on float64 inputs here, so its SVDs run in float64 and agreement is
expected to ~1e-10. Singular vectors are only defined up to sign; every formula below is
invariant to those signs, so both sides agree whatever LAPACK picks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mergestudio.methods import MergeInputs, get_method

MATRIX = "model.layers.0.mlp.up_proj.weight"
ROWS, COLUMNS, TASKS = 9, 7, 3
TOLERANCE = 1e-9


def engine(method: str, base: np.ndarray, tasks: list[np.ndarray], **params: float) -> np.ndarray:
    """The registered method on float64 tensors, with its declared defaults for the rest."""
    spec = get_method(method)
    full = {p.name: p.default for p in spec.params}
    full.update(params)
    stacked = torch.from_numpy(np.stack(tasks))
    merged = spec.function(MergeInputs(MATRIX, stacked, torch.from_numpy(base)), **full)
    result: np.ndarray = merged.numpy()
    return result


def random_family(seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A base and TASKS fine-tunes with full-rank, non-identical task vectors."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(ROWS, COLUMNS))
    return base, [base + rng.normal(size=(ROWS, COLUMNS)) * (1.0 + i) for i in range(TASKS)]


def polar(matrix: np.ndarray) -> np.ndarray:
    """argmin ‖Q − M‖_F over Q with orthonormal columns (orthogonal Procrustes): P Qᵀ."""
    p, _, qt = np.linalg.svd(matrix, full_matrices=False)
    result: np.ndarray = p @ qt
    return result


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    result: np.ndarray = e / e.sum()
    return result


# ---- TSV-Merge (Gargiulo et al., CVPR 2025, Alg. 1) -------------------------------------


def tsv_reference(base: np.ndarray, tasks: list[np.ndarray], alpha: float, keep: int) -> np.ndarray:
    """Low-rank approximation of each task matrix, concatenate the singular vectors,
    decorrelate U and V by Procrustes, rebuild with the concatenated singular values."""
    us, ss, vs = [], [], []
    for theta in tasks:
        u, s, vt = np.linalg.svd(theta - base, full_matrices=False)
        us.append(u[:, :keep])
        ss.append(s[:keep])
        vs.append(vt[:keep].T)
    u_hat, v_hat = polar(np.hstack(us)), polar(np.hstack(vs))
    result: np.ndarray = base + alpha * u_hat @ np.diag(np.concatenate(ss)) @ v_hat.T
    return result


def test_tsv_matches_the_papers_algorithm() -> None:
    base, tasks = random_family(1)
    # rank 7, three tasks: the paper's default keeps 1/T of the rank, int(7/3) = 2 each.
    expected = tsv_reference(base, tasks, alpha=0.7, keep=2)
    np.testing.assert_allclose(engine("tsv", base, tasks, alpha=0.7), expected, atol=TOLERANCE)
    expected = tsv_reference(base, tasks, alpha=1.0, keep=1)
    np.testing.assert_allclose(engine("tsv", base, tasks, rank_fraction=0.2), expected, atol=TOLERANCE)


# ---- Iso-C / Iso-CTS (Marczak et al., ICML 2025, Eq. 6 and Alg. 1) -------------------------


def test_iso_c_matches_the_paper_and_its_spectrum_is_flat() -> None:
    base, tasks = random_family(2)
    total = sum(t - base for t in tasks)
    u, s, vt = np.linalg.svd(total, full_matrices=False)
    expected = base + 0.5 * s.mean() * u @ vt
    merged = engine("iso_c", base, tasks, alpha=0.5)
    np.testing.assert_allclose(merged, expected, atol=TOLERANCE)
    # The property the method is named for: every singular value of the merged task
    # vector equals the mean of the task-arithmetic spectrum, same singular subspaces.
    spectrum = np.linalg.svd((merged - base) / 0.5, compute_uv=False)
    np.testing.assert_allclose(spectrum, np.full_like(spectrum, s.mean()), atol=1e-9)


def iso_cts_reference(
    base: np.ndarray, tasks: list[np.ndarray], common_fraction: float
) -> np.ndarray:
    taus = [t - base for t in tasks]
    rank = min(base.shape)
    common = int(common_fraction * rank)
    per_task = (rank - common) // len(taus)
    u, s, vt = np.linalg.svd(sum(taus), full_matrices=False)
    us, vs, ss = [u[:, :common]], [vt[:common].T], [s[:common]]
    projector = u[:, :common] @ u[:, :common].T
    for tau in taus:
        tu, ts, tvt = np.linalg.svd(tau - projector @ tau, full_matrices=False)
        us.append(tu[:, :per_task])
        vs.append(tvt[:per_task].T)
        ss.append(ts[:per_task])
    sigma = np.concatenate(ss).mean()
    result: np.ndarray = base + sigma * polar(np.hstack(us)) @ polar(np.hstack(vs)).T
    return result


def test_iso_cts_matches_the_paper_with_task_specific_subspaces() -> None:
    base, tasks = random_family(3)
    # rank 7: common int(0.5·7) = 3 directions, each task (7 − 3) // 3 = 1 of its own.
    expected = iso_cts_reference(base, tasks, common_fraction=0.5)
    np.testing.assert_allclose(engine("iso_cts", base, tasks, common_fraction=0.5), expected, atol=TOLERANCE)
    # …which is not Iso-C: the task-specific directions replace the sum's weakest ones.
    assert not np.allclose(expected, engine("iso_c", base, tasks), atol=1e-3)


# ---- STAR (Lee et al., NAACL 2025, Eq. 2-4) ---------------------------------------------


def test_star_matches_the_paper_and_keeps_each_nuclear_norm() -> None:
    base, tasks = random_family(5)
    eta = 0.6
    truncated = []
    for theta in tasks:
        u, s, vt = np.linalg.svd(theta - base, full_matrices=False)
        # the smallest r whose top singular values hold eta of the nuclear norm
        r = int(np.argmax(np.cumsum(s) >= eta * s.sum())) + 1
        assert 1 < r < len(s)  # a real truncation, not all or one
        kept = s[:r] * s.sum() / s[:r].sum()
        truncated.append((u[:, :r] * kept) @ vt[:r])
        # Eq. 4's point: rescaling restores the task vector's nuclear norm.
        assert np.linalg.svd(truncated[-1], compute_uv=False).sum() == pytest.approx(s.sum())
    expected = base + 1.5 * np.mean(truncated, axis=0)
    np.testing.assert_allclose(engine("star", base, tasks, eta=eta, alpha=1.5), expected, atol=TOLERANCE)


# ---- DRM (Chaichana et al., arXiv:2505.23117, Alg. 1) -----------------------------------


def ties_reference(rows: list[np.ndarray], density: float) -> np.ndarray:
    """TIES with unit weights on flat vectors: keep each vector's top-k |x|, elect the sign
    of the sum, average the kept entries that agree with it (0 where none do)."""
    k = int(density * rows[0].size)
    trimmed = []
    for row in rows:
        keep = np.zeros(row.size, dtype=bool)
        keep[np.argsort(-np.abs(row), kind="stable")[:k]] = True
        trimmed.append(np.where(keep, row, 0.0))
    stack = np.stack(trimmed)
    sign = np.where(stack.sum(0) >= 0, 1.0, -1.0)
    agree = (np.sign(stack) == sign) & (stack != 0)
    count = np.maximum(agree.sum(0), 1)
    result: np.ndarray = (stack * agree).sum(0) / count
    return result


def drm_reference(base: np.ndarray, tasks: list[np.ndarray], density: float, alpha: float) -> np.ndarray:
    """Decompose the column-concatenated task matrices jointly, renormalise each task's
    rows of Vᵀ to unit length, TIES-merge them there, scale back by S and the mean norm."""
    taus = [t - base for t in tasks]
    u, s, vt = np.linalg.svd(np.hstack(taus), full_matrices=False)
    blocks = np.split(vt, len(taus), axis=1)  # Vᵢᵀ: (r, columns) each
    norms = [np.linalg.norm(b, axis=1) for b in blocks]  # (r,) each
    units = [b / n[:, None] for b, n in zip(blocks, norms, strict=True)]
    merged = ties_reference([x.ravel() for x in units], density).reshape(blocks[0].shape)
    scale = s * np.mean(norms, axis=0)
    result: np.ndarray = base + alpha * u @ (scale[:, None] * merged)
    return result


@pytest.mark.parametrize("density", [0.3, 0.7])
def test_drm_matches_the_papers_algorithm_on_different_tasks(density: float) -> None:
    base, tasks = random_family(6)
    expected = drm_reference(base, tasks, density, alpha=0.8)
    merged = engine("drm", base, tasks, density=density, alpha=0.8)
    np.testing.assert_allclose(merged, expected, atol=TOLERANCE)
    assert not np.allclose(merged, base + np.mean([t - base for t in tasks], axis=0), atol=1e-3)


# ---- TALL-mask consensus (Wang et al., ICML 2024, Eq. 3 and 5) ----------------------------


def test_tall_consensus_matches_the_paper() -> None:
    base, tasks = random_family(7)
    taus = [t - base for t in tasks]
    multi_task = sum(taus)
    masks = [np.abs(tau) >= 0.5 * np.abs(multi_task - tau) for tau in taus]
    votes = np.sum(masks, axis=0)
    assert 0 < (votes >= 2).mean() < 1  # some entries agreed on, some not
    expected = base + 0.9 * multi_task * (votes >= 2)
    merged = engine("tall_consensus", base, tasks, mask_lambda=0.5, min_agreement=2, alpha=0.9)
    np.testing.assert_allclose(merged, expected, atol=TOLERANCE)


# ---- PCB (Du et al., NeurIPS 2024, Eq. 1-5) ----------------------------------------------


def test_pcb_matches_the_paper() -> None:
    base, tasks = random_family(8)
    taus = [(t - base).ravel() for t in tasks]
    n = len(taus)

    def unit(x: np.ndarray) -> np.ndarray:
        result: np.ndarray = x / np.linalg.norm(x)
        return result

    scores = []
    for tau_i in taus:
        intra = softmax(n * unit(tau_i * tau_i))  # importance within the task
        inter = sum(softmax(unit(tau_i * tau_j)) for tau_j in taus)  # agreement with the others
        scores.append(intra * inter)
    k = int(0.4 * taus[0].size)
    kept = []
    for score in scores:
        mask = np.zeros(score.size)
        mask[np.argsort(-score, kind="stable")[:k]] = 1.0
        kept.append(score * mask)
    divisor = np.sum(kept, axis=0)
    merged_tau = np.sum([t * b for t, b in zip(taus, kept, strict=True)], axis=0) / np.where(
        divisor == 0, 1.0, divisor
    )
    expected = base + 1.2 * merged_tau.reshape(base.shape)
    np.testing.assert_allclose(engine("pcb", base, tasks, density=0.4, weight=1.2), expected, atol=TOLERANCE)


# ---- DARE / DELLA without sign election: the rescale makes the merge unbiased -------------


@pytest.mark.parametrize("method", ["dare_linear", "della_linear"])
def test_random_drop_with_inverse_density_rescale_is_unbiased(method: str) -> None:
    """DARE (Yu et al., Thm. 1) and DELLA rescale each survivor by 1/p so that E[τ̃] = τ:
    regressing the merged task vector on Σ wᵢτᵢ gives slope 1, and each entry changes
    unless all three models drop it (probability 1 − (1 − p)³ at density p = 0.5)."""
    generator = torch.Generator().manual_seed(11)
    base = torch.randn(200, 150, generator=generator)
    taus = [torch.randn(200, 150, generator=generator) for _ in range(3)]
    weights = (0.5, 1.0, 1.5)
    spec = get_method(method)
    params = {p.name: ((p.default,) * 3 if p.per_model else p.default) for p in spec.params if not p.required}
    params.update(weight=weights, density=(0.5,) * 3, rescale_norm="inverse_density")
    if "epsilon" in params:
        params["epsilon"] = (0.2,) * 3
    stacked = torch.stack([base + tau for tau in taus])
    draw = torch.Generator().manual_seed(3)
    merged = spec.function(MergeInputs(MATRIX, stacked, base, draw), **params) - base
    expected = sum(w * tau for w, tau in zip(weights, taus, strict=True))
    slope = float((merged * expected).sum() / (expected * expected).sum())
    assert slope == pytest.approx(1.0, abs=0.03)
    changed = float((merged != 0).float().mean())
    assert changed == pytest.approx(1 - 0.5**3, abs=4 * (0.875 * 0.125 / merged.numel()) ** 0.5)
