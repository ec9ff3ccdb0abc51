"""Objectives: which numbers of an evaluation report a search optimises.

Each objective is a metric of one task. The study optimises either every objective (a
multi-objective search) or one weighted score of them. The fitness estimator may keep a
fixed random subset of each task's items: the same items for every candidate, so
candidates stay comparable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mergestudio.search.schema import (
    HIGHER_IS_BETTER,
    Direction,
    FitnessSpec,
    ObjectiveSpec,
    SearchSpec,
    SpecError,
)

if TYPE_CHECKING:
    from mergestudio.evaluate.lm_eval_adapter import LmEvalTask
    from mergestudio.evaluate.results import EvalReport
    from mergestudio.evaluate.tasks import Task


# Metrics whose per-item scores are right (1.0) or wrong (0.0): what an IRT model fits.
IRT_METRICS = frozenset({"acc", "exact_match"})


@dataclass(frozen=True)
class Objective:
    name: str
    task: str  # the task's name in evaluation reports
    metric: str
    direction: Direction
    weight: float
    reference: float | None
    specialist: str | None = None  # the model normalized accuracy divides by (spec), if named

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


@dataclass(frozen=True)
class Objectives:
    """The objectives, the tasks they are measured on, and what the study optimises."""

    items: tuple[Objective, ...]
    tasks: tuple[Task | LmEvalTask, ...]  # after the fitness estimator's subsetting
    score_name: str | None  # set when the objectives are combined into one score
    score_direction: Direction
    score_reference: float | None

    @classmethod
    def build(cls, spec: SearchSpec, source: str = "search spec") -> Objectives:
        from mergestudio.evaluate.results import PRIMARY_METRIC
        from mergestudio.evaluate.tasks import TaskFormatError, load_task

        tasks: dict[str, Task | LmEvalTask] = {}
        objectives = []
        for i, entry in enumerate(spec.objectives):
            if entry.lm_eval is not None:
                objectives.append(_lm_eval_objective(entry, i, source, tasks))
                continue
            try:
                task = load_task(entry.task)
            except TaskFormatError as error:
                raise SpecError(f"{source}: objectives[{i}].task: {error}") from None
            tasks.setdefault(task.name, task)
            metric = entry.metric or PRIMARY_METRIC[task.kind][0]
            if metric not in _metrics_of(task.kind):
                raise SpecError(
                    f"{source}: objectives[{i}].metric: a {task.kind} task has no metric {metric!r}; "
                    f"it has {', '.join(_metrics_of(task.kind))}"
                )
            direction = entry.direction or ("maximize" if metric in HIGHER_IS_BETTER else "minimize")
            name = entry.name or (task.name if entry.metric is None else f"{task.name}.{metric}")
            objectives.append(
                Objective(name, task.name, metric, direction, entry.weight, entry.reference, entry.specialist)
            )
            if spec.fitness.estimator == "irt" and metric not in IRT_METRICS:
                raise SpecError(
                    f"{source}: objectives[{i}].metric: estimator 'irt' needs right/wrong items "
                    f"({', '.join(sorted(IRT_METRICS))}); {metric!r} is not one"
                )
        names = [o.name for o in objectives]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise SpecError(
                f"{source}: objectives: two objectives are named {duplicate!r}; give each a 'name'"
            )
        chosen = tuple(_estimator_subset(t, spec.fitness) for t in tasks.values())
        score = spec.score
        return cls(
            tuple(objectives),
            chosen,
            score.name if score else None,
            score.direction if score else "maximize",
            score.reference if score else None,
        )

    # ---- what the study sees ---------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.items]

    @property
    def study_names(self) -> list[str]:
        return [self.score_name] if self.score_name else self.names

    @property
    def directions(self) -> list[Direction]:
        return [self.score_direction] if self.score_name else [o.direction for o in self.items]

    @property
    def references(self) -> list[float | None]:
        return [self.score_reference] if self.score_name else [o.reference for o in self.items]

    def values(self, report: EvalReport) -> dict[str, float]:
        """Every objective's value in ``report``, by objective name."""
        return {o.name: float(report.task(o.task).metrics[o.metric]) for o in self.items}

    def study_values(self, values: dict[str, float]) -> list[float]:
        """What the study is told: each objective, or the weighted score."""
        if self.score_name is None:
            return [values[o.name] for o in self.items]
        score = 0.0
        for o in self.items:
            sign = 1.0 if o.direction == self.score_direction else -1.0
            score += sign * o.weight * values[o.name]
        return [score]


def _lm_eval_objective(
    entry: ObjectiveSpec, index: int, source: str, tasks: dict[str, Task | LmEvalTask]
) -> Objective:
    """An objective on an lm-evaluation-harness task (loaded to count its documents and
    check its metric; lm-eval itself says whether the metric is better higher)."""
    from mergestudio.evaluate.lm_eval_adapter import LmEvalError, LmEvalTask, check_evaluate_args

    spec = entry.lm_eval
    assert spec is not None
    name = entry.name or spec.task
    try:
        check_evaluate_args(spec)
        task = LmEvalTask.load(spec, name)
    except LmEvalError as error:
        raise SpecError(f"{source}: objectives[{index}].lm_eval: {error}") from None
    if name in tasks:
        raise SpecError(f"{source}: objectives[{index}]: two objectives are named {name!r}; give each a 'name'")
    tasks[name] = task
    direction = entry.direction or ("maximize" if task.higher_is_better else "minimize")
    return Objective(name, name, spec.metric, direction, entry.weight, entry.reference, entry.specialist)


def _metrics_of(kind: str) -> tuple[str, ...]:
    return {
        "multiple_choice": ("acc", "acc_norm"),
        "generation": ("exact_match",),
        "perplexity": ("perplexity", "nll_per_token", "bits_per_byte"),
    }[kind]


def _estimator_subset(task: Task | LmEvalTask, fitness: FitnessSpec) -> Task | LmEvalTask:
    """The task's items the fitness estimator uses: all, or a fixed random subset (kept
    in file order) drawn from a generator seeded by the spec and the task name."""
    if fitness.estimator != "subset" or fitness.items_per_task is None:
        return task  # full, or irt: its anchors are chosen at calibration (search/fitness.py)
    if fitness.items_per_task >= len(task.items):
        return task
    from mergestudio.evaluate.evaluator import task_items_subset

    rng = random.Random(f"{fitness.seed}:{task.name}")
    keep = sorted(rng.sample(range(len(task.items)), fitness.items_per_task))
    return task_items_subset(task, set(keep))
