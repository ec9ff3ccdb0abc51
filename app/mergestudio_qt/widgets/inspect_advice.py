"""Inspect's advice: the density the analysis suggests, with "Use in recipe", and the
link between the page's Density and the recipe's.

The suggestion itself is the engine's (``mergestudio.analysis.suggest``); this module
shows it and reads or writes the recipe's ``density`` through ``recipe_edit``, whatever
level the method declares it at (one per model for TIES and DARE, one global for others).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mergestudio.analysis.suggest import DensitySuggestion
from mergestudio.methods.registry import MethodSpec, Param
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from mergestudio_qt import recipe_edit

DENSITY = "density"


def density_param(method: MethodSpec) -> Param | None:
    return next((p for p in method.params if p.name == DENSITY), None)


def recipe_density(recipe: dict[str, Any], method: MethodSpec) -> float | None:
    """The recipe's density when it is one number (the first model's, for per-model
    densities), else None: no density in this method, or a curve."""
    param = density_param(method)
    if param is None:
        return None
    index = 0 if param.per_model and recipe.get("models") else None
    value = recipe_edit.scalar_of(recipe_edit.effective_setting(recipe, param, index))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def recipe_with_density(recipe: dict[str, Any], method: MethodSpec, density: float) -> dict[str, Any]:
    """``recipe`` with every model's density (or the global one) set to ``density``."""
    param = density_param(method)
    if param is None:
        raise ValueError(f"{method.name} has no density parameter")
    value = recipe_edit.clean_number(param, density)
    updated = recipe_edit.set_setting(recipe, DENSITY, value)
    if param.per_model:
        for index in range(len(updated.get("models") or [])):
            updated = recipe_edit.set_setting(updated, DENSITY, value, index)
    return updated


class DensityAdvice(QWidget):
    """The suggestion in a sentence and "Use in recipe" (``use_requested(density)``)."""

    use_requested = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.suggestion: DensitySuggestion | None = None
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.text = QLabel("", self)
        self.text.setObjectName("hint")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.use_button = QPushButton("Use in recipe", self)
        self.use_button.clicked.connect(self._use)
        row.addWidget(self.text, 1)
        row.addWidget(self.use_button, 0, Qt.AlignmentFlag.AlignTop)
        self.show_suggestion(None, [], None)

    def show_suggestion(
        self, suggestion: DensitySuggestion | None, names: Sequence[str], method: MethodSpec | None
    ) -> None:
        self.suggestion = suggestion
        if suggestion is None:
            self.text.setText("")
            self.setVisible(False)
            return
        self.setVisible(True)
        self.text.setText(f"<b>Suggested density {suggestion.density:.2f}.</b> {suggestion.reason(names)}")
        usable = method is not None and density_param(method) is not None
        self.use_button.setEnabled(usable)
        self.use_button.setToolTip(
            f"Write density {suggestion.density:.2f} for every model into the recipe (Ctrl+Z undoes)"
            if usable
            else f"The recipe's method ({method.name if method else '—'}) has no density: "
            "choose TIES, DARE or another trimming method on the Recipe page"
        )

    def _use(self) -> None:
        if self.suggestion is not None:
            self.use_requested.emit(self.suggestion.density)
