"""The redraw schedule. Events only append to the page's ``TrialHistory`` and mark the
dashboard's parts out of date; a timer redraws one part per tick (each plot, then the
table with the genome), so a burst of trials costs one redraw and the window stays
responsive while trials land."""

from __future__ import annotations

import time
from pathlib import Path

from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import TrialHistory, best_trial
from mergestudio.search.spec import SearchSpec

from mergestudio_qt.widgets.evolve_trial_plot import TrialPlot

REDRAWN_PARTS = 5  # the four plots, and the table with the genome
REDRAW_MS = 50  # each plot redrawn at most 20 times a second, however fast trials finish


class RedrawSchedule:
    """Mixed into ``EvolvePage``: shows a run's history and redraws what changed."""

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
        self._clear_workers()  # the last run's; a live or opened run reads its own
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

