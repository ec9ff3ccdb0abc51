"""The fitness estimator of a run: which items each candidate is scored on, and how its
objective values are read from that evaluation.

``full`` and ``subset`` read the metrics of the evaluated items as they are. ``irt``
scores each candidate on a few anchor items per task and estimates each task's accuracy
(``search/irt.py``). Its calibration is fitted once per run on every item's answers of

- the baselines (parents and default merges), scored on the full tasks, and
- the run's first ``calibration_trials`` candidates, which the search scores in full
  (their values are exact, not estimates).

The ``anchors_per_task × tasks`` anchors are shared among the tasks by how much the
calibration models' answers vary on each (``irt.calibrate_tasks``). Two options spend
them better: ``irt_prior: genome`` gives each candidate an ability prior predicted from
its genome (a regression fitted on the calibration trials), and ``adaptive: true`` asks
half of each task's items as fixed anchors and the other half in a second round on the
same merged model, chosen for the ability the first round showed (``Fitness.second_round``). The calibration is
saved as ``calibration.json`` in the run folder, keyed by what decides it (models,
objectives, estimator settings). A resumed run, an export or a report reads it back
instead of fitting again, so every trial of a run is estimated the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mergestudio.events import CancelToken, EventSink, log
from mergestudio.search.irt import CalibrationError, Observation, TaskCalibration, calibrate_tasks
from mergestudio.search.objectives import Objectives
from mergestudio.search.schema import SearchSpec
from mergestudio.search.store import RunFolder, write_atomic

if TYPE_CHECKING:
    from mergestudio.evaluate.evaluator import AnyTask
    from mergestudio.evaluate.resident import CandidateEvaluator
    from mergestudio.evaluate.results import EvalReport

CALIBRATION_FILE = "calibration.json"
# What ``TaskCalibration.ability``/``estimates`` take, in order: anchors' answers, genome,
# adaptive items' answers, earlier trials, anchors' graded scores, adaptive items' graded scores.
Rounds = tuple[
    list[float],
    Mapping[str, float] | None,
    list[float] | None,
    Sequence[Observation],
    list[float] | None,
    list[float] | None,
]
# A trial's estimated ability per task ({task: [θ, variance]}), kept in the study so later
# trials' genome prior can learn from it (``Fitness.observing``).
ABILITY_ATTR = "irt_ability"
# The genome prior learns from at most this many earlier trials (the latest): its solve
# grows with the cube of the points.
MAX_OBSERVED_TRIALS = 400


@dataclass(frozen=True)
class Calibration:
    """A run's IRT calibration: one ``TaskCalibration`` per task, the models it was
    fitted on, and the key of the spec settings it belongs to."""

    key: str
    estimate: str  # gp-irt, p-irt or anchor
    subjects: tuple[str, ...]  # baseline labels, then "trial N" for calibration trials
    tasks: dict[str, TaskCalibration]

    @property
    def items_per_candidate(self) -> int:
        return sum(t.items_per_candidate for t in self.tasks.values())

    @property
    def anchors_by_task(self) -> dict[str, int]:
        """Items asked per task (anchors and adaptive items)."""
        return {name: t.items_per_candidate for name, t in self.tasks.items()}

    @property
    def adaptive(self) -> bool:
        return any(t.adaptive_items for t in self.tasks.values())

    @property
    def genome_prior(self) -> bool:
        return any(t.regression is not None for t in self.tasks.values())

    @property
    def graded(self) -> bool:
        return any(t.graded is not None for t in self.tasks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "estimate": self.estimate,
            "subjects": list(self.subjects),
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            key=str(data["key"]),
            estimate=str(data["estimate"]),
            subjects=tuple(str(s) for s in data["subjects"]),
            tasks={str(n): TaskCalibration.from_dict(t) for n, t in data["tasks"].items()},
        )


@dataclass(frozen=True)
class Fitness:
    """What the search evaluates each candidate on (``tasks``) and how it reads the
    objectives from that report. ``calibration`` is set once an IRT run is calibrated;
    before that (``calibrating``) candidates are scored in full."""

    label: str
    tasks: tuple[AnyTask, ...]  # what every candidate is scored on first (IRT: the anchors)
    calibration: Calibration | None = None
    calibrating: bool = False
    full_items: int = field(default=0)
    full_tasks: tuple[AnyTask, ...] = ()  # every item: where the adaptive round picks from
    # The genome prior learns from earlier trials' estimated abilities (``observing``).
    learns_from_trials: bool = False
    observed: Mapping[str, tuple[Observation, ...]] = field(default_factory=dict)
    observed_trials: tuple[int, ...] = ()

    def observing(self, trials: Sequence[tuple[int, Mapping[str, float], Mapping[str, Sequence[float]]]]) -> Fitness:
        """This estimator for one trial, its genome prior learning from ``trials``: the
        (number, genome, {task: [θ, variance]}) of earlier estimated trials."""
        from dataclasses import replace

        if not self.learns_from_trials or self.calibration is None:
            return self
        observed = {
            task: tuple((genome, float(ability[task][0]), float(ability[task][1])) for _, genome, ability in trials)
            for task in self.calibration.tasks
        }
        return replace(self, observed=observed, observed_trials=tuple(number for number, _, _ in trials))

    def abilities(self, report: EvalReport, genome: Mapping[str, float] | None = None) -> dict[str, list[float]]:
        """The candidate's estimated ability per task: [θ, variance] (empty without a
        calibration); what later trials' genome prior learns from."""
        if self.calibration is None:
            return {}
        out = {}
        for name, task in self.calibration.tasks.items():
            rounds = self._rounds(report, task, genome)
            _, _, theta, variance = task.ability(*rounds)
            out[name] = [round(theta, 6), round(variance, 6)]
        return out

    def _rounds(self, report: EvalReport, task: TaskCalibration, genome: Mapping[str, float] | None) -> Rounds:
        """What the task's estimate reads from the report, as ``TaskCalibration.ability``
        takes it: the anchors' answers, the genome, the adaptive items' answers, the
        earlier trials, and (graded calibration) both rounds' graded scores."""
        observed = self.observed.get(task.task, ())
        first = _answers(report, task, task.anchor_ids)
        first_scores = _graded(report, task, task.anchor_ids) if task.graded is not None else None
        if not task.adaptive_items:
            return first, genome, None, observed, first_scores, None
        extra = [task.item_ids[i] for i in task.second_round(first, genome, observed, first_scores)]
        second_scores = _graded(report, task, extra) if task.graded is not None else None
        return first, genome, _answers(report, task, extra), observed, first_scores, second_scores

    @property
    def items_per_candidate(self) -> int:
        if self.calibration is not None:
            return self.calibration.items_per_candidate
        return sum(len(t.items) for t in self.tasks)

    @property
    def adaptive(self) -> bool:
        return self.calibration is not None and self.calibration.adaptive

    def second_round(self, report: EvalReport, genome: Mapping[str, float] | None = None) -> tuple[AnyTask, ...]:
        """The adaptive round's tasks: each cut to the items with the most information at
        the ability the anchors' answers in ``report`` show (none without it)."""
        from mergestudio.evaluate.evaluator import task_items_subset

        if self.calibration is None or not self.adaptive:
            return ()
        out = []
        for task in self.full_tasks:
            chosen = self.calibration.tasks[task.name]
            first = _answers(report, chosen, chosen.anchor_ids)
            scores = _graded(report, chosen, chosen.anchor_ids) if chosen.graded is not None else None
            extra = chosen.second_round(first, genome, self.observed.get(task.name, ()), scores)
            if extra:
                out.append(task_items_subset(task, set(extra)))
        return tuple(out)

    def values(
        self, objectives: Objectives, report: EvalReport, genome: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Each objective's value: the report's metric, or the IRT estimate of it
        (``genome``: the candidate's, for the genome prior)."""
        if self.calibration is None:
            return objectives.values(report)
        estimates = self.estimates(report, genome)
        return {o.name: estimates[o.task][self.calibration.estimate] for o in objectives.items}

    def estimates(
        self, report: EvalReport, genome: Mapping[str, float] | None = None
    ) -> dict[str, dict[str, float]]:
        """Every IRT estimate of every task from the report's answers to the anchors and
        the adaptive round's items (empty without a calibration)."""
        if self.calibration is None:
            return {}
        out = {}
        for name, task in self.calibration.tasks.items():
            estimates = task.estimates(*self._rounds(report, task, genome))
            out[name] = {str(k): round(v, 6) for k, v in estimates.items()}
        return out

    def details(self, report: EvalReport, genome: Mapping[str, float] | None = None) -> dict[str, Any]:
        """What a trial's items file records about how it was scored."""
        data: dict[str, Any] = {"estimator": self.label, "items": self.items_per_candidate}
        if self.calibration is not None:
            data["estimates"] = self.estimates(report, genome)
            data["abilities"] = self.abilities(report, genome)
            if self.adaptive:
                data["adaptive_items"] = {
                    t.name: [item.id for item in t.items] for t in self.second_round(report, genome)
                }
            if self.learns_from_trials:
                data["prior_trials"] = list(self.observed_trials)
            if self.calibration.graded:  # θ placed by the asked items' graded scores too
                data["graded_scores"] = True
        return data


def _answers(report: EvalReport, task: TaskCalibration, ids: Sequence[str]) -> list[float]:
    scores = {item.id: item.score for item in report.task(task.task).items}
    missing = [i for i in ids if i not in scores]
    if missing:
        raise CalibrationError(f"task {task.task!r}: item {missing[0]!r} was not evaluated")
    return [scores[i] for i in ids]


def _graded(report: EvalReport, task: TaskCalibration, ids: Sequence[str]) -> list[float]:
    """The report's graded scores of items ``ids``, for a calibration that uses them."""
    scores = {item.id: item.graded for item in report.task(task.task).items}
    for i in ids:
        if scores.get(i) is None:
            raise CalibrationError(
                f"task {task.task!r}: item {i!r} has no graded score (the calibration uses graded scores)"
            )
    return [float(scores[i]) for i in ids]  # type: ignore[arg-type]  # None ruled out above


def combine_rounds(first: EvalReport, second: EvalReport) -> EvalReport:
    """One report of a candidate's two rounds: each task's items of both, its metrics the
    item-weighted means (right/wrong metrics, which is all an IRT run allows)."""
    from dataclasses import replace

    extra = {t.task: t for t in second.tasks}
    tasks = []
    for task in first.tasks:
        more = extra.get(task.task)
        if more is None:
            tasks.append(task)
            continue
        n, m = len(task.items), len(more.items)
        metrics = {k: (v * n + more.metrics.get(k, v) * m) / (n + m) for k, v in task.metrics.items()}
        tasks.append(
            replace(task, items=task.items + more.items, metrics=metrics, elapsed_s=task.elapsed_s + more.elapsed_s)
        )
    return replace(first, tasks=tuple(tasks), elapsed_s=first.elapsed_s + second.elapsed_s)


def fitness_label(spec: SearchSpec, calibration: Calibration | None = None, items: int | None = None) -> str:
    """The estimator in words, as the CLI and the Evolve page show it."""
    f = spec.fitness
    if f.estimator == "irt":
        assert f.anchors_per_task is not None  # the schema's check
        # A run's calibration decides (one made before these options has neither).
        genome_prior = calibration.genome_prior if calibration is not None else f.genome_prior
        adaptive = calibration.adaptive if calibration is not None else f.adaptive
        text = f"IRT {f.irt_estimate}"
        if genome_prior:
            text += ", genome prior" + (" (calibration and earlier trials)" if f.prior_from_trials else "")
        if calibration.graded if calibration is not None else f.graded:
            text += ", graded scores"
        first = (f.anchors_per_task + 1) // 2
        if adaptive and f.anchors_per_task > first:
            text += f", {first} + {f.anchors_per_task - first} adaptive items per task"
        else:
            text += f", {f.anchors_per_task} anchors per task"
        if calibration is not None:
            text += f" ({calibration.items_per_candidate} items per candidate, {len(calibration.subjects)} calibration models)"
            counts = calibration.anchors_by_task
            if len(set(counts.values())) > 1:  # shared out by how much the answers vary
                text += ", by task: " + ", ".join(f"{name} {n}" for name, n in counts.items())
        else:
            text += " (calibrating: candidates scored in full)"
        return text
    if f.estimator == "subset":
        return f"subset: {f.items_per_task} items per task (seed {f.seed})" + (
            f", {items} items per candidate" if items else ""
        )
    return "full task sets" + (f", {items} items per candidate" if items else "")


def run_fitness_label(run_dir: str | Path | None, spec: SearchSpec) -> str:
    """The run's estimator in words with what a candidate costs, read from the run folder
    (its calibration, once fitted) without loading any task: for the Evolve page."""
    f = spec.fitness
    calibration = None
    if f.estimator == "irt" and run_dir is not None:
        try:
            calibration = load_calibration(run_dir, spec)
        except CalibrationError:
            calibration = None
    tasks = len({o.lm_eval.task if o.lm_eval else o.task for o in spec.objectives})
    if f.estimator == "subset":
        return fitness_label(spec) + f", at most {(f.items_per_task or 0) * tasks} items per candidate"
    if f.estimator == "full":
        return f"full task sets: every item of {tasks} task(s) per candidate"
    return fitness_label(spec, calibration)


def calibration_key(spec: SearchSpec) -> str:
    """What decides a calibration: the models, the objectives' tasks, the estimator settings
    and the evaluation settings (not the genome, algorithm or budget)."""
    # Defaults left out: a later version adding a defaulted spec key keeps old runs' key.
    data = spec.model_dump(
        mode="json", include={"recipe", "objectives", "fitness", "evaluation"}, exclude_defaults=True
    )
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_calibration(run_dir: str | Path, spec: SearchSpec) -> Calibration | None:
    """The run's saved calibration, or None when there is none or it belongs to other
    settings. A file that cannot be read is an error, not a silent refit: the run's
    earlier estimates were made with it."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CalibrationError(
            f"{path}: unreadable IRT calibration ({type(error).__name__}: {error})"
        ) from None
    return calibration if calibration.key == calibration_key(spec) else None


def save_calibration(run_dir: str | Path, calibration: Calibration) -> Path:
    path = Path(run_dir) / CALIBRATION_FILE
    write_atomic(path, json.dumps(calibration.to_dict(), indent=1) + "\n")
    return path


def prepare_fitness(
    run: RunFolder,
    spec: SearchSpec,
    objectives: Objectives,
    complete_trials: Sequence[int],
    resident: CandidateEvaluator | None = None,
    *,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> Fitness:
    """The run's fitness estimator now. For ``irt``: the saved calibration; else, while
    fewer than ``calibration_trials`` candidates are complete, scoring in full; else a
    calibration fitted now (scoring the baselines with ``resident`` when the run folder has
    no answers of theirs) and saved."""
    full_items = sum(len(t.items) for t in objectives.tasks)
    if spec.fitness.estimator != "irt":
        return Fitness(fitness_label(spec), objectives.tasks, full_items=full_items)
    calibration = load_calibration(run.path, spec)
    if calibration is None:
        if len(complete_trials) < spec.fitness.calibration_trials:
            return Fitness(fitness_label(spec), objectives.tasks, calibrating=True, full_items=full_items)
        calibration = calibrate(
            run, spec, objectives, complete_trials, resident, events=events, cancel=cancel
        )
        save_calibration(run.path, calibration)
        log(events, f"IRT calibration: {fitness_label(spec, calibration)}")
    return Fitness(
        fitness_label(spec, calibration),
        anchor_tasks(objectives.tasks, calibration),
        calibration,
        full_items=full_items,
        full_tasks=tuple(objectives.tasks),
        learns_from_trials=calibration.genome_prior and spec.fitness.prior_from_trials,
    )


def anchor_tasks(tasks: Sequence[AnyTask], calibration: Calibration) -> tuple[AnyTask, ...]:
    """Each task cut to its anchor items (in file order)."""
    from mergestudio.evaluate.evaluator import task_items_subset

    out = []
    for task in tasks:
        chosen = calibration.tasks.get(task.name)
        if chosen is None:
            raise CalibrationError(
                f"the IRT calibration has no task {task.name!r}; it was fitted for other tasks"
            )
        if tuple(i.id for i in task.items) != chosen.item_ids:
            raise CalibrationError(
                f"task {task.name!r} ({task.source}) changed since the IRT calibration: its items differ"
            )
        out.append(task_items_subset(task, set(chosen.anchors.indices)))
    return tuple(out)


def calibrate(
    run: RunFolder,
    spec: SearchSpec,
    objectives: Objectives,
    complete_trials: Sequence[int],
    resident: CandidateEvaluator | None,
    *,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> Calibration:
    """Fit every task on the baselines' answers and the complete trials' (all scored in
    full), and choose its anchors."""
    fitness = spec.fitness
    subjects, rows, graded_rows = _baseline_answers(run, spec, objectives, resident, events, cancel)
    # The genome prior regresses on the models with a genome: the calibration trials.
    genomes: list[dict[str, float] | None] = [None] * len(subjects)
    for number in complete_trials:
        items = run.read_items(number)
        report = items.get("report", {})
        answers = {t["task"]: [float(i["score"]) for i in t["items"]] for t in report.get("tasks", [])}
        subjects.append(f"trial {number}")
        rows.append(answers)
        graded_rows.append(
            {
                t["task"]: [float(i["graded"]) for i in t["items"] if i.get("graded") is not None]
                for t in report.get("tasks", [])
            }
        )
        genomes.append({str(k): float(v) for k, v in items.get("genome", {}).items()})
    assert fitness.anchors_per_task is not None  # the schema's check
    answers_by_task: dict[str, tuple[list[str], np.ndarray]] = {}
    graded_by_task: dict[str, np.ndarray] = {}
    for task in objectives.tasks:
        ids = [i.id for i in task.items]
        answers_by_task[task.name] = (ids, _matrix(subjects, rows, task.name, len(ids), "answer"))
        # Graded scores where every calibration model has them; a task without (an
        # lm-eval task, or an evaluator that gives none, such as Ray's) uses its answers alone.
        if fitness.graded and all(len(r.get(task.name, [])) == len(ids) for r in graded_rows):
            graded_by_task[task.name] = _matrix(subjects, graded_rows, task.name, len(ids), "graded score")
    genes = None
    if fitness.genome_prior:
        from mergestudio.search.spec import build_genome

        genes = [(g.name, g.low, g.high) for g in build_genome(spec).genes]
    tasks = calibrate_tasks(
        answers_by_task,
        fitness.anchors_per_task,
        seed=fitness.seed,
        adaptive=fitness.adaptive,
        genes=genes,
        genomes=genomes,
        graded=graded_by_task if fitness.graded else None,
    )
    return Calibration(calibration_key(spec), fitness.irt_estimate, tuple(subjects), tasks)


def _matrix(
    subjects: Sequence[str], rows: Sequence[Mapping[str, Sequence[float]]], task: str, items: int, what: str
) -> np.ndarray:
    """(subjects × items) of one task's values, every calibration model having all."""
    matrix = []
    for subject, values in zip(subjects, rows, strict=True):
        if len(values.get(task, [])) != items:
            raise CalibrationError(f"IRT calibration: {subject} has no {what} for every item of task {task!r}")
        matrix.append(values[task])
    return np.asarray(matrix, dtype=np.float64)


def _baseline_answers(
    run: RunFolder,
    spec: SearchSpec,
    objectives: Objectives,
    resident: CandidateEvaluator | None,
    events: EventSink | None,
    cancel: CancelToken | None,
) -> tuple[list[str], list[dict[str, list[float]]], list[dict[str, list[float]]]]:
    """The baselines' labels and answers: from ``baselines.json`` when it has them (the
    window scores the baselines before the search starts), else scored now with the
    search's own resident evaluator (on the full tasks) and saved there."""
    from mergestudio.search.baselines import compute_baselines, load_baselines, save_baselines

    names = {t.name for t in objectives.tasks}
    cached = load_baselines(run.path, spec)
    graded = spec.fitness.graded
    # Baselines scored before graded scores existed are scored again, once (the file then has them).
    if cached is None or any(not names <= set(b.responses) or (graded and not b.graded) for b in cached):
        log(events, "IRT calibration: scoring the baselines on every item")
        cached = compute_baselines(spec, events=events, cancel=cancel, resident=resident)
        save_baselines(run.path, spec, cached)
    return [b.label for b in cached], [dict(b.responses) for b in cached], [dict(b.graded) for b in cached]
