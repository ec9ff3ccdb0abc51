"""Fixed log-magnitude bins read straight from float32 bit patterns.

For a non-negative float32, the integer formed by its bits grows with its value, and
``bits >> 21`` is its biased exponent followed by its two leading mantissa bits. So
``bits >> 21`` is a histogram key with four bins per octave whose edges are exact floats
``2**e * (1, 1.25, 1.5, 1.75)``: fixed, the same for every tensor (histograms add), and
costing one shift per entry instead of a logarithm.

The magnitude-selection code works on finer keys (``bits >> FINE_SHIFT``, 32 bins per
octave) and folds them into these reporting bins.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FINE_SHIFT = 18  # bits >> 18: exponent + 5 mantissa bits, 32 bins per octave
FINE_BINS = 1 << (31 - FINE_SHIFT)  # sign bit cleared, so keys lie in [0, 8192)
_REPORT_SHIFT = 21  # exponent + 2 mantissa bits, 4 bins per octave
_FOLD = 1 << (_REPORT_SHIFT - FINE_SHIFT)
BINS_PER_OCTAVE = 4
# The window the report keeps: magnitudes in [2**-32, 2**8). Task vectors of real models
# sit well inside it; what falls outside lands in the under/overflow bins.
LOWEST_EXPONENT = -32
HIGHEST_EXPONENT = 8
_FIRST_KEY = (LOWEST_EXPONENT + 127) * BINS_PER_OCTAVE
_LAST_KEY = (HIGHEST_EXPONENT + 127) * BINS_PER_OCTAVE
WINDOW_BINS = _LAST_KEY - _FIRST_KEY
# Reported counts: [below the window (non-zero), WINDOW_BINS bins, at or above the window].
HISTOGRAM_LENGTH = WINDOW_BINS + 2


def histogram_edges() -> list[float]:
    """The ``WINDOW_BINS + 1`` bin edges of the reported histogram, ascending."""
    edges = []
    for key in range(_FIRST_KEY, _LAST_KEY + 1):
        exponent, quarter = divmod(key, BINS_PER_OCTAVE)
        edges.append(2.0 ** (exponent - 127) * (1.0 + quarter / BINS_PER_OCTAVE))
    return edges


def fold_fine_counts(fine: NDArray[np.int64], zeros: NDArray[np.int64]) -> NDArray[np.int64]:
    """Fine counts (n, FINE_BINS) -> reported counts (n, HISTOGRAM_LENGTH).

    ``zeros`` (n,) are exact zeros, which sit in fine key 0; they are taken out of the
    underflow bin (reported separately as ``zeros``).
    """
    coarse = fine.reshape(fine.shape[0], -1, _FOLD).sum(axis=2)
    out = np.zeros((fine.shape[0], HISTOGRAM_LENGTH), dtype=np.int64)
    out[:, 0] = coarse[:, :_FIRST_KEY].sum(axis=1) - zeros
    out[:, 1:-1] = coarse[:, _FIRST_KEY:_LAST_KEY]
    out[:, -1] = coarse[:, _LAST_KEY:].sum(axis=1)
    return out


def kept_curve(counts: NDArray[np.int64], zeros: int) -> dict[str, NDArray[np.float64]]:
    """What magnitude trimming keeps at each threshold ``histogram_edges()[i]``, read off one
    task vector's reported histogram ``counts`` (HISTOGRAM_LENGTH,) and its zero count:
    the fraction of entries with |τ| ≥ the edge (the density that threshold means) and the
    fractions of L1 mass and energy (Σ τ²) they carry. Mass uses each bin's geometric
    midpoint, so it is an estimate within a quarter octave; the analysis's own trimming
    figures are exact. Arrays have WINDOW_BINS + 1 entries, one per edge."""
    edges = np.asarray(histogram_edges())
    values = np.empty(HISTOGRAM_LENGTH)
    values[0] = edges[0] / 2
    values[1:-1] = np.sqrt(edges[:-1] * edges[1:])
    values[-1] = edges[-1] * 2
    weights = np.asarray(counts, dtype=np.float64)
    numel = float(weights.sum()) + zeros
    # Entries at or above edge i are those in reported bins i + 1 onwards.
    entries = np.cumsum(weights[::-1])[::-1][1:]
    l1 = np.cumsum((weights * values)[::-1])[::-1][1:]
    energy = np.cumsum((weights * values**2)[::-1])[::-1][1:]

    def share(part: NDArray[np.float64], whole: float) -> NDArray[np.float64]:
        return part / whole if whole > 0 else np.zeros_like(part)

    total_l1 = float((weights * values).sum())
    total_energy = float((weights * values**2).sum())
    return {
        "thresholds": edges,
        "density": share(entries, numel),
        "l1": share(l1, total_l1),
        "energy": share(energy, total_energy),
    }
