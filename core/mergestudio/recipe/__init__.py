"""Recipes: mergekit-compatible YAML, validated against the method registry."""

from mergestudio.recipe.model import Condition, InputModel, InputSlice, OutputSlice, Recipe
from mergestudio.recipe.parameters import evaluate_setting, interpolate_gradient, resolve
from mergestudio.recipe.validate import validate_recipe

__all__ = [
    "Condition",
    "InputModel",
    "InputSlice",
    "OutputSlice",
    "Recipe",
    "evaluate_setting",
    "interpolate_gradient",
    "resolve",
    "validate_recipe",
]
