"""The Recipe page: methods from the registry, sliders <-> YAML both ways, invalid YAML
marked and kept, undo/redo, and the layer-curve editor writing mergekit conditions."""

from __future__ import annotations

import pytest
import yaml
from mergestudio.methods import all_methods
from mergestudio.recipe import Recipe, validate_recipe


@pytest.fixture
def recipe_page(window, family, add_models):
    add_models(window, family["base"], family["ft1"], family["ft2"])
    window.go_to("recipe")
    return window.page("recipe")


def choose_method(page, name: str) -> None:
    page.method_combo.setCurrentIndex(page.method_combo.findData(name))


def shown_yaml(page) -> dict:
    return yaml.safe_load(page.yaml.text())


def test_every_registered_method_gets_widgets_from_its_declaration(window, recipe_page) -> None:
    for spec in all_methods():
        choose_method(recipe_page, spec.name)
        assert shown_yaml(recipe_page)["merge_method"] == spec.name
        models = len(window.state.recipe.get("models") or [])
        expected = {(p.name, None) for p in spec.global_params}
        expected |= {(p.name, i) for p in spec.model_params for i in range(models)}
        assert set(recipe_page.editors) == expected, spec.name
        for (name, _index), editor in recipe_page.editors.items():
            assert spec.param(name).doc in editor.toolTip()
        # the recipe the widgets make is valid for the method
        validate_recipe(Recipe.from_dict(window.state.recipe))
        assert spec.summary in recipe_page.summary_label.text()


def test_paper_link_is_shown(recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    assert "https://arxiv.org/abs/2212.04089" in recipe_page.summary_label.text()


def test_moving_a_slider_updates_the_yaml(recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    editor = recipe_page.editors[("weight", 1)]
    editor.slider.setValue(editor._to_slider(0.25))
    data = shown_yaml(recipe_page)
    assert data["models"][1]["parameters"]["weight"] == 0.25
    assert data["models"][0]["parameters"]["weight"] == 1.0
    editor = recipe_page.editors[("lambda", None)]
    editor.spin.setValue(0.7)
    assert shown_yaml(recipe_page)["parameters"]["lambda"] == 0.7


def test_editing_yaml_moves_the_slider(qtbot, window, recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    data = shown_yaml(recipe_page)
    data["models"][0]["parameters"]["weight"] = 0.5
    data["parameters"] = {"lambda": 1.5}
    with qtbot.waitSignal(window.state.recipe_changed, timeout=3000):
        recipe_page.yaml.set_text(yaml.safe_dump(data, sort_keys=False))
    editor = recipe_page.editors[("weight", 0)]
    assert editor.spin.value() == 0.5
    assert editor.slider.value() == editor._to_slider(0.5)
    assert recipe_page.editors[("lambda", None)].spin.value() == 1.5
    assert recipe_page.yaml.valid


def test_changing_the_method_in_yaml_rebuilds_the_widgets(qtbot, window, recipe_page) -> None:
    text = recipe_page.yaml.text().replace("task_arithmetic", "linear")
    with qtbot.waitSignal(window.state.recipe_changed, timeout=3000):
        recipe_page.yaml.set_text(text)
    assert recipe_page.method_combo.currentData() == "linear"
    assert ("normalize", None) in recipe_page.editors


def test_invalid_yaml_is_marked_and_kept(qtbot, window, recipe_page) -> None:
    before = dict(window.state.recipe)
    with qtbot.waitSignal(recipe_page.yaml.validity_changed, timeout=3000) as blocker:
        recipe_page.yaml.set_text("merge_method: task_arithmetic\nmodels: [\n")
    assert blocker.args[0] is False
    assert "invalid YAML" in recipe_page.yaml.status.text()
    assert recipe_page.yaml.editor.property("invalid") is True
    assert window.state.recipe == before
    assert recipe_page.yaml.text().endswith("models: [\n")
    # an unknown parameter names the key
    text = yaml.safe_dump({**before, "parameters": {"densty": 0.5}}, sort_keys=False)
    with qtbot.waitSignal(recipe_page.yaml.validity_changed, timeout=3000):
        recipe_page.yaml.set_text(text)
    assert "parameters.densty" in recipe_page.yaml.error
    assert window.state.recipe == before


def test_undo_and_redo(window, recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    editor = recipe_page.editors[("weight", 0)]
    editor.spin.setValue(0.3)
    editor.spin.setValue(0.6)
    assert window.state.recipe["models"][0]["parameters"]["weight"] == 0.6
    window.undo_action.trigger()
    assert window.state.recipe["models"][0]["parameters"]["weight"] == 0.3
    assert editor.spin.value() == 0.3
    assert shown_yaml(recipe_page)["models"][0]["parameters"]["weight"] == 0.3
    window.redo_action.trigger()
    assert editor.spin.value() == 0.6
    choose_method(recipe_page, "linear")
    window.undo_action.trigger()
    assert window.state.recipe["merge_method"] == "task_arithmetic"
    assert recipe_page.method_combo.currentData() == "task_arithmetic"


def test_a_slider_drag_is_one_undo_step(window, recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    editor = recipe_page.editors[("weight", 0)]
    steps = window.state.undo_stack.count()
    editor.slider.setSliderDown(True)
    for value in (0.2, 0.4, 0.6):
        editor.slider.setValue(editor._to_slider(value))
    editor.slider.setSliderDown(False)
    assert window.state.undo_stack.count() == steps + 1
    window.undo_action.trigger()
    assert window.state.recipe["models"][0]["parameters"]["weight"] == 1.0


def test_curve_editor_writes_per_lane_conditions(window, recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    recipe_page.editors[("weight", 0)].curve_button.click()
    curve = recipe_page.curve_editor
    assert curve.target.param.name == "weight" and curve.target.model_index == 0
    curve.lane_combo.setCurrentIndex(curve.lane_combo.findData("attention"))
    curve.set_point("attention", 0, 0.0)
    setting = window.state.recipe["models"][0]["parameters"]["weight"]
    assert setting[0]["filter"] == "self_attn"
    assert setting[0]["value"][0] == 0.0
    assert setting[-1] == {"value": 1.0}
    text = recipe_page.yaml.text()
    assert "filter: self_attn" in text
    # the slider row shows the curve instead of one value
    assert recipe_page.editors[("weight", 0)].curve_label.isVisibleTo(recipe_page)
    validate_recipe(Recipe.from_dict(window.state.recipe))


def test_curve_presets_make_gradients(window, recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    recipe_page.show_curve(("lambda", None))
    curve = recipe_page.curve_editor
    curve.points_spin.setValue(4)
    curve.apply_preset("ramp up")
    # curve points are written on lambda's slider step (0.01), not as 0.3333
    assert window.state.recipe["parameters"]["lambda"] == [0.0, 0.33, 0.67, 1.0]
    curve.apply_preset("bell")
    values = window.state.recipe["parameters"]["lambda"]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.0, abs=1e-4) and max(values) > 0.5
    # moving the slider again makes it one value
    editor = recipe_page.editors[("lambda", None)]
    editor.spin.setValue(0.8)
    assert window.state.recipe["parameters"]["lambda"] == 0.8


def test_yaml_gradient_shows_in_curve_editor(qtbot, window, recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    data = shown_yaml(recipe_page)
    data["parameters"] = {"lambda": [{"filter": "mlp", "value": [0.0, 1.0]}, {"value": 0.5}]}
    with qtbot.waitSignal(window.state.recipe_changed, timeout=3000):
        recipe_page.yaml.set_text(yaml.safe_dump(data, sort_keys=False))
    recipe_page.show_curve(("lambda", None))
    lanes = recipe_page.curve_editor.curve.lanes
    assert lanes["mlp"] == [0.0, 1.0]
    assert set(lanes["attention"]) == {0.5}


def test_drag_a_control_point_with_the_mouse(qtbot, window, recipe_page) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtTest import QTest

    recipe_page.show_curve(("lambda", None))
    curve = recipe_page.curve_editor
    qtbot.waitExposed(curve.plot)
    view = curve.plot.getPlotItem().getViewBox()

    def on_screen(layer: float, value: float) -> QPoint:
        return curve.plot.mapFromScene(view.mapViewToScene(QPointF(layer, value)))

    start, end = on_screen(0, 1.0), on_screen(0, 0.5)
    viewport = curve.plot.viewport()
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for step in range(1, 11):
        QTest.mouseMove(viewport, QPoint(start.x(), start.y() + (end.y() - start.y()) * step // 10))
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    values = window.state.recipe["parameters"]["lambda"]
    assert values[0] == pytest.approx(0.5, abs=0.05)  # all lanes moved together: one gradient
    assert values[1:] == [1.0, 1.0, 1.0]
    window.undo_action.trigger()  # the whole drag is one step
    assert "lambda" not in (window.state.recipe.get("parameters") or {})


def test_a_weight_that_is_a_curve_shows_its_range_not_a_stale_number(window, recipe_page) -> None:
    choose_method(recipe_page, "task_arithmetic")
    recipe = dict(window.state.recipe)
    recipe["models"] = [dict(m) for m in recipe["models"]]
    recipe["models"][0]["parameters"] = {"weight": [
        {"filter": "self_attn", "value": [0.2, 0.8]}, {"value": 0.5}]}
    assert window.state.set_recipe(recipe, "load", "a trial's recipe") is None
    editor = recipe_page.editors[("weight", 0)]
    assert editor.curve_label.isVisibleTo(editor)
    assert not editor.spin.isVisibleTo(editor) and not editor.slider.isVisibleTo(editor)
    assert editor.curve_label.text() == "by layer and module: 0.2–0.8, mean 0.5"
    assert "attention: 0.2 → 0.8" in editor.curve_label.toolTip()
    recipe["models"][0]["parameters"] = {"weight": [{"filter": "mlp", "value": 0.0}, {"value": 1.0}]}
    window.state.set_recipe(recipe, "load")
    assert editor.curve_label.text() == "per module: attention 1, MLP 0, other 1"


def test_sliders_write_values_on_the_declared_step(window, recipe_page) -> None:
    choose_method(recipe_page, "ties")
    editor = recipe_page.editors[("density", 0)]
    param = editor.param
    assert param.ui_step == 0.01
    editor.slider.setValue(editor._to_slider(0.476))
    written = window.state.recipe["models"][0]["parameters"]["density"]
    assert written == 0.48
    editor.spin.setValue(0.2999)
    assert window.state.recipe["models"][0]["parameters"]["density"] == 0.3
    from mergestudio_qt import recipe_edit

    assert recipe_edit.clean_number(param, 0.1 + 0.2) == 0.3
    # a tolerance of 1e-5 keeps enough decimals to be seen
    choose_method(recipe_page, "karcher")
    tol = recipe_page.editors[("tol", None)]
    assert tol.spin.decimals() >= 5 and tol.spin.value() == pytest.approx(1e-5)


@pytest.mark.parametrize("size", [(1024, 700), (1100, 680), (1920, 1080)])
def test_the_recipe_page_fits_without_clipping(qtbot, window, recipe_page, size) -> None:
    from PySide6.QtCore import QRect

    choose_method(recipe_page, "ties")  # the most rows: globals, weights and densities
    window.resize(*size)
    qtbot.waitUntil(lambda: window.width() == size[0], timeout=2000)
    qtbot.wait(50)
    scroll = recipe_page.left_scroll
    body = scroll.widget()
    viewport = scroll.viewport()
    assert body.minimumSizeHint().width() <= viewport.width()  # no sideways scrolling needed
    assert body.width() <= viewport.width()
    for editor in recipe_page.editors.values():
        for part in (editor.curve_button, editor.spin):
            if part is None or not part.isVisibleTo(body):
                continue
            box = QRect(part.mapTo(body, part.rect().topLeft()), part.size())
            assert box.right() <= viewport.width(), f"{editor.param.name} is cut at {size}"
    for name, button in recipe_page.curve_editor.preset_buttons.items():
        assert button.width() >= button.sizeHint().width(), f"preset {name!r} is squeezed at {size}"
        inside = button.mapTo(recipe_page.curve_editor, button.rect().bottomRight())
        assert inside.x() <= recipe_page.curve_editor.width(), f"preset {name!r} is cut at {size}"
