"""The stages of a multi-stage recipe, as a list in running order: each row says the
stage's name, method and what it reads (earlier stages by name, marked ◆). Choosing a
row makes the Recipe page edit that stage. Add stage / Remove stage change the project
model; the list only shows it."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt.state import StudioState, display_name

ROW_LIMIT = 4  # rows shown before the list scrolls: the parameters below stay in view


class StageList(QWidget):
    def __init__(self, state: StudioState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stageList")
        self.state = state
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        header = QHBoxLayout()
        header.setSpacing(8)
        self.title = QLabel("Stages", self)
        self.title.setObjectName("sectionTitle")
        self.add_button = QPushButton("Add stage", self)
        self.add_button.setToolTip("A new final stage that merges the current final stage's output further")
        self.add_button.clicked.connect(self.state.add_stage)
        self.remove_button = QPushButton("Remove stage", self)
        self.remove_button.setToolTip("Remove the chosen stage (refused while a later stage reads it)")
        self.remove_button.clicked.connect(self._remove)
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.add_button)
        header.addWidget(self.remove_button)
        layout.addLayout(header)
        self.hint = QLabel(
            "One stage. Add a stage to merge this result further (mergekit-multi); "
            "each stage is edited here by choosing it.",
            self,
        )
        self.hint.setObjectName("hint")
        self.hint.setWordWrap(True)
        layout.addWidget(self.hint)
        self.list = QListWidget(self)
        self.list.setObjectName("stageRows")
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.currentRowChanged.connect(self._chosen)
        layout.addWidget(self.list)
        state.stages_changed.connect(self.refresh)
        state.recipe_changed.connect(lambda _origin: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        stages = self.state.stages()
        names = self.state.stage_names()
        self.hint.setVisible(not stages)
        self.list.setVisible(bool(stages))
        self.remove_button.setEnabled(bool(stages))
        self.list.blockSignals(True)
        self.list.clear()
        for index, (name, recipe) in enumerate(zip(names, stages, strict=True)):
            item = QListWidgetItem(self._row_text(index, name, recipe, names))
            item.setToolTip(self._tooltip(name, recipe, names))
            self.list.addItem(item)
        self.list.setCurrentRow(self.state.current_stage if stages else -1)
        self.list.blockSignals(False)
        rows = min(max(len(stages), 1), ROW_LIMIT)
        row_height = max(self.list.sizeHintForRow(0), self.fontMetrics().height() + 2)
        self.list.setFixedHeight(rows * row_height + 2 * self.list.frameWidth() + 2)

    def _row_text(self, index: int, name: str, recipe: dict[str, Any], names: list[str]) -> str:
        inputs = ", ".join(self._input_text(m, names) for m in _inputs(recipe))
        final = "  (output)" if index == len(names) - 1 else ""
        return f"{index + 1}. {name} · {recipe.get('merge_method', '?')} ← {inputs or 'no models'}{final}"

    def _tooltip(self, name: str, recipe: dict[str, Any], names: list[str]) -> str:
        lines = [f"stage {name}: {recipe.get('merge_method', '?')}"]
        if recipe.get("base_model"):
            lines.append(f"base: {recipe['base_model']}")
        lines += [f"reads: {m}" + (" (stage)" if m in names else "") for m in _inputs(recipe)]
        return "\n".join(lines)

    @staticmethod
    def _input_text(reference: str, names: list[str]) -> str:
        return f"◆{reference}" if reference in names else display_name(reference)

    def _chosen(self, row: int) -> None:
        if row >= 0:
            self.state.select_stage(row)

    def _remove(self) -> None:
        self.state.remove_stage(self.state.current_stage)


def _inputs(recipe: dict[str, Any]) -> list[str]:
    base = recipe.get("base_model")
    models = [str(m.get("model")) for m in recipe.get("models") or []]
    return list(dict.fromkeys(([str(base)] if base else []) + models))
