"""Checking a recipe against the method registry: the method exists, every parameter
name belongs to it, sits at a level it may sit, and every value fits its declaration."""

from __future__ import annotations

from mergestudio.errors import RecipeError
from mergestudio.methods.registry import MethodSpec, get_method
from mergestudio.recipe.model import Condition, ParameterSetting, Recipe


def validate_recipe(recipe: Recipe) -> MethodSpec:
    """Raise RecipeError naming the key of the first problem; return the method."""
    method = get_method(recipe.merge_method)
    if method.needs_base and not recipe.base_model and not any(s.base_model for s in recipe.slices or []):
        raise RecipeError(f"base_model: method {method.name!r} needs a base_model")
    for where, block, model in recipe.parameter_blocks():
        for key, setting in block.items():
            param = method.param(key)
            if param is None:
                valid = ", ".join(p.name for p in method.params) or "none"
                raise RecipeError(
                    f"{where}.{key}: unknown parameter for method {method.name!r}; valid: {valid}"
                )
            if model is not None and not param.per_model:
                raise RecipeError(
                    f"{where}.{key}: {key!r} is one value for the whole merge, not per model; "
                    "set it under the top-level parameters"
                )
            for value in _values(setting):
                param.check(value, f"{where}.{key}")
    return method


def _values(setting: ParameterSetting) -> list[bool | int | float | str]:
    if isinstance(setting, Condition):
        return _values(setting.value)
    if isinstance(setting, list):
        values: list[bool | int | float | str] = []
        for element in setting:
            values.extend(_values(element) if isinstance(element, Condition) else [element])
        return values
    return [setting]
