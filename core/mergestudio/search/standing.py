"""How a search's trials stand against their references: the mean of the accuracy-like
objectives, whether a trial beats the unmerged base, and its normalized accuracy (its
score on each task over that task's specialist's, ``evaluate.normalized``).

The references are the run's own baselines (scored with the run's estimator): the base
is the parent whose model is the recipe's ``base_model``; the specialist of a task is the
fine-tuned parent scoring best on it (the base too when no fine-tune was scored), which
is FusionBench's convention when nothing names the specialists.
Objectives minimised (perplexity) are shown raw and left out of every mean and ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from mergestudio.evaluate.normalized import Comparison, best_model_per_task, compare
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import ObjectiveAxis


@dataclass(frozen=True)
class References:
    """``base``: the unmerged base's value per objective (None: not scored);
    ``specialist``: task → label of its specialist; ``specialist_scores``: task → that
    specialist's value on it; ``accuracy``: the objectives means and ratios use."""

    base: dict[str, float] | None = None
    specialist: dict[str, str] = field(default_factory=dict)
    specialist_scores: dict[str, float] = field(default_factory=dict)
    accuracy: tuple[str, ...] = ()

    @property
    def base_mean(self) -> float | None:
        if self.base is None:
            return None
        values = [self.base[name] for name in self.accuracy if name in self.base]
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else None


def is_base(baseline: Baseline, base_model: str | None) -> bool:
    """Whether ``baseline`` is the unmerged base (a parent whose one model is ``base_model``)."""
    if base_model is None or baseline.kind != "parent":
        return False
    models = baseline.recipe.get("models") or []
    return len(models) == 1 and str(models[0].get("model")) == str(base_model)


def references(
    baselines: Sequence[Baseline], objectives: Sequence[ObjectiveAxis], base_model: str | None
) -> References:
    """The base and the specialists among a run's ``baselines``."""
    accuracy = tuple(o.name for o in objectives if o.maximize)
    base = next((b for b in baselines if is_base(b, base_model)), None)
    parents = [b for b in baselines if b.kind == "parent"]
    tuned = [b for b in parents if b is not base] or parents
    scores = {b.label: dict(b.objectives) for b in tuned}
    chosen = best_model_per_task(scores, accuracy)
    return References(
        base=None if base is None else dict(base.objectives),
        specialist=chosen,
        specialist_scores={task: scores[label][task] for task, label in chosen.items()},
        accuracy=accuracy,
    )


def accuracy_means(values: NDArray[np.float64], maximize: Sequence[bool]) -> NDArray[np.float64]:
    """Per trial, the mean of its accuracy-like objectives: ``values`` (n, k) float64,
    ``maximize`` (k,); returns (n,) float64, NaN where a trial has none scored."""
    columns = np.flatnonzero(np.asarray(maximize, dtype=bool))
    if values.shape[0] == 0 or columns.size == 0:
        return np.full(values.shape[0], np.nan)
    chosen = values[:, columns]
    counts = np.sum(~np.isnan(chosen), axis=1)
    sums = np.nansum(chosen, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def beats_base(means: NDArray[np.float64], refs: References) -> NDArray[np.bool_]:
    """(n,) bool: the trial's mean accuracy is above the base's (all False without a base)."""
    base_mean = refs.base_mean
    if base_mean is None:
        return np.zeros(means.shape[0], dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.asarray(means > base_mean, dtype=bool)


def standing(objectives: Mapping[str, float], refs: References, names: Sequence[ObjectiveAxis]) -> Comparison:
    """One trial's (or baseline's) ``Comparison`` against the base and the specialists."""
    return compare(
        dict(objectives),
        base=refs.base,
        specialist=refs.specialist_scores,
        lower_is_better=[o.name for o in names if not o.maximize],
    )
