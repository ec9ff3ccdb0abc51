"""The layer-curve editor: a parameter's value along the layers, one lane per module group
(attention, MLP, other). Drag a control point up or down; pick a preset; choose how many
control points. The curve becomes a mergekit gradient, with ``filter`` conditions when
the lanes differ (``recipe_edit.LayerCurve.to_setting``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyqtgraph as pg
from mergestudio.methods.registry import Param
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt.recipe_edit import LANES, PRESETS, LayerCurve, preset, resample

LANE_COLORS = {"attention": "#3b82f6", "mlp": "#f59e0b", "other": "#10b981"}
LANE_TITLES = {"attention": "Attention", "mlp": "MLP", "other": "Other"}
ALL_LANES = "all"


@dataclass(frozen=True)
class CurveTarget:
    """Which setting the editor edits: a parameter, globally or for one model."""

    param: Param
    model_index: int | None
    label: str


class _DraggablePoints(pg.ScatterPlotItem):  # type: ignore[misc]
    """Control points of one lane; vertical drags call ``on_drag(index, value, final)``."""

    def __init__(self, lane: str, on_drag: Any) -> None:
        color = QColor(LANE_COLORS[lane])
        super().__init__(size=11, brush=pg.mkBrush(color), pen=pg.mkPen(color.darker(130), width=1))
        self.lane = lane
        self._on_drag = on_drag
        self._index: int | None = None
        self.setCursor(Qt.CursorShape.SizeVerCursor)

    def mouseDragEvent(self, event: Any) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            event.ignore()
            return
        if event.isStart():
            points = self.pointsAt(event.buttonDownPos())
            if len(points) == 0:
                event.ignore()
                return
            self._index = points[0].index()
        if self._index is None:
            event.ignore()
            return
        event.accept()
        self._on_drag(self.lane, self._index, float(event.pos().y()), bool(event.isFinish()))
        if event.isFinish():
            self._index = None


class LayerCurveEditor(QWidget):
    """``curve_edited(setting, final)`` carries the new recipe setting for ``target``."""

    curve_edited = Signal(object, bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.target: CurveTarget | None = None
        self.curve = LayerCurve.flat(1.0)
        self.layers = 1
        self._build()
        self.set_target(None, None, 1)

    # ---- building ----------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        controls = QHBoxLayout()
        controls.setSpacing(8)
        self.title = QLabel("Layer curve", self)
        self.title.setObjectName("sectionTitle")
        self.title.setWordWrap(True)  # a long model name wraps instead of widening the pane
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.lane_combo = QComboBox(self)
        self.lane_combo.addItem("All lanes", ALL_LANES)
        for lane in LANES:
            self.lane_combo.addItem(LANE_TITLES[lane], lane)
        self.lane_combo.setToolTip("Which module group a drag or a preset changes")
        self.points_spin = QSpinBox(self)
        self.points_spin.setRange(2, 64)
        self.points_spin.setPrefix("points ")
        self.points_spin.setToolTip("Control points, evenly spaced from the first layer to the last")
        self.points_spin.valueChanged.connect(self._points_changed)
        controls.addWidget(self.title, 1)
        controls.addWidget(self.lane_combo)
        controls.addWidget(self.points_spin)
        layout.addLayout(controls)
        # Presets in one row when they fit, else rows of three: never squeezed labels.
        presets = QGridLayout()
        self._presets_layout = presets
        presets.setHorizontalSpacing(6)
        presets.setVerticalSpacing(4)
        self.preset_buttons: dict[str, QPushButton] = {}
        for index, name in enumerate(PRESETS):
            button = QPushButton(name.capitalize(), self)
            button.setToolTip(f"Set the selected lanes to a {name} curve up to their current peak")
            button.setMinimumWidth(button.sizeHint().width())
            button.clicked.connect(lambda _checked=False, n=name: self.apply_preset(n))
            presets.addWidget(button, index // 3, index % 3)
            self.preset_buttons[name] = button
        self._preset_columns = 3
        layout.addLayout(presets)
        self.plot = pg.PlotWidget(self)
        self.plot.setMinimumHeight(170)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "layer")
        self.plot.addLegend(offset=(8, 8))
        self.lines: dict[str, pg.PlotDataItem] = {}
        self.points: dict[str, _DraggablePoints] = {}
        for lane in LANES:
            self.lines[lane] = self.plot.plot([], [], pen=pg.mkPen(LANE_COLORS[lane], width=2),
                                              name=LANE_TITLES[lane])
            self.points[lane] = _DraggablePoints(lane, self._dragged)
            self.plot.addItem(self.points[lane])
        layout.addWidget(self.plot, 1)
        self.hint = QLabel(self)
        self.hint.setObjectName("hint")
        self.hint.setWordWrap(True)
        layout.addWidget(self.hint)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._arrange_presets()

    def _arrange_presets(self) -> None:
        buttons = list(self.preset_buttons.values())
        spacing = self._presets_layout.horizontalSpacing()
        one_row = sum(b.minimumWidth() for b in buttons) + spacing * (len(buttons) - 1)
        columns = len(buttons) if one_row <= self.width() else 3
        if columns == self._preset_columns:
            return
        self._preset_columns = columns
        for button in buttons:
            self._presets_layout.removeWidget(button)
        for index, button in enumerate(buttons):
            self._presets_layout.addWidget(button, index // columns, index % columns)

    # ---- showing -----------------------------------------------------------------------

    def set_target(self, target: CurveTarget | None, setting: Any, layers: int) -> None:
        """Show ``setting`` of ``target`` over ``layers`` layers (None: nothing to edit)."""
        self.target = target
        self.layers = max(1, layers)
        enabled = target is not None
        curve = LayerCurve.from_setting(setting, points=self._default_points()) if enabled else None
        for widget in (self.lane_combo, self.points_spin, *self.preset_buttons.values(), self.plot):
            widget.setEnabled(enabled and curve is not None)
        if target is None:
            self.title.setText("Layer curve")
            self.hint.setText("Press Curve next to a number parameter to shape it along the layers.")
            self._clear_plot()
            return
        self.title.setText(f"Layer curve: {target.label}")
        if curve is None:
            self.hint.setText("This setting is not a curve of numbers; edit it in the YAML pane.")
            self._clear_plot()
            return
        self.curve = curve
        self.hint.setText(
            "Drag points up or down. Lanes that differ become `filter: self_attn` / `filter: mlp` "
            "conditions in the recipe."
        )
        self.points_spin.blockSignals(True)
        self.points_spin.setValue(max(2, curve.points))
        self.points_spin.blockSignals(False)
        low, high = target.param.slider_range
        values = [v for lane in curve.lanes.values() for v in lane]
        self.plot.setYRange(min(low, *values), max(high, *values), padding=0.08)
        self.plot.setXRange(0, max(1, self.layers - 1), padding=0.04)
        # Whole layers only: about ten ticks whatever the depth.
        step = max(1, -(-self.layers // 10))
        self.plot.getAxis("bottom").setTickSpacing(major=step, minor=step)
        self._redraw()

    def _default_points(self) -> int:
        return max(2, min(self.layers, 5))

    def _clear_plot(self) -> None:
        for lane in LANES:
            self.lines[lane].setData([], [])
            self.points[lane].setData([], [])

    def _redraw(self) -> None:
        for lane in LANES:
            values = self.curve.lanes[lane]
            xs = self._positions(len(values))
            self.lines[lane].setData(xs, values)
            self.points[lane].setData(xs, values)

    def _positions(self, count: int) -> list[float]:
        span = max(1, self.layers - 1)
        if count == 1:
            return [0.0]
        return [i * span / (count - 1) for i in range(count)]

    def selected_lanes(self) -> tuple[str, ...]:
        lane = self.lane_combo.currentData()
        return LANES if lane == ALL_LANES else (lane,)

    # ---- editing -----------------------------------------------------------------------

    def set_point(self, lane: str, index: int, value: float, final: bool = True) -> None:
        """Move one control point (what a drag does). With 'All lanes' selected, the
        point moves in every lane."""
        if self.target is None:
            return
        low, high = self.target.param.low, self.target.param.high
        value = max(value, low) if low is not None else value
        value = min(value, high) if high is not None else value
        lanes = self.selected_lanes() if lane in self.selected_lanes() else (lane,)
        points = self.curve.points
        for name in lanes:
            values = resample(self.curve.lanes[name], points)
            values[index] = value
            self.curve.lanes[name] = values
        self._redraw()
        self._emit(final)

    def apply_preset(self, name: str) -> None:
        if self.target is None:
            return
        points = self.points_spin.value()
        for lane in self.selected_lanes():
            peak = max(self.curve.lanes[lane], key=abs)
            if peak == 0:
                peak = 1.0
            self.curve.lanes[lane] = preset(name, points, 0.0, peak) if name != "flat" else [peak] * points
        self.curve = self.curve.resampled(points)
        self._redraw()
        self._emit(True)

    def _points_changed(self, points: int) -> None:
        if self.target is None:
            return
        self.curve = self.curve.resampled(points)
        self._redraw()
        self._emit(True)

    def _dragged(self, lane: str, index: int, value: float, final: bool) -> None:
        self.set_point(lane, index, value, final)

    def _emit(self, final: bool) -> None:
        if self.target is not None:
            self.curve_edited.emit(self.curve.to_setting(self.target.param), final)
