"""The Evolve page's background jobs. Each calls the search engine and turns its events
into signals carrying the engine's own frozen dataclasses (plain data); none touches a
widget.

A search runs in a child process (``mergestudio.search.process``): its job's thread only
relays the events the child sends. Baselines are scored there too, before the first
trial, so scores repeat exactly: the engine fixes torch's (process-wide) thread count for
the run. A search with N local workers runs its controller in that child too, and its
trials in the workers' processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.evaluate.lm import quiet_transformers
from mergestudio.search import events as ev
from mergestudio.search.process import BaselinesScored, SearchProcess, SearchRequest
from PySide6.QtCore import Signal

from mergestudio_qt.jobs import Job

WATCH_INTERVAL_S = 1.0  # how often the workers view reads the run's study

if TYPE_CHECKING:
    from mergestudio.recipe.model import Recipe
    from mergestudio.search.baselines import Baseline
    from mergestudio.search.dashboard import TrialHistory
    from mergestudio.search.lock import LockOwner
    from mergestudio.search.spec import SearchSpec
    from mergestudio.search.workers import WorkerPlan


class _SearchEvents(Job):
    """A job that relays a search's events as signals."""

    search_started = Signal(object)  # SearchStarted
    trial_started = Signal(object)  # TrialStarted
    trial_finished = Signal(object)  # TrialFinished
    generation_finished = Signal(object)  # GenerationFinished
    front_changed = Signal(object)  # ParetoFrontChanged
    state_changed = Signal(object)  # SearchStateChanged
    baselines_ready = Signal(object)  # list[Baseline]
    workers_changed = Signal(object)  # WorkersChanged

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
            self.search_started.emit(event)
        elif isinstance(event, ev.WorkersChanged):
            self.workers_changed.emit(event)
        elif isinstance(event, BaselinesScored):
            self.baselines_ready.emit(list(event.baselines))
        else:
            super().events(event)


class SearchJob(_SearchEvents):
    """Start a new run (``spec`` given) or resume the one in ``run_dir``, in a child
    process; with ``workers``, that child scores the baselines and then controls that
    many local worker processes (``search.workers``, as ``evolve --workers N`` does).
    Pause (one process only), resume and stop are safe from the GUI thread; ``cancel``
    abandons the current trial(s) (re-queued for the next resume)."""

    def __init__(
        self,
        run_dir: Path,
        spec: SearchSpec | None = None,
        evaluations: int | None = None,
        workers: WorkerPlan | None = None,
    ) -> None:
        super().__init__()
        self.plan = workers
        self.pausable = workers is None  # workers stop after their trial; they do not hold
        self.process = SearchProcess(SearchRequest(run_dir, spec, evaluations, workers))

    # safe from any thread
    def pause(self) -> None:
        self.process.pause()

    def resume(self) -> None:
        self.process.resume()

    def stop(self) -> None:
        self.process.stop()

    def cancel(self) -> None:
        super().cancel()
        self.process.cancel()

    def work(self) -> Any:
        process = self.process
        process.start()
        try:
            for event in process.events():
                self.events(event)
        finally:
            process.close()
        ended = process.ended
        assert ended is not None  # events() raises when the child ends without saying
        if ended.how == "cancelled":
            raise Cancelled("the search was cancelled")
        if ended.how == "failed":
            if ended.details:
                self.log.emit(ended.details, "debug")
            raise MergeStudioError(ended.error)
        return ended.outcome


class WorkersWatchJob(Job):
    """Who works on a run (``search.worker_status``), read from its study every
    ``WATCH_INTERVAL_S`` until cancelled and once more then (the run's end as it left
    it); ``once``: a single read (a run opened, not running)."""

    workers_read = Signal(object)  # list[WorkerStatus], the live ones first

    def __init__(self, run_dir: Path, once: bool = False) -> None:
        super().__init__()
        self.run_dir, self.once = run_dir, once

    def work(self) -> None:
        from mergestudio.search.store import RunFolder
        from mergestudio.search.worker_status import WorkerWatch

        watch = WorkerWatch(RunFolder(self.run_dir))
        try:
            self.workers_read.emit(watch.poll())
            if self.once:
                return
            while not self.cancel_token.wait(WATCH_INTERVAL_S):
                self.workers_read.emit(watch.poll())
            self.workers_read.emit(watch.poll())
        finally:
            watch.close()


class FollowJob(_SearchEvents):
    """Follow a run that another process controls, reading its study only (the engine's
    ``RunFollower``), until its controller releases the run or the job is cancelled.
    Returns the controller that was followed (``LockOwner``)."""

    def __init__(self, run_dir: Path, spec: SearchSpec, owner: LockOwner) -> None:
        super().__init__()
        self.run_dir, self.spec, self.owner = run_dir, spec, owner

    def work(self) -> LockOwner:
        from mergestudio.search.follow import FOLLOW_INTERVAL_S, RunFollower
        from mergestudio.search.lock import run_owner
        from mergestudio.search.store import RunFolder

        follower = RunFollower(RunFolder(self.run_dir), self.spec, self.events)
        while True:
            # The owner is checked before the last read, so the trials its last moments
            # added are read too.
            ended = run_owner(self.run_dir) is None
            follower.poll()
            if ended:
                return self.owner
            if self.cancel_token.wait(FOLLOW_INTERVAL_S):
                raise Cancelled("stopped following the run")


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


class CandidateTimeJob(Job):
    """The estimated time to merge one candidate of a spec's recipe in memory
    (``engine/estimate.py``: headers only, plus this machine's calibration)."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe

    def work(self) -> str:
        from mergestudio.engine.estimate import estimate_candidate_time
        from mergestudio.io.hub import hub_transfer

        with hub_transfer(self.events, self.cancel_token):
            return estimate_candidate_time(self.recipe).describe()
