"""The Merge page's quick eval on a real tiny merge: the table's Δ, normalized and mean
cells and the verdict equal the engine's numbers; a repeat run scores only what changed;
one progress bar rises over the whole job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from mergestudio.events import Progress
from mergestudio_qt import workers
from PySide6.QtCore import Qt

from tests.core.evalfixtures import write_bigram_model

BASE = {"q": "a", "a": "</s>", "r": "x", "x": "</s>"}
SKILL_Q = {"q": "a", "a": "b", "b": "c", "c": "</s>"}
SKILL_R = {"r": "x", "x": "y", "y": "z", "z": "</s>"}


def _write_task(path: Path, name: str, items: list[tuple[str, str]]) -> Path:
    lines = [json.dumps({"task": {"name": name, "max_new_tokens": 4}})]
    lines += [json.dumps({"id": f"{name}-{i}", "prompt": p, "target": t}) for i, (p, t) in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def merge_setup(qtbot, window, add_models, tmp_path: Path):
    """Base + two specialists, a task per skill and a perplexity task, merged linearly."""
    root = tmp_path / "zoo"
    folders = {"base": root / "base", "skill_q": root / "skill_q", "skill_r": root / "skill_r"}
    for name, table in (("base", BASE), ("skill_q", SKILL_Q), ("skill_r", SKILL_R)):
        write_bigram_model(folders[name], table)
    tasks = [
        _write_task(root / "tq.test.jsonl", "tq", [("q", "abc"), ("qa", "bc"), ("qab", "c"), ("q", "a")]),
        _write_task(root / "tr.test.jsonl", "tr", [("r", "xyz"), ("rx", "yz"), ("rxy", "z"), ("r", "x")]),
    ]
    general = root / "general.test.jsonl"
    general.write_text('{"task": {"name": "general"}}\n{"id": "g0", "text": "qabc rxyz"}\n')
    tasks.append(general)
    add_models(window, *folders.values())
    window.state.set_eval_tasks([str(t) for t in tasks])
    page = window.page("merge")
    page._load_tasks()
    page.out_edit.setText(str(tmp_path / "merged"))
    page.out_edit.editingFinished.emit()
    with qtbot.waitSignal(page.merge_finished, timeout=60_000) as merged:
        page.merge_button.click()
    assert merged.args == ["succeeded"]
    return page, folders, tasks


def _run_eval(qtbot, page) -> None:
    with qtbot.waitSignal(page.eval_finished, timeout=120_000) as blocker:
        page.eval_button.click()
    assert blocker.args == [True]


def _column(page, header: str) -> int:
    headers = [page.eval_table.horizontalHeaderItem(i).text() for i in range(page.eval_table.columnCount())]
    return headers.index(header)


def _value(page, row: int, header: str) -> float | None:
    return page.eval_table.item(row, _column(page, header)).data(Qt.ItemDataRole.UserRole)


def test_table_matches_the_engine_numbers(qtbot, merge_setup) -> None:
    from mergestudio.evaluate import evaluate_path
    from mergestudio.evaluate.normalized import compare_to_parents

    page, folders, tasks = merge_setup
    _run_eval(qtbot, page)
    # The engine's own numbers, computed here without the page or the cache.
    scores = {label: evaluate_path(folder, tasks, device="cpu", batch_size=64).scores
              for label, folder in {"merged": page.last_output, **folders}.items()}
    expected = compare_to_parents(
        scores["merged"], base=scores["base"], parents={k: scores[k] for k in ("skill_q", "skill_r")},
        lower_is_better=["general"],
    )
    assert expected.specialist_of == {"tq": "skill_q", "tr": "skill_r"}
    rows = [page.eval_table.verticalHeaderItem(i).text() for i in range(page.eval_table.rowCount())]
    assert rows == ["tq · exact match % ↑", "tr · exact match % ↑", "general · perplexity ↓", "mean of 2 ↑"]
    for row, task in enumerate(("tq", "tr")):
        assert _value(page, row, "merged") == pytest.approx(scores["merged"][task])
        assert _value(page, row, "Δ base") == pytest.approx(expected.delta_vs_base[task])
        assert _value(page, row, "normalized") == pytest.approx(expected.normalized[task])
        assert page.eval_table.item(row, _column(page, "Δ base")).text() == f"{100 * expected.delta_vs_base[task]:+.1f}"
        for label in ("base", "skill_q", "skill_r"):
            assert _value(page, row, label) == pytest.approx(scores[label][task])
    general_change = scores["merged"]["general"] / scores["base"]["general"] - 1
    assert _value(page, 2, "Δ base") == pytest.approx(general_change)
    assert page.eval_table.item(2, _column(page, "normalized")).text() == "—"
    mean = 3
    assert _value(page, mean, "merged") == pytest.approx(expected.mean_raw)
    assert _value(page, mean, "normalized") == pytest.approx(expected.mean_normalized)
    assert _value(page, mean, "Δ base") == pytest.approx(expected.mean_delta_vs_base)
    assert _value(page, mean, "skill_q") == pytest.approx((scores["skill_q"]["tq"] + scores["skill_q"]["tr"]) / 2)

    verdict = page.eval_verdict.text()
    assert expected.verdict(percent_scale=False) in verdict
    assert f"keeps {expected.mean_normalized * 100:.0f} % of the specialists' skills" in verdict
    assert "perplexity" in verdict and "lower is better" in verdict

    # Bold marks the merge's column, underline each task's specialist, nothing else.
    for row in range(page.eval_table.rowCount()):
        for column in range(page.eval_table.columnCount()):
            font = page.eval_table.item(row, column).font()
            assert font.bold() == (column == _column(page, "merged"))
    assert page.eval_table.item(0, _column(page, "skill_q")).font().underline()
    assert not page.eval_table.item(0, _column(page, "skill_r")).font().underline()
    assert page.eval_table.item(1, _column(page, "skill_r")).font().underline()


def test_repeat_run_scores_only_the_new_merge(qtbot, window, merge_setup, monkeypatch) -> None:
    from mergestudio.evaluate import lm as lm_module

    page, _folders, _tasks = merge_setup
    loaded: list[str] = []  # which models the job loads, i.e. evaluates
    real_load = lm_module.CausalLM.load.__func__

    def load(cls, path, *args, **kwargs):
        loaded.append(Path(path).name)
        return real_load(cls, path, *args, **kwargs)

    monkeypatch.setattr(lm_module.CausalLM, "load", classmethod(load))
    _run_eval(qtbot, page)
    assert sorted(loaded) == sorted(["merged", "base", "skill_q", "skill_r"])
    assert page.last_eval.evaluated == ("merged", "base", "skill_q", "skill_r")

    loaded.clear()
    _run_eval(qtbot, page)
    assert loaded == []  # nothing changed: every report from the cache
    assert "From the cache: merged, base, skill_q, skill_r." in page.eval_legend.text()

    # Another recipe, merged again: only the merge is scored.
    recipe = window.state.recipe
    models = [{**m, "parameters": {**(m.get("parameters") or {}), "weight": w}}
              for m, w in zip(recipe["models"], (0.9, 0.1, 0.5), strict=False)]
    window.state.set_recipe({**recipe, "models": models}, "widgets")
    page.overwrite_check.setChecked(True)  # replace the first merge without asking
    with qtbot.waitSignal(page.merge_finished, timeout=60_000):
        page.merge_button.click()
    loaded.clear()
    _run_eval(qtbot, page)
    assert loaded == ["merged"]
    assert page.last_eval.evaluated == ("merged",)


def test_one_progress_bar_rises_over_the_whole_job(qtbot, merge_setup, monkeypatch) -> None:
    page, _folders, _tasks = merge_setup
    seen: list[Progress] = []
    original = workers.EvalJob.events

    def record(self, event):
        if isinstance(event, Progress):
            seen.append(event)
        original(self, event)

    monkeypatch.setattr(workers.EvalJob, "events", record)
    values: list[int] = []
    page.progress.valueChanged.connect(values.append)
    _run_eval(qtbot, page)
    assert {p.total for p in seen} == {4 * (4 + 4 + 1)}  # 4 models × every item, one total
    done = [p.done for p in seen]
    assert done == sorted(done) and done[-1] == 36
    assert values == sorted(values) and values[-1] == page.progress.maximum()
    assert page.progress.format() == "evaluated"
    assert not math.isnan(page.last_eval.comparison.mean_normalized)


def test_a_pinned_specialist_recompares_without_scoring_again(qtbot, window, merge_setup, monkeypatch,
                                                               tmp_path: Path) -> None:
    from mergestudio.evaluate import lm as lm_module
    from mergestudio.evaluate.normalized import compare_to_parents
    from mergestudio_qt.project import load_project, save_project

    page, folders, _tasks = merge_setup
    _run_eval(qtbot, page)
    scores = {label: report.scores for label, report in page.last_eval.reports.items()}
    loaded: list[str] = []
    monkeypatch.setattr(lm_module.CausalLM, "load", classmethod(lambda cls, path, *a, **k: loaded.append(path)))

    # The user makes skill_r the specialist of tq (the menu's action calls this).
    window.state.set_specialist("tq", page._reference_of("skill_r"))
    assert loaded == []  # only the comparison changed
    expected = compare_to_parents(
        scores["merged"], base=scores["base"], parents={k: scores[k] for k in ("skill_q", "skill_r")},
        lower_is_better=["general"], specialist_of={"tq": "skill_r"},
    )
    assert page.last_eval.comparison.specialist_of == {"tq": "skill_r", "tr": "skill_r"}
    assert page.eval_table.item(0, _column(page, "skill_r")).font().underline()
    assert not page.eval_table.item(0, _column(page, "skill_q")).font().underline()
    shown = _value(page, 0, "normalized")
    if math.isnan(expected.normalized["tq"]):
        assert page.eval_table.item(0, _column(page, "normalized")).text() == "—"
    else:
        assert shown == pytest.approx(expected.normalized["tq"])
    assert "you chose it" in page.eval_table.item(0, _column(page, "skill_r")).toolTip()

    # The pin is project state: saved, reopened, and used by the next quick eval.
    project = tmp_path / "pinned.msproj"
    save_project(window.project_data(), project)
    assert load_project(project).specialists == {"tq": str(folders["skill_r"])}
    assert page.pinned_specialists() == {"tq": "skill_r"}

    window.state.set_specialist("tq", None)  # back to the best-scoring parent
    assert page.last_eval.comparison.specialist_of == {"tq": "skill_q", "tr": "skill_r"}


def test_quick_eval_runs_on_the_merge_pages_device(qtbot, merge_setup, monkeypatch) -> None:
    """The device picked on the Merge page reaches the models that score (and generate):
    "auto" is passed on as such (it resolves to the CPU here), not pinned to "cpu"."""
    from mergestudio.evaluate.lm import CausalLM

    page, _folders, _tasks = merge_setup
    devices: list[str] = []
    load = CausalLM.load.__func__  # type: ignore[attr-defined]

    def recording_load(cls, path, device="auto", dtype="auto"):
        devices.append(device)
        return load(cls, path, device, dtype)

    monkeypatch.setattr(CausalLM, "load", classmethod(recording_load))
    page.device_combo.setCurrentText("auto")
    _run_eval(qtbot, page)
    assert devices and set(devices) == {"auto"}
