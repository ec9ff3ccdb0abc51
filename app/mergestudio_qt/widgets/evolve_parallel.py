"""Parallel coordinates over every objective, one line per trial."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import TrialHistory, parallel_scale, scale_axes
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from mergestudio_qt.widgets.evolve_items import (
    ACCENT,
    LABEL_ROOM,
    MERGE,
    PARENT,
    PICK_RADIUS_PX,
    SELECTED,
    GrowingLines,
    group_baselines,
    keep_rendering,
    legend_html,
    set_curve,
    short_label,
    with_alpha,
)
from mergestudio_qt.widgets.evolve_trial_plot import TrialPlot

# ---- parallel coordinates -----------------------------------------------------------------


def axis_names(names: list[str], room_px: int, width_of: Callable[[str], int]) -> list[str]:
    """Each name whole when it fits ``room_px``, else its longest prefix that does, but
    never shorter than what tells it apart from the others ("rev", "cip"): an ellipsis
    costs the room of two letters, and "r…" names nothing. The axis tooltip names it."""
    shortened = []
    for name in names:
        if width_of(name) <= room_px:
            shortened.append(name)
            continue
        distinct = _distinct_prefix(name, [n for n in names if n != name])
        size = len(distinct)
        while size < len(name) and width_of(name[: size + 1]) <= room_px:
            size += 1
        shortened.append(name[:size])
    return shortened


def _distinct_prefix(name: str, others: list[str]) -> str:
    """The shortest prefix of ``name`` (at least 3 characters) that starts no other name."""
    for size in range(min(3, len(name)), len(name) + 1):
        if not any(other.startswith(name[:size]) for other in others):
            return name[:size]
    return name


class ParallelPlot(TrialPlot):
    """Every trial a polyline over all objectives, each axis scaled so the better end is
    up; front members in colour, the rest faded, baselines dashed, the selection red.
    Linked: clicking near a line's vertex selects that trial everywhere."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Parallel coordinates", parent, grid=(False, False))
        item = self.plot_item
        item.setMouseEnabled(x=False, y=False)
        item.setLabel("left", "worse → better")
        item.getAxis("left").setToolTip("each axis scaled to its range over the run, better end up")
        item.hideButtons()
        # Names may reach past the outer axes by half their width: draw them all the same.
        item.getAxis("bottom").setStyle(hideOverlappingLabels=False)
        # The faded background of thousands of lines: no antialiasing (2-3x faster to paint).
        self.all_lines = GrowingLines(pg.mkPen(with_alpha("#7f8896", 45), width=1))
        # Width 1: Qt strokes wider pens on long multi-line paths many times slower.
        self.front_lines = pg.PlotCurveItem(
            pen=pg.mkPen(with_alpha(ACCENT, 200), width=1), connect="finite", antialias=False
        )
        self.baseline_lines = pg.PlotCurveItem(
            pen=pg.mkPen(MERGE, width=1.5, style=Qt.PenStyle.DashLine), connect="finite"
        )
        keep_rendering(self.baseline_lines)  # dashes are slow to stroke; baselines rarely change
        self.selected_line = pg.PlotCurveItem(pen=pg.mkPen(SELECTED, width=2.5))
        keep_rendering(self.selected_line)
        for line in (self.all_lines, self.front_lines, self.baseline_lines, self.selected_line):
            item.addItem(line)
        self.legend.setText(
            legend_html(
                [
                    ("━", ACCENT, "on the Pareto front"),
                    ("━", "#b8bcc6", "other trials"),
                    ("┄", MERGE, "baselines"),
                    ("━", SELECTED, "selected"),
                ]
            )
        )
        # The objectives' axes as one item of vertical segments: a vertical InfiniteLine
        # is a rotated item, which Qt will not keep a rendering of (and each paints in Python).
        self.axis_lines = pg.PlotCurveItem(pen=pg.mkPen(with_alpha("#9aa0a8", 160)), connect="pairs")
        keep_rendering(self.axis_lines)
        item.addItem(self.axis_lines)
        self.value_labels: list[pg.TextItem] = []
        self.baseline_labels: list[pg.TextItem] = []
        self.scaled = np.zeros((0, 0))
        self._baseline_key: tuple[Any, ...] = ()
        self.low = np.zeros(0)
        self.high = np.zeros(0)
        self._axis_key: tuple[Any, ...] = ()
        self._label_px = 0  # the widest baseline label, in pixels
        self._names: list[str] = []  # the axes' objectives, named under them (elided to fit)
        self._ticks: list[tuple[int, str]] = []
        self._room_px = 10_000  # between two axes, measured by _fit_view
        # The room for labels is measured in pixels, so it is fitted again on a resize.
        self.plot_item.getViewBox().sigResized.connect(self._fit_view)

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        self.history, self.baselines = history, baselines
        names = [o.name for o in history.objectives]
        k = len(names)
        if k == 0:
            return
        maximize = [o.maximize for o in history.objectives]
        usable = [b for b in baselines if all(n in b.objectives for n in names)]
        metrics = self.plot.fontMetrics()
        self._label_px = max((metrics.horizontalAdvance(short_label([b], 10) + " +9") for b in usable), default=0)
        extra = np.array([[b.objectives[n] for n in names] for b in usable]) if usable else None
        self.scaled, self.low, self.high = parallel_scale(history.values, maximize, extra)
        # Each trial once: front members in colour, the others faded below them.
        front = history.front_mask()
        self.all_lines.set_lines(self.scaled, ~front, (history, tuple(self.low), tuple(self.high)))
        count = int(front.sum())
        ys = np.hstack([self.scaled[front], np.full((count, 1), np.nan)]).ravel()
        xs = np.tile(np.append(np.arange(k, dtype=np.float64), np.nan), count)
        self.front_lines.setData(xs, ys, connect="finite")
        self._draw_axes(names, history)
        self._draw_baselines(usable, names, extra)
        self.draw_selection()

    def _draw_axes(self, names: list[str], history: TrialHistory) -> None:
        key = (tuple(names), tuple(np.round(self.low, 6)), tuple(np.round(self.high, 6)))
        if key == self._axis_key:
            return
        self._axis_key = key
        k = len(names)
        self._names = list(names)
        self._fit_view()
        for label in self.value_labels:
            self.plot_item.removeItem(label)
        self.value_labels = []
        foreground = pg.getConfigOption("foreground")
        for i in range(k):
            for value, level, anchor in ((self.high[i], 1.0, (0.5, 1.0)), (self.low[i], 0.0, (0.5, 0.0))):
                label = pg.TextItem(f"{value:.3g}", color=foreground, anchor=anchor)
                label.setPos(i, level)
                keep_rendering(label)
                self.plot_item.addItem(label)
                self.value_labels.append(label)
        self._show_value_labels()

    def _fit_view(self) -> None:
        """Room right of the last axis for the widest baseline label, and above and below
        the axes for their value labels, both measured in pixels: fixed margins in axis
        units cut labels off when the plot is narrow or short ("task_arit", "0.9")."""
        k = len(self.low)
        if k == 0:
            return
        box = self.plot_item.getViewBox()
        width, height = float(box.width()), float(box.height())
        text_px = self.plot.fontMetrics().height() + 2
        span_x = k - 1 + 0.45
        room = LABEL_ROOM
        if width > self._label_px + 20:
            room = max(0.3, (self._label_px + 8) * span_x / (width - self._label_px - 8))
        pad = 0.12
        if height > 4 * text_px:
            pad = min(0.6, max(0.12, text_px / (height - 2 * text_px)))
        self.plot_item.setXRange(-0.45, k - 1 + room, padding=0)
        self.plot_item.setYRange(-pad, 1 + pad, padding=0)
        # Objective names under their axes, shortened to the room between two axes.
        metrics = self.plot.fontMetrics()
        room_px = int(width / (span_x + room)) - 6 if width > 0 else 10_000
        ticks = list(enumerate(axis_names(self._names, room_px, metrics.horizontalAdvance)))
        if ticks and [name for _, name in ticks] != self._names:
            # Two rows of names, every other one lower, give each name twice the room.
            staggered = axis_names(self._names, 2 * room_px - 6, metrics.horizontalAdvance)
            ticks = [(i, name if i % 2 == 0 else "\n" + name) for i, name in enumerate(staggered)]
        if ticks != self._ticks:
            self._ticks = ticks
            bottom = self.plot_item.getAxis("bottom")
            bottom.setTicks([ticks])
            two_rows = any(name.startswith("\n") for _, name in ticks)
            bottom.setHeight(2 * metrics.height() + 12 if two_rows else None)
        self._room_px = room_px
        self._show_value_labels()
        self.axis_lines.setData(np.repeat(np.arange(k, dtype=np.float64), 2), np.tile([-pad, 1 + pad], k))

    def _show_value_labels(self) -> None:
        """Each axis's range at its ends when the labels fit between the axes; when the
        plot is too narrow they would run together ("10.981"), so the range moves to the
        axis's tooltip instead."""
        metrics = self.plot.fontMetrics()
        widest = max((metrics.horizontalAdvance(label.textItem.toPlainText()) for label in self.value_labels),
                     default=0)
        fits = widest + 4 <= self._room_px
        for label in self.value_labels:
            label.setVisible(fits)

    def _draw_baselines(self, usable: list[Baseline], names: list[str], extra: np.ndarray | None) -> None:
        key = (self._axis_key, tuple((b.label, tuple(b.objectives.values())) for b in usable))
        if key == self._baseline_key:
            return
        self._baseline_key = key
        self._fit_view()  # the widest label may have changed
        for label in self.baseline_labels:
            self.plot_item.removeItem(label)
        self.baseline_labels = []
        if extra is None:
            self.baseline_lines.setData([], [])
            return
        scaled = scale_axes(extra, self.low, self.high)
        k = len(names)
        ys = np.hstack([scaled, np.full((len(usable), 1), np.nan)]).ravel()
        xs = np.tile(np.append(np.arange(k, dtype=np.float64), np.nan), len(usable))
        self.baseline_lines.setData(xs, ys, connect="finite")
        ends = {id(b): float(row[-1]) for b, row in zip(usable, scaled, strict=True)}
        for text, kind, (y,), members in group_baselines(usable, lambda b: (ends[id(b)],)):
            label = pg.TextItem(
                short_label(members, 10), color=MERGE if kind == "merge" else PARENT, anchor=(0.0, 0.5)
            )
            label.setToolTip(text)
            label.setPos(k - 1 + 0.04, y)
            keep_rendering(label)
            self.plot_item.addItem(label)
            self.baseline_labels.append(label)

    def draw_selection(self) -> None:
        history = self.history
        row = None if history is None or self.selected is None else history.row_of(self.selected)
        if history is None or row is None or row >= self.scaled.shape[0]:
            set_curve(self.selected_line, np.zeros(0), np.zeros(0))
            return
        set_curve(self.selected_line, np.arange(self.scaled.shape[1], dtype=np.float64), self.scaled[row])

    def tooltip_at(self, x: float, y: float) -> str:
        """The trial near the pointer, else the objective whose axis it is on and its range."""
        text = super().tooltip_at(x, y)
        axis = round(x)
        if text or self.history is None or not 0 <= axis < len(self.history.objectives):
            return text
        width, _ = self._pixel()
        if abs(x - axis) > PICK_RADIUS_PX * width:
            return ""
        objective = self.history.objectives[axis]
        if axis >= len(self.low):
            return objective.label
        # ``low`` is each axis's worse end, drawn at the bottom.
        return f"{objective.label}: {self.low[axis]:.3g} (bottom) to {self.high[axis]:.3g} (top) over the run"

    def pick(self, x: float, y: float) -> int | None:
        if self.history is None or self.scaled.size == 0:
            return None
        axis = round(x)
        if not 0 <= axis < self.scaled.shape[1] or abs(x - axis) > 0.25:
            return None
        _, height = self._pixel()
        distance = np.abs(self.scaled[:, axis] - y) / max(height, 1e-12)
        distance = np.where(np.isnan(distance), np.inf, distance)
        best = int(np.argmin(distance))
        return int(self.history.numbers[best]) if distance[best] <= PICK_RADIUS_PX else None


