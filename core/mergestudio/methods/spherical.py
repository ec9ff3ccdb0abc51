"""Spherical interpolation between two models.

Slerp needs three scalars of the whole tensors (both norms and their dot product), so it
streams: one pass over flat ranges for the Gram matrix (``methods.gram``), then the
interpolation, elementwise, range by range. The in-memory function runs the same passes
over ``TensorChunks``, so both give the same bits.
"""

from __future__ import annotations

import math

import torch

from mergestudio.methods.chunks import FlatChunks, TensorChunks, spans
from mergestudio.methods.gram import GRAM_BLOCK, GRAM_STREAM_BYTES, norm, streamed_gram
from mergestudio.methods.registry import MergeInputs, Param, register

# Above this |cos| the two tensors are nearly colinear and slerp's sin(θ) ≈ 0 would blow
# up; mergekit switches to linear interpolation there, and so do we.
COLINEAR_THRESHOLD = 0.9995


def slerp_pair(t: float, start: torch.Tensor, end: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation from ``start`` (t=0) to ``end`` (t=1), both (*shape,)
    float; the angle is measured between the flattened tensors. A tensor with norm below
    ``eps`` is used unnormalised, as mergekit does. A new tensor."""
    result = torch.empty(start.numel(), dtype=start.dtype, device=start.device)
    chunks = TensorChunks(end.reshape(1, -1), start.reshape(-1), result)
    streamed_slerp(chunks, None, tuple(start.shape), t=t, eps=eps)
    return result.reshape(start.shape)


def slerp_scales(
    t: float, start_norm: float, end_norm: float, dot: float, eps: float = 1e-8
) -> tuple[float, float] | None:
    """(start's factor, end's factor) of the interpolation, or None when the tensors are
    nearly colinear (then it is linear: lerp by t)."""
    scale = (start_norm if start_norm > eps else 1.0) * (end_norm if end_norm > eps else 1.0)
    cos = dot / scale
    if abs(cos) > COLINEAR_THRESHOLD:
        return None
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    return math.sin((1 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta


def streamed_slerp(
    chunks: FlatChunks,
    generator: torch.Generator | None,
    shape: tuple[int, ...],
    *,
    t: float,
    eps: float = 1e-8,
) -> None:
    """Slerp from the base (t=0) to the one input (t=1) over ``chunks``: the Gram pass,
    then each range of the result written through ``chunks``."""
    gram = streamed_gram(chunks, "inputs_and_base")  # rows: the input, then the base
    t = float(t)
    scales = slerp_scales(t, norm(gram, 1), norm(gram, 0), float(gram[0, 1]), eps)
    for start, stop in spans(chunks, GRAM_BLOCK):
        # Rows: the input (0), the base (1): base·s₀ + x·s₁, as the torch lines below.
        if scales is not None and chunks.weighted_sum_stored(start, stop, (1, 0), scales):
            continue
        x, base = chunks.read(start, stop)
        out = chunks.output(start, stop)
        if scales is None:
            torch.lerp(base, x[0], t, out=out)
        else:
            torch.mul(base, scales[0], out=out).add_(x[0], alpha=scales[1])
        chunks.commit(start, stop)


@register(
    "slerp",
    family="spherical",
    summary="Spherical interpolation between the base and one other model.",
    math="θ = sin((1−t)Ω)/sin Ω · θ_base + sin(tΩ)/sin Ω · θ₁, Ω the angle between them; "
    "linear interpolation when they are nearly colinear.",
    paper="Shoemake 1985; used for models by mergekit",
    params=(
        Param(
            "t",
            "float",
            "Interpolation factor: 0 is the base, 1 the other model.",
            default=None,
            low=None,
            high=None,
            ui_low=0.0,
            ui_high=1.0,
        ),
    ),
    needs_base=True,
    min_models=1,
    max_models=1,
    streamed=streamed_slerp,
    stream_bytes=GRAM_STREAM_BYTES,
)
def slerp(inputs: MergeInputs, *, t: float) -> torch.Tensor:
    assert inputs.base is not None
    return slerp_pair(float(t), inputs.base, inputs.tensors[0])
