"""The frame every Evolve plot shares: a titled pyqtgraph plot with choosers in its
header, hover tooltips, click-to-select, and views that follow the data in steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import TrialHistory
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolTip, QVBoxLayout, QWidget

from mergestudio_qt.widgets.elide import ElidingComboBox
from mergestudio_qt.widgets.evolve_items import HOVER_RATE_HZ, Describe, keep_axes_rendering

# ---- the common frame ---------------------------------------------------------------------


class TrialPlot(QWidget):
    """A titled plot with optional choosers in its header; hovering a trial shows its
    values, clicking it emits ``trial_clicked``."""

    trial_clicked = Signal(int)

    def __init__(
        self, title: str, parent: QWidget | None = None, grid: tuple[bool, bool] = (False, True)
    ) -> None:
        super().__init__(parent)
        self.describe: Describe = lambda number: f"trial {number}"
        self.history: TrialHistory | None = None
        self.baselines: list[Baseline] = []
        self.selected: int | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.header = QHBoxLayout()
        self.header.setContentsMargins(4, 0, 4, 0)
        self.header.setSpacing(6)
        self.title = QLabel(title, self)
        self.title.setObjectName("sectionTitle")
        self.title.setMinimumWidth(self.title.sizeHint().width())  # a title is never cut
        self.header.addWidget(self.title)
        self.header.addStretch(1)
        layout.addLayout(self.header)
        # Choosers get a line of their own under the title: beside it, a plot a quarter
        # of a 1024-px window wide had room for neither ("Pareto fro", "rever").
        self.choosers = QHBoxLayout()
        self.choosers.setContentsMargins(4, 0, 4, 0)
        self.choosers.setSpacing(6)
        self._choosers_added = False
        self._layout = layout
        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.setMinimumHeight(160)
        self.plot_item: pg.PlotItem = self.plot.getPlotItem()
        # Grid lines cost a few ms of every repaint each: only where they help reading.
        self.plot_item.showGrid(x=grid[0], y=grid[1], alpha=0.15)
        for name in ("left", "bottom"):
            # Values are fractions or perplexities: '(x0.001)' scale prefixes only confuse.
            self.plot_item.getAxis(name).enableAutoSIPrefix(False)
        keep_axes_rendering(self.plot_item)
        # The view follows the data in steps (``fit``), not by pyqtgraph's auto-range: that
        # re-fits to every new extreme, and each re-fit re-lays out the axes and renders
        # everything in the plot at a new scale. Panning or zooming an axis stops it
        # following; the plot's "A" button makes both follow again.
        self.following = [True, True]
        self._fitted: list[tuple[float, float] | None] = [None, None]
        box = self.plot_item.getViewBox()
        box.disableAutoRange()
        box.sigRangeChangedManually.connect(self._stop_following)
        self.plot_item.autoBtn.clicked.connect(self._follow_again)
        self.legend = QLabel(self)
        self.legend.setObjectName("hint")
        self.legend.setStyleSheet("font-size: 9pt")
        self.legend.setWordWrap(True)
        self.legend.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot, 1)
        self._hover = pg.SignalProxy(
            self.plot.scene().sigMouseMoved, rateLimit=HOVER_RATE_HZ, slot=self._hovered
        )
        self.plot.scene().sigMouseClicked.connect(self._clicked)

    def add_chooser(self, label: str, tip: str) -> QComboBox:
        if not self._choosers_added:
            self._choosers_added = True
            self.choosers.addStretch(1)
            self._layout.insertLayout(1, self.choosers)
        text = QLabel(label, self)
        text.setToolTip(tip)
        combo = ElidingComboBox(self)
        self.choosers.insertWidget(self.choosers.count() - 1, text)
        self.choosers.insertWidget(self.choosers.count() - 1, combo, 1)
        return combo

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        """Redraw every series from ``history`` (subclasses)."""
        self.history, self.baselines = history, baselines

    # subclasses: which trial is at a view position
    def pick(self, x: float, y: float) -> int | None:
        return None

    def tooltip_at(self, x: float, y: float) -> str:
        number = self.pick(x, y)
        return "" if number is None else self.describe(number)

    def _pixel(self) -> tuple[float, float]:
        width, height = self.plot_item.getViewBox().viewPixelSize()
        return float(width), float(height)

    def _view_pos(self, scene_pos: QPointF) -> QPointF | None:
        box = self.plot_item.getViewBox()
        if not box.sceneBoundingRect().contains(scene_pos):
            return None
        return box.mapSceneToView(scene_pos)

    def _hovered(self, args: tuple[Any, ...]) -> None:
        pos = self._view_pos(args[0])
        text = "" if pos is None else self.tooltip_at(pos.x(), pos.y())
        if text:
            QToolTip.showText(QCursor.pos(), text, self.plot)
        else:
            QToolTip.hideText()

    def _clicked(self, event: Any) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        pos = self._view_pos(event.scenePos())
        number = None if pos is None else self.pick(pos.x(), pos.y())
        if number is not None:
            self.trial_clicked.emit(number)

    def fit(self, x: tuple[float, float] | None = None, y: tuple[float, float] | None = None) -> None:
        """Show the view ranges ``x`` and ``y`` (None: leave that axis) on the axes that
        follow the data; the view changes only when a range does."""
        box = self.plot_item.getViewBox()
        for axis, wanted in enumerate((x, y)):
            if wanted is None:
                continue
            self._fitted[axis] = wanted
            if self.following[axis] and tuple(box.viewRange()[axis]) != wanted:
                box.setRange(
                    xRange=wanted if axis == 0 else None, yRange=wanted if axis == 1 else None, padding=0
                )

    def fit_evaluations(self, count: int) -> None:
        """The x axis (evaluations) grows in steps of half a power of ten, not with every
        trial."""
        step = max(1.0, 10 ** np.floor(np.log10(max(count, 1))) / 2)
        high = max(step, np.ceil(max(count, 1) / step) * step)
        self.fit(x=(0.0, float(high) + 0.5))

    def _stop_following(self, mask: Sequence[bool]) -> None:
        self.following = [follow and not moved for follow, moved in zip(self.following, mask, strict=False)]

    def _follow_again(self) -> None:
        self.following = [True, True]
        self.plot_item.getViewBox().disableAutoRange()  # the button turned pyqtgraph's on
        self.fit(*self._fitted)

    def set_selected(self, number: int | None) -> None:
        self.selected = number
        self.draw_selection()

    def draw_selection(self) -> None:  # subclasses
        return None


def objective_items(combo: QComboBox, history: TrialHistory, keep: int) -> None:
    """Fill ``combo`` with the objectives (keeping index ``keep`` when it exists)."""
    names = [o.name for o in history.objectives]
    if [combo.itemData(i) for i in range(combo.count())] == names:
        return
    combo.blockSignals(True)
    combo.clear()
    for objective in history.objectives:
        combo.addItem(objective.name, objective.name)
        combo.setItemData(combo.count() - 1, objective.label, Qt.ItemDataRole.ToolTipRole)
    combo.setCurrentIndex(min(keep, combo.count() - 1))
    combo.blockSignals(False)


