"""Following a run through its study: what every worker does, as search events.

A run with workers is many processes writing one study; no single one sees all the
events. A ``RunFollower`` reads the study again and again and sends the events a lone
search would have sent: ``TrialStarted`` when a trial is being evaluated,
``TrialFinished`` when it ends (complete or failed), ``ParetoFrontChanged`` and
``GenerationFinished`` as the complete trials grow, and ``WorkersChanged`` when the
running trials change hands. The controller of local workers prints these; the window
attached read-only to a running run draws them. Reading only, it never writes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mergestudio.events import EventSink, emit, log
from mergestudio.search.events import TrialFinished, TrialStarted, WorkerActivity, WorkersChanged
from mergestudio.search.front import FrontTracker
from mergestudio.search.objectives import Objectives
from mergestudio.search.store import RunFolder, TrialRecord, record_of

if TYPE_CHECKING:
    import optuna

    from mergestudio.search.spec import SearchSpec

FOLLOW_INTERVAL_S = 0.5


class RunFollower:
    """``poll()`` sends what changed in the run's study since the last poll. The first
    poll sends the trials already finished with ``replayed`` set, as a resumed search
    does, so plots opened on a running run draw its history first."""

    def __init__(self, run: RunFolder, spec: SearchSpec, events: EventSink | None) -> None:
        self.run = run
        self.events = events
        self.objectives = Objectives.build(spec)
        self.population_size = spec.algorithm.population_size
        self.front = FrontTracker(self.objectives, events)
        self._study: optuna.Study | None = None
        self._ended: set[int] = set()  # trials reported as finished (or not worth a line)
        self._started: set[int] = set()
        self._workers: tuple[WorkerActivity, ...] = ()
        self._first = True

    @property
    def complete(self) -> int:
        return len(self.front.records)

    def poll(self) -> None:
        if self._study is None:
            self._study = self.run.open_study()
        records = [(record_of(t), t) for t in self._study.get_trials(deepcopy=False)]
        replayed, self._first = self._first, False
        new_complete = False
        for record, _trial in records:
            if record.number in self._ended:
                continue
            if record.state == "running" and record.genome and record.number not in self._started:
                self._started.add(record.number)
                if not replayed:
                    emit(self.events, TrialStarted(record.number, record.genome, record.generation))
            elif record.state == "complete":
                self._ended.add(record.number)
                self._complete(record, replayed)
                new_complete = True
            elif record.state in ("failed", "interrupted", "surplus"):
                self._ended.add(record.number)
                if not replayed:
                    self._not_complete(record)
        if new_complete:
            self.front.publish()
        self._publish_workers(records)

    def _complete(self, record: TrialRecord, replayed: bool) -> None:
        self.front.add(record)
        emit(self.events, self.front.trial_event(record, replayed=replayed))
        if not replayed and self.complete % self.population_size == 0:
            self.front.generation_finished(self.complete // self.population_size - 1, self.population_size)

    def _not_complete(self, record: TrialRecord) -> None:
        if record.state == "failed":
            emit(
                self.events,
                TrialFinished(
                    record.number, record.genome, {}, (), record.duration_s, 0.0, 0.0,
                    record.generation, False, "failed", record.error,
                ),
            )
        elif record.state == "interrupted" and record.number in self._started:
            who = f" (worker {record.worker})" if record.worker else ""
            log(self.events, f"trial {record.number}{who} was cut short; it runs again", "warning")

    def _publish_workers(self, records: list[tuple[TrialRecord, optuna.trial.FrozenTrial]]) -> None:
        workers = tuple(
            sorted(
                (
                    WorkerActivity(record.worker or "?", record.number, _started_at(trial))
                    for record, trial in records
                    if record.state == "running" and record.genome
                ),
                key=lambda w: w.name,
            )
        )
        if workers != self._workers:
            self._workers = workers
            emit(self.events, WorkersChanged(workers))


def _started_at(trial: optuna.trial.FrozenTrial) -> float:
    return trial.datetime_start.timestamp() if trial.datetime_start is not None else time.time()
