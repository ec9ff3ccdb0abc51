"""The Recipe page's post-processing option: generated from the plug-in declarations,
written to and read from the recipe's post_process key, undone in one step."""

from __future__ import annotations

import pytest
import yaml
from mergestudio.methods.plugins import all_post_processes
from mergestudio.recipe import Recipe, validate_recipe
from PySide6.QtWidgets import QComboBox


@pytest.fixture
def recipe_page(window, family, add_models):
    add_models(window, family["base"], family["ft1"], family["ft2"])
    window.go_to("recipe")
    page = window.page("recipe")
    page.method_combo.setCurrentIndex(page.method_combo.findData("task_arithmetic"))
    return page


def post_combo(page) -> QComboBox:
    assert isinstance(page.post_combo, QComboBox)
    return page.post_combo


def test_plug_ins_are_offered_from_their_declarations(recipe_page) -> None:
    combo = post_combo(recipe_page)
    offered = [combo.itemData(i) for i in range(combo.count())]
    assert offered == [None, *(p.name for p in all_post_processes())]
    assert combo.currentData() is None
    assert recipe_page.post_editors == {}


def test_choosing_svc_writes_the_recipe_and_shows_its_parameters(window, recipe_page) -> None:
    post_combo(recipe_page).setCurrentIndex(post_combo(recipe_page).findData("svc"))
    assert window.state.recipe["post_process"] == {"name": "svc"}
    assert set(recipe_page.post_editors) == {"alpha"}
    editor = recipe_page.post_editors["alpha"]
    assert editor.spin.value() == pytest.approx(0.1)  # the declared default
    editor.spin.setValue(0.4)
    shown = yaml.safe_load(recipe_page.yaml.text())
    assert shown["post_process"] == {"name": "svc", "parameters": {"alpha": 0.4}}
    validate_recipe(Recipe.from_dict(window.state.recipe))
    window.undo_action.trigger()
    assert "parameters" not in window.state.recipe["post_process"]
    post_combo(recipe_page).setCurrentIndex(0)
    assert "post_process" not in window.state.recipe


def test_yaml_with_a_post_process_selects_it(window, recipe_page) -> None:
    recipe = dict(window.state.recipe, post_process={"name": "svc", "parameters": {"alpha": 0.25}})
    window.state.set_recipe(recipe, "yaml")
    assert post_combo(recipe_page).currentData() == "svc"
    assert recipe_page.post_editors["alpha"].spin.value() == pytest.approx(0.25)
