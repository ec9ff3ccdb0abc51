"""The Pareto front of two chosen objectives, with the baselines as labelled points."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import (
    TrialHistory,
    axis_range,
    front_2d,
    front_2d_grown,
    nice_step,
    step_line,
)
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from mergestudio_qt.widgets.evolve_items import (
    ACCENT,
    EVALUATION_BINS,
    FADED_ALPHA,
    MERGE,
    NEWEST,
    PARENT,
    SELECTED,
    PointCloud,
    colour_scale_top,
    evaluation_colormap,
    group_baselines,
    keep_axes_rendering,
    keep_rendering,
    label_fill,
    legend_html,
    ring,
    set_curve,
    set_objective_label,
    set_scatter,
    short_label,
    with_alpha,
)
from mergestudio_qt.widgets.evolve_trial_plot import TrialPlot, objective_items

# ---- the Pareto front of two objectives ---------------------------------------------------


class ParetoPlot(TrialPlot):
    """Two chosen objectives: every trial coloured by when it was evaluated (colour bar),
    trials off the study's Pareto front faded, the front of these two objectives as a
    step line, the newest generation ringed, baselines as labelled markers."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Pareto front", parent, grid=(True, True))
        self.x_choice = self.add_chooser("x", "Objective on the horizontal axis")
        self.y_choice = self.add_chooser("y", "Objective on the vertical axis")
        self.x_choice.currentIndexChanged.connect(self._axes_chosen)
        self.y_choice.currentIndexChanged.connect(self._axes_chosen)
        item = self.plot_item
        lut = evaluation_colormap().getLookupTable(nPts=EVALUATION_BINS, alpha=False)
        solid = [QColor(int(r), int(g), int(b)) for r, g, b in lut]
        faded = [with_alpha(c.name(), FADED_ALPHA) for c in solid]
        self.cloud = PointCloud(7.0)
        self.cloud.set_palette(faded + solid)  # code = bin (+ bins when on the front)
        item.addItem(self.cloud)
        self.step = pg.PlotCurveItem(pen=pg.mkPen(ACCENT, width=2), antialias=False)  # steps: crisp
        keep_rendering(self.step)  # the front of two objectives changes now and then
        item.addItem(self.step)
        self.newest = ring(NEWEST, 12, 1.5)
        item.addItem(self.newest)
        self.parents = pg.ScatterPlotItem(symbol="t", size=11, pen=None, brush=pg.mkBrush(PARENT))
        self.merges = pg.ScatterPlotItem(symbol="d", size=11, pen=None, brush=pg.mkBrush(MERGE))
        keep_rendering(self.parents)
        keep_rendering(self.merges)
        item.addItem(self.parents)
        item.addItem(self.merges)
        self.labels: list[pg.TextItem] = []
        self.ring = ring(SELECTED, 17, 2.5)
        keep_rendering(self.ring)
        item.addItem(self.ring)
        self.colorbar = pg.ColorBarItem(
            values=(1, 2), colorMap=evaluation_colormap(), interactive=False, width=12, label="evaluation #"
        )
        keep_axes_rendering(self.colorbar)
        item.layout.addItem(self.colorbar, 2, 5)
        self.legend.setText(
            legend_html(
                [
                    ("●", "#3b528b", "trial (colour: evaluation #; faded: off the front)"),
                    ("━", ACCENT, "front of x, y"),
                    ("○", NEWEST, "newest"),
                    ("▼", PARENT, "parents"),
                    ("◆", MERGE, "default merges"),
                ]
            )
        )
        self.front_indices = np.zeros(0, dtype=np.int64)  # rows on the step line, for tests
        self._front_of: tuple[Any, ...] = ()  # (history, x, y, rows) front_indices is of
        self._baseline_key: tuple[Any, ...] = ()
        self._x_step = 0.0  # the x axis's tick step, chosen from its width in pixels
        # Baseline labels are laid out again (flipped or hidden) when the view changes.
        box = item.getViewBox()
        box.sigResized.connect(self._declutter_labels)
        box.sigResized.connect(self._fit_axis_labels)
        box.sigRangeChanged.connect(self._declutter_labels)
        box.sigResized.connect(self._space_x_ticks)
        box.sigRangeChanged.connect(self._space_x_ticks)

    def _axes_chosen(self, _index: int) -> None:
        if self.history is not None:
            self.redraw(self.history, self.baselines)

    def axes(self) -> tuple[int, int]:
        return max(0, self.x_choice.currentIndex()), max(0, self.y_choice.currentIndex())

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        self.history, self.baselines = history, baselines
        objective_items(self.x_choice, history, self.x_choice.currentIndex() if self.x_choice.count() else 0)
        objective_items(self.y_choice, history, self.y_choice.currentIndex() if self.y_choice.count() else 1)
        if not history.objectives:
            return
        xi, yi = self.axes()
        ax, ay = history.objectives[xi], history.objectives[yi]
        set_objective_label(self.plot_item, "bottom", ax)
        set_objective_label(self.plot_item, "left", ay)
        x, y = history.values[:, xi], history.values[:, yi]
        n = len(history)
        top = colour_scale_top(n)
        bins = np.minimum((np.arange(n) * EVALUATION_BINS) // top, EVALUATION_BINS - 1)
        front = history.front_mask()
        self.cloud.set_points(x, y, bins + EVALUATION_BINS * front, ~front, (history, xi, yi, top))
        if tuple(self.colorbar.levels()) != (1, top):
            self.colorbar.setLevels(low=1, high=top)
        known = self._front_of[:3] == (history, xi, yi) and self._front_of[3] <= n
        if known:  # trials were added: the front of the old front and the new trials
            self.front_indices = front_2d_grown(
                x, y, ax.maximize, ay.maximize, self.front_indices, self._front_of[3]
            )
        else:
            self.front_indices = front_2d(x, y, ax.maximize, ay.maximize)
        self._front_of = (history, xi, yi, n)
        sx, sy = step_line(x[self.front_indices], y[self.front_indices], ax.maximize, ay.maximize)
        set_curve(self.step, sx, sy)
        newest = slice(max(0, n - history.population_size), n)
        self.newest.setData(x[newest], y[newest])
        self._draw_baselines(ax.name, ay.name)
        usable = [b for b in baselines if ax.name in b.objectives and ay.name in b.objectives]
        self.fit(
            axis_range(x, [b.objectives[ax.name] for b in usable]),
            axis_range(y, [b.objectives[ay.name] for b in usable]),
        )
        self.draw_selection()

    def _draw_baselines(self, x_name: str, y_name: str) -> None:
        usable = [b for b in self.baselines if x_name in b.objectives and y_name in b.objectives]
        key = (x_name, y_name, tuple((b.label, b.objectives[x_name], b.objectives[y_name]) for b in usable))
        if key == self._baseline_key:
            return
        self._baseline_key = key
        for label in self.labels:
            self.plot_item.removeItem(label)
        self.labels = []
        for item, kind in ((self.parents, "parent"), (self.merges, "merge")):
            chosen = [b for b in usable if b.kind == kind]
            item.setData([b.objectives[x_name] for b in chosen], [b.objectives[y_name] for b in chosen])
        xs = [b.objectives[x_name] for b in usable] + list(
            self.history.column(x_name) if self.history else []
        )
        middle = (min(xs) + max(xs)) / 2 if xs else 0.0
        for label, kind, (x, y), members in group_baselines(
            usable, lambda b: (b.objectives[x_name], b.objectives[y_name])
        ):
            # Labels point inwards, so one at the right edge is not cut off.
            anchor = (-0.1, 0.5) if x <= middle else (1.1, 0.5)
            text = pg.TextItem(
                short_label(members, 10), color=PARENT if kind == "parent" else MERGE, anchor=anchor,
                fill=label_fill(),
            )
            text.setPos(x, y)
            text.setToolTip(f"{label}: scored on the run's estimator ({members[0].estimator})")
            keep_rendering(text)
            self.plot_item.addItem(text)
            self.labels.append(text)
        self._declutter_labels()

    def _fit_axis_labels(self, *_args: object) -> None:
        history = self.history
        if history is None or not history.objectives:
            return
        xi, yi = self.axes()
        set_objective_label(self.plot_item, "bottom", history.objectives[xi])
        set_objective_label(self.plot_item, "left", history.objectives[yi])

    def _space_x_ticks(self, *_args: object) -> None:
        """x ticks at least ~45 px apart: at a quarter of a 1024-px window pyqtgraph's own
        choice ran "0.2 0.4 0.6 0.8" together."""
        box = self.plot_item.getViewBox()
        low, high = box.viewRange()[0]
        width = float(box.width())
        if width < 2 or not high > low:
            return
        step = nice_step((high - low) * 45.0 / width)
        if step != self._x_step:
            self._x_step = step
            self.plot_item.getAxis("bottom").setTickSpacing(levels=[(step, 0.0)])

    def _declutter_labels(self, *_args: object) -> None:
        """Baseline labels that would be cut by the view's edge hang on the other side of
        their marker; one that would still be cut, or cover an earlier one (parents come
        first), is hidden and named in that neighbour's tooltip. Its marker stays."""
        view = self.plot_item.getViewBox().sceneBoundingRect()
        if view.width() < 2 or view.height() < 2:
            return  # not laid out yet (a hidden tab): done when it is shown and resized
        placed: list[tuple[QRectF, pg.TextItem]] = []
        for text in self.labels:
            text.setVisible(True)
            rect = text.sceneBoundingRect()
            if not view.contains(rect):
                anchor_x = text.anchor.x()
                if rect.right() > view.right() or rect.left() < view.left():
                    anchor_x = 1.1 if rect.right() > view.right() else -0.1
                anchor_y = 1.0 if rect.bottom() > view.bottom() else 0.0 if rect.top() < view.top() else 0.5
                text.setAnchor((anchor_x, anchor_y))
                rect = text.sceneBoundingRect()
            covered = next((other for other_rect, other in placed if other_rect.intersects(rect)), None)
            if covered is not None or not view.contains(rect):
                text.setVisible(False)
                name = text.textItem.toPlainText()
                if covered is not None and name not in covered.toolTip():
                    covered.setToolTip(f"{covered.toolTip()}\nalso here: {name}")
                continue
            placed.append((rect, text))

    def draw_selection(self) -> None:
        history = self.history
        row = None if history is None or self.selected is None else history.row_of(self.selected)
        if history is None or row is None:
            set_scatter(self.ring, [], [])
            return
        xi, yi = self.axes()
        set_scatter(self.ring, [history.values[row, xi]], [history.values[row, yi]])

    def pick(self, x: float, y: float) -> int | None:
        index = self.cloud.nearest(x, y, self._pixel())
        return None if index is None or self.history is None else int(self.history.numbers[index])


