"""The window: pages, menus and shortcuts, status bar, project files (save, reopen,
recent), preferences and settings, and the demo project."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mergestudio_qt.pages import PageSpec, pages, register_page
from mergestudio_qt.preferences import Preferences, load_preferences, save_preferences, window_settings
from mergestudio_qt.project import ProjectError, load_project
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from tests.checkpoints import TinyLlama, write_checkpoint


def test_pages_in_order_with_placeholders(window) -> None:
    keys = [spec.key for spec in window.page_specs]
    assert keys[:3] == ["models", "recipe", "merge"]
    assert {"inspect", "evolve"} <= set(keys)
    window.go_to("merge")
    assert window.current_page_key() == "merge"


def test_a_page_registered_later_replaces_its_placeholder() -> None:
    from PySide6.QtWidgets import QLabel

    original = next(s for s in pages() if s.key == "evolve")
    try:
        register_page(PageSpec("evolve", "Evolve", "real", lambda _studio: QLabel("real")))
        keys = [s.key for s in pages()]
        assert keys.count("evolve") == 1
        assert next(s for s in pages() if s.key == "evolve").summary == "real"
    finally:
        register_page(original)


def test_menus_have_shortcuts(window) -> None:
    def shortcut(menu: str, action: str) -> QKeySequence:
        for menu_action in window.menuBar().actions():
            if menu_action.text().replace("&", "") == menu:
                for item in menu_action.menu().actions():
                    if item.text().replace("&", "") == action:
                        return item.shortcut()
        raise KeyError(f"{menu} > {action}")

    assert shortcut("File", "Save project") == QKeySequence(QKeySequence.StandardKey.Save)
    assert shortcut("File", "Open project…") == QKeySequence(QKeySequence.StandardKey.Open)
    assert shortcut("Merge", "Merge") == QKeySequence("Ctrl+M")
    assert shortcut("View", "Recipe") == QKeySequence("Ctrl+2")
    assert not shortcut("Edit", "Undo").isEmpty()


def test_status_bar_shows_device_and_memory(qtbot, window) -> None:
    qtbot.waitUntil(lambda: "checking" not in window.device_label.text(), timeout=30_000)
    assert window.device_label.text().startswith("device: ")
    assert window.memory_label.text().startswith("memory: ")


def test_save_and_reopen_a_project(qtbot, window, family, add_models, tmp_path) -> None:
    add_models(window, family["base"], family["ft1"], family["ft2"])
    window.state.set_method("linear")
    window.page("models").table.item(2, 0).setCheckState(Qt.CheckState.Unchecked)
    path = tmp_path / "project" / "mine.msproj"
    assert window.save_to(path)
    document = json.loads(path.read_text())
    assert document["version"] == 1 and document["recipe"]["merge_method"] == "linear"
    assert "token" not in path.read_text().lower()
    assert window.windowTitle().startswith("mine —")
    assert str(path) in window.preferences.recent_projects
    assert load_preferences().recent_projects == [str(path)]
    recipe = dict(window.state.recipe)

    window.new_project()
    assert not window.state.models and window.state.recipe == {"merge_method": "task_arithmetic", "models": []}

    with qtbot.waitSignal(window.project_loaded, timeout=10_000) as blocker:
        window.recent_menu.actions()[0].trigger()
    assert blocker.args == [True]
    assert [m.name for m in window.state.models] == ["base", "ft1", "ft2"]
    assert [m.include for m in window.state.models] == [True, True, False]
    assert window.state.base == str(family["base"])
    assert window.state.recipe == recipe
    assert window.page("recipe").method_combo.currentData() == "linear"
    assert not window.state.dirty


def test_project_paths_inside_its_folder_are_relative(window, tmp_path, add_models) -> None:
    folder = tmp_path / "shared"
    base = write_checkpoint(folder / "models" / "base", TinyLlama())
    tune = write_checkpoint(folder / "models" / "tune", TinyLlama(), seed=1)
    add_models(window, base, tune)
    path = folder / "p.msproj"
    window.save_to(path)
    document = json.loads(path.read_text())
    assert document["base"] == "./models/base"
    assert document["recipe"]["models"][0]["model"] == "./models/tune"
    assert load_project(path).base == str(base.resolve())


def test_a_broken_project_file_is_refused(tmp_path) -> None:
    path = tmp_path / "bad.msproj"
    path.write_text("{not json")
    with pytest.raises(ProjectError, match="invalid JSON"):
        load_project(path)
    path.write_text(json.dumps({"kind": "mergestudio-project", "version": 99}))
    with pytest.raises(ProjectError, match="version 99"):
        load_project(path)


def test_preferences_are_a_small_versioned_file(isolated_config: Path) -> None:
    preferences = Preferences(device="cpu", threads=2)
    save_preferences(preferences)
    document = json.loads((isolated_config / "preferences.json").read_text())
    assert document["version"] == 1 and document["device"] == "cpu"
    assert load_preferences().threads == 2
    (isolated_config / "preferences.json").write_text(json.dumps({"version": 2, "device": "cuda"}))
    assert load_preferences().device == "auto"  # a newer file is not misread


def test_window_geometry_is_kept_in_qsettings(qtbot, window, isolated_config) -> None:
    window.go_to("recipe")
    window.close()
    settings = window_settings()
    assert settings.value("page") == "recipe"
    assert not settings.value("geometry").isEmpty()
    assert (isolated_config / "window.ini").exists()


def test_settings_dialog_applies_and_never_stores_a_token(qtbot, window, isolated_config) -> None:
    from mergestudio_qt.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.preferences, window)
    qtbot.addWidget(dialog)
    dialog.device_combo.setCurrentText("cpu")
    dialog.dtype_combo.setCurrentText("bfloat16")
    dialog.threads_spin.setValue(3)
    dialog.cache_edit.setText(str(isolated_config / "cache"))
    dialog.token_edit.setText("hf_secret_value")
    applied = dialog.apply()
    assert (applied.device, applied.compute_dtype, applied.threads) == ("cpu", "bfloat16", 3)
    window.studio.save_preferences()
    text = (isolated_config / "preferences.json").read_text()
    assert "hf_secret_value" not in text and "token" not in text


def test_hub_sign_in_failure_does_not_echo_the_token(qtbot, window, monkeypatch) -> None:
    import huggingface_hub
    from mergestudio_qt.settings_dialog import SettingsDialog

    def refuse(**_kwargs):
        raise ValueError("invalid token hf_secret_value")

    monkeypatch.setattr(huggingface_hub, "login", refuse)
    dialog = SettingsDialog(window.preferences, window)
    qtbot.addWidget(dialog)
    dialog.token_edit.setText("hf_secret_value")
    dialog.sign_in_button.click()
    assert dialog.token_edit.text() == ""
    qtbot.waitUntil(lambda: "failed" in dialog.hub_label.text(), timeout=10_000)
    assert "hf_secret_value" not in dialog.hub_label.text()


def write_zoo(root: Path) -> Path:
    for seed, name in enumerate(("base", "ft_add", "ft_reverse")):
        write_checkpoint(root / "models" / name, TinyLlama(layers=4), seed=seed)
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "add.test.jsonl").write_text('{"prompt": "1+1=", "choices": ["2", "3"], "answer": 0}\n')
    return root


def test_demo_project_loads_the_zoo(qtbot, window, tmp_path, monkeypatch) -> None:
    zoo = write_zoo(tmp_path / "zoo")
    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(zoo))
    with qtbot.waitSignal(window.project_loaded, timeout=10_000) as blocker:
        window.open_demo()
    assert blocker.args == [True]
    assert window.state.base == str(zoo / "models" / "base")
    assert len(window.state.recipe["models"]) == 2
    assert window.state.eval_tasks == [str(zoo / "tasks" / "add.test.jsonl")]
    assert not window.state.merge.overwrite  # a second merge asks before replacing the first
    assert window.page("merge").chosen_tasks() == window.state.eval_tasks


def test_the_demo_project_pins_each_skills_specialist(tmp_path) -> None:
    """Normalized accuracy on the demo divides by the model trained on the skill (the
    zoo's metadata), whichever parent happens to score best."""
    from mergestudio.demo.info import zoo_info
    from mergestudio.evaluate.tasks import load_task
    from mergestudio_qt.demo import demo_project, zoo_dir

    info = zoo_info(zoo_dir())
    pins = demo_project(tmp_path / "merges").specialists
    assert info["specialists"]
    named = set()
    for specialist in info["specialists"]:
        for split in ("dev", "test"):
            task = load_task(info["skills"][specialist["skill"]][split]).name
            assert pins[task] == specialist["path"]
            named.add(task)
    assert set(pins) == named


def test_missing_demo_zoo_is_explained(qtbot, window, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(tmp_path / "nowhere"))
    with qtbot.waitSignal(window.project_loaded, timeout=2000) as blocker:
        window.open_demo()
    assert blocker.args == [False]
    assert "demo zoo is not at" in window.statusBar().currentMessage()


# ---- one source of truth: the project model ---------------------------------------------


def write_linear_zoo(root: Path) -> Path:
    """A zoo like the real demo: its best recipe is a linear average with no base_model."""
    zoo = write_zoo(root)
    (zoo / "recipes").mkdir()
    (zoo / "recipes" / "linear.yml").write_text(
        "merge_method: linear\nmodels:\n"
        "- model: ../models/ft_add\n  parameters: {weight: 1.0}\n"
        "- model: ../models/ft_reverse\n  parameters: {weight: 1.0}\n"
    )
    return zoo


def shown_yaml(window) -> dict:
    import yaml

    return yaml.safe_load(window.page("recipe").yaml.text())


def assert_views_agree(window) -> None:
    """Models page, project model, recipe, YAML pane and the merge's own plan all name
    the same base and the same merged models."""
    from mergestudio.engine.plan import build_plan
    from mergestudio.recipe import Recipe

    state = window.state
    models_page = window.page("models")
    shown_base = models_page.base_combo.currentData() or None
    assert shown_base == state.base
    assert state.recipe.get("base_model") == state.base
    assert shown_yaml(window).get("base_model") == state.base
    merged = [m["model"] for m in state.recipe["models"]]
    assert merged == [m["model"] for m in shown_yaml(window)["models"]]
    assert sorted(merged) == sorted(state.merged_references())
    for row, entry in enumerate(state.models):
        role = models_page.table.item(row, COLUMN["Role"]).text()
        assert (role == "base") == (entry.reference == state.base)
    if not state.verdict().ok:
        return
    plan = build_plan(Recipe.from_dict(window.page("merge").merge_recipe()))
    try:
        assert plan.base_model == shown_base  # the merge uses the base on screen
    finally:
        plan.close()


COLUMN = {"Role": 2}


def test_demo_base_is_in_the_recipe_so_ties_works(qtbot, window, tmp_path, monkeypatch) -> None:
    zoo = write_linear_zoo(tmp_path / "zoo")
    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(zoo))
    with qtbot.waitSignal(window.project_loaded, timeout=10_000):
        window.open_demo()
    base = str(zoo / "models" / "base")
    assert window.state.base == base
    assert window.state.recipe["merge_method"] == "linear"
    assert shown_yaml(window)["base_model"] == base
    assert_views_agree(window)
    recipe_page = window.page("recipe")
    recipe_page.method_combo.setCurrentIndex(recipe_page.method_combo.findData("ties"))
    assert "needs a base model" not in recipe_page.note_label.text()
    assert window.state.verdict().ok
    qtbot.waitUntil(lambda: recipe_page.yaml.status.text().startswith("✓"), timeout=3000)
    assert_views_agree(window)


def test_no_base_makes_ties_invalid_in_the_yaml_pane_too(qtbot, window, family, add_models) -> None:
    add_models(window, family["base"], family["ft1"], family["ft2"])
    window.state.set_method("ties")
    models_page = window.page("models")
    assert models_page.base_combo.itemText(0) == "(none)"
    models_page.base_combo.setCurrentIndex(0)
    assert window.state.base is None and "base_model" not in window.state.recipe
    verdict = window.state.verdict()
    assert not verdict.ok and "base_model" in verdict.message
    recipe_page = window.page("recipe")
    qtbot.waitUntil(lambda: "a merge would fail" in recipe_page.yaml.status.text(), timeout=3000)
    assert "needs a base model" in recipe_page.note_label.text()
    # the base is merged as a model now that it is not the base
    assert str(family["base"]) in [m["model"] for m in window.state.recipe["models"]]
    assert_views_agree(window)


def test_base_change_undo_redo_and_save_keep_every_view_in_agreement(
    qtbot, window, family, add_models, tmp_path
) -> None:
    from PySide6.QtTest import QTest

    add_models(window, family["base"], family["ft1"], family["ft2"])
    models_page = window.page("models")
    combo = models_page.base_combo
    combo.setCurrentIndex(combo.findData(str(family["ft1"])))
    assert_views_agree(window)
    combo.setCurrentIndex(combo.findData(str(family["base"])))
    assert_views_agree(window)

    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.state.base == str(family["ft1"])  # undo restored the whole earlier state
    assert combo.currentData() == str(family["ft1"])
    assert_views_agree(window)
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.state.base == str(family["base"])  # Ctrl+Shift+Z is redo, not ambiguous
    assert_views_agree(window)
    window.undo_action.trigger()
    assert_views_agree(window)

    path = tmp_path / "agree.msproj"  # beside models/, so paths are stored relative
    assert window.save_to(path)
    document = json.loads(path.read_text())
    assert document["base"] == document["recipe"]["base_model"] == "./models/ft1"  # relative to the file
    window.new_project()
    with qtbot.waitSignal(window.project_loaded, timeout=10_000):
        window.open_project(path)
    assert window.state.base == str(family["ft1"])
    assert_views_agree(window)
    # the merged model's card names the base on screen as its base
    merge_page = window.page("merge")
    merge_page.out_edit.setText(str(tmp_path / "merged"))
    merge_page.out_edit.editingFinished.emit()
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as merged:
        merge_page.start_merge()
    assert merged.args == ["succeeded"]
    card = (tmp_path / "merged" / "README.md").read_text()
    assert f"| {family['ft1']} | base |" in card
    assert f"| {family['base']} | base |" not in card


def test_a_recipe_that_disagrees_with_its_project_is_made_consistent_on_open(
    qtbot, window, family, tmp_path
) -> None:
    """A file saved by the old window (project base and recipe base_model different)
    opens with the base that was on screen, and the recipe follows it."""
    from mergestudio_qt.project import ProjectData, save_project

    data = ProjectData(
        models=[{"reference": str(family[n]), "include": True} for n in ("base", "ft1", "ft2")],
        base=str(family["base"]),
        recipe={"merge_method": "task_arithmetic", "base_model": str(family["ft1"]),
                "models": [{"model": str(family["base"]), "parameters": {"weight": 0.5}}]},
    )
    path = tmp_path / "old.msproj"
    save_project(data, path)
    with qtbot.waitSignal(window.project_loaded, timeout=10_000):
        window.open_project(path)
    assert window.state.base == str(family["base"])
    assert_views_agree(window)


def test_yaml_names_the_base_and_the_models_page_follows(qtbot, window, family, add_models) -> None:
    import yaml

    add_models(window, family["base"], family["ft1"], family["ft2"])
    recipe_page = window.page("recipe")
    data = shown_yaml(window)
    data["base_model"] = str(family["ft2"])
    data["models"] = [{"model": str(family["ft1"]), "parameters": {"weight": 0.5}}]
    with qtbot.waitSignal(window.state.recipe_changed, timeout=3000):
        recipe_page.yaml.set_text(yaml.safe_dump(data, sort_keys=False))
    assert window.state.base == str(family["ft2"])
    assert [m.include for m in window.state.models] == [False, True, True]
    assert_views_agree(window)
    window.undo_action.trigger()
    assert window.state.base == str(family["base"])
    assert_views_agree(window)
    # a model that is not on the Models page is refused with the reason, not half-applied
    data["models"] = [{"model": "/no/such/model", "parameters": {"weight": 0.5}}]
    with qtbot.waitSignal(recipe_page.yaml.validity_changed, timeout=3000):
        recipe_page.yaml.set_text(yaml.safe_dump(data, sort_keys=False))
    assert "/no/such/model is not on the Models page" in recipe_page.yaml.error
    assert window.state.base == str(family["base"])
    assert "Recipe not applied: /no/such/model" in window.statusBar().currentMessage()
    # a relative spelling of a listed folder is the same model
    relative = dict(window.state.recipe, base_model=os.path.relpath(family["ft1"]))
    assert window.state.set_recipe(relative, "load") is None
    assert window.state.base == str(family["ft1"])
    assert_views_agree(window)


def test_redo_has_each_shortcut_once(window) -> None:
    keys = [k.toString() for k in window.redo_action.shortcuts()]
    assert "Ctrl+Shift+Z" in keys
    assert len(keys) == len(set(keys))


def test_import_and_export_mergekit_yaml(qtbot, window, family, tmp_path) -> None:
    recipe = tmp_path / "recipes" / "mine.yml"
    recipe.parent.mkdir()
    recipe.write_text(
        f"merge_method: ties\nbase_model: {family['base']}\nmodels:\n"
        f"- model: ../models/ft1\n  parameters: {{weight: 0.7, density: 0.4}}\n"
        f"- model: {family['ft2']}\n  parameters: {{weight: 0.3, density: 0.4}}\n"
    )
    with qtbot.waitSignal(window.project_loaded, timeout=10_000) as blocker:
        window.import_recipe(recipe)
    assert blocker.args == [True]
    assert [m.name for m in window.state.models] == ["base", "ft1", "ft2"]
    assert window.state.base == str(family["base"])
    assert window.state.recipe["models"][0] == {
        "model": str(family["ft1"]), "parameters": {"weight": 0.7, "density": 0.4}}
    assert window.windowTitle().startswith("mine •")
    assert_views_agree(window)
    out = tmp_path / "exported.yml"
    assert window.export_recipe(out)
    from mergestudio.recipe import Recipe

    exported = Recipe.load(out).to_dict()
    assert exported["base_model"] == str(family["base"])
    assert exported["models"] == window.state.recipe["models"]


def test_help_menu_has_a_method_reference_and_a_shortcut_sheet(qtbot, window) -> None:
    from mergestudio.methods import all_methods
    from mergestudio_qt.help_dialogs import window_shortcuts

    dialog = window.show_method_reference("ties")
    qtbot.addWidget(dialog)
    assert dialog.list.count() == len(all_methods())
    text = dialog.view.toPlainText()
    assert "ties" in text and "density" in text and "step 0.01" in text
    dialog.filter_edit.setText("spherical")
    visible = [dialog.methods[i].name for i in range(dialog.list.count()) if not dialog.list.item(i).isHidden()]
    assert "slerp" in visible and "ties" not in visible
    rows = window_shortcuts(window)
    assert ("Edit", "Redo", "Ctrl+Y, Ctrl+Shift+Z") in rows or any(
        r[1] == "Redo" and "Ctrl+Shift+Z" in r[2] for r in rows)
    assert any(r[1] == "Import mergekit YAML" for r in rows)
    assert any(r[0] == "Evolve page" and "Pause" in r[1] and r[2] == "F6" for r in rows)
    sheet = window.show_shortcuts()
    qtbot.addWidget(sheet)
    assert sheet.table.rowCount() == len(rows)


@pytest.mark.parametrize("dark", [False, True])
def test_a_disabled_button_looks_disabled(dark: bool) -> None:
    from mergestudio_qt.style import dark_palette, light_palette
    from PySide6.QtGui import QPalette

    palette = dark_palette() if dark else light_palette()
    for role in (QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        enabled = palette.color(QPalette.ColorGroup.Active, role)
        disabled = palette.color(QPalette.ColorGroup.Disabled, role)
        assert abs(enabled.lightness() - disabled.lightness()) > 60
