"""The Merge page's "write a LoRA adapter" switch and a multi-stage merge from the
window: the switch is the recipe's output key in the project model (YAML, undo), the dry
run checks the adapter inputs, and the merges write what the engine writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mergestudio.engine.graph import merge_multi
from mergestudio.lora.merge import merge_to_adapter
from mergestudio.recipe import Recipe
from mergestudio.recipe.multi import parse_multi
from safetensors.torch import load_file

from tests.peft_adapters import make_lora

pytest.importorskip("peft")


def _merge(qtbot, page) -> list[object]:
    with qtbot.waitSignal(page.merge_finished, timeout=60_000) as blocker:
        page.merge_button.click()
    return list(blocker.args)


def test_adapter_switch_writes_the_recipe_key_and_merges_an_adapter(
    qtbot, window, family, add_models, tmp_path: Path
) -> None:
    one = make_lora(family["base"], tmp_path / "one", seed=1, r=4)
    two = make_lora(family["base"], tmp_path / "two", seed=2, r=2)
    add_models(window, family["base"], one, two)
    state = window.state
    state.set_method("task_arithmetic")
    window.go_to("merge")
    page = window.page("merge")
    page.out_edit.setText(str(tmp_path / "out"))
    page.out_edit.editingFinished.emit()
    switch = page.adapter_output
    switch.check.setChecked(True)
    assert state.recipe["output"] == {"format": "adapter"}
    switch.rank.setValue(3)
    switch.rank.editingFinished.emit()
    assert state.recipe["output"] == {"format": "adapter", "rank": 3}
    assert yaml.safe_load(window.page("recipe").yaml.text())["output"] == {"format": "adapter", "rank": 3}
    window.undo_action.trigger()
    assert state.recipe["output"] == {"format": "adapter"} and switch.rank.value() == 0
    window.undo_action.trigger()
    assert "output" not in state.recipe and not switch.check.isChecked()
    window.redo_action.trigger()
    assert switch.check.isChecked()
    with qtbot.waitSignal(page.dry_run_finished, timeout=20_000) as dry:
        page.dry_button.click()
    assert dry.args == [True], page.dry_note.toolTip()
    assert _merge(qtbot, page) == ["succeeded"]
    written = load_file(tmp_path / "out" / "adapter_model.safetensors")
    expected = merge_to_adapter(Recipe.from_dict(page.merge_recipe()), tmp_path / "engine", device="cpu")
    assert expected.modules and {m.route for m in expected.modules} == {"concatenation"}
    reference = load_file(tmp_path / "engine" / "adapter_model.safetensors")
    assert set(written) == set(reference)
    assert all(torch.equal(written[k], reference[k]) for k in written)
    # A full model among the inputs: the verdict and the dry run name the problem.
    add_models(window, family["ft1"])
    state.set_included(str(family["ft1"]), True)
    qtbot.waitUntil(lambda: not state.verdict_pending(), timeout=5_000)
    assert not state.verdict().ok and "every input must be a LoRA adapter" in state.verdict().message
    with qtbot.waitSignal(page.dry_run_finished, timeout=20_000) as dry:
        page.dry_button.click()
    assert dry.args == [False] and "LoRA adapter" in page.dry_note.toolTip()


def test_a_multi_stage_project_merges_its_whole_graph(qtbot, window, family, add_models, tmp_path: Path) -> None:
    add_models(window, family["base"], family["ft1"], family["ft2"], family["ft3"])
    state = window.state
    state.set_method("task_arithmetic")
    state.set_included(str(family["ft3"]), False)
    state.add_stage()
    state.set_included(str(family["ft3"]), True)
    window.go_to("merge")
    page = window.page("merge")
    page.out_edit.setText(str(tmp_path / "out"))
    page.out_edit.editingFinished.emit()
    with qtbot.waitSignal(page.dry_run_finished, timeout=20_000) as dry:
        page.dry_button.click()
    assert dry.args == [True], page.dry_note.toolTip()
    assert _merge(qtbot, page) == ["succeeded"]
    document = page.merge_recipe()
    assert isinstance(document, list)
    engine = merge_multi(parse_multi(yaml.safe_dump_all(document)), tmp_path / "engine", device="cpu")
    written = load_file(tmp_path / "out" / "model.safetensors")
    reference = load_file(engine.output / "model.safetensors")
    assert set(written) == set(reference) and all(torch.equal(written[k], reference[k]) for k in written)
