"""Checking a recipe against the method registry: the method exists, every parameter
name belongs to it, sits at a level it may sit, and every value fits its declaration."""

from __future__ import annotations

from mergestudio.errors import RecipeError
from mergestudio.methods.plugins import get_post_process
from mergestudio.methods.registry import MethodSpec, get_method
from mergestudio.recipe.model import Condition, ParameterSetting, PostProcess, Recipe


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
    if recipe.post_process is not None:
        _validate_post_process(recipe, method, recipe.post_process)
    return method


def _validate_post_process(recipe: Recipe, method: MethodSpec, post: PostProcess) -> None:
    plugin = get_post_process(post.name)
    base = recipe.base_model or next((s.base_model for s in recipe.slices or [] if s.base_model), None)
    if plugin.needs_base and not method.takes_base(base):
        reason = f"a method that uses it ({method.name!r} does not)" if base else "a base_model"
        raise RecipeError(f"post_process: {plugin.name!r} works on task vectors: it needs {reason}")
    for key, value in (post.parameters or {}).items():
        param = plugin.param(key)
        if param is None:
            valid = ", ".join(p.name for p in plugin.params) or "none"
            raise RecipeError(
                f"post_process.parameters.{key}: unknown parameter for {plugin.name!r}; valid: {valid}"
            )
        param.check(value, f"post_process.parameters.{key}")


def _values(setting: ParameterSetting) -> list[bool | int | float | str]:
    if isinstance(setting, Condition):
        return _values(setting.value)
    if isinstance(setting, list):
        values: list[bool | int | float | str] = []
        for element in setting:
            values.extend(_values(element) if isinstance(element, Condition) else [element])
        return values
    return [setting]
