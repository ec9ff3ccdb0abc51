from __future__ import annotations

import pytest
import yaml
from mergestudio.errors import RecipeError
from mergestudio.recipe import Recipe, evaluate_setting, interpolate_gradient, resolve, validate_recipe

SLERP_YAML = """
slices:
  - sources:
      - model: base
        layer_range: [0, 4]
      - model: other
        layer_range: [0, 4]
merge_method: slerp
base_model: base
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
"""

TIES_YAML = """
models:
  - model: base
  - model: a
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: b
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1]
merge_method: task_arithmetic
base_model: base
parameters:
  normalize: true
dtype: float16
random_seed: 7
"""


def test_reads_mergekit_slices_with_filters() -> None:
    recipe = Recipe.from_yaml(SLERP_YAML)
    validate_recipe(recipe)
    assert recipe.slices is not None and recipe.slices[0].sources[1].layer_range == (0, 4)
    t = recipe.parameters["t"] if recipe.parameters else None
    assert evaluate_setting(t, "model.layers.0.self_attn.q_proj.weight", 0.0) == 0
    assert evaluate_setting(t, "model.layers.3.mlp.up_proj.weight", 1.0) == 0
    assert evaluate_setting(t, "model.norm.weight", 0.3) == 0.5


def test_gradient_interpolation_matches_mergekit_rule() -> None:
    # Five anchors over t in [0, 1]: t=0.125 sits halfway between anchors 0 and 1.
    assert interpolate_gradient([0, 0.5, 0.3, 0.7, 1], 0.125) == pytest.approx(0.25)
    assert interpolate_gradient([0, 1], 0.3) == pytest.approx(0.3)
    assert interpolate_gradient([0.4], 0.9) == 0.4
    assert interpolate_gradient([1, 0.7, 0.1], 1.0) == pytest.approx(0.1)


def test_most_specific_block_wins() -> None:
    blocks = [{"weight": 0.2}, None, {"weight": 0.9, "density": 0.4}]
    assert resolve("weight", blocks, "x", 0.0) == 0.2
    assert resolve("density", blocks, "x", 0.0) == 0.4
    assert resolve("missing", blocks, "x", 0.0) is None


def test_round_trip_yaml_is_stable_and_mergekit_shaped() -> None:
    recipe = Recipe.from_yaml(TIES_YAML)
    text = recipe.to_yaml()
    again = Recipe.from_yaml(text)
    assert again == recipe
    data = yaml.safe_load(text)
    assert data["merge_method"] == "task_arithmetic"
    assert data["models"][2]["parameters"]["weight"] == [0, 0.3, 0.7, 1]
    assert "[0, 0.3, 0.7, 1]" in text  # gradients in flow style, as mergekit writes them
    assert "slices" not in data  # nothing we did not read is written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("merge_method: linear\nmodels: [{model: a, wieght: 1}]", r"unknown key 'models\[0\]\.wieght'"),
        ("merge_method: linear\nmodels: [{model: a}]\nbase: x", "unknown key 'base'"),
        ("models: [{model: a}]", "missing required key 'merge_method'"),
        ("merge_method: linear", "exactly one of 'models' or 'slices'"),
        ("merge_method: linear\nmodels: [a, b", "invalid YAML"),
        ("- just a list", "must be a YAML mapping"),
        ("merge_method: linear\nslices: [{sources: [{model: a, layer_range: [4, 2]}]}]", "layer_range"),
        ("merge_method: linear\nmodules: {}\nmodels: [{model: a}]", "'modules'"),
    ],
)
def test_structural_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        Recipe.from_yaml(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("merge_method: lienar\nmodels: [{model: a}]", "unknown method 'lienar'; valid methods: .*linear"),
        (
            "merge_method: linear\nmodels: [{model: a, parameters: {density: 0.5}}]",
            r"models\[0\]\.parameters\.density: unknown parameter for method 'linear'; "
            "valid: weight, normalize",
        ),
        (
            "merge_method: linear\nmodels: [{model: a, parameters: {normalize: false}}]",
            "not per model; set it under the top-level parameters",
        ),
        ("merge_method: linear\nmodels: [{model: a}]\nparameters: {normalize: 3}", "true or false"),
        ("merge_method: task_arithmetic\nmodels: [{model: a}]", "needs a base_model"),
        (
            "merge_method: linear\nmodels: [{model: a, parameters: {weight: [0, yes]}}]",
            "weight",
        ),
    ],
)
def test_registry_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        validate_recipe(Recipe.from_yaml(text))
