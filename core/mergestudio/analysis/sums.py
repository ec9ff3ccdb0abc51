"""Sufficient statistics of task vectors: sums that add across chunks, tensors, layers
and module groups, so every reported number is exact at every scope (no averaged
averages), and the derived metrics computed from them.

Notation: ``n`` task vectors τ₁…τₙ (fine-tune minus base) over the same entries, θ the
base. "Kept" means an entry is among the top-``density`` magnitudes of its own task
vector; "surviving" means kept and non-zero (a zero has no sign to disagree with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mergestudio.analysis.histogram import HISTOGRAM_LENGTH

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass
class StatSums:
    """Additive statistics of ``n`` task vectors over some set of entries.

    Arrays are float64 or int64; shapes are given per field. ``a + b`` is the statistics
    of the union of two disjoint sets of entries.
    """

    numel: int  # entries per task vector
    base_sq: float  # Σ θ²
    gram: FloatArray  # (n, n) Σ τᵢτⱼ; its diagonal is Σ τᵢ²
    sums: FloatArray  # (n,) Σ τᵢ
    l1: FloatArray  # (n,) Σ |τᵢ|
    zeros: IntArray  # (n,) entries with τᵢ = 0 exactly
    histogram: IntArray  # (n, HISTOGRAM_LENGTH) counts of |τᵢ| per log bin (zeros excluded)
    kept: IntArray  # (n,) entries kept by magnitude trimming
    kept_l1: FloatArray  # (n,) Σ |τᵢ| over kept entries
    kept_sq: FloatArray  # (n,) Σ τᵢ² over kept entries
    pair_both: IntArray  # (n, n) entries where both τᵢ and τⱼ survive
    pair_disagree: IntArray  # (n, n) entries where both survive with opposite signs
    contested: int  # entries where at least two task vectors survive
    conflicts: int  # entries where surviving values include both signs
    trim_overlap: IntArray  # (n + 1,) entries kept (surviving) by exactly c task vectors
    tall_overlap: IntArray  # (n + 1,) entries important to exactly c tasks (TALL mask)

    @classmethod
    def zero(cls, n: int) -> StatSums:
        return cls(
            numel=0,
            base_sq=0.0,
            gram=np.zeros((n, n)),
            sums=np.zeros(n),
            l1=np.zeros(n),
            zeros=np.zeros(n, dtype=np.int64),
            histogram=np.zeros((n, HISTOGRAM_LENGTH), dtype=np.int64),
            kept=np.zeros(n, dtype=np.int64),
            kept_l1=np.zeros(n),
            kept_sq=np.zeros(n),
            pair_both=np.zeros((n, n), dtype=np.int64),
            pair_disagree=np.zeros((n, n), dtype=np.int64),
            contested=0,
            conflicts=0,
            trim_overlap=np.zeros(n + 1, dtype=np.int64),
            tall_overlap=np.zeros(n + 1, dtype=np.int64),
        )

    @property
    def n_models(self) -> int:
        return int(self.sums.shape[0])

    def __add__(self, other: StatSums) -> StatSums:
        values = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        return StatSums(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready lists and numbers (floats keep full precision)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatSums:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = data[f.name]
            if f.name in ("numel", "contested", "conflicts"):
                values[f.name] = int(raw)
            elif f.name == "base_sq":
                values[f.name] = float(raw)
            else:
                is_count = f.name in _COUNT_FIELDS
                values[f.name] = np.asarray(raw, dtype=np.int64 if is_count else np.float64)
        return cls(**values)


_COUNT_FIELDS = {"zeros", "histogram", "kept", "pair_both", "pair_disagree", "trim_overlap", "tall_overlap"}


def total(parts: list[StatSums], n: int) -> StatSums:
    """The sum of ``parts`` (the zero statistics of ``n`` models when empty)."""
    result = StatSums.zero(n)
    for part in parts:
        result = result + part
    return result


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _matrix(values: np.ndarray) -> list[list[float | None]]:
    """A square matrix as nested lists, NaN written as None (JSON has no NaN)."""
    return [[None if math.isnan(v) else float(v) for v in row] for row in values]


def _mean_off_diagonal(matrix: np.ndarray) -> float | None:
    n = matrix.shape[0]
    upper = matrix[np.triu_indices(n, k=1)]
    upper = upper[~np.isnan(upper)]
    return float(upper.mean()) if upper.size else None


def cosine_matrix(sums: StatSums) -> np.ndarray:
    """(n, n) cos(τᵢ, τⱼ); NaN where a task vector is zero."""
    norms = np.sqrt(np.diag(sums.gram))
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = sums.gram / np.outer(norms, norms)
    clipped: np.ndarray = np.clip(cosine, -1.0, 1.0)
    return clipped


def pearson_matrix(sums: StatSums) -> np.ndarray:
    """(n, n) Pearson correlation of the entries of τᵢ and τⱼ: the cosine of the
    mean-centred task vectors, from Σ τᵢτⱼ - Σ τᵢ Σ τⱼ / N."""
    if sums.numel == 0:
        return np.full(sums.gram.shape, np.nan)
    covariance = sums.gram - np.outer(sums.sums, sums.sums) / sums.numel
    scale = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        pearson = covariance / np.outer(scale, scale)
    clipped: np.ndarray = np.clip(pearson, -1.0, 1.0)
    return clipped


def distance_matrix(sums: StatSums) -> np.ndarray:
    """(n, n) Euclidean distance ‖τᵢ - τⱼ‖ = ‖θᵢ - θⱼ‖ between the fine-tunes."""
    squares = np.diag(sums.gram)
    squared = squares[:, None] + squares[None, :] - 2.0 * sums.gram
    return np.sqrt(np.clip(squared, 0.0, None))


def pair_conflict_matrix(sums: StatSums) -> np.ndarray:
    """(n, n) fraction of entries where both task vectors survive trimming with
    opposite signs, among entries where both survive; NaN when none survive together."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = sums.pair_disagree / sums.pair_both
    return np.where(sums.pair_both > 0, rates, np.nan)


def _overlap(counts: IntArray, numel: int) -> dict[str, Any]:
    """TALL/Consensus categories: entries important to no task, to one, to two or more."""
    total_count = max(numel, 1)
    return {
        "counts": [int(c) for c in counts],
        "none": float(counts[0]) / total_count if numel else None,
        "one": float(counts[1]) / total_count if numel and counts.size > 1 else None,
        "two_or_more": float(counts[2:].sum()) / total_count if numel else None,
    }


def summarize(sums: StatSums, density: float) -> dict[str, Any]:
    """The derived metrics of one scope (tensor, layer, group or whole model) as plain
    JSON-ready data. Per-model lists follow the order of the models; matrices are
    (n, n) nested lists. The schema is documented in docs/analysis.md."""
    squares = np.diag(sums.gram)
    norms = np.sqrt(squares)
    base_norm = math.sqrt(sums.base_sq)
    cosine = cosine_matrix(sums)
    n = sums.n_models
    return {
        "numel": sums.numel,
        "base_norm": base_norm,
        "norm": norms.tolist(),
        "relative_norm": [_ratio(float(v), base_norm) for v in norms],
        "unchanged_fraction": [_ratio(float(z), sums.numel) for z in sums.zeros],
        "histogram": {"counts": sums.histogram.tolist(), "zeros": sums.zeros.tolist()},
        "cosine": {"matrix": _matrix(cosine), "overall": _mean_off_diagonal(cosine)},
        "pearson": {
            "matrix": _matrix(pearson_matrix(sums)),
            "overall": _mean_off_diagonal(pearson_matrix(sums)),
        },
        "euclidean": {"matrix": _matrix(distance_matrix(sums))},
        "sign_conflict_rate": {
            "overall": _ratio(sums.conflicts, sums.contested),
            "pairs": _matrix(pair_conflict_matrix(sums)),
            "of_all_entries": _ratio(sums.conflicts, sums.numel),
            "contested_fraction": _ratio(sums.contested, sums.numel),
        },
        "trim": {
            "kept_fraction": [_ratio(float(k), sums.numel) for k in sums.kept],
            "kept_l1_fraction": [
                _ratio(float(k), float(t)) for k, t in zip(sums.kept_l1, sums.l1, strict=True)
            ],
            "kept_energy_fraction": [
                _ratio(float(k), float(t)) for k, t in zip(sums.kept_sq, squares, strict=True)
            ],
            "kept_l2_fraction": [
                math.sqrt(r) if r is not None else None
                for r in (_ratio(float(k), float(t)) for k, t in zip(sums.kept_sq, squares, strict=True))
            ],
        },
        "dare": dare_expectation(density, n),
        "mask_overlap": {
            "trim": _overlap(sums.trim_overlap, sums.numel),
            "tall": _overlap(sums.tall_overlap, sums.numel),
        },
    }


def dare_expectation(density: float, n: int) -> dict[str, Any]:
    """What DARE keeps in expectation when it keeps each entry with probability
    p = density (and rescales survivors by 1/p): a fraction p of the L1 mass and of the
    energy (Σ τ²) before rescaling, so ‖·‖₂ shrinks by √p; after rescaling the L1 mass is
    unbiased, the energy grows by 1/p, and the expected error is ‖τ‖·√((1-p)/p)."""
    p = float(density)
    kept_l2 = math.sqrt(p)
    return {
        "kept_l1_fraction": [p] * n,
        "kept_energy_fraction": [p] * n,
        "kept_l2_fraction": [kept_l2] * n,
        "rescaled_energy_ratio": 1.0 / p if p > 0 else None,
        "relative_error": math.sqrt((1.0 - p) / p) if p > 0 else None,
    }
