"""The Merge page's "write a LoRA adapter" switch: a view of the recipe's ``output`` key
in the project model, so the YAML pane, undo and a saved recipe say the same."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from mergestudio_qt import recipe_edit
from mergestudio_qt.state import StudioState

MAX_RANK = 4096


class AdapterOutputRow(QWidget):
    def __init__(self, state: StudioState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        self.check = QCheckBox("LoRA adapter", self)
        self.check.setObjectName("adapterOutputCheck")
        self.check.setToolTip(
            "Write the merge as a PEFT LoRA adapter instead of a full model: every input must be "
            "an adapter of one base (recipe key output: {format: adapter})"
        )
        self.rank_label = QLabel("rank", self)
        self.rank = QSpinBox(self)
        self.rank.setRange(0, MAX_RANK)
        self.rank.setSpecialValueText("sum of inputs")
        self.rank.setToolTip("Rank of re-factorised modules; 'sum of inputs' keeps every input's rank")
        layout.addWidget(self.check)
        layout.addWidget(self.rank_label)
        layout.addWidget(self.rank)
        layout.addStretch(1)
        self.check.toggled.connect(self._edited)
        self.rank.editingFinished.connect(self._edited)
        state.recipe_changed.connect(lambda _origin: self.refresh())
        state.stages_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        recipe = self.state.recipe
        multi = bool(self.state.stage_names())
        for widget in (self.check, self.rank):
            widget.blockSignals(True)
        self.check.setChecked(recipe_edit.writes_adapter(recipe))
        self.rank.setValue(recipe_edit.adapter_rank(recipe) or 0)
        self.check.setEnabled(not multi or self.check.isChecked())
        if multi:
            self.check.setToolTip("A multi-stage recipe writes a full model")
        self.rank.setEnabled(self.check.isChecked())
        self.rank_label.setEnabled(self.check.isChecked())
        for widget in (self.check, self.rank):
            widget.blockSignals(False)

    def _edited(self) -> None:
        adapter = self.check.isChecked()
        updated = recipe_edit.with_adapter_output(self.state.recipe, adapter, self.rank.value() or None)
        if updated != self.state.recipe:
            self.state.set_recipe(updated, "widgets", "adapter output" if adapter else "model output")
        self.refresh()
