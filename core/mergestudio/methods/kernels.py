"""Compiled CPU kernels for the sparsifying methods (TIES, Breadcrumbs, DARE, DELLA).

numpy spends one pass over memory per operation, and a TIES merge is some twenty
operations per entry: ~13 ns per model entry, most of a 1.1B merge. These loops do the
same arithmetic in one or two passes, compiled by numba (ahead of the first use,
cached on disk), at well under a nanosecond per entry. Each kernel is single-threaded
and walks entries in flat order, so results are bit-identical run to run.

Import this module only on the CPU path: numba takes ~0.4 s to import and each kernel
~1 s to compile the first time on a machine.

Conventions: ``x`` is (n_models, L) float32, ``base`` (L,) float32, both C-contiguous;
"top rule" (threshold t, cut c) keeps an entry of magnitude a at flat position j when
``a > t or (a == t and j < c)`` (t = -inf keeps all, t = +inf none).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar, cast

import numba
import numpy as np


def _can_cache() -> bool:
    """numba caches compiled code keyed by this file's source: a frozen app ships no
    source (and numba refuses to cache there), so it compiles on first use instead."""
    return (
        __file__.endswith(".py")
        and os.path.exists(__file__)
        and not os.environ.get("MERGESTUDIO_NO_JIT_CACHE")
    )


_JIT: dict[str, Any] = {"nogil": True, "cache": _can_cache(), "boundscheck": False}
Function = TypeVar("Function", bound=Callable[..., Any])
# A scalar inside a kernel: numba types it (float32 here); callers pass Python or numpy
# floats, and mypy cannot follow numba's typing, so it is Any to the checker.
Scalar: TypeAlias = Any


def _compiled(function: Function) -> Function:
    """``numba.njit`` with our options, typed for mypy (numba ships no annotations)."""
    return cast(Function, numba.njit(**_JIT)(function))


def _inlined(function: Function) -> Function:
    """``_compiled``, inlined into its callers by numba itself."""
    return cast(Function, numba.njit(**_JIT, inline="always")(function))


def _summing(function: Function) -> Function:
    """``_compiled`` for a floating-point reduction, allowed to reassociate its sum so it
    vectorises (4x faster): a sum then depends on the compiled code's lane count, which
    is fixed for a machine, so results stay bit-identical run to run there."""
    return cast(Function, numba.njit(**_JIT, fastmath={"reassoc", "nsz"})(function))


@_compiled
def band_scan(
    x: np.ndarray, base: np.ndarray, has_base: bool, low: Scalar, high: Scalar, band: np.ndarray
) -> tuple[int, int]:
    """One row (L,): (entries with magnitude > high, entries with low <= magnitude <=
    high). The in-band magnitudes are written to ``band`` in flat order, up to its
    length less one (a count that reaches the length means the buffer was too small).
    Every entry is written to the next free slot and the slot is taken only when in the
    band: no branch, which keeps the loop several times faster than an ``if``."""
    above = 0
    count = 0
    last = band.shape[0] - 1
    for j in range(x.shape[0]):
        a = abs(x[j] - base[j]) if has_base else abs(x[j])
        above += a > high
        band[min(count, last)] = a
        count += (a >= low) & (a <= high)
    return above, count


@_compiled
def band_histogram(
    x: np.ndarray, base: np.ndarray, has_base: bool, low: Scalar, high: Scalar, counts: np.ndarray
) -> int:
    """One row (L,): the number of entries with magnitude > high; ``counts[v]`` (V + 8
    slots, zeroed by the caller, int32) gains the entries whose magnitude is the v-th
    float32 from ``low`` up (positive floats order like their bit patterns), for every
    magnitude in [low, high]; the last 8 slots collect the rest, spread over them so
    that consecutive entries do not wait on one slot's increment (20 % faster). For
    quantised task vectors (bf16 checkpoints hold few distinct values near a threshold)
    this replaces collecting the band and selecting in it."""
    scratch = np.empty(1, dtype=np.float32)
    bits = scratch.view(np.int32)
    scratch[0] = low
    low_bits = bits[0]
    rest = counts.shape[0] - 8
    above = 0
    for j in range(x.shape[0]):
        a = abs(x[j] - base[j]) if has_base else abs(x[j])
        above += a > high
        scratch[0] = a
        index = bits[0] - low_bits
        counts[index if (index >= 0) & (a <= high) else rest + (j & 7)] += 1
    return above


@_compiled
def histogram_kth(counts: np.ndarray, k: int) -> tuple[int, int]:
    """(slot of the k-th largest counted value, number of values in higher slots) for
    counts (V,) over ascending values; k >= 1 and at most the total."""
    greater = 0
    for index in range(counts.shape[0] - 1, -1, -1):
        if greater + counts[index] >= k:
            return index, greater
        greater += counts[index]
    return 0, greater


@_summing
def masked_norms(x: np.ndarray, base: np.ndarray, keep: np.ndarray, kind: int) -> tuple[float, float]:
    """One row (L,): the norm of τ = x − base before and after masking by ``keep``
    (L,) bool; kind 1: l1, 2: squared l2, 0: max. Sums in float64; one loop per kind,
    so that each vectorises."""
    before = 0.0
    after = 0.0
    if kind == 0:
        for j in range(x.shape[0]):
            a = np.float64(abs(x[j] - base[j]))
            before = max(before, a)
            after = max(after, a if keep[j] else 0.0)
    elif kind == 1:
        for j in range(x.shape[0]):
            a = np.float64(abs(x[j] - base[j]))
            before += a
            after += a if keep[j] else 0.0
    else:
        for j in range(x.shape[0]):
            a = np.float64(abs(x[j] - base[j]))
            before += a * a
            after += a * a if keep[j] else 0.0
    return before, after


@_summing
def block_gram(x: np.ndarray, base: np.ndarray, rows: int, block: int, first: int, out: np.ndarray) -> None:
    """Inner products of a read range's rows, per block of ``block`` entries: x (n, L)
    and base (L,) float32, C-contiguous; ``out`` (count, m, m) float64 gets, for blocks
    first … first + count − 1 of the range, Σ r_i r_j over the block's entries. The rows r
    are x[i] (``rows`` 0; m = n), x[i] − base (1, task vectors; m = n), or x[0..n−1]
    then base (2; m = n + 1). Products of float32 values are exact in float64; each
    block's sum depends on its entries alone, so blocks at fixed flat positions, summed
    in order by the caller, give the same totals for any read range."""
    n = x.shape[0]
    m = out.shape[1]
    length = x.shape[1]
    for b in range(out.shape[0]):
        lo = (first + b) * block
        hi = min(length, lo + block)
        for i in range(m):
            for j in range(i, m):
                total = 0.0
                if rows == 1:
                    for e in range(lo, hi):
                        total += np.float64(x[i, e] - base[e]) * np.float64(x[j, e] - base[e])
                elif j < n:
                    for e in range(lo, hi):
                        total += np.float64(x[i, e]) * np.float64(x[j, e])
                elif i < n:
                    for e in range(lo, hi):
                        total += np.float64(x[i, e]) * np.float64(base[e])
                else:
                    for e in range(lo, hi):
                        total += np.float64(base[e]) * np.float64(base[e])
                out[b, i, j] = total
                out[b, j, i] = total


@_compiled
def stream_key(seed: int, model: int) -> np.uint32:
    """The 32-bit key of model ``model``'s keep words for a tensor's ``seed``."""
    high = _mix32(np.uint32(np.uint32((seed >> 32) & 0xFFFFFFFF) + np.uint32(model)))
    return _mix32(np.uint32(np.uint32(seed & 0xFFFFFFFF) ^ high))


@_compiled
def random_mask(key: np.uint32, start: int, threshold: np.uint32, out: np.ndarray) -> None:
    """DARE's keep decisions for flat positions start, start+1, ...: ``out[j]`` (bool)
    is whether the 15-bit word of position start + j in the stream ``key`` is below
    ``threshold`` (keep probability threshold / 2**15). Words are the murmur3 finaliser
    of key + position, so a draw depends on the position alone: not on chunking,
    threading or the order tensors are merged in."""
    counter = np.uint32(key + start)
    for j in range(out.shape[0]):
        out[j] = (_mix32(np.uint32(counter + np.uint32(j))) >> np.uint32(17)) < threshold


@_summing
def random_norms(
    x: np.ndarray, base: np.ndarray, key: np.uint32, start: int, threshold: np.uint32, kind: int
) -> tuple[float, float]:
    """``masked_norms`` of one row's range (x, base (L,) float32, flat positions start,
    start+1, ...) under DARE's keep decisions (as ``random_mask`` draws them), computed
    on the fly instead of from a stored mask."""
    counter = np.uint32(key + start)
    shift = np.uint32(17)
    before = 0.0
    after = 0.0
    if kind == 0:
        for j in range(x.shape[0]):
            a = np.float64(abs(x[j] - base[j]))
            keep = (_mix32(np.uint32(counter + np.uint32(j))) >> shift) < threshold
            before = max(before, a)
            after = max(after, a if keep else 0.0)
    elif kind == 1:
        for j in range(x.shape[0]):
            a = np.float64(abs(x[j] - base[j]))
            keep = (_mix32(np.uint32(counter + np.uint32(j))) >> shift) < threshold
            before += a
            after += a if keep else 0.0
    else:
        for j in range(x.shape[0]):
            a = np.float64(abs(x[j] - base[j]))
            keep = (_mix32(np.uint32(counter + np.uint32(j))) >> shift) < threshold
            before += a * a
            after += a * a if keep else 0.0
    return before, after


@_compiled
def della_mask(
    magnitudes: np.ndarray,
    ordered: np.ndarray,
    key: np.uint32,
    start: int,
    density: float,
    epsilon: float,
    out: np.ndarray,
) -> None:
    """DELLA's keep decisions for rows of one model: entry at ascending rank j of its
    row is kept with probability p_j = density − ε + 2ε·j/(C−1). Rather than rank every
    entry, a uniform draw u becomes the smallest rank jmin it must reach (p_j > u ⟺ j ≥
    jmin) and the entry is kept if its magnitude reaches the row's jmin-th smallest
    value (tied magnitudes take their group's highest rank): magnitudes and ordered (each row sorted ascending) (R, C) float32, out
    (R, C) bool. The uniform draw of the entry at flat position start + r·C + c is
    (word + 0.5) / 2**15 with the word as in ``random_mask``."""
    rows, columns = magnitudes.shape
    scale = np.float32(1.0 / 32768.0)
    if columns == 1 or epsilon == 0:
        for r in range(rows):
            counter = np.uint32(key + start + r * columns)
            for c in range(columns):
                h = _mix32(np.uint32(counter + np.uint32(c)))
                out[r, c] = (np.float32(h >> np.uint32(17)) + np.float32(0.5)) * scale < density
        return
    low = np.float32(density - epsilon)
    spread = np.float32((columns - 1) / (2 * epsilon))
    last = np.float32(columns)
    top = np.float32(columns - 1)
    shift = np.uint32(17)
    # Per row, the smallest keeping rank of every entry first, in a loop that vectorises,
    # then the lookups into the sorted row (which do not): 25 % faster than one loop.
    rank = np.empty(columns, dtype=np.int32)
    possible = np.empty(columns, dtype=np.bool_)
    for r in range(rows):
        counter = np.uint32(key + start + r * columns)
        for c in range(columns):
            h = _mix32(np.uint32(counter + np.uint32(c)))
            uniform = (np.float32(h >> shift) + np.float32(0.5)) * scale
            # u < low + 2ε j/(C−1)  ⟺  j > (u − low)(C−1)/(2ε): the smallest rank that keeps.
            jmin = min(max(np.floor((uniform - low) * spread) + np.float32(1.0), np.float32(0.0)), last)
            possible[c] = jmin < last
            rank[c] = np.int32(min(jmin, top))
        row, sorted_row, kept = magnitudes[r], ordered[r], out[r]
        for c in range(columns):
            kept[c] = possible[c] & (row[c] >= sorted_row[rank[c]])


@_inlined
def _mix32(h: np.uint32) -> np.uint32:
    """The murmur3 finaliser. Inlined by numba itself: LLVM left calls to it in place,
    and loops that called it did not vectorise. numba widens 32-bit integer arithmetic
    to 64 bits, so every step is cast back."""
    h = np.uint32(h ^ (h >> np.uint32(16)))
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h = np.uint32(h ^ (h >> np.uint32(13)))
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    return np.uint32(h ^ (h >> np.uint32(16)))


@_compiled
def tie_cut(x: np.ndarray, base: np.ndarray, threshold: Scalar, ties: int) -> tuple[int, int]:
    """One row's range (L,): (the position just after its ``ties``-th entry of
    magnitude |x − base| exactly ``threshold``, ``ties``) when the range holds that many,
    else (L, how many it holds): a caller walking ranges in order carries the rest."""
    seen = 0
    for j in range(x.shape[0]):
        if abs(x[j] - base[j]) == threshold:
            seen += 1
            if seen == ties:
                return j + 1, seen
    length: int = x.shape[0]
    return length, seen


# The combining kernels take up to SLOTS models as separate rows with their settings in
# scalars: that shape lets the compiler keep every model's value in registers and
# vectorise over entries (a loop over an (n, L) array ran ten times slower).
#
# The three public kernels differ only in their keep rule; they share one loop
# (``_combining_loop``), which ``_combine_with`` calls once per setting of the flags, with
# the flags as constants: LLVM then compiles one flag-free loop per setting. Left to
# itself it kept the flag tests in the loop for the larger loops, and those did not
# vectorise (7 ms against 50-70 ms for 11.5M entries × 3 models with hashed draws).
SLOTS = 4


@_inlined
def _selected(value: Scalar, keep: bool | np.bool_) -> Scalar:
    """value where keep, else 0."""
    return value if keep else np.float32(0.0)


@_inlined
def _agreeing(value: Scalar, sign: Scalar, weight: Scalar) -> tuple[Scalar, Scalar]:
    """(max(value·sign, 0), weight where that is > 0, else 0)."""
    aligned = value * sign
    zero = np.float32(0.0)
    return (aligned if aligned > zero else zero), (weight if aligned > zero else zero)


@_inlined
def _merged(
    values: tuple[Scalar, Scalar, Scalar, Scalar],
    weights: tuple[Scalar, Scalar, Scalar, Scalar],
    consensus: bool,
    normalize: bool,
    divisor: Scalar,
) -> Scalar:
    """The merged task-vector entry of one position from the models' kept values. With
    ``consensus`` the sign of the sum is elected (+ where it is 0) and the values of that
    sign are summed, divided (``normalize``) by the weights that contributed (1 where
    none); without, the sum is divided by ``divisor``."""
    v0, v1, v2, v3 = values
    merged = v0 + v1 + v2 + v3
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if consensus:
        sign = one if merged >= zero else -one
        a0, d0 = _agreeing(v0, sign, weights[0])
        a1, d1 = _agreeing(v1, sign, weights[1])
        a2, d2 = _agreeing(v2, sign, weights[2])
        a3, d3 = _agreeing(v3, sign, weights[3])
        merged = (a0 + a1 + a2 + a3) * sign
        if normalize:
            total = d0 + d1 + d2 + d3
            merged = merged / (total if total != zero else one)
        return merged
    return merged / divisor


@_inlined
def _slot_rows(rows: tuple[np.ndarray, ...], start: int, stop: int) -> tuple[np.ndarray, ...]:
    # Slices and loops from 0: with an index that might be negative every access needs a
    # wraparound check, and the loop does not vectorise.
    return rows[0][start:stop], rows[1][start:stop], rows[2][start:stop], rows[3][start:stop]


@_inlined
def _slot_values(values: np.ndarray) -> tuple[Scalar, Scalar, Scalar, Scalar]:
    return values[0], values[1], values[2], values[3]


# A model's keep rule: whether the entry at chunk position j, task-vector value d, is
# kept, from that model's rule data (per slot; the combining loop calls it with a
# constant function, so it is compiled into the loop).


@_inlined
def _keep_band(rule: tuple[Scalar, Scalar], j: int, d: Scalar) -> bool:
    """rule = (t, u): kept where t < |d| <= u."""
    a = abs(d)
    return bool((a > rule[0]) & (a <= rule[1]))


@_inlined
def _keep_hashed(rule: tuple[np.uint32, np.uint32], j: int, d: Scalar) -> bool:
    """rule = (key + chunk start, threshold): DARE's draw for position j (``random_mask``)."""
    return bool((_mix32(np.uint32(rule[0] + np.uint32(j))) >> np.uint32(17)) < rule[1])


@_inlined
def _keep_masked(rule: np.ndarray, j: int, d: Scalar) -> bool:
    """rule = the chunk's keep mask (L,) bool."""
    return bool(rule[j])


Rules: TypeAlias = tuple[Any, Any, Any, Any]
Slots: TypeAlias = tuple[Scalar, Scalar, Scalar, Scalar]


@_inlined
def _combining_loop(
    keep: Callable[[Any, int, Scalar], bool],
    rows: tuple[np.ndarray, ...],
    b: np.ndarray,
    o: np.ndarray,
    rules: Rules,
    coefficients: Slots,
    weights: Slots,
    consensus: bool,
    normalize: bool,
    divisor: Scalar,
    scale: Scalar,
) -> None:
    """o[j] = b[j] + scale · the merged kept values of position j (``_merged``), model i's
    value coefficients[i] · (rows[i][j] − b[j]) kept where keep(rules[i], j, ·)."""
    x0, x1, x2, x3 = rows
    r0, r1, r2, r3 = rules
    c0, c1, c2, c3 = coefficients
    for j in range(b.shape[0]):
        bj = b[j]
        d0, d1, d2, d3 = x0[j] - bj, x1[j] - bj, x2[j] - bj, x3[j] - bj
        # Every value is computed and then selected: a load inside a condition keeps the
        # loop from vectorising (30x slower).
        values = (
            _selected(c0 * d0, keep(r0, j, d0)),
            _selected(c1 * d1, keep(r1, j, d1)),
            _selected(c2 * d2, keep(r2, j, d2)),
            _selected(c3 * d3, keep(r3, j, d3)),
        )
        o[j] = bj + scale * _merged(values, weights, consensus, normalize, divisor)


@_inlined
def _combine_with(
    keep: Callable[[Any, int, Scalar], bool],
    rows: tuple[np.ndarray, ...],
    base: np.ndarray,
    start: int,
    stop: int,
    rules: Rules,
    coefficients: np.ndarray,
    weights: np.ndarray,
    consensus: bool,
    normalize: bool,
    linear_divisor: Scalar,
    scale: Scalar,
    out: np.ndarray,
) -> None:
    """``out[start:stop]`` by ``_combining_loop``, compiled once per flag setting."""
    x = _slot_rows(rows, start, stop)
    b, o = base[start:stop], out[start:stop]
    c, w = _slot_values(coefficients), _slot_values(weights)
    divisor = linear_divisor if normalize else np.float32(1.0)
    if consensus and normalize:
        _combining_loop(keep, x, b, o, rules, c, w, True, True, divisor, scale)
    elif consensus:
        _combining_loop(keep, x, b, o, rules, c, w, True, False, divisor, scale)
    else:
        _combining_loop(keep, x, b, o, rules, c, w, False, False, divisor, scale)


@_compiled
def combine(
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    base: np.ndarray,
    start: int,
    stop: int,
    thresholds: np.ndarray,
    uppers: np.ndarray,
    coefficients: np.ndarray,
    weights: np.ndarray,
    consensus: bool,
    normalize: bool,
    linear_divisor: Scalar,
    scale: Scalar,
    out: np.ndarray,
) -> None:
    """``out[start:stop]``: the merged entries of flat positions [start, stop), for
    ``SLOTS`` models (an unused slot: any row, threshold +inf, weight 0).

    Model i's entry is kept where thresholds[i] < |τ| <= uppers[i] (upper +inf: TIES;
    finite: Breadcrumbs, which drops the largest); its value is coefficients[i] · τ.
    Kept values are joined as ``_merged`` says; without ``consensus`` the sum is divided
    by ``linear_divisor`` when normalizing. out = base + scale · merged. (Ties at a
    threshold are the caller's: "≥ t" is "> the float below t", so a tie cut is a split
    of the range; a position test in the loop stopped it vectorising.)

    Shapes: rows (numel,) float32; thresholds, uppers, coefficients, weights (SLOTS,)
    float32; base, out (numel,) float32.
    """
    rules = (
        (thresholds[0], uppers[0]),
        (thresholds[1], uppers[1]),
        (thresholds[2], uppers[2]),
        (thresholds[3], uppers[3]),
    )
    _combine_with(
        _keep_band,
        rows,
        base,
        start,
        stop,
        rules,
        coefficients,
        weights,
        consensus,
        normalize,
        linear_divisor,
        scale,
        out,
    )


@_compiled
def combine_masked(
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    base: np.ndarray,
    start: int,
    masks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    coefficients: np.ndarray,
    weights: np.ndarray,
    consensus: bool,
    normalize: bool,
    linear_divisor: Scalar,
    scale: Scalar,
    out: np.ndarray,
) -> None:
    """``combine`` with the keep decisions given: model i's entry ``start + j`` is kept
    where ``masks[i][j]`` (masks (L,) bool)."""
    stop = start + masks[0].shape[0]
    _combine_with(
        _keep_masked,
        rows,
        base,
        start,
        stop,
        masks,
        coefficients,
        weights,
        consensus,
        normalize,
        linear_divisor,
        scale,
        out,
    )


@_compiled
def combine_random(
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    base: np.ndarray,
    start: int,
    stop: int,
    keys: np.ndarray,
    thresholds: np.ndarray,
    coefficients: np.ndarray,
    weights: np.ndarray,
    consensus: bool,
    normalize: bool,
    linear_divisor: Scalar,
    scale: Scalar,
    out: np.ndarray,
) -> None:
    """``combine`` with DARE's keep decisions hashed in the loop, as ``random_mask``
    draws them from keys[i] and thresholds[i] (keys, thresholds (SLOTS,) uint32; an
    unused slot has threshold 0): no mask is stored or read."""
    rules = (
        (np.uint32(keys[0] + start), thresholds[0]),
        (np.uint32(keys[1] + start), thresholds[1]),
        (np.uint32(keys[2] + start), thresholds[2]),
        (np.uint32(keys[3] + start), thresholds[3]),
    )
    _combine_with(
        _keep_hashed,
        rows,
        base,
        start,
        stop,
        rules,
        coefficients,
        weights,
        consensus,
        normalize,
        linear_divisor,
        scale,
        out,
    )
