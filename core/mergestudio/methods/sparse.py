"""Sparsifying task vectors fast: exact top-k by magnitude without a sort, DARE's random
drop, and DELLA's rank-dependent drop.

mergekit finds each task vector's top-k with a full ``argsort``: tens of nanoseconds per
entry, most of a TIES merge. Here a threshold is found by selection instead: a sample of
the magnitudes brackets the k-th largest value, one streaming pass counts the entries
above the bracket and collects the few inside it, and a partial selection over those
gives the exact threshold; an exact count fix-up keeps precisely k entries when values tie
(ties go to the earlier positions). Task vectors are recomputed (input minus base) rather
than materialised. On the CPU in float32 the pass is one compiled scan per task vector
(``kernels``); where the bracket spans fewer float32 values than it holds entries (bf16
checkpoints) the scan counts entries per value and the threshold is read off the counts.
Elsewhere (GPUs, other dtypes) torch walks chunks of ``CHUNK`` entries per model.

Tensors here are flat: ``inputs`` (n_models, numel) and ``base`` (numel,), any float dtype.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from mergestudio.methods.chunks import FlatChunks, TensorChunks, spans
from mergestudio.parallel import run_parallel

# A torch tensor, or on the CPU fast path the numpy view of one.
ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)

# Entries per model per chunk: three models' float32 task vectors plus two temporaries of
# this size fit in a 2-4 MB cache.
CHUNK = 1 << 16
# Magnitudes sampled to bracket a threshold; the bracket's width follows from the sample's
# binomial error, so a larger sample means fewer entries to select among afterwards.
_SAMPLE = 1 << 15
# The most distinct float32 values a bracket may span to be counted per value (16 MB).
_MAX_COUNTED_VALUES = 1 << 22
# Slots after the counted values that take the entries outside the bracket
# (kernels.band_histogram spreads them over 8).
_REST_SLOTS = 8
# Tensors up to this size are selected directly: sampling would not save anything.
_DIRECT_LIMIT = 1 << 17
# DARE/DELLA draw keep decisions as 15-bit integers (four per 64-bit draw), so a keep
# probability is resolved to 1/32768.
RANDOM_BITS = 15
RANDOM_SCALE = 1 << RANDOM_BITS


def on_compiled_path(tensor: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels (``kernels``) take this tensor's work: float32
    on the CPU; other dtypes and devices run the same math through torch."""
    return tensor.device.type == "cpu" and tensor.dtype == torch.float32


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
    # |x − 0| is |x| bit for bit (−0.0 − 0.0 is −0.0, whose magnitude is 0).
    flat_base = base if base is not None else torch.zeros(inputs.shape[1], dtype=inputs.dtype, device=inputs.device)
    chunks = TensorChunks(inputs, flat_base, flat_base)
    return streamed_top_k_rules(chunks, list(range(inputs.shape[0])), ks)


def streamed_top_k_rules(chunks: FlatChunks, models: list[int], ks: list[int]) -> list[TopK]:
    """Exact rules for |input[models[r]] − base| keeping ``ks[r]`` entries each (a model
    may appear more than once), from ``chunks`` read range by range: a sample, then one
    pass over the ranges for every rule together. A rule depends on the values alone
    (the k-th largest magnitude and how many tie with it), not on the ranges."""
    numel = chunks.numel
    rules: list[TopK | None] = [None] * len(ks)
    todo = []
    for r, k in enumerate(ks):
        if k <= 0:
            rules[r] = TopK.keep_none()
        elif k >= numel:
            rules[r] = TopK.keep_all(numel)
        else:
            todo.append(r)
    if todo and numel <= _DIRECT_LIMIT:
        for r in todo:
            rules[r] = _rule_from_candidates(_all_magnitudes(chunks, models[r]), ks[r], 0)
    elif todo:
        found = _bracketed_rules(chunks, [models[r] for r in todo], [ks[r] for r in todo])
        for r, rule in zip(todo, found, strict=True):
            rules[r] = rule
    return [rule for rule in rules if rule is not None]


def _on_compiled_chunks(chunks: FlatChunks) -> bool:
    import torch as _torch

    return chunks.device.type == "cpu" and chunks.dtype == _torch.float32


def _all_magnitudes(chunks: FlatChunks, model: int) -> torch.Tensor:
    """(numel,) |input[model] − base|, gathered range by range (the small-tensor path
    and the rare fallback when a sample misses)."""
    parts = []
    for start, stop in spans(chunks, CHUNK):
        x, b = chunks.read(start, stop)
        parts.append((x[model] - b).abs_())
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _magnitudes(inputs: torch.Tensor, base: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    chunk = inputs[:, start:stop]
    return (chunk - base[start:stop]).abs_() if base is not None else chunk.abs()


def _kth_largest(values: torch.Tensor, k: int) -> float:
    """The k-th largest entry (1-based) of a 1-D tensor, by partial selection."""
    position = values.numel() - k
    # float16/bfloat16 widen exactly to float32; float64 must stay float64, or the rounded
    # threshold matches no entry and the rule keeps the wrong number of them.
    exact = values if values.dtype in (torch.float32, torch.float64) else values.float()
    if values.device.type == "cpu":
        # numpy's introselect is several times faster than torch.kthvalue on CPU.
        return float(np.partition(exact.numpy(), position)[position])
    return float(torch.kthvalue(exact, position + 1).values)


def _rule_from_candidates(candidates: torch.Tensor, k_in_candidates: int, above: int) -> TopK:
    """Rule keeping ``above`` entries known to exceed every candidate plus the
    ``k_in_candidates`` largest candidates."""
    threshold = _kth_largest(candidates, k_in_candidates)
    greater = int(torch.count_nonzero(candidates > threshold))
    equal = int(torch.count_nonzero(candidates == threshold))
    ties = k_in_candidates - greater
    return TopK(above + k_in_candidates, threshold, ties, ties == equal)


def _bracketed_rules(chunks: FlatChunks, models: list[int], ks: list[int]) -> list[TopK]:
    """Exact rules through a sampled bracket [low, high] around each k-th largest value."""
    numel = chunks.numel
    sample_magnitudes = _sample_magnitudes(chunks)[models]
    lows, highs = [], []
    for row, k in zip(sample_magnitudes, ks, strict=True):
        low, high = _bracket(row, k / numel)
        lows.append(low)
        highs.append(high)
    if _on_compiled_chunks(chunks):
        return _compiled_rules(chunks, models, lows, highs, sample_magnitudes, ks)
    # Where the bracket is a single value (heavily tied magnitudes, common for task
    # vectors of bf16 checkpoints) its entries need only be counted, not collected.
    point = [lo == hi for lo, hi in zip(lows, highs, strict=True)]
    above, equal, bands = _band_pass(chunks, models, lows, highs, point)
    rules = []
    for j, k in enumerate(ks):
        count_above = above[j]
        count_band = equal[j]
        if count_band < 0 or not count_above < k <= count_above + count_band:
            # The sample missed (vanishingly rare): select over the whole vector.
            rules.append(_rule_from_candidates(_all_magnitudes(chunks, models[j]), k, 0))
        elif point[j]:
            ties = k - count_above
            rules.append(TopK(k, lows[j], ties, ties == count_band))
        else:
            rules.append(_rule_from_candidates(bands[j], k - count_above, count_above))
    return rules


def _band_pass(
    chunks: FlatChunks,
    models: list[int],
    lows: list[float],
    highs: list[float],
    point: list[bool],
) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """One streaming pass: per rule, how many magnitudes of its model exceed its bracket
    [lows[j], highs[j]], how many fall in it, and (unless the bracket is a point) the
    values in it, in flat order."""
    n = len(models)
    dtype, device = chunks.dtype, chunks.device
    high_col = torch.tensor(highs, dtype=dtype, device=device).unsqueeze(1)
    #  low <= m <= high  as  |m - centre| <= half-width: two operations instead of three.
    # Magnitudes are ≥ 0 and finite, so the open ends become 0 and the dtype's maximum.
    largest = torch.finfo(dtype).max
    bounds = [(max(lo, 0.0), min(hi, largest)) for lo, hi in zip(lows, highs, strict=True)]
    centre = [lo / 2 + hi / 2 for lo, hi in bounds]
    half = [hi / 2 - lo / 2 for lo, hi in bounds]
    centre_col = torch.tensor(centre, dtype=dtype, device=device).unsqueeze(1)
    half_col = torch.tensor(half, dtype=dtype, device=device).unsqueeze(1)
    above = torch.zeros(n, dtype=torch.int64, device=device)
    equal = torch.zeros(n, dtype=torch.int64, device=device)
    parts: list[list[torch.Tensor]] = [[] for _ in range(n)]
    index = torch.tensor(models, device=device)
    for read_start, read_stop in spans(chunks, CHUNK):
        x, b = chunks.read(read_start, read_stop)
        selected = x.index_select(0, index)
        for start, stop in chunk_bounds(read_stop - read_start):
            magnitudes = _magnitudes(selected, b, start, stop)
            above += torch.count_nonzero(magnitudes > high_col, dim=1)
            in_band = (magnitudes - centre_col).abs_() <= half_col
            equal += torch.count_nonzero(in_band, dim=1)
            for j in range(n):
                if not point[j]:
                    parts[j].append(torch.masked_select(magnitudes[j], in_band[j]))
    bands = [torch.cat(p) if p else torch.empty(0, device=device) for p in parts]
    return above.tolist(), equal.tolist(), bands


def _compiled_rules(
    chunks: FlatChunks,
    models: list[int],
    lows: list[float],
    highs: list[float],
    sample: torch.Tensor,
    ks: list[int],
) -> list[TopK]:
    """``_bracketed_rules``' pass and selection on the CPU: compiled scans of each rule's
    row, each read range in two halves side by side on the cores (a scan is ~1.5 ns an
    entry where the numpy pass spent 9 array operations; halves, because three rows on
    two cores left one core idle a third of the time). Where a bracket holds fewer
    distinct float32 values than entries (quantised magnitudes) they are counted per
    value; otherwise the entries in it are collected and selected among. Each (rule,
    half) keeps its counts or collected entries across the ranges."""
    from mergestudio.methods import kernels

    numel = chunks.numel
    scans = [_BandScan.of(numel, lows[j], highs[j], sample[j]) for j in range(len(ks))]
    slots = range(2)
    # One zeroed buffer (this thread's, reused) holds every half's counts, each 64 bytes
    # clear of the next: cores incrementing counts in one cache line slowed both 3x.
    sizes = [_padded(scan.values + _REST_SLOTS) if scan.counted else 0 for scan in scans for _ in slots]
    buffer = _zeroed_counts(sum(sizes))
    counts = np.split(buffer, np.cumsum(sizes)[:-1])
    bands = [np.empty(0 if scan.counted else scan.capacity, dtype=np.float32) for scan in scans for _ in slots]
    used = [0] * len(bands)
    overflowed = [False] * len(bands)
    above = [0] * len(bands)
    for read_start, read_stop in spans(chunks, CHUNK):
        x, b = chunks.read(read_start, read_stop)
        rows, base = x.numpy(), b.numpy()
        pieces = halves(0, read_stop - read_start)

        def scan_piece(piece: int, rows: np.ndarray = rows, base: np.ndarray = base, pieces: list[tuple[int, int]] = pieces) -> None:
            j, half = divmod(piece, 2)
            start, stop = pieces[half]
            scan, row, part = scans[j], rows[models[j], start:stop], base[start:stop]
            if scan.counted:
                above[piece] += int(kernels.band_histogram(row, part, True, scan.low, scan.high, counts[piece]))
                return
            if overflowed[piece]:
                return
            # The free rest of this half's buffer; it always has a slot left (below).
            room = bands[piece][used[piece] :]
            count_above, count = kernels.band_scan(row, part, True, scan.low, scan.high, room)
            above[piece] += int(count_above)
            if count >= room.shape[0]:
                overflowed[piece] = True
            else:
                used[piece] += int(count)

        run_parallel(scan_piece, [2 * j + half for j in range(len(ks)) for half in range(len(pieces))])
    rules = []
    for j, k in enumerate(ks):
        pieces_of_rule = [
            (above[i], None if overflowed[i] else bands[i][: used[i]]) for i in (2 * j, 2 * j + 1)
        ]
        rule = scans[j].rule(k, pieces_of_rule, [counts[2 * j], counts[2 * j + 1]])
        if rule is None:
            # The sample missed (vanishingly rare): select over the whole vector.
            rule = _rule_from_candidates(_all_magnitudes(chunks, models[j]), k, 0)
        rules.append(rule)
    return rules


def _padded(slots: int) -> int:
    """int32 slots rounded up to whole 64-byte lines, plus one line of gap."""
    return (slots + 15) // 16 * 16 + 16


def halves(start: int, stop: int) -> list[tuple[int, int]]:
    """[start, stop) in two pieces for two cores (one when it is small)."""
    if stop - start < 2 * CHUNK:
        return [(start, stop)]
    middle = (start + stop) // 2
    return [(start, middle), (middle, stop)]


@dataclass(frozen=True)
class _BandScan:
    """How one row's bracket [low, high] is scanned: its entries counted per float32
    value (``counted``, ``values`` slots) or collected (room for ``capacity``)."""

    low: np.float32
    high: np.float32
    capacity: int
    values: int
    counted: bool

    @staticmethod
    def of(numel: int, low: float, high: float, sample: torch.Tensor) -> _BandScan:
        low32 = np.float32(max(low, 0.0))
        high32 = np.float32(min(high, float(np.finfo(np.float32).max)))
        capacity = _band_capacity(sample, float(low32), float(high32), numel)
        values = int(_float_bits(high32)) - int(_float_bits(low32)) + 1
        # Counting per value costs a pass plus the counts (4 bytes a value, zeroed); the
        # alternative, selecting among the collected entries, ~10 ns an entry.
        return _BandScan(low32, high32, capacity, values, values <= min(4 * capacity, _MAX_COUNTED_VALUES))

    def rule(
        self, k: int, pieces: list[tuple[int, np.ndarray | None]], counts: list[np.ndarray]
    ) -> TopK | None:
        """The exact rule keeping the k largest magnitudes from the halves' scans, or None
        when the k-th does not lie in the bracket (or a collecting buffer overflowed)."""
        from mergestudio.methods import kernels

        above = sum(count_above for count_above, _ in pieces)
        if self.counted:
            total = counts[0][: self.values].copy()
            for more in counts[1:]:
                total += more[: self.values]
            if not above < k <= above + int(total.sum()):
                return None
            index, greater = kernels.histogram_kth(total, k - above)
            threshold = float(np.array(_float_bits(self.low) + index, dtype=np.int32).view(np.float32))
            ties = k - above - int(greater)
            return TopK(k, threshold, ties, ties == int(total[index]))
        bands = [band for _, band in pieces if band is not None]
        if len(bands) < len(pieces):
            return None
        band = np.concatenate(bands) if len(bands) > 1 else bands[0]
        if not above < k <= above + band.shape[0]:
            return None
        return _rule_from_candidates(torch.from_numpy(band), k - above, above)


_reused = threading.local()


def _zeroed_counts(size: int) -> np.ndarray:
    """(size,) int32 zeros in a buffer this thread reuses: a fresh one per row would be
    faulted in and zeroed page by page by the OS, which cost more than the counting."""
    buffer = getattr(_reused, "counts", None)
    if buffer is None or buffer.shape[0] < size:
        buffer = _reused.counts = np.empty(max(size, 1 << 16), dtype=np.int32)
    counts: np.ndarray = buffer[:size]
    counts.fill(0)
    return counts


def _float_bits(value: np.float32) -> int:
    return int(np.array(value, dtype=np.float32).view(np.int32))


def _band_capacity(sample: torch.Tensor, low: float, high: float, numel: int) -> int:
    """Room for a row's entries in [low, high]: the share of the sample there, plus six
    binomial standard deviations and slack; one more than the row can hold at most, so
    that a full buffer always means an overflow."""
    m = sample.numel()
    inside = int(torch.count_nonzero((sample >= low) & (sample <= high)))
    share = inside / m
    bound = share + 6 * math.sqrt(share * (1 - share) / m) + 16 / m
    return min(numel + 1, int(1.25 * bound * numel) + 4096)


def _sample_magnitudes(chunks: FlatChunks) -> torch.Tensor:
    """(n, _SAMPLE) magnitudes at positions drawn by a fixed-seed generator (the result
    does not depend on them: they only make the bracket tight), sorted descending."""
    numel = chunks.numel
    generator = torch.Generator(device="cpu").manual_seed(numel)
    positions = torch.randint(numel, (_SAMPLE,), generator=generator)
    if _on_compiled_chunks(chunks):
        # numpy's (vectorised) sort runs several times faster than torch's here, and
        # ascending positions read memory in order.
        index = torch.from_numpy(np.sort(positions.numpy()))
        inputs, base = chunks.gather(index)
        picked = inputs.numpy().copy()
        picked -= base.numpy()
        ascending = np.sort(np.abs(picked, out=picked), axis=1)
        return torch.from_numpy(np.ascontiguousarray(ascending[:, ::-1]))
    inputs, base = chunks.gather(positions.to(chunks.device))
    return (inputs - base).abs_().sort(dim=1, descending=True).values


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


def probability_threshold(probability: float) -> int:
    """The integer t with P(word < t) = round(p * 2**15) / 2**15."""
    return max(0, min(RANDOM_SCALE, round(probability * RANDOM_SCALE)))


def della_keep_probabilities(columns: int, density: float, epsilon: float) -> torch.Tensor:
    """(columns,) keep probability of the entry at ascending-magnitude rank j in a row:
    from density - epsilon (smallest) to density + epsilon (largest), linear in rank."""
    if columns == 1:
        return torch.full((1,), density)
    return torch.linspace(density - epsilon, density + epsilon, columns)
