"""The search spec's schema: the pydantic models of a spec file and the words it uses
(lanes, directions, algorithms, metrics). Loading, path resolution and the checks that
need the recipe, the genome and the tasks live in ``search/spec.py``; the genome and the
objectives read only this module, so none of them imports the other back.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mergestudio.errors import MergeStudioError

Lane = str  # a lane of the model's family (attention, mlp, expert 3, cross-attention …) or "other"
Direction = Literal["maximize", "minimize"]
Algorithm = Literal["cmaes", "nsga2", "tpe", "random"]

# Metrics whose larger value is better; every other metric of mergestudio.evaluate
# (perplexity, nll_per_token, bits_per_byte) is minimised by default.
HIGHER_IS_BETTER = {"acc", "acc_norm", "exact_match"}
# irt_prior 'genome': the fewest calibration trials its regression is fitted on
# (irt.MIN_REGRESSION_POINTS; not imported, the schema stays free of numpy).
MIN_GENOME_PRIOR_TRIALS = 3
KNOWN_METRICS = HIGHER_IS_BETTER | {"perplexity", "nll_per_token", "bits_per_byte"}


class SpecError(MergeStudioError):
    """A search spec is malformed; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneSpec(_Strict):
    """One evolving recipe parameter.

    ``models``: the models it is evolved for (per-model parameters; default: every
    non-base model). ``layer_groups``: N values spread over the family's blocks (each
    stack's depth), interpolated between them (mergekit's gradient); an SD 1.5 UNet with
    26 groups has one gene per block (BASE, IN00 … OUT11). ``lanes``: separate values for
    lanes of the family (attention, mlp, norm, expert 3, cross-attention …; "other" is
    every lane not named); lanes left out keep the base recipe's value.
    """

    param: str
    low: float
    high: float
    models: list[str] | None = None
    layer_groups: int = Field(default=1, ge=1, le=64)
    lanes: list[Lane] | None = None
    stage: str | None = None  # multi-stage recipes: the stage it evolves (default: the final one)

    @model_validator(mode="after")
    def _check(self) -> GeneSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.lanes is not None and (not self.lanes or len(set(self.lanes)) != len(self.lanes)):
            raise ValueError("lanes must list lanes of the model's family (or other), each at most once")
        return self


class LmEvalSpec(_Strict):
    """A task of lm-evaluation-harness run on the resident candidate
    (``evaluate/lm_eval_adapter.py``). ``task``: a task name lm-eval knows, or one defined by
    a YAML file in ``include_path`` (a folder, relative to the spec). ``metric`` and
    ``filter`` pick the number from lm-eval's results (``acc,none``). ``limit``: the first N
    documents. ``evaluate_args``: further keyword arguments of ``lm_eval.simple_evaluate``
    (``gen_kwargs``, ``fewshot_random_seed``, ``system_instruction`` …)."""

    task: str
    metric: str = "acc"
    filter: str = "none"
    limit: int | None = Field(default=None, ge=1)
    num_fewshot: int | None = Field(default=None, ge=0)
    include_path: str | None = None
    evaluate_args: dict[str, Any] = Field(default_factory=dict)


class ObjectiveSpec(_Strict):
    """A metric of ``mergestudio.evaluate`` on one task file, or of an lm-evaluation-harness
    task (``lm_eval``; then ``task`` is left out)."""

    task: str = ""
    lm_eval: LmEvalSpec | None = None
    name: str | None = None  # default: the task's name
    metric: str | None = None  # default: the task kind's headline metric
    direction: Direction | None = None  # default: from the metric
    weight: float = 1.0  # in the weighted score, when there is one
    reference: float | None = None  # hypervolume reference on this axis (default: worst seen)
    # A held-out file of the same task that the search never reads: the report re-scores
    # the front on it (``search.report.rescore_front``), so what the search selected on
    # (``task``, a dev split) is not what it reports.
    test: str | None = None
    # The model whose score on this objective normalized accuracy divides by: one of the
    # recipe's fine-tuned models (its reference or folder name). Default: the parent that
    # scores highest on it.
    specialist: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        if bool(self.task) == (self.lm_eval is not None):
            raise ValueError("give either task (a task file) or lm_eval (an lm-evaluation-harness task)")
        if self.lm_eval is not None and self.test is not None:
            raise ValueError("test (a held-out task file) applies to task files, not to lm_eval tasks")
        return self


class ScoreSpec(_Strict):
    """Optimise one weighted score instead of every objective: the sum of weight times
    value, a value counted negatively when its direction is opposite to the score's."""

    name: str = "score"
    direction: Direction = "maximize"
    reference: float | None = None


class AlgorithmSpec(_Strict):
    name: Algorithm
    population_size: int = Field(default=8, ge=2, le=10_000)
    seed: int = 0
    sigma0: float | None = Field(default=None, gt=0)  # CMA-ES step size, in gene units


class BudgetSpec(_Strict):
    evaluations: int | None = Field(default=None, ge=1)
    wall_time_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        if self.evaluations is None and self.wall_time_s is None:
            raise ValueError("give evaluations, wall_time_s, or both")
        return self


class FitnessSpec(_Strict):
    """``full``: every item of every task; ``subset``: a fixed random ``items_per_task``
    items of each task (the same items for every candidate); ``irt``: ``anchors_per_task``
    × the number of tasks anchor items in all, shared among the tasks by how much their
    answers vary (each task gets at least half of ``anchors_per_task``), chosen and
    weighted by an item response model fitted on the
    baselines' answers to every item (and on the run's first ``calibration_trials``
    candidates, scored in full), with each task's accuracy estimated from the anchors'
    answers by ``irt_estimate`` (``search/irt.py``). ``irt_prior``: a candidate's
    ability prior, the calibration models' population or predicted from its genome by
    a regression on the calibration trials (``genome``, which needs at least 3 of them;
    ``auto``, the default: ``genome`` when there are, else ``population``);
    ``prior_from_trials`` (default): the genome prior also learns from every earlier
    estimated trial of the run (its genome and estimated ability, as a noisier point).
    ``adaptive`` (default): half of each task's items (rounded up) are fixed anchors,
    the rest are chosen per candidate after it answered them, for the most information
    at the ability they show; ``false`` asks anchors only. ``graded`` (default): every asked item
    is also scored by its reference answer's log-probability (one teacher-forced pass;
    multiple-choice items have it free), which places the candidate's ability better
    than right/wrong alone; the calibration models give every item's (a task
    without them, such as an lm-eval task, uses its answers alone). The calibration is kept in the run folder (``calibration.json``),
    so a resumed run estimates exactly as before."""

    estimator: Literal["full", "subset", "irt"] = "full"
    items_per_task: int | None = Field(default=None, ge=1)
    anchors_per_task: int | None = Field(default=None, ge=1)
    irt_estimate: Literal["gp-irt", "p-irt", "anchor"] = "gp-irt"
    calibration_trials: int = Field(default=0, ge=0)
    irt_prior: Literal["auto", "population", "genome"] = "auto"
    prior_from_trials: bool = True
    adaptive: bool = True
    graded: bool = True
    seed: int = 0

    @property
    def genome_prior(self) -> bool:
        """Whether an IRT run's ability prior comes from the genome regression."""
        if self.irt_prior == "auto":
            return self.calibration_trials >= MIN_GENOME_PRIOR_TRIALS
        return self.irt_prior == "genome"

    @model_validator(mode="after")
    def _check(self) -> FitnessSpec:
        if self.estimator == "subset" and self.items_per_task is None:
            raise ValueError("estimator 'subset' needs items_per_task")
        if self.estimator == "irt" and self.anchors_per_task is None:
            raise ValueError("estimator 'irt' needs anchors_per_task")
        if self.estimator == "irt" and self.irt_prior == "genome" and self.calibration_trials < MIN_GENOME_PRIOR_TRIALS:
            raise ValueError(
                f"irt_prior 'genome' is fitted on the calibration trials' genomes: "
                f"calibration_trials must be at least {MIN_GENOME_PRIOR_TRIALS} (got {self.calibration_trials})"
            )
        return self


class EvaluationSpec(_Strict):
    batch_size: int = Field(default=32, ge=1)
    device: str = "cpu"
    threads: int = Field(default=1, ge=1)  # torch threads: fixed, so scores repeat exactly


class SearchSpec(_Strict):
    name: str | None = None
    recipe: dict[str, Any] | list[dict[str, Any]] | str  # a list: the stages of a multi-stage recipe
    genome: list[GeneSpec] = Field(min_length=1)
    objectives: list[ObjectiveSpec] = Field(min_length=1)
    score: ScoreSpec | None = None
    algorithm: AlgorithmSpec
    budget: BudgetSpec
    fitness: FitnessSpec = Field(default_factory=FitnessSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)
