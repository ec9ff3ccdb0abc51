"""Scores of a merge next to what it came from: Δ against the base and **normalized
accuracy**, the merge's accuracy on a task divided by that task's specialist's accuracy
(FusionBench's convention), averaged over tasks.

Pure arithmetic over ``{task: value}`` mappings, so the CLI, the search and the window all
say the same thing. Accuracy-like values are fractions or percentages, consistently; the
ratio does not care which. Tasks whose headline metric is lower-is-better (perplexity) are
reported raw and left out of every mean and ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def best_model_per_task(scores_by_model: Mapping[str, Mapping[str, float]], tasks: Iterable[str]) -> dict[str, str]:
    """The specialist of each task when nothing else says: the model scoring highest on it
    (first name in sorted order on ties). Tasks no model scored are left out."""
    chosen: dict[str, str] = {}
    for task in tasks:
        scored = [(name, s[task]) for name, s in sorted(scores_by_model.items()) if task in s]
        scored = [(name, v) for name, v in scored if not math.isnan(v)]
        if scored:
            chosen[task] = max(scored, key=lambda nv: nv[1])[0]
    return chosen


def normalized_accuracy(merged: Mapping[str, float], specialist: Mapping[str, float]) -> dict[str, float]:
    """``merged[task] / specialist[task]`` for every task both have; NaN where the
    specialist scored 0 (the ratio means nothing there)."""
    out: dict[str, float] = {}
    for task, value in merged.items():
        if task not in specialist:
            continue
        reference = specialist[task]
        out[task] = value / reference if reference > 0 else math.nan
    return out


def mean_of_known(values: Iterable[float]) -> float:
    """The mean of the values that are not NaN; NaN when none is."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


@dataclass(frozen=True)
class Comparison:
    """One merge's scores against its base and its tasks' specialists.

    ``raw``: the merge's headline value per task (accuracy-like tasks only).
    ``delta_vs_base``: ``raw - base`` per task, where the base was scored.
    ``normalized``: ``raw / specialist`` per task, where a specialist is known.
    ``lower_is_better``: raw values of perplexity-like tasks, kept apart from the means.
    ``specialist_of``: the name of the model each normalized value divides by, where known.
    ``specialist``: that model's value on the task (the denominator).
    ``base_lower_is_better``: the base's values of the perplexity-like tasks.
    """

    raw: dict[str, float]
    delta_vs_base: dict[str, float] = field(default_factory=dict)
    normalized: dict[str, float] = field(default_factory=dict)
    lower_is_better: dict[str, float] = field(default_factory=dict)
    specialist_of: dict[str, str] = field(default_factory=dict)
    specialist: dict[str, float] = field(default_factory=dict)
    base_lower_is_better: dict[str, float] = field(default_factory=dict)

    @property
    def mean_raw(self) -> float:
        return mean_of_known(self.raw.values())

    @property
    def mean_delta_vs_base(self) -> float:
        return mean_of_known(self.delta_vs_base.values())

    @property
    def mean_normalized(self) -> float:
        return mean_of_known(self.normalized.values())

    def verdict(self, percent_scale: bool = True) -> str:
        """One line that says what the numbers mean, e.g. "keeps 78 % of the specialists'
        skills; +21.0 points over the base". ``percent_scale``: raw values are already
        percentages (False: fractions, shown as points ×100)."""
        parts: list[str] = []
        if not math.isnan(self.mean_normalized):
            parts.append(f"keeps {self.mean_normalized * 100:.0f} % of the specialists' skills")
        if not math.isnan(self.mean_delta_vs_base):
            points = self.mean_delta_vs_base * (1 if percent_scale else 100)
            parts.append(f"{points:+.1f} points over the base" if points >= 0 else f"{-points:.1f} points below the base")
        if not parts:
            return "no base or specialist scored: nothing to compare with"
        return "; ".join(parts)

    def lower_is_better_change(self) -> dict[str, float]:
        """Relative change against the base of each perplexity-like task (+0.05: 5 %
        higher, i.e. worse), where the base was scored."""
        return {
            task: value / self.base_lower_is_better[task] - 1.0
            for task, value in self.lower_is_better.items()
            if self.base_lower_is_better.get(task, 0) > 0
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: every per-task mapping, the three means (None when there is
        nothing to average) and the verdict for fractions (``percent_scale=False``)."""
        return {
            "raw": dict(self.raw),
            "delta_vs_base": dict(self.delta_vs_base),
            "normalized": _finite_values(self.normalized),
            "specialist_of": dict(self.specialist_of),
            "specialist": dict(self.specialist),
            "lower_is_better": dict(self.lower_is_better),
            "base_lower_is_better": dict(self.base_lower_is_better),
            "mean_raw": _finite(self.mean_raw),
            "mean_delta_vs_base": _finite(self.mean_delta_vs_base),
            "mean_normalized": _finite(self.mean_normalized),
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _finite_values(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: _finite(v) for k, v in values.items()}


def compare(
    merged: Mapping[str, float],
    *,
    base: Mapping[str, float] | None = None,
    specialist: Mapping[str, float] | None = None,
    lower_is_better: Iterable[str] = (),
    specialist_of: Mapping[str, str] | None = None,
) -> Comparison:
    """Build a :class:`Comparison`. ``specialist[task]`` is the specialist's value on its
    own task; ``lower_is_better`` names tasks (perplexity) kept out of the means;
    ``specialist_of`` names the specialists (only carried along, for display)."""
    skip = set(lower_is_better)
    raw = {t: v for t, v in merged.items() if t not in skip}
    delta = {t: v - base[t] for t, v in raw.items() if base is not None and t in base}
    reference = {t: v for t, v in (specialist or {}).items() if t in raw}
    return Comparison(
        raw=raw,
        delta_vs_base=delta,
        normalized=normalized_accuracy(raw, specialist or {}),
        lower_is_better={t: v for t, v in merged.items() if t in skip},
        specialist_of={t: n for t, n in (specialist_of or {}).items() if t in reference},
        specialist=reference,
        base_lower_is_better={t: base[t] for t in skip if base is not None and t in base and t in merged},
    )


def compare_to_parents(
    merged: Mapping[str, float],
    *,
    base: Mapping[str, float] | None,
    parents: Mapping[str, Mapping[str, float]],
    lower_is_better: Iterable[str] = (),
    specialist_of: Mapping[str, str] | None = None,
) -> Comparison:
    """A merge against the models it came from. ``parents``: name -> scores of the
    fine-tuned inputs (not the base). Each task's specialist is ``specialist_of[task]``
    when given (the zoo's metadata, the user's choice), else the parent scoring highest
    on it (:func:`best_model_per_task`). Lower-is-better tasks get no specialist."""
    skip = set(lower_is_better)
    tasks = [t for t in merged if t not in skip]
    chosen = best_model_per_task(parents, tasks)
    for task, name in (specialist_of or {}).items():
        if task in tasks and task in parents.get(name, {}):
            chosen[task] = name
    return compare(
        merged,
        base=base,
        specialist={t: parents[n][t] for t, n in chosen.items()},
        lower_is_better=skip,
        specialist_of=chosen,
    )
