"""The Evolve page's trial table: a model over the page's ``TrialHistory`` (no copies),
growing by row inserts as trials finish, sortable through a proxy. Beside the objectives:
the mean accuracy, marked ▲ when it beats the unmerged base, and the Pareto-front mark."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mergestudio.search.dashboard import TrialHistory
from mergestudio.search.standing import References, accuracy_means, beats_base
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

Index = QModelIndex | QPersistentModelIndex
SORT_ROLE = Qt.ItemDataRole.UserRole + 1  # the number behind a cell, for sorting
_ROLES = frozenset(
    int(r)
    for r in (
        Qt.ItemDataRole.DisplayRole,
        Qt.ItemDataRole.TextAlignmentRole,
        Qt.ItemDataRole.ToolTipRole,
        SORT_ROLE,
    )
)
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
BEATS_BASE = "▲"


class TrialTableModel(QAbstractTableModel):
    """Columns: trial, every objective, the mean accuracy (▲: beats the base), on the
    front (generation, seconds, full-set scores and the comparison with the base are in
    tooltips: the page's side panel is narrow)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: TrialHistory | None = None
        self._rows = 0
        self._front: frozenset[int] = frozenset()
        self.full: dict[int, dict[str, float]] = {}  # full-set scores, shown in tooltips
        self.references = References()
        self.means = np.zeros(0)  # (rows,) mean accuracy per trial
        self.beats = np.zeros(0, dtype=bool)  # (rows,) above the base's mean

    def set_history(self, history: TrialHistory | None) -> None:
        self.beginResetModel()
        self.history = history
        self._rows = 0 if history is None else len(history)
        self._front = frozenset() if history is None else history.front
        self._measure()
        self.endResetModel()

    def set_references(self, references: References) -> None:
        """The base (and specialists) the mean column is compared with."""
        self.references = references
        self._measure()
        if self._rows:
            column = self.mean_column()
            self.dataChanged.emit(self.index(0, column), self.index(self._rows - 1, column))

    def _measure(self) -> None:
        history = self.history
        if history is None:
            self.means, self.beats = np.zeros(0), np.zeros(0, dtype=bool)
            return
        self.means = accuracy_means(history.values, [o.maximize for o in history.objectives])
        self.beats = beats_base(self.means, self.references)

    def refresh(self) -> None:
        """Announce rows appended and front marks changed since the last refresh."""
        history = self.history
        if history is None:
            return
        size = len(history)
        if size > self._rows:
            self.beginInsertRows(QModelIndex(), self._rows, size - 1)
            self._rows = size
            self._measure()
            self.endInsertRows()
        if history.front != self._front:
            self._front = history.front
            column = self.front_column()
            self.dataChanged.emit(self.index(0, column), self.index(self._rows - 1, column))

    def mean_column(self) -> int:
        return 1 + (0 if self.history is None else len(self.history.objectives))

    def front_column(self) -> int:
        return self.mean_column() + 1

    def number_at(self, row: int) -> int | None:
        if self.history is None or not 0 <= row < self._rows:
            return None
        return int(self.history.numbers[row])

    # ---- the model API -----------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else self._rows

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() or self.history is None else 3 + len(self.history.objectives)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or self.history is None:
            return None
        names = ["#", *[o.name for o in self.history.objectives], "mean", "PF"]
        if role == Qt.ItemDataRole.DisplayRole:
            return names[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            objectives = self.history.objectives
            if 1 <= section <= len(objectives):
                return objectives[section - 1].label
            base = self.references.base_mean
            mean_tip = "mean of the accuracy-like objectives; " + (
                f"{BEATS_BASE}: above the unmerged base's {base:.4g}" if base is not None else "the base was not scored"
            )
            return {0: "trial number", len(names) - 2: mean_tip, len(names) - 1: "on the Pareto front (PF)"}.get(
                section
            )
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # Qt asks for about seven roles per painted cell: the unused ones return first.
        if role not in _ROLES:
            return None
        history = self.history
        if history is None or not index.isValid():
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _RIGHT
        row, column = index.row(), index.column()
        k = len(history.objectives)
        if role == SORT_ROLE:
            return self._sort_value(row, column, k)
        number = int(history.numbers[row])
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 0:
                return (
                    f"trial {number}, generation {int(history.generations[row])}: merged and evaluated "
                    f"in {float(history.durations[row]):.1f} s"
                )
            if 1 <= column <= k and number in self.full:
                name = history.objectives[column - 1].name
                return f"on the full task set: {self.full[number].get(name, math.nan):.4g}"
            if column == k + 1:
                return self._mean_tip(row)
            return None
        if column == 0:
            return str(number)
        if column <= k:
            value = float(history.values[row, column - 1])
            return "—" if math.isnan(value) else f"{value:.3g}"  # 3 digits: the panel is narrow
        if column == k + 1:
            mean = float(self.means[row]) if row < self.means.size else math.nan
            mark = f" {BEATS_BASE}" if row < self.beats.size and self.beats[row] else ""
            return "—" if math.isnan(mean) else f"{mean:.3g}{mark}"
        return "✓" if number in history.front else ""

    def _mean_tip(self, row: int) -> str | None:
        base = self.references.base_mean
        if row >= self.means.size or math.isnan(self.means[row]) or base is None:
            return None
        points = (float(self.means[row]) - base) * 100
        verdict = "beats" if self.beats[row] else "does not beat"
        return f"mean {self.means[row]:.4g} {verdict} the base's {base:.4g} ({points:+.1f} points)"

    def _sort_value(self, row: int, column: int, k: int) -> float:
        history = self.history
        assert history is not None
        if column == 0:
            return float(history.numbers[row])
        if column <= k:
            return float(history.values[row, column - 1])
        if column == k + 1:
            return float(self.means[row]) if row < self.means.size else math.nan
        return 1.0 if int(history.numbers[row]) in history.front else 0.0
