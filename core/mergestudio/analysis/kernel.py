"""Statistics of one tensor's task vectors, computed in row chunks.

A tensor is seen as a matrix (rows, cols) (a vector is one row). Its task vectors are
recomputed chunk by chunk from the (memory-mapped) inputs in each of three passes, so
memory stays at a few chunks however large the tensor is:

1. sums, Gram matrix, L1, zeros, and a fine log-magnitude histogram per task vector;
2. the magnitude threshold of each task vector's top-``density`` entries, by radix
   selection: the fine histogram names the bin holding the threshold, and only that
   bin's entries are gathered and ``kthvalue``-selected (no sort of the tensor);
3. what trimming keeps, sign conflicts, mask overlaps.

Magnitudes are compared as the integer bit patterns of |τ| (float32), which order like
the values; ties at the threshold are broken by position (earlier entries first), so
trimming keeps exactly ``round(density · numel)`` entries, as ``topk`` would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mergestudio.analysis.histogram import FINE_BINS, FINE_SHIFT, fold_fine_counts
from mergestudio.analysis.sums import StatSums

# Entries per task vector in a chunk: small enough that a chunk's temporaries stay in
# cache and reuse freed memory (1M-entry chunks ran 2-3x slower on a 2-core laptop).
DEFAULT_CHUNK_ELEMENTS = 1 << 18
_MAX_CHUNK_ELEMENTS = 1 << 24  # float32 holds every integer up to 2**24 exactly
_ABS_MASK = 0x7FFFFFFF  # clears the sign bit of a float32's bit pattern
_KEEP_NONE = 0x7FFFFFFF  # no finite |τ| has these bits or more, NaN aside
_NO_CUT = 1 << 62  # a cut chunk past every chunk: all ties kept


def kept_count(density: float, numel: int) -> int:
    """Entries magnitude trimming keeps: ``density · numel`` rounded half up, clamped."""
    return min(numel, max(0, math.floor(density * numel + 0.5)))


@dataclass
class Threshold:
    """Which entries of one task vector trimming keeps: those whose |τ| bits exceed
    ``bits``, and those equal to it in chunks up to ``cut_chunk``, where only the first
    ``ties`` are kept when ``partial`` (ties are kept in flat order).

    Knowing the chunk where ties stop, every other chunk needs one comparison only:
    ``bits >= t`` before it and ``bits >= t + 1`` after it.
    """

    bits: int
    cut_chunk: int
    ties: int = 0
    partial: bool = False  # whether chunk ``cut_chunk`` keeps only some of its ties

    def limit(self, chunk: int) -> int:
        """The smallest kept bits in ``chunk`` (before the tie fix-up in ``cut_chunk``)."""
        # Clamped to int32: "keep nothing" sits at the top of the range already.
        return self.bits if chunk <= self.cut_chunk else min(self.bits + 1, _KEEP_NONE)


@dataclass
class TensorResult:
    """What one tensor's analysis yields. Row arrays are (rows,) int64, present when asked for."""

    sums: StatSums
    thresholds: list[float]  # per model: the smallest kept |τ| (inf when nothing is kept)
    row_conflicts: np.ndarray | None = None
    row_contested: np.ndarray | None = None


@dataclass
class _Accumulator:
    """Pass 1 and 3 sums, kept as torch float64/int64 tensors until the end."""

    n: int
    base_sq: torch.Tensor = field(init=False)
    gram: torch.Tensor = field(init=False)
    sums: torch.Tensor = field(init=False)
    l1: torch.Tensor = field(init=False)
    fine: torch.Tensor = field(init=False)
    kept_l1: torch.Tensor = field(init=False)
    kept_sq: torch.Tensor = field(init=False)
    disagree: torch.Tensor = field(init=False)
    both: torch.Tensor = field(init=False)
    conflicts: torch.Tensor = field(init=False)
    trim_overlap: torch.Tensor = field(init=False)
    tall_overlap: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = self.n
        f64, i64 = torch.float64, torch.int64
        self.base_sq = torch.zeros((), dtype=f64)
        self.gram = torch.zeros((n, n), dtype=f64)
        self.sums, self.l1 = torch.zeros(n, dtype=f64), torch.zeros(n, dtype=f64)
        self.fine = torch.zeros(n * FINE_BINS, dtype=i64)
        self.kept_l1, self.kept_sq = torch.zeros(n, dtype=f64), torch.zeros(n, dtype=f64)
        self.disagree, self.both = torch.zeros((n, n), dtype=f64), torch.zeros((n, n), dtype=f64)
        self.conflicts = torch.zeros((), dtype=i64)
        self.trim_overlap = torch.zeros(n + 1, dtype=i64)
        self.tall_overlap = torch.zeros(n + 1, dtype=i64)

    def fine_counts(self) -> np.ndarray:
        """(n, FINE_BINS) int64 counts of |τᵢ| per fine bin."""
        return self.fine.view(self.n, FINE_BINS).numpy()

    def to_sums(self, numel: int, kept: int) -> StatSums:
        # Fine bin 0 holds |τ| < 2**-126: zero, or subnormal (which task vectors never are).
        zeros = self.fine_counts()[:, 0].copy()
        return StatSums(
            numel=numel,
            base_sq=float(self.base_sq),
            gram=self.gram.numpy().copy(),
            sums=self.sums.numpy().copy(),
            l1=self.l1.numpy().copy(),
            zeros=zeros.astype(np.int64),
            histogram=fold_fine_counts(self.fine_counts(), zeros),
            kept=np.full(self.n, kept, dtype=np.int64),  # trimming keeps exactly k entries
            kept_l1=self.kept_l1.numpy().copy(),
            kept_sq=self.kept_sq.numpy().copy(),
            pair_both=np.rint(self.both.numpy()).astype(np.int64),
            pair_disagree=np.rint(self.disagree.numpy()).astype(np.int64),
            contested=int(self.trim_overlap[2:].sum()),
            conflicts=int(self.conflicts),
            trim_overlap=self.trim_overlap.numpy().copy(),
            tall_overlap=self.tall_overlap.numpy().copy(),
        )


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor viewed as (rows, cols): scalars and vectors become one row."""
    if tensor.dim() <= 1:
        return tensor.reshape(1, -1)
    return tensor.reshape(tensor.shape[0], -1)


class TensorAnalyzer:
    """Computes ``TensorResult``s, reusing its chunk buffers from tensor to tensor.

    Not thread-safe: one analyzer per worker.
    """

    def __init__(
        self, n_models: int, *, tall_lambda: float, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    ) -> None:
        self.n = n_models
        self.tall_lambda = float(tall_lambda)
        self.chunk_elements = max(1, min(chunk_elements, _MAX_CHUNK_ELEMENTS))
        self._scratch: dict[str, torch.Tensor] = {}
        offsets = torch.arange(n_models, dtype=torch.int32) * FINE_BINS
        self._offsets = offsets.view(n_models, 1)

    def analyze(
        self,
        base: torch.Tensor,
        tensors: Sequence[torch.Tensor],
        density: float,
        *,
        rows: bool = False,
    ) -> TensorResult:
        """``base`` and each of ``tensors`` have one shape (any float dtype, read-only
        views are fine). With ``rows``, also count conflicts per row of the matrix view."""
        if len(tensors) != self.n:
            raise ValueError(f"expected {self.n} tensors, got {len(tensors)}")
        base2d = as_matrix(base)
        tensors2d = [as_matrix(t) for t in tensors]
        numel = base2d.numel()
        acc = _Accumulator(self.n)
        for _, deltas, base_chunk in self._chunks(base2d, tensors2d):
            self._first_pass(acc, deltas, base_chunk)
        k = kept_count(density, numel)
        thresholds = self._thresholds(acc.fine_counts(), k, numel, base2d, tensors2d)
        values = [math.inf if k == 0 else _bits_to_float(t.bits) for t in thresholds]
        row_conflicts = torch.zeros(base2d.shape[0], dtype=torch.int64) if rows else None
        row_contested = torch.zeros(base2d.shape[0], dtype=torch.int64) if rows else None
        for chunk, (start, deltas, _) in enumerate(self._chunks(base2d, tensors2d)):
            self._trim_pass(
                acc, deltas, thresholds, chunk, start, base2d.shape[1], row_conflicts, row_contested
            )
        return TensorResult(
            sums=acc.to_sums(numel, k),
            thresholds=values,
            row_conflicts=row_conflicts.numpy() if row_conflicts is not None else None,
            row_contested=row_contested.numpy() if row_contested is not None else None,
        )

    # -- chunks ---------------------------------------------------------------------------

    def _chunks(
        self, base2d: torch.Tensor, tensors2d: list[torch.Tensor]
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(first row, deltas (n, c) float32, base (c,) float32) per row chunk. The
        yielded tensors are views of reused buffers: valid until the next step."""
        total_rows, cols = base2d.shape
        rows_per_chunk = max(1, self.chunk_elements // max(cols, 1))
        for start in range(0, total_rows, rows_per_chunk):
            stop = min(total_rows, start + rows_per_chunk)
            count = (stop - start) * cols
            base_chunk = self._buffer("base", count, torch.float32)
            base_chunk.view(stop - start, cols).copy_(base2d[start:stop])
            deltas = self._buffer("deltas", self.n * count, torch.float32).view(self.n, count)
            for slot, tensor in zip(deltas, tensors2d, strict=True):
                slot.view(stop - start, cols).copy_(tensor[start:stop])  # converts to float32
            deltas.sub_(base_chunk)
            yield start, deltas, base_chunk

    def _buffer(self, name: str, count: int, dtype: torch.dtype) -> torch.Tensor:
        """The first ``count`` entries of a named scratch buffer kept across chunks and
        tensors. Every large temporary goes through here: a fresh allocation of a few MB
        costs page faults on every chunk, which profiled as the largest single cost."""
        buffer = self._scratch.get(name)
        if buffer is None or buffer.numel() < count or buffer.dtype != dtype:
            buffer = torch.empty(max(count, self.n * self.chunk_elements), dtype=dtype)
            self._scratch[name] = buffer
        return buffer[:count]

    def _like(self, name: str, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A scratch buffer shaped like ``like``."""
        return self._buffer(name, like.numel(), dtype or like.dtype).view(like.shape)

    def _abs_bits(self, deltas: torch.Tensor) -> torch.Tensor:
        """(n, c) int32 bit patterns of |deltas|, which order like the magnitudes."""
        bits = self._like("bits", deltas, torch.int32)
        return torch.bitwise_and(deltas.view(torch.int32), _ABS_MASK, out=bits)

    # -- pass 1 ---------------------------------------------------------------------------

    def _first_pass(self, acc: _Accumulator, deltas: torch.Tensor, base: torch.Tensor) -> None:
        acc.base_sq += torch.dot(base, base).double()
        acc.gram += (deltas @ deltas.T).double()
        # float32 sums within a chunk (pairwise, accurate to ~1e-7 relative), float64
        # across chunks; summing with dtype=float64 directly is ~20x slower in torch.
        acc.sums += deltas.sum(dim=1).double()
        bits = self._abs_bits(deltas)
        acc.l1 += bits.view(torch.float32).sum(dim=1).double()
        keys = torch.bitwise_right_shift(bits, FINE_SHIFT, out=self._like("keys", bits)).add_(self._offsets)
        acc.fine += torch.bincount(keys.view(-1), minlength=self.n * FINE_BINS)

    # -- pass 2 ---------------------------------------------------------------------------

    def _thresholds(
        self, fine: np.ndarray, k: int, numel: int, base2d: torch.Tensor, tensors2d: list[torch.Tensor]
    ) -> list[Threshold]:
        """Per model, the bits of the k-th largest |τ| and how many entries equal to it
        trimming keeps. Only the fine bin that holds it is read back."""
        if k >= numel:
            return [Threshold(0, cut_chunk=_NO_CUT) for _ in range(self.n)]
        if k == 0:
            return [Threshold(_KEEP_NONE, cut_chunk=-1) for _ in range(self.n)]
        bins: list[int] = []
        above: list[int] = []
        for counts in fine:
            from_top = np.cumsum(counts[::-1])
            position = int(np.searchsorted(from_top, k))  # first suffix holding >= k entries
            bins.append(FINE_BINS - 1 - position)
            above.append(int(from_top[position - 1]) if position else 0)
        candidates = self._gather_bins(bins, base2d, tensors2d)
        thresholds = []
        for chunks, count_above in zip(candidates, above, strict=True):
            values = torch.cat(chunks)
            need = k - count_above  # entries still to keep from this bin, >= 1
            kth = int(torch.kthvalue(values, values.numel() - need + 1).values)
            thresholds.append(_cut(kth, need - int((values > kth).sum()), chunks))
        return thresholds

    def _gather_bins(
        self, bins: list[int], base2d: torch.Tensor, tensors2d: list[torch.Tensor]
    ) -> list[list[torch.Tensor]]:
        """Per model and chunk, the |τ| bits (int32, 1-D, in flat order) of the entries
        in that model's fine bin."""
        parts: list[list[torch.Tensor]] = [[] for _ in range(self.n)]
        for _, deltas, _ in self._chunks(base2d, tensors2d):
            bits = self._abs_bits(deltas)
            keys = torch.bitwise_right_shift(bits, FINE_SHIFT, out=self._like("keys", bits))
            in_bin = torch.eq(
                keys,
                torch.tensor(bins, dtype=torch.int32).view(self.n, 1),
                out=self._like("mask", bits, torch.bool),
            )
            for model, row in enumerate(bits):
                parts[model].append(row[in_bin[model]])
        return parts

    # -- pass 3 ---------------------------------------------------------------------------

    def _kept_mask(self, bits: torch.Tensor, thresholds: list[Threshold], chunk: int) -> torch.Tensor:
        """(n, c) float32 0/1: the entries of chunk number ``chunk`` that trimming keeps.
        Float, not bool: products with a bool mask convert it on every use."""
        limits = torch.tensor([t.limit(chunk) for t in thresholds], dtype=torch.int32).view(self.n, 1)
        kept = torch.ge(bits, limits, out=self._like("kept", bits, torch.float32))
        for model, threshold in enumerate(thresholds):
            if threshold.partial and threshold.cut_chunk == chunk:
                row = bits[model]
                first_dropped = int((row == threshold.bits).nonzero()[threshold.ties])
                torch.gt(row[first_dropped:], threshold.bits, out=kept[model, first_dropped:])
        return kept

    def _trim_pass(
        self,
        acc: _Accumulator,
        deltas: torch.Tensor,
        thresholds: list[Threshold],
        chunk: int,
        start_row: int,
        cols: int,
        row_conflicts: torch.Tensor | None,
        row_contested: torch.Tensor | None,
    ) -> None:
        n = self.n
        bits = self._abs_bits(deltas)
        magnitudes = bits.view(torch.float32)
        kept = self._kept_mask(bits, thresholds, chunk)
        kept_magnitudes = torch.mul(magnitudes, kept, out=self._like("kept_magnitudes", kept))
        acc.kept_l1 += kept_magnitudes.sum(dim=1).double()
        acc.kept_sq += torch.stack([torch.dot(row, row) for row in kept_magnitudes]).double()
        # Signs of surviving entries, s ∈ {-1, 0, 1}, (n, c) float32: then s·sᵀ counts
        # agreements minus disagreements and |s|·|s|ᵀ counts both surviving, per pair.
        # A chunk holds at most 2**24 entries, which float32 counts exactly.
        signs = torch.sign(deltas, out=self._like("signs", deltas)).mul_(kept)
        surviving = torch.abs(signs, out=self._like("surviving", signs))
        agreement = signs @ signs.T
        both = surviving @ surviving.T
        acc.both += both.double()
        acc.disagree += ((both - agreement) / 2).double()
        n_surviving = surviving.sum(dim=0)
        # Both signs are present exactly when |Σ s| < number of survivors.
        conflict = signs.sum(dim=0).abs_() < n_surviving
        acc.conflicts += conflict.sum()
        acc.trim_overlap += torch.bincount(n_surviving.to(torch.uint8), minlength=n + 1)
        acc.tall_overlap += torch.bincount(self._tall_counts(deltas, magnitudes), minlength=n + 1)
        if row_conflicts is not None and row_contested is not None:
            contested = n_surviving >= 2
            chunk_rows = deltas.shape[1] // cols
            row_conflicts[start_row : start_row + chunk_rows] += conflict.view(chunk_rows, cols).sum(dim=1)
            row_contested[start_row : start_row + chunk_rows] += contested.view(chunk_rows, cols).sum(dim=1)

    def _tall_counts(self, deltas: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        """(c,) uint8: tasks for which each entry is important by the TALL mask
        |τₜ| > λ·|τ_MTL − τₜ| with τ_MTL = Σ τ (Wang et al. 2024). The paper writes ≥;
        strict > differs only at exact equality and keeps τₜ = 0 from counting."""
        total = torch.sum(deltas, dim=0, out=self._like("total", deltas[0]))
        others = torch.sub(total, deltas, out=self._like("others", deltas))  # τ_MTL − τₜ, (n, c)
        others.abs_().mul_(self.tall_lambda)
        important = torch.gt(magnitudes, others, out=self._like("mask", magnitudes, torch.bool))
        return important.view(torch.uint8).sum(dim=0, dtype=torch.uint8)


def _cut(kth: int, ties: int, chunks: list[torch.Tensor]) -> Threshold:
    """The threshold keeping the first ``ties`` (>= 1) entries equal to ``kth`` in flat
    order, given one model's bin entries per chunk (in chunk order)."""
    for index, values in enumerate(chunks):
        equal = int((values == kth).sum())
        if equal >= ties:
            return Threshold(kth, cut_chunk=index, ties=ties, partial=equal > ties)
        ties -= equal
    raise AssertionError("selection found more entries equal to the threshold than there are")


def _bits_to_float(bits: int) -> float:
    """The float32 value whose bit pattern is ``bits``."""
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32))
