"""The Evolve page's Dashboard tab: the four plots of a run (fitness, Pareto front,
hypervolume, parallel coordinates) beside the trial inspector. The page decides when
each part is redrawn; this module only builds and lays them out, and renders the hidden
tab ahead so its first paint does not land during a search."""

from __future__ import annotations

from functools import partial

from PySide6.QtCore import QRect, Qt, QTimer
from PySide6.QtWidgets import QGridLayout, QSplitter, QWidget

from mergestudio_qt.widgets.evolve_fitness import FitnessPlot, HypervolumePlot
from mergestudio_qt.widgets.evolve_inspector import TrialInspector
from mergestudio_qt.widgets.evolve_parallel import ParallelPlot
from mergestudio_qt.widgets.evolve_pareto import ParetoPlot
from mergestudio_qt.widgets.evolve_trial_plot import TrialPlot

RENDER_AHEAD_STEP_MS = 30


class EvolveDashboard(QSplitter):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setObjectName("evolveSplitter")
        plots = QWidget(self)
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 6, 6, 0)
        grid.setSpacing(10)
        self.fitness_plot = FitnessPlot(plots)
        self.pareto_plot = ParetoPlot(plots)
        self.hypervolume_plot = HypervolumePlot(plots)
        self.parallel_plot = ParallelPlot(plots)
        self.plots: list[TrialPlot] = [
            self.fitness_plot,
            self.pareto_plot,
            self.hypervolume_plot,
            self.parallel_plot,
        ]
        grid.addWidget(self.fitness_plot, 0, 0)
        grid.addWidget(self.pareto_plot, 0, 1)
        grid.addWidget(self.hypervolume_plot, 1, 0)
        grid.addWidget(self.parallel_plot, 1, 1)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 2)
        self.inspector = TrialInspector(self)
        self.addWidget(plots)
        self.addWidget(self.inspector)
        self.setStretchFactor(0, 5)
        self.setStretchFactor(1, 3)
        self.setSizes([730, 390])

    def render_ahead(self, size_of_tab: QWidget) -> None:
        """Render the hidden dashboard off screen once, a piece per event-loop turn, while
        the Setup tab is read. Its first paint (fonts, style, layouts: 70-100 ms here) then
        does not come all at once when Start shows it, during the search."""
        if self.isVisible():
            return  # shown already: painted for real
        self.resize(size_of_tab.size())
        pieces: list[QWidget] = [*self.plots, self.inspector.table, self.inspector.detail_tabs]
        self.grab(QRect(0, 0, 1, 1))  # lays the pieces out at their real sizes
        for turn, piece in enumerate(pieces, start=1):
            QTimer.singleShot(turn * RENDER_AHEAD_STEP_MS, self, partial(self._render_piece, piece))

    def _render_piece(self, piece: QWidget) -> None:
        if not self.isVisible():
            piece.grab()
