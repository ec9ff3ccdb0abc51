"""Running a search: Optuna ask/tell around the resident evaluator.

Every candidate is merged into one loaded model (no files per candidate), evaluated,
and told to the study, which lives in the run folder. A run killed at any moment
resumes from the study: trials it left running are queued again, finished trials are
never repeated (see ``store.recover_interrupted``).

One controller runs a run at a time (``search.lock``); any number of workers may join
it (``join_search``): the same loop, drawing apart from each other, beating a heartbeat
per trial, re-running trials of dead workers, and counting the budget in the study so
it is spent exactly once however many workers share it.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
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
from mergestudio.search.fitness import (
    ABILITY_ATTR,
    MAX_OBSERVED_TRIALS,
    Fitness,
    combine_rounds,
    prepare_fitness,
)
from mergestudio.search.front import FrontTracker
from mergestudio.search.genome import Genome, StagedGenome
from mergestudio.search.lock import RunLock
from mergestudio.search.objectives import Objectives
from mergestudio.search.samplers import make_sampler
from mergestudio.search.spec import SearchSpec, build_genome, load_spec
from mergestudio.search.store import (
    INTERRUPTED_ATTR,
    SURPLUS_ATTR,
    WORKER_ATTR,
    RunFolder,
    record_of,
    recover_interrupted,
    worker_identity,
)

if TYPE_CHECKING:
    import optuna

    from mergestudio.evaluate.evaluator import AnyTask
    from mergestudio.evaluate.resident import CandidateEvaluator, CandidateResult
    from mergestudio.recipe.model import Recipe
    from mergestudio.recipe.multi import MultiRecipe
    from mergestudio.search.schema import EvaluationSpec

    # Opens what a worker evaluates candidates with: the template model's folder, the
    # tasks, the evaluation settings (device, threads, batch), the worker's control (to
    # give up waiting when it is stopped). The default is a ResidentEvaluator here.
    EvaluatorFactory = Callable[
        [str, Sequence[AnyTask], EvaluationSpec, SearchControl], AbstractContextManager[CandidateEvaluator]
    ]

# A spec whose candidates keep failing (a model that cannot be merged, say) stops
# instead of burning its budget on errors.
MAX_CONSECUTIVE_FAILURES = 5
ELAPSED_ATTR = "elapsed_s"
BUDGET_ATTR = "budget_evaluations"  # the controller's evaluation budget, which workers keep


@dataclass(frozen=True)
class SearchOutcome:
    run: Path
    state: str  # "finished" (budget spent), "stopped" (asked to), "failed"
    complete_trials: int
    front: tuple[int, ...]
    hypervolume: float
    elapsed_s: float  # over every session of the run
    interrupted_trials: tuple[int, ...]  # re-queued at this start


@dataclass(frozen=True)
class WorkerRole:
    """How a worker joins a run: ``name`` shows in the trials it runs; ``index`` (one per
    worker) seeds its draws apart from the others'; ``threads`` and ``device`` replace
    the spec's (one thread per CPU worker, say, or one GPU each)."""

    name: str = ""
    index: int = 0
    threads: int | None = None
    device: str | None = None


def start_search(
    spec: SearchSpec | str | Path,
    run_dir: str | Path,
    *,
    events: EventSink | None = None,
    control: SearchControl | None = None,
    storage: str | None = None,
) -> SearchOutcome:
    """Start a new run in ``run_dir`` (which must be new or empty); ``storage``: keep its
    study in that URL (an RDB URL, or ``journal:PATH``) instead of the folder's SQLite file."""
    if not isinstance(spec, SearchSpec):
        spec = load_spec(spec)
    with RunLock(run_dir):
        run = RunFolder(run_dir)
        run.create(spec)
        if storage:
            run.use_storage(storage)
        return _run(run, spec, events, control, resumed=False)


def resume_search(
    run_dir: str | Path,
    *,
    events: EventSink | None = None,
    control: SearchControl | None = None,
    evaluations: int | None = None,
) -> SearchOutcome:
    """Continue the run in ``run_dir`` after a crash, a stop, or with a larger budget
    (``evaluations`` replaces the spec's evaluation budget). Refused (``RunLocked``),
    with nothing changed, while another process controls the run."""
    with RunLock(run_dir) as lock:
        run = RunFolder(run_dir)
        spec = with_evaluations(run.load_spec(), evaluations)
        if lock.stale_owner is not None:
            log(events, f"took over the run from {lock.stale_owner.describe()}, which ended without releasing it")
        return _run(run, spec, events, control, resumed=True)


def join_search(
    run_dir: str | Path,
    *,
    role: WorkerRole | None = None,
    events: EventSink | None = None,
    control: SearchControl | None = None,
    storage: str | None = None,
    heartbeat_s: int | None = None,
    evaluator: EvaluatorFactory | None = None,
) -> SearchOutcome:
    """Work on a run that a controller started, beside any other workers, until its
    budget is spent (or ``control`` stops it). Takes no lock: many workers share a run.
    ``storage`` reaches the study from another machine (the folder's spec is read);
    ``evaluator`` evaluates candidates elsewhere (a Ray actor) instead of in this process."""
    run = RunFolder(run_dir, storage) if heartbeat_s is None else RunFolder(run_dir, storage, heartbeat_s)
    spec = run.load_spec()
    role = role or WorkerRole()
    overrides = {"threads": role.threads, "device": role.device}
    changes = {key: value for key, value in overrides.items() if value is not None}
    spec = spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update=changes)})
    return _run(run, spec, events, control, resumed=True, role=role, evaluator=evaluator)


def with_evaluations(spec: SearchSpec, evaluations: int | None) -> SearchSpec:
    if evaluations is None:
        return spec
    return spec.model_copy(update={"budget": spec.budget.model_copy(update={"evaluations": evaluations})})


def _run(
    run: RunFolder,
    spec: SearchSpec,
    events: EventSink | None,
    control: SearchControl | None,
    resumed: bool,
    role: WorkerRole | None = None,
    evaluator: EvaluatorFactory | None = None,
) -> SearchOutcome:
    """The search loop, with Hub models downloading under its progress and cancel."""
    control = control or SearchControl()
    with hub_transfer(events, control.cancel_token):
        return _Search(run, spec, events, control, resumed=resumed, role=role, evaluator=evaluator).run()


class _Search:
    def __init__(
        self,
        run: RunFolder,
        spec: SearchSpec,
        events: EventSink | None,
        control: SearchControl,
        resumed: bool,
        role: WorkerRole | None = None,
        evaluator: EvaluatorFactory | None = None,
    ) -> None:
        self.role = role  # None: the run's only process (its controller)
        self.evaluator = evaluator or _local_resident
        self.identity = worker_identity(role.name if role else "")
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
        interrupted: list[int] = []
        if self.role is None:
            self._describe_study(study)
            interrupted = recover_interrupted(study)
        elif BUDGET_ATTR in study.user_attrs:
            self.spec = with_evaluations(self.spec, study.user_attrs[BUDGET_ATTR])
        if interrupted:
            log(self.events, f"{len(interrupted)} trial(s) left unfinished will run again: {interrupted}")
        self.elapsed_before = float(study.user_attrs.get(ELAPSED_ATTR, 0.0))
        self._announce(study)
        self._replay(study)
        state, reason = "failed", ""
        try:
            template, evaluation = self.genome.template_model(), self.spec.evaluation
            with self.evaluator(template, self.objectives.tasks, evaluation, self.control) as resident:
                _ask_graded(resident, self.spec)
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

    def _loop(self, study: optuna.Study, resident: CandidateEvaluator) -> tuple[str, str]:
        emit(self.events, self._state_event(study, "running"))
        while True:
            self._fail_stale(study)
            spent = self._budget_spent(study)
            if spent:
                return "finished", spent
            if self._budget_claimed(study):
                # Other workers run the last trials; wait in case one dies and its trial
                # comes back to be run again.
                self.control.wait_for_stop(min(1.0, self.run_folder.heartbeat_s / 2))
                if self.control.stop_requested:
                    return "stopped", "stopped by the user"
                continue
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

    def _trial(self, study: optuna.Study, resident: CandidateEvaluator) -> None:
        import optuna

        fitness = self._current_fitness(study, resident)
        started = time.perf_counter()
        worker = None if self.role is None else self.role.index
        study.sampler = make_sampler(self.spec.algorithm, self._draw_index(study), worker)
        with warnings.catch_warnings():
            # "Heartbeat of storage is supposed to be used with Study.optimize": ask/tell
            # beats its own (``_Heartbeat``).
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        try:
            with _Heartbeat(study, trial._trial_id):
                self._evaluate(study, trial, resident, fitness, started)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Our heartbeat was late (a machine too busy to beat within the grace period):
            # another worker took the trial for a dead worker's and queued it again.
            log(
                self.events,
                f"trial {trial.number} was taken for a dead worker's (its heartbeat was late) and runs "
                "again; this result is dropped",
                "warning",
            )

    def _evaluate(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        resident: CandidateEvaluator,
        fitness: Fitness,
        started: float,
    ) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr(WORKER_ATTR, self.identity)
        if trial.user_attrs.get(INTERRUPTED_ATTR):  # copied from the trial this one re-runs
            trial.set_user_attr(INTERRUPTED_ATTR, False)
        if not self._claim(study, trial.number):
            trial.set_user_attr(SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            return
        genome = {g.name: float(trial.suggest_float(g.name, g.low, g.high)) for g in self.genome.genes}
        generation = self._complete_count(study) // self.spec.algorithm.population_size
        recipe = self.genome.recipe(genome)
        trial.set_user_attr("genome", genome)
        trial.set_user_attr("recipe", recipe.to_yaml())
        trial.set_user_attr("generation", generation)
        if fitness.learns_from_trials:
            fitness = fitness.observing(self._observed_trials(study, trial.number))
        emit(self.events, TrialStarted(trial.number, genome, generation))
        try:
            result = resident.evaluate(recipe, cancel=self.control.cancel_token)
            if fitness.adaptive:
                result = self._adaptive_round(resident, recipe, fitness, result, genome)
        except Cancelled:
            # Like a crash: the same draw proposes this candidate again on resume.
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            raise
        except MergeStudioError as error:
            self._fail(study, trial, genome, generation, started, str(error))
            return
        values = fitness.values(self.objectives, result.report, genome)
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
                "fitness": fitness.details(result.report, genome),
                "report": result.report.to_dict(),
            },
        )
        trial.set_user_attr("objectives", values)
        trial.set_user_attr("timings", timings)
        if fitness.calibration is not None:
            trial.set_user_attr(ABILITY_ATTR, fitness.abilities(result.report, genome))
        study.tell(trial, study_values)
        self.failures = 0
        self._save_elapsed(study)
        self._after_trial(study, trial.number)

    @staticmethod
    def _observed_trials(
        study: optuna.Study, number: int
    ) -> list[tuple[int, dict[str, float], dict[str, list[float]]]]:
        """The estimated trials before trial ``number`` (the latest ``MAX_OBSERVED_TRIALS``),
        complete now: (number, genome, {task: [θ, variance]}). The trial's items file records
        which, so its estimate can be made again from the run folder."""
        from optuna.trial import TrialState

        trials = [
            (t.number, t.user_attrs["genome"], t.user_attrs[ABILITY_ATTR])
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.number < number and ABILITY_ATTR in t.user_attrs
        ]
        return sorted(trials)[-MAX_OBSERVED_TRIALS:]

    def _adaptive_round(
        self,
        resident: CandidateEvaluator,
        recipe: Recipe | MultiRecipe,
        fitness: Fitness,
        first: CandidateResult,
        genome: dict[str, float],
    ) -> CandidateResult:
        """The IRT estimator's second round: the items chosen from the anchors' answers,
        on the model as merged (an evaluator in another process, which may have been
        restarted since, merges the candidate again); both rounds in one report."""
        from mergestudio.evaluate.resident import CandidateResult

        tasks = fitness.second_round(first.report, genome)
        cancel = self.control.cancel_token
        evaluate_merged = getattr(resident, "evaluate_merged", None)
        if evaluate_merged is not None:
            second: CandidateResult = evaluate_merged(tasks, cancel=cancel)
        else:
            anchors = resident.tasks
            resident.tasks = list(tasks)
            try:
                second = resident.evaluate(recipe, cancel=cancel)
            finally:
                resident.tasks = anchors
        return CandidateResult(
            combine_rounds(first.report, second.report), first.merge_s + second.merge_s, first.eval_s + second.eval_s
        )

    def _current_fitness(self, study: optuna.Study, resident: CandidateEvaluator) -> Fitness:
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
        if budget.wall_time_s is not None and self._elapsed(study) >= budget.wall_time_s:
            return f"wall-time budget spent ({budget.wall_time_s:g} s)"
        return ""

    def _budget_claimed(self, study: optuna.Study) -> bool:
        """Complete and running trials fill the evaluation budget: nothing left to ask for."""
        from optuna.trial import TrialState

        evaluations = self.spec.budget.evaluations
        if evaluations is None:
            return False
        states = (TrialState.COMPLETE, TrialState.RUNNING)
        return len(study.get_trials(deepcopy=False, states=states)) >= evaluations

    def _claim(self, study: optuna.Study, number: int) -> bool:
        """Whether trial ``number`` (just asked for) is within the evaluation budget. The
        storage numbers trials in the order they were asked for, so counting the complete
        and running trials before this one decides the same for every worker: two workers
        that asked for the last slot at once never both run it."""
        from optuna.trial import TrialState

        evaluations = self.spec.budget.evaluations
        if evaluations is None:
            return True
        states = (TrialState.COMPLETE, TrialState.RUNNING)
        before = sum(1 for t in study.get_trials(deepcopy=False, states=states) if t.number < number)
        return before < evaluations

    def _fail_stale(self, study: optuna.Study) -> None:
        fail_stale(study, self.run_folder, self.events)

    def _elapsed(self, study: optuna.Study | None = None) -> float:
        if self.role is not None and study is not None:
            # Workers keep no clock: the controller's, in the study, is the run's.
            return float(study.user_attrs.get(ELAPSED_ATTR, 0.0))
        return self.elapsed_before + time.perf_counter() - self.session_start - self.paused_s

    def _save_elapsed(self, study: optuna.Study) -> None:
        if self.role is None:
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
        describe_study(study, self.spec, self.objectives, self.genome)

    def _announce(self, study: optuna.Study) -> None:
        emit(
            self.events,
            started_event(
                self.run_folder.path, self.spec, self.objectives, self.genome, self.resumed, self._complete_count(study)
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


def _ask_graded(resident: CandidateEvaluator, spec: SearchSpec) -> None:
    """An IRT run with ``graded: true`` has every item's graded score evaluated (the
    calibration trials' and baselines' on every item, each candidate's on the items it is
    asked). An evaluator without the setting (Ray's actors) gives none, and the
    calibration then fits on the answers alone."""
    if spec.fitness.estimator != "irt" or not spec.fitness.graded or not hasattr(resident, "graded"):
        return
    setattr(resident, "graded", True)  # noqa: B010 (the Protocol does not declare it)


@contextmanager
def _local_resident(
    template: str, tasks: Sequence[AnyTask], evaluation: EvaluationSpec, _control: SearchControl
) -> Iterator[CandidateEvaluator]:
    """Candidates evaluated in this process, on one loaded model, with the spec's threads."""
    from mergestudio.evaluate.resident import ResidentEvaluator

    with (
        torch_threads(evaluation.threads),
        ResidentEvaluator(
            template,
            tasks,
            batch_size=evaluation.batch_size,
            device=evaluation.device,
            dtype="float32",
            merge_threads=evaluation.threads,
        ) as resident,
    ):
        yield resident



def fail_stale(study: optuna.Study, run: RunFolder, events: EventSink | None) -> None:
    """Fail the trials of workers whose heartbeat stopped; each is queued again with its
    genome (the storage's callback, ``store._RequeueStale``) and the next free worker
    runs it. Any process on the run may call it: the storage lets one of them fail a
    trial, and only that one queues it again."""
    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # marked experimental
        fail_stale_trials(study)
    while run.requeued:
        dead, rerun = run.requeued.pop(0)
        log(events, f"trial {dead} lost its worker (no heartbeat); it runs again as trial {rerun}", "warning")


def describe_study(
    study: optuna.Study, spec: SearchSpec, objectives: Objectives, genome: Genome | StagedGenome
) -> None:
    """Attributes that make the study readable on its own (optuna-dashboard), and the
    evaluation budget its workers keep (``evolve --resume --evaluations`` changes it)."""
    if "objectives" not in study.user_attrs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names(list(objectives.study_names))
        study.set_user_attr("objectives", objectives.names)
        study.set_user_attr("genes", genome.names)
        study.set_user_attr("spec", spec.to_yaml())
    if study.user_attrs.get(BUDGET_ATTR) != spec.budget.evaluations:
        study.set_user_attr(BUDGET_ATTR, spec.budget.evaluations)


def started_event(
    run: Path,
    spec: SearchSpec,
    objectives: Objectives,
    genome: Genome | StagedGenome,
    resumed: bool,
    finished_before: int,
) -> SearchStarted:
    return SearchStarted(
        run=str(run),
        algorithm=spec.algorithm.name,
        seed=spec.algorithm.seed,
        population_size=spec.algorithm.population_size,
        genes=tuple(GeneInfo(g.name, g.low, g.high) for g in genome.genes),
        objectives=tuple(ObjectiveInfo(o.name, o.direction, o.task, o.metric) for o in objectives.items),
        study_objectives=tuple(objectives.study_names),
        budget_evaluations=spec.budget.evaluations,
        budget_wall_time_s=spec.budget.wall_time_s,
        resumed=resumed,
        finished_before=finished_before,
    )


class _Heartbeat:
    """Beats for one running trial while it runs (Optuna's RDB heartbeats): a worker
    killed mid-trial stops beating, and the others fail and re-run its trial once the
    storage's grace period has passed. Storages without heartbeats: nothing."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        # ``_storage``: a study's storage has no public accessor. Optuna wraps an RDB
        # storage in a cache that passes heartbeats on, so this asks for the methods of
        # its heartbeat interface rather than for a class.
        storage: Any = study._storage
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self._storage = storage
        self._interval = float(interval or 0)
        self._trial_id = trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> None:
        if not self._interval:
            return
        self._beat()  # at once: a trial without a heartbeat would never be seen as stale
        self._thread = threading.Thread(target=self._run, name="mergestudio-heartbeat", daemon=True)
        self._thread.start()

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._beat()

    def _beat(self) -> None:
        self._storage.record_heartbeat(self._trial_id)


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
