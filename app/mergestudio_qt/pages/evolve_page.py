"""Evolve: an evolutionary search over the recipe's parameters, with live plots.

Set up a search from the studio's models and recipe (or a spec file, or an existing run
folder), then Start / Pause / Resume / Stop it: the engine runs in a child process and
its events arrive as signals carrying plain data. Every trial is a point in each plot;
hovering shows its values; clicking selects it in every plot and in the trial table
and shows its recipe and genome, ready to export, open in the Recipe editor, or re-score
on the full task sets. A run that another process controls opens read-only and is
followed live.

This module builds the page (controls, tabs, shortcuts) and holds the state its parts
share; each part is a mixin in ``pages/evolve/`` (see its ``__init__``): the studio link,
run control, following a run, the redraw schedule, the baselines, the selected trial's
details and its actions.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import TrialHistory
from mergestudio.search.spec import SearchSpec
from mergestudio.search.standing import References
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt.context import Studio
from mergestudio_qt.pages import PageSpec, register_page
from mergestudio_qt.pages.evolve.baselines import BaselineReferences
from mergestudio_qt.pages.evolve.follow_live import FollowLive
from mergestudio_qt.pages.evolve.redraw import REDRAW_MS, REDRAWN_PARTS, RedrawSchedule
from mergestudio_qt.pages.evolve.run_control import RunControl
from mergestudio_qt.pages.evolve.studio_link import DEMO_SPEC_SOURCE, StudioLink
from mergestudio_qt.pages.evolve.trial_actions import TrialActions
from mergestudio_qt.pages.evolve.trial_details import TrialDetails
from mergestudio_qt.pages.evolve.workers_view import WorkersView
from mergestudio_qt.widgets.elide import ElidedLabel
from mergestudio_qt.widgets.evolve_dashboard import EvolveDashboard
from mergestudio_qt.widgets.evolve_jobs import (
    CandidateTimeJob,
    ExportTrialJob,
    FollowJob,
    FullEvalJob,
    OpenRunJob,
    SearchJob,
    WorkersWatchJob,
)
from mergestudio_qt.widgets.evolve_setup import SetupPanel
from mergestudio_qt.widgets.generate_panel import GenerateDialog

__all__ = ["DEMO_SPEC_SOURCE", "EvolvePage"]

# The hidden dashboard is rendered ahead this long after the page first shows, a piece
# every step (each 5-25 ms).
RENDER_AHEAD_DELAY_MS = 300
CHECK_DELAY_MS = 400
PAUSE_TIP = "Hold the search after the current trial (F6)"
PAUSE_TIP_WORKERS = "A search with several workers does not pause: Stop ends it after their trials, Resume continues"


class EvolvePage(
    StudioLink,
    RunControl,
    FollowLive,
    WorkersView,
    RedrawSchedule,
    BaselineReferences,
    TrialDetails,
    TrialActions,
    QWidget,
):
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
        self.watch_job: WorkersWatchJob | None = None  # reads who works on the run
        self._watches: set[WorkersWatchJob] = set()  # every watch whose thread runs
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
        self.setup.workers.valueChanged.connect(self.state.set_search_workers)
        self.state.evolve_settings_changed.connect(self._evolve_settings_changed)
        self._evolve_settings_changed()
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
        self.pause_button.setToolTip(PAUSE_TIP)
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

    # ---- small things --------------------------------------------------------------------

    def _update_controls(self) -> None:
        running = self.search_job is not None
        paused = running and self.engine_state == "paused"
        pausable = self.search_job is None or self.search_job.pausable
        self.start_button.setEnabled(not self._busy())
        self.pause_button.setEnabled(running and pausable and self.engine_state == "running")
        self.pause_button.setToolTip(PAUSE_TIP if pausable else PAUSE_TIP_WORKERS)
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
