"""The generation panel: tokens streamed into side-by-side columns off the GUI thread,
Stop, the event loop's heartbeat while tokens stream, the Merge and Evolve pages'
"Try it…" hooks, and the panel's layout at 1280x800 and 1024x700."""

from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mergestudio.demo.info import zoo_info
from mergestudio.demo.paths import default_zoo_dir
from mergestudio.demo.recipes import recipe_dicts
from mergestudio.evaluate import CausalLM
from mergestudio.evaluate.generate import LoadedModels, SamplingOptions, generate
from mergestudio_qt.context import Studio
from mergestudio_qt.preferences import Preferences
from mergestudio_qt.state import StudioState
from mergestudio_qt.widgets.generate_panel import Candidate, GeneratePanel, recipe_parents
from PySide6.QtCore import QThread, QTimer

from tests.app.layout_check import clipping_problems
from tests.app.test_layout_clipping import studio_style  # noqa: F401  (a fixture: the studio's fonts and paddings)

PROMPT = "end ynbi="
FINISH_MS = 60_000


@pytest.fixture(autouse=True)
def collect_here(qtbot) -> None:
    """Collect this test's cyclic garbage (widgets kept alive by test lambdas) now, on the
    GUI thread: collected later by a worker thread's allocation, a widget's destructor
    would run there and touch its timers from the wrong thread."""
    yield
    qtbot.wait(1)  # deleteLater() of the closed widgets
    gc.collect()


@pytest.fixture(scope="module")
def zoo() -> dict[str, Any]:
    return zoo_info(default_zoo_dir())


@pytest.fixture(scope="module")
def paths(zoo: dict[str, Any]) -> dict[str, str]:
    return {"base": zoo["base"]["path"], **{s["name"]: s["path"] for s in zoo["specialists"]}}


@pytest.fixture(scope="module")
def task_arithmetic(zoo: dict[str, Any]) -> dict[str, Any]:
    skills = tuple(s["skill"] for s in zoo["specialists"])
    return recipe_dicts(Path(zoo["zoo"]), skills, absolute=True)["task_arithmetic"]


@pytest.fixture(scope="module")
def long_context(zoo: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo base with room for thousands of tokens (rotary positions extend) and
    <unk> as its end token, which it never writes, so a generation runs long enough to be
    stopped and watched."""
    folder = tmp_path_factory.mktemp("long") / "base-long"
    shutil.copytree(zoo["base"]["path"], folder)
    edits = {
        "config.json": {"max_position_embeddings": 4096, "eos_token_id": 3},
        "generation_config.json": {"eos_token_id": 3},
        "tokenizer_config.json": {"model_max_length": 4096, "eos_token": "<unk>"},
    }
    for name, values in edits.items():
        data = json.loads((folder / name).read_text())
        data.update(values)
        (folder / name).write_text(json.dumps(data))
    return str(folder)


@pytest.fixture
def panel(qtbot) -> GeneratePanel:
    studio = Studio(StudioState(), Preferences(device="cpu", demo_opened=True))
    widget = GeneratePanel(studio)
    qtbot.addWidget(widget)
    widget.resize(1100, 640)
    widget.show()
    yield widget
    widget.stop()
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=FINISH_MS)
    widget.release_models()


def _run(qtbot, panel: GeneratePanel) -> str:
    with qtbot.waitSignal(panel.generation_finished, timeout=FINISH_MS) as finished:
        panel.generate_button.click()
    return str(finished.args[0])


def test_columns_stream_the_candidate_and_its_parents(
    qtbot, panel: GeneratePanel, paths: dict[str, str], task_arithmetic: dict[str, Any]
) -> None:
    """A recipe merged in memory beside two parents: each column holds what that model
    generates on its own, and the tokens were made on a thread other than the GUI's."""
    panel.set_subject([Candidate("task arithmetic", task_arithmetic)], {"last": paths["last"], "base": paths["base"]})
    assert panel.parents_button.text() == "Parents: 0 of 2"  # each one costs memory: none at first
    panel.set_parent_checked("last", True)
    assert panel.parents_button.text() == "Parents: 1 of 2"
    panel.prompt_edit.setPlainText(PROMPT)
    threads: set[QThread] = set()
    panel.generate_button.clicked.connect(lambda: threads.add(panel.job.thread()) if panel.job else None)
    assert _run(qtbot, panel) == "succeeded"
    assert threads and QThread.currentThread() not in threads
    assert [c.title.full_text() for c in panel.columns] == ["task arithmetic", "last"]
    options = SamplingOptions(max_new_tokens=panel.max_tokens_spin.value())
    models = LoadedModels(device="cpu")
    try:
        expected = [generate(models.recipe(task_arithmetic), PROMPT, options).text,
                    generate(CausalLM.load(paths["last"], device="cpu"), PROMPT, options).text]
    finally:
        models.close()
    assert panel.column_texts() == expected
    assert expected[1] == "i"
    assert panel.columns[1].stats.full_text().startswith("1 token · ")  # one character, singular


def test_sampling_controls_and_the_same_seed_in_every_column(
    qtbot, panel: GeneratePanel, paths: dict[str, str]
) -> None:
    panel.set_subject([Candidate("base", paths["base"])], {"base again": paths["base"]})
    panel.set_parent_checked("base again", True)
    assert not panel.temperature_spin.isEnabled()  # greedy first
    panel.mode_combo.setCurrentIndex(1)
    assert panel.temperature_spin.isEnabled() and panel.seed_spin.isEnabled()
    panel.temperature_spin.setValue(1.5)
    panel.seed_spin.setValue(5)
    panel.max_tokens_spin.setValue(20)
    panel.prompt_edit.setPlainText("the")
    assert _run(qtbot, panel) == "succeeded"
    first = panel.column_texts()
    assert first[0] == first[1]  # the same model, prompt and seed: the same draw
    panel.seed_spin.setValue(6)
    assert _run(qtbot, panel) == "succeeded"
    assert panel.column_texts()[0] != first[0]


def test_stop_ends_every_column_at_once(qtbot, panel: GeneratePanel, long_context: str, paths: dict[str, str]) -> None:
    panel.set_subject([Candidate("long", long_context)], {"base": paths["base"]})
    panel.set_parent_checked("base", True)
    panel.max_tokens_spin.setValue(4000)
    panel.mode_combo.setCurrentIndex(1)  # sampled: a greedy tiny model may settle on eos
    panel.generate_button.click()
    qtbot.waitUntil(lambda: bool(panel.columns[0].text.toPlainText()), timeout=FINISH_MS)
    with qtbot.waitSignal(panel.generation_finished, timeout=FINISH_MS) as finished:
        panel.stop_button.click()
    assert finished.args == ["stopped"]
    reasons = [g.stop_reason for g in panel.last_results]
    assert reasons[0] == "stopped" and len(panel.last_results[0].token_ids) < 4000
    assert panel.generate_button.isEnabled() and not panel.stop_button.isEnabled()
    assert panel.column_texts()[0] == panel.last_results[0].text


def test_the_event_loop_keeps_beating_while_tokens_stream(qtbot, panel: GeneratePanel, long_context: str) -> None:
    """A 5 ms heartbeat on the GUI thread sees the text at many lengths while it grows,
    each a beginning of the final text: the loop kept turning between tokens, and what
    it drew was the stream so far (the worst stall in ms is measured by
    benchmarks/generate_stall.py against the 100 ms budget)."""
    panel.set_subject([Candidate("long", long_context)], {})
    panel.max_tokens_spin.setValue(400)
    panel.mode_combo.setCurrentIndex(1)
    panel.temperature_spin.setValue(1.0)
    texts: list[str] = []
    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
        if panel.is_busy():
            texts.append(panel.columns[0].text.toPlainText())

    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    try:
        assert _run(qtbot, panel) == "succeeded"
    finally:
        heartbeat.stop()
    final = panel.column_texts()[0]
    assert all(final.startswith(text) for text in texts)
    seen = {len(text) for text in texts if 0 < len(text) < len(final)}
    assert len(final) > 100 and len(seen) >= 5, (len(final), sorted(seen))
    assert panel.redraws >= 5
    print(f"heartbeat: {len(gaps)} beats, worst gap {1000 * max(gaps):.0f} ms")


def test_merge_page_tries_the_recipe_in_memory_and_writes_nothing(
    qtbot, window, add_models, paths: dict[str, str], tmp_path: Path
) -> None:
    add_models(window, *(Path(paths[n]) for n in ("base", "last", "max")))
    window.state.set_recipe({"merge_method": "task_arithmetic", "base_model": paths["base"],
                             "models": [{"model": paths[n], "parameters": {"weight": 1.0}} for n in ("last", "max")]},
                            "load", "test recipe")
    page = window.page("merge")
    window.go_to("merge")
    before = set(tmp_path.rglob("*"))
    page.try_button.click()
    dialog = page.generation
    assert dialog is not None and dialog.isVisible()
    generation = dialog.panel
    assert generation.candidate_combo.currentText() == "recipe (in memory)"
    for name in ("base", "last", "max"):
        generation.set_parent_checked(name, True)
    assert generation.parents_button.text() == "Parents: 3 of 3"
    generation.prompt_edit.setPlainText(PROMPT)
    assert _run(qtbot, generation) == "succeeded"
    assert len(generation.columns) == 4 and generation.column_texts()[1] != ""
    assert set(tmp_path.rglob("*")) == before  # nothing written: no merge folder, no cache
    dialog.close()


def test_evolve_page_tries_a_trial_merged_in_memory(
    qtbot, paths: dict[str, str], task_arithmetic: dict[str, Any]
) -> None:
    from mergestudio_qt.pages.evolve_page import EvolvePage

    from benchmarks.evolve_redraw import synthetic_history

    page = EvolvePage(Studio(StudioState(), Preferences(device="cpu", demo_opened=True)))
    qtbot.addWidget(page)
    history, _ = synthetic_history(20)
    page.show_history(history)
    history.recipes[7] = yaml.safe_dump(task_arithmetic)
    page.select_trial(7)
    assert page.inspector.try_button.isEnabled()
    page.inspector.try_button.click()
    panel = page.generation.panel
    assert panel.candidate_combo.currentText() == "trial 7 (in memory)"
    assert set(recipe_parents(task_arithmetic)) == {"base", "last", "cipher", "max", "symbol"}
    panel.set_parent_checked("last", True)
    panel.prompt_edit.setPlainText(PROMPT)
    assert _run(qtbot, panel) == "succeeded"
    models = LoadedModels(device="cpu")
    try:
        expected = generate(models.recipe(task_arithmetic), PROMPT, SamplingOptions(max_new_tokens=64)).text
    finally:
        models.close()
    assert panel.column_texts() == [expected, "i"]
    page.generation.close()


@pytest.mark.parametrize("size", [(1280, 800), (1024, 700)])
def test_the_panel_clips_nothing(
    qtbot, studio_style, panel: GeneratePanel, paths: dict[str, str], size: tuple[int, int]  # noqa: F811
) -> None:
    panel.set_subject([Candidate("recipe (in memory)", {"models": []}),
                       Candidate("last merge: a-folder-name-that-is-rather-long", paths["base"])],
                      {name: folder for name, folder in paths.items()})
    for name in ("base", "last", "cipher"):
        panel.set_parent_checked(name, True)
    panel.resize(*size)
    qtbot.wait(50)
    assert (panel.width(), panel.height()) == size, f"the panel cannot be {size}: minimum {panel.minimumSizeHint()}"
    assert not clipping_problems(panel)
