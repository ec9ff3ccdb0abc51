"""Who works on the run: the line under the controls (which worker runs which trial, from
the ``WorkersChanged`` events of the run's controller or follower) and the Workers tab
(every process that ran a trial: its state, trial, trials done and last heartbeat, read
from the run's study by a ``WorkersWatchJob`` every second while the run is live)."""

from __future__ import annotations

import time
from pathlib import Path

from mergestudio.search import events as ev
from mergestudio.search.worker_status import WorkerStatus

from mergestudio_qt import jobs
from mergestudio_qt.format import format_duration
from mergestudio_qt.widgets.evolve_jobs import WorkersWatchJob


class WorkersView:
    """Mixed into ``EvolvePage``: ``watch_job`` reads the workers of ``run_dir``."""

    def _watch_workers(self, run_dir: Path, once: bool = False) -> None:
        """Read the run's workers every second until ``_stop_watching`` (``once``: now only)."""
        self._stop_watching()
        job = WorkersWatchJob(run_dir, once)
        job.workers_read.connect(self._on_workers_read)
        job.failed.connect(self._on_watch_failed)
        job.finished.connect(self._on_watch_finished)
        self.watch_job = job
        self._watches.add(job)  # kept until its thread ends, also once replaced
        jobs.start(job)

    def _stop_watching(self) -> None:
        """The run is no longer live: one last read shows how its workers left it."""
        if self.watch_job is not None:
            self.watch_job.cancel()

    def _on_workers_read(self, workers: list[WorkerStatus]) -> None:
        if self.sender() is self.watch_job:  # a replaced watch's last reads are another run's
            self.inspector.show_workers(workers)

    def _on_watch_failed(self, message: str) -> None:
        if self.sender() is self.watch_job:
            self._log(f"cannot read the run's workers: {message}")

    def _on_watch_finished(self) -> None:
        job = self.sender()
        self._watches.discard(job)
        if job is self.watch_job:
            self.watch_job = None

    def _clear_workers(self) -> None:
        self._stop_watching()
        self.watch_job = None
        self.inspector.show_workers([])
        self.workers_label.hide()

    def _on_workers(self, event: ev.WorkersChanged) -> None:
        """The line under the controls: which worker runs which trial, for how long."""
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
