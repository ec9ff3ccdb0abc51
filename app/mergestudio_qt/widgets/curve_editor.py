"""The layer-curve editor: a parameter's value along the blocks of the model's family
(layers of an LLM, IN00…OUT11 of an SD UNet), one lane per module group of the family
(attention, MLP, norm, expert k, cross-attention …). Drag a control point up or down;
pick a preset; choose how many control points. For families with named blocks (SD
UNets) every block gets its own point and a named slider, with SuperMerger-style
presets. The curve becomes a mergekit gradient, with ``filter`` conditions when the
lanes differ (``recipe_edit.LayerCurve.to_setting``).
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
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt.recipe_edit import (
    DEFAULT_LANES,
    PRESETS,
    CurveLane,
    LayerCurve,
    curve_lanes,
    preset,
    resample,
)

# Lane colours in lane order (attention blue, MLP amber, the next green …).
PALETTE = ("#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#84cc16", "#ec4899",
           "#64748b", "#a16207")
ALL_LANES = "all"
_SLIDER_STEPS = 1000


def lane_color(index: int, name: str) -> str:
    return PALETTE[index % len(PALETTE)]


def lane_title(name: str) -> str:
    return "MLP" if name == "mlp" else name[:1].upper() + name[1:]


@dataclass(frozen=True)
class CurveTarget:
    """Which setting the editor edits: a parameter, globally or for one model."""

    param: Param
    model_index: int | None
    label: str


class _DraggablePoints(pg.ScatterPlotItem):  # type: ignore[misc]
    """Control points of one lane; vertical drags call ``on_drag(index, value, final)``."""

    def __init__(self, lane: str, color_name: str, on_drag: Any) -> None:
        color = QColor(color_name)
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
        self.layout_info: Any = None  # the base model's ModelLayout, when known
        self.lane_specs: tuple[CurveLane, ...] = ()
        self.block_labels: list[str] = []
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
        self.lane_combo.setToolTip("Which module group (lane of the model's family) a drag or a preset changes")
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
        # Named block sliders (SD UNets): pick a block, slide its value.
        self.block_row = QWidget(self)
        block_layout = QHBoxLayout(self.block_row)
        block_layout.setContentsMargins(0, 0, 0, 0)
        self.block_combo = QComboBox(self.block_row)
        self.block_combo.setToolTip("A named block (SuperMerger: BASE, IN00 … M00 … OUT11)")
        self.block_combo.currentIndexChanged.connect(self._show_block_value)
        self.block_slider = QSlider(Qt.Orientation.Horizontal, self.block_row)
        self.block_slider.setRange(0, _SLIDER_STEPS)
        self.block_slider.valueChanged.connect(self._block_slid)
        self.block_value = QLabel(self.block_row)
        self.block_value.setMinimumWidth(48)
        self.family_presets = QComboBox(self.block_row)
        self.family_presets.setToolTip("Block-weight presets of this family (SuperMerger style)")
        self.family_presets.activated.connect(self._family_preset_chosen)
        block_layout.addWidget(self.block_combo)
        block_layout.addWidget(self.block_slider, 1)
        block_layout.addWidget(self.block_value)
        block_layout.addWidget(self.family_presets)
        layout.addWidget(self.block_row)
        self.plot = pg.PlotWidget(self)
        self.plot.setMinimumHeight(170)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "layer")
        self.legend = self.plot.addLegend(offset=(8, 8))
        self.lines: dict[str, pg.PlotDataItem] = {}
        self.points: dict[str, _DraggablePoints] = {}
        self._set_lanes(DEFAULT_LANES)
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

    def _set_lanes(self, lanes: tuple[CurveLane, ...]) -> None:
        """One line and one set of draggable points per lane of the family."""
        if lanes == self.lane_specs:
            return
        for lane in self.lane_specs:
            self.plot.removeItem(self.lines[lane.name])
            self.plot.removeItem(self.points[lane.name])
        self.legend.clear()
        self.lines, self.points = {}, {}
        self.lane_specs = lanes
        self.lane_combo.blockSignals(True)
        self.lane_combo.clear()
        self.lane_combo.addItem("All lanes", ALL_LANES)
        for index, lane in enumerate(lanes):
            color = lane_color(index, lane.name)
            self.lines[lane.name] = self.plot.plot([], [], pen=pg.mkPen(color, width=2), name=lane_title(lane.name))
            self.points[lane.name] = _DraggablePoints(lane.name, color, self._dragged)
            self.plot.addItem(self.points[lane.name])
            self.lane_combo.addItem(lane_title(lane.name), lane.name)
        self.lane_combo.blockSignals(False)

    def set_layout(self, layout: Any) -> None:
        """The base model's ``ModelLayout``: its lanes, its blocks as the x axis, and for
        families with named blocks, one point and one slider per block."""
        self.layout_info = layout
        self._set_lanes(curve_lanes(layout) if layout is not None else DEFAULT_LANES)
        stack = self._named_stack()
        self.block_labels = [b.label for b in stack] if stack else []
        self.block_combo.blockSignals(True)
        self.block_combo.clear()
        self.block_combo.addItems(self.block_labels)
        self.block_combo.blockSignals(False)
        self.block_row.setVisible(bool(self.block_labels))
        presets = dict(layout.family.presets) if layout is not None else {}
        self.family_presets.clear()
        self.family_presets.addItem("Block presets…", None)
        for name in presets:
            self.family_presets.addItem(name, name)
        self.family_presets.setVisible(bool(presets))

    def _named_stack(self) -> list[Any]:
        """The blocks that get one point each: a family with block presets (SD UNets)."""
        layout = self.layout_info
        if layout is None or not layout.family.presets or not layout.blocks:
            return []
        return list(layout.stack(layout.blocks[0].stack))

    # ---- showing -----------------------------------------------------------------------

    def set_target(self, target: CurveTarget | None, setting: Any, layers: int, layout: Any = None) -> None:
        """Show ``setting`` of ``target`` over ``layers`` layers (None: nothing to edit);
        ``layout`` is the base model's ``ModelLayout`` (family, blocks, lanes)."""
        if layout is not self.layout_info:
            self.set_layout(layout)
        self.target = target
        self.layers = len(self.block_labels) if self.block_labels else max(1, layers)
        enabled = target is not None
        curve = (
            LayerCurve.from_setting(setting, points=self._default_points(), lanes=self.lane_specs)
            if enabled else None
        )
        if curve is not None and self.block_labels and curve.points != len(self.block_labels):
            curve = curve.resampled(len(self.block_labels))
        for widget in (self.lane_combo, self.points_spin, *self.preset_buttons.values(), self.plot,
                       self.block_row, self.family_presets):
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
        filters = [f"`filter: {spec.filters[0]}`" for spec in self.lane_specs if spec.filters][:3]
        self.hint.setText(
            "Drag points up or down"
            + (", or pick a block and slide it" if self.block_labels else "")
            + (f". Lanes that differ become {' / '.join(filters)} … conditions in the recipe." if filters else ".")
        )
        self.points_spin.blockSignals(True)
        self.points_spin.setValue(max(2, curve.points))
        self.points_spin.blockSignals(False)
        low, high = target.param.slider_range
        values = [v for lane in curve.lanes.values() for v in lane]
        self.plot.setYRange(min(low, *values), max(high, *values), padding=0.08)
        self.plot.setXRange(0, max(1, self.layers - 1), padding=0.04)
        self.points_spin.setEnabled(not self.block_labels)
        self._set_ticks()
        self._redraw()

    def _set_ticks(self) -> None:
        axis = self.plot.getAxis("bottom")
        layout = self.layout_info
        if self.block_labels:
            self.plot.setLabel("bottom", f"block ({layout.family.title})")
            axis.setTicks([_block_ticks(self.block_labels), [(i, "") for i in range(len(self.block_labels))]])
            return
        axis.setTicks(None)
        title = f"layer ({layout.family.title})" if layout is not None and layout.blocks else "layer"
        self.plot.setLabel("bottom", title)
        # Whole layers only: about ten ticks whatever the depth.
        step = max(1, -(-self.layers // 10))
        axis.setTickSpacing(major=step, minor=step)

    def _default_points(self) -> int:
        if self.block_labels:
            return len(self.block_labels)
        return max(2, min(self.layers, 5))

    def _clear_plot(self) -> None:
        for lane in self.lane_specs:
            self.lines[lane.name].setData([], [])
            self.points[lane.name].setData([], [])

    def _redraw(self) -> None:
        self._show_block_value()
        for spec in self.lane_specs:
            lane = spec.name
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
        return tuple(s.name for s in self.lane_specs) if lane in (ALL_LANES, None) else (lane,)

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

    def apply_family_preset(self, name: str) -> None:
        """A named block-weight preset: each block's section (BASE, IN, M, OUT) gets the
        preset's share of the selected lanes' current peak."""
        if self.target is None or self.layout_info is None or not self.block_labels:
            return
        table = self.layout_info.family.presets[name]
        for lane in self.selected_lanes():
            peak = max(self.curve.lanes[lane], key=abs) or 1.0
            self.curve.lanes[lane] = [peak * table.get(label.rstrip("0123456789"), 0.0) for label in self.block_labels]
        self._redraw()
        self._emit(True)

    def _family_preset_chosen(self, index: int) -> None:
        name = self.family_presets.itemData(index)
        if name:
            self.apply_family_preset(name)
        self.family_presets.setCurrentIndex(0)

    def _slider_range(self) -> tuple[float, float]:
        if self.target is None:
            return 0.0, 1.0
        return self.target.param.slider_range

    def _show_block_value(self) -> None:
        index = self.block_combo.currentIndex()
        if not self.block_labels or index < 0 or self.target is None:
            return
        lane = self.selected_lanes()[0]
        values = self.curve.lanes.get(lane, [])
        if index >= len(values):
            return
        low, high = self._slider_range()
        self.block_slider.blockSignals(True)
        self.block_slider.setValue(round((values[index] - low) / ((high - low) or 1.0) * _SLIDER_STEPS))
        self.block_slider.blockSignals(False)
        self.block_value.setText(f"{values[index]:.3g}")

    def _block_slid(self, position: int) -> None:
        index = self.block_combo.currentIndex()
        if index < 0:
            return
        low, high = self._slider_range()
        self.set_point(self.selected_lanes()[0], index, low + (high - low) * position / _SLIDER_STEPS, True)

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


def _block_ticks(labels: list[str], most: int = 9) -> list[tuple[int, str]]:
    """About ``most`` block labels under the axis, always the middle block (``M…``),
    never two neighbours (their labels would overlap)."""
    step = max(1, -(-len(labels) // most))
    forced = {i for i, label in enumerate(labels) if label.startswith("M")}
    shown = {i for i in range(0, len(labels), step) if all(abs(i - f) > 2 for f in forced)} | forced
    return [(i, labels[i]) for i in sorted(shown)]
