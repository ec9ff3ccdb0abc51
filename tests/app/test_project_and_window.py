"""The window: pages, menus and shortcuts, status bar, project files (save, reopen,
recent), preferences and settings, and the demo project."""

from __future__ import annotations

import json
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
    (root / "tasks" / "add.eval.jsonl").write_text('{"prompt": "1+1=", "choices": ["2", "3"], "answer": 0}\n')
    return root


def test_demo_project_loads_the_zoo(qtbot, window, tmp_path, monkeypatch) -> None:
    zoo = write_zoo(tmp_path / "zoo")
    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(zoo))
    with qtbot.waitSignal(window.project_loaded, timeout=10_000) as blocker:
        window.open_demo()
    assert blocker.args == [True]
    assert window.state.base == str(zoo / "models" / "base")
    assert len(window.state.recipe["models"]) == 2
    assert window.state.eval_tasks == [str(zoo / "tasks" / "add.eval.jsonl")]
    assert window.state.merge.overwrite
    assert window.page("merge").chosen_tasks() == window.state.eval_tasks


def test_missing_demo_zoo_is_explained(qtbot, window, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(tmp_path / "nowhere"))
    with qtbot.waitSignal(window.project_loaded, timeout=2000) as blocker:
        window.open_demo()
    assert blocker.args == [False]
    assert "demo zoo is not at" in window.statusBar().currentMessage()
