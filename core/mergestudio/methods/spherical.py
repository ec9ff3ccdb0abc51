"""Spherical interpolation between two models."""

from __future__ import annotations

import math

import torch

from mergestudio.methods.registry import MergeInputs, Param, register

# Above this |cos| the two tensors are nearly colinear and slerp's sin(θ) ≈ 0 would blow
# up; mergekit switches to linear interpolation there, and so do we.
COLINEAR_THRESHOLD = 0.9995


def slerp_pair(t: float, start: torch.Tensor, end: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation from ``start`` (t=0) to ``end`` (t=1), both (*shape,)
    float; the angle is measured between the flattened tensors. A tensor with norm below
    ``eps`` is used unnormalised, as mergekit does."""
    flat_start, flat_end = start.reshape(-1), end.reshape(-1)
    start_norm = float(torch.linalg.vector_norm(flat_start))
    end_norm = float(torch.linalg.vector_norm(flat_end))
    scale = (start_norm if start_norm > eps else 1.0) * (end_norm if end_norm > eps else 1.0)
    cos = float(torch.dot(flat_start, flat_end)) / scale
    if abs(cos) > COLINEAR_THRESHOLD:
        return torch.lerp(start, end, t)
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    start_scale = math.sin((1 - t) * theta) / sin_theta
    end_scale = math.sin(t * theta) / sin_theta
    return (start * start_scale).add_(end, alpha=end_scale)


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
)
def slerp(inputs: MergeInputs, *, t: float) -> torch.Tensor:
    assert inputs.base is not None
    return slerp_pair(float(t), inputs.base, inputs.tensors[0])
