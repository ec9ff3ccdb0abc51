"""Generalised task arithmetic: TIES, DARE, DELLA, Model Breadcrumbs and their linear
variants are one computation with two switches, how each task vector is sparsified and
whether a sign is elected per entry (mergekit's semantics, our code):

1. τᵢ = θᵢ − θ_base; τᵢ ← sparsify(τᵢ) (optionally rescaled to keep its norm);
2. τᵢ ← wᵢ τᵢ;
3. with consensus: s = sign(Σᵢ τᵢ) (+ where the sum is 0); keep τᵢ where sign(τᵢ) = s;
   δ = Σ kept τᵢ, divided (normalize) by Σ wᵢ over the kept entries (1 where none);
   without: δ = Σᵢ τᵢ, divided (normalize) by Σᵢ wᵢ (1 when |Σ wᵢ| < 1e-8);
4. θ = θ_base + λ δ.

The work is streamed over chunks of every task vector (see ``sparse``): a statistics pass
per sparsifier where it needs one (thresholds, norms, random masks), then one combining
pass that recomputes τ per chunk and writes the merged values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch

from mergestudio.errors import RecipeError
from mergestudio.methods.chunks import FlatChunks, TensorChunks, spans
from mergestudio.methods.common import WEIGHT_DOC
from mergestudio.methods.registry import MergeInputs, Param, ParamValues, register
from mergestudio.methods.sparse import (
    CHUNK,
    TopK,
    TopKMask,
    chunk_bounds,
    della_keep_probabilities,
    halves,
    probability_threshold,
    streamed_top_k_rules,
)
from mergestudio.parallel import run_parallel

Sparsification = Literal["none", "magnitude", "random", "outliers", "della"]
RescaleNorm = Literal["l1", "l2", "linf", "inverse_density"]
# A keep-mask source for the combining pass: (start, stop, τ chunk (n, L)) -> (n, L) bool,
# or None when every entry is kept. τ and the mask are torch tensors, or numpy arrays on
# the CPU fast path (a stored torch mask is converted there).
ChunkMask = Callable[[int, int, Any], Any] | None

# ---- parameter declarations ------------------------------------------------------------

WEIGHT = Param("weight", "float", WEIGHT_DOC, per_model=True, ui_low=-1.0, ui_high=2.0)
DENSITY = Param(
    "density",
    "float",
    "Fraction of the task vector's entries to keep (1 keeps all).",
    default=1.0,
    per_model=True,
    low=0.0,
    high=1.0,
)
LAMBDA = Param("lambda", "float", "Scale of the merged task vector.", default=1.0, ui_low=0.0, ui_high=2.0)
INT8_MASK = Param(
    "int8_mask",
    "bool",
    "Accepted for mergekit recipes; masks are always stored as booleans here, so it changes nothing.",
    default=False,
)
GAMMA = Param(
    "gamma",
    "float",
    "Fraction of the largest-magnitude entries to drop as outliers.",
    default=0.01,
    per_model=True,
    low=0.0,
    high=1.0,
    ui_high=0.1,
)
EPSILON = Param(
    "epsilon",
    "float",
    "Half-width of the keep-probability range: ranks run from density−ε to density+ε.",
    default=0.15,
    per_model=True,
    low=0.0,
    high=0.5,
)
RESCALE_NORM = Param(
    "rescale_norm",
    "choice",
    "What rescaling preserves: the task vector's l1 (mergekit), l2 or max norm, or "
    "inverse_density: divide survivors by their keep probability (the DARE/DELLA papers).",
    default="l1",
    choices=("l1", "l2", "linf", "inverse_density"),
)


def _normalize_param(default: bool) -> Param:
    return Param(
        "normalize",
        "bool",
        "Divide by the sum of the weights that contributed to each entry.",
        default=default,
    )


def _rescale_param(default: bool) -> Param:
    return Param(
        "rescale", "bool", "Rescale each sparsified task vector (see rescale_norm).", default=default
    )


# ---- the computation -------------------------------------------------------------------


@dataclass(frozen=True)
class SparsifySettings:
    kind: Sparsification
    densities: tuple[float, ...]
    rescale: RescaleNorm | None
    gammas: tuple[float, ...] = ()
    epsilons: tuple[float, ...] = ()


# A per-range hook of the combining pass: called with each read range (start, stop) and
# its inputs (n, L) and base (L,) before the range is combined (DELLA draws or unpacks
# its masks for the range there).
RangeHook = Callable[[int, int, torch.Tensor, torch.Tensor], None]


@dataclass
class _Kept:
    """How the combining pass keeps entries: a chunk mask, per-model rescale factors and,
    for inverse-density DELLA, a per-entry factor.

    ``mask(start, stop, τ)`` gives the (n, L) keep mask of flat positions [start, stop),
    called in flat order (torch and numpy loops walk ``CHUNK``-entry pieces). Magnitude
    sparsifiers also give their rules: entries in the top rules (one per model) and not
    in the drop rules (Breadcrumbs) are kept; DARE on the compiled path gives its hashed
    streams. The compiled CPU path applies those itself and calls ``mask`` only when
    there are neither (DELLA's masks), with τ = None, from two threads at once: such
    masks never look at τ and keep no state between chunks. ``align``: read ranges are
    whole multiples of it (the unit the statistics are summed by)."""

    mask: ChunkMask
    scales: list[float]
    entry_scale: Callable[[int, int], torch.Tensor] | None = None
    top: list[TopK] | None = None
    drop: list[TopK] | None = None
    streams: _HashedStreams | None = None
    prepare: RangeHook | None = None
    align: int = CHUNK


@dataclass(frozen=True)
class _HashedStreams:
    """DARE's keep decisions on the compiled path: model i keeps flat position j where
    the 15-bit word of (keys[i], j) is below thresholds[i] (``kernels.random_mask``)."""

    keys: list[np.uint32]
    thresholds: list[np.uint32]


@dataclass(frozen=True)
class _Combining:
    """How the combining pass weighs and joins the kept task vectors (module docstring,
    steps 2-4): per-model coefficients (weight × rescale) and weights, sign election,
    normalisation and λ."""

    coefficients: list[float]
    weights: list[float]
    consensus: bool
    normalize: bool
    scale: float

    @property
    def linear_divisor(self) -> float:
        """Σ weights, or 1 when that is (nearly) zero."""
        total = sum(self.weights)
        return total if abs(total) >= 1e-8 else 1.0


def merge_task_vectors(
    inputs: MergeInputs,
    *,
    weights: Sequence[float],
    sparsify: SparsifySettings,
    consensus: bool,
    normalize: bool,
    scale: float,
) -> torch.Tensor:
    """The merged tensor (*shape,) in the compute dtype; see the module docstring."""
    if inputs.base is None:
        raise RecipeError(f"{inputs.name}: this method needs a base_model")
    shape = tuple(inputs.base.shape)
    flat_inputs = inputs.tensors.reshape(inputs.n_models, -1)
    flat_base = inputs.base.reshape(-1)
    result = _result_buffer(inputs.scratch, flat_base)
    chunks = TensorChunks(flat_inputs, flat_base, result)
    stream_task_vectors(
        chunks,
        inputs.generator,
        shape,
        weights=weights,
        sparsify=sparsify,
        consensus=consensus,
        normalize=normalize,
        scale=scale,
    )
    return result.view(shape)


def _result_buffer(scratch: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``scratch`` when it fits ``like`` (numel,), else a new tensor: fresh memory is
    zeroed page by page by the OS, which costs more than a sparsifying merge."""
    if (
        scratch is not None
        and scratch.dtype == like.dtype
        and scratch.device == like.device
        and scratch.numel() == like.numel()
    ):
        return scratch
    return torch.empty_like(like)


def stream_task_vectors(
    chunks: FlatChunks,
    generator: torch.Generator | None,
    shape: tuple[int, ...],
    *,
    weights: Sequence[float],
    sparsify: SparsifySettings,
    consensus: bool,
    normalize: bool,
    scale: float,
) -> None:
    """``merge_task_vectors`` over ranges: a statistics pass per sparsifier where it
    needs one, then the combining pass, each reading ``chunks`` range by range and the
    latter writing the result through it. The result does not depend on the ranges."""
    if chunks.numel == 0:
        return
    kept = _prepare(chunks, sparsify, generator, shape)
    how = _Combining(
        [float(w) * s for w, s in zip(weights, kept.scales, strict=True)],
        [float(w) for w in weights],
        consensus,
        normalize,
        scale,
    )
    _combine(chunks, kept, how)


def _on_compiled(chunks: FlatChunks) -> bool:
    """Float32 on the CPU: the compiled kernels (``kernels``) take the work."""
    return chunks.device.type == "cpu" and chunks.dtype == torch.float32


def _combine(chunks: FlatChunks, kept: _Kept, how: _Combining) -> None:
    """The combining pass: per range, τ = x − base, mask, weight, elect, add to base."""
    compiled = _on_compiled(chunks)
    fits = compiled and _fits_compiled(chunks.n_models, kept)
    cuts = _TieCuts(kept.top, kept.drop, chunks) if fits and (kept.mask is None or kept.top is not None) else None
    for start, stop in spans(chunks, kept.align):
        x, b = chunks.read(start, stop)
        if kept.prepare is not None:
            kept.prepare(start, stop, x, b)
        out = chunks.output(start, stop)
        if fits:
            _combine_compiled(x, b, start, kept, how, out, cuts)
        elif compiled:
            _combine_numpy(x, b, start, kept, how, out)
        else:
            _combine_torch(x, b, start, kept, how, out)
        chunks.commit(start, stop)


def _combine_torch(
    inputs: torch.Tensor, base: torch.Tensor, offset: int, kept: _Kept, how: _Combining, out: torch.Tensor
) -> None:
    """One range (inputs (n, L), base (L,), at flat position ``offset``) into out (L,),
    through torch, ``CHUNK`` entries at a time."""
    device, dtype = inputs.device, inputs.dtype
    coefficient_col = torch.tensor(how.coefficients, dtype=dtype, device=device).unsqueeze(1)
    weight_col = torch.tensor(how.weights, dtype=dtype, device=device).unsqueeze(1)
    consensus, normalize, scale, linear_divisor = how.consensus, how.normalize, how.scale, how.linear_divisor
    for start, stop in chunk_bounds(base.numel()):
        tau = inputs[:, start:stop] - base[start:stop]
        if kept.mask is not None:
            tau.mul_(kept.mask(offset + start, offset + stop, tau))
        if kept.entry_scale is not None:
            tau.mul_(kept.entry_scale(offset + start, offset + stop))
        tau.mul_(coefficient_col)
        merged = tau.sum(0)
        if consensus:
            # Elected sign: + where the sum is ≥ 0. Entries agreeing with it are those with
            # τ·s > 0 (a zero entry has no sign and never counts, as in mergekit), so the
            # agreeing sum is s·Σ max(τ·s, 0): no boolean select over the models.
            sign = torch.where(merged >= 0, 1.0, -1.0).to(dtype)
            aligned = tau.mul_(sign)
            if normalize:
                divisor = ((aligned > 0) * weight_col).sum(0)
            merged = aligned.clamp_min_(0).sum(0).mul_(sign)
            if normalize:
                merged.div_(divisor.masked_fill_(divisor == 0, 1.0))
        elif normalize:
            merged.div_(linear_divisor)
        if scale != 1.0:
            merged.mul_(scale)
        torch.add(base[start:stop], merged, out=out[start:stop])


def _combine_numpy(
    inputs: torch.Tensor, base: torch.Tensor, offset: int, kept: _Kept, how: _Combining, out: torch.Tensor
) -> None:
    """``_combine_torch`` on the CPU through numpy: the same arithmetic, into buffers
    reused across chunks; numpy's elementwise kernels on cache-sized arrays are several
    times faster than torch's single-threaded ones there."""
    x, b, o = inputs.numpy(), base.numpy(), out.numpy()
    n, numel = x.shape
    coefficient_col = np.array(how.coefficients, dtype=x.dtype)[:, None]
    weight_row = np.array(how.weights, dtype=x.dtype)
    consensus, normalize, scale, linear_divisor = how.consensus, how.normalize, how.scale, how.linear_divisor
    tau_buffer = np.empty((n, min(CHUNK, numel)), dtype=x.dtype)
    for start, stop in chunk_bounds(numel):
        tau = tau_buffer[:, : stop - start]
        np.subtract(x[:, start:stop], b[start:stop], out=tau)
        if kept.mask is not None:
            np.multiply(tau, _as_numpy(kept.mask(offset + start, offset + stop, tau)), out=tau)
        if kept.entry_scale is not None:
            np.multiply(tau, _as_numpy(kept.entry_scale(offset + start, offset + stop)), out=tau)
        np.multiply(tau, coefficient_col, out=tau)
        merged = tau.sum(0)
        if consensus:
            # See _combine_torch. copysign differs from "+ where ≥ 0" only at −0.0, where
            # every τ is zero and nothing agrees either way.
            sign = np.copysign(np.ones_like(merged), merged)
            np.multiply(tau, sign, out=tau)
            np.maximum(tau, 0, out=tau)
            merged = tau.sum(0)
            merged *= sign
            if normalize:
                # max(τ·s, 0) > 0 exactly on the agreeing entries. Rows are added one by one:
                # a BLAS matrix-vector product would start threads for every chunk (and
                # np.sign is several times slower than a comparison).
                agreeing = tau > 0
                divisor = agreeing[0] * weight_row[0]
                for row, model_weight in zip(agreeing[1:], weight_row[1:], strict=True):
                    divisor += row * model_weight
                divisor[divisor == 0] = 1.0
                merged /= divisor
        elif normalize:
            merged /= linear_divisor
        if scale != 1.0:
            merged *= scale
        np.add(b[start:stop], merged, out=o[start:stop])


def _fits_compiled(n_models: int, kept: _Kept) -> bool:
    """The compiled kernel holds up to 4 models and no per-entry scale (inverse-density
    DELLA); anything else takes the numpy loop."""
    return n_models <= _SLOTS and kept.entry_scale is None


# Models the compiled combining kernel takes at once (kernels.SLOTS; not imported from
# there because importing numba is deferred until a merge needs it).
_SLOTS = 4


def _combine_compiled(
    inputs: torch.Tensor,
    base: torch.Tensor,
    offset: int,
    kept: _Kept,
    how: _Combining,
    out: torch.Tensor,
    cuts: _TieCuts | None,
) -> None:
    """One range through the compiled kernels: inputs (n, L) float32 at flat position
    ``offset`` -> out (L,)."""
    from mergestudio.methods import kernels

    x, b = inputs.numpy(), base.numpy()
    n, numel = x.shape
    pad = _SLOTS - n
    rows = tuple(np.ascontiguousarray(row) for row in x) + (b,) * pad
    coefficient = np.array(how.coefficients + [0.0] * pad, dtype=np.float32)
    weight = np.array(how.weights + [0.0] * pad, dtype=np.float32)
    consensus, normalize = how.consensus, how.normalize
    divisor, scale32 = np.float32(how.linear_divisor), np.float32(how.scale)
    # The arguments every combining kernel ends with: how kept values are joined, and where.
    joining = (coefficient, weight, consensus, normalize, divisor, scale32, out.numpy())
    if cuts is not None:
        padding = np.full(pad, np.inf, dtype=np.float32)
        pieces = [
            (piece_start, piece_stop, np.concatenate([lower, padding]), np.concatenate([upper, padding]))
            for start, stop, lower, upper in cuts.segments(rows[:n], b, offset)
            for piece_start, piece_stop in halves(start, stop)
        ]

        def combine(piece: tuple[int, int, np.ndarray, np.ndarray]) -> None:
            start, stop, lower, upper = piece
            kernels.combine(rows, b, start, stop, lower, upper, *joining)

        run_parallel(combine, pieces)
        return
    if kept.streams is not None:
        # A draw hashes key + flat position: the range's keys are shifted by its offset
        # (uint32 arithmetic wraps, as the kernel's does).
        keys = np.array([(int(k) + offset) & 0xFFFFFFFF for k in kept.streams.keys] + [0] * pad, dtype=np.uint32)
        thresholds = np.array(kept.streams.thresholds + [0] * pad, dtype=np.uint32)

        def combine_random(piece: tuple[int, int]) -> None:
            start, stop = piece
            kernels.combine_random(rows, b, start, stop, keys, thresholds, *joining)

        run_parallel(combine_random, halves(0, numel))
        return
    chunk_mask = kept.mask
    assert chunk_mask is not None  # no mask at all took the rules path above

    def combine_masked(piece: tuple[int, int]) -> None:
        piece_start, piece_stop = piece
        for start in range(piece_start, piece_stop, CHUNK):
            stop = min(piece_stop, start + CHUNK)
            mask = _as_numpy(chunk_mask(offset + start, offset + stop, None))
            masks = tuple(np.ascontiguousarray(row) for row in mask)
            masks += (np.zeros(stop - start, dtype=np.bool_),) * pad
            kernels.combine_masked(rows, b, start, masks, *joining)

    run_parallel(combine_masked, halves(0, numel))


class _TieCuts:
    """Where each top and drop rule stops keeping entries equal to its threshold: the
    flat position just after its ``ties``-th such entry, found while the ranges pass in
    order (None until found). Before a rule's cut its ties count as above the threshold:
    there "≥ t" is "> the float just below t", so a range splits into segments over which
    every model keeps "t < |τ| <= u" with t and u fixed (a position test in the kernel's
    loop stopped it vectorising)."""

    def __init__(self, top: list[TopK] | None, drop: list[TopK] | None, chunks: FlatChunks) -> None:
        n, numel = chunks.n_models, chunks.numel
        self.top = top or [TopK.keep_all(numel)] * n
        self.drop = drop or [TopK.keep_none()] * n
        self.rules = self.top + self.drop
        self.cuts: list[int | None] = []
        self.budget: list[int] = []
        for rule in self.rules:
            # Every tie kept: the cut is past the end; none: at the start.
            self.cuts.append(numel if rule.all_ties else 0 if rule.ties == 0 else None)
            self.budget.append(rule.ties)
        lower = np.array([rule.threshold for rule in self.top], dtype=np.float32)
        upper = np.array([rule.threshold for rule in self.drop], dtype=np.float32)
        self.lower, self.upper = lower, upper
        self.lower_below = np.nextafter(lower, np.float32(-np.inf))
        self.upper_below = np.where(upper == np.inf, upper, np.nextafter(upper, np.float32(-np.inf)))

    def segments(
        self, rows: tuple[np.ndarray, ...], base: np.ndarray, offset: int
    ) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """The range's segments (start, stop local to it, t per model, u per model), after
        looking for the cuts not found yet in it (rows (L,) per model, base (L,))."""
        from mergestudio.methods import kernels

        n, length = len(rows), base.shape[0]
        for r, rule in enumerate(self.rules):
            if self.cuts[r] is not None:
                continue
            cut, seen = kernels.tie_cut(rows[r % n], base, np.float32(rule.threshold), self.budget[r])
            if seen == self.budget[r]:
                self.cuts[r] = offset + int(cut)
            else:
                self.budget[r] -= int(seen)
        # A cut not found yet lies beyond this range: every position here is before it.
        cuts = [length + 1 if c is None else c - offset for c in self.cuts]
        points = sorted({0, length, *(c for c in cuts if 0 < c < length)})
        top_cuts, drop_cuts = cuts[:n], cuts[n:]
        segments = []
        for start, stop in itertools.pairwise(points):
            top_ties = np.array([stop <= cut for cut in top_cuts])
            drop_ties = np.array([stop <= cut for cut in drop_cuts])
            segments.append(
                (
                    start,
                    stop,
                    np.where(top_ties, self.lower_below, self.lower).astype(np.float32),
                    np.where(drop_ties, self.upper_below, self.upper).astype(np.float32),
                )
            )
        return segments


def _as_numpy(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    return mask.numpy() if isinstance(mask, torch.Tensor) else mask


def _prepare(
    chunks: FlatChunks,
    settings: SparsifySettings,
    generator: torch.Generator | None,
    shape: tuple[int, ...],
) -> _Kept:
    n, numel = chunks.n_models, chunks.numel
    ones = [1.0] * n
    densities = settings.densities
    if settings.kind == "none" or all(d >= 1.0 for d in densities):
        # mergekit leaves a task vector untouched at density ≥ 1, rescale or not.
        return _Kept(None, ones)
    if settings.kind == "magnitude":
        ks = [numel if d >= 1.0 else int(d * numel) for d in densities]
        rules = streamed_top_k_rules(chunks, list(range(n)), ks)
        mask: ChunkMask = _threshold_mask(TopKMask(rules))
        return _Kept(mask, _norm_scales(chunks, mask, settings.rescale, ones), top=rules)
    if settings.kind == "outliers":
        return _outliers(chunks, settings)
    if generator is None:
        raise RecipeError("this method is stochastic and needs a random generator")
    if settings.kind == "random":
        return _random(chunks, settings, generator)
    return _della(chunks, settings, generator, shape)


def _threshold_mask(rule: TopKMask) -> ChunkMask:
    def mask(start: int, stop: int, tau: torch.Tensor) -> torch.Tensor:
        return rule(abs(tau), start)

    return mask


def _outliers(chunks: FlatChunks, settings: SparsifySettings) -> _Kept:
    """Model Breadcrumbs: drop the top ``gamma`` fraction and enough of the smallest
    entries to keep ``density``; i.e. keep descending ranks [n_top, n_top + n_keep)."""
    n, numel = chunks.n_models, chunks.numel
    outer, inner = [], []
    for density, gamma in zip(settings.densities, settings.gammas, strict=True):
        if density >= 1.0:
            outer.append(numel)
            inner.append(0)
            continue
        keep = int(density * numel)
        top = int(gamma * numel)
        bottom = numel - keep - top
        if bottom < 0:  # gamma too large for the density: drop fewer outliers
            top += bottom
        outer.append(top + keep)
        inner.append(top)
    # Both rule sets from one pass over the ranges.
    rules = streamed_top_k_rules(chunks, list(range(n)) * 2, outer + inner)
    outer_rules, inner_rules = rules[:n], rules[n:]
    outer_mask, inner_mask = TopKMask(outer_rules), TopKMask(inner_rules)

    def mask(start: int, stop: int, tau: torch.Tensor) -> torch.Tensor:
        magnitudes = abs(tau)
        return outer_mask(magnitudes, start) & ~inner_mask(magnitudes, start)

    scales = _norm_scales(chunks, mask, settings.rescale, [1.0] * n)
    return _Kept(mask, scales, top=outer_rules, drop=inner_rules)


def _norm_scales(
    chunks: FlatChunks,
    mask: ChunkMask,
    rescale: RescaleNorm | None,
    default: list[float],
) -> list[float]:
    """Per-model factors that give each masked task vector its unmasked norm, from a
    pass that recomputes the (deterministic) masks. Needed only when rescale is asked
    for a magnitude-based method."""
    if rescale is None or mask is None:
        return default
    if rescale == "inverse_density":
        raise RecipeError("rescale_norm: inverse_density applies to the random methods (DARE, DELLA)")
    n = chunks.n_models
    before = torch.zeros(n, dtype=torch.float64)
    after = torch.zeros(n, dtype=torch.float64)
    for offset, _ in spans(chunks, CHUNK):
        x, b = chunks.read(offset, _)
        for start, stop in chunk_bounds(b.numel()):
            tau = x[:, start:stop] - b[start:stop]
            _accumulate_norms(before, after, tau, mask(offset + start, offset + stop, tau), rescale)
    return _scales_from_norms(before, after, rescale)


def _accumulate_norms(
    before: torch.Tensor, after: torch.Tensor, tau: torch.Tensor, keep: torch.Tensor, rescale: RescaleNorm
) -> None:
    magnitudes = tau.abs()
    kept = magnitudes * keep
    if rescale == "l1":
        before += magnitudes.sum(1, dtype=torch.float64).cpu()
        after += kept.sum(1, dtype=torch.float64).cpu()
    elif rescale == "l2":
        before += magnitudes.square().sum(1, dtype=torch.float64).cpu()
        after += kept.square().sum(1, dtype=torch.float64).cpu()
    else:
        torch.maximum(before, magnitudes.amax(1).double().cpu(), out=before)
        torch.maximum(after, kept.amax(1).double().cpu(), out=after)


def _scales_from_norms(before: torch.Tensor, after: torch.Tensor, rescale: RescaleNorm) -> list[float]:
    if rescale == "l2":
        before, after = before.sqrt(), after.sqrt()
    scales = []
    for b, a in zip(before.tolist(), after.tolist(), strict=True):
        # mergekit leaves a vector unscaled when either norm is (nearly) zero.
        scales.append(1.0 if b < 1e-7 or a < 1e-7 else b / a)
    return scales


def _random(chunks: FlatChunks, settings: SparsifySettings, generator: torch.Generator) -> _Kept:
    """DARE: keep each entry with probability density, then rescale. Keep decisions are
    hashed from (one draw of the tensor's generator, model, position), so they can be
    recomputed for any range by any pass, and every device draws the same ones."""
    probabilities = [min(1.0, max(0.0, d)) for d in settings.densities]
    if _on_compiled(chunks):
        return _random_compiled(chunks, settings, generator, probabilities)
    from mergestudio.methods import torch_kernels

    n, device = chunks.n_models, chunks.device
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    keys = [torch_kernels.stream_key(seed, i) for i in range(n)]
    thresholds = [probability_threshold(p) for p in probabilities]

    def draw(start: int, stop: int, tau: object) -> torch.Tensor:
        return torch.stack(
            [torch_kernels.random_mask(keys[i], start, thresholds[i], stop - start, device) for i in range(n)]
        )

    if settings.rescale in (None, "inverse_density"):
        # No statistics needed: masks are drawn in the combining pass itself.
        scales = [1.0] * n
        if settings.rescale == "inverse_density":
            scales = [_inverse(t) for t in thresholds]
        return _Kept(draw, scales)
    before = torch.zeros(n, dtype=torch.float64)
    after = torch.zeros(n, dtype=torch.float64)
    for offset, end in spans(chunks, CHUNK):
        x, b = chunks.read(offset, end)
        for start, stop in chunk_bounds(end - offset):
            keep = draw(offset + start, offset + stop, None)
            _accumulate_norms(before, after, x[:, start:stop] - b[start:stop], keep, settings.rescale)
    return _Kept(draw, _scales_from_norms(before, after, settings.rescale))


_NORM_KINDS = {"linf": 0, "l1": 1, "l2": 2}


def _random_compiled(
    chunks: FlatChunks,
    settings: SparsifySettings,
    generator: torch.Generator,
    probabilities: list[float],
) -> _Kept:
    """``_random`` on the CPU: keep decisions hashed from (one draw of the tensor's
    generator, model, position), recomputed per chunk by the combining pass (and by the
    norm pass before it) instead of drawn and stored. Same keep probabilities as the
    torch path (15-bit words), a different random stream."""
    from mergestudio.methods import kernels

    n = chunks.n_models
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    keys = [kernels.stream_key(seed, i) for i in range(n)]
    thresholds = [np.uint32(probability_threshold(p)) for p in probabilities]

    def draw(start: int, stop: int, tau: object) -> np.ndarray:
        keep = np.empty((n, stop - start), dtype=np.bool_)
        for i in range(n):
            kernels.random_mask(keys[i], start, thresholds[i], keep[i])
        return keep

    streams = _HashedStreams(keys, thresholds)
    if settings.rescale is None:
        return _Kept(draw, [1.0] * n, streams=streams)
    if settings.rescale == "inverse_density":
        return _Kept(draw, [_inverse(int(t)) for t in thresholds], streams=streams)
    kind = _NORM_KINDS[settings.rescale]
    sums: list[tuple[int, float, float]] = []
    for offset, end in spans(chunks, CHUNK):
        x, b = chunks.read(offset, end)
        rows, base = x.numpy(), b.numpy()
        blocks = list(chunk_bounds(end - offset))
        groups = [blocks[: (len(blocks) + 1) // 2], blocks[(len(blocks) + 1) // 2 :]]

        def norms(
            item: tuple[int, list[tuple[int, int]]], rows: np.ndarray = rows, base: np.ndarray = base, offset: int = offset
        ) -> list[tuple[int, float, float]]:
            i, group = item
            return [
                (i, *kernels.random_norms(rows[i, start:stop], base[start:stop], keys[i], offset + start, thresholds[i], kind))
                for start, stop in group
            ]

        # Norms per ``CHUNK`` block at fixed flat positions, summed in flat order: the
        # result depends neither on the threads nor on the read ranges.
        for part in run_parallel(norms, [(i, group) for i in range(n) for group in groups if group]):
            sums.extend(part)
    sums.sort(key=lambda item: item[0])  # stable: each model's blocks stay in flat order
    scales = _scales_from_sums(sums, n, settings.rescale)
    return _Kept(draw, scales, streams=streams)


def _scales_from_sums(sums: list[tuple[int, float, float]], n: int, rescale: RescaleNorm) -> list[float]:
    """``_scales_from_norms`` from per-piece norms (model, before, after), combined in
    list order."""
    before = torch.zeros(n, dtype=torch.float64)
    after = torch.zeros(n, dtype=torch.float64)
    for i, norm_before, norm_after in sums:
        if rescale == "linf":
            before[i] = max(float(before[i]), norm_before)
            after[i] = max(float(after[i]), norm_after)
        else:
            before[i] += norm_before
            after[i] += norm_after
    return _scales_from_norms(before, after, rescale)


def _inverse(threshold: int) -> float:
    """1/p for the keep probability a 15-bit threshold realises (1 for p = 0)."""
    return 32768.0 / threshold if threshold > 0 else 1.0


class _RangeMasks:
    """Keep masks (and per-entry factors) made for one read range at a time by ``make``
    (start, stop, inputs, base) -> ((n, L) bool, (n, L) factors or None), served to the
    combining pass by flat position."""

    def __init__(
        self, make: Callable[[int, int, torch.Tensor, torch.Tensor], tuple[Any, torch.Tensor | None]]
    ) -> None:
        self.make = make
        self.offset = 0
        self.masks: Any = None
        self.factors: torch.Tensor | None = None

    def prepare(self, start: int, stop: int, inputs: torch.Tensor, base: torch.Tensor) -> None:
        self.offset = start
        self.masks, self.factors = self.make(start, stop, inputs, base)

    def mask(self, start: int, stop: int, tau: object) -> Any:
        return self.masks[:, start - self.offset : stop - self.offset]

    def entry_scale(self, start: int, stop: int) -> torch.Tensor:
        assert self.factors is not None
        return self.factors[:, start - self.offset : stop - self.offset]


def _della(
    chunks: FlatChunks,
    settings: SparsifySettings,
    generator: torch.Generator,
    shape: tuple[int, ...],
) -> _Kept:
    """DELLA (MagPrune): per row, keep probability rises linearly with magnitude rank
    from density−ε to density+ε; rescale as asked. 1-D tensors are one row; tensors of
    more dimensions are (shape[0], rest) rows. Masks are made per block of rows (read
    ranges are whole blocks); the statistics pass, when rescaling needs one, makes them
    first and the combining pass again (the same draws: hashed positions on the CPU, the
    generator's state restored elsewhere)."""
    n, numel = chunks.n_models, chunks.numel
    for density, epsilon in zip(settings.densities, settings.epsilons, strict=True):
        if 0 < density < 1 and (density - epsilon <= 0 or density + epsilon >= 1):
            raise RecipeError(
                f"epsilon: density ± epsilon must lie in (0, 1); got density={density}, epsilon={epsilon}"
            )
    columns = numel // shape[0] if len(shape) >= 2 and shape[0] else numel
    rows_per_chunk = max(1, CHUNK // max(columns, 1))
    block = rows_per_chunk * columns
    inverse = settings.rescale == "inverse_density"
    if _on_compiled(chunks) and not inverse:
        return _della_compiled(chunks, settings, generator, columns, rows_per_chunk)
    norms = settings.rescale not in (None, "inverse_density")
    from mergestudio.methods import torch_kernels

    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    keys = [torch_kernels.stream_key(seed, i) for i in range(n)]

    def model_mask(magnitudes: torch.Tensor, i: int, start: int) -> torch.Tensor:
        """Model i's keep decisions for rows of magnitudes at flat position ``start``."""
        density, epsilon = settings.densities[i], settings.epsilons[i]
        if density >= 1.0 or density <= 0.0:
            return torch.full(magnitudes.shape, density >= 1.0, dtype=torch.bool, device=magnitudes.device)
        ordered = magnitudes.sort(dim=1).values
        return torch_kernels.della_mask(magnitudes, ordered, keys[i], start, density, epsilon)

    def make(start: int, stop: int, x: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The range's masks (and inverse-density factors), block by block, model by model."""
        masks = torch.empty((n, stop - start), dtype=torch.bool, device=x.device)
        factors = torch.empty((n, stop - start), dtype=x.dtype, device=x.device) if inverse else None
        for block_start in range(0, stop - start, block):
            block_stop = min(stop - start, block_start + block)
            tau = x[:, block_start:block_stop] - b[block_start:block_stop]
            magnitudes = tau.abs().view(n, (block_stop - block_start) // columns, columns)
            for i, (density, epsilon) in enumerate(zip(settings.densities, settings.epsilons, strict=True)):
                masks[i, block_start:block_stop] = model_mask(magnitudes[i], i, start + block_start).view(-1)
                if factors is not None:
                    factors[i, block_start:block_stop] = _della_inverse(magnitudes[i], density, epsilon).view(-1)
        return masks, factors

    scales = [1.0] * n
    if norms:
        before = torch.zeros(n, dtype=torch.float64)
        after = torch.zeros(n, dtype=torch.float64)
        for start, stop in spans(chunks, block):
            x, b = chunks.read(start, stop)
            masks, _ = make(start, stop, x, b)
            for block_start in range(0, stop - start, block):
                block_stop = min(stop - start, block_start + block)
                tau = x[:, block_start:block_stop] - b[block_start:block_stop]
                _accumulate_norms(before, after, tau, masks[:, block_start:block_stop], settings.rescale)  # type: ignore[arg-type]
        scales = _scales_from_norms(before, after, settings.rescale)  # type: ignore[arg-type]
    ranges = _RangeMasks(make)
    return _Kept(
        ranges.mask,
        scales,
        ranges.entry_scale if inverse else None,
        prepare=ranges.prepare,
        align=block,
    )


def _della_compiled(
    chunks: FlatChunks,
    settings: SparsifySettings,
    generator: torch.Generator,
    columns: int,
    rows_per_chunk: int,
) -> _Kept:
    """``_della`` on the CPU: each (model, block of rows) sorted by numpy and its keep
    decisions drawn by the compiled kernel from hashed positions (a different stream
    than the torch path's, the same probabilities), blocks side by side on the cores.
    With rescaling, the statistics pass keeps the masks bit-packed (n·numel/8 bytes)
    for the combining pass rather than sorting every row again."""
    from mergestudio.methods import kernels

    n = chunks.n_models
    block = rows_per_chunk * columns
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    keys = [kernels.stream_key(seed, i) for i in range(n)]
    kind = _NORM_KINDS.get(settings.rescale or "", -1)

    def block_mask(x: np.ndarray, b: np.ndarray, i: int, start: int, keep: np.ndarray) -> None:
        """Model i's keep decisions for the block of rows at flat position ``start``."""
        density, epsilon = settings.densities[i], settings.epsilons[i]
        if density >= 1.0 or density <= 0.0:
            keep[:] = density >= 1.0
            return
        magnitudes = np.abs(x - b).reshape(-1, columns)
        ordered = np.sort(magnitudes, axis=1)
        kernels.della_mask(magnitudes, ordered, keys[i], start, density, epsilon, keep.reshape(magnitudes.shape))

    def range_masks(start: int, stop: int, inputs: torch.Tensor, base: torch.Tensor) -> np.ndarray:
        """(n, L) masks of a read range, (model, block) items side by side."""
        x, b = inputs.numpy(), base.numpy()
        masks = np.empty((n, stop - start), dtype=np.bool_)

        def one(item: tuple[int, int]) -> None:
            i, lo = item
            hi = min(stop - start, lo + block)
            block_mask(x[i, lo:hi], b[lo:hi], i, start + lo, masks[i, lo:hi])

        run_parallel(one, [(i, lo) for i in range(n) for lo in range(0, stop - start, block)])
        return masks

    if kind < 0:
        ranges = _RangeMasks(lambda start, stop, x, b: (range_masks(start, stop, x, b), None))
        return _Kept(ranges.mask, [1.0] * n, prepare=ranges.prepare, align=block)
    packed: list[np.ndarray] = []
    sums: list[tuple[int, float, float]] = []
    for start, stop in spans(chunks, block):
        x, b = chunks.read(start, stop)
        masks = range_masks(start, stop, x, b)
        rows, base = x.numpy(), b.numpy()
        for i in range(n):
            for lo in range(0, stop - start, block):
                hi = min(stop - start, lo + block)
                # Block sums added in flat order: the result does not depend on the threads.
                sums.append((i, *kernels.masked_norms(rows[i, lo:hi], base[lo:hi], masks[i, lo:hi], kind)))
        packed.append(np.packbits(masks, axis=1))
    sums.sort(key=lambda item: item[0])  # stable: each model's blocks stay in flat order
    scales = _scales_from_sums(sums, n, settings.rescale)  # type: ignore[arg-type]
    unpacked = iter(packed)

    def unpack(start: int, stop: int, x: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, None]:
        return np.unpackbits(next(unpacked), axis=1, count=stop - start).view(np.bool_), None

    ranges = _RangeMasks(unpack)
    return _Kept(ranges.mask, scales, prepare=ranges.prepare, align=block)


def _della_inverse(magnitudes: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """(rows, C): 1/p of each entry's keep probability, from its rank in its row (the
    highest rank of its tie group, as ``kernels.della_mask`` ranks it)."""
    if density >= 1.0 or density <= 0.0:
        return torch.ones_like(magnitudes)
    columns = magnitudes.shape[1]
    probabilities = della_keep_probabilities(columns, density, epsilon).to(magnitudes)
    ordered = magnitudes.sort(dim=1).values
    ranks = torch.searchsorted(ordered, magnitudes, right=True).sub_(1).clamp_(0, columns - 1)
    return probabilities[ranks].reciprocal_()


# ---- registration ----------------------------------------------------------------------

_RANDOM_STREAMS = (
    "Keep decisions are hashed from (the tensor's seed, model, position): the same draws on every "
    "device (compiled kernels on the CPU, their torch versions elsewhere)."
)
_DARE_NOTE = (
    "Keep probabilities are resolved to 1/32768. rescale_norm=inverse_density gives the paper's 1/p. "
    + _RANDOM_STREAMS
)


def _settings(
    sparsification: Sparsification,
    n: int,
    density: Sequence[float] | None,
    rescale: bool,
    rescale_norm: str,
    gamma: Sequence[float] | None,
    epsilon: Sequence[float] | None,
) -> SparsifySettings:
    return SparsifySettings(
        kind=sparsification,
        densities=tuple(float(d) for d in (density or (1.0,) * n)),
        rescale=rescale_norm if rescale else None,  # type: ignore[arg-type]
        gammas=tuple(float(g) for g in (gamma or (0.0,) * n)),
        epsilons=tuple(float(e) for e in (epsilon or (0.0,) * n)),
    )


def _gta(
    inputs: MergeInputs,
    *,
    sparsification: Sparsification,
    consensus: bool,
    weight: Sequence[float],
    normalize: bool,
    density: Sequence[float] | None = None,
    rescale: bool = False,
    rescale_norm: str = "l1",
    gamma: Sequence[float] | None = None,
    epsilon: Sequence[float] | None = None,
    int8_mask: bool = False,
    **keywords: float,
) -> torch.Tensor:
    """Adapter from declared parameters to ``merge_task_vectors``."""
    settings = _settings(sparsification, inputs.n_models, density, rescale, rescale_norm, gamma, epsilon)
    return merge_task_vectors(
        inputs,
        weights=weight,
        sparsify=settings,
        consensus=consensus,
        normalize=normalize,
        scale=float(keywords.get("lambda", 1.0)),
    )


def _gta_streamed(
    chunks: FlatChunks,
    generator: torch.Generator | None,
    shape: tuple[int, ...],
    *,
    sparsification: Sparsification,
    consensus: bool,
    weight: Sequence[float],
    normalize: bool,
    density: Sequence[float] | None = None,
    rescale: bool = False,
    rescale_norm: str = "l1",
    gamma: Sequence[float] | None = None,
    epsilon: Sequence[float] | None = None,
    int8_mask: bool = False,
    **keywords: float,
) -> None:
    """Adapter from declared parameters to ``stream_task_vectors``."""
    settings = _settings(sparsification, chunks.n_models, density, rescale, rescale_norm, gamma, epsilon)
    stream_task_vectors(
        chunks,
        generator,
        shape,
        weights=weight,
        sparsify=settings,
        consensus=consensus,
        normalize=normalize,
        scale=float(keywords.get("lambda", 1.0)),
    )


def _sparsify_check(sparsification: Sparsification) -> Callable[[ParamValues], str | None]:
    """Constraints between a variant's parameters, checked by the plan before any tensor is
    read: DELLA's keep probabilities must stay in (0, 1), and inverse-density rescaling
    needs a random drop (a magnitude trim has no keep probability to divide by)."""

    def check(params: ParamValues) -> str | None:
        densities = _floats(params.get("density"))
        if sparsification == "della":
            for density, epsilon in zip(densities, _floats(params.get("epsilon")), strict=False):
                if 0 < density < 1 and (density - epsilon <= 0 or density + epsilon >= 1):
                    return (
                        f"epsilon: density ± epsilon must lie in (0, 1); got density={density:g}, "
                        f"epsilon={epsilon:g}"
                    )
        magnitude_based = sparsification in ("magnitude", "outliers")
        if (
            magnitude_based
            and params.get("rescale")
            and params.get("rescale_norm") == "inverse_density"
            and any(d < 1.0 for d in densities)
        ):
            return "rescale_norm: inverse_density applies to the random methods (DARE, DELLA)"
        return None

    return check


def _floats(value: object) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, tuple) else ()


def _register_variant(
    name: str,
    *,
    sparsification: Sparsification,
    consensus: bool,
    normalize: bool,
    rescale: bool,
    summary: str,
    math: str,
    paper: str,
    extra: tuple[Param, ...] = (),
    stochastic: bool = False,
    notes: str = "",
) -> None:
    params: list[Param] = [WEIGHT, DENSITY, *extra, _normalize_param(normalize), LAMBDA, INT8_MASK]
    if sparsification != "none":
        params += [_rescale_param(rescale), RESCALE_NORM]
    function = partial(_gta, sparsification=sparsification, consensus=consensus)
    register(
        name,
        family="task arithmetic",
        summary=summary,
        math=math,
        paper=paper,
        params=params,
        needs_base=True,
        stochastic=stochastic,
        notes=notes,
        check=_sparsify_check(sparsification),
        streamed=partial(_gta_streamed, sparsification=sparsification, consensus=consensus),
    )(function)


_CONSENSUS_MATH = "sign s = sgn Σᵢ wᵢτ̃ᵢ; θ = θ_base + λ Σᵢ wᵢτ̃ᵢ[sgn τ̃ᵢ = s] / Σᵢ wᵢ[sgn τ̃ᵢ = s]"
_LINEAR_MATH = "θ = θ_base + λ Σᵢ wᵢτ̃ᵢ (÷ Σᵢ wᵢ when normalize)"

_register_variant(
    "ties",
    sparsification="magnitude",
    consensus=True,
    normalize=True,
    rescale=False,
    summary="Trim each task vector to its largest-magnitude entries, elect a sign per entry, "
    "average the entries that agree.",
    math="τ̃ᵢ = top-density magnitudes of τᵢ; " + _CONSENSUS_MATH,
    paper="Yadav et al., TIES-Merging, NeurIPS 2023, arXiv:2306.01708",
    notes="Exactly int(density·numel) entries are kept per task vector (ties broken by position), "
    "found by selection rather than a full sort.",
)
_register_variant(
    "dare_ties",
    sparsification="random",
    consensus=True,
    normalize=False,
    rescale=True,
    stochastic=True,
    summary="Drop task-vector entries at random (keep probability density), rescale, then TIES sign "
    "election.",
    math="τ̃ᵢ = mᵢ ⊙ τᵢ · ‖τᵢ‖₁/‖mᵢ⊙τᵢ‖₁, mᵢ ~ Bernoulli(density); " + _CONSENSUS_MATH,
    paper="Yu et al., Language Models are Super Mario (DARE), ICML 2024, arXiv:2311.03099",
    notes=_DARE_NOTE,
)
_register_variant(
    "dare_linear",
    sparsification="random",
    consensus=False,
    normalize=False,
    rescale=True,
    stochastic=True,
    summary="Drop task-vector entries at random (keep probability density), rescale, add.",
    math="τ̃ᵢ = mᵢ ⊙ τᵢ · ‖τᵢ‖₁/‖mᵢ⊙τᵢ‖₁, mᵢ ~ Bernoulli(density); " + _LINEAR_MATH,
    paper="Yu et al., Language Models are Super Mario (DARE), ICML 2024, arXiv:2311.03099",
    notes=_DARE_NOTE,
)
_BREADCRUMBS_NOTE = (
    "Keeps magnitude ranks [n_top, n_top + int(density·n)) from the top, n_top = int(gamma·n) "
    "(reduced so density is met). Unlike mergekit 0.1, a tensor too small for one outlier "
    "(n_top = 0) keeps its top entries instead of nothing."
)
_register_variant(
    "breadcrumbs",
    sparsification="outliers",
    consensus=False,
    normalize=False,
    rescale=False,
    extra=(GAMMA,),
    summary="Drop the largest (outlier) and smallest task-vector entries, add the rest.",
    math="τ̃ᵢ = τᵢ on magnitude ranks between the top gamma and the bottom 1−density−gamma; " + _LINEAR_MATH,
    paper="Davari & Belilovsky, Model Breadcrumbs, ECCV 2024, arXiv:2312.06795",
    notes=_BREADCRUMBS_NOTE,
)
_register_variant(
    "breadcrumbs_ties",
    sparsification="outliers",
    consensus=True,
    normalize=False,
    rescale=False,
    extra=(GAMMA,),
    summary="Model Breadcrumbs sparsification followed by TIES sign election.",
    math="τ̃ᵢ = τᵢ on magnitude ranks between the top gamma and the bottom 1−density−gamma; "
    + _CONSENSUS_MATH,
    paper="Davari & Belilovsky, Model Breadcrumbs, ECCV 2024, arXiv:2312.06795",
    notes=_BREADCRUMBS_NOTE,
)
_DELLA_NOTE = (
    "Rows are the first dimension (1-D tensors are one row). Keep probabilities are resolved to "
    "1/32768; tied magnitudes share their group's highest rank. density ± epsilon must lie in (0, 1). "
    + _RANDOM_STREAMS
)
_register_variant(
    "della",
    sparsification="della",
    consensus=True,
    normalize=True,
    rescale=True,
    extra=(EPSILON,),
    stochastic=True,
    summary="Drop entries at random with keep probability rising with magnitude rank in the row "
    "(MagPrune), rescale, TIES sign election.",
    math="pᵢⱼ = density − ε + 2ε·rankⱼ/(C−1) within each row; τ̃ᵢ = mᵢ⊙τᵢ rescaled; " + _CONSENSUS_MATH,
    paper="Deep et al., DELLA-Merging, arXiv:2406.11617",
    notes=_DELLA_NOTE,
)
_register_variant(
    "della_linear",
    sparsification="della",
    consensus=False,
    normalize=False,
    rescale=True,
    extra=(EPSILON,),
    stochastic=True,
    summary="DELLA's magnitude-ranked random drop and rescale, then add (no sign election).",
    math="pᵢⱼ = density − ε + 2ε·rankⱼ/(C−1) within each row; τ̃ᵢ = mᵢ⊙τᵢ rescaled; " + _LINEAR_MATH,
    paper="Deep et al., DELLA-Merging, arXiv:2406.11617",
    notes=_DELLA_NOTE,
)

__all__ = ["SparsifySettings", "merge_task_vectors"]
