"""Evaluation results as plain data: every item's outcome is kept, not only the mean,
so search, Pareto plots and item-level fitness estimators can reuse them. Everything
round-trips through JSON (``to_dict`` / ``from_dict``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mergestudio.evaluate.tasks import TaskKind

# The headline metric of each task kind and whether higher is better.
PRIMARY_METRIC: dict[TaskKind, tuple[str, bool]] = {
    "multiple_choice": ("acc", True),
    "generation": ("exact_match", True),
    "perplexity": ("perplexity", False),
}


@dataclass(frozen=True)
class ItemResult:
    """One item's outcome.

    ``score``: 1.0/0.0 for correct/incorrect items; for perplexity items, the mean
    negative log-likelihood per token (lower is better). ``correct`` is None for
    perplexity. ``prediction`` is the generated text, or the chosen choice index.
    ``logprobs``: per-choice log-likelihoods (multiple choice only).
    ``graded``: a continuous score of how close the model came, higher is better: the
    mean per-token log-probability of the reference answer under teacher forcing
    (generation, when asked for: one extra forward pass), or the log-probability of the
    right choice among the choices (multiple choice, free). IRT fitness reads it.
    """

    id: str
    score: float
    correct: bool | None = None
    prediction: str | None = None
    logprobs: tuple[float, ...] | None = None
    nll: float | None = None
    n_tokens: int | None = None
    graded: float | None = None


@dataclass(frozen=True)
class TaskResult:
    task: str
    kind: TaskKind
    metrics: dict[str, float]
    items: tuple[ItemResult, ...]
    elapsed_s: float = 0.0

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.kind][0]

    @property
    def higher_is_better(self) -> bool:
        return PRIMARY_METRIC[self.kind][1]

    @property
    def value(self) -> float:
        """The headline number (accuracy, exact match, or perplexity)."""
        return self.metrics[self.primary_metric]

    @property
    def correct(self) -> list[bool]:
        """Per-item correctness, in item order (empty for perplexity)."""
        return [bool(i.correct) for i in self.items if i.correct is not None]


@dataclass(frozen=True)
class EvalReport:
    model: str
    tasks: tuple[TaskResult, ...]
    elapsed_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def task(self, name: str) -> TaskResult:
        for t in self.tasks:
            if t.task == name:
                return t
        raise KeyError(f"no task named {name!r} in this report")

    @property
    def scores(self) -> dict[str, float]:
        """Headline metric per task."""
        return {t.task: t.value for t in self.tasks}

    @property
    def mean_accuracy(self) -> float:
        """Mean of the accuracy-like headline metrics (perplexity tasks left out)."""
        values = [t.value for t in self.tasks if t.higher_is_better]
        return sum(values) / len(values) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        tasks = tuple(
            TaskResult(
                task=t["task"],
                kind=t["kind"],
                metrics=dict(t["metrics"]),
                items=tuple(_item_from_dict(i) for i in t["items"]),
                elapsed_s=float(t.get("elapsed_s", 0.0)),
            )
            for t in data["tasks"]
        )
        return cls(
            model=data["model"],
            tasks=tasks,
            elapsed_s=float(data.get("elapsed_s", 0.0)),
            meta=dict(data.get("meta", {})),
        )

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load_json(cls, path: str | Path) -> EvalReport:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _item_from_dict(d: dict[str, Any]) -> ItemResult:
    logprobs = d.get("logprobs")
    return ItemResult(
        id=d["id"],
        score=float(d["score"]),
        correct=d.get("correct"),
        prediction=d.get("prediction"),
        logprobs=tuple(logprobs) if logprobs is not None else None,
        nll=d.get("nll"),
        n_tokens=d.get("n_tokens"),
        graded=d.get("graded"),
    )
