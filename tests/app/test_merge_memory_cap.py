"""The Merge page's memory cap: a project setting (saved, undoable, restored), the
engine's verdict on the current recipe under it shown before anything runs, a merge
that cannot fit refused before it writes, and a merge that fits written byte for byte as
without the cap. The verdicts are compared with the engine's own ``memory_verdict`` on
the page's recipe."""

from __future__ import annotations

import json
from dataclasses import replace

from mergestudio.engine import build_plan, load_recipe
from mergestudio.engine.memory import memory_verdict
from mergestudio.sizes import format_bytes

GB = 10**9


def choose_cap(page, size: int | None) -> None:
    """Pick a cap from the list, as a person does."""
    index = page.memory_combo.findData(size)
    assert index >= 0, f"{size} is not offered"
    page.memory_combo.setCurrentIndex(index)


def set_cap(window, size: int | None) -> None:
    """A cap the list does not offer (as a project file may hold)."""
    window.state.set_merge_settings(replace(window.state.merge, max_memory=size))


def engine_verdict(page, cap: int | None):
    plan = build_plan(load_recipe(page.merge_recipe()))
    try:
        return memory_verdict(plan, cap)
    finally:
        plan.close()


def wait_for_verdict(qtbot, page) -> bool:
    with qtbot.waitSignal(page.memory_checked, timeout=20_000) as blocker:
        page.check_memory()  # without waiting out the pause after the last edit
    return bool(blocker.args[0])


def test_the_cap_round_trips_through_undo_save_and_load(qtbot, window, merge_page, tmp_path) -> None:
    assert window.state.merge.max_memory is None and merge_page.memory_combo.currentText() == "no cap"
    choose_cap(merge_page, 2 * GB)
    assert window.state.merge.max_memory == 2 * GB
    assert window.undo_action.text().endswith("memory cap")
    window.undo_action.trigger()
    assert window.state.merge.max_memory is None
    assert merge_page.memory_combo.currentData() is None
    window.redo_action.trigger()
    assert window.state.merge.max_memory == 2 * GB
    assert merge_page.memory_combo.currentText() == "2 GB"

    path = tmp_path / "capped.msproj"
    assert window.save_to(path)
    assert json.loads(path.read_text())["merge"]["max_memory"] == 2 * GB
    window.new_project()
    assert window.state.merge.max_memory is None
    with qtbot.waitSignal(window.project_loaded, timeout=60_000):
        window.open_project(path)
    assert window.state.merge.max_memory == 2 * GB
    assert merge_page.memory_combo.currentText() == "2 GB"

    # A cap the list does not offer gets its own entry; a file from before the cap loads
    # with none.
    document = json.loads(path.read_text())
    document["merge"]["max_memory"] = 3_500_000_000
    path.write_text(json.dumps(document))
    with qtbot.waitSignal(window.project_loaded, timeout=60_000):
        window.open_project(path)
    assert merge_page.memory_combo.currentText() == "3500 MB"
    assert merge_page.memory_combo.currentData() == 3_500_000_000
    del document["merge"]["max_memory"]
    path.write_text(json.dumps(document))
    with qtbot.waitSignal(window.project_loaded, timeout=60_000):
        window.open_project(path)
    assert window.state.merge.max_memory is None
    assert merge_page.memory_combo.currentText() == "no cap"


def test_the_verdict_turns_to_does_not_fit_below_the_estimate(qtbot, window, merge_page) -> None:
    choose_cap(merge_page, 1 * GB)
    assert wait_for_verdict(qtbot, merge_page)
    expected = engine_verdict(merge_page, 1 * GB)
    assert expected.fits
    note = merge_page.memory_note.text()
    assert note.startswith("✓ Fits") and format_bytes(expected.peak_bytes) in note
    assert merge_page.dry_labels["peak"].text() == format_bytes(expected.peak_bytes)

    below = expected.least_bytes - 1_000_000  # just under what the merge needs at the least
    set_cap(window, below)
    assert wait_for_verdict(qtbot, merge_page)
    assert not engine_verdict(merge_page, below).fits
    note = merge_page.memory_note.text()
    assert note.startswith("✗ Does not fit") and format_bytes(expected.least_bytes) in note
    assert "Raise the cap" in note
    assert "raise the cap to at least" in merge_page.memory_note.toolTip()
    assert merge_page.memory_combo.currentData() == below

    set_cap(window, None)
    assert wait_for_verdict(qtbot, merge_page)
    assert merge_page.memory_note.text().startswith("No cap")


def test_a_merge_under_a_too_small_cap_is_refused_and_writes_nothing(qtbot, window, merge_page, tmp_path) -> None:
    set_cap(window, engine_verdict(merge_page, None).least_bytes // 2)
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as blocker:
        merge_page.merge_button.click()
    assert blocker.args == ["failed"]
    out = tmp_path / "out"
    assert not (out / "merged").exists()
    assert not out.exists() or not any(out.iterdir())  # no staging folder either
    assert "max_memory: this merge needs about" in merge_page.log_view.toPlainText()
    assert "nothing was written" in merge_page.log_view.toPlainText()
    assert merge_page.memory_note.text().startswith("✗ Refused")
    assert merge_page.merge_button.isEnabled()


def test_a_merge_under_a_cap_that_fits_writes_the_same_bytes(qtbot, window, merge_page, tmp_path) -> None:
    outputs = {}
    for name, cap in (("uncapped", None), ("capped", 256 * 10**6)):
        choose_cap(merge_page, cap)
        merge_page.out_edit.setText(str(tmp_path / name))
        merge_page.out_edit.editingFinished.emit()
        with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as blocker:
            merge_page.merge_button.click()
        assert blocker.args == ["succeeded"]
        outputs[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.safetensors"))}
    # The smallest cap offered leaves the merge smaller steps than its default ones.
    plan = build_plan(load_recipe(merge_page.merge_recipe()))
    assert plan.chunk_bytes_for(256 * 10**6) < plan.step_bytes
    plan.close()
    assert outputs["capped"] and outputs["capped"] == outputs["uncapped"]


def test_without_models_or_with_an_invalid_recipe_the_note_says_what_to_do(qtbot, window, merge_page) -> None:
    window.state.set_recipe({**window.state.recipe, "merge_method": "slerp"}, "widgets")  # slerp takes two
    assert not wait_for_verdict(qtbot, merge_page)
    assert merge_page.memory_note.text().startswith("No estimate until the recipe is valid")
    assert "slerp" in merge_page.memory_note.toolTip()
    assert merge_page.dry_labels["peak"].text() == "—"
    window.new_project()
    merge_page.check_memory()
    assert merge_page.memory_note.text().startswith("Add models on the Models page")


def test_a_multi_stage_recipe_is_judged_by_its_stages_and_merged_under_the_cap(
    qtbot, window, family, merge_page, tmp_path
) -> None:
    state = window.state
    state.set_included(str(family["ft2"]), False)
    state.add_stage()  # stage1 merges ft1 onto the base; the final stage merges stage1 and ft2
    state.set_included(str(family["ft2"]), True)
    assert state.stage_names() == ["stage1", "final"]
    choose_cap(merge_page, 1 * GB)
    assert wait_for_verdict(qtbot, merge_page)
    verdict = merge_page.memory_verdict
    assert verdict.fits and verdict.stage in ("stage1", "final")
    set_cap(window, verdict.least_bytes // 2)
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as blocker:
        merge_page.merge_button.click()
    assert blocker.args == ["failed"]
    assert "stage 'stage1': max_memory: this merge needs about" in merge_page.log_view.toPlainText()
    assert not (tmp_path / "out" / "merged").exists()
