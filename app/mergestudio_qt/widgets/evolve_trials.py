"""The Evolve page's trial table: a model over the page's ``TrialHistory`` (no copies),
growing by row inserts as trials finish, sortable through a proxy."""

from __future__ import annotations

import math
from typing import Any

from mergestudio.search.dashboard import TrialHistory
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


class TrialTableModel(QAbstractTableModel):
    """Columns: trial, every objective, on the front (generation, seconds and full-set
    scores are in tooltips: the page's side panel is narrow)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: TrialHistory | None = None
        self._rows = 0
        self._front: frozenset[int] = frozenset()
        self.full: dict[int, dict[str, float]] = {}  # full-set scores, shown in tooltips

    def set_history(self, history: TrialHistory | None) -> None:
        self.beginResetModel()
        self.history = history
        self._rows = 0 if history is None else len(history)
        self._front = frozenset() if history is None else history.front
        self.endResetModel()

    def refresh(self) -> None:
        """Announce rows appended and front marks changed since the last refresh."""
        history = self.history
        if history is None:
            return
        size = len(history)
        if size > self._rows:
            self.beginInsertRows(QModelIndex(), self._rows, size - 1)
            self._rows = size
            self.endInsertRows()
        if history.front != self._front:
            self._front = history.front
            column = self.front_column()
            self.dataChanged.emit(self.index(0, column), self.index(self._rows - 1, column))

    def front_column(self) -> int:
        return 1 + (0 if self.history is None else len(self.history.objectives))

    def number_at(self, row: int) -> int | None:
        if self.history is None or not 0 <= row < self._rows:
            return None
        return int(self.history.numbers[row])

    # ---- the model API -----------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else self._rows

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() or self.history is None else 2 + len(self.history.objectives)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or self.history is None:
            return None
        names = ["#", *[o.name for o in self.history.objectives], "PF"]
        if role == Qt.ItemDataRole.DisplayRole:
            return names[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            objectives = self.history.objectives
            if 1 <= section <= len(objectives):
                return objectives[section - 1].label
            return {0: "trial number", len(names) - 1: "on the Pareto front (PF)"}.get(section)
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
            return None
        if column == 0:
            return str(number)
        if column <= k:
            value = float(history.values[row, column - 1])
            return "—" if math.isnan(value) else f"{value:.4g}"
        return "✓" if number in history.front else ""

    def _sort_value(self, row: int, column: int, k: int) -> float:
        history = self.history
        assert history is not None
        if column == 0:
            return float(history.numbers[row])
        if column <= k:
            return float(history.values[row, column - 1])
        return 1.0 if int(history.numbers[row]) in history.front else 0.0
