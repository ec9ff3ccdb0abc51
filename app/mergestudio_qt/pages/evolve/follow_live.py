"""Opening a run folder, and following a run that another process controls
(``mergestudio evolve`` in a terminal, workers on other machines): the page attaches
read-only, draws the trials as its workers finish them, and its controls stay off
until that controller ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergestudio.search import events as ev
from mergestudio.search.lock import LockOwner, run_owner
from mergestudio.search.spec import SearchSpec
from mergestudio.search.store import RunFolder
from PySide6.QtWidgets import QFileDialog

from mergestudio_qt import jobs
from mergestudio_qt.format import format_duration
from mergestudio_qt.widgets.evolve_jobs import FollowJob, OpenRunJob, RunSnapshot


class FollowLive:
    """Mixed into ``EvolvePage``: ``open_run`` (``open_job``) and following (``follow_job``)."""

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
        else:
            self._watch_workers(snapshot.run_dir, once=True)  # who ran its trials

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
        self._watch_workers(run_dir)

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
        self._stop_watching()
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

