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
from mergestudio.methods.common import WEIGHT_DOC
from mergestudio.methods.registry import MergeInputs, Param, ParamValues, register
from mergestudio.methods.sparse import (
    CHUNK,
    TopK,
    TopKMask,
    bernoulli_mask,
    chunk_bounds,
    della_keep_probabilities,
    della_row_mask,
    halves,
    on_compiled_path,
    probability_threshold,
    top_k_rules,
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


@dataclass
class _Kept:
    """How the combining pass keeps entries: a chunk mask, per-model rescale factors and,
    for inverse-density DELLA, a per-entry factor (n, numel).

    Magnitude sparsifiers also give their rules: entries in the top rules (one per
    model) and not in the drop rules (Breadcrumbs) are kept; DARE on the compiled path
    gives its hashed streams. The compiled CPU path applies those itself and calls
    ``mask`` only when there are neither (DELLA's stored masks), with τ = None, from two
    threads at once: such masks never look at τ and keep no state between chunks."""

    mask: ChunkMask
    scales: list[float]
    entry_scale: torch.Tensor | None = None
    top: list[TopK] | None = None
    drop: list[TopK] | None = None
    streams: _HashedStreams | None = None


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
    shape = inputs.base.shape
    flat_inputs = inputs.tensors.reshape(inputs.n_models, -1)
    flat_base = inputs.base.reshape(-1)
    kept = _prepare(flat_inputs, flat_base, sparsify, inputs.generator, tuple(shape))
    how = _Combining(
        [float(w) * s for w, s in zip(weights, kept.scales, strict=True)],
        [float(w) for w in weights],
        consensus,
        normalize,
        scale,
    )
    return _combine(flat_inputs, flat_base, kept, how, inputs.scratch).view(shape)


def _combine(
    inputs: torch.Tensor,
    base: torch.Tensor,
    kept: _Kept,
    how: _Combining,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """The streaming pass: per chunk, τ = x − base, mask, weight, elect, add to base.
    The compiled path writes into ``scratch`` ((numel,) float32) when given."""
    if on_compiled_path(inputs):
        if _fits_compiled(inputs, kept):
            return _combine_compiled(inputs, base, kept, how, scratch)
        return _combine_numpy(inputs, base, kept, how)
    device, dtype = inputs.device, inputs.dtype
    numel = base.numel()
    out = torch.empty(numel, dtype=dtype, device=device)
    coefficient_col = torch.tensor(how.coefficients, dtype=dtype, device=device).unsqueeze(1)
    weight_col = torch.tensor(how.weights, dtype=dtype, device=device).unsqueeze(1)
    consensus, normalize, scale, linear_divisor = how.consensus, how.normalize, how.scale, how.linear_divisor
    for start, stop in chunk_bounds(numel):
        tau = inputs[:, start:stop] - base[start:stop]
        if kept.mask is not None:
            tau.mul_(kept.mask(start, stop, tau))
        if kept.entry_scale is not None:
            tau.mul_(kept.entry_scale[:, start:stop])
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
    return out


def _combine_numpy(
    inputs: torch.Tensor,
    base: torch.Tensor,
    kept: _Kept,
    how: _Combining,
) -> torch.Tensor:
    """``_combine`` on the CPU through numpy: the same arithmetic, into buffers reused
    across chunks; numpy's elementwise kernels on cache-sized arrays are several times
    faster than torch's single-threaded ones there."""
    x, b = inputs.numpy(), base.numpy()
    n, numel = x.shape
    out = np.empty(numel, dtype=x.dtype)
    coefficient_col = np.array(how.coefficients, dtype=x.dtype)[:, None]
    weight_row = np.array(how.weights, dtype=x.dtype)
    consensus, normalize, scale, linear_divisor = how.consensus, how.normalize, how.scale, how.linear_divisor
    entry_scale = kept.entry_scale.numpy() if kept.entry_scale is not None else None
    tau_buffer = np.empty((n, min(CHUNK, numel)), dtype=x.dtype)
    for start, stop in chunk_bounds(numel):
        tau = tau_buffer[:, : stop - start]
        np.subtract(x[:, start:stop], b[start:stop], out=tau)
        if kept.mask is not None:
            np.multiply(tau, _as_numpy(kept.mask(start, stop, tau)), out=tau)
        if entry_scale is not None:
            np.multiply(tau, entry_scale[:, start:stop], out=tau)
        np.multiply(tau, coefficient_col, out=tau)
        merged = tau.sum(0)
        if consensus:
            # See _combine. copysign differs from "+ where ≥ 0" only at −0.0, where every
            # τ is zero and nothing agrees either way.
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
        np.add(b[start:stop], merged, out=out[start:stop])
    return torch.from_numpy(out)


def _fits_compiled(inputs: torch.Tensor, kept: _Kept) -> bool:
    """The compiled kernel holds up to 4 models and no per-entry scale (inverse-density
    DELLA); anything else takes the numpy loop."""
    return inputs.shape[0] <= _SLOTS and kept.entry_scale is None


# Models the compiled combining kernel takes at once (kernels.SLOTS; not imported from
# there because importing numba is deferred until a merge needs it).
_SLOTS = 4


def _combine_compiled(
    inputs: torch.Tensor,
    base: torch.Tensor,
    kept: _Kept,
    how: _Combining,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """``_combine`` through the compiled kernels: (n, numel) float32 -> (numel,)."""
    from mergestudio.methods import kernels

    x, b = inputs.numpy(), base.numpy()
    n, numel = x.shape
    pad = _SLOTS - n
    rows = tuple(np.ascontiguousarray(row) for row in x) + (b,) * pad
    coefficient = np.array(how.coefficients + [0.0] * pad, dtype=np.float32)
    weight = np.array(how.weights + [0.0] * pad, dtype=np.float32)
    consensus, normalize = how.consensus, how.normalize
    divisor, scale32 = np.float32(how.linear_divisor), np.float32(how.scale)
    fits = scratch is not None and scratch.dtype == torch.float32 and scratch.numel() == numel
    out = scratch.numpy() if fits and scratch is not None else np.empty(numel, dtype=np.float32)
    # The arguments every combining kernel ends with: how kept values are joined, and where.
    joining = (coefficient, weight, consensus, normalize, divisor, scale32, out)
    if kept.mask is None or kept.top is not None:
        top = kept.top or [TopK.keep_all(numel)] * n
        drop = kept.drop or [TopK.keep_none()] * n
        padding = np.full(pad, np.inf, dtype=np.float32)
        pieces = [
            (piece_start, piece_stop, np.concatenate([lower, padding]), np.concatenate([upper, padding]))
            for start, stop, lower, upper in _rule_segments(rows[:n], b, top, drop, numel)
            for piece_start, piece_stop in halves(start, stop)
        ]

        def combine(piece: tuple[int, int, np.ndarray, np.ndarray]) -> None:
            start, stop, lower, upper = piece
            kernels.combine(rows, b, start, stop, lower, upper, *joining)

        run_parallel(combine, pieces)
        return torch.from_numpy(out)
    if kept.streams is not None:
        keys = np.array(kept.streams.keys + [0] * pad, dtype=np.uint32)
        thresholds = np.array(kept.streams.thresholds + [0] * pad, dtype=np.uint32)

        def combine_random(piece: tuple[int, int]) -> None:
            start, stop = piece
            kernels.combine_random(rows, b, start, stop, keys, thresholds, *joining)

        run_parallel(combine_random, halves(0, numel))
        return torch.from_numpy(out)
    chunk_mask = kept.mask
    assert chunk_mask is not None  # no mask at all took the rules path above

    def combine_masked(piece: tuple[int, int]) -> None:
        piece_start, piece_stop = piece
        for start in range(piece_start, piece_stop, CHUNK):
            stop = min(piece_stop, start + CHUNK)
            mask = _as_numpy(chunk_mask(start, stop, None))
            masks = tuple(np.ascontiguousarray(row) for row in mask)
            masks += (np.zeros(stop - start, dtype=np.bool_),) * pad
            kernels.combine_masked(rows, b, start, masks, *joining)

    run_parallel(combine_masked, halves(0, numel))
    return torch.from_numpy(out)


def _tie_cut(row: np.ndarray, base: np.ndarray, rule: TopK) -> int:
    """The flat position before which entries equal to the rule's threshold are kept."""
    from mergestudio.methods import kernels

    if rule.all_ties:
        length: int = row.shape[0]
        return length
    if rule.ties == 0:
        return 0
    return int(kernels.tie_cut(row, base, True, np.float32(rule.threshold), rule.ties))


def _rule_segments(
    rows: tuple[np.ndarray, ...], base: np.ndarray, top: list[TopK], drop: list[TopK], numel: int
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Ranges of flat positions over which every model keeps "t < |τ| <= u", t and u
    the same throughout: (start, stop, t per model, u per model). A model keeps the
    entries its top rule keeps and its drop rule does not. Before a rule's tie cut its
    ties count as above the threshold: there "≥ t" is "> the float just below t"."""
    top_cuts = [_tie_cut(row, base, rule) for row, rule in zip(rows, top, strict=True)]
    drop_cuts = [_tie_cut(row, base, rule) for row, rule in zip(rows, drop, strict=True)]
    lower = np.array([rule.threshold for rule in top], dtype=np.float32)
    upper = np.array([rule.threshold for rule in drop], dtype=np.float32)
    lower_below = np.nextafter(lower, np.float32(-np.inf))
    upper_below = np.where(upper == np.inf, upper, np.nextafter(upper, np.float32(-np.inf)))
    cuts = (c for c in top_cuts + drop_cuts if 0 < c < numel)
    points = sorted({0, numel, *cuts})
    segments = []
    for start, stop in itertools.pairwise(points):
        top_ties = np.array([stop <= cut for cut in top_cuts])
        drop_ties = np.array([stop <= cut for cut in drop_cuts])
        segments.append(
            (
                start,
                stop,
                np.where(top_ties, lower_below, lower).astype(np.float32),
                np.where(drop_ties, upper_below, upper).astype(np.float32),
            )
        )
    return segments


def _as_numpy(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    return mask.numpy() if isinstance(mask, torch.Tensor) else mask


def _prepare(
    inputs: torch.Tensor,
    base: torch.Tensor,
    settings: SparsifySettings,
    generator: torch.Generator | None,
    shape: tuple[int, ...],
) -> _Kept:
    n, numel = inputs.shape
    ones = [1.0] * n
    densities = settings.densities
    if settings.kind == "none" or all(d >= 1.0 for d in densities):
        # mergekit leaves a task vector untouched at density ≥ 1, rescale or not.
        return _Kept(None, ones)
    if settings.kind == "magnitude":
        ks = [numel if d >= 1.0 else int(d * numel) for d in densities]
        rules = top_k_rules(inputs, base, ks)
        mask: ChunkMask = _threshold_mask(TopKMask(rules))
        return _Kept(mask, _norm_scales(inputs, base, mask, settings.rescale, ones), top=rules)
    if settings.kind == "outliers":
        return _outliers(inputs, base, settings)
    if generator is None:
        raise RecipeError("this method is stochastic and needs a random generator")
    if settings.kind == "random":
        return _random(inputs, base, settings, generator)
    return _della(inputs, base, settings, generator, shape)


def _threshold_mask(rule: TopKMask) -> ChunkMask:
    def mask(start: int, stop: int, tau: torch.Tensor) -> torch.Tensor:
        return rule(abs(tau), start)

    return mask


def _outliers(inputs: torch.Tensor, base: torch.Tensor, settings: SparsifySettings) -> _Kept:
    """Model Breadcrumbs: drop the top ``gamma`` fraction and enough of the smallest
    entries to keep ``density``; i.e. keep descending ranks [n_top, n_top + n_keep)."""
    n, numel = inputs.shape
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
    outer_rules = top_k_rules(inputs, base, outer)
    inner_rules = top_k_rules(inputs, base, inner)
    outer_mask, inner_mask = TopKMask(outer_rules), TopKMask(inner_rules)

    def mask(start: int, stop: int, tau: torch.Tensor) -> torch.Tensor:
        magnitudes = abs(tau)
        return outer_mask(magnitudes, start) & ~inner_mask(magnitudes, start)

    scales = _norm_scales(inputs, base, mask, settings.rescale, [1.0] * n)
    return _Kept(mask, scales, top=outer_rules, drop=inner_rules)


def _norm_scales(
    inputs: torch.Tensor,
    base: torch.Tensor,
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
    before = torch.zeros(inputs.shape[0], dtype=torch.float64)
    after = torch.zeros(inputs.shape[0], dtype=torch.float64)
    for start, stop in chunk_bounds(base.numel()):
        tau = inputs[:, start:stop] - base[start:stop]
        _accumulate_norms(before, after, tau, mask(start, stop, tau), rescale)
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


def _random(
    inputs: torch.Tensor, base: torch.Tensor, settings: SparsifySettings, generator: torch.Generator
) -> _Kept:
    """DARE: keep each entry with probability density, then rescale."""
    n, numel = inputs.shape
    probabilities = [min(1.0, max(0.0, d)) for d in settings.densities]
    if on_compiled_path(inputs):
        return _random_compiled(inputs, base, settings, generator, probabilities)
    if settings.rescale in (None, "inverse_density"):
        # No statistics needed: masks are drawn in the combining pass itself.
        scales = [1.0] * n
        if settings.rescale == "inverse_density":
            scales = [_inverse(probability_threshold(p)) for p in probabilities]

        def draw(start: int, stop: int, tau: torch.Tensor) -> torch.Tensor:
            return bernoulli_mask((n, stop - start), probabilities, generator, inputs.device)

        return _Kept(draw, scales)
    masks = torch.empty((n, numel), dtype=torch.bool, device=inputs.device)
    before = torch.zeros(n, dtype=torch.float64)
    after = torch.zeros(n, dtype=torch.float64)
    for start, stop in chunk_bounds(numel):
        keep = bernoulli_mask((n, stop - start), probabilities, generator, inputs.device)
        masks[:, start:stop] = keep
        _accumulate_norms(before, after, inputs[:, start:stop] - base[start:stop], keep, settings.rescale)
    return _Kept(_stored(masks), _scales_from_norms(before, after, settings.rescale))


_NORM_KINDS = {"linf": 0, "l1": 1, "l2": 2}


def _random_compiled(
    inputs: torch.Tensor,
    base: torch.Tensor,
    settings: SparsifySettings,
    generator: torch.Generator,
    probabilities: list[float],
) -> _Kept:
    """``_random`` on the CPU: keep decisions hashed from (one draw of the tensor's
    generator, model, position), recomputed per chunk by the combining pass (and by the
    norm pass before it) instead of drawn and stored. Same keep probabilities as the
    torch path (15-bit words), a different random stream."""
    from mergestudio.methods import kernels

    n, numel = inputs.shape
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
    x, b = inputs.numpy(), base.numpy()
    kind = _NORM_KINDS[settings.rescale]

    def norms(item: tuple[int, int, int]) -> tuple[int, float, float]:
        i, start, stop = item
        before, after = kernels.random_norms(
            x[i, start:stop], b[start:stop], keys[i], start, thresholds[i], kind
        )
        return i, before, after

    # Fixed pieces summed in a fixed order: the norms do not depend on the threads.
    pieces = [(i, start, stop) for i in range(n) for start, stop in halves(0, numel)]
    scales = _scales_from_sums(run_parallel(norms, pieces), n, settings.rescale)
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


def _stored(masks: torch.Tensor) -> ChunkMask:
    def mask(start: int, stop: int, tau: torch.Tensor) -> torch.Tensor:
        return masks[:, start:stop]

    return mask


def _della(
    inputs: torch.Tensor,
    base: torch.Tensor,
    settings: SparsifySettings,
    generator: torch.Generator,
    shape: tuple[int, ...],
) -> _Kept:
    """DELLA (MagPrune): per row, keep probability rises linearly with magnitude rank
    from density−ε to density+ε; rescale as asked. 1-D tensors are one row; tensors of
    more dimensions are (shape[0], rest) rows."""
    n, numel = inputs.shape
    for density, epsilon in zip(settings.densities, settings.epsilons, strict=True):
        if 0 < density < 1 and (density - epsilon <= 0 or density + epsilon >= 1):
            raise RecipeError(
                f"epsilon: density ± epsilon must lie in (0, 1); got density={density}, epsilon={epsilon}"
            )
    columns = numel // shape[0] if len(shape) >= 2 and shape[0] else numel
    rows = numel // columns if columns else 0
    rows_per_chunk = max(1, CHUNK // max(columns, 1))
    inverse = settings.rescale == "inverse_density"
    if on_compiled_path(inputs) and not inverse:
        return _della_compiled(inputs, base, settings, generator, rows, columns, rows_per_chunk)
    masks = torch.empty((n, numel), dtype=torch.bool, device=inputs.device)
    entry_scale = torch.empty((n, numel), dtype=inputs.dtype, device=inputs.device) if inverse else None
    before = torch.zeros(n, dtype=torch.float64)
    after = torch.zeros(n, dtype=torch.float64)
    for row_start in range(0, rows, rows_per_chunk):
        row_stop = min(rows, row_start + rows_per_chunk)
        start, stop = row_start * columns, row_stop * columns
        tau = inputs[:, start:stop] - base[start:stop]
        magnitudes = tau.abs().view(n, row_stop - row_start, columns)
        for i, (density, epsilon) in enumerate(zip(settings.densities, settings.epsilons, strict=True)):
            keep = _della_model_mask(magnitudes[i], density, epsilon, generator)
            masks[i, start:stop] = keep.view(-1)
            if entry_scale is not None:
                entry_scale[i, start:stop] = _della_inverse(magnitudes[i], density, epsilon).view(-1)
        if settings.rescale not in (None, "inverse_density"):
            _accumulate_norms(before, after, tau, masks[:, start:stop], settings.rescale)
    scales = [1.0] * n
    if settings.rescale not in (None, "inverse_density"):
        scales = _scales_from_norms(before, after, settings.rescale)
    return _Kept(_stored(masks), scales, entry_scale)


def _della_compiled(
    inputs: torch.Tensor,
    base: torch.Tensor,
    settings: SparsifySettings,
    generator: torch.Generator,
    rows: int,
    columns: int,
    rows_per_chunk: int,
) -> _Kept:
    """``_della`` on the CPU: each (model, block of rows) sorted by numpy and its keep
    decisions drawn by the compiled kernel from hashed positions (a different stream
    than the torch path's, the same probabilities), blocks side by side on the cores."""
    from mergestudio.methods import kernels

    x, b = inputs.numpy(), base.numpy()
    n, numel = x.shape
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    keys = [kernels.stream_key(seed, i) for i in range(n)]
    masks = np.empty((n, numel), dtype=np.bool_)
    kind = _NORM_KINDS.get(settings.rescale or "", -1)

    def block(item: tuple[int, int]) -> tuple[int, float, float]:
        i, row_start = item
        row_stop = min(rows, row_start + rows_per_chunk)
        start, stop = row_start * columns, row_stop * columns
        density, epsilon = settings.densities[i], settings.epsilons[i]
        keep = masks[i, start:stop]
        if density >= 1.0 or density <= 0.0:
            keep[:] = density >= 1.0
        else:
            magnitudes = np.abs(x[i, start:stop] - b[start:stop]).reshape(row_stop - row_start, columns)
            ordered = np.sort(magnitudes, axis=1)
            kernels.della_mask(
                magnitudes, ordered, keys[i], start, density, epsilon, keep.reshape(magnitudes.shape)
            )
        if kind < 0:
            return i, 0.0, 0.0
        before, after = kernels.masked_norms(x[i, start:stop], b[start:stop], keep, kind)
        return i, before, after

    items = [(i, row_start) for i in range(n) for row_start in range(0, rows, rows_per_chunk)]
    sums = run_parallel(block, items)
    scales = [1.0] * n
    if settings.rescale is not None:
        # Block sums added in a fixed order: the result does not depend on the threads.
        scales = _scales_from_sums(sums, n, settings.rescale)
    return _Kept(_stored(torch.from_numpy(masks)), scales)


def _della_model_mask(
    magnitudes: torch.Tensor, density: float, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    if density >= 1.0:
        return torch.ones(magnitudes.shape, dtype=torch.bool, device=magnitudes.device)
    if density <= 0.0:
        return torch.zeros(magnitudes.shape, dtype=torch.bool, device=magnitudes.device)
    return della_row_mask(magnitudes, density, epsilon, generator)


def _della_inverse(magnitudes: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """(rows, C): 1/p of each entry's keep probability, from its rank in its row (the
    highest rank of its tie group, matching ``della_row_mask``)."""
    if density >= 1.0 or density <= 0.0:
        return torch.ones_like(magnitudes)
    columns = magnitudes.shape[1]
    probabilities = della_keep_probabilities(columns, density, epsilon).to(magnitudes)
    ordered = magnitudes.sort(dim=1).values
    ranks = torch.searchsorted(ordered, magnitudes, right=True).sub_(1).clamp_(0, columns - 1)
    return probabilities[ranks].reciprocal_()


# ---- registration ----------------------------------------------------------------------

_RANDOM_STREAMS = (
    "On the CPU the keep decisions are hashed from (the tensor's seed, model, position); other "
    "devices draw them from torch's generator: the same probabilities, different draws."
)
_DARE_NOTE = (
    "Keep probabilities are resolved to 1/32768. rescale_norm=inverse_density gives the paper's 1/p. "
    + _RANDOM_STREAMS
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
    n = inputs.n_models
    settings = SparsifySettings(
        kind=sparsification,
        densities=tuple(float(d) for d in (density or (1.0,) * n)),
        rescale=rescale_norm if rescale else None,  # type: ignore[arg-type]
        gammas=tuple(float(g) for g in (gamma or (0.0,) * n)),
        epsilons=tuple(float(e) for e in (epsilon or (0.0,) * n)),
    )
    return merge_task_vectors(
        inputs,
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
