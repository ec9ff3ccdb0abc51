"""The Merge page: dry run, a merge in the background with progress, Cancel that leaves
nothing behind, and quick eval next to the parents. The written weights are compared with
the engine's own merge of the same recipe and with the method's formula; the merged
model's quick-eval score with the engine's evaluator on the written folder."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe
from mergestudio.io import open_model
from mergestudio_qt import workers
from PySide6.QtCore import Qt
from safetensors.torch import load_file


def test_dry_run_estimates_bytes_and_memory(qtbot, merge_page) -> None:
    with qtbot.waitSignal(merge_page.dry_run_finished, timeout=10_000) as blocker:
        merge_page.dry_button.click()
    assert blocker.args == [True]
    assert merge_page.dry_labels["tensors"].text() == "39"
    assert merge_page.dry_labels["read"].text().endswith("KB")
    assert merge_page.last_dry_run.bytes_to_read == 3 * merge_page.last_dry_run.output_bytes * 2
    assert "valid" in merge_page.dry_note.text()
    # the estimate calibrated on this machine: read, compute, write
    assert merge_page.dry_labels["time"].text().startswith("≈ ")
    assert "compute" in merge_page.dry_labels["time"].toolTip()


def test_dry_run_reports_an_invalid_recipe(qtbot, window, merge_page) -> None:
    window.state.set_recipe({**window.state.recipe, "merge_method": "slerp"}, "widgets")
    with qtbot.waitSignal(merge_page.dry_run_finished, timeout=10_000) as blocker:
        merge_page.dry_button.click()
    assert blocker.args == [False]
    assert "slerp" in merge_page.dry_note.text()


def test_merge_runs_in_the_background_and_writes_a_model(qtbot, window, merge_page, family, tmp_path) -> None:
    recipe = window.state.recipe
    weights = {str(family["ft1"]): 0.7, str(family["ft2"]): 0.4}
    models = [{"model": m["model"], "parameters": {"weight": weights[m["model"]]}} for m in recipe["models"]]
    window.state.set_recipe({**recipe, "merge_method": "task_arithmetic", "models": models}, "widgets")
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as blocker:
        merge_page.merge_button.click()
        assert merge_page.cancel_button.isEnabled()
        assert not merge_page.merge_button.isEnabled()
    assert blocker.args == ["succeeded"]
    out = tmp_path / "out" / "merged"
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert open_model(out).dtypes == {"BF16": open_model(out).parameter_count}  # the chosen dtype
    written = load_file(str(out / "model.safetensors"))
    # The engine, run here on the page's recipe, writes the very same tensors…
    plan = build_plan(load_recipe(merge_page.merge_recipe()))
    target = DictTarget()
    execute_plan(plan, target, device="cpu")
    plan.close()
    assert set(written) == set(target.tensors)
    for name, tensor in target.tensors.items():
        assert torch.equal(written[name], tensor), name
    # …and they are task arithmetic with the page's weights: θ = θ_base + 0.7 τ₁ + 0.4 τ₂.
    inputs = {key: load_file(str(family[key] / "model.safetensors")) for key in ("base", "ft1", "ft2")}
    for name, tensor in written.items():
        base = inputs["base"][name]
        expected = base + 0.7 * (inputs["ft1"][name] - base) + 0.4 * (inputs["ft2"][name] - base)
        torch.testing.assert_close(tensor.float(), expected, rtol=2**-8, atol=1e-6, msg=name)
    assert merge_page.progress.value() == merge_page.progress.maximum()
    assert "tensors in" in merge_page.stats_label.full_text()
    assert "done in" in merge_page.log_view.toPlainText()
    assert merge_page.open_button.isEnabled() and merge_page.merge_button.isEnabled()


def test_job_results_arrive_on_the_gui_thread(qtbot, merge_page, monkeypatch) -> None:
    from PySide6.QtCore import QThread
    from PySide6.QtWidgets import QApplication

    on_gui_thread = []
    original = type(merge_page)._merge_done

    # Named like the method it replaces: PySide finds a slot's receiver by that name.
    def _merge_done(self, result):
        on_gui_thread.append(QThread.currentThread() is QApplication.instance().thread())
        original(self, result)

    monkeypatch.setattr(type(merge_page), "_merge_done", _merge_done)
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000):
        merge_page.merge_button.click()
    assert on_gui_thread == [True]


def test_cancel_leaves_no_partial_output(qtbot, window, merge_page, tmp_path, monkeypatch) -> None:
    # Hold the worker at its first progress event until Cancel has been pressed, so the
    # tiny merge cannot finish first.
    gate = threading.Event()
    original = workers.MergeJob.events

    def held_events(self, event):
        original(self, event)
        gate.wait(10)

    monkeypatch.setattr(workers.MergeJob, "events", held_events)
    merge_page.merge_button.click()
    job = merge_page.merge_job
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as blocker:
        merge_page.cancel_button.click()
        gate.set()
    assert job is not None
    assert blocker.args == ["cancelled"]
    out_parent = tmp_path / "out"
    assert not (out_parent / "merged").exists()
    assert not out_parent.exists() or not any(out_parent.iterdir())  # no staging folder left
    assert "cancelled" in merge_page.log_view.toPlainText()
    assert merge_page.progress.format() == "cancelled"


def test_existing_output_is_replaced_when_ticked(qtbot, merge_page, tmp_path) -> None:
    out = tmp_path / "out" / "merged"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("old")
    merge_page.overwrite_check.setChecked(True)
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as blocker:
        merge_page.merge_button.click()
    assert blocker.args == ["succeeded"]
    assert not (out / "old.txt").exists()


def test_merge_failure_is_logged(qtbot, window, merge_page) -> None:
    window.state.set_recipe({**window.state.recipe, "merge_method": "slerp"}, "widgets")
    with qtbot.waitSignal(merge_page.merge_finished, timeout=30_000) as blocker:
        merge_page.merge_button.click()
    assert blocker.args == ["failed"]
    assert "slerp" in merge_page.log_view.toPlainText()


def test_nan_in_an_input_fails_the_merge_with_the_engine_message(
    qtbot, window, family, add_models, tmp_path
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    weights = family["ft2"] / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"][0] = float("nan")
    save_file(tensors, str(weights))
    add_models(window, family["base"], family["ft1"], family["ft2"])
    window.go_to("merge")
    page = window.page("merge")
    page.out_edit.setText(str(tmp_path / "out" / "merged"))
    page.out_edit.editingFinished.emit()
    with qtbot.waitSignal(page.merge_finished, timeout=30_000) as blocker:
        page.merge_button.click()
    assert blocker.args == ["failed"]
    log = page.log_view.toPlainText()
    assert f"{family['ft2']}: tensor 'model.norm.weight' holds 1 NaN/Inf" in log
    assert not (tmp_path / "out").exists()
    assert torch.isnan(load_file(weights)["model.norm.weight"][0])  # the input is untouched


def test_quick_eval_scores_merged_model_next_to_parents(qtbot, window, add_models, tmp_path) -> None:
    pytest.importorskip("transformers")
    from mergestudio.evaluate import ChoiceItem, evaluate_path, write_task

    from tests.core.evalfixtures import write_bigram_model

    folders = {"base": tmp_path / "zoo" / "base", "ft1": tmp_path / "zoo" / "ft1"}
    # Each parent knows one bigram: the base continues "a" with "b", the fine-tune "x" with
    # "z". Where a model knows nothing its choices tie and the first (wrong) one is picked,
    # so each parent scores 1/2; the half-and-half merge knows both (logits 2 each) and
    # scores 1: better than either parent, which only the merged model itself can show.
    write_bigram_model(folders["base"], {"a": "b"})
    write_bigram_model(folders["ft1"], {"x": "z"})
    task = tmp_path / "tasks" / "next.eval.jsonl"
    task.parent.mkdir()
    write_task(task, [ChoiceItem("1", "a", ("c", "b"), 1), ChoiceItem("2", "x", ("y", "z"), 1)], name="next")
    add_models(window, folders["base"], folders["ft1"])
    recipe = window.state.recipe
    models = [{"model": m["model"], "parameters": {"weight": 0.5}} for m in recipe["models"]]
    window.state.set_recipe({**recipe, "merge_method": "task_arithmetic", "models": models}, "widgets")
    window.state.set_eval_tasks([str(task)])
    page = window.page("merge")
    page._load_tasks()
    page.out_edit.setText(str(tmp_path / "merged"))
    page.out_edit.editingFinished.emit()
    with qtbot.waitSignal(page.merge_finished, timeout=60_000):
        page.merge_button.click()
    assert page.eval_button.isEnabled()
    assert page.chosen_tasks() == [str(task)]
    with qtbot.waitSignal(page.eval_finished, timeout=120_000) as blocker:
        page.eval_button.click()
    assert blocker.args == [True]
    headers = [page.eval_table.horizontalHeaderItem(i).text() for i in range(page.eval_table.columnCount())]
    assert headers == ["merged", "Δ base", "normalized", "base", "ft1"]
    assert page.eval_table.verticalHeaderItem(0).text() == "next · accuracy % ↑"
    scores = [page.eval_table.item(0, i).data(Qt.ItemDataRole.UserRole) for i in (0, 3, 4)]
    assert scores == [1.0, 0.5, 0.5]
    # The merged column is the merged folder's own score, as the engine's evaluator finds it.
    assert Path(page.last_output).exists()
    report = evaluate_path(page.last_output, [task], device="cpu")
    assert report.task("next").value == scores[0]
