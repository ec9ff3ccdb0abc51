"""Resolving a parameter's value for one tensor, as mergekit does: the most specific
block that sets it wins (slice source → output slice → global), gradients are
interpolated by the tensor's relative position ``t`` in its slice, and conditions are
matched against the tensor name, first match wins. A ``filter`` also matches a tensor
whose block label it equals (``IN04``, ``M00``, ``decoder 3``): block names of families
such as SD UNets, which no tensor name contains (mergekit's substring rule is unchanged)."""

from __future__ import annotations

from collections.abc import Sequence

from mergestudio.methods.registry import ScalarValue
from mergestudio.recipe.model import Condition, Parameters, ParameterSetting


def evaluate_setting(
    setting: ParameterSetting, tensor_name: str, t: float, block: str | None = None
) -> ScalarValue | None:
    """The value of one setting for a tensor at relative position ``t`` in [0, 1]."""
    if isinstance(setting, Condition):
        return _evaluate_conditions([setting], tensor_name, t, block)
    if not isinstance(setting, list):
        return setting
    if not setting:
        return None
    if all(isinstance(e, Condition) for e in setting):
        return _evaluate_conditions(setting, tensor_name, t, block)  # type: ignore[arg-type]
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


def _evaluate_conditions(
    conditions: Sequence[Condition], tensor_name: str, t: float, block: str | None
) -> ScalarValue | None:
    for condition in conditions:
        pattern = condition.filter
        if pattern in (None, "*") or pattern in tensor_name or (block is not None and pattern == block):
            return evaluate_setting(condition.value, tensor_name, t, block)
    return None


def resolve(
    name: str,
    blocks: Sequence[Parameters | None],
    tensor_name: str,
    t: float,
    block_label: str | None = None,
) -> ScalarValue | None:
    """The first non-None value of parameter ``name`` among ``blocks`` (most specific first)."""
    for block in blocks:
        if block and name in block:
            value = evaluate_setting(block[name], tensor_name, t, block_label)
            if value is not None:
                return value
    return None
