"""Sparsifying task vectors fast: exact top-k by magnitude without a sort, DARE's random
drop, and DELLA's rank-dependent drop.

mergekit finds each task vector's top-k with a full ``argsort``: tens of nanoseconds per
entry, most of a TIES merge. Here a threshold is found by selection instead: a sample of
the magnitudes brackets the k-th largest value, one streaming pass counts the entries
above the bracket and collects the few inside it, and a partial selection over those
gives the exact threshold; an exact count fix-up keeps precisely k entries when values tie
(ties go to the earlier positions). Every pass walks the task vectors in chunks of
``CHUNK`` entries per model so the working set stays in cache, and task vectors are
recomputed per chunk (input minus base) rather than materialised.

Tensors here are flat: ``inputs`` (n_models, numel) and ``base`` (numel,), any float dtype.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

# A torch tensor, or on the CPU fast path the numpy view of one.
ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)

# Entries per model per chunk: three models' float32 task vectors plus two temporaries of
# this size fit in a 2-4 MB cache.
CHUNK = 1 << 16
# Magnitudes sampled to bracket a threshold; the bracket's width follows from the sample's
# binomial error, so a larger sample means fewer entries to select among afterwards.
_SAMPLE = 1 << 15
# Tensors up to this size are selected directly: sampling would not save anything.
_DIRECT_LIMIT = 1 << 17
# DARE/DELLA draw keep decisions as 15-bit integers (four per 64-bit draw), so a keep
# probability is resolved to 1/32768.
RANDOM_BITS = 15
RANDOM_SCALE = 1 << RANDOM_BITS


def chunk_bounds(numel: int, chunk: int = CHUNK) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive chunks covering ``range(numel)``."""
    for start in range(0, numel, chunk):
        yield start, min(numel, start + chunk)


def task_vector_chunk(inputs: torch.Tensor, base: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(n, stop-start): inputs[:, start:stop] - base[start:stop], a new tensor."""
    return inputs[:, start:stop] - base[start:stop]


# ---- exact top-k by selection ----------------------------------------------------------


@dataclass(frozen=True)
class TopK:
    """Keeps exactly ``k`` entries of a magnitude vector: every entry above
    ``threshold``, and of the entries equal to it the first ``ties`` in flat order."""

    k: int
    threshold: float
    ties: int
    all_ties: bool  # every entry equal to the threshold is kept (no budget to track)

    @staticmethod
    def keep_none() -> TopK:
        return TopK(0, math.inf, 0, True)

    @staticmethod
    def keep_all(numel: int) -> TopK:
        return TopK(numel, -math.inf, 0, True)


class TopKMask:
    """Applies a list of TopK rules (one per model) to consecutive chunks, tracking how
    many tied entries each model may still keep. Chunks must come in flat order; a
    chunk starting at 0 begins a new pass. Works on torch tensors and, for the CPU
    fast path, on numpy arrays (it uses only operators both share)."""

    def __init__(self, rules: list[TopK]) -> None:
        self.rules = rules
        self.budget = [rule.ties for rule in rules]

    def __call__(self, magnitudes: ArrayT, start: int) -> ArrayT:
        """(n, L) magnitudes of the chunk at flat offset ``start`` -> (n, L) bool keep mask."""
        if start == 0:
            self.budget = [rule.ties for rule in self.rules]
        rows = []
        for i, rule in enumerate(self.rules):
            row = magnitudes[i]
            if rule.all_ties:
                rows.append(row >= rule.threshold)
                continue
            keep = row > rule.threshold
            if self.budget[i] > 0:
                equal = row == rule.threshold
                count = int(equal.sum())
                if count <= self.budget[i]:
                    keep |= equal
                    self.budget[i] -= count
                elif count:
                    # Only the first ``budget`` tied entries (in flat order) are kept.
                    keep |= equal & (equal.cumsum(0) <= self.budget[i])
                    self.budget[i] = 0
            rows.append(keep)
        if isinstance(magnitudes, np.ndarray):
            return np.stack(rows)
        return torch.stack(rows)


def top_k_rules(inputs: torch.Tensor, base: torch.Tensor | None, ks: list[int]) -> list[TopK]:
    """One exact TopK rule per model for |inputs[i] - base| (or |inputs[i]| without a
    base), keeping ``ks[i]`` entries. ``inputs`` (n, numel), ``base`` (numel,) or None."""
    n, numel = inputs.shape
    rules: list[TopK | None] = [None] * n
    todo = []
    for i, k in enumerate(ks):
        if k <= 0:
            rules[i] = TopK.keep_none()
        elif k >= numel:
            rules[i] = TopK.keep_all(numel)
        else:
            todo.append(i)
    if todo and numel <= _DIRECT_LIMIT:
        for i in todo:
            magnitudes = _magnitudes(inputs[i : i + 1], base, 0, numel)[0]
            rules[i] = _rule_from_candidates(magnitudes, ks[i], 0)
    elif todo:
        for i, rule in zip(todo, _bracketed_rules(inputs, base, todo, [ks[i] for i in todo]), strict=True):
            rules[i] = rule
    return [rule for rule in rules if rule is not None]


def _magnitudes(inputs: torch.Tensor, base: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    chunk = inputs[:, start:stop]
    return (chunk - base[start:stop]).abs_() if base is not None else chunk.abs()


def _kth_largest(values: torch.Tensor, k: int) -> float:
    """The k-th largest entry (1-based) of a 1-D tensor, by partial selection."""
    position = values.numel() - k
    if values.device.type == "cpu":
        # numpy's introselect is several times faster than torch.kthvalue on CPU.
        array = values.float().numpy() if values.dtype != torch.float32 else values.numpy()
        return float(np.partition(array, position)[position])
    return float(torch.kthvalue(values.float(), position + 1).values)


def _rule_from_candidates(candidates: torch.Tensor, k_in_candidates: int, above: int) -> TopK:
    """Rule keeping ``above`` entries known to exceed every candidate plus the
    ``k_in_candidates`` largest candidates."""
    threshold = _kth_largest(candidates, k_in_candidates)
    greater = int(torch.count_nonzero(candidates > threshold))
    equal = int(torch.count_nonzero(candidates == threshold))
    ties = k_in_candidates - greater
    return TopK(above + k_in_candidates, threshold, ties, ties == equal)


def _bracketed_rules(
    inputs: torch.Tensor, base: torch.Tensor | None, models: list[int], ks: list[int]
) -> list[TopK]:
    """Exact rules through a sampled bracket [low, high] around each k-th largest value."""
    numel = inputs.shape[1]
    # Index the (small) sample by model, never the whole stacked tensor (a copy).
    sample_magnitudes = _sample_magnitudes(inputs, base)[models]
    lows, highs = [], []
    for row, k in zip(sample_magnitudes, ks, strict=True):
        low, high = _bracket(row, k / numel)
        lows.append(low)
        highs.append(high)
    high_col = torch.tensor(highs, dtype=inputs.dtype, device=inputs.device).unsqueeze(1)
    #  low <= m <= high  as  |m - centre| <= half-width: two operations instead of three.
    # Magnitudes are ≥ 0 and finite, so the open ends become 0 and the dtype's maximum.
    largest = torch.finfo(inputs.dtype).max
    bounds = [(max(lo, 0.0), min(hi, largest)) for lo, hi in zip(lows, highs, strict=True)]
    centre = [lo / 2 + hi / 2 for lo, hi in bounds]
    half = [hi / 2 - lo / 2 for lo, hi in bounds]
    centre_col = torch.tensor(centre, dtype=inputs.dtype, device=inputs.device).unsqueeze(1)
    half_col = torch.tensor(half, dtype=inputs.dtype, device=inputs.device).unsqueeze(1)
    # Where the bracket is a single value (heavily tied magnitudes, common for task
    # vectors of bf16 checkpoints) its entries need only be counted, not collected.
    point = [lo == hi for lo, hi in zip(lows, highs, strict=True)]
    selected = inputs[models] if len(models) != inputs.shape[0] else inputs
    above, equal, bands = _band_pass(selected, base, high_col, centre_col, half_col, point)
    rules = []
    for j, k in enumerate(ks):
        count_above = above[j]
        count_band = equal[j]
        if not count_above < k <= count_above + count_band:
            # The sample missed (vanishingly rare): select over the whole vector.
            full = _magnitudes(selected[j : j + 1], base, 0, numel)[0]
            rules.append(_rule_from_candidates(full, k, 0))
        elif point[j]:
            ties = k - count_above
            rules.append(TopK(k, lows[j], ties, ties == count_band))
        else:
            rules.append(_rule_from_candidates(bands[j], k - count_above, count_above))
    return rules


def _band_pass(
    inputs: torch.Tensor,
    base: torch.Tensor | None,
    high_col: torch.Tensor,
    centre_col: torch.Tensor,
    half_col: torch.Tensor,
    point: list[bool],
) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """One streaming pass: per model, how many magnitudes exceed the bracket, how many
    fall in it, and (unless the bracket is a point) the values in it."""
    n, numel = inputs.shape
    if inputs.device.type == "cpu" and inputs.dtype == torch.float32:
        return _band_pass_numpy(inputs, base, high_col, centre_col, half_col, point)
    above = torch.zeros(n, dtype=torch.int64, device=inputs.device)
    equal = torch.zeros(n, dtype=torch.int64, device=inputs.device)
    parts: list[list[torch.Tensor]] = [[] for _ in range(n)]
    for start, stop in chunk_bounds(numel):
        magnitudes = _magnitudes(inputs, base, start, stop)
        above += torch.count_nonzero(magnitudes > high_col, dim=1)
        in_band = (magnitudes - centre_col).abs_() <= half_col
        equal += torch.count_nonzero(in_band, dim=1)
        for j in range(n):
            if not point[j]:
                parts[j].append(torch.masked_select(magnitudes[j], in_band[j]))
    bands = [torch.cat(p) if p else torch.empty(0, device=inputs.device) for p in parts]
    return above.tolist(), equal.tolist(), bands


def _band_pass_numpy(
    inputs: torch.Tensor,
    base: torch.Tensor | None,
    high_col: torch.Tensor,
    centre_col: torch.Tensor,
    half_col: torch.Tensor,
    point: list[bool],
) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """``_band_pass`` on the CPU through numpy, whose comparisons and reductions on small
    arrays run several times faster than torch's, into buffers reused across chunks."""
    x = inputs.numpy()
    b = base.numpy() if base is not None else None
    high, centre, half = high_col.numpy(), centre_col.numpy(), half_col.numpy()
    n, numel = x.shape
    magnitudes_buffer = np.empty((n, min(CHUNK, numel)), dtype=x.dtype)
    scratch_buffer = np.empty_like(magnitudes_buffer)
    above = np.zeros(n, dtype=np.int64)
    equal = np.zeros(n, dtype=np.int64)
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for start, stop in chunk_bounds(numel):
        magnitudes = magnitudes_buffer[:, : stop - start]
        scratch = scratch_buffer[:, : stop - start]
        if b is not None:
            np.subtract(x[:, start:stop], b[start:stop], out=magnitudes)
            np.abs(magnitudes, out=magnitudes)
        else:
            np.abs(x[:, start:stop], out=magnitudes)
        above += np.count_nonzero(magnitudes > high, axis=1)
        np.subtract(magnitudes, centre, out=scratch)
        np.abs(scratch, out=scratch)
        in_band = scratch <= half
        equal += np.count_nonzero(in_band, axis=1)
        for j in range(n):
            if not point[j]:
                parts[j].append(magnitudes[j][in_band[j]])
    bands = [torch.from_numpy(np.concatenate(p)) if p else torch.empty(0) for p in parts]
    return above.tolist(), equal.tolist(), bands


def _sample_magnitudes(inputs: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    """(n, _SAMPLE) magnitudes at positions drawn by a fixed-seed generator (the result
    does not depend on them: they only make the bracket tight), sorted descending."""
    numel = inputs.shape[1]
    generator = torch.Generator(device="cpu").manual_seed(numel)
    positions = torch.randint(numel, (_SAMPLE,), generator=generator).to(inputs.device)
    sample = inputs[:, positions]
    if base is not None:
        sample = sample - base[positions]
    return sample.abs_().sort(dim=1, descending=True).values


def _bracket(sorted_sample: torch.Tensor, fraction: float) -> tuple[float, float]:
    """Values that bracket the ``fraction`` quantile from the top with overwhelming
    probability: ±6 standard deviations of the sample quantile, plus slack."""
    m = sorted_sample.numel()
    centre = fraction * m
    margin = 6.0 * math.sqrt(m * fraction * (1 - fraction)) + 16
    top = int(centre - margin)
    bottom = int(centre + margin)
    high = math.inf if top < 0 else float(sorted_sample[top])
    low = -math.inf if bottom >= m else float(sorted_sample[bottom])
    return low, high


# ---- random keep masks (DARE, DELLA) ---------------------------------------------------


def random_words(count: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``count`` uniform integers in [0, 2**15), four per 64-bit draw (a draw's top
    bit is always zero, so each 16-bit lane keeps 15 bits)."""
    draws = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(generator=generator)
    return draws.view(torch.int16)[:count].bitwise_and_(RANDOM_SCALE - 1)


def probability_threshold(probability: float) -> int:
    """The integer t with P(word < t) = round(p * 2**15) / 2**15."""
    return max(0, min(RANDOM_SCALE, round(probability * RANDOM_SCALE)))


def bernoulli_mask(
    shape: tuple[int, int], probabilities: list[float], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(n, L) bool: entry (i, j) is True with probability ``probabilities[i]``."""
    words = random_words(shape[0] * shape[1], generator, device).view(shape)
    thresholds = torch.tensor(
        [probability_threshold(p) for p in probabilities], dtype=torch.int16, device=device
    )
    return words < thresholds.unsqueeze(1)


def della_keep_probabilities(columns: int, density: float, epsilon: float) -> torch.Tensor:
    """(columns,) keep probability of the entry at ascending-magnitude rank j in a row:
    from density - epsilon (smallest) to density + epsilon (largest), linear in rank."""
    if columns == 1:
        return torch.full((1,), density)
    return torch.linspace(density - epsilon, density + epsilon, columns)


def della_row_mask(
    magnitudes: torch.Tensor, density: float, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """(rows, C) bool keep mask for one model's rows of magnitudes.

    Entry at ascending rank j is kept with probability p_j = density − ε + 2ε·j/(C−1).
    Rather than rank every entry (a sort plus a scatter), a uniform draw u per entry
    becomes the smallest rank jmin it must reach (p_j > u ⟺ j ≥ jmin), and the entry is
    kept if its magnitude reaches the row's jmin-th smallest value: one sort of values
    per row and a gather. Tied magnitudes all take their group's highest rank.
    """
    rows, columns = magnitudes.shape
    device = magnitudes.device
    words = random_words(rows * columns, generator, device).view(rows, columns)
    uniform = (words.float() + 0.5) / RANDOM_SCALE
    if columns == 1 or epsilon == 0:
        return uniform < density
    low = density - epsilon
    # u < low + 2ε j/(C−1)  ⟺  j > (u − low)(C−1)/(2ε)
    jmin = torch.floor((uniform - low) * ((columns - 1) / (2 * epsilon))).add_(1).clamp_(0, columns)
    index = jmin.to(torch.int64).clamp_(max=columns - 1)
    ordered = _sort_rows(magnitudes)
    reached = magnitudes >= ordered.gather(1, index)
    return reached & (jmin < columns)


def _sort_rows(values: torch.Tensor) -> torch.Tensor:
    if values.device.type == "cpu" and values.dtype == torch.float32:
        # numpy's vectorised sort is about ten times faster than torch.sort on CPU.
        return torch.from_numpy(np.sort(values.numpy(), axis=1))
    return values.sort(dim=1).values
