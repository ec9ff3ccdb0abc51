"""Geometric averages: Model Stock, NuSLERP, Multi-SLERP and the Karcher mean, with
mergekit's parameters and behaviour.

NuSLERP and Multi-SLERP take an optional base (they then work on task vectors); they
use ``inputs.base`` when the planner supplies one. Tensors are (n_models, *shape) in the
compute dtype; every function returns a new (*shape,) tensor.

Model Stock, NuSLERP and the Karcher mean need only norms and angles of whole tensors:
they stream (``streamed=``), a pass over flat ranges for the Gram matrix of the inputs or
task vectors (``methods.gram``), then an elementwise combination range by range. Their
in-memory functions run the same passes over ``TensorChunks``, so both give the same bits.
Per-row variants (Model Stock's ``filter_wise``, NuSLERP without flattening) read whole
rows per range instead; NuSLERP's ``nuslerp_row_wise`` (vectors down the columns) holds
the whole tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from mergestudio.errors import RecipeError
from mergestudio.methods.chunks import FlatChunks, TensorChunks, spans
from mergestudio.methods.common import WEIGHT_DOC, zero_weight_sum_check
from mergestudio.methods.gram import GRAM_BLOCK, GRAM_STREAM_BYTES, norm, streamed_gram
from mergestudio.methods.registry import MergeInputs, Param, StreamedFunction, register

_REQUIRED_WEIGHT = Param("weight", "float", WEIGHT_DOC, per_model=True, ui_low=0.0, ui_high=2.0)
_OPTIONAL_BASE = (
    "A base_model is optional: with one, the task vectors (model − base) are interpolated and the "
    "result added to the base."
)


def _model_stock_streamed(
    chunks: FlatChunks, generator: torch.Generator | None, shape: tuple[int, ...], *, filter_wise: bool
) -> None:
    """Model Stock over ``chunks``: the task vectors' Gram matrix gives the mean pairwise
    cosine and the ratio t, then t·mean(θᵢ) + (1−t)·θ_base range by range."""
    n = chunks.n_models
    if filter_wise and len(shape) >= 2:
        # Each row is its own vector: whole rows per range, each merged as it comes.
        width = chunks.numel // shape[0]
        for start, stop in spans(chunks, width):
            x, base = chunks.read(start, stop)
            rows = base.reshape(-1, width)
            merged = _model_stock_rows(x.reshape(n, *rows.shape), rows)
            chunks.output(start, stop).copy_(merged.reshape(-1))
            chunks.commit(start, stop)
        return
    gram = streamed_gram(chunks, "task_vectors")
    norms = [norm(gram, i) for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    cosines = [min(1.0, max(-1.0, float(gram[i, j]) / max(norms[i] * norms[j], 1e-6))) for i, j in pairs]
    cos = sum(cosines) / len(cosines)
    t = (n * cos) / (1 + (n - 1) * cos)
    for start, stop in spans(chunks, GRAM_BLOCK):
        x, base = chunks.read(start, stop)
        out = chunks.output(start, stop)
        for lo in range(0, stop - start, GRAM_BLOCK):
            hi = min(stop - start, lo + GRAM_BLOCK)
            average = x[:, lo:hi].mean(0)
            torch.mul(average, t, out=out[lo:hi]).add_(base[lo:hi] * (1 - t))
        chunks.commit(start, stop)


def _model_stock_rows(models: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Model Stock per row: models (n, r, d), the base's rows (r, d) -> (r, d)."""
    n = models.shape[0]
    offsets = models - rows
    norms = torch.linalg.vector_norm(offsets, dim=-1)  # (n, rows)
    cosines = []
    for i in range(n):
        for j in range(i + 1, n):
            dot = (offsets[i] * offsets[j]).sum(-1)
            cosines.append((dot / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(0).unsqueeze(-1)  # (rows, 1)
    t = (n * cos) / (1 + (n - 1) * cos)
    average = models.mean(0)
    return t * average + (1 - t) * rows


@register(
    "model_stock",
    family="geometric",
    summary="Interpolate between the base and the average of the fine-tunes by a ratio set by the "
    "angle between their task vectors.",
    math="cos θ = mean pairwise cosine of τᵢ; t = N cos θ / (1 + (N−1) cos θ); θ = t·mean(θᵢ) + (1−t)·θ_base",
    paper="Jang et al., Model Stock, ECCV 2024, arXiv:2403.19522",
    params=(
        Param(
            "filter_wise",
            "bool",
            "Compute the ratio per row (1-D tensors are one row) instead of per tensor.",
            default=False,
        ),
    ),
    needs_base=True,
    min_models=2,
    notes="Cosines are clamped to [−1, 1] with norms floored at 1e-6, as in mergekit.",
    streamed=_model_stock_streamed,
    stream_bytes=GRAM_STREAM_BYTES,
)
def model_stock(inputs: MergeInputs, *, filter_wise: bool) -> torch.Tensor:
    return _in_memory(_model_stock_streamed, inputs, filter_wise=filter_wise)


def _nuslerp_pair(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Slerp along the last dimension of v0, v1 (..., d): every leading index is its own
    pair of vectors; nearly colinear pairs (|sin θ| < eps) are interpolated linearly."""
    u0 = v0 / torch.linalg.vector_norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.linalg.vector_norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    theta = torch.acos((u0 * u1).sum(-1, keepdim=True).clamp(-1, 1))
    sin_theta = torch.sin(theta)
    colinear = sin_theta.abs() < eps
    safe_sin = torch.where(colinear, torch.ones_like(sin_theta), sin_theta)
    curved = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / safe_sin
    return torch.where(colinear, (1 - t) * v0 + t * v1, curved)


def _nuslerp_streamed(
    chunks: FlatChunks,
    generator: torch.Generator | None,
    shape: tuple[int, ...],
    *,
    weight: Sequence[float],
    nuslerp_flatten: bool,
    nuslerp_row_wise: bool,
) -> None:
    if chunks.n_models == 1:
        _copy_first(chunks)
        return
    total = float(weight[0]) + float(weight[1])
    t = 0.5 if abs(total) < 1e-6 else float(weight[1]) / total
    if nuslerp_flatten or len(shape) <= 1:
        _nuslerp_flat(chunks, t)
        return
    # Vectors along the last dimension are whole rows of the flat tensor; vectors down
    # the columns (row-wise) span all of it, so that variant reads it in one range.
    width = chunks.numel if nuslerp_row_wise else shape[-1]
    for start, stop in spans(chunks, width):
        v0, v1, base = _nuslerp_vectors(chunks, start, stop, 0, stop - start)
        if nuslerp_row_wise:
            pair = (v0.reshape(shape).transpose(0, -1), v1.reshape(shape).transpose(0, -1))
            result = _nuslerp_pair(t, *pair).transpose(0, -1).reshape(-1)
        else:
            result = _nuslerp_pair(t, v0.reshape(-1, width), v1.reshape(-1, width)).reshape(-1)
        out = chunks.output(start, stop)
        if base is not None:
            torch.add(result, base, out=out)
        else:
            out.copy_(result)
        chunks.commit(start, stop)


def _nuslerp_flat(chunks: FlatChunks, t: float, eps: float = 1e-8) -> None:
    """NuSLERP of the two whole (flattened) vectors: the angle from the Gram matrix, then
    ``_nuslerp_pair``'s formula range by range."""
    gram = streamed_gram(chunks, "task_vectors" if chunks.has_base else "inputs")
    dot = float(gram[0, 1]) / (max(norm(gram, 0), 1e-7) * max(norm(gram, 1), 1e-7))
    theta = math.acos(min(1.0, max(-1.0, dot)))
    sin_theta = math.sin(theta)
    colinear = abs(sin_theta) < eps
    for start, stop in spans(chunks, GRAM_BLOCK):
        out = chunks.output(start, stop)
        for lo in range(0, stop - start, GRAM_BLOCK):
            hi = min(stop - start, lo + GRAM_BLOCK)
            v0, v1, base = _nuslerp_vectors(chunks, start, stop, lo, hi)
            if colinear:
                merged = (1 - t) * v0 + t * v1
            else:
                merged = (math.sin((1 - t) * theta) * v0 + math.sin(t * theta) * v1) / sin_theta
            if base is not None:
                merged += base
            out[lo:hi].copy_(merged)
        chunks.commit(start, stop)


def _nuslerp_vectors(
    chunks: FlatChunks, start: int, stop: int, lo: int, hi: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The two vectors NuSLERP interpolates over entries [lo, hi) of the read range
    [start, stop) (task vectors with a base; new tensors), and the base's entries."""
    if not chunks.has_base:
        x = chunks.read_inputs(start, stop)
        return x[0, lo:hi].clone(), x[1, lo:hi].clone(), None
    x, base = chunks.read(start, stop)
    return x[0, lo:hi] - base[lo:hi], x[1, lo:hi] - base[lo:hi], base[lo:hi]


@register(
    "nuslerp",
    family="spherical",
    summary="Spherical interpolation between two models (or their task vectors), weighted, "
    "over the whole tensor, its rows or its columns.",
    math="t = w₂/(w₁+w₂); θ = slerp(t, θ₁, θ₂) (on task vectors with a base, then + θ_base)",
    paper="mergekit (Goddard et al., 2024, arXiv:2403.13257); Shoemake 1985",
    params=(
        _REQUIRED_WEIGHT,
        Param("nuslerp_flatten", "bool", "Treat the whole tensor as one vector.", default=True),
        Param(
            "nuslerp_row_wise",
            "bool",
            "Without flatten: interpolate along dimension 0 (each column is a vector, as mergekit "
            "computes it) instead of the last dimension.",
            default=False,
        ),
    ),
    min_models=1,
    max_models=2,
    optional_base=True,
    notes=_OPTIONAL_BASE + " With a weight sum of ~0, t = 0.5.",
    streamed=_nuslerp_streamed,
    stream_bytes=GRAM_STREAM_BYTES,
)
def nuslerp(
    inputs: MergeInputs, *, weight: Sequence[float], nuslerp_flatten: bool, nuslerp_row_wise: bool
) -> torch.Tensor:
    return _in_memory(
        _nuslerp_streamed,
        inputs,
        weight=weight,
        nuslerp_flatten=nuslerp_flatten,
        nuslerp_row_wise=nuslerp_row_wise,
    )


@register(
    "multislerp",
    family="spherical",
    summary="Weighted spherical barycentre of any number of models, through the tangent space at "
    "their normalised weighted mean.",
    math="uᵢ = θᵢ/‖θᵢ‖; m = Σwᵢuᵢ/‖Σwᵢuᵢ‖; v = Σwᵢ(uᵢ − (uᵢ·m)m); θ = (Σwᵢ‖θᵢ‖)(m cos‖v‖ + v sin‖v‖/‖v‖)",
    paper="Goddard, Multi-SLERP (mergekit); Buss & Fillmore 2001, spherical averages",
    params=(
        _REQUIRED_WEIGHT,
        Param("normalize_weights", "bool", "Divide the weights by their sum.", default=True),
        Param("eps", "float", "Small constant for numerical stability.", default=1e-8, low=0.0, high=1e-2),
    ),
    min_models=1,
    optional_base=True,
    check=zero_weight_sum_check("weight", "normalize_weights"),
    notes=_OPTIONAL_BASE + " When the weighted mean direction vanishes, two models fall back to a "
    "linear blend; more raise an error, as in mergekit.",
)
def multislerp(
    inputs: MergeInputs, *, weight: Sequence[float], normalize_weights: bool, eps: float
) -> torch.Tensor:
    if inputs.n_models == 1:
        return inputs.tensors[0].clone()
    base = inputs.base
    tensors = inputs.tensors - base if base is not None else inputs.tensors
    flat = tensors.reshape(inputs.n_models, -1)
    weights = torch.tensor([float(w) for w in weight], dtype=flat.dtype, device=flat.device)
    if normalize_weights:
        weights = weights / weights.sum()
    norms = torch.linalg.vector_norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights[:, None]).sum(0)
    mean_norm = float(torch.linalg.vector_norm(mean))
    if mean_norm < eps:
        if inputs.n_models == 2:
            result = (flat * weights[:, None]).sum(0)
            return _with_base(result.reshape(inputs.tensors.shape[1:]), base)
        raise RecipeError(
            f"{inputs.name}: multislerp: the weighted mean direction is zero (antipodal models with "
            "balancing weights); change the weights"
        )
    mean = mean / mean_norm
    tangents = units - (units @ mean)[:, None] * mean
    tangent = (tangents * weights[:, None]).sum(0)
    tangent_norm = float(torch.linalg.vector_norm(tangent)) + eps
    direction = mean * math.cos(tangent_norm) + tangent * (math.sin(tangent_norm) / tangent_norm)
    scale = (norms.squeeze(-1) * weights).sum()
    return _with_base((direction * scale).reshape(inputs.tensors.shape[1:]), base)


def _with_base(result: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    return result + base if base is not None else result


def _karcher_streamed(
    chunks: FlatChunks,
    generator: torch.Generator | None,
    shape: tuple[int, ...],
    *,
    weight: Sequence[float],
    max_iter: int,
    tol: float,
) -> None:
    """The Karcher mean through the Gram matrix of the inputs: the mean stays a linear
    combination Σ cⱼ uⱼ of the unit directions uⱼ = θⱼ/‖θⱼ‖ (the first guess is one, and
    every step adds tangents that are), so each iteration's dot products and norms are
    read off the Gram matrix in float64 and no whole tensor is held; the result is then
    Σⱼ (scale·cⱼ/‖θⱼ‖) θⱼ, range by range."""
    n = chunks.n_models
    if n == 1:
        _copy_first(chunks)
        return
    total = float(sum(weight))
    alphas = [float(w) / total if total else 1.0 / n for w in weight]
    gram = streamed_gram(chunks, "inputs")
    norms = [norm(gram, i) for i in range(n)]
    scale = sum(alpha * length for alpha, length in zip(alphas, norms, strict=True))
    valid = [i for i, length in enumerate(norms) if length > tol]
    coefficients = [0.0] * n
    if valid:
        mean = _karcher_mean(gram, norms, alphas, valid, int(max_iter), float(tol))
        for i, c in zip(valid, mean, strict=True):
            coefficients[i] = scale * float(c) / norms[i]
    _combine(chunks, coefficients)


def _karcher_mean(
    gram: np.ndarray, norms: list[float], alphas: list[float], valid: list[int], max_iter: int, tol: float
) -> np.ndarray:
    """(k,) coefficients c of the Karcher mean Σ cⱼ uⱼ over the ``valid`` models' unit
    directions, iterated as exp_m(Σᵢ wᵢ log_m(uᵢ)) on their Gram matrix."""
    lengths = np.array([norms[i] for i in valid])
    units = gram[np.ix_(valid, valid)] / np.outer(lengths, lengths)  # uᵢ · uⱼ
    valid_sum = sum(alphas[i] for i in valid)
    weights = np.array(
        [alphas[i] / valid_sum for i in valid] if valid_sum else [1.0 / len(valid)] * len(valid)
    )

    def length_of(c: np.ndarray) -> float:
        return math.sqrt(max(float(c @ units @ c), 0.0))

    mean_norm = length_of(weights)
    mean = np.eye(len(valid))[0] if mean_norm < tol else weights / mean_norm
    for _ in range(max_iter):
        tangent = np.zeros(len(valid))
        dots = units @ mean  # m · uᵢ
        for i, alpha in enumerate(weights):
            dot = min(1.0, max(-1.0, float(dots[i])))
            angle = math.acos(dot)
            if angle < tol:
                continue
            factor = alpha * angle / math.sin(angle)
            tangent[i] += factor  # factor · (uᵢ − dot · m)
            tangent -= (factor * dot) * mean
        step = length_of(tangent)
        if step < tol:
            break
        mean = mean * math.cos(step) + tangent * (math.sin(step) / step)
        length = length_of(mean)
        if length > tol:
            mean = mean / length
    return mean


def _combine(chunks: FlatChunks, coefficients: list[float]) -> None:
    """The result Σᵢ coefficients[i] · input i, range by range (zero coefficients are
    skipped; all zero gives zeros)."""
    used = [(i, c) for i, c in enumerate(coefficients) if c != 0.0]
    for start, stop in spans(chunks, GRAM_BLOCK):
        out = chunks.output(start, stop)
        if not used:
            out.zero_()
        else:
            x = chunks.read_inputs(start, stop)
            first, c = used[0]
            torch.mul(x[first], c, out=out)
            for i, c in used[1:]:
                out.add_(x[i], alpha=c)
        chunks.commit(start, stop)


def _copy_first(chunks: FlatChunks) -> None:
    """The result is the first input, range by range."""
    for start, stop in spans(chunks, GRAM_BLOCK):
        chunks.output(start, stop).copy_(chunks.read_inputs(start, stop)[0])
        chunks.commit(start, stop)


def _in_memory(streamed: StreamedFunction, inputs: MergeInputs, **params: object) -> torch.Tensor:
    """A streamed method over tensors in memory (the same passes, one range): a new
    (*shape,) tensor."""
    shape = tuple(inputs.tensors.shape[1:])
    flat = inputs.tensors.reshape(inputs.n_models, -1)
    base = inputs.base.reshape(-1) if inputs.base is not None else None
    result = torch.empty(flat.shape[1], dtype=flat.dtype, device=flat.device)
    streamed(TensorChunks(flat, base, result), inputs.generator, shape, **params)
    return result.reshape(shape)


@register(
    "karcher",
    family="spherical",
    summary="Riemannian (Karcher) mean of the models' directions on the unit sphere, scaled by "
    "their mean norm.",
    math="m ← exp_m(Σᵢ αᵢ log_m(uᵢ)) until ‖Σᵢ αᵢ log_m(uᵢ)‖ < tol; θ = (Σᵢ αᵢ‖θᵢ‖) m",
    paper="Karcher 1977; Grove & Karcher 1973 (Riemannian centre of mass)",
    params=(
        Param(
            "weight",
            "float",
            "Relative weight (our extension; mergekit weighs models equally).",
            default=1.0,
            per_model=True,
            low=0.0,
            ui_high=2.0,
        ),
        Param("max_iter", "int", "Maximum iterations.", default=10, low=1, high=1000, ui_high=50),
        Param("tol", "float", "Convergence tolerance.", default=1e-5, low=0.0, high=1.0, ui_high=1e-2),
    ),
    min_models=1,
    notes="Zero tensors are left out of the direction (their norm still counts in the scale).",
    streamed=_karcher_streamed,
    stream_bytes=GRAM_STREAM_BYTES,
)
def karcher(inputs: MergeInputs, *, weight: Sequence[float], max_iter: int, tol: float) -> torch.Tensor:
    return _in_memory(_karcher_streamed, inputs, weight=weight, max_iter=max_iter, tol=tol)
