"""How a search's trials and baselines stand against their references: the mean of the
accuracy-like objectives, whether a trial beats the unmerged base, Δ against the base and
**normalized accuracy** (a score on each task over that task's specialist's,
``evaluate.normalized``).

The references are the run's own baselines, scored with the run's estimator. The base is
the baseline marked ``is_base`` (the parent whose model is the recipe's ``base_model``).
The specialist of an objective is the parent the spec names for it (``objectives[i].
specialist``), else the fine-tuned parent scoring best on it (FusionBench's convention
when nothing names the specialists). Objectives minimised (perplexity) are shown raw and
left out of every mean and ratio. The CLI's report and the Evolve page both compare
through ``References.compare``, so they say the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from mergestudio.evaluate.normalized import Comparison, best_model_per_task, compare

if TYPE_CHECKING:
    from mergestudio.search.baselines import Baseline


class ScoredObjective(Protocol):
    """What references need of an objective (``objectives.Objective``, ``dashboard.ObjectiveAxis``)."""

    @property
    def name(self) -> str: ...

    @property
    def maximize(self) -> bool: ...

    @property
    def specialist(self) -> str | None: ...


@dataclass(frozen=True)
class References:
    """``base``: the unmerged base's value per objective (None: not scored);
    ``specialist_of``: objective → label of its specialist; ``specialist_scores``:
    objective → that specialist's value on it; ``accuracy``: the objectives that means
    and ratios use; ``lower_is_better``: the minimised objectives, kept out of them."""

    base: dict[str, float] | None = None
    specialist_of: dict[str, str] = field(default_factory=dict)
    specialist_scores: dict[str, float] = field(default_factory=dict)
    accuracy: tuple[str, ...] = ()
    lower_is_better: frozenset[str] = frozenset()

    @property
    def base_mean(self) -> float | None:
        if self.base is None:
            return None
        values = [self.base[name] for name in self.accuracy if name in self.base]
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else None

    def compare(self, values: Mapping[str, float]) -> Comparison:
        """``values`` (a trial's or a baseline's objectives) against the references."""
        return compare(
            dict(values),
            base=self.base,
            specialist=self.specialist_scores,
            lower_is_better=self.lower_is_better,
            specialist_of=self.specialist_of,
        )


def references(baselines: Sequence[Baseline], objectives: Sequence[ScoredObjective]) -> References:
    """The base and the specialists among a run's ``baselines``. An objective's pinned
    specialist that no parent baseline matches falls back to the best-scoring parent
    (a run scored before the pin was added)."""
    accuracy = tuple(o.name for o in objectives if o.maximize)
    base = next((b for b in baselines if b.is_base), None)
    parents = [b for b in baselines if b.kind == "parent"]
    tuned = [b for b in parents if b is not base] or parents
    scores = {b.label: dict(b.objectives) for b in tuned}
    chosen = best_model_per_task(scores, accuracy)
    for objective in objectives:
        pinned = _matching_parent(objective.specialist, tuned) if objective.maximize else None
        if pinned is not None and objective.name in pinned.objectives:
            chosen[objective.name] = pinned.label
    return References(
        base=None if base is None else dict(base.objectives),
        specialist_of=chosen,
        specialist_scores={name: scores[label][name] for name, label in chosen.items()},
        accuracy=accuracy,
        lower_is_better=frozenset(o.name for o in objectives if not o.maximize),
    )


def _matching_parent(reference: str | None, parents: Sequence[Baseline]) -> Baseline | None:
    """The parent baseline ``reference`` names: by label, or by its model's reference."""
    if not reference:
        return None
    for parent in parents:
        if parent.label == reference or same_model(parent_model(parent), reference):
            return parent
    return None


def parent_model(baseline: Baseline) -> str | None:
    """The model reference a parent baseline scores (None for a merge)."""
    models = baseline.recipe.get("models") or []
    return str(models[0].get("model")) if baseline.kind == "parent" and len(models) == 1 else None


def same_model(a: str | None, b: str | None) -> bool:
    """Two model references name the same model: equal, or the same local folder."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


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
