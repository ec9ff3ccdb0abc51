"""The Merge page's quick-eval table as plain data: what every cell says and means.

Rows are the tasks, then the mean of the accuracy-like ones; columns are the merge, its Δ
against the base, its normalized accuracy (÷ each task's specialist), then the base and
every parent. The numbers come from the engine's ``Comparison``; this module only words
and formats them, so a test can check the table against the engine cell by cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtGui import QColor

if TYPE_CHECKING:
    from mergestudio.evaluate.normalized import Comparison
    from mergestudio.evaluate.results import EvalReport, TaskResult

    from mergestudio_qt.workers import QuickEval

MERGED_TINT = QColor(37, 99, 235, 30)  # the accent, faint enough for light and dark themes
DELTA_HEADER = "Δ base"
NORMALIZED_HEADER = "normalized"
_METRIC_WORDS = {"acc": "accuracy %", "acc_norm": "accuracy %", "exact_match": "exact match %",
                 "perplexity": "perplexity"}


@dataclass(frozen=True)
class EvalCell:
    """``value``: the number behind ``text`` (fractions for accuracies, as the engine
    reports them), None for an empty cell."""

    text: str
    value: float | None = None
    merged: bool = False
    specialist: bool = False
    tip: str = ""
    parent: str | None = None  # the base's or a parent's label, for its own score cells


@dataclass(frozen=True)
class EvalRow:
    label: str
    tip: str
    cells: tuple[EvalCell, ...]
    task: str | None = None  # None for the mean row


@dataclass(frozen=True)
class EvalTable:
    columns: tuple[tuple[str, str], ...]  # (header, tooltip)
    rows: tuple[EvalRow, ...]
    verdict: str
    legend: str


def build_eval_table(result: QuickEval) -> EvalTable:
    comparison = result.comparison
    merged = result.reports[result.merged_label]
    others = [label for label in result.reports if label != result.merged_label]
    show_delta = result.base_label is not None
    show_normalized = bool(comparison.specialist_of)
    columns: list[tuple[str, str]] = [(result.merged_label, "The model you merged")]
    if show_delta:
        columns.append((DELTA_HEADER, f"The merge minus {result.base_label}: points of accuracy; "
                                      "for perplexity, the relative change"))
    if show_normalized:
        columns.append((NORMALIZED_HEADER, "The merge's accuracy ÷ the specialist's accuracy on the same "
                                           "task (100 %: the merge kept the whole skill)"))
    for label in others:
        role = "the base model" if label == result.base_label else "a parent of the merge"
        columns.append((label, f"{label}: {role}"))
    rows = [_task_row(task, result, others, show_delta, show_normalized) for task in merged.tasks]
    if comparison.raw:
        rows.append(_mean_row(result, others, show_delta, show_normalized))
    return EvalTable(tuple(columns), tuple(rows), verdict(comparison, result.base_label), _legend(result))


def _task_row(task: TaskResult, result: QuickEval, others: list[str], show_delta: bool,
              show_normalized: bool) -> EvalRow:
    comparison = result.comparison
    name = task.task
    higher = task.higher_is_better
    arrow = "↑" if higher else "↓"
    words = _METRIC_WORDS.get(task.primary_metric, task.primary_metric)
    row_label = f"{name} · {words} {arrow}"
    tip = f"{name}: {task.primary_metric}, {'higher' if higher else 'lower'} is better ({len(task.items)} items)"
    cells = [EvalCell(_value_text(task.value, higher), task.value, merged=True, tip="the merge")]
    if show_delta:
        cells.append(_delta_cell(comparison, name, higher))
    if show_normalized:
        cells.append(_normalized_cell(comparison, name))
    specialist = comparison.specialist_of.get(name)
    for label in others:
        value = result.reports[label].task(name).value
        is_specialist = label == specialist
        if is_specialist:
            how = "you chose it" if result.specialist_of.get(name) == label else "it scores highest"
            cell_tip = f"{label} is {name}'s specialist ({how}): normalized accuracy divides by this"
        else:
            cell_tip = f"right-click to make {label} the specialist of {name}" if higher else ""
        cells.append(EvalCell(_value_text(value, higher), value, specialist=is_specialist, tip=cell_tip,
                              parent=label))
    return EvalRow(row_label, tip, tuple(cells), task=name)


def _delta_cell(comparison: Comparison, task: str, higher: bool) -> EvalCell:
    if higher:
        delta = comparison.delta_vs_base.get(task)
        if delta is None:
            return EvalCell("—")
        return EvalCell(f"{100 * delta:+.1f}", delta, tip=f"{100 * delta:+.1f} points of accuracy vs the base")
    change = comparison.lower_is_better_change().get(task)
    if change is None:
        return EvalCell("—")
    better = "better" if change < 0 else "worse" if change > 0 else "the same"
    return EvalCell(f"{change:+.1%}", change, tip=f"perplexity {change:+.1%} vs the base ({better}; lower is better)")


def _normalized_cell(comparison: Comparison, task: str) -> EvalCell:
    value = comparison.normalized.get(task)
    if value is None or math.isnan(value):
        return EvalCell("—", tip="no specialist to compare with (or it scored 0)")
    specialist = comparison.specialist_of.get(task, "the specialist")
    return EvalCell(f"{value:.0%}", value, tip=f"the merge keeps {value:.0%} of {specialist}'s score on {task}")


def _mean_row(result: QuickEval, others: list[str], show_delta: bool, show_normalized: bool) -> EvalRow:
    comparison = result.comparison
    tasks = list(comparison.raw)
    cells = [EvalCell(_value_text(comparison.mean_raw, True), comparison.mean_raw, merged=True)]
    if show_delta:
        delta = comparison.mean_delta_vs_base
        cells.append(EvalCell("—") if math.isnan(delta) else EvalCell(f"{100 * delta:+.1f}", delta))
    if show_normalized:
        mean = comparison.mean_normalized
        cells.append(EvalCell("—") if math.isnan(mean) else EvalCell(f"{mean:.0%}", mean))
    for label in others:
        value = _mean_over(result.reports[label], tasks)
        cells.append(EvalCell(_value_text(value, True), value))
    return EvalRow(f"mean of {len(tasks)} ↑", f"mean over {', '.join(tasks)} (perplexity left out)", tuple(cells))


def _mean_over(report: EvalReport, tasks: list[str]) -> float:
    values = [report.task(t).value for t in tasks]
    return sum(values) / len(values) if values else math.nan


def verdict(comparison: Comparison, base_label: str | None) -> str:
    """One line: how much of the specialists' skills the merge keeps, how it compares with
    the base, and what happened to perplexity (lower is better)."""
    text = comparison.verdict(percent_scale=False)
    if comparison.delta_vs_base or comparison.normalized:
        text = f"The merge {text}."
    base = base_label or "the base"
    for task, change in comparison.lower_is_better_change().items():
        text += (f" {task} perplexity {comparison.lower_is_better[task]:.3f} vs "
                 f"{comparison.base_lower_is_better[task]:.3f} for {base} ({change:+.1%}; lower is better).")
    return text


def _legend(result: QuickEval) -> str:
    first = result.reports[result.merged_label].tasks
    items = len(first[0].items) if first else 0
    cached = [label for label in result.reports if label not in result.evaluated]
    parts = ["Bold: the merge."]
    if result.comparison.specialist_of:
        pinned = any(result.specialist_of.get(t) == s for t, s in result.comparison.specialist_of.items())
        rule = "the one chosen for it, else the parent scoring highest" if pinned else "the parent scoring highest"
        parts.append(f"Underlined: each task's specialist ({rule}; right-click a score to choose).")
    parts.append(f"{items} items per task.")
    if cached:
        parts.append(f"From the cache: {', '.join(cached)}.")
    return " ".join(parts)


def _value_text(value: float, higher_is_better: bool) -> str:
    """Accuracy-like values as percentages, perplexity as is."""
    if math.isnan(value):
        return "—"
    return f"{100 * value:.1f}" if higher_is_better else f"{value:.3f}"
