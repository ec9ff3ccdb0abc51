"""A trial's genome as a heatmap on the (model/parameter × lane/layer group) grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from mergestudio.search.dashboard import GenomeLayout
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from mergestudio_qt.widgets.evolve_items import keep_axes_rendering, keep_rendering

# ---- the genome heatmap -------------------------------------------------------------------


class GenomeHeatmap(QWidget):
    """A trial's genes on the (model/parameter × lane/layer group) grid, coloured by
    value with a colour bar over the genes' bounds, each cell labelled."""

    MAX_LABELLED_CELLS = 96
    COLORMAP = pg.colormap.get("cividis")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.title = QLabel("Genome", self)
        self.title.setObjectName("sectionTitle")
        # Wrapped, so a long title never widens the inspector: that moved the splitter and
        # re-laid out (and repainted) the whole dashboard when the first genome came in.
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot_item: pg.PlotItem = self.plot.getPlotItem()
        self.plot_item.hideButtons()
        self.plot_item.invertY(True)  # first row on top, like a table
        self.plot_item.setLabel("bottom", "lane / layer group")
        for name in ("left", "bottom"):  # named ticks: a '(x0.001)' scale prefix means nothing
            self.plot_item.getAxis(name).enableAutoSIPrefix(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        keep_rendering(self.image)
        self.plot_item.addItem(self.image)
        self.colorbar = pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=self.COLORMAP, interactive=False, width=12, label="value"
        )
        self.colorbar.axis.enableAutoSIPrefix(False)
        self.colorbar.setImageItem(self.image, insert_in=self.plot_item)
        self.plot_item.setContentsMargins(0, 8, 0, 2)  # room for the colour bar's top tick label
        keep_axes_rendering(self.plot_item)
        keep_axes_rendering(self.colorbar)
        self.cell_labels: list[pg.TextItem] = []
        self.values = np.zeros((0, 0))
        self._shown: tuple[Any, ...] = ()
        layout.addWidget(self.plot, 1)

    def show_genome(
        self,
        layout: GenomeLayout,
        genes: np.ndarray,
        bounds: list[tuple[float, float]],
        title: str,
        param: str,
    ) -> None:
        # The page shows the best trial's genome on every redraw while nothing is
        # selected: the same genome again costs nothing (its labels are dozens of items).
        shown = (layout, tuple(np.asarray(genes, dtype=np.float64).tolist()), tuple(bounds), title, param)
        if shown == self._shown:
            return
        self._shown = shown
        self.values = layout.grid(list(genes))
        lows = {low for low, _ in bounds}
        highs = {high for _, high in bounds}
        if len(lows) == 1 and len(highs) == 1:
            low, high = lows.pop(), highs.pop()
            label, bounds_text, shown = param, f"{param} within {low:g} – {high:g}", self.values
        else:  # different bounds per gene: compare positions within the bounds
            low, high, label = 0.0, 1.0, "position in bounds"
            bounds_text = "colour: each gene's position within its own bounds"
            spans = layout.grid([(v - lo) / (hi - lo) for v, (lo, hi) in zip(genes, bounds, strict=True)])
            shown = spans
        # The bounds go in the (wrapping) title, not the colour bar's axis label: a vertical
        # label longer than the plot is tall was cut at both ends.
        self.title.setText(f"{title}<br><span style='font-weight: normal; font-size: 9pt'>{bounds_text}</span>")
        self.colorbar.setLevels(low=low, high=high)
        self.colorbar.getAxis("left").setLabel(label)
        middle = (low + high) / 2
        self.image.setImage(np.where(np.isnan(shown), middle, shown), levels=(low, high))
        rows, columns = self.values.shape
        self.image.setRect(-0.5, -0.5, columns, rows)
        self.plot_item.getAxis("left").setTicks([list(enumerate(layout.rows))])
        self.plot_item.getAxis("bottom").setTicks([list(enumerate(layout.columns))])
        for text in self.cell_labels:
            self.plot_item.removeItem(text)
        self.cell_labels = []
        if rows * columns <= self.MAX_LABELLED_CELLS:
            for (row, column), value in np.ndenumerate(self.values):
                if np.isnan(value):
                    continue
                fraction = (shown[row, column] - low) / (high - low) if high > low else 0.5
                light = self.COLORMAP.mapToQColor(float(np.clip(fraction, 0, 1))).lightness() > 140
                text = pg.TextItem(f"{value:.2f}", color="k" if light else "w", anchor=(0.5, 0.5))
                text.setPos(column, row)
                keep_rendering(text)
                self.plot_item.addItem(text)
                self.cell_labels.append(text)

    def clear_genome(self, text: str) -> None:
        self._shown = ()
        self.title.setText(text)
        self.values = np.zeros((0, 0))
        self.image.clear()
        for label in self.cell_labels:
            self.plot_item.removeItem(label)
        self.cell_labels = []
