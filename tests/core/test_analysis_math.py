"""Analytic tests of the analysis kernel and reductions: constructed task vectors with a
known cosine, a known sign-conflict rate, known kept mass and known rank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mergestudio.analysis.histogram import HISTOGRAM_LENGTH, histogram_edges
from mergestudio.analysis.kernel import TensorAnalyzer, kept_count
from mergestudio.analysis.spectra import effective_rank, plan_spectra, singular_values, svd_cost
from mergestudio.analysis.sums import StatSums, pearson_matrix, summarize, total


def _analyze(base, deltas, density, *, chunk=1 << 18, tall_lambda=0.4, rows=False):
    tensors = [base + d for d in deltas]
    analyzer = TensorAnalyzer(len(tensors), tall_lambda=tall_lambda, chunk_elements=chunk)
    return analyzer.analyze(base, tensors, density, rows=rows)


def _orthonormal(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """(count, size) float64 rows, orthonormal."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(size, count, generator=generator, dtype=torch.float64))
    return q.T.contiguous()


def test_known_cosine_across_tensors_is_exact_not_averaged() -> None:
    """τ₁ = u, τ₂ = cos φ·u + sin φ·v spread over two tensors of very different scales:
    the overall cosine is cos φ, which an average of per-tensor cosines would miss."""
    u, v = _orthonormal(2, 3000)
    angle = 1.0
    t1, t2 = u, math.cos(angle) * u + math.sin(angle) * v
    parts = []
    for lo, hi, scale in ((0, 1000, 100.0), (1000, 3000, 0.01)):
        base = torch.zeros(hi - lo)
        deltas = [(t1[lo:hi] * scale).float(), (t2[lo:hi] * scale).float()]
        parts.append(_analyze(base, deltas, 0.5).sums)
    scaled1 = torch.cat([t1[:1000] * 100, t1[1000:] * 0.01])
    scaled2 = torch.cat([t2[:1000] * 100, t2[1000:] * 0.01])
    expected = float(scaled1 @ scaled2 / (scaled1.norm() * scaled2.norm()))
    overall = summarize(total(parts, 2), 0.5)
    assert overall["cosine"]["overall"] == pytest.approx(expected, abs=1e-5)
    one_tensor = _analyze(torch.zeros(3000), [t1.float(), t2.float()], 0.5).sums
    assert summarize(one_tensor, 0.5)["cosine"]["overall"] == pytest.approx(math.cos(angle), abs=1e-5)


def test_norms_relative_norm_distance_and_pearson() -> None:
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(40, 25, generator=generator)
    deltas = [torch.randn(40, 25, generator=generator) * s + m for s, m in ((0.1, 0.0), (0.2, 0.05))]
    result = _analyze(base, deltas, 0.3, chunk=100)
    summary = summarize(result.sums, 0.3)
    flat = [d.flatten().double() for d in deltas]
    assert summary["norm"][1] == pytest.approx(float(flat[1].norm()), rel=1e-5)
    assert summary["relative_norm"][0] == pytest.approx(
        float(flat[0].norm() / base.double().norm()), rel=1e-5
    )
    assert summary["euclidean"]["matrix"][0][1] == pytest.approx(float((flat[0] - flat[1]).norm()), rel=1e-4)
    expected = np.corrcoef(flat[0].numpy(), flat[1].numpy())[0, 1]
    assert pearson_matrix(result.sums)[0, 1] == pytest.approx(expected, abs=1e-5)


def test_known_sign_conflict_rate_after_trimming() -> None:
    """τ₁ᵢ = i + 1 and τ₂ᵢ = ±(i + 1): at density 0.5 both keep entries 500..999, so the
    conflicts are the flipped entries among those, and flips below 500 don't count."""
    size = 1000
    magnitudes = torch.arange(1, size + 1, dtype=torch.float32)
    flipped = torch.zeros(size, dtype=torch.bool)
    flipped[100:300] = True  # trimmed away: no conflict
    flipped[600:750] = True  # 150 conflicts among 500 contested entries
    second = torch.where(flipped, -magnitudes, magnitudes)
    result = _analyze(torch.zeros(size), [magnitudes, second], 0.5, chunk=128)
    sums = result.sums
    assert sums.contested == 500 and sums.conflicts == 150
    summary = summarize(sums, 0.5)
    assert summary["sign_conflict_rate"]["overall"] == pytest.approx(0.3)
    assert summary["sign_conflict_rate"]["pairs"][0][1] == pytest.approx(0.3)
    assert summary["sign_conflict_rate"]["of_all_entries"] == pytest.approx(0.15)
    # Without trimming every flipped entry conflicts.
    untrimmed = _analyze(torch.zeros(size), [magnitudes, second], 1.0).sums
    assert untrimmed.conflicts == 350 and untrimmed.contested == size


def test_pair_conflicts_with_three_models() -> None:
    size = 400
    ones = torch.ones(size)
    second = ones.clone()
    second[:100] = -1  # disagrees with the first on 100 entries
    third = ones.clone()
    third[:40] = -1  # disagrees with the first on 40, with the second on 60
    sums = _analyze(torch.zeros(size), [ones, second, third], 1.0).sums
    rates = summarize(sums, 1.0)["sign_conflict_rate"]
    assert rates["pairs"][0][1] == pytest.approx(100 / size)
    assert rates["pairs"][0][2] == pytest.approx(40 / size)
    assert rates["pairs"][1][2] == pytest.approx(60 / size)
    assert rates["overall"] == pytest.approx(100 / size)  # an entry conflicts if any pair does


def test_ties_at_the_threshold_are_kept_in_flat_order() -> None:
    """All magnitudes equal: trimming keeps exactly the first k entries, as a stable topk
    would, so conflicts placed after them never count."""
    size = 1000
    first = torch.ones(size)
    second = torch.ones(size)
    second[500:] = -1
    for chunk in (64, 1000, 1 << 18):
        sums = _analyze(torch.zeros(size), [first, second], 0.5, chunk=chunk).sums
        assert list(sums.kept) == [500, 500]
        assert sums.conflicts == 0 and sums.contested == 500


def test_kept_mass_of_magnitude_trimming_and_dare() -> None:
    size = 100
    values = torch.arange(1, size + 1, dtype=torch.float32)
    result = _analyze(torch.zeros(size), [values], 0.3)
    trim = summarize(result.sums, 0.3)["trim"]
    kept = torch.arange(71, 101, dtype=torch.float64)
    all_values = values.double()
    assert trim["kept_l1_fraction"][0] == pytest.approx(float(kept.sum() / all_values.sum()))
    assert trim["kept_energy_fraction"][0] == pytest.approx(float((kept**2).sum() / (all_values**2).sum()))
    assert trim["kept_l2_fraction"][0] == pytest.approx(math.sqrt(trim["kept_energy_fraction"][0]))
    assert result.thresholds == [71.0]
    dare = summarize(result.sums, 0.3)["dare"]
    assert dare["kept_l1_fraction"] == [0.3] and dare["kept_energy_fraction"] == [0.3]
    assert dare["relative_error"] == pytest.approx(math.sqrt(0.7 / 0.3))


def test_mask_overlap_categories() -> None:
    """Top-half masks: τ₁ large on 0..499, τ₂ large on 250..749: 250 entries important to
    both, 500 to one, 250 to none."""
    size = 1000
    first = torch.full((size,), 0.1)
    first[:500] = 1.0
    second = torch.full((size,), 0.1)
    second[250:750] = 1.0
    overlap = summarize(_analyze(torch.zeros(size), [first, second], 0.5).sums, 0.5)["mask_overlap"]
    assert overlap["trim"]["counts"] == [250, 500, 250]
    assert (overlap["trim"]["none"], overlap["trim"]["one"], overlap["trim"]["two_or_more"]) == (
        0.25,
        0.5,
        0.25,
    )
    # TALL with λ = 1: τₜ is important where |τₜ| > |τ_other|: 500 entries for one task each.
    tall = summarize(_analyze(torch.zeros(size), [first, second], 0.5, tall_lambda=1.0).sums, 0.5)
    assert tall["mask_overlap"]["tall"]["counts"] == [500, 500, 0]


def test_histogram_bins_and_zeros() -> None:
    edges = histogram_edges()
    assert len(edges) == HISTOGRAM_LENGTH - 1 and edges == sorted(edges)
    values = torch.tensor([0.0, 0.0, 0.5, 0.6, 1e-20, 1000.0, -0.5])
    sums = _analyze(torch.zeros(7), [values], 1.0).sums
    counts = sums.histogram[0]
    assert int(sums.zeros[0]) == 2 and int(counts.sum()) == 5
    bin_of_half = 1 + edges.index(0.5)
    assert edges[bin_of_half] == 0.625
    assert counts[bin_of_half] == 3  # 0.5, -0.5 (magnitudes) and 0.6, in [0.5, 0.625)
    assert counts[0] == 1 and counts[-1] == 1  # 1e-20 below the window, 1000 above


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 13),
    n_models=st.integers(1, 3),
    density=st.floats(0.0, 1.0),
    chunk=st.integers(1, 40),
    seed=st.integers(0, 1000),
    quantize=st.booleans(),
)
def test_matches_brute_force(rows, cols, n_models, density, chunk, seed, quantize) -> None:
    """Whatever the chunking, trimming keeps exactly the stable top-k of each task vector
    and every count matches a direct computation."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(rows, cols, generator=generator)
    deltas = [torch.randn(rows, cols, generator=generator) for _ in range(n_models)]
    if quantize:  # many exact ties and zeros, like bf16 fine-tunes
        deltas = [torch.round(d * 2) / 2 for d in deltas]
    result = _analyze(base, deltas, density, chunk=chunk, rows=True)
    flat = torch.stack([((base + d) - base).flatten() for d in deltas])
    k = kept_count(density, flat.shape[1])
    kept = torch.zeros_like(flat, dtype=torch.bool)
    for i, row in enumerate(flat.abs()):
        order = sorted(range(row.numel()), key=lambda j: (-float(row[j]), j))[:k]
        kept[i, order] = True
    positive, negative = (kept & (flat > 0)).sum(0), (kept & (flat < 0)).sum(0)
    sums = result.sums
    assert list(sums.kept) == [k] * n_models
    assert sums.conflicts == int(((positive > 0) & (negative > 0)).sum())
    assert sums.contested == int(((positive + negative) >= 2).sum())
    assert result.row_conflicts is not None and int(result.row_conflicts.sum()) == sums.conflicts
    assert np.allclose(sums.kept_l1, (flat.abs() * kept).sum(1).double().numpy(), rtol=1e-5, atol=1e-6)
    assert np.allclose(sums.gram, (flat.double() @ flat.double().T).numpy(), rtol=1e-5, atol=1e-5)
    assert list(sums.zeros) == [int((row == 0).sum()) for row in flat]


def test_stat_sums_add_and_round_trip() -> None:
    generator = torch.Generator().manual_seed(1)
    a = _analyze(torch.zeros(50), [torch.randn(50, generator=generator) for _ in range(2)], 0.2).sums
    b = _analyze(torch.zeros(30), [torch.randn(30, generator=generator) for _ in range(2)], 0.2).sums
    both = a + b
    assert both.numel == 80 and both.contested == a.contested + b.contested
    again = StatSums.from_dict(both.to_dict())
    assert np.array_equal(again.histogram, both.histogram) and np.allclose(again.gram, both.gram)


@pytest.mark.parametrize(("values", "rank"), [([3.0, 2.0, 1.0], 3), ([4.0, 1.0], 2), ([10.0, 1.0, 1.0], 1)])
def test_known_rank(values: list[float], rank: int) -> None:
    """τ = U diag(σ) Vᵀ with chosen σ: its spectrum is σ and its 95 % energy rank known."""
    u = _orthonormal(len(values), 60, seed=1).T
    v = _orthonormal(len(values), 40, seed=2).T
    task = (u * torch.tensor(values, dtype=torch.float64)) @ v.T
    spectrum = singular_values(task.float())
    assert np.allclose(spectrum[: len(values)], values, rtol=1e-4)
    assert np.all(spectrum[len(values) :] < 1e-4)
    assert effective_rank(spectrum) == rank
    assert effective_rank(np.zeros(5)) == 0


def test_spectra_plan_samples_deterministically_within_budget() -> None:
    shapes = {"model.embed_tokens.weight": (1000, 64)}
    for layer in range(10):
        shapes[f"model.layers.{layer}.self_attn.q_proj.weight"] = (64, 64)
        shapes[f"model.layers.{layer}.mlp.up_proj.weight"] = (256, 64)
        shapes[f"model.layers.{layer}.input_layernorm.weight"] = (64,)
    every = plan_spectra(shapes, "auto", budget=1e12)
    assert every.mode == "all" and len(every.matrices) == 21
    budget = 3 * 2 * (svd_cost((64, 64)) + svd_cost((256, 64)))
    sample = plan_spectra(shapes, "auto", budget=budget, n_models=2)
    assert sample.mode == "sample" and sample.sampled_layers == (0, 5, 9)
    assert len(sample.matrices) == 6 and "layers 5, 0, 9" in sample.rule
    assert plan_spectra(shapes, "auto", budget=budget, n_models=2) == sample
    assert plan_spectra(shapes, "none").matrices == ()


def test_kept_curve_estimates_trimming_from_the_histogram() -> None:
    from mergestudio.analysis.histogram import kept_curve

    values = torch.randn(20000, generator=torch.Generator().manual_seed(5))
    result = _analyze(torch.zeros(20000), [values], 0.2)
    curve = kept_curve(result.sums.histogram[0], int(result.sums.zeros[0]))
    assert np.all(np.diff(curve["density"]) <= 0) and curve["density"][0] == pytest.approx(1.0)
    threshold = np.interp(0.2, curve["density"][::-1], curve["thresholds"][::-1])
    assert threshold == pytest.approx(result.thresholds[0], rel=0.1)
    exact = summarize(result.sums, 0.2)["trim"]["kept_energy_fraction"][0]
    estimated = np.interp(0.2, curve["density"][::-1], curve["energy"][::-1])
    assert estimated == pytest.approx(exact, abs=0.05)


def _exact_density_for_l1(values: np.ndarray, share: float) -> float:
    """Brute force: sort |τ| descending and count entries until ``share`` of the L1 mass."""
    magnitudes = np.sort(np.abs(values))[::-1]
    cumulative = np.cumsum(magnitudes) / magnitudes.sum()
    return float((np.searchsorted(cumulative, share) + 1) / values.size)


@pytest.mark.parametrize("share", [0.5, 0.9])
def test_suggested_density_keeps_the_asked_share_of_l1(share: float) -> None:
    from mergestudio.analysis.suggest import suggest_density

    generator = torch.Generator().manual_seed(11)
    heavy = torch.randn(30000, generator=generator) ** 3  # heavy-tailed: mass in few entries
    gaussian = torch.randn(30000, generator=generator)
    result = _analyze(torch.zeros(30000), [heavy, gaussian], 0.2)
    suggestion = suggest_density(result.sums.histogram, result.sums.zeros, share)
    assert suggestion is not None
    exact = [_exact_density_for_l1(v.numpy(), share) for v in (heavy, gaussian)]
    # The histogram is read a quarter octave at a time: within a few points of brute force.
    for estimated, truth in zip(suggestion.per_model, exact, strict=True):
        assert estimated == pytest.approx(truth, abs=0.04)
    # The heavy-tailed vector needs far fewer entries; the suggestion serves the other one.
    assert suggestion.per_model[0] < suggestion.per_model[1]
    assert suggestion.density == pytest.approx(max(exact), abs=0.05)
    assert suggestion.density >= max(suggestion.per_model)  # rounded up, never down
    assert "gaussian needs the most" in suggestion.reason(["heavy", "gaussian"])


def test_no_suggestion_without_mass_and_a_clear_error_for_a_bad_share() -> None:
    from mergestudio.analysis.suggest import density_for_kept_l1, suggest_density

    counts = np.zeros((2, HISTOGRAM_LENGTH), dtype=np.int64)
    assert suggest_density(counts, [10, 10]) is None
    with pytest.raises(ValueError, match="kept_l1"):
        density_for_kept_l1(counts[0], 10, 1.5)
