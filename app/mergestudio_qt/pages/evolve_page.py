"""Evolve: an evolutionary search over the recipe's parameters, with live plots.

Set up a search from the studio's models and recipe (or a spec file, or an existing run
folder), then Start / Pause / Resume / Stop it: the engine runs in a worker thread and
its events arrive as signals carrying plain data. Events only append to the page's
``TrialHistory``; a timer redraws the plots at most 20 times a second when something
changed, so a burst of trials costs one redraw. Every trial is a point in each plot;
hovering shows its values; clicking selects it in every plot and in the trial table
and shows its recipe and genome, ready to export, open in the Recipe editor, or re-score
on the full task sets. The parents and the default merges, scored on the run's own
estimator, are drawn as labelled reference points; the table's mean column marks the
trials that beat the unmerged base, and the details give a trial's normalized accuracy
(its score over each task's specialist's).

A run that another process controls (``mergestudio evolve`` in a terminal, workers on
other machines) opens read-only: the page follows its study live, lists the workers and
the trials they run, and its controls stay off until that controller ends.

On the demo project the Setup tab holds the README's demo search (resources/demo/search.yml).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from mergestudio.errors import MergeStudioError
from mergestudio.search import events as ev
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import TrialHistory, best_trial
from mergestudio.search.lock import LOCK_FILE, LockOwner, run_owner
from mergestudio.search.spec import SearchSpec, SpecError
from mergestudio.search.standing import References, references
from mergestudio.search.store import RunFolder
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.context import Studio
from mergestudio_qt.format import format_duration
from mergestudio_qt.pages import PageSpec, register_page
from mergestudio_qt.widgets.elide import ElidedLabel
from mergestudio_qt.widgets.evolve_dashboard import EvolveDashboard
from mergestudio_qt.widgets.evolve_jobs import (
    CandidateTimeJob,
    ExportTrialJob,
    FollowJob,
    FullEvalJob,
    OpenRunJob,
    RunSnapshot,
    SearchJob,
)
from mergestudio_qt.widgets.evolve_setup import SetupPanel
from mergestudio_qt.widgets.evolve_trial_plot import TrialPlot
from mergestudio_qt.widgets.generate_panel import Candidate, GenerateDialog, recipe_parents, show_generation

# The hidden dashboard is rendered ahead this long after the page first shows, a piece
# every step (each 5-25 ms).
RENDER_AHEAD_DELAY_MS = 300
REDRAWN_PARTS = 5  # the four plots, and the table with the genome
REDRAW_MS = 50  # each plot redrawn at most 20 times a second, however fast trials finish
RUNNING_STATES = ("running", "paused", "stopping")
CHECK_DELAY_MS = 400

DEMO_SPEC_SOURCE = "the demo search (resources/demo/search.yml)"
DEMO_SPEC_NAME = "search.yml"


def demo_search_spec(base: str | None, project_path: Path | None) -> Path | None:
    """The demo zoo's search spec when the project is the demo (no project file, its base
    one of the zoo's models), else None."""
    from mergestudio_qt.demo import zoo_dir

    if base is None or project_path is not None:
        return None
    zoo = zoo_dir()
    spec = zoo / DEMO_SPEC_NAME
    try:
        in_zoo = Path(base).resolve().parent == (zoo / "models").resolve()
    except OSError:
        return None
    return spec if in_zoo and spec.is_file() else None


def spec_folder(project_path: Path | None) -> Path | None:
    """Where "Load spec…" opens: the project's folder, or the demo folder (the README's spec)."""
    from mergestudio_qt.demo import zoo_dir

    if project_path is not None:
        return project_path.parent
    zoo = zoo_dir()
    return zoo if zoo.is_dir() else None


class EvolvePage(QWidget):
    """Signals for tests and the window: ``search_finished(state)`` once the search's
    worker has ended ("finished", "stopped", "failed" or "cancelled");
    ``search_state(state)`` on every engine state change; ``run_opened(ok)``;
    ``export_finished(path)`` ("" on failure); ``full_eval_finished(ok)``;
    ``baselines_changed()``; ``follow_ended()`` once a run followed read-only has no
    controller any more."""

    search_finished = Signal(str)
    search_state = Signal(str)
    run_opened = Signal(bool)
    export_finished = Signal(str)
    full_eval_finished = Signal(bool)
    baselines_changed = Signal()
    trial_added = Signal(int)
    follow_ended = Signal()

    def __init__(self, studio: Studio) -> None:
        super().__init__()
        self.studio = studio
        self.state = studio.state
        self.history: TrialHistory | None = None
        self.spec: SearchSpec | None = None
        self.run_dir: Path | None = None
        self.baselines: list[Baseline] = []
        self.full_evaluations: dict[int, dict[str, float]] = {}
        self.full_dev_evaluations: dict[int, dict[str, float]] = {}  # estimates' truth (selection split)
        self.fitness_text = ""  # the estimator in words, with what a candidate costs
        self.selected: int | None = None
        self.search_job: SearchJob | None = None
        self.open_job: OpenRunJob | None = None
        self.export_job: ExportTrialJob | None = None
        self.full_job: FullEvalJob | None = None
        self.generation: GenerateDialog | None = None  # the "Try it…" window, made on first use
        self.time_job: CandidateTimeJob | None = None  # the Setup check's time per candidate
        self._time_summary = ""
        self.follow_job: FollowJob | None = None
        self.engine_state = "idle"
        self.failed_trials = 0
        self.elapsed_s = 0.0
        self.last_redraw_s = 0.0
        self._genome_builder: Any = None
        self.references = References()
        self._outcome = ""
        # Parts of the dashboard (each plot; the table with the genome) redrawn one per
        # tick, in turn: a full redraw with its repaint took up to ~120 ms when the axes
        # changed (baselines or the first trials arriving), one part 15-30 ms.
        self._parts: list[Callable[[], None]] = []
        self._dashboard_rendered = False
        self._dirty_parts: set[int] = set()
        self._next_part = 0
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(REDRAW_MS // REDRAWN_PARTS)
        self._redraw_timer.timeout.connect(self._tick)
        # The setup is checked by the engine a moment after the last edit, not per keystroke.
        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(CHECK_DELAY_MS)
        self._check_timer.timeout.connect(self.check_setup)
        self._build()
        self._shortcuts()
        self.setup.changed.connect(self._setup_changed)
        self.state.recipe_changed.connect(self._studio_recipe_changed)
        self.state.project_changed.connect(self._project_changed)
        self._studio_recipe_changed("load")
        self._project_changed(None)
        self._update_controls()

    # ---- building ----------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 12)
        layout.setSpacing(8)
        top = QHBoxLayout()
        top.setSpacing(8)
        title = QLabel("Evolve", self)
        title.setObjectName("pageTitle")
        self.run_label = ElidedLabel("No run yet: set one up below, or open a run folder.", self)
        self.run_label.setObjectName("hint")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open run…", self)
        self.open_button.setToolTip("Show a run folder's trials so far; Resume continues it")
        self.open_button.clicked.connect(self._choose_run)
        top.addWidget(title)
        top.addSpacing(12)
        top.addWidget(self.run_label, 1)
        top.addWidget(self.open_button)
        layout.addLayout(top)
        layout.addLayout(self._build_controls())
        self.workers_label = ElidedLabel("", self)
        self.workers_label.setObjectName("hint")
        self.workers_label.hide()
        layout.addWidget(self.workers_label)
        self.tabs = QTabWidget(self)
        self.setup = SetupPanel(self.tabs)
        self.dashboard = self._build_dashboard()
        self.tabs.addTab(self.dashboard, "Dashboard")
        self.tabs.addTab(self.setup, "Setup")
        self.tabs.setCurrentWidget(self.setup)
        layout.addWidget(self.tabs, 1)

    def _build_controls(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(8)
        self.start_button = QPushButton("Start", self)
        self.start_button.setObjectName("primary")
        self.start_button.setToolTip("Start a new search with the Setup tab's spec (F5)")
        self.start_button.clicked.connect(self.start_search)
        self.pause_button = QPushButton("Pause", self)
        self.pause_button.setToolTip("Hold the search after the current trial (F6)")
        self.pause_button.clicked.connect(self.pause)
        self.resume_button = QPushButton("Resume", self)
        self.resume_button.setToolTip("Continue a paused search, or a stopped or reopened run (F6)")
        self.resume_button.clicked.connect(self.resume)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip(
            "End the search after the current trial; Resume continues it later (Shift+F5)"
        )
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.status = ElidedLabel("", self)
        self.status.setMinimumWidth(120)
        self.status.setMaximumWidth(420)
        for widget in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            row.addWidget(widget)
        row.addWidget(self.progress, 1)
        row.addWidget(self.status)
        return row

    def _build_dashboard(self) -> EvolveDashboard:
        dashboard = EvolveDashboard(self)
        self.plots = dashboard.plots
        self.inspector = dashboard.inspector
        self._parts = [partial(self._redraw_plot, plot) for plot in self.plots] + [self._redraw_lists]
        assert len(self._parts) == REDRAWN_PARTS
        for plot in self.plots:
            plot.describe = self.describe_trial
            plot.trial_clicked.connect(self.select_trial)
        inspector = self.inspector
        inspector.trial_picked.connect(self.select_trial)
        inspector.export_button.clicked.connect(lambda: self.export_selected())
        inspector.recipe_button.clicked.connect(self.open_in_recipe_editor)
        inspector.full_button.clicked.connect(self.evaluate_full)
        inspector.try_button.clicked.connect(self.try_selected)
        return dashboard

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._dashboard_rendered:
            self._dashboard_rendered = True
            QTimer.singleShot(
                RENDER_AHEAD_DELAY_MS, self, lambda: self.dashboard.render_ahead(self.tabs.currentWidget())
            )

    def _shortcuts(self) -> None:
        context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for keys, slot in (("F5", self.start_search), ("F6", self.toggle_pause), ("Shift+F5", self.stop)):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(context)
            shortcut.activated.connect(slot)

    # ---- following the studio ----------------------------------------------------------

    def _studio_recipe_changed(self, _origin: str) -> None:
        self.setup.set_studio_recipe(self.state.recipe)

    def _project_changed(self, _path: object) -> None:
        demo_spec = demo_search_spec(self.state.base, self.state.project_path)
        self.setup.spec_folder = spec_folder(self.state.project_path)
        if demo_spec is not None and not self._busy():
            self._load_demo_spec(demo_spec)
        elif self.setup.spec_source == DEMO_SPEC_SOURCE:  # another project after the demo
            self.setup.use_studio_recipe()
            self.setup.set_tasks(list(self.state.eval_tasks))
        if self.setup.objectives.rowCount() == 0 and self.state.eval_tasks:
            self.setup.set_tasks(list(self.state.eval_tasks))
        if not self.setup.run_edit.text() or demo_spec is not None:
            self.setup.run_edit.setText(str(self.default_run_dir()))

    def _load_demo_spec(self, path: Path) -> None:
        """The README's demo search, so Start on the demo project runs what it describes."""
        from mergestudio.search.spec import load_spec

        try:
            self.setup.load_spec(load_spec(path), DEMO_SPEC_SOURCE)
        except SpecError as error:  # a damaged zoo: say so, keep the studio's recipe
            self.setup.show_check(str(error), False)

    def default_run_dir(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = str(self.setup.recipe().get("name") or self.state.recipe.get("name") or "search")
        if self.setup.spec_source == DEMO_SPEC_SOURCE:
            name = "demo-skills"
        if self.state.project_path is not None:
            return self.state.project_path.parent / "runs" / f"{name}-{stamp}"
        return self.studio.preferences.effective_cache_dir() / "runs" / f"{name}-{stamp}"

    def _setup_changed(self) -> None:
        self._update_controls()
        self._check_timer.start()

    # ---- starting, pausing, stopping ------------------------------------------------------

    def check_setup(self) -> SearchSpec | None:
        """The Setup tab's spec, validated by the engine; None (with the reason shown)."""
        try:
            spec = self.setup.build_spec()
        except SpecError as error:
            self.setup.show_check(str(error), False)
            return None
        summary = f"{len(spec.objectives)} objective(s), {spec.algorithm.name}, population {spec.algorithm.population_size}"
        run_dir = self.setup.run_dir()
        if run_dir is not None and RunFolder(run_dir).exists():
            summary += " — this folder holds a run: Resume continues it; Start needs a new folder"
        self.setup.show_check(summary, True)
        self._estimate_candidate_time(spec, summary)
        return spec

    def _estimate_candidate_time(self, spec: SearchSpec, summary: str) -> None:
        """Adds "merge per candidate ≈ N s" to the check line, computed off the GUI thread
        (opening headers can download a Hub model; the first use of a method calibrates)."""
        self._time_summary = summary
        if self.time_job is not None:
            return  # one at a time; the next check estimates again
        from mergestudio.search.spec import base_recipe

        job = CandidateTimeJob(base_recipe(spec))
        job.succeeded.connect(self._candidate_time_done)
        job.finished.connect(self._candidate_time_finished)
        self.time_job = job
        jobs.start(job)

    def _candidate_time_done(self, text: str) -> None:
        if self.setup.check_label.text() == "✓ " + self._time_summary:
            self.setup.show_check(f"{self._time_summary}; merge per candidate {text}", True)

    def _candidate_time_finished(self) -> None:
        self.time_job = None

    def start_search(self) -> None:
        if self._busy():
            return
        self._stop_following()
        spec = self.check_setup()
        run_dir = self.setup.run_dir()
        if spec is None or run_dir is None:
            if run_dir is None:
                self.setup.show_check("Choose a run folder.", False)
            self.tabs.setCurrentWidget(self.setup)
            self._set_status("Fix the setup first (see the Setup tab).")
            return
        run = RunFolder(run_dir)
        # The lock file alone is what a start stopped while scoring baselines leaves.
        if run.exists() or (run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir())):
            self.setup.show_check(f"{run_dir} is not empty: pick a new folder, or open it as a run.", False)
            self.tabs.setCurrentWidget(self.setup)
            return
        try:
            history = TrialHistory.for_spec(spec)
        except MergeStudioError as error:  # a task file went away since the check
            self.setup.show_check(str(error), False)
            self.tabs.setCurrentWidget(self.setup)
            return
        self._show_run(run_dir, spec, history, [], {})
        self._log(f"starting {spec.algorithm.name} search in {run_dir}")
        self._launch(SearchJob(run_dir, spec))
        self._set_status("Scoring the baselines, then the first trial…")

    def resume(self) -> None:
        """Continue a paused search, or start the worker again on a stopped/reopened run."""
        if self.search_job is not None:
            self.search_job.resume()
            return
        if self._busy() or self.follow_job is not None or self.run_dir is None or self.history is None:
            return
        owner = run_owner(self.run_dir)
        if owner is not None:  # started elsewhere since the page opened it: follow it instead
            self._set_status(f"This run is already running ({owner.describe()}); following it read-only.")
            if self.spec is not None:
                self._follow(self.run_dir, self.spec, owner)
            return
        evaluations = self._resume_budget()
        self._log(f"resuming {self.run_dir}" + (f" up to {evaluations} evaluations" if evaluations else ""))
        self._launch(SearchJob(self.run_dir, None, evaluations))
        self._set_status("Resuming…")

    def _resume_budget(self) -> int | None:
        """A run whose evaluation budget is spent continues up to the Setup tab's
        evaluations when that is larger."""
        wanted = self.setup.evaluations.value()
        done = len(self.history) if self.history is not None else 0
        budget = self.spec.budget.evaluations if self.spec is not None else None
        if budget is not None and done >= budget and wanted > done:
            return wanted
        return None

    def _launch(self, job: SearchJob) -> None:
        job.search_started.connect(self._on_started)
        job.trial_started.connect(self._on_trial_started)
        job.trial_finished.connect(self._on_trial_finished)
        job.front_changed.connect(self._on_front)
        job.generation_finished.connect(self._on_generation)
        job.state_changed.connect(self._on_state)
        job.baselines_ready.connect(self._on_baselines)
        job.log.connect(self._on_log)
        job.succeeded.connect(self._on_search_done)
        job.failed.connect(self._on_search_failed)
        job.cancelled.connect(self._on_search_cancelled)
        job.finished.connect(self._on_search_finished)
        self.search_job = job
        self._outcome = ""
        self.engine_state = "running"
        self._update_controls()
        jobs.start(job)
        self._redraw_timer.stop()  # until the dashboard is on screen
        QTimer.singleShot(0, self, self._show_dashboard)

    def _show_dashboard(self) -> None:
        """Show the dashboard as it is, and only then redraw its plots from the run, one
        per tick: its paint on showing (40-70 ms) never shares a turn of the event loop
        with the start's own work or with a plot's redraw."""
        self.tabs.setCurrentWidget(self.dashboard)
        if self._dirty_parts:
            self._redraw_timer.start()

    def pause(self) -> None:
        if self.search_job is not None and self.engine_state == "running":
            self.search_job.pause()
            self._set_status("Pausing after the current trial…")
            self.pause_button.setEnabled(False)

    def toggle_pause(self) -> None:
        if self.engine_state == "paused" or (self.search_job is None and self.resume_button.isEnabled()):
            self.resume()
        else:
            self.pause()

    def stop(self) -> None:
        if self.search_job is not None:
            self.search_job.stop()
            self.engine_state = "stopping"
            self._set_status("Stopping after the current trial…")
            self._update_controls()

    def cancel_all(self) -> None:
        """The window is closing: abandon the current trial (it runs again on resume)."""
        for job in (self.search_job, self.open_job, self.export_job, self.full_job, self.follow_job):
            if job is not None:
                job.cancel()
        if self.generation is not None:
            self.generation.panel.stop()

    def _busy(self) -> bool:
        # One scoring job at a time: each takes the cores it was given (the search, in its
        # own process, its spec's threads), and two would share them and both slow down;
        # the jobs that score in this process also fix torch's process-wide thread count.
        return any(j is not None for j in (self.search_job, self.open_job, self.full_job))

    # ---- engine events (GUI thread) ---------------------------------------------------------

    def _on_started(self, event: ev.SearchStarted) -> None:
        done = f", {event.finished_before} trials done" if event.resumed else ""
        self._log(
            f"{'resumed' if event.resumed else 'started'}: {len(event.genes)} genes, "
            f"objectives {', '.join(event.study_objectives)}{done}"
        )
        self._set_progress()

    def _on_trial_started(self, event: ev.TrialStarted) -> None:
        self._set_status(f"trial {event.number} (generation {event.generation}) running…")

    def _on_trial_finished(self, event: ev.TrialFinished) -> None:
        if self.history is None:
            return
        if self.spec is not None and self.spec.fitness.estimator == "irt" and "calibrating" in self.fitness_text:
            self._load_fitness_files()  # the run calibrates on its first trials: say so once it has
        if event.state != "complete":
            self.failed_trials += 0 if event.replayed else 1
            self._log(f"trial {event.number} failed: {event.error}")
            return
        if self.history.add(
            event.number,
            event.generation,
            event.objectives,
            event.study_values,
            event.genome,
            event.duration_s,
        ):
            self._mark_dirty()
            if not event.replayed:
                self.trial_added.emit(event.number)

    def _on_front(self, event: ev.ParetoFrontChanged) -> None:
        if self.history is not None:
            self.history.set_front(event.trials, event.hypervolume)
            self._mark_dirty()

    def _on_generation(self, event: ev.GenerationFinished) -> None:
        best = ", ".join(f"{k} {v:.4g}" for k, v in event.best_so_far.items())
        self._log(f"generation {event.generation} done; best so far: {best}")

    def _on_state(self, event: ev.SearchStateChanged) -> None:
        if self.engine_state == "stopping" and event.state in ("running", "paused"):
            return  # sent before the engine saw Stop: the page already says it is stopping
        self.engine_state = event.state
        self.elapsed_s = event.elapsed_s
        reason = f": {event.reason}" if event.reason else ""
        if event.state != "running":
            self._log(f"search {event.state}{reason}")
        self._set_status(
            f"{event.state} · {event.finished_trials} trials · {format_duration(event.elapsed_s)}",
            f"{event.state}{reason}",
        )
        self._set_progress()
        self._update_controls()
        self.search_state.emit(event.state)

    def _on_baselines(self, baselines: list[Baseline]) -> None:
        self.baselines = list(baselines)
        if baselines:
            self._log(f"baselines ({baselines[0].estimator}): " + ", ".join(b.label for b in baselines))
        self._update_references()
        for line in self.baseline_lines():
            self._log(line)
        self._mark_dirty()
        self.baselines_changed.emit()

    def _on_log(self, message: str, level: str) -> None:
        if level != "debug":
            self._log(message)

    def _on_search_done(self, outcome: Any) -> None:
        self._outcome = str(outcome.state)

    def _on_search_failed(self, message: str) -> None:
        self._outcome = "failed"
        self._log(f"search failed: {message}")
        self._set_status(f"failed: {message}")

    def _on_search_cancelled(self) -> None:
        self._outcome = "cancelled"

    def _on_search_finished(self) -> None:
        self.search_job = None
        if self.engine_state in RUNNING_STATES:
            self.engine_state = self._outcome or "stopped"
        self._flush()
        self._update_controls()
        # Last: the page is ready for the next start or resume.
        self.search_finished.emit(self._outcome or self.engine_state)

    # ---- opening a run folder ------------------------------------------------------------

    def _choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a search run folder")
        if folder:
            self.open_run(Path(folder))

    def open_run(self, run_dir: Path, score_baselines: bool = True) -> None:
        if self._busy():
            self._set_status("Wait for the running job to end before opening another run.")
            return
        if not RunFolder(run_dir).exists():
            self._set_status(f"{run_dir}: not a search run (no spec.yml and study.db)")
            self.run_opened.emit(False)
            return
        self._stop_following()
        # A run another process controls is only read: its baselines are not scored here
        # (that writes into the run folder).
        job = OpenRunJob(run_dir, score_baselines and run_owner(run_dir) is None)
        job.opened.connect(self._on_opened)
        job.hypervolume_ready.connect(self._on_hypervolume)
        job.baselines_ready.connect(self._on_baselines)
        job.log.connect(self._on_log)
        job.failed.connect(self._on_open_failed)
        job.finished.connect(self._on_open_finished)
        self.open_job = job
        self._outcome = ""
        self._set_status(f"Opening {run_dir}…")
        self._update_controls()
        jobs.start(job)

    def _on_opened(self, snapshot: RunSnapshot) -> None:
        self._show_run(
            snapshot.run_dir,
            snapshot.spec,
            snapshot.history,
            snapshot.baselines or [],
            snapshot.full_evaluations,
        )
        self.setup.load_spec(snapshot.spec, "the run folder")
        self.setup.run_edit.setText(str(snapshot.run_dir))
        self.failed_trials = snapshot.failed_trials
        self.elapsed_s = snapshot.elapsed_s
        self.engine_state = "opened"
        budget = snapshot.spec.budget.evaluations
        left = "" if budget is None or len(snapshot.history) < budget else " (evaluation budget spent)"
        requeued = (
            f", {snapshot.interrupted_trials} cut short (they run again on Resume)"
            if snapshot.interrupted_trials
            else ""
        )
        self._set_status(
            f"opened: {len(snapshot.history)} trials{left}{requeued} · {format_duration(snapshot.elapsed_s)}"
        )
        self._outcome = "opened"
        self.tabs.setCurrentIndex(0)
        self._flush()
        owner = run_owner(snapshot.run_dir)
        if owner is not None:
            self._follow(snapshot.run_dir, snapshot.spec, owner)

    # ---- following a run another process controls ---------------------------------------

    def _follow(self, run_dir: Path, spec: SearchSpec, owner: LockOwner) -> None:
        """Attach read-only: draw the run's trials as its workers finish them."""
        job = FollowJob(run_dir, spec, owner)
        for signal in (
            job.trial_started,
            job.trial_finished,
            job.front_changed,
            job.generation_finished,
            job.workers_changed,
        ):
            signal.connect(self._on_followed)
        job.log.connect(self._on_log)
        job.succeeded.connect(self._on_follow_done)
        job.failed.connect(self._on_follow_failed)
        job.finished.connect(self._on_follow_finished)
        self.follow_job = job
        self.engine_state = "attached"
        self.run_label.set_full_text(f"run: {run_dir} (read-only: running elsewhere)", str(run_dir))
        self._set_status(f"following live, read-only · run by {owner.describe()}", owner.describe())
        self._log(f"this run is running elsewhere ({owner.describe()}); following it read-only")
        self._update_controls()
        jobs.start(job)

    def _on_followed(self, event: object) -> None:
        if self.sender() is not self.follow_job:
            return  # a follow stopped for another run: its last events are stale
        if isinstance(event, ev.TrialFinished):
            self._on_trial_finished(event)
        elif isinstance(event, ev.ParetoFrontChanged):
            self._on_front(event)
        elif isinstance(event, ev.GenerationFinished):
            self._on_generation(event)
        elif isinstance(event, ev.WorkersChanged):
            self._on_workers(event)
        elif isinstance(event, ev.TrialStarted):
            self._set_progress()

    def _on_workers(self, event: ev.WorkersChanged) -> None:
        if not event.workers:
            self.workers_label.set_full_text("workers: none running a trial now", "")
        else:
            now = time.time()
            parts = [
                f"{w.name} → trial {w.trial} ({format_duration(max(0.0, now - w.since))})" for w in event.workers
            ]
            self.workers_label.set_full_text(
                f"{len(event.workers)} trial(s) running: " + " · ".join(parts), "\n".join(parts)
            )
        self.workers_label.show()

    def _on_follow_done(self, owner: LockOwner) -> None:
        if self.sender() is not self.follow_job:
            return
        self.engine_state = "opened"
        done = 0 if self.history is None else len(self.history)
        self._set_status(f"the run's controller ended ({done} trials); Resume continues it", owner.describe())
        self._log(f"the run's controller ended ({owner.describe()})")
        if self.run_dir is not None:
            self.run_label.set_full_text(f"run: {self.run_dir}", str(self.run_dir))

    def _on_follow_failed(self, message: str) -> None:
        if self.sender() is self.follow_job:
            self._set_status(f"stopped following the run: {message}")

    def _on_follow_finished(self) -> None:
        if self.sender() is not self.follow_job:
            return
        self.follow_job = None
        self.workers_label.hide()
        if self.engine_state == "attached":
            self.engine_state = "opened"
        self._flush()
        self._update_controls()
        self.follow_ended.emit()

    def _stop_following(self) -> None:
        """Stop following (another run is opened or started); its late events are dropped."""
        job = self.follow_job
        if job is not None:
            self.follow_job = None
            job.cancel()
            self.workers_label.hide()

    def _on_hypervolume(self, curve: Any) -> None:
        if self.history is not None:
            self.history.set_hypervolume_curve(curve)
            self._mark_dirty()

    def _on_open_failed(self, message: str) -> None:
        self._outcome = "failed"
        self._set_status(f"cannot open the run: {message}")

    def _on_open_finished(self) -> None:
        self.open_job = None
        self._update_controls()
        self.run_opened.emit(self._outcome == "opened")

    def show_history(self, history: TrialHistory, baselines: list[Baseline] | None = None) -> None:
        """Show a history that belongs to no run folder (the redraw benchmark's synthetic
        trials): plots and table only; nothing can be resumed or exported."""
        self._show_run(None, None, history, baselines or [], {})

    def _show_run(
        self,
        run_dir: Path | None,
        spec: SearchSpec | None,
        history: TrialHistory,
        baselines: list[Baseline],
        full: dict[int, dict[str, float]],
    ) -> None:
        from mergestudio.search.spec import build_genome

        self.run_dir, self.spec, self.history = run_dir, spec, history
        self.baselines, self.full_evaluations = list(baselines), dict(full)
        self._load_fitness_files()
        self.failed_trials = 0
        self._genome_builder = None if spec is None else build_genome(spec)
        self.run_label.set_full_text(f"run: {run_dir}" if run_dir else "trials of no run folder", str(run_dir or ""))
        self.inspector.set_history(history, self.full_evaluations)
        self._update_references()
        self.select_trial(None)
        self._set_progress()
        self._mark_dirty()

    # ---- redrawing -----------------------------------------------------------------------

    def _mark_dirty(self) -> None:
        self._dirty_parts = set(range(len(self._parts)))
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def _tick(self) -> None:
        """Redraw the next part that is out of date (its repaint follows before the next
        tick); stop when none is."""
        if not self._dirty_parts:
            self._redraw_timer.stop()  # idle: no timer runs until the next event
            return
        count = len(self._parts)
        turns = (i % count for i in range(self._next_part, self._next_part + count))
        part = next(i for i in turns if i in self._dirty_parts)
        self._dirty_parts.discard(part)
        self._next_part = (part + 1) % count
        self._parts[part]()

    def _flush(self) -> None:
        """Redraw now whatever is out of date (a search ended, a run was opened)."""
        for part in sorted(self._dirty_parts):
            self._parts[part]()
        self._dirty_parts.clear()

    def redraw(self) -> None:
        """Every plot, the table and the genome from the history (one full redraw)."""
        started = time.perf_counter()
        self._dirty_parts.clear()
        for draw in self._parts:
            draw()
        self.last_redraw_s = time.perf_counter() - started

    def _redraw_plot(self, plot: TrialPlot) -> None:
        if self.history is not None:
            plot.redraw(self.history, self.baselines)

    def _redraw_lists(self) -> None:
        """The trial table, the genome of the best trial and the progress bar."""
        history = self.history
        if history is None:
            return
        self.inspector.refresh_table()
        if self.selected is None:
            self.inspector.show_genome(history, best_trial(history), best=True)
        self._set_progress()

    def _set_progress(self) -> None:
        done = 0 if self.history is None else len(self.history)
        budget = self.spec.budget.evaluations if self.spec is not None else None
        if budget:
            self.progress.setRange(0, max(budget, done))
            self.progress.setValue(done)
            self.progress.setFormat(f"{done} / {budget} trials")
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if done else 0)
            self.progress.setFormat(f"{done} trials")

    # ---- selection and the trial inspector --------------------------------------------------

    def select_trial(self, number: int | None) -> None:
        """Select trial ``number`` (None: nothing) in every plot, the table and the details."""
        history = self.history
        if number is not None and (history is None or history.row_of(number) is None):
            return
        self.selected = number
        for plot in self.plots:
            plot.set_selected(number)
        if history is not None:
            self.inspector.select_row(history, number)
        self._show_details(number)
        self._update_trial_buttons()

    def _load_fitness_files(self) -> None:
        """The run's estimator in words and its trials re-scored on the full selection
        split (read from the run folder: a calibration and a small JSON file)."""
        from mergestudio.search.baselines import load_full_dev_evaluations
        from mergestudio.search.fitness import run_fitness_label

        spec, run_dir = self.spec, self.run_dir
        self.fitness_text = "" if spec is None else run_fitness_label(run_dir, spec)
        estimated = spec is not None and spec.fitness.estimator != "full" and run_dir is not None
        self.full_dev_evaluations = load_full_dev_evaluations(run_dir) if estimated and run_dir else {}

    def describe_trial(self, number: int) -> str:
        """The hover text: a trial's objectives (and full-set scores when known); for runs
        that estimate fitness, the estimate beside the full selection split's value."""
        history = self.history
        if history is None or history.row_of(number) is None:
            return ""
        row = history.row_of(number)
        assert row is not None
        front = " · on the Pareto front" if number in history.front else ""
        lines = [f"trial {number} · generation {int(history.generations[row])}{front}"]
        if self.fitness_text:
            lines.append(f"fitness: {self.fitness_text}")
        full = self.full_evaluations.get(number, {})
        # With held-out test files the full set is the test split, so the dev split the
        # estimate is of was scored in full too; without them the full set is that split.
        dev = self.full_dev_evaluations.get(number, {})
        held_out = self.spec is not None and any(o.test for o in self.spec.objectives)
        estimated = self.spec is not None and self.spec.fitness.estimator != "full"
        for objective, value in zip(history.objectives, history.values[row], strict=True):
            extra = [f"full dev split {dev[objective.name]:.4g}"] if held_out and objective.name in dev else []
            if objective.name in full:
                extra.append(f"full set {full[objective.name]:.4g}")
            estimate = "estimate " if estimated else ""
            suffix = f"  ({', '.join(extra)})" if extra else ""
            lines.append(f"{objective.name}: {estimate}{value:.4g} {objective.unit}{suffix}")
        verdict = self.standing_text(history.objectives_of(number))
        if verdict:
            lines.append(verdict)
        return "\n".join(lines)

    def standing_text(self, values: dict[str, float]) -> str:
        """Mean accuracy, Δ vs the base and normalized accuracy, in one line."""
        history = self.history
        if history is None:
            return ""
        result = self.references.compare(values)
        if math.isnan(result.mean_raw):
            return ""
        return f"mean {result.mean_raw:.3g}: {result.verdict(percent_scale=False)}"

    def baseline_lines(self) -> list[str]:
        """One line per baseline: what it is and how it stands (the references themselves)."""
        lines = []
        for baseline in self.baselines:
            role = "base" if baseline.label == self._base_label() else baseline.kind
            text = self.standing_text(baseline.objectives)
            lines.append(f"{baseline.label} ({role}): {text}" if text else f"{baseline.label} ({role})")
        return lines

    def _base_label(self) -> str | None:
        return next((b.label for b in self.baselines if b.is_base), None)

    def _update_references(self) -> None:
        history = self.history
        self.references = (
            References() if history is None else references(self.baselines, history.objectives)
        )
        self.inspector.table_model.set_references(self.references)
        if self.selected is None:
            self._show_details(None)

    def recipe_yaml(self, number: int) -> str:
        """The trial's recipe: as stored, or rebuilt from its genome exactly as the engine
        built it (Genome.recipe is deterministic), so no store read is needed."""
        history = self.history
        if history is None:
            return ""
        if number in history.recipes:
            return history.recipes[number]
        if self._genome_builder is None:
            return ""
        text = str(self._genome_builder.recipe(history.genome_of(number)).to_yaml())
        history.recipes[number] = text
        return text

    def _show_details(self, number: int | None) -> None:
        history = self.history
        if history is None or number is None:
            self.inspector.clear_trial(self.baseline_lines())
            self.inspector.show_genome(history, None if history is None else best_trial(history), best=True)
            return
        self.inspector.show_trial(self.describe_trial(number), self.recipe_yaml(number))
        self.inspector.show_genome(history, number, best=False)

    def _update_trial_buttons(self) -> None:
        has = self.selected is not None and self.run_dir is not None
        subset = self.spec is not None and self.spec.fitness.estimator != "full"  # subset or irt
        self.inspector.export_button.setEnabled(has and self.export_job is None)
        self.inspector.recipe_button.setEnabled(self.selected is not None)
        self.inspector.try_button.setEnabled(self.selected is not None)
        self.inspector.full_button.setEnabled(has and subset and self.full_job is None and self.search_job is None)
        self.inspector.full_button.setToolTip(
            "Re-score this trial on every item of every task"
            if subset
            else "This run scored every item already (full estimator)"
        )

    # ---- trial actions -------------------------------------------------------------------

    def export_selected(self, out_dir: Path | None = None) -> None:
        """Merge the selected trial into ``out_dir``; None: ask where, starting from the
        run's exports/trial-N."""
        if self.selected is None or self.run_dir is None or self.export_job is not None:
            return
        target = out_dir or self._ask_export_folder(self.selected, self.run_dir)
        if target is None:
            return  # the user cancelled the dialog
        job = ExportTrialJob(self.run_dir, self.selected, target)
        job.succeeded.connect(self._on_exported)
        job.failed.connect(self._on_export_failed)
        job.log.connect(self._on_log)
        job.finished.connect(self._on_export_finished)
        self.export_job = job
        self._export_result = ""
        self._log(f"exporting trial {self.selected} to {target}")
        self._update_trial_buttons()
        jobs.start(job)

    def _ask_export_folder(self, number: int, run_dir: Path) -> Path | None:
        default = run_dir / "exports" / f"trial-{number:05d}"
        chosen, _ = QFileDialog.getSaveFileName(
            self, f"Export trial {number} as a model folder", str(default), "Model folder (*)"
        )
        return Path(chosen) if chosen else None

    def _on_exported(self, path: Path) -> None:
        self._export_result = str(path)
        self._log(f"exported {path}")
        self.inspector.show_export(self.selected, path)
        self.studio.show_message(f"exported the merged model to {path}")

    def _on_export_failed(self, message: str) -> None:
        self._export_result = ""
        self._log(f"export failed: {message}")
        self.inspector.show_export_failed(message)

    def _on_export_finished(self) -> None:
        self.export_job = None
        self._update_trial_buttons()
        self.export_finished.emit(self._export_result)

    def open_in_recipe_editor(self) -> None:
        if self.selected is None:
            return
        from mergestudio.recipe.model import Recipe

        try:
            recipe = Recipe.from_yaml(self.recipe_yaml(self.selected), f"trial {self.selected}'s recipe")
        except MergeStudioError as error:
            self._log(str(error))
            return
        self.state.set_recipe(recipe.to_dict(), "load", f"recipe of trial {self.selected}")
        self.studio.show_message(f"the Recipe page shows trial {self.selected}'s recipe (Ctrl+Z undoes)")
        self.studio.go_to("recipe")

    def try_selected(self) -> None:
        """The generation window for the selected trial, merged in memory into a resident
        model (nothing written), beside the models its recipe merges."""
        from mergestudio.recipe.model import Recipe

        if self.selected is None:
            return
        try:
            recipe = Recipe.from_yaml(self.recipe_yaml(self.selected), f"trial {self.selected}'s recipe").to_dict()
        except MergeStudioError as error:
            self._log(str(error))
            return
        candidate = Candidate(f"trial {self.selected} (in memory)", recipe, f"trial {self.selected}, merged in memory")
        self.generation = show_generation(self, self.studio, self.generation, [candidate],
                                          recipe_parents(recipe), f"Try trial {self.selected}")

    def evaluate_full(self) -> None:
        if self.selected is None or self.run_dir is None or self._busy():
            return
        job = FullEvalJob(self.run_dir, self.selected)
        job.succeeded.connect(self._on_full_done)
        job.failed.connect(self._on_full_failed)
        job.log.connect(self._on_log)
        job.finished.connect(self._on_full_finished)
        self.full_job = job
        self._full_ok = False
        self._log(f"scoring trial {self.selected} on the full task sets")
        self._update_trial_buttons()
        self._update_controls()
        jobs.start(job)

    def _on_full_done(self, result: tuple[int, dict[str, float]]) -> None:
        number, values = result
        self.full_evaluations[number] = values
        self._load_fitness_files()
        self._full_ok = True
        self._log(f"trial {number} on the full sets: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        if number == self.selected:
            self._show_details(number)

    def _on_full_failed(self, message: str) -> None:
        self._log(f"full-set evaluation failed: {message}")

    def _on_full_finished(self) -> None:
        self.full_job = None
        self._update_trial_buttons()
        self._update_controls()
        self.full_eval_finished.emit(self._full_ok)

    # ---- small things --------------------------------------------------------------------

    def _update_controls(self) -> None:
        running = self.search_job is not None
        paused = running and self.engine_state == "paused"
        self.start_button.setEnabled(not self._busy())
        self.pause_button.setEnabled(running and self.engine_state == "running")
        resumable = (
            not self._busy() and self.follow_job is None and self.run_dir is not None and self.history is not None
        )
        self.resume_button.setEnabled(paused or resumable)
        self.stop_button.setEnabled(running and self.engine_state != "stopping")
        self.open_button.setEnabled(not self._busy())
        self._update_trial_buttons()

    def _set_status(self, text: str, detail: str = "") -> None:
        self.status.set_full_text(text, detail or text)

    def _log(self, text: str) -> None:
        self.inspector.log(text)


register_page(
    PageSpec("evolve", "Evolve", "Search merge recipes with live fitness and Pareto plots", EvolvePage)
)
