"""Events of a search, as plain data: everything the live plots draw.

A search sends them through the ``mergestudio.events`` sink, in this order: one
``SearchStarted``; ``TrialFinished`` for every trial already in the run (``replayed``
True, on resume) so plots can redraw the history; then per trial ``TrialStarted``,
``TrialFinished`` and, when they change, ``ParetoFrontChanged``; a
``GenerationFinished`` after every ``population_size`` finished trials; and
``SearchStateChanged`` whenever the search pauses, resumes, stops or ends. Whoever
follows a run's study rather than running it (``search.follow``) sends the same events,
and ``WorkersChanged`` when the running trials change hands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SearchState = Literal["running", "paused", "stopping", "finished", "stopped", "failed"]


@dataclass(frozen=True)
class GeneInfo:
    name: str
    low: float
    high: float


@dataclass(frozen=True)
class ObjectiveInfo:
    name: str
    direction: Literal["maximize", "minimize"]
    task: str
    metric: str


@dataclass(frozen=True)
class SearchStarted:
    run: str
    algorithm: str
    seed: int
    population_size: int
    genes: tuple[GeneInfo, ...]
    objectives: tuple[ObjectiveInfo, ...]
    study_objectives: tuple[str, ...]  # what the optimiser sees: the objectives or the score
    budget_evaluations: int | None
    budget_wall_time_s: float | None
    resumed: bool
    finished_before: int  # complete trials already in the run


@dataclass(frozen=True)
class TrialStarted:
    number: int
    genome: dict[str, float]
    generation: int


@dataclass(frozen=True)
class TrialFinished:
    """``objectives``: every objective by name; ``study_values``: what the optimiser was
    told (the objectives in order, or the one weighted score). ``state`` is "failed"
    when merging or evaluating raised; ``error`` says why."""

    number: int
    genome: dict[str, float]
    objectives: dict[str, float]
    study_values: tuple[float, ...]
    duration_s: float
    merge_s: float
    eval_s: float
    generation: int
    is_on_front: bool
    state: Literal["complete", "failed"] = "complete"
    error: str = ""
    replayed: bool = False


@dataclass(frozen=True)
class ObjectiveStats:
    min: float
    max: float
    mean: float
    best: float  # best in this generation, by the objective's direction


@dataclass(frozen=True)
class GenerationFinished:
    """Population statistics of one generation (``population_size`` finished trials),
    per objective, and the best so far over the whole run."""

    generation: int
    trials: tuple[int, ...]
    stats: dict[str, ObjectiveStats]
    best_so_far: dict[str, float]


@dataclass(frozen=True)
class ParetoFrontChanged:
    """The non-dominated trials (in the optimiser's objectives) and the hypervolume they
    dominate up to ``reference`` (in objective units; worst seen unless the spec gives one)."""

    trials: tuple[int, ...]
    points: tuple[tuple[float, ...], ...]  # study values of those trials, same order
    hypervolume: float
    reference: tuple[float, ...]
    objectives: tuple[str, ...]


@dataclass(frozen=True)
class SearchStateChanged:
    state: SearchState
    reason: str = ""
    finished_trials: int = 0
    elapsed_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerActivity:
    """One worker and the trial it runs now (``trial`` None: between trials)."""

    name: str
    trial: int | None
    since: float  # Unix time the trial started


@dataclass(frozen=True)
class WorkersChanged:
    """The workers running trials of a run, as its study shows them (sent by whoever
    follows the study: the controller of local workers, a window attached to a run)."""

    workers: tuple[WorkerActivity, ...]
