"""Running a search: Optuna ask/tell around the resident evaluator.

Every candidate is merged into one loaded model (no files per candidate), evaluated,
and told to the study, which lives in the run folder. A run killed at any moment
resumes from the study: trials it left running are queued again, finished trials are
never repeated (see ``store.recover_interrupted``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.engine.device import torch_threads
from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.events import EventSink, emit, log
from mergestudio.io.hub import hub_transfer
from mergestudio.search.control import SearchControl
from mergestudio.search.events import (
    GeneInfo,
    ObjectiveInfo,
    SearchStarted,
    SearchStateChanged,
    TrialFinished,
    TrialStarted,
)
from mergestudio.search.fitness import Fitness, prepare_fitness
from mergestudio.search.front import FrontTracker
from mergestudio.search.objectives import Objectives
from mergestudio.search.samplers import make_sampler
from mergestudio.search.spec import SearchSpec, build_genome, load_spec
from mergestudio.search.store import INTERRUPTED_ATTR, RunFolder, record_of, recover_interrupted

if TYPE_CHECKING:
    import optuna

    from mergestudio.evaluate.resident import ResidentEvaluator

# A spec whose candidates keep failing (a model that cannot be merged, say) stops
# instead of burning its budget on errors.
MAX_CONSECUTIVE_FAILURES = 5
ELAPSED_ATTR = "elapsed_s"


@dataclass(frozen=True)
class SearchOutcome:
    run: Path
    state: str  # "finished" (budget spent), "stopped" (asked to), "failed"
    complete_trials: int
    front: tuple[int, ...]
    hypervolume: float
    elapsed_s: float  # over every session of the run
    interrupted_trials: tuple[int, ...]  # re-queued at this start


def start_search(
    spec: SearchSpec | str | Path,
    run_dir: str | Path,
    *,
    events: EventSink | None = None,
    control: SearchControl | None = None,
) -> SearchOutcome:
    """Start a new run in ``run_dir`` (which must be new or empty)."""
    if not isinstance(spec, SearchSpec):
        spec = load_spec(spec)
    run = RunFolder(run_dir)
    run.create(spec)
    control = control or SearchControl()
    with hub_transfer(events, control.cancel_token):  # Hub models download with progress
        return _Search(run, spec, events, control, resumed=False).run()


def resume_search(
    run_dir: str | Path,
    *,
    events: EventSink | None = None,
    control: SearchControl | None = None,
    evaluations: int | None = None,
) -> SearchOutcome:
    """Continue the run in ``run_dir`` after a crash, a stop, or with a larger budget
    (``evaluations`` replaces the spec's evaluation budget)."""
    run = RunFolder(run_dir)
    spec = run.load_spec()
    if evaluations is not None:
        spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"evaluations": evaluations})})
    control = control or SearchControl()
    with hub_transfer(events, control.cancel_token):  # Hub models download with progress
        return _Search(run, spec, events, control, resumed=True).run()


class _Search:
    def __init__(
        self,
        run: RunFolder,
        spec: SearchSpec,
        events: EventSink | None,
        control: SearchControl,
        resumed: bool,
    ) -> None:
        self.run_folder = run
        self.spec = spec
        self.events = events
        self.control = control
        self.resumed = resumed
        self.objectives = Objectives.build(spec)
        self.genome = build_genome(spec)
        self.front = FrontTracker(self.objectives, events)
        self.fitness: Fitness | None = None  # set in the loop: IRT calibrates on the resident model
        self.failures = 0
        self.elapsed_before = 0.0
        self.session_start = time.perf_counter()
        self.paused_s = 0.0  # time spent paused does not count against the wall-time budget

    # ---- the loop ----------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        study = self.run_folder.open_study(list(self.objectives.directions))
        self._describe_study(study)
        interrupted = recover_interrupted(study)
        if interrupted:
            log(self.events, f"{len(interrupted)} trial(s) left unfinished will run again: {interrupted}")
        self.elapsed_before = float(study.user_attrs.get(ELAPSED_ATTR, 0.0))
        self._announce(study)
        self._replay(study)
        state, reason = "failed", ""
        try:
            with torch_threads(self.spec.evaluation.threads), self._resident() as resident:
                state, reason = self._loop(study, resident)
        except Cancelled:
            state, reason = "stopped", "cancelled during a trial; it will run again on resume"
        finally:
            self._save_elapsed(study)
            emit(self.events, self._state_event(study, state, reason))
        return SearchOutcome(
            run=self.run_folder.path,
            state=state,
            complete_trials=self._complete_count(study),
            front=self.front.trials,
            hypervolume=self.front.hypervolume,
            elapsed_s=self._elapsed(),
            interrupted_trials=tuple(interrupted),
        )

    def _loop(self, study: optuna.Study, resident: ResidentEvaluator) -> tuple[str, str]:
        emit(self.events, self._state_event(study, "running"))
        while True:
            spent = self._budget_spent(study)
            if spent:
                return "finished", spent
            if self.control.paused:
                emit(self.events, self._state_event(study, "paused"))
                paused_at = time.perf_counter()
                self.control.wait_while_paused()
                self.paused_s += time.perf_counter() - paused_at
                if not self.control.stop_requested:
                    emit(self.events, self._state_event(study, "running"))
            if self.control.stop_requested:
                return "stopped", "stopped by the user"
            self._trial(study, resident)
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                return "failed", f"{self.failures} trials in a row failed; see the last trial's error"

    def _trial(self, study: optuna.Study, resident: ResidentEvaluator) -> None:
        from optuna.trial import TrialState

        fitness = self._current_fitness(study, resident)
        started = time.perf_counter()
        study.sampler = make_sampler(self.spec.algorithm, self._draw_index(study))
        trial = study.ask()
        genome = {g.name: float(trial.suggest_float(g.name, g.low, g.high)) for g in self.genome.genes}
        generation = self._complete_count(study) // self.spec.algorithm.population_size
        recipe = self.genome.recipe(genome)
        trial.set_user_attr("genome", genome)
        trial.set_user_attr("recipe", recipe.to_yaml())
        trial.set_user_attr("generation", generation)
        emit(self.events, TrialStarted(trial.number, genome, generation))
        try:
            result = resident.evaluate(recipe, cancel=self.control.cancel_token)
        except Cancelled:
            # Like a crash: the same draw proposes this candidate again on resume.
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            raise
        except MergeStudioError as error:
            self._fail(study, trial, genome, generation, started, str(error))
            return
        values = fitness.values(self.objectives, result.report)
        study_values = self.objectives.study_values(values)
        timings = {
            "merge_s": round(result.merge_s, 4),
            "eval_s": round(result.eval_s, 4),
            "total_s": round(time.perf_counter() - started, 4),
        }
        self.run_folder.write_items(
            trial.number,
            {
                "trial": trial.number,
                "genome": genome,
                "objectives": values,
                "timings": timings,
                "fitness": fitness.details(result.report),
                "report": result.report.to_dict(),
            },
        )
        trial.set_user_attr("objectives", values)
        trial.set_user_attr("timings", timings)
        study.tell(trial, study_values)
        self.failures = 0
        self._save_elapsed(study)
        self._after_trial(study, trial.number)

    def _current_fitness(self, study: optuna.Study, resident: ResidentEvaluator) -> Fitness:
        """The run's estimator, prepared on the first trial of a session and, while an IRT
        run is still scoring its calibration trials in full, before every trial."""
        from optuna.trial import TrialState

        if self.fitness is None or self.fitness.calibrating:
            complete = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            self.fitness = prepare_fitness(
                self.run_folder,
                self.spec,
                self.objectives,
                complete,
                resident,
                events=self.events,
                cancel=self.control.cancel_token,
            )
            resident.tasks = list(self.fitness.tasks)
        return self.fitness

    def _fail(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        genome: dict[str, float],
        generation: int,
        started: float,
        error: str,
    ) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.FAIL)
        self.failures += 1
        log(self.events, f"trial {trial.number} failed: {error}", "warning")
        duration = time.perf_counter() - started
        emit(
            self.events,
            TrialFinished(
                trial.number, genome, {}, (), duration, 0.0, 0.0, generation, False, "failed", error
            ),
        )

    def _after_trial(self, study: optuna.Study, number: int) -> None:
        record = record_of(study.get_trials(deepcopy=False)[number])
        self.front.add(record)
        emit(self.events, self.front.trial_event(record))
        self.front.publish()
        complete = self._complete_count(study)
        if complete % self.spec.algorithm.population_size == 0:
            size = self.spec.algorithm.population_size
            self.front.generation_finished(complete // size - 1, size)

    # ---- budget, time, events ----------------------------------------------------------

    def _budget_spent(self, study: optuna.Study) -> str:
        budget = self.spec.budget
        if budget.evaluations is not None and self._complete_count(study) >= budget.evaluations:
            return f"evaluation budget spent ({budget.evaluations} trials)"
        if budget.wall_time_s is not None and self._elapsed() >= budget.wall_time_s:
            return f"wall-time budget spent ({budget.wall_time_s:g} s)"
        return ""

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.session_start - self.paused_s

    def _save_elapsed(self, study: optuna.Study) -> None:
        study.set_user_attr(ELAPSED_ATTR, round(self._elapsed(), 3))

    @staticmethod
    def _draw_index(study: optuna.Study) -> int:
        """Which draw of the sampler this is: trials that completed or failed on their
        own. Trials cut short by a crash or a cancel do not count: their draw is made
        again, so a resumed run proposes the same candidates as one that never crashed."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        return sum(1 for t in trials if t.state == TrialState.COMPLETE or "error" in t.user_attrs)

    @staticmethod
    def _complete_count(study: optuna.Study) -> int:
        from optuna.trial import TrialState

        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def _state_event(self, study: optuna.Study, state: str, reason: str = "") -> SearchStateChanged:
        return SearchStateChanged(state, reason, self._complete_count(study), round(self._elapsed(), 3))  # type: ignore[arg-type]

    def _describe_study(self, study: optuna.Study) -> None:
        """Attributes that make the study readable on its own (optuna-dashboard)."""
        if "objectives" not in study.user_attrs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # set_metric_names is marked experimental
                study.set_metric_names(list(self.objectives.study_names))
            study.set_user_attr("objectives", self.objectives.names)
            study.set_user_attr("genes", self.genome.names)
            study.set_user_attr("spec", self.spec.to_yaml())

    def _announce(self, study: optuna.Study) -> None:
        emit(
            self.events,
            SearchStarted(
                run=str(self.run_folder.path),
                algorithm=self.spec.algorithm.name,
                seed=self.spec.algorithm.seed,
                population_size=self.spec.algorithm.population_size,
                genes=tuple(GeneInfo(g.name, g.low, g.high) for g in self.genome.genes),
                objectives=tuple(
                    ObjectiveInfo(o.name, o.direction, o.task, o.metric) for o in self.objectives.items
                ),
                study_objectives=tuple(self.objectives.study_names),
                budget_evaluations=self.spec.budget.evaluations,
                budget_wall_time_s=self.spec.budget.wall_time_s,
                resumed=self.resumed,
                finished_before=self._complete_count(study),
            ),
        )

    def _replay(self, study: optuna.Study) -> None:
        """Send the run's finished trials again, so plots opened on a resumed run
        redraw its history."""
        from optuna.trial import TrialState

        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self.front.add(record_of(trial))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            emit(self.events, self.front.trial_event(record_of(trial), replayed=True))
        self.front.publish()

    @contextmanager
    def _resident(self) -> Iterator[ResidentEvaluator]:
        from mergestudio.evaluate.resident import ResidentEvaluator

        template = self.genome.template_model()
        evaluation = self.spec.evaluation
        with ResidentEvaluator(
            template,
            self.objectives.tasks,
            batch_size=evaluation.batch_size,
            device=evaluation.device,
            dtype="float32",
            merge_threads=evaluation.threads,
        ) as resident:
            yield resident



def describe_outcome(outcome: SearchOutcome) -> dict[str, Any]:
    return {
        "run": str(outcome.run),
        "state": outcome.state,
        "complete_trials": outcome.complete_trials,
        "front": list(outcome.front),
        "hypervolume": outcome.hypervolume,
        "elapsed_s": round(outcome.elapsed_s, 2),
        "interrupted_trials": list(outcome.interrupted_trials),
    }
