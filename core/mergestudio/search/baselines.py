"""Reference points for a search: the parents and the default merges, scored the way the
search scores its candidates, and trials re-scored on the full task sets.

A search's fitness estimator may use a subset of each task's items, so the zoo's
published table (full evaluation split) is not comparable with its trials. Baselines are
therefore evaluated on the run's own tasks, subset and settings, with the same resident
evaluator, and cached in the run folder (``baselines.json``) so reopening a run is
instant. ``evaluate_full`` re-scores one trial on every item (``full_eval.json``).

The default merges are those of the demo zoo's table, over the recipe's own models:
linear (weight 1 each, normalised), task arithmetic (weight 1 each, λ = 1) and TIES
(weight 1, density 0.5); the last two only when the recipe has a base model.

Every baseline also carries its scores against the run's references: Δ vs the base
model and **normalized accuracy** (÷ each objective's specialist, the parent scoring
highest on it, unless the spec names it). ``search.standing.references`` gives those
references, and ``trial_comparison`` compares any trial's objectives with them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mergestudio.errors import MergeStudioError
from mergestudio.evaluate.normalized import mean_of_known
from mergestudio.events import CancelToken, EventSink, log
from mergestudio.search.objectives import Objectives
from mergestudio.search.spec import SearchSpec, base_recipe
from mergestudio.search.standing import references
from mergestudio.search.store import RunFolder, write_atomic

if TYPE_CHECKING:
    from mergestudio.evaluate.normalized import Comparison
    from mergestudio.evaluate.resident import CandidateEvaluator
    from mergestudio.recipe.model import Recipe

BASELINES_FILE = "baselines.json"
FULL_EVAL_FILE = "full_eval.json"
FULL_DEV_EVAL_FILE = "full_dev_eval.json"  # re-scores on the selection split, beside estimates
TIES_DENSITY = 0.5  # the demo zoo's TIES row; the registry's default (1.0) trims nothing
BaselineKind = Literal["parent", "merge"]


@dataclass(frozen=True)
class Baseline:
    """One reference point. ``objectives``: raw values by objective name.
    ``is_base``: this is the recipe's base model (the reference for Δ).
    ``delta_vs_base`` / ``normalized``: per maximised objective, against the run's
    references (see ``search.standing``); empty when the run has no base or no
    fine-tuned parent. Filled by ``compute_baselines`` and ``load_baselines``."""

    label: str  # the model's folder name, or the merge method
    kind: BaselineKind
    recipe: dict[str, Any] = field(repr=False)
    objectives: dict[str, float]
    estimator: str  # how it was scored, in words (the run's estimator)
    is_base: bool = False
    delta_vs_base: dict[str, float] = field(default_factory=dict)
    normalized: dict[str, float] = field(default_factory=dict)
    # Every item's score by task, in the task's item order: what an IRT estimator is
    # calibrated on (``search/fitness.py``); empty in files written before it was kept.
    responses: dict[str, list[float]] = field(default_factory=dict, repr=False)
    # Every item's graded score per task, when the evaluator was asked for them (IRT graded).
    graded: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def mean_delta_vs_base(self) -> float:
        return mean_of_known(self.delta_vs_base.values())

    @property
    def mean_normalized(self) -> float:
        return mean_of_known(self.normalized.values())


def trial_comparison(
    values: Mapping[str, float], baselines: Sequence[Baseline], objectives: Objectives
) -> Comparison:
    """A trial's objectives against the run's base and specialists: per-objective Δ and
    normalized values, their means (``mean_delta_vs_base``, ``mean_normalized``) and a
    one-line ``verdict(percent_scale=False)``. With no baselines, only ``raw`` is set."""
    return references(baselines, objectives.items).compare(values)


def with_comparisons(baselines: Sequence[Baseline], objectives: Objectives) -> list[Baseline]:
    """The baselines with ``delta_vs_base`` and ``normalized`` filled in."""
    refs = references(baselines, objectives.items)
    out = []
    for baseline in baselines:
        comparison = refs.compare(baseline.objectives)
        out.append(replace(baseline, delta_vs_base=comparison.delta_vs_base, normalized=comparison.normalized))
    return out


def estimator_label(spec: SearchSpec) -> str:
    fitness = spec.fitness
    if fitness.estimator == "irt":
        # Baselines are the IRT calibration's models: scored on every item.
        return "full task sets (IRT calibration)"
    if fitness.estimator == "subset" and fitness.items_per_task is not None:
        return f"subset: {fitness.items_per_task} items per task (seed {fitness.seed})"
    return "full task sets"


def baseline_recipes(recipe: Recipe) -> list[tuple[str, BaselineKind, dict[str, Any]]]:
    """(label, kind, recipe) for every parent, then every default merge that applies."""
    from mergestudio.methods.registry import all_methods

    base = recipe.base_model
    inputs = [m.model for m in recipe.models or [] if m.model != base]
    parents = ([base] if base else []) + inputs
    labels = _labels(parents)
    out: list[tuple[str, BaselineKind, dict[str, Any]]] = [
        (labels[p], "parent", {"merge_method": "passthrough", "models": [{"model": p}], "dtype": "float32"})
        for p in parents
    ]
    available = {m.name for m in all_methods()}
    weights = [{"model": m, "parameters": {"weight": 1.0}} for m in inputs]
    if "linear" in available and inputs:
        out.append(("linear", "merge", {"merge_method": "linear", "models": weights, "dtype": "float32"}))
    if base and inputs:
        ties = [{"model": m, "parameters": {"weight": 1.0, "density": TIES_DENSITY}} for m in inputs]
        for name, models in (("task_arithmetic", weights), ("ties", ties)):
            if name in available:
                entry = {"merge_method": name, "base_model": base, "models": models, "dtype": "float32"}
                out.append((name, "merge", entry))
    return out


def _labels(references: Sequence[str]) -> dict[str, str]:
    short = [Path(r.rstrip("/")).name or r for r in references]
    return {r: (s if short.count(s) == 1 else r) for r, s in zip(references, short, strict=True)}


# ---- evaluating ---------------------------------------------------------------------------


def compute_baselines(
    spec: SearchSpec,
    *,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
    resident: CandidateEvaluator | None = None,
) -> list[Baseline]:
    """Score every baseline recipe with the search's estimator and settings (on
    ``resident`` when given: the search's own evaluator, holding the run's tasks)."""
    objectives = Objectives.build(spec)
    estimator = estimator_label(spec)
    base_label = _base_label(base_recipe(spec))
    baselines = []
    with _resident(spec, objectives, resident) as resident:
        for label, kind, recipe in baseline_recipes(base_recipe(spec)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            log(events, f"baseline {label}: evaluating")
            result = resident.evaluate(recipe, cancel=cancel)
            values = objectives.values(result.report)
            is_base = kind == "parent" and label == base_label
            responses = {t.task: [i.score for i in t.items] for t in result.report.tasks}
            graded = {
                t.task: [float(i.graded) for i in t.items if i.graded is not None]
                for t in result.report.tasks
                if all(i.graded is not None for i in t.items)
            }
            baselines.append(
                Baseline(label, kind, recipe, values, estimator, is_base, responses=responses, graded=graded)
            )
            log(events, f"baseline {label}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    return with_comparisons(baselines, objectives)


def _base_label(recipe: Recipe) -> str | None:
    """The base model's baseline label (the first parent's, as ``baseline_recipes`` names it)."""
    if not recipe.base_model:
        return None
    labels = baseline_recipes(recipe)
    return labels[0][0] if labels else None


def run_baselines(
    run_dir: str | Path, *, events: EventSink | None = None, cancel: CancelToken | None = None
) -> list[Baseline]:
    """The run's baselines: from ``baselines.json`` when it matches the run's spec,
    else computed now and saved there."""
    run = RunFolder(run_dir)
    spec = run.load_spec()
    cached = load_baselines(run.path, spec)
    if cached is not None:
        return cached
    baselines = compute_baselines(spec, events=events, cancel=cancel)
    save_baselines(run.path, spec, baselines)
    return baselines


def save_baselines(run_dir: Path, spec: SearchSpec, baselines: Sequence[Baseline]) -> Path:
    path = Path(run_dir) / BASELINES_FILE
    data = {"key": _scoring_key(spec), "baselines": [asdict(b) for b in baselines]}
    write_atomic(path, json.dumps(data, indent=1) + "\n")
    return path


def load_baselines(run_dir: Path, spec: SearchSpec) -> list[Baseline] | None:
    """The cached baselines, or None when missing, unreadable, or scored differently
    (another recipe, other tasks, another estimator)."""
    path = Path(run_dir) / BASELINES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != _scoring_key(spec):
            return None
        base_label = _base_label(base_recipe(spec))
        baselines = [
            Baseline(
                str(b["label"]),
                "merge" if b["kind"] == "merge" else "parent",
                dict(b["recipe"]),
                {str(k): float(v) for k, v in b["objectives"].items()},
                str(b["estimator"]),
                b["kind"] == "parent" and b["label"] == base_label,
                responses={str(t): [float(v) for v in r] for t, r in b.get("responses", {}).items()},
                graded={str(t): [float(v) for v in r] for t, r in b.get("graded", {}).items()},
            )
            for b in data["baselines"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a missing or stale cache is recomputed, never trusted
    # Δ and normalized are arithmetic over the scores: recomputed, so a file written
    # before they existed reads the same as a new one.
    try:
        return with_comparisons(baselines, Objectives.build(spec))
    except MergeStudioError:  # a task file gone since: the raw scores still stand
        return baselines


def _scoring_key(spec: SearchSpec) -> str:
    """What decides a baseline's scores: the models, the objectives, the estimator and
    the evaluation settings (not the genome, algorithm or budget)."""
    # The IRT options decide how candidates are estimated, not how baselines are scored (in
    # full): left out, so runs from before they existed keep their baselines.json.
    data = spec.model_dump(
        mode="json",
        include={"recipe", "objectives", "fitness", "evaluation"},
        exclude={"fitness": {"irt_prior", "prior_from_trials", "adaptive", "graded"}},
    )
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_full(
    run_dir: str | Path,
    number: int,
    *,
    events: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, float]:
    """Trial ``number``'s objectives on every item of every task (for runs that used a
    subset estimator); saved in ``full_eval.json`` beside the run's other files. An
    objective with a held-out ``test`` file is scored on that file, not on the task the
    search selected on."""
    from mergestudio.search.export import trial_record

    run = RunFolder(run_dir)
    spec = run.load_spec()
    record = trial_record(run, number)
    held_out = [o.model_copy(update={"task": o.test}) if o.test else o for o in spec.objectives]
    full = spec.model_copy(
        update={"fitness": spec.fitness.model_copy(update={"estimator": "full"}), "objectives": held_out}
    )
    objectives = Objectives.build(full)
    with _resident(full, objectives) as resident:
        result = resident.evaluate(record.recipe_yaml, events=events, cancel=cancel)
        values = objectives.values(result.report)
        if spec.fitness.estimator != "full" and any(o.test for o in spec.objectives):
            # The estimate was of the dev split: score that in full too, to set beside it.
            dev = Objectives.build(full.model_copy(update={"objectives": spec.objectives}))
            resident.tasks = list(dev.tasks)
            report = resident.evaluate(record.recipe_yaml, events=events, cancel=cancel).report
            _save_values(run.path / FULL_DEV_EVAL_FILE, number, dev.values(report))
    _save_values(run.path / FULL_EVAL_FILE, number, values)
    return values


def _save_values(path: Path, number: int, values: dict[str, float]) -> None:
    saved = _load_values(path)
    saved[number] = values
    write_atomic(path, json.dumps({str(k): v for k, v in sorted(saved.items())}, indent=1) + "\n")


def load_full_evaluations(run_dir: str | Path) -> dict[int, dict[str, float]]:
    """Trial number -> objectives on the full task sets, for the trials re-scored so far.
    A cache like the baselines: an unreadable file counts as empty (and is rewritten by
    the next re-score), so it never keeps a run from opening."""
    return _load_values(Path(run_dir) / FULL_EVAL_FILE)


def load_full_dev_evaluations(run_dir: str | Path) -> dict[int, dict[str, float]]:
    """Trial number -> objectives on every item of the tasks the search selected on (the
    split its estimates are of): ``full_dev_eval.json`` where objectives have held-out
    test files, else the same as ``load_full_evaluations``."""
    path = Path(run_dir) / FULL_DEV_EVAL_FILE
    return _load_values(path) if path.is_file() else load_full_evaluations(run_dir)


def _load_values(path: Path) -> dict[int, dict[str, float]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {int(k): {str(n): float(v) for n, v in values.items()} for k, values in data.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


@contextmanager
def _resident(
    spec: SearchSpec, objectives: Objectives, open_already: CandidateEvaluator | None = None
) -> Iterator[CandidateEvaluator]:
    """The evaluator the search itself uses: same template, tasks, batch, device and
    thread count, so a baseline's score is exactly what a trial with its recipe gets."""
    from mergestudio.engine.device import torch_threads
    from mergestudio.evaluate.resident import ResidentEvaluator

    if open_already is not None:
        yield open_already
        return

    recipe = base_recipe(spec)
    template = recipe.base_model or (recipe.models or [])[0].model
    evaluation = spec.evaluation
    with (
        torch_threads(evaluation.threads),
        ResidentEvaluator(
            template,
            objectives.tasks,
            batch_size=evaluation.batch_size,
            device=evaluation.device,
            dtype="float32",
            merge_threads=evaluation.threads,
            graded=spec.fitness.estimator == "irt" and spec.fitness.graded,
        ) as resident,
    ):
        yield resident
