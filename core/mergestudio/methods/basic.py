"""Weighted averages and task arithmetic, and passthrough for slices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mergestudio.methods.common import WEIGHT_DOC, weighted_sum, zero_weight_sum_check
from mergestudio.methods.registry import MergeInputs, Param, register


def _linear_bf16(
    rows: Sequence[np.ndarray], base: np.ndarray | None, out: np.ndarray, *, weight: Sequence[float], normalize: bool
) -> int:
    """``linear`` on bf16 bits in one pass (``FusedFunction``)."""
    from mergestudio.methods import bf16_kernels

    divisor = float(sum(weight)) if normalize else 0.0  # the plan refuses a zero sum
    return bf16_kernels.weighted_sum_bf16(rows, weight, None, out, divisor=divisor)


def _task_arithmetic_bf16(
    rows: Sequence[np.ndarray],
    base: np.ndarray | None,
    out: np.ndarray,
    *,
    weight: Sequence[float],
    normalize: bool,
    **scale: float,
) -> int:
    """``task_arithmetic`` on bf16 bits in one pass (``FusedFunction``)."""
    from mergestudio.methods import bf16_kernels

    assert base is not None
    total = float(sum(weight))
    divisor = (total if abs(total) >= 1e-8 else 1.0) if normalize else 0.0
    return bf16_kernels.weighted_sum_bf16(rows, weight, base, out, divisor=divisor, scale=scale["lambda"])


_WEIGHT = Param("weight", "float", WEIGHT_DOC, per_model=True, ui_low=-1.0, ui_high=2.0)


@register(
    "linear",
    family="averaging",
    summary="Weighted average of the models' weights (model soup).",
    math="θ = Σᵢ wᵢ θᵢ / Σᵢ wᵢ (the division only when normalize is true).",
    paper="arXiv:2203.05482",
    params=(
        _WEIGHT,
        Param("normalize", "bool", "Divide by the sum of the weights.", default=True),
    ),
    elementwise=True,
    check=zero_weight_sum_check("weight", "normalize"),
    propagates_nonfinite=True,
    fused=_linear_bf16,
)
def linear(inputs: MergeInputs, *, weight: Sequence[float], normalize: bool) -> torch.Tensor:
    merged = weighted_sum(inputs.tensors, weight, inputs.scratch)
    if normalize:
        merged /= float(sum(weight))
    return merged


@register(
    "task_arithmetic",
    family="task arithmetic",
    summary="Add the weighted task vectors (model minus base) to the base.",
    math="θ = θ_base + λ Σᵢ wᵢ τᵢ, τᵢ = θᵢ − θ_base (divided by Σᵢ wᵢ when normalize).",
    paper="arXiv:2212.04089",
    params=(
        _WEIGHT,
        Param(
            "normalize", "bool", "Divide the summed task vectors by the sum of the weights.", default=False
        ),
        Param("lambda", "float", "Scale of the summed task vector.", default=1.0, ui_low=0.0, ui_high=2.0),
    ),
    needs_base=True,
    elementwise=True,
    propagates_nonfinite=True,  # θ_base enters as −(Σw)θ_base + θ_base: a NaN stays NaN even at Σw = 0
    fused=_task_arithmetic_bf16,
)
def task_arithmetic(
    inputs: MergeInputs, *, weight: Sequence[float], normalize: bool, **scale: float
) -> torch.Tensor:
    assert inputs.base is not None
    # Σ wᵢ(θᵢ − θ_base) = Σ wᵢθᵢ − (Σ wᵢ)θ_base: no (n, *shape) temporary.
    merged = weighted_sum(inputs.tensors, weight, inputs.scratch)
    merged.sub_(inputs.base, alpha=float(sum(weight)))
    if normalize:
        total = float(sum(weight))
        # mergekit treats a weight sum of ~0 as 1 rather than dividing by zero.
        merged /= total if abs(total) >= 1e-8 else 1.0
    merged *= scale["lambda"]
    return merged.add_(inputs.base)


@register(
    "passthrough",
    family="slicing",
    summary="Copy one model's tensor unchanged (for slices and frankenmerges).",
    math="θ = s · θ₁ with the optional per-model scale s.",
    params=(
        Param(
            "scale",
            "float",
            "Multiply the tensor by this factor.",
            default=1.0,
            per_model=True,
            ui_low=0.0,
            ui_high=2.0,
        ),
    ),
    elementwise=True,
    max_models=1,
    propagates_nonfinite=True,
)
def passthrough(inputs: MergeInputs, *, scale: Sequence[float]) -> torch.Tensor:
    tensor = inputs.tensors[0]
    return tensor * scale[0] if scale[0] != 1.0 else tensor.clone()
