"""Plots against evaluations: one objective's fitness (points, best so far, generation
bands, baselines) and the front's hypervolume."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import TrialHistory, axis_range, best_so_far, generation_bands
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from mergestudio_qt.widgets.evolve_items import (
    ACCENT,
    FADED_ALPHA,
    MERGE,
    PARENT,
    SELECTED,
    BandItem,
    PointCloud,
    group_baselines,
    keep_rendering,
    label_fill,
    legend_html,
    ring,
    set_objective_label,
    set_scatter,
    short_label,
    step_points,
    with_alpha,
)
from mergestudio_qt.widgets.evolve_trial_plot import TrialPlot, objective_items

BASELINE_LABEL_Z = 20  # pyqtgraph stacks items by insertion: points added later would cover labels

# ---- fitness vs evaluations ---------------------------------------------------------------


class FitnessPlot(TrialPlot):
    """One objective against evaluations: every trial a point (front members solid),
    the best so far as a step line, each generation's mean ± std as a band, and the
    baselines as labelled dashed lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Fitness", parent)
        self.objective = self.add_chooser("Objective", "Which objective to plot against evaluations")
        self.objective.currentIndexChanged.connect(self._objective_chosen)
        item = self.plot_item
        item.setLabel("bottom", "evaluations")
        # Not FillBetweenItem: it rebuilds its path from two curves' paths, ~20 ms for a
        # few hundred generations.
        self.band = BandItem(with_alpha(ACCENT, 40))
        item.addItem(self.band)
        # Solid and thin: dash patterns and wide pens are what a 5,000-trial repaint pays for.
        # Plain curves, not PlotDataItem: a point per generation or per step is few enough
        # to draw whole, and PlotDataItem's bookkeeping costs ~0.3 ms a setData.
        self.mean = pg.PlotCurveItem(pen=pg.mkPen("#1e3a8a", width=1))
        self.cloud = PointCloud(6.0)
        self.cloud.set_palette([with_alpha(ACCENT, FADED_ALPHA), with_alpha(ACCENT)])
        item.addItem(self.cloud)
        # Steps are horizontal and vertical: antialiasing would only blur them.
        self.best = pg.PlotCurveItem(pen=pg.mkPen(SELECTED, width=2), antialias=False)
        for line in (self.mean, self.best):
            item.addItem(line)
        self.ring = ring(SELECTED, 15)
        keep_rendering(self.ring)
        item.addItem(self.ring)
        self.legend.setText(
            legend_html(
                [
                    ("●", "#9db5ea", "trial"),
                    ("●", ACCENT, "on the front"),
                    ("━", SELECTED, "best so far"),
                    ("━", "#1e3a8a", "generation mean ± std"),
                    ("┄", MERGE, "baselines"),
                ]
            )
        )
        self.baseline_lines: list[pg.InfiniteLine] = []
        self._baseline_key: tuple[Any, ...] = ()
        item.getViewBox().sigResized.connect(self._fit_axis_label)

    def _fit_axis_label(self, *_args: object) -> None:
        if self.history is not None and self.history.objectives:
            set_objective_label(self.plot_item, "left", self.history.objectives[self.objective_index()])

    def _objective_chosen(self, _index: int) -> None:
        if self.history is not None:
            self.redraw(self.history, self.baselines)

    def objective_index(self) -> int:
        return max(0, self.objective.currentIndex())

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        self.history, self.baselines = history, baselines
        objective_items(self.objective, history, self.objective_index())
        if not history.objectives:
            return
        index = self.objective_index()
        axis = history.objectives[index]
        values = history.values[:, index]
        x = history.evaluations.astype(np.float64)
        set_objective_label(self.plot_item, "left", axis)
        front = history.front_mask()
        self.cloud.set_points(x, values, front.astype(np.int64), ~front, (history, index))
        self.best.setData(*step_points(x, best_so_far(values, axis.maximize)))
        bands = generation_bands(history.generations, values)
        self.mean.setData(bands.x, bands.mean)
        self.band.set_band(bands.x, bands.mean - bands.std, bands.mean + bands.std)
        chosen = self._chosen_baselines(axis.name, axis.maximize)
        shown = [b.objectives[axis.name] for b in chosen]
        y_range = axis_range(values, bands.mean - bands.std, bands.mean + bands.std, shown)
        self._draw_baselines(axis.name, chosen, y_range)
        self.fit_evaluations(len(history))
        self.fit(y=y_range)
        self.draw_selection()

    def _chosen_baselines(self, name: str, maximize: bool) -> list[Baseline]:
        """The default merges and the best parent on this objective (more would pile up)."""
        chosen = [b for b in self.baselines if b.kind == "merge" and name in b.objectives]
        parents = [b for b in self.baselines if b.kind == "parent" and name in b.objectives]
        if parents:
            pick = max if maximize else min
            chosen.append(pick(parents, key=lambda b: b.objectives[name]))
        return chosen

    def _draw_baselines(
        self, name: str, chosen: list[Baseline], y_range: tuple[float, float] | None
    ) -> None:
        """A dashed line per baseline value, labelled at its right end: above the line,
        or below it near the top of the view, where a label above would be cut off.
        ``y_range``: the view's (None: no values yet)."""
        top = math.inf if y_range is None else y_range[1] - 0.2 * (y_range[1] - y_range[0])
        key = (name, tuple((b.label, b.objectives[name], b.objectives[name] > top) for b in chosen))
        if key == self._baseline_key:
            return
        self._baseline_key = key
        for line in self.baseline_lines:
            self.plot_item.removeItem(line)
        self.baseline_lines = []
        for i, (label, kind, (value,), members) in enumerate(
            group_baselines(chosen, lambda b: (b.objectives[name],))
        ):
            color = MERGE if kind == "merge" else PARENT
            anchor = (1, 0) if value > top else (1, 1)  # text below the line near the top
            line = pg.InfiniteLine(
                pos=value,
                angle=0,
                movable=False,
                pen=pg.mkPen(color, width=1, style=Qt.PenStyle.DashLine),
                label=short_label(members, 10),
                labelOpts={
                    "position": 0.97 - 0.12 * (i % 3),
                    "color": color,
                    "anchors": [anchor, anchor],
                    "fill": label_fill(),
                },
            )
            line.setToolTip(f"{label}: {value:.4g} ({members[0].estimator})")
            line.setZValue(BASELINE_LABEL_Z)  # its label above the trial points, on a backdrop
            keep_rendering(line)
            self.plot_item.addItem(line)
            self.baseline_lines.append(line)

    def draw_selection(self) -> None:
        history = self.history
        row = None if history is None or self.selected is None else history.row_of(self.selected)
        if history is None or row is None:
            set_scatter(self.ring, [], [])
            return
        set_scatter(self.ring, [row + 1.0], [history.values[row, self.objective_index()]])

    def pick(self, x: float, y: float) -> int | None:
        index = self.cloud.nearest(x, y, self._pixel())
        return None if index is None or self.history is None else int(self.history.numbers[index])


# ---- hypervolume --------------------------------------------------------------------------


class HypervolumePlot(TrialPlot):
    """Hypervolume of the study's front after every evaluation (the engine's reference:
    the spec's, or the worst value seen so far on each axis)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Hypervolume", parent)
        item = self.plot_item
        item.setLabel("bottom", "evaluations")
        item.setLabel("left", "hypervolume")
        # The steps only (a few hundred), crisp: antialiasing would only blur them.
        self.curve = pg.PlotCurveItem(pen=pg.mkPen(ACCENT, width=1), antialias=False)
        item.addItem(self.curve)
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(SELECTED, width=1))
        self.marker.setVisible(False)
        item.addItem(self.marker)
        self.note = QLabel("", self)
        self.note.setObjectName("hint")
        self.header.addWidget(self.note)
        self.legend.setText("of the Pareto front, up to the worst value seen on each objective")
        self.zero_note = pg.TextItem(
            "0 so far: no trial beats the reference on every objective", color="#6b7280", anchor=(0, 1.05)
        )
        self.zero_note.setVisible(False)
        # Wrapped to the plot's width, which is a quarter of the window at 1024 px.
        item.getViewBox().sigResized.connect(self._wrap_zero_note)
        keep_rendering(self.zero_note)
        item.addItem(self.zero_note)

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        self.history, self.baselines = history, baselines
        x = history.evaluations.astype(np.float64)
        hv = history.hypervolume
        self.fit_evaluations(len(history))
        self.curve.setData(*step_points(x, hv))
        units = (
            " × ".join(o.unit for o in history.objectives) if len(history.study_directions) > 1 else "score"
        )
        self.plot_item.getAxis("left").setToolTip(f"volume in objective units ({units})")
        self.note.setText(f"{hv[-1]:.4g}" if hv.size else "")
        flat_zero = bool(hv.size) and not np.any(hv > 0)
        self.zero_note.setVisible(flat_zero)
        if flat_zero:
            self.fit(y=(-0.05, 1.05))
            self.zero_note.setPos(float(x[0]), 0.0)
        else:
            self.fit(y=axis_range(hv))
        self.draw_selection()

    def _wrap_zero_note(self, *_args: object) -> None:
        width = float(self.plot_item.getViewBox().width())
        if width > 40:
            self.zero_note.setTextWidth(width - 12)

    def draw_selection(self) -> None:
        history = self.history
        row = None if history is None or self.selected is None else history.row_of(self.selected)
        self.marker.setVisible(row is not None)
        if row is not None:
            self.marker.setValue(row + 1)

    def pick(self, x: float, y: float) -> int | None:
        if self.history is None or not len(self.history):
            return None
        row = round(x) - 1
        return int(self.history.numbers[row]) if 0 <= row < len(self.history) else None


