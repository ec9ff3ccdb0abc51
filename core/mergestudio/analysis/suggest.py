"""A density to start from, read off an analysis: the smallest trimming density at
which every task vector keeps a chosen share (90 % by default) of its L1 mass.

Magnitude trimming (TIES, Breadcrumbs, DELLA) drops the smallest entries. Task vectors
are heavy-tailed, so a small fraction of entries carries most of the mass: keeping 90 %
of the mass often needs far less than 90 % of the entries, and the density that does it
is where trimming stops removing what the fine-tune learned and starts removing noise.
The figure is estimated from the analysis's log-magnitude histograms (a quarter octave
per bin), so it needs no second pass over the weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from mergestudio.analysis.histogram import kept_curve

DEFAULT_KEPT_L1 = 0.9
DENSITY_STEP = 0.01  # suggestions are rounded up to this step, so the target still holds


@dataclass(frozen=True)
class DensitySuggestion:
    """``density``: the suggestion (the largest per-model figure, so every task vector
    keeps ``kept_l1`` of its mass); ``per_model``: each task vector's own figure (None for
    a task vector with no mass); ``kept_l1``: the target share."""

    density: float
    per_model: tuple[float | None, ...]
    kept_l1: float

    def reason(self, names: Sequence[str]) -> str:
        """One sentence a person can act on."""
        known = [(n, d) for n, d in zip(names, self.per_model, strict=False) if d is not None]
        tightest = max(known, key=lambda pair: pair[1])[0] if known else "every model"
        return (
            f"Density {self.density:.2f} keeps at least {self.kept_l1:.0%} of each task vector's "
            f"L1 mass ({tightest} needs the most); lower drops more of what the fine-tunes learned, "
            "higher keeps more noise that conflicts in the merge."
        )


def density_for_kept_l1(counts: NDArray[np.int64], zeros: int, kept_l1: float = DEFAULT_KEPT_L1) -> float | None:
    """The smallest density (fraction of entries kept by magnitude) at which one task
    vector keeps ``kept_l1`` of its L1 mass, from its reported histogram ``counts``
    (HISTOGRAM_LENGTH,) int64 and its count of exact zeros. None when it has no mass."""
    if not 0.0 < kept_l1 <= 1.0:
        raise ValueError(f"kept_l1 must be in (0, 1], got {kept_l1}")
    curve = kept_curve(counts, zeros)
    if not curve["l1"].any():
        return None
    # Both curves fall as the threshold rises; reversed, they rise together.
    return float(np.interp(kept_l1, curve["l1"][::-1], curve["density"][::-1]))


def suggest_density(
    counts: NDArray[np.int64] | Sequence[Sequence[int]],
    zeros: Sequence[int] | NDArray[np.int64],
    kept_l1: float = DEFAULT_KEPT_L1,
) -> DensitySuggestion | None:
    """The density at which every task vector keeps ``kept_l1`` of its L1 mass, from the
    per-model histograms of an analysis scope (``summary["histogram"]``: ``counts`` (n,
    HISTOGRAM_LENGTH), ``zeros`` (n,)). Rounded up to ``DENSITY_STEP``; None when no task
    vector has any mass (the fine-tunes equal the base)."""
    table = np.asarray(counts, dtype=np.int64)
    per_model = tuple(
        density_for_kept_l1(row, int(z), kept_l1) for row, z in zip(table, zeros, strict=True)
    )
    known = [d for d in per_model if d is not None]
    if not known:
        return None
    density = min(1.0, max(DENSITY_STEP, math.ceil(max(known) / DENSITY_STEP - 1e-9) * DENSITY_STEP))
    return DensitySuggestion(round(density, 2), per_model, kept_l1)
