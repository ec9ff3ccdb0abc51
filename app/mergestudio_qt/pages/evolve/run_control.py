"""Running a search from the page: the Setup tab's check, Start / Pause / Resume / Stop,
and the events of the search the page runs. The search runs in a child process
(``SearchJob``), which with the project's number of local workers controls theirs
(``search.workers``); its events arrive as signals
carrying plain data and only append to the page's ``TrialHistory`` (the redraw schedule
draws them later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergestudio.errors import MergeStudioError
from mergestudio.search import events as ev
from mergestudio.search.dashboard import TrialHistory
from mergestudio.search.lock import LOCK_FILE, run_owner
from mergestudio.search.spec import SearchSpec, SpecError
from mergestudio.search.store import RunFolder
from PySide6.QtCore import QTimer

from mergestudio_qt import jobs
from mergestudio_qt.format import format_duration
from mergestudio_qt.widgets.evolve_jobs import CandidateTimeJob, SearchJob
from mergestudio_qt.widgets.evolve_setup import max_workers

RUNNING_STATES = ("running", "paused", "stopping")


class RunControl:
    """Mixed into ``EvolvePage``: starts, pauses, resumes and stops its search (``search_job``)."""

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
        job = self._search_job(run_dir, spec, None)
        self._log(f"starting {spec.algorithm.name} search in {run_dir}{_with_workers(job)}")
        self._launch(job)
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
        job = self._search_job(self.run_dir, None, evaluations)
        up_to = f" up to {evaluations} evaluations" if evaluations else ""
        self._log(f"resuming {self.run_dir}{up_to}{_with_workers(job)}")
        self._launch(job)
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

    def _search_job(
        self, run_dir: Path, spec: SearchSpec | None, evaluations: int | None
    ) -> SearchJob:
        """One search process, or the project's number of local workers (what
        ``mergestudio evolve --workers N`` runs), each with the spec's threads."""
        from mergestudio.search.workers import WorkerPlan

        workers = min(max(1, self.state.evolve.workers), max_workers())
        run_spec = spec or self.spec
        if workers == 1 or run_spec is None:
            return SearchJob(run_dir, spec, evaluations)
        return SearchJob(run_dir, spec, evaluations, WorkerPlan(workers, run_spec.evaluation.threads))

    def _launch(self, job: SearchJob) -> None:
        job.search_started.connect(self._on_started)
        job.workers_changed.connect(self._on_workers)
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
        if self.search_job is not None and self.search_job.pausable and self.engine_state == "running":
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
        for job in (self.search_job, self.open_job, self.export_job, self.full_job, self.follow_job, self.watch_job):
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
        # Workers are listed live (the study exists now); a search of one process is read
        # once it ends, so nothing reads its study in this process while it runs.
        if self.run_dir is not None and self.search_job is not None and self.search_job.plan is not None:
            self._watch_workers(self.run_dir)
        done = f", {event.finished_before} trials done" if event.resumed else ""
        self._log(
            f"{'resumed' if event.resumed else 'started'}: {len(event.genes)} genes, "
            f"objectives {', '.join(event.study_objectives)}{done}"
        )
        self._set_progress()

    def _on_trial_started(self, event: ev.TrialStarted) -> None:
        # Workers' trials get their generation when they are told (the follower sees -1).
        generation = f" (generation {event.generation})" if event.generation >= 0 else ""
        self._set_status(f"trial {event.number}{generation} running…")

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
        if self.watch_job is not None:
            self._stop_watching()  # its last read shows how the workers left the run
        elif self.run_dir is not None and RunFolder(self.run_dir).exists():
            self._watch_workers(self.run_dir, once=True)
        self.workers_label.hide()
        if self.engine_state in RUNNING_STATES:
            self.engine_state = self._outcome or "stopped"
        self._flush()
        self._update_controls()
        # Last: the page is ready for the next start or resume.
        self.search_finished.emit(self._outcome or self.engine_state)



def _with_workers(job: SearchJob) -> str:
    return "" if job.plan is None else f" with {job.plan.count} workers"
