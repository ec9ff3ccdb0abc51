"""Workers from the Evolve page: the Workers box is the project's setting (one source of
truth in the studio's state, undoable, saved in the project file), and Start with 2
runs the search the way ``mergestudio evolve --workers 2`` does (``run_with_workers``):
both worker processes' trials, and those of a worker that joins from a terminal
(``mergestudio worker RUN``), land in the plots and the trial table, and the Workers tab
lists the workers with the trials each ran, as the run's study records them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mergestudio.search.baselines import BASELINES_FILE
from mergestudio.search.spec import load_spec
from mergestudio.search.store import RunFolder
from mergestudio_qt.context import Studio
from mergestudio_qt.pages.evolve_page import EvolvePage
from mergestudio_qt.preferences import Preferences
from mergestudio_qt.state import StudioState
from mergestudio_qt.widgets.evolve_workers import COLUMNS

from tests.core.test_search import lengthen_tasks, write_search_fixture, write_spec

BUDGET = 500  # more than the test waits for: it stops the run once both workers have trials
RUN_TIMEOUT_MS = 400_000
NOW = COLUMNS.index("Now")  # the Workers tab's column of what a worker does  # two worker processes import torch and load their models first


def _page(qtbot, state: StudioState, tmp_path: Path) -> EvolvePage:
    page = EvolvePage(Studio(state, Preferences(demo_opened=True, cache_dir=str(tmp_path / "cache"))))
    qtbot.addWidget(page)
    page.resize(1280, 800)
    page.show()
    return page


def test_the_workers_box_is_the_projects_setting_and_undoable(qtbot, tmp_path: Path) -> None:
    state = StudioState()
    page = _page(qtbot, state, tmp_path)
    box = page.setup.workers
    assert (box.value(), box.minimum(), box.maximum()) == (1, 1, os.cpu_count())
    box.setValue(2)
    assert state.evolve.workers == 2 and state.dirty
    state.undo_stack.undo()
    assert (state.evolve.workers, box.value()) == (1, 1)
    state.undo_stack.redo()
    assert (state.evolve.workers, box.value()) == (2, 2)
    state.set_search_workers(1)  # another view changing the state: the box follows
    assert box.value() == 1 and "Pause holds it" in page.setup.workers_note.text()


def test_the_workers_setting_is_saved_with_the_project(qtbot, window, tmp_path: Path) -> None:
    window.state.set_search_workers(2)
    path = tmp_path / "p.msproj"
    assert window.save_to(path)
    assert json.loads(path.read_text())["evolve"] == {"workers": 2}
    window.new_project()
    assert window.state.evolve.workers == 1
    with qtbot.waitSignal(window.project_loaded, timeout=10_000):
        window.recent_menu.actions()[0].trigger()
    assert window.state.evolve.workers == 2
    assert window.page("evolve").setup.workers.value() == 2


def test_start_with_two_workers_fills_the_plots_from_both(qtbot, tmp_path: Path) -> None:
    root = write_search_fixture(tmp_path / "fixture")
    # Longer tasks: trials last long enough that every worker runs some before Stop,
    # without hundreds of them piling up while the last worker starts.
    lengthen_tasks(root, 400)
    spec = load_spec(write_spec(root, budget={"evaluations": BUDGET}, evaluation={"batch_size": 4}))
    state = StudioState()
    state.set_search_workers(2)
    page = _page(qtbot, state, tmp_path)
    page.setup.load_spec(spec, "the test's spec")
    run = tmp_path / "run"
    page.setup.run_edit.setText(str(run))

    page.start_search()
    job = page.search_job
    assert job is not None and job.plan is not None and job.plan.count == 2
    assert not page.pause_button.isEnabled() and "does not pause" in page.pause_button.toolTip()
    # One more worker joins from a terminal (`mergestudio worker RUN`) as soon as the run
    # exists: its trials reach the plots through the page's controller, and the Workers
    # tab lists it beside the page's own two.
    qtbot.waitUntil(lambda: RunFolder(run).exists(), timeout=RUN_TIMEOUT_MS)
    search_pid = job.process.pid
    assert search_pid is not None
    search_niceness = os.getpriority(os.PRIO_PROCESS, search_pid)
    joiner = subprocess.Popen(
        [sys.executable, "-m", "mergestudio.cli.main", "worker", str(run), "--name", "joiner", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
        # As nice as the window's search and its workers: on a busy machine a joiner at
        # normal priority would take every trial before they finish importing.
        preexec_fn=lambda: os.nice(search_niceness - os.nice(0)),
    )
    try:
        _run_until_all_worked(qtbot, page, joiner)
    finally:
        if joiner.poll() is None:
            joiner.kill()
            joiner.wait()
    with qtbot.waitSignal(page.search_finished, timeout=RUN_TIMEOUT_MS) as finished:
        page.stop()
    assert finished.args == ["stopped"]
    _check_the_run_and_the_page(qtbot, page, run, tmp_path)


def _run_until_all_worked(qtbot, page: EvolvePage, joiner: subprocess.Popen[bytes]) -> None:
    workers_table = page.inspector.workers_table

    def all_finished_trials() -> bool:
        return {w.name for w in workers_table.workers if w.complete} == {"w0", "w1", "joiner"}

    qtbot.waitUntil(all_finished_trials, timeout=RUN_TIMEOUT_MS)
    # A running worker's row names its trial (the study's running trial, by its worker).
    qtbot.waitUntil(
        lambda: any(workers_table.item(row, NOW).text().startswith("trial ") for row in range(workers_table.rowCount())),
        timeout=60_000,
    )
    qtbot.waitUntil(lambda: page.workers_label.isVisible(), timeout=30_000)
    assert "trial(s) running" in page.workers_label.full_text()

    joiner.send_signal(signal.SIGINT)  # it stops after its trial
    assert joiner.wait(120) == 0


def _check_the_run_and_the_page(qtbot, page: EvolvePage, run: Path, tmp_path: Path) -> None:
    workers_table = page.inspector.workers_table
    records = RunFolder(run).records()
    complete = [r for r in records if r.state == "complete"]
    assert 2 <= len(complete) < BUDGET and not [r for r in records if r.state == "running"]
    assert {r.worker for r in complete} == {"w0", "w1", "joiner"}
    # Every worker's trial (the joiner's too) is in the plots' history and the table, and
    # nothing else is.
    assert page.history is not None
    assert sorted(int(n) for n in page.history.numbers) == sorted(r.number for r in complete)
    assert page.inspector.table_model.rowCount() == len(complete)
    # The workers view, read once more as the run ended: all ended, with what each ran.
    qtbot.waitUntil(lambda: page.watch_job is None, timeout=30_000)
    shown = {w.name: w for w in workers_table.workers}
    assert set(shown) == {"w0", "w1", "joiner"}
    for name, worker in shown.items():
        assert worker.state == "ended" and worker.trial is None
        assert worker.complete == sum(1 for r in complete if r.worker == name)
    assert (run / BASELINES_FILE).is_file()  # scored before the workers started, saved in the run
    assert not page.workers_label.isVisible() and page.resume_button.isEnabled()

    # Reopened later, the run's Workers tab says the same (read once: the run is not live).
    reopened = _page(qtbot, StudioState(), tmp_path)
    with qtbot.waitSignal(reopened.run_opened, timeout=60_000):
        reopened.open_run(run)
    qtbot.waitUntil(lambda: reopened.inspector.workers_table.rowCount() == 3, timeout=30_000)
    again = {w.name: (w.state, w.complete) for w in reopened.inspector.workers_table.workers}
    assert again == {name: ("ended", w.complete) for name, w in shown.items()}
    qtbot.waitUntil(lambda: reopened.watch_job is None and reopened.open_job is None, timeout=30_000)
