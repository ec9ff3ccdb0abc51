"""Keeping the Pareto front, the hypervolume and per-generation statistics of a run up
to date as trials finish, and announcing them as events."""

from __future__ import annotations

import statistics

from mergestudio.events import EventSink, emit
from mergestudio.search.events import GenerationFinished, ObjectiveStats, ParetoFrontChanged, TrialFinished
from mergestudio.search.objectives import Objectives
from mergestudio.search.pareto import hypervolume, non_dominated, reference_point, to_minimization
from mergestudio.search.store import TrialRecord


class FrontTracker:
    def __init__(self, objectives: Objectives, events: EventSink | None) -> None:
        self.objectives = objectives
        self.events = events
        self.maximize = [d == "maximize" for d in objectives.directions]
        self.records: list[TrialRecord] = []
        self.trials: tuple[int, ...] = ()
        self.hypervolume = 0.0
        self.reference: tuple[float, ...] = ()
        self._changed = False  # since the last ParetoFrontChanged

    def add(self, record: TrialRecord) -> None:
        """Count a complete trial and recompute the front and hypervolume."""
        self.records.append(record)
        points = [to_minimization(r.study_values, self.maximize) for r in self.records]
        front = non_dominated(points)
        given = [
            None if ref is None else to_minimization([ref], [up])[0]
            for ref, up in zip(self.objectives.references, self.maximize, strict=True)
        ]
        reference = reference_point(points, given)
        trials = tuple(self.records[i].number for i in front)
        volume = hypervolume([points[i] for i in front], reference)
        if trials != self.trials or abs(volume - self.hypervolume) > 1e-12:
            self._changed = True
        self.trials = trials
        self.hypervolume = volume
        self.reference = to_minimization(reference, self.maximize)  # back to objective units

    def publish(self) -> None:
        """Send ``ParetoFrontChanged`` if the front or hypervolume moved since the last one."""
        if not self._changed:
            return
        self._changed = False
        on_front = {r.number: r for r in self.records if r.number in self.trials}
        emit(
            self.events,
            ParetoFrontChanged(
                trials=self.trials,
                points=tuple(on_front[n].study_values for n in self.trials),
                hypervolume=self.hypervolume,
                reference=self.reference,
                objectives=tuple(self.objectives.study_names),
            ),
        )

    def trial_event(self, record: TrialRecord, replayed: bool = False) -> TrialFinished:
        return TrialFinished(
            number=record.number,
            genome=record.genome,
            objectives=record.objectives,
            study_values=record.study_values,
            duration_s=record.duration_s,
            merge_s=record.merge_s,
            eval_s=record.eval_s,
            generation=record.generation,
            is_on_front=record.number in self.trials,
            replayed=replayed,
        )

    def generation_finished(self, generation: int, size: int) -> None:
        """Statistics of the last ``size`` (a population) complete trials."""
        members = self.records[-size:]
        stats = {}
        best_so_far = {}
        for objective in self.objectives.items:
            values = [r.objectives[objective.name] for r in members]
            pick = max if objective.maximize else min
            stats[objective.name] = ObjectiveStats(
                min(values), max(values), statistics.fmean(values), pick(values)
            )
            best_so_far[objective.name] = pick(r.objectives[objective.name] for r in self.records)
        emit(
            self.events,
            GenerationFinished(generation, tuple(r.number for r in members), stats, best_so_far),
        )
