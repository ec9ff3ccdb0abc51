"""Inspect: where the task vectors of the chosen models agree and fight, before merging.

Heatmaps (layer × module group) of the sign-conflict rate, cosine similarity and relative
norm fill in as layers complete; beside them the model-pair cosine matrix, the magnitude
histograms with a draggable density line showing what TIES trimming and DARE would keep,
and singular spectra. The analysis runs in a worker thread with progress and Cancel, and
is cached by the engine, so reopening the same models is instant.

Each view says in a sentence what it shows. From the histograms the engine suggests a
density (every task vector keeps 90 % of its L1 mass); "Use in recipe" writes it into the
recipe, and the page's Density follows the recipe's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from mergestudio.events import Progress
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.context import Studio
from mergestudio_qt.pages import PageSpec, register_page
from mergestudio_qt.widgets.inspect_advice import DensityAdvice, recipe_density, recipe_with_density
from mergestudio_qt.widgets.lora_extract import ExtractLoraBar

REDRAW_MS = 50  # heatmaps and progress redraw at 20 Hz at most, however fast layers finish
HEATMAP_GROUPS = ("attention", "mlp", "norm", "other")
# metric key -> (title, colour-bar range, centre of the diverging map or None for "the mean")
METRICS: dict[str, tuple[str, tuple[float, float] | None, float | None]] = {
    "conflict": ("Sign-conflict rate (after trimming)", (0.0, 1.0), 0.5),
    "cosine": ("Cosine similarity (mean over pairs)", (-1.0, 1.0), 0.0),
    "relative_norm": ("Relative norm ‖τ‖/‖θ‖ (mean over models)", None, None),
}
# What each view means, in a sentence a newcomer can act on.
EXPLANATIONS: dict[str, str] = {
    "conflict": "Where the task vectors, trimmed to the Density, push an entry in opposite "
    "directions. Around 50 % is what unrelated fine-tunes give; red cells are where TIES's "
    "sign election decides most.",
    "cosine": "How aligned the fine-tunes' changes are per layer: near 0 means separate "
    "skills that add up well; negative means they undo each other there.",
    "relative_norm": "How far the fine-tunes moved each layer from the base, relative to its "
    "weights: the layers that stand out are the ones the fine-tuning changed most.",
    "pairs": "Cosine of the whole task vectors, pair by pair: near 0 is usual for different "
    "skills; a high value means two models learned much the same thing.",
    "histograms": "How large the entries of each task vector are. Drag the red line to see "
    "what trimming at that magnitude keeps; the suggested density is where each keeps 90 % of its mass.",
    "spectra": "Singular values of each task matrix: a fast drop means the change is low-rank "
    "(LoRA-like) and SVD-based methods keep it with few directions.",
}
EMPTY_STATE = (
    "<h3>Where do the fine-tunes agree, and where do they fight?</h3>"
    "<p>Press <b>Analyze</b> to compare each fine-tune's task vector (its difference from the "
    "base) layer by layer: sign conflicts after trimming, cosine similarity, how far each moved, "
    "their magnitudes and spectra.</p>"
    "<p>It reads every weight once (a few seconds for the demo) and caches the result. "
    "Afterwards the page suggests a density for TIES-style methods that you can use in the recipe.</p>"
)
MODEL_PENS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def metric_value(summary: dict[str, Any], metric: str) -> float:
    """One heatmap cell from a scope summary (NaN when undefined)."""
    if metric == "conflict":
        value = summary["sign_conflict_rate"]["overall"]
    elif metric == "cosine":
        value = summary["cosine"]["overall"]
    else:
        norms = [v for v in summary["relative_norm"] if v is not None]
        value = sum(norms) / len(norms) if norms else None
    return math.nan if value is None else float(value)


class AnalysisJob(jobs.Job):
    """Runs ``mergestudio.analysis.analyze``; ``layer_done`` carries each ``LayerAnalyzed``."""

    layer_done = Signal(object)

    def __init__(
        self, base: str, models: list[str], density: float, cache_dir: str | None, threads: int
    ) -> None:
        super().__init__()
        self.base, self.models, self.density = base, models, density
        self.cache_dir, self.threads = cache_dir, threads

    def work(self) -> Any:
        from mergestudio.analysis import analyze

        return analyze(
            self.base,
            self.models,
            self.density,
            events=self.events,
            cancel=self.cancel_token,
            cache_dir=self.cache_dir,
            threads=self.threads or 1,
        )

    def events(self, event: object) -> None:
        from mergestudio.analysis import LayerAnalyzed

        if isinstance(event, LayerAnalyzed):
            self.layer_done.emit(event)
        else:
            super().events(event)


class Heatmap(QWidget):
    """Blocks (x: layers, or a family's named blocks such as IN04) × lanes (y: the
    family's module groups) as one ImageItem with a diverging colour bar."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.metric_key = "conflict"
        self.cells: dict[tuple[int, str], dict[str, Any]] = {}
        self.layer_count = 0
        self.block_labels: dict[int, str] = {}  # block index → label, from the family
        self.lane_order: list[str] = list(HEATMAP_GROUPS)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.getPlotItem().setLabel("bottom", "layer")
        for name in ("left", "bottom"):
            self.plot.getPlotItem().getAxis(name).enableAutoSIPrefix(False)  # layers, not "x0.001"
        self.plot.getPlotItem().getAxis("left").setWidth(72)  # room for "attention"
        self.plot.invertY(True)  # first group on top, like a table
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.colorbar = pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=pg.colormap.get("CET-D1"), interactive=False
        )
        self.colorbar.setImageItem(self.image, insert_in=self.plot.getPlotItem())
        self.colorbar.axis.setWidth(40)  # the bar's tick labels, uncut at the right edge
        layout.addWidget(self.plot)

    def clear(self, layer_count: int) -> None:
        self.cells.clear()
        self.block_labels = {}
        self.layer_count = layer_count
        self.redraw()

    def set_cell(self, layer: int, group: str, summary: dict[str, Any]) -> None:
        self.cells[(layer, group)] = summary
        self.layer_count = max(self.layer_count, layer + 1)

    def set_metric(self, metric: str) -> None:
        self.metric_key = metric
        self.redraw()

    def groups(self) -> list[str]:
        """Rows of the heatmap: the module groups that have per-layer tensors (attention,
        MLP and norms before anything is known)."""
        present = {group for _, group in self.cells}
        ordered = [g for g in self.lane_order if g in present] + sorted(present - set(self.lane_order))
        return ordered or list(HEATMAP_GROUPS[:3])

    def grid(self) -> np.ndarray:
        """(groups, layers) float64 values of the current metric, NaN where not yet known."""
        groups = self.groups()
        values = np.full((len(groups), max(self.layer_count, 1)), np.nan)
        for (layer, group), summary in self.cells.items():
            if group in groups:
                values[groups.index(group), layer] = metric_value(summary, self.metric_key)
        return values

    def redraw(self) -> None:
        values = self.grid()
        title, fixed, centre = METRICS[self.metric_key]
        # A long title's parenthesis goes on a second line: the plot is narrow at 1024 px
        # and pyqtgraph's title never wraps or elides by itself.
        self.plot.getPlotItem().setTitle(title.replace(" (", "<br>(", 1))
        known = values[~np.isnan(values)]
        if fixed is not None:
            low, high = fixed
        elif known.size:
            # Diverging around the mean: cells above and below the typical norm stand out.
            mean = float(known.mean())
            spread = max(float(np.abs(known - mean).max()), 1e-12)
            low, high = mean - spread, mean + spread
        else:
            low, high = 0.0, 1.0
        self.colorbar.setLevels(low=low, high=high)
        # NaN cells (not analysed yet) are drawn at the centre colour.
        middle = centre if centre is not None else (low + high) / 2
        self.image.setImage(np.where(np.isnan(values), middle, values), levels=(low, high))
        left = self.plot.getPlotItem().getAxis("left")
        left.setTicks([list(enumerate(self.groups()))])
        # Room for the longest lane name ("cross-attention", "expert 12").
        longest = max((self.fontMetrics().horizontalAdvance(g) for g in self.groups()), default=0)
        left.setWidth(max(72, longest + 16))
        ticks = [(i, self.block_labels.get(i, label)) for i, label in _layer_ticks(values.shape[1])]
        self.plot.getPlotItem().getAxis("bottom").setTicks([ticks])
        self.image.setRect(-0.5, -0.5, values.shape[1], values.shape[0])


def _layer_ticks(layers: int, most: int = 12) -> list[tuple[int, str]]:
    """Whole-layer ticks under the cells' centres, at most ``most`` of them."""
    step = max(1, -(-layers // most))
    return [(layer, str(layer)) for layer in range(0, layers, step)]


class PairMatrix(QWidget):
    """The model-pair cosine matrix of the whole model, with its colour bar."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plot = pg.PlotWidget(title="Cosine similarity of task vectors")
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.invertY(True)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        # No colour bar: every cell prints its value, and in a narrow tab the bar's labels
        # were cut at the right edge.
        self.image.setColorMap(pg.colormap.get("CET-D1"))
        self.labels: list[pg.TextItem] = []
        layout.addWidget(self.plot)

    def show_matrix(self, matrix: list[list[float | None]], names: list[str]) -> None:
        values = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
        self.image.setImage(np.nan_to_num(values), levels=(-1.0, 1.0))
        self.image.setRect(-0.5, -0.5, len(names), len(names))
        ticks = [list(enumerate(names))]
        self.plot.getPlotItem().getAxis("bottom").setTicks(ticks)
        self.plot.getPlotItem().getAxis("left").setTicks(ticks)
        for label in self.labels:
            self.plot.removeItem(label)
        self.labels = []
        for (row, column), value in np.ndenumerate(values):
            label = pg.TextItem("—" if np.isnan(value) else f"{value:.2f}", anchor=(0.5, 0.5), color="k")
            label.setPos(column, row)
            self.plot.addItem(label)
            self.labels.append(label)


class HistogramView(QWidget):
    """log₁₀|τ| histograms per model and a draggable threshold line: what magnitude
    trimming at that threshold keeps (estimated from the histogram), next to DARE."""

    density_picked = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from mergestudio.analysis.histogram import histogram_edges

        self.edges = np.asarray(histogram_edges())
        self.curves: list[dict[str, np.ndarray]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.names: list[str] = []
        self.plot = pg.PlotWidget(title="Magnitudes of the task vectors")
        self.plot.setLabel("bottom", "log₁₀ |τ|")
        self.plot.setLabel("left", "entries")
        # The legend is a line above the plot, not an item in it: it never hides a curve.
        self.legend = QLabel("", self)
        self.legend.setWordWrap(True)
        self.items: list[pg.PlotDataItem] = []
        self.line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen("#C44E52", width=2))
        self.line.sigPositionChanged.connect(self._line_moved)
        self.line.sigPositionChangeFinished.connect(self._line_released)
        self.plot.addItem(self.line)
        self.readout = QLabel("Run an analysis to see the histograms.", self)
        self.readout.setWordWrap(True)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.readout)

    def show_histograms(self, summary: dict[str, Any], names: list[str], density: float) -> None:
        from mergestudio.analysis.histogram import kept_curve

        counts = summary["histogram"]["counts"]
        zeros = summary["histogram"]["zeros"]
        self.curves = [kept_curve(np.asarray(c), int(z)) for c, z in zip(counts, zeros, strict=True)]
        x = np.log10(self.edges)
        self.names = list(names)
        self.legend.setText(legend_html(names))
        while len(self.items) < len(names):
            pen = pg.mkPen(MODEL_PENS[len(self.items) % len(MODEL_PENS)], width=2)
            self.items.append(self.plot.plot(stepMode="center", pen=pen))
        for item, row in zip(self.items, counts, strict=False):
            item.setData(x, np.asarray(row[1:-1], dtype=float))
        for item in self.items[len(names) :]:
            item.setData([], [])
        populated = np.flatnonzero(np.asarray(counts)[:, 1:-1].sum(axis=0))
        if populated.size:  # show the occupied octaves, not the whole fixed window
            self.plot.setXRange(x[populated[0]] - 0.25, x[populated[-1] + 1] + 0.25, padding=0)
        self.set_density(density)

    def threshold_for(self, density: float) -> float:
        """log₁₀ of the threshold at which the first model keeps ``density`` (interpolated)."""
        if not self.curves:
            return 0.0
        curve = self.curves[0]
        # density falls as the threshold rises: interpolate on the reversed arrays.
        return float(np.interp(density, curve["density"][::-1], np.log10(curve["thresholds"])[::-1]))

    def set_density(self, density: float) -> None:
        self.line.blockSignals(True)
        self.line.setValue(self.threshold_for(density))
        self.line.blockSignals(False)
        self._describe(self.line.value())

    def kept_at(self, log_threshold: float) -> list[tuple[float, float, float]]:
        """Per model (density, L1 fraction, energy fraction) kept at a threshold."""
        out = []
        for curve in self.curves:
            x = np.log10(curve["thresholds"])
            out.append(
                tuple(float(np.interp(log_threshold, x, curve[k])) for k in ("density", "l1", "energy"))
            )
        return out  # type: ignore[return-value]

    def _line_moved(self) -> None:
        self._describe(self.line.value())

    def _line_released(self) -> None:
        kept = self.kept_at(self.line.value())
        if kept:
            self.density_picked.emit(round(kept[0][0], 3))

    def _describe(self, log_threshold: float) -> None:
        kept = self.kept_at(log_threshold)
        if not kept:
            return
        density = kept[0][0]
        parts = [f"|τ| ≥ {10**log_threshold:.3g}: TIES trimming keeps"]
        for index, (share, l1, energy) in enumerate(kept):
            name = self.names[index] if index < len(self.names) else f"model {index + 1}"
            parts.append(f"{name}: {share:.1%} of entries, {l1:.0%} of L1, {energy:.0%} of energy;")
        parts.append(f"DARE at density {density:.2f} keeps {density:.0%} of L1 and energy in expectation.")
        self.readout.setText(" ".join(parts))


class SpectrumView(QWidget):
    """Normalised singular values (σ / σ₁) of one task matrix per model."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.results: list[Any] = []
        self.names: list[str] = []
        self.rule = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.choice = QComboBox(self)
        self.choice.currentIndexChanged.connect(self._show)
        self.plot = pg.PlotWidget(title="Singular spectra of task matrices")
        self.plot.setLabel("bottom", "index")
        self.plot.setLabel("left", "σ / σ₁")
        self.plot.setLogMode(y=True)
        self.plot.addLegend(offset=(-10, 10))
        self.items: list[pg.PlotDataItem] = []
        self.note = QLabel("", self)
        self.note.setWordWrap(True)
        layout.addWidget(self.choice)
        layout.addWidget(self.plot)
        layout.addWidget(self.note)

    def show_spectra(self, results: list[Any], rule: str, names: list[str]) -> None:
        self.results = results
        self.names = names
        self.rule = rule
        self.note.setText(f"Spectra: {rule}" if results else f"No spectra ({rule}).")
        self.choice.blockSignals(True)
        self.choice.clear()
        self.choice.addItems([r.name for r in results])
        self.choice.blockSignals(False)
        self._show(0)

    def _show(self, index: int) -> None:
        if not 0 <= index < len(self.results):
            for item in self.items:
                item.setData([], [])
            return
        models = self.results[index].models
        while len(self.items) < len(models):
            pen = pg.mkPen(MODEL_PENS[len(self.items) % len(MODEL_PENS)], width=2)
            self.items.append(self.plot.plot(pen=pen, name=self.names[len(self.items)]))
        for item, record in zip(self.items, models, strict=False):
            values = np.asarray(record["singular_values"], dtype=float)
            top = values[0] if values.size and values[0] > 0 else 1.0
            item.setData(np.arange(1, values.size + 1), np.clip(values / top, 1e-12, None))
        self.plot.enableAutoRange()
        ranks = ", ".join(
            f"{name}: {m['effective_rank']}/{m['full_rank']}"
            for name, m in zip(self.names, models, strict=False)
        )
        self.note.setText(f"Effective rank (95 % energy): {ranks}. Spectra: {self.rule}")


class InspectPage(QWidget):
    """``analysis_finished(status)``: "succeeded", "failed" or "cancelled", emitted when the
    worker has finished and the page is ready for the next run."""

    analysis_finished = Signal(str)

    def __init__(self, studio: Studio) -> None:
        super().__init__()
        self.studio = studio
        self.state = studio.state
        self.job: AnalysisJob | None = None
        self.report: Any = None
        self._pending_progress: Progress | None = None
        self._dirty_heatmap = False
        self._outcome = ""
        self._redraw = QTimer(self)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._draw)
        self._build()
        self.state.models_changed.connect(self._inputs_changed)
        self.state.base_changed.connect(self._inputs_changed)
        self.state.recipe_changed.connect(self._recipe_changed)
        self._inputs_changed()
        self._recipe_changed("load")

    # ---- layout ------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        controls = QHBoxLayout()
        self.inputs_label = QLabel(self)
        self.inputs_label.setWordWrap(True)
        self.density = QDoubleSpinBox(self)
        self.density.setRange(0.01, 1.0)
        self.density.setSingleStep(0.05)
        self.density.setDecimals(3)
        self.density.setValue(0.2)
        self.density.setToolTip(
            "Fraction of each task vector that TIES-style trimming keeps. It follows the recipe's "
            "density; Use in recipe writes the suggested one back."
        )
        self.density.valueChanged.connect(self._density_changed)
        self.analyze_button = QPushButton("Analyze", self)
        self.analyze_button.clicked.connect(self.start_analysis)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        controls.addWidget(self.inputs_label, 1)
        controls.addWidget(QLabel("Density", self))
        controls.addWidget(self.density)
        controls.addWidget(self.analyze_button)
        controls.addWidget(self.cancel_button)
        controls.addWidget(self.progress, 1)
        layout.addLayout(controls)
        layout.addWidget(self.status)
        self.views = QStackedWidget(self)
        self.empty_state = QLabel(EMPTY_STATE, self.views)
        self.empty_state.setObjectName("emptyState")
        self.empty_state.setWordWrap(True)
        self.empty_state.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_state.setContentsMargins(40, 20, 40, 20)
        self.views.addWidget(self.empty_state)
        self.views.addWidget(self._build_results())
        layout.addWidget(self.views, 1)

    def _build_results(self) -> QSplitter:
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        left = QWidget(splitter)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.metric_choice = QComboBox(left)
        for key, (title, _, _) in METRICS.items():
            self.metric_choice.addItem(title, key)
        self.heatmap = Heatmap(left)
        self.metric_choice.currentIndexChanged.connect(self._metric_chosen)
        self.metric_note = _hint(EXPLANATIONS["conflict"], left)
        self.summary = QLabel("", left)
        self.summary.setWordWrap(True)
        self.advice = DensityAdvice(left)
        self.advice.use_requested.connect(self.use_density_in_recipe)
        left_layout.addWidget(self.metric_choice)
        left_layout.addWidget(self.metric_note)
        left_layout.addWidget(self.heatmap, 1)
        left_layout.addWidget(self.summary)
        left_layout.addWidget(self.advice)
        self.tabs = QTabWidget(splitter)
        self.pairs = PairMatrix()
        self.histograms = HistogramView()
        self.histograms.density_picked.connect(self.density.setValue)
        self.spectra = SpectrumView()
        # The spectra and, under them, the "Extract LoRA" row that uses them.
        self.extract_lora = ExtractLoraBar(self.studio)
        spectra_panel = QWidget()
        spectra_layout = QVBoxLayout(spectra_panel)
        spectra_layout.setContentsMargins(0, 0, 0, 0)
        spectra_layout.addWidget(self.spectra, 1)
        spectra_layout.addWidget(self.extract_lora)
        for view, title, key in (
            (self.pairs, "Model pairs", "pairs"),
            (self.histograms, "Histograms", "histograms"),
            (spectra_panel, "Spectra", "spectra"),
        ):
            self.tabs.addTab(_explained(view, EXPLANATIONS[key]), title)
        splitter.addWidget(left)
        splitter.addWidget(self.tabs)
        splitter.setSizes([600, 400])
        return splitter

    # ---- inputs ------------------------------------------------------------------------

    def inputs(self) -> tuple[str | None, list[str]]:
        return self.state.base, self.state.merged_references()

    def _inputs_changed(self) -> None:
        base, models = self.inputs()
        if base is None or not models:
            self.inputs_label.setText("Add a base and at least one fine-tune on the Models page.")
        else:
            self.inputs_label.setText(f"{len(models)} task vector(s) against {_short(base)}")
        self.analyze_button.setEnabled(self.job is None and base is not None and bool(models))

    def _metric_chosen(self, _index: int) -> None:
        self.heatmap.set_metric(self.metric_choice.currentData())
        self.metric_note.setText(EXPLANATIONS[self.metric_choice.currentData()])

    def _recipe_changed(self, _origin: str) -> None:
        """The page's Density follows the recipe's (when it is one number)."""
        density = recipe_density(self.state.recipe, self.state.method())
        if density is not None and 0.0 < density <= 1.0:
            self.density.setValue(density)
        self._show_advice()

    def use_density_in_recipe(self, density: float) -> None:
        """Write ``density`` into the recipe (one undo step); the spin box follows."""
        method = self.state.method()
        updated = recipe_with_density(self.state.recipe, method, density)
        self.state.set_recipe(updated, "widgets", f"density {density:.2f} from Inspect")
        self.studio.show_message(f"the recipe's density is now {density:.2f} (Ctrl+Z undoes)")

    def _density_changed(self, value: float) -> None:
        if self.report is not None:
            self.histograms.set_density(value)
            stale = not math.isclose(value, self.report.density)
            self.status.setText("Density changed: press Analyze for exact figures." if stale else "")

    # ---- the job -----------------------------------------------------------------------

    def start_analysis(self) -> None:
        base, models = self.inputs()
        if self.job is not None or base is None or not models:
            return
        preferences = self.studio.preferences
        job = AnalysisJob(
            base, models, self.density.value(), str(preferences.effective_cache_dir()), preferences.threads
        )
        job.progress.connect(self._on_progress)
        job.layer_done.connect(self._on_layer)
        job.succeeded.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.cancelled.connect(self._on_cancelled)
        job.finished.connect(self._on_finished)
        self.job = job
        self.views.setCurrentIndex(1)
        self.heatmap.clear(0)
        self.progress.setValue(0)
        self.status.setText("Analyzing…")
        self.analyze_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._redraw.start()
        jobs.start(job)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling…")

    def cancel_all(self) -> None:
        self.cancel()

    def _on_progress(self, progress: Progress) -> None:
        self._pending_progress = progress

    def _on_layer(self, event: Any) -> None:
        for group, summary in event.summary.get("groups", {}).items():
            self.heatmap.set_cell(event.layer, group, summary)
        if "block" in event.summary:
            self.heatmap.block_labels[event.layer] = str(event.summary["block"])
        self.heatmap.layer_count = max(self.heatmap.layer_count, event.layers_total)
        self._dirty_heatmap = True

    def _draw(self) -> None:
        progress, self._pending_progress = self._pending_progress, None
        if progress is not None:
            self.progress.setValue(int(1000 * progress.fraction))
        if self._dirty_heatmap:
            self._dirty_heatmap = False
            self.heatmap.redraw()

    def _on_done(self, report: Any) -> None:
        self.show_report(report)
        origin = "from the cache" if report.from_cache else f"in {report.elapsed_s:.1f} s"
        self.status.setText(f"Analysed {len(report.tensors)} tensors {origin}.")
        self._outcome = "succeeded"

    def _on_failed(self, message: str) -> None:
        self.status.setText(f"Analysis failed: {message}")
        self._outcome = "failed"

    def _on_cancelled(self) -> None:
        self.status.setText("Analysis cancelled.")
        self._outcome = "cancelled"

    def _on_finished(self) -> None:
        self._redraw.stop()
        self._draw()
        self.job = None
        self.cancel_button.setEnabled(False)
        self._inputs_changed()
        # Emitted last, once the page can start another analysis.
        self.analysis_finished.emit(self._outcome)

    # ---- results -----------------------------------------------------------------------

    def show_report(self, report: Any) -> None:
        """Fill every view from a finished ``AnalysisReport``."""
        self.report = report
        self.views.setCurrentIndex(1)
        names = [_short(m) for m in report.models]
        cells = report.layer_group_sums()
        from mergestudio.analysis import summarize

        self.heatmap.clear(max((layer for layer, _ in cells), default=-1) + 1)
        self.heatmap.block_labels = dict(enumerate(report.blocks))
        self.heatmap.lane_order = list(report.lanes) or list(HEATMAP_GROUPS)
        self.heatmap.plot.getPlotItem().setLabel("bottom", f"block ({report.family})" if report.family else "layer")
        for (layer, group), sums in cells.items():
            self.heatmap.set_cell(layer, group, summarize(sums, report.density))
        self.heatmap.redraw()
        overall = report.overall()
        self.pairs.show_matrix(overall["cosine"]["matrix"], names)
        self.histograms.show_histograms(overall, names, report.density)
        self.spectra.show_spectra(report.spectra, report.spectra_plan.get("rule", ""), names)
        self.extract_lora.set_spectra(report.spectra)
        conflict = overall["sign_conflict_rate"]["overall"]
        cosine = overall["cosine"]["overall"]
        self.summary.setText(
            f"Overall: sign conflicts in {_percent(conflict)} of contested entries at density "
            f"{report.density:g}; mean pairwise cosine {'—' if cosine is None else f'{cosine:.3f}'}."
        )
        self._show_advice()
        self.progress.setValue(1000)

    def _show_advice(self) -> None:
        from mergestudio.analysis import suggest_density

        report = self.report
        if report is None:
            self.advice.show_suggestion(None, [], None)
            return
        histogram = report.overall()["histogram"]
        suggestion = suggest_density(histogram["counts"], histogram["zeros"])
        names = [_short(m) for m in report.models]
        self.advice.show_suggestion(suggestion, names, self.state.method())


def _hint(text: str, parent: QWidget | None = None) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("hint")
    label.setWordWrap(True)
    return label


def _explained(view: QWidget, text: str) -> QWidget:
    """``view`` under a one-sentence explanation."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(4, 4, 4, 0)
    layout.addWidget(_hint(text, box))
    layout.addWidget(view, 1)
    return box


def legend_html(names: list[str]) -> str:
    """One coloured line per model, in the curves' colours."""
    return "&nbsp;&nbsp; ".join(
        f"<span style='color:{MODEL_PENS[i % len(MODEL_PENS)]}'>━</span>&nbsp;{name}"
        for i, name in enumerate(names)
    )


def _short(reference: str) -> str:
    return reference.rstrip("/").rsplit("/", 1)[-1] or reference


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


register_page(
    PageSpec("inspect", "Inspect", "Where task vectors agree, fight, and what trimming keeps", InspectPage)
)
