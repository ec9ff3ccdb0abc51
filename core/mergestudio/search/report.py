"""A run's summary, read back from its folder: every trial, the Pareto front, the best
trial per objective and on the mean of the accuracy-like objectives, and, when the run's
baselines have been scored, each trial's Δ vs the base and normalized accuracy."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.search.baselines import Baseline, load_baselines, trial_comparison
from mergestudio.search.front import FrontTracker
from mergestudio.search.objectives import Objectives
from mergestudio.search.spec import SpecError
from mergestudio.search.store import RunFolder, TrialRecord, write_atomic

TEST_SCORES_FILE = "test_scores.json"  # in the run folder: the front re-scored on held-out files

if TYPE_CHECKING:
    from mergestudio.evaluate.normalized import Comparison


@dataclass(frozen=True)
class RunSummary:
    run: Path
    algorithm: str
    objectives: Objectives
    trials: tuple[TrialRecord, ...]
    front: tuple[int, ...]
    hypervolume: float
    reference: tuple[float, ...]
    elapsed_s: float
    baselines: tuple[Baseline, ...] = ()  # as cached in the run folder; empty when not scored

    def comparison(self, record: TrialRecord) -> Comparison:
        """The trial against the run's base and specialists (nothing but raw values
        when the baselines are not scored)."""
        return trial_comparison(record.objectives, self.baselines, self.objectives)

    @property
    def complete(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == "complete"]

    def mean(self, record: TrialRecord) -> float:
        """Mean of the objectives that are maximised (accuracies): the 'average over
        tasks' the demo table reports. NaN when no objective is maximised."""
        values = [record.objectives[o.name] for o in self.objectives.items if o.maximize]
        return sum(values) / len(values) if values else math.nan

    def best_per_objective(self) -> dict[str, TrialRecord]:
        best = {}
        for objective in self.objectives.items:
            sign = 1.0 if objective.maximize else -1.0
            # Ties go to the earliest trial.
            best[objective.name] = max(
                self.complete, key=lambda r: (sign * r.objectives[objective.name], -r.number)
            )
        return best

    def best_mean(self) -> TrialRecord | None:
        candidates = [r for r in self.complete if not math.isnan(self.mean(r))]
        return max(candidates, key=lambda r: (self.mean(r), -r.number)) if candidates else None

    def to_dict(self) -> dict[str, Any]:
        best_mean = self.best_mean()
        return {
            "run": str(self.run),
            "algorithm": self.algorithm,
            "objectives": [{"name": o.name, "direction": o.direction} for o in self.objectives.items],
            "study_objectives": self.objectives.study_names,
            "trials": [
                {
                    "number": t.number,
                    "state": t.state,
                    "generation": t.generation,
                    "objectives": t.objectives,
                    "mean": None if t.state != "complete" else _finite(self.mean(t)),
                    **self._compared(t),
                    "duration_s": t.duration_s,
                    "on_front": t.number in self.front,
                    "genome": t.genome,
                    "error": t.error,
                }
                for t in self.trials
            ],
            "front": list(self.front),
            "distinct_front_points": len({t.study_values for t in self.complete if t.number in self.front}),
            "hypervolume": self.hypervolume,
            "reference": list(self.reference),
            "best_per_objective": {k: r.number for k, r in self.best_per_objective().items()}
            if self.complete
            else {},
            "best_mean": None
            if best_mean is None
            else {"trial": best_mean.number, "mean": self.mean(best_mean)},
            "elapsed_s": self.elapsed_s,
            "baselines": [
                {
                    "label": b.label,
                    "kind": b.kind,
                    "is_base": b.is_base,
                    "objectives": b.objectives,
                    "delta_vs_base": b.delta_vs_base,
                    "normalized": {k: _finite(v) for k, v in b.normalized.items()},
                    "mean_delta_vs_base": _finite(b.mean_delta_vs_base),
                    "mean_normalized": _finite(b.mean_normalized),
                    "estimator": b.estimator,
                }
                for b in self.baselines
            ],
        }

    def _compared(self, record: TrialRecord) -> dict[str, Any]:
        if record.state != "complete" or not self.baselines:
            return {}
        comparison = self.comparison(record)
        return {
            "delta_vs_base": comparison.delta_vs_base,
            "normalized": {k: _finite(v) for k, v in comparison.normalized.items()},
            "mean_delta_vs_base": _finite(comparison.mean_delta_vs_base),
            "mean_normalized": _finite(comparison.mean_normalized),
        }


def summarize(run_dir: str | Path, baselines: list[Baseline] | None = None) -> RunSummary:
    """The run's summary; ``baselines`` default to those cached in the run folder."""
    run = RunFolder(run_dir)
    spec = run.load_spec()
    objectives = Objectives.build(spec)
    study = run.open_study()
    records = run.records(study)
    tracker = FrontTracker(objectives, None)
    for record in records:
        if record.state == "complete":
            tracker.add(record)
    return RunSummary(
        run=run.path,
        algorithm=spec.algorithm.name,
        objectives=objectives,
        trials=tuple(records),
        front=tracker.trials,
        hypervolume=tracker.hypervolume,
        reference=tracker.reference,
        elapsed_s=float(study.user_attrs.get("elapsed_s", 0.0)),
        baselines=tuple(baselines if baselines is not None else load_baselines(run.path, spec) or ()),
    )


def rescore_front(
    run_dir: str | Path, trials: list[int] | None = None, batch_size: int | None = None
) -> dict[str, Any]:
    """Re-score ``trials`` (default: the Pareto front) on every objective's held-out
    ``test`` file, which the search never read, and write ``test_scores.json`` in the run
    folder. Returns ``{"trials": {number: {objective: value}}, "mean": {number: mean of the
    maximised objectives}}``. Raises ``SpecError`` when no objective names a test file."""
    from mergestudio.engine.device import torch_threads
    from mergestudio.evaluate import load_task
    from mergestudio.evaluate.resident import ResidentEvaluator
    from mergestudio.search.spec import build_genome

    run = RunFolder(run_dir)
    spec = run.load_spec()
    missing = [i for i, o in enumerate(spec.objectives) if o.test is None]
    if missing:
        raise SpecError(
            f"{run.spec_path}: objectives{missing}: no 'test' file to re-score on "
            "(give every objective a held-out test file)"
        )
    summary = summarize(run_dir)
    wanted = list(summary.front) if trials is None else trials
    by_number = {t.number: t for t in summary.complete}
    unknown = [n for n in wanted if n not in by_number]
    if unknown:
        raise SpecError(f"{run.path}: no complete trial(s) {unknown}")
    tasks = [load_task(str(o.test)) for o in spec.objectives]
    template = build_genome(spec).template_model()
    scores: dict[int, dict[str, float]] = {}
    with torch_threads(spec.evaluation.threads), ResidentEvaluator(
        template,
        tasks,
        batch_size=batch_size or spec.evaluation.batch_size,
        device=spec.evaluation.device,
        dtype="float32",
    ) as evaluator:
        for number in wanted:
            report = evaluator.evaluate(by_number[number].recipe_yaml).report
            scores[number] = summary.objectives.values(report)
    maximized = [o.name for o in summary.objectives.items if o.maximize]
    result: dict[str, Any] = {
        "split": "test",
        "files": {o.name: str(spec.objectives[i].test) for i, o in enumerate(summary.objectives.items)},
        "trials": {str(n): v for n, v in scores.items()},
        "mean": {str(n): sum(v[m] for m in maximized) / len(maximized) if maximized else None for n, v in scores.items()},
    }
    write_atomic(run.path / TEST_SCORES_FILE, json.dumps(result, indent=1) + "\n")
    return result


def load_test_scores(run_dir: str | Path) -> dict[str, Any] | None:
    """What :func:`rescore_front` wrote, or None."""
    path = Path(run_dir) / TEST_SCORES_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def format_summary(summary: RunSummary, limit: int | None = None) -> str:
    """The ``mergestudio runs show`` text: a trial table, the front, the best trials, and
    the baselines. With baselines, every complete trial also shows its mean Δ vs the base
    (points of accuracy) and its mean normalized accuracy."""
    names = summary.objectives.names
    width = max(8, *(len(n) for n in names))
    compared = bool(summary.baselines)
    extra = f" {'Δ base':>7} {'norm.':>6}" if compared else ""
    head = f"{'trial':>5} {'state':11} {'gen':>3} " + " ".join(f"{n:>{width}}" for n in names)
    lines = [
        f"run {summary.run} ({summary.algorithm}, {len(summary.complete)} complete trials, {summary.elapsed_s:.0f} s)"
    ]
    if limit != 0:
        lines += ["", head + f" {'mean':>8}{extra} {'time':>7}  front"]
        shown = summary.trials if limit is None else summary.trials[-limit:]
        for t in shown:
            lines.append(_trial_row(summary, t, names, width))
    lines += _baseline_lines(summary, names, width)
    if not summary.complete:
        return "\n".join([*lines, "", "no complete trials yet"])
    lines += [
        "",
        f"Pareto front ({', '.join(summary.objectives.study_names)}): {len(summary.front)} trial(s) "
        f"{list(summary.front)}; hypervolume {summary.hypervolume:.6g} "
        f"(reference {', '.join(f'{r:.4g}' for r in summary.reference)})",
        "",
        "best per objective:",
    ]
    for name, record in summary.best_per_objective().items():
        lines.append(f"  {name:{width}}  trial {record.number:>4}  {record.objectives[name]:.4g}")
    best_mean = summary.best_mean()
    if best_mean is not None:
        verdict = f"  ({summary.comparison(best_mean).verdict(percent_scale=False)})" if compared else ""
        lines.append(f"  {'mean':{width}}  trial {best_mean.number:>4}  {summary.mean(best_mean):.4g}{verdict}")
    test = load_test_scores(summary.run)
    if test is not None and test.get("trials"):
        lines += ["", "re-scored on the held-out test files (never read by the search):"]
        for number, values in test["trials"].items():
            cells = " ".join(f"{values.get(n, math.nan):>{width}.4g}" for n in names)
            mean = test["mean"].get(number)
            lines.append(f"{number:>5} {'test':11} {'':>3} {cells} {mean if mean is not None else math.nan:>8.4g}")
    return "\n".join(lines)


def _baseline_lines(summary: RunSummary, names: list[str], width: int) -> list[str]:
    if not summary.baselines:
        return ["", f"baselines not scored yet: `mergestudio runs show {summary.run} --baselines` scores them"]
    lines = ["", f"baselines ({summary.baselines[0].estimator}; Δ base in points, norm. = ÷ each skill's specialist):"]
    label_width = max(len(b.label) for b in summary.baselines) + len(" (base)")
    header = " ".join(f"{n:>{width}}" for n in names)
    lines.append(f"  {'':<{label_width}} {header} {'mean':>8} {'Δ base':>7} {'norm.':>6}")
    for b in summary.baselines:
        values = " ".join(f"{b.objectives.get(n, math.nan):>{width}.4g}" for n in names)
        maximised = [b.objectives[o.name] for o in summary.objectives.items if o.maximize and o.name in b.objectives]
        mean = sum(maximised) / len(maximised) if maximised else math.nan
        label = f"{b.label} (base)" if b.is_base else b.label
        lines.append(
            f"  {label:<{label_width}} {values} {mean:>8.4g} "
            f"{_points(b.mean_delta_vs_base):>7} {_percent(b.mean_normalized):>6}"
        )
    return lines


def _trial_row(summary: RunSummary, t: TrialRecord, names: list[str], width: int) -> str:
    values = " ".join(f"{t.objectives.get(n, math.nan):>{width}.4g}" for n in names)
    complete = t.state == "complete"
    mean = summary.mean(t) if complete else math.nan
    mark = "*" if t.number in summary.front else ""
    compared = ""
    if summary.baselines:
        comparison = summary.comparison(t) if complete else None
        delta = comparison.mean_delta_vs_base if comparison else math.nan
        normalized = comparison.mean_normalized if comparison else math.nan
        compared = f" {_points(delta):>7} {_percent(normalized):>6}"
    return (
        f"{t.number:>5} {t.state:11} {t.generation:>3} {values} {mean:>8.4g}{compared} "
        f"{t.duration_s:>6.2f}s  {mark}"
    )


def _points(fraction: float) -> str:
    """A difference of accuracies (fractions) in points: +0.21 -> '+21.0'."""
    return "—" if math.isnan(fraction) else f"{100 * fraction:+.1f}"


def _percent(fraction: float) -> str:
    return "—" if math.isnan(fraction) else f"{100 * fraction:.0f} %"
