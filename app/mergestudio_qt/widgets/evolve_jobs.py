"""The Evolve page's background jobs. Each calls the search engine and turns its events
into signals carrying the engine's own frozen dataclasses (plain data); none touches a
widget.

Baselines are scored in the search's own worker, before its first trial, rather than in
a second thread beside it: the engine fixes torch's (process-wide) thread count for the
run so scores repeat exactly, and two jobs setting and restoring it would race.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.events import CancelToken
from mergestudio.search import events as ev
from mergestudio.search.control import SearchControl
from PySide6.QtCore import Signal

from mergestudio_qt.jobs import Job
from mergestudio_qt.workers import quiet_transformers

if TYPE_CHECKING:
    from mergestudio.search.baselines import Baseline
    from mergestudio.search.dashboard import TrialHistory
    from mergestudio.search.spec import SearchSpec


class SearchJob(Job):
    """Start a new run (``spec`` given) or resume the one in ``run_dir``. Pause, resume
    and stop are safe from the GUI thread; ``cancel`` abandons the current trial (it is
    re-queued for the next resume)."""

    search_started = Signal(object)  # SearchStarted
    trial_started = Signal(object)  # TrialStarted
    trial_finished = Signal(object)  # TrialFinished
    generation_finished = Signal(object)  # GenerationFinished
    front_changed = Signal(object)  # ParetoFrontChanged
    state_changed = Signal(object)  # SearchStateChanged
    baselines_ready = Signal(object)  # list[Baseline]

    def __init__(self, run_dir: Path, spec: SearchSpec | None = None, evaluations: int | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.spec = spec
        self.evaluations = evaluations
        self.control = SearchControl(self.cancel_token)
        # Scoring the baselines comes before the first trial; Stop ends it too, so a
        # search stopped then never starts.
        self._baselines_cancel = CancelToken()
        self._pending_baselines: list[Baseline] | None = None

    # safe from any thread
    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def stop(self) -> None:
        self.control.stop()
        self._baselines_cancel.cancel()

    def cancel(self) -> None:
        self.control.cancel()
        self._baselines_cancel.cancel()

    def work(self) -> Any:
        from mergestudio.search import prepare_imports, resume_search, start_search

        prepare_imports()
        quiet_transformers()
        if self.spec is not None:
            self._pending_baselines = self._score_baselines(self.spec)
            self._stop_if_asked()
            return start_search(self.spec, self.run_dir, events=self.events, control=self.control)
        self._resume_baselines()
        self._stop_if_asked()
        return resume_search(
            self.run_dir, events=self.events, control=self.control, evaluations=self.evaluations
        )

    def _stop_if_asked(self) -> None:
        """Stop or Cancel while the baselines were scored: end before the run starts."""
        if self.control.stop_requested:
            raise Cancelled("stopped before the first trial")

    def _score_baselines(self, spec: SearchSpec) -> list[Baseline] | None:
        """Before the first trial; saved once the run folder exists (SearchStarted)."""
        from mergestudio.search.baselines import compute_baselines

        try:
            baselines = compute_baselines(spec, events=self.events, cancel=self._baselines_cancel)
        except Cancelled:
            return None  # Stop or Cancel: _stop_if_asked ends the job
        except MergeStudioError as error:  # the search is still worth running without them
            self.log.emit(f"baselines not scored: {error}", "warning")
            return None
        self.baselines_ready.emit(baselines)
        return baselines

    def _resume_baselines(self) -> None:
        from mergestudio.search.baselines import run_baselines

        try:
            self.baselines_ready.emit(
                run_baselines(self.run_dir, events=self.events, cancel=self._baselines_cancel)
            )
        except Cancelled:
            return
        except MergeStudioError as error:
            self.log.emit(f"baselines not scored: {error}", "warning")

    def events(self, event: object) -> None:
        if isinstance(event, ev.TrialFinished):
            self.trial_finished.emit(event)
        elif isinstance(event, ev.ParetoFrontChanged):
            self.front_changed.emit(event)
        elif isinstance(event, ev.TrialStarted):
            self.trial_started.emit(event)
        elif isinstance(event, ev.GenerationFinished):
            self.generation_finished.emit(event)
        elif isinstance(event, ev.SearchStateChanged):
            self.state_changed.emit(event)
        elif isinstance(event, ev.SearchStarted):
            self._save_baselines()
            self.search_started.emit(event)
        else:
            super().events(event)

    def _save_baselines(self) -> None:
        from mergestudio.search.baselines import save_baselines

        if self._pending_baselines is not None and self.spec is not None:
            save_baselines(self.run_dir, self.spec, self._pending_baselines)
            self._pending_baselines = None


@dataclass(frozen=True)
class RunSnapshot:
    """A run folder as the page shows it: the spec, every complete trial with its front
    and hypervolume curve, what is cached beside them, and counts for the status line."""

    run_dir: Path
    spec: SearchSpec
    history: TrialHistory
    baselines: list[Baseline] | None
    full_evaluations: dict[int, dict[str, float]]
    failed_trials: int
    interrupted_trials: int
    elapsed_s: float


class OpenRunJob(Job):
    """Read a run folder; ``opened`` carries the snapshot at once (trials and front), then
    the hypervolume curve follows (``hypervolume_ready``: exact 4-D volumes are slow) and
    missing baselines are scored (``baselines_ready``) while the plots show the history."""

    opened = Signal(object)  # RunSnapshot
    hypervolume_ready = Signal(object)  # numpy array: the curve for the snapshot's trials
    baselines_ready = Signal(object)  # list[Baseline]

    def __init__(self, run_dir: Path, score_baselines: bool = True) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.score_baselines = score_baselines

    def work(self) -> RunSnapshot:
        from mergestudio.search.baselines import load_baselines, load_full_evaluations, run_baselines
        from mergestudio.search.dashboard import TrialHistory
        from mergestudio.search.store import RunFolder

        run = RunFolder(self.run_dir)
        spec = run.load_spec()
        study = run.open_study()
        records = run.records(study)
        history = TrialHistory.for_spec(spec)
        history.extend(records, hypervolume=False)
        curve_source = TrialHistory.for_spec(spec)  # the page owns ``history`` once opened
        curve_source.extend(records, hypervolume=False)
        baselines = load_baselines(run.path, spec)
        snapshot = RunSnapshot(
            run.path,
            spec,
            history,
            baselines,
            load_full_evaluations(run.path),
            sum(1 for r in records if r.state == "failed"),
            sum(1 for r in records if r.state in ("interrupted", "running")),
            float(study.user_attrs.get("elapsed_s", 0.0)),
        )
        self.opened.emit(snapshot)
        self.cancel_token.raise_if_cancelled()
        self.hypervolume_ready.emit(curve_source.hypervolume_curve())
        if baselines is None and self.score_baselines:
            quiet_transformers()
            try:
                self.baselines_ready.emit(run_baselines(run.path, events=self.events, cancel=self.cancel_token))
            except Cancelled:
                raise
            except MergeStudioError as error:
                self.log.emit(f"baselines not scored: {error}", "warning")
        return snapshot


class ExportTrialJob(Job):
    """Merge one trial into a model folder (the engine's export, with its lineage)."""

    def __init__(self, run_dir: Path, number: int, out_dir: Path) -> None:
        super().__init__()
        self.run_dir, self.number, self.out_dir = run_dir, number, out_dir

    def work(self) -> Path:
        from mergestudio.search.export import export_trial

        result = export_trial(
            self.run_dir,
            self.number,
            self.out_dir,
            overwrite=True,
            device="cpu",
            events=self.events,
            cancel=self.cancel_token,
        )
        return Path(result.output)


class FullEvalJob(Job):
    """Score one trial on every item of every task (runs that used a subset estimator)."""

    def __init__(self, run_dir: Path, number: int) -> None:
        super().__init__()
        self.run_dir, self.number = run_dir, number

    def work(self) -> tuple[int, dict[str, float]]:
        from mergestudio.search.baselines import evaluate_full

        quiet_transformers()
        return self.number, evaluate_full(self.run_dir, self.number, events=self.events, cancel=self.cancel_token)
