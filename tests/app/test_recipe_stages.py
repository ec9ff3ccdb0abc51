"""Multi-stage recipes in the window: the Recipe page lists the stages, choosing one
edits it (method, parameters, models), the YAML pane and undo follow the project
model, and a multi-stage YAML file opens, saves and merges as the engine runs it."""

from __future__ import annotations

from pathlib import Path

import yaml
from mergestudio.recipe.multi import load_multi


def _two_stages(window, family, add_models):
    add_models(window, family["base"], family["ft1"], family["ft2"], family["ft3"])
    window.go_to("recipe")
    state = window.state
    state.set_method("task_arithmetic")
    state.set_included(str(family["ft3"]), False)
    state.add_stage()
    return state, window.page("recipe")


def test_adding_a_stage_lists_both_and_the_new_one_reads_the_first(window, family, add_models) -> None:
    state, page = _two_stages(window, family, add_models)
    assert state.stage_names() == ["stage1", "final"]
    assert state.current_stage == 1
    assert [m["model"] for m in state.recipe["models"]] == ["stage1"]
    rows = [page.stage_list.list.item(i).text() for i in range(page.stage_list.list.count())]
    assert rows[0].startswith("1. stage1 · task_arithmetic ← base, ft1, ft2")
    assert rows[1].startswith("2. final · task_arithmetic ← base, ◆stage1") and rows[1].endswith("(output)")
    assert page.stage_list.list.currentRow() == 1
    # The second stage merges ft3 too: ticked on the Models page, written to this stage only.
    state.set_included(str(family["ft3"]), True)
    assert [m["model"] for m in state.recipe["models"]] == ["stage1", str(family["ft3"])]
    assert [m["model"] for m in state.stages()[0]["models"]] == [str(family["ft1"]), str(family["ft2"])]
    assert state.verdict().ok, state.verdict().message


def test_choosing_a_stage_edits_it_and_undo_returns_to_it(window, family, add_models) -> None:
    state, page = _two_stages(window, family, add_models)
    page.stage_list.list.setCurrentRow(0)
    assert state.current_stage == 0
    assert page.method_combo.currentData() == "task_arithmetic"
    assert yaml.safe_load(page.yaml.text())["name"] == "stage1"
    page.method_combo.setCurrentIndex(page.method_combo.findData("ties"))
    assert state.stages()[0]["merge_method"] == "ties"
    assert state.stages()[1]["merge_method"] == "task_arithmetic"
    assert ("density", 0) in page.editors  # the ties stage's own parameters
    page.editors[("density", 0)].spin.setValue(0.3)
    assert state.stages()[0]["models"][0]["parameters"]["density"] == 0.3
    page.stage_list.list.setCurrentRow(1)
    assert page.method_combo.currentData() == "task_arithmetic"
    assert ("density", 0) not in page.editors
    window.undo_action.trigger()  # the density edit: back in stage 1, with the old value
    assert state.current_stage == 0
    assert state.stages()[0]["models"][0]["parameters"].get("density") != 0.3
    window.undo_action.trigger()  # the method
    assert state.stages()[0]["merge_method"] == "task_arithmetic"
    window.undo_action.trigger()  # the added stage
    assert state.stages() == [] and state.stage_names() == []
    assert not page.stage_list.list.isVisible()


def test_a_yaml_edit_of_a_stage_and_a_broken_graph_reach_the_verdict(window, family, add_models) -> None:
    state, page = _two_stages(window, family, add_models)
    edited = dict(state.recipe, parameters={"lambda": 0.5})
    page._yaml_edited(edited)
    assert state.stages()[1]["parameters"] == {"lambda": 0.5}
    assert state.verdict().ok
    page.stage_list.list.setCurrentRow(0)
    assert state.remove_stage(0) is not None  # the final stage reads it: refused
    page._yaml_edited(dict(state.recipe, name="first"))  # renamed: "final" now names no stage
    verdict = state.verdict()
    assert not verdict.ok and "stage1" in verdict.message


def test_multi_stage_yaml_opens_saves_and_merges(window, family, add_models, qtbot, tmp_path: Path) -> None:
    stages = [
        {"name": "pair", "merge_method": "task_arithmetic", "base_model": str(family["base"]),
         "models": [{"model": str(family["ft1"]), "parameters": {"weight": 0.7}},
                    {"model": str(family["ft2"]), "parameters": {"weight": 0.4}}]},
        {"merge_method": "slerp", "base_model": "pair",
         "models": [{"model": "pair"}, {"model": str(family["ft3"])}], "parameters": {"t": 0.3}},
    ]
    source = tmp_path / "multi.yml"
    source.write_text(yaml.safe_dump_all(stages, sort_keys=False))
    with qtbot.waitSignal(window.project_loaded, timeout=20_000):
        window.import_recipe(source)
    state = window.state
    assert state.stage_names() == ["pair", "final"]
    assert {m.reference for m in state.models} == {str(family[k]) for k in ("base", "ft1", "ft2", "ft3")}
    assert state.verdict().ok, state.verdict().message
    exported = tmp_path / "out.yml"
    assert window.export_recipe(exported)
    graph = load_multi(exported)
    assert [s.name for s in graph.stages] == ["pair", "final"]
    assert graph.final.recipe.merge_method == "slerp"
    # The Merge page runs the whole graph.
    page = window.page("merge")
    document = page.merge_recipe()
    assert isinstance(document, list) and len(document) == 2


def test_a_project_file_keeps_every_stage(window, family, add_models, qtbot, tmp_path: Path) -> None:
    from mergestudio_qt.project import load_project, save_project

    state, _ = _two_stages(window, family, add_models)
    state.select_stage(0)
    state.set_method("ties")
    path = tmp_path / "p.msproj"
    save_project(window.project_data(), path)
    data = load_project(path)
    assert [s.get("name") for s in data.stages] == ["stage1", None]
    assert data.current_stage == 0 and data.recipe["merge_method"] == "ties"
    assert data.stages[1]["models"][0]["model"] == "stage1"  # a stage name is no path
    with qtbot.waitSignal(window.project_loaded, timeout=20_000):
        window.open_project(path)
    assert window.state.stage_names() == ["stage1", "final"]
    assert window.state.current_stage == 0 and window.state.recipe["merge_method"] == "ties"
    assert window.state.verdict().ok, window.state.verdict().message
