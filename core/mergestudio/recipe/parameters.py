"""Resolving a parameter's value for one tensor, as mergekit does: the most specific
block that sets it wins (slice source → output slice → global), gradients are
interpolated by the tensor's relative position ``t`` in its slice, and conditions are
matched against the tensor name, first match wins."""

from __future__ import annotations

from collections.abc import Sequence

from mergestudio.methods.registry import ScalarValue
from mergestudio.recipe.model import Condition, Parameters, ParameterSetting


def evaluate_setting(setting: ParameterSetting, tensor_name: str, t: float) -> ScalarValue | None:
    """The value of one setting for a tensor at relative position ``t`` in [0, 1]."""
    if isinstance(setting, Condition):
        return _evaluate_conditions([setting], tensor_name, t)
    if not isinstance(setting, list):
        return setting
    if not setting:
        return None
    if all(isinstance(e, Condition) for e in setting):
        return _evaluate_conditions(setting, tensor_name, t)  # type: ignore[arg-type]
    return interpolate_gradient(setting, t)  # type: ignore[arg-type]


def interpolate_gradient(values: Sequence[float], t: float) -> float:
    """Piecewise-linear interpolation of evenly spaced ``values`` at ``t`` in [0, 1]."""
    if len(values) == 1:
        return values[0]
    scaled = t * (len(values) - 1)
    left = int(scaled)
    right = min(len(values) - 1, left + 1)
    frac = scaled - left
    return (1 - frac) * values[left] + frac * values[right]


def _evaluate_conditions(conditions: Sequence[Condition], tensor_name: str, t: float) -> ScalarValue | None:
    for condition in conditions:
        if condition.filter in (None, "*") or condition.filter in tensor_name:
            return evaluate_setting(condition.value, tensor_name, t)
    return None


def resolve(
    name: str,
    blocks: Sequence[Parameters | None],
    tensor_name: str,
    t: float,
) -> ScalarValue | None:
    """The first non-None value of parameter ``name`` among ``blocks`` (most specific first)."""
    for block in blocks:
        if block and name in block:
            value = evaluate_setting(block[name], tensor_name, t)
            if value is not None:
                return value
    return None
