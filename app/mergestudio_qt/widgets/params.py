"""A widget for one method parameter, generated from its declaration (``Param``): a slider
and spin box over the declared range for numbers, a check box for flags, a combo box for
choices. The declaration's doc becomes the tooltip. No widget knows any method by name.
"""

from __future__ import annotations

import math
from typing import Any

from mergestudio.methods.registry import Param
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)

from mergestudio_qt import recipe_edit

_UNBOUNDED = 1e6  # spin boxes need finite limits; an unbounded parameter gets these


def param_tooltip(param: Param) -> str:
    lines = [f"<b>{param.name}</b> ({param.kind}{', per model' if param.per_model else ''})", param.doc]
    if param.kind in ("float", "int"):
        low = "−∞" if param.low is None else f"{param.low:g}"
        high = "∞" if param.high is None else f"{param.high:g}"
        lines.append(f"Allowed: [{low}, {high}]")
    if param.default is not None:
        lines.append(f"Default: {param.default}")
    else:
        lines.append("Required")
    return "<br>".join(lines)


class ParamEditor(QWidget):
    """Edits one parameter at one place in the recipe (global, or one model's).

    ``edited(value, final)``: ``final`` is False while a slider is being dragged, so the
    caller can merge the drag into one undo step. ``curve_requested`` asks the page to
    show this parameter in the layer-curve editor.
    """

    edited = Signal(object, bool)
    curve_requested = Signal()

    def __init__(self, param: Param, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.param = param
        self._updating = False
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        self.setToolTip(param_tooltip(param))
        self.slider: QSlider | None = None
        self.spin: QDoubleSpinBox | QSpinBox | None = None
        self.check: QCheckBox | None = None
        self.combo: QComboBox | None = None
        self.curve_label: QLabel | None = None
        self.curve_button: QToolButton | None = None
        if param.kind in ("float", "int"):
            self._build_number(layout)
        elif param.kind == "bool":
            self.check = QCheckBox(self)
            self.check.toggled.connect(lambda on: self._emit(bool(on), True))
            layout.addWidget(self.check)
            layout.addStretch(1)
        else:
            self.combo = QComboBox(self)
            self.combo.addItems(list(param.choices))
            self.combo.currentTextChanged.connect(lambda text: self._emit(text, True))
            layout.addWidget(self.combo, 1)

    # ---- building ----------------------------------------------------------------------

    def _build_number(self, layout: QHBoxLayout) -> None:
        param = self.param
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, self._slider_steps())
        self.slider.setMinimumWidth(64)
        self.slider.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.slider.valueChanged.connect(self._slider_moved)
        self.slider.sliderReleased.connect(self._slider_released)
        self.slider.setAccessibleName(param.name)
        spin: QDoubleSpinBox | QSpinBox
        if param.kind == "int":
            spin = QSpinBox(self)
            spin.setRange(int(_bound(param.low, -_UNBOUNDED)), int(_bound(param.high, _UNBOUNDED)))
        else:
            spin = QDoubleSpinBox(self)
            spin.setDecimals(_decimals(param))
            spin.setSingleStep(_resolution(param))
            spin.setRange(_bound(param.low, -_UNBOUNDED), _bound(param.high, _UNBOUNDED))
        spin.setKeyboardTracking(False)  # typing "0.25" must not write 0, 0.2 and 0.25
        spin.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.UpDownArrows)
        spin.setFixedWidth(80)
        spin.setAlignment(Qt.AlignmentFlag.AlignRight)
        spin.valueChanged.connect(lambda value: self._emit(recipe_edit.clean_number(param, value), True))
        self.spin = spin
        self.curve_label = QLabel("varies by layer", self)
        self.curve_label.setObjectName("curveNote")
        # Wraps rather than widening the form; the per-lane values are in the tooltip.
        self.curve_label.setWordWrap(True)
        self.curve_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.curve_label.hide()
        self.curve_button = QToolButton(self)
        self.curve_button.setText("Curve")
        self.curve_button.setToolTip(f"Edit {param.name} per layer and module group in the curve editor")
        self.curve_button.clicked.connect(self.curve_requested)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.curve_label, 1)
        layout.addWidget(spin)
        layout.addWidget(self.curve_button)

    # ---- values ------------------------------------------------------------------------

    def set_setting(self, setting: Any) -> None:
        """Show ``setting`` without emitting ``edited``. A curve shows as a note; moving
        the slider or the spin box afterwards replaces the curve with one value."""
        self._updating = True
        try:
            value = recipe_edit.scalar_of(setting)
            if self.check is not None:
                self.check.setChecked(bool(value))
            elif self.combo is not None:
                self.combo.setCurrentText(str(value))
            else:
                self._show_number(value, setting)
        finally:
            self._updating = False

    def _show_number(self, value: Any, setting: Any) -> None:
        assert self.slider is not None and self.spin is not None and self.curve_label is not None
        is_curve = value is None or isinstance(value, (bool, str))
        # A curve has no single value: the spin box would show a stale number, so the
        # summary takes the place of both the slider and the spin box.
        self.slider.setVisible(not is_curve)
        self.spin.setVisible(not is_curve)
        self.curve_label.setVisible(is_curve)
        if is_curve:
            short, detail = curve_summary(setting)
            self.curve_label.setText(short)
            self.curve_label.setToolTip(f"{detail}<br>Press Curve to edit it; moving a value replaces the curve.")
            return
        if not self.slider.isSliderDown():
            self.slider.setValue(self._to_slider(float(value)))
        self.spin.setValue(value)

    def value(self) -> Any:
        if self.check is not None:
            return self.check.isChecked()
        if self.combo is not None:
            return self.combo.currentText()
        assert self.spin is not None
        return recipe_edit.clean_number(self.param, self.spin.value())

    def _slider_steps(self) -> int:
        low, high = self.param.slider_range
        return max(1, round((high - low) / _resolution(self.param)))

    def _to_slider(self, value: float) -> int:
        low, high = self.param.slider_range
        clamped = min(max(value, low), high)
        return round((clamped - low) / _resolution(self.param))

    def _from_slider(self, position: int) -> float:
        # Positions are whole multiples of a round step, so a slider writes 0.25, not 0.251.
        low, _high = self.param.slider_range
        return low + position * _resolution(self.param)

    def _slider_moved(self, position: int) -> None:
        if self._updating or self.spin is None:
            return
        value = recipe_edit.clean_number(self.param, self._from_slider(position))
        self._updating = True
        self.spin.setValue(value)
        self._updating = False
        assert self.slider is not None
        self._emit(value, not self.slider.isSliderDown())

    def _slider_released(self) -> None:
        if self.spin is not None:
            self._emit(recipe_edit.clean_number(self.param, self.spin.value()), True)

    def _emit(self, value: Any, final: bool) -> None:
        if not self._updating:
            self.edited.emit(value, final)


def curve_summary(setting: Any) -> tuple[str, str]:
    """A one-line summary of a setting that varies (range and mean over the layers, or
    the value per module group) and a longer description for its tooltip."""
    curve = recipe_edit.LayerCurve.from_setting(setting)
    if curve is None:
        return "custom conditions (see YAML)", "Conditions on tensor names; edit them in the YAML pane."
    lanes = curve.lanes
    if all(len(set(values)) == 1 for values in lanes.values()):
        parts = [f"{recipe_edit.lane_title(lane)} {values[0]:g}" for lane, values in lanes.items()]
        return "per module: " + ", ".join(parts), "One value per module group: " + ", ".join(parts)
    values = [v for lane in lanes.values() for v in lane]
    mean = sum(values) / len(values)
    per_module = len({tuple(v) for v in lanes.values()}) > 1
    short = f"by layer{' and module' if per_module else ''}: {min(values):g}–{max(values):g}, mean {mean:.3g}"
    detail = "<br>".join(
        f"{recipe_edit.lane_title(lane)}: {' → '.join(f'{v:g}' for v in values)}" for lane, values in lanes.items()
    )
    return short, f"Varies along the layers (first → last):<br>{detail}"


def _bound(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def _resolution(param: Param) -> float:
    """The slider's step: the parameter's declared (or default round) step."""
    return param.ui_step


def _decimals(param: Param) -> int:
    """Enough decimals for the step and the default (a tolerance of 1e-5 must not show 0)."""
    needed = [-math.floor(math.log10(param.ui_step))]
    if isinstance(param.default, float) and param.default:
        needed.append(-math.floor(math.log10(abs(param.default))))
    return min(8, max(2, *needed))
