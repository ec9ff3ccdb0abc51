"""The Evolve dashboard's side panel: the trial table over the page's ``TrialHistory``
and the selected trial's details (summary, actions, genome, recipe YAML, log) and the run's workers.

It shows what the page hands it and reports what the user picks; it starts no job and
keeps no run state of its own."""

from __future__ import annotations

from pathlib import Path

from mergestudio.search.dashboard import TrialHistory, genome_layout
from mergestudio.search.worker_status import WorkerStatus
from PySide6.QtCore import (
    QEvent,
    QItemSelectionModel,
    QModelIndex,
    QObject,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QFont, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QGridLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStyle,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt.widgets.evolve_genome import GenomeHeatmap
from mergestudio_qt.widgets.evolve_trials import BEATS_BASE, SORT_ROLE, TrialTableModel
from mergestudio_qt.widgets.evolve_workers import WorkersTable

LOG_LINES = 2000
NO_SELECTION = "Select a trial in a plot or in the table."


class TrialInspector(QSplitter):
    """``trial_picked(number)`` when the user selects a row of the table."""

    trial_picked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Vertical, parent)
        self.setObjectName("evolveInspector")
        self._syncing_table = False
        self._number_digits = 0  # of the widest trial number, which the first column fits
        self.addWidget(self._build_table())
        self.addWidget(self._build_details())
        self.setStretchFactor(0, 2)
        self.setStretchFactor(1, 3)

    def _build_table(self) -> QTableView:
        self.table_model = TrialTableModel()
        self.table_proxy = QSortFilterProxyModel(self)
        self.table_proxy.setSourceModel(self.table_model)
        self.table_proxy.setSortRole(SORT_ROLE)
        self.table = QTableView(self)
        self.table.setModel(self.table_proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        # Fixed row heights: with the default (Interactive) mode every appended row is
        # measured and the header re-laid out on each redraw.
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(22)
        header = self.table.horizontalHeader()
        header.setMinimumSectionSize(28)
        header.setStyleSheet("QHeaderView::section { padding: 3px 4px; }")
        # Columns are sized to their text (size_table_columns), again when the panel resizes.
        self.table.viewport().installEventFilter(self)
        self.table.setToolTip("Every complete trial; click a row to select it in the plots")
        self.table.selectionModel().currentRowChanged.connect(self._table_row_changed)
        return self.table

    def _build_details(self) -> QWidget:
        details = QWidget(self)
        box = QVBoxLayout(details)
        box.setContentsMargins(0, 4, 0, 0)
        box.setSpacing(6)
        self.trial_summary = QLabel(NO_SELECTION)
        self.trial_summary.setWordWrap(True)
        self.trial_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.trial_summary.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        # Scrolls when the window is short: a trial's lines and the baselines' can be many.
        summary = QScrollArea(details)
        summary.setWidgetResizable(True)
        summary.setFrameShape(QFrame.Shape.NoFrame)
        summary.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        summary.setWidget(self.trial_summary)
        summary.setMinimumHeight(3 * self.fontMetrics().lineSpacing())
        box.addWidget(summary, 1)
        buttons = QGridLayout()
        buttons.setHorizontalSpacing(6)
        buttons.setVerticalSpacing(4)
        self.export_button = QPushButton("Export merged model", details)
        self.export_button.setToolTip("Merge this trial into a model folder under the run's exports/")
        self.recipe_button = QPushButton("Open in Recipe editor", details)
        self.recipe_button.setToolTip(
            "Make this trial's recipe the studio's recipe (undoable) and go to Recipe"
        )
        self.full_button = QPushButton("Evaluate on the full set", details)
        self.full_button.setToolTip("Re-score this trial on every item of every task (the run used a subset)")
        buttons.addWidget(self.export_button, 0, 0)
        buttons.addWidget(self.recipe_button, 0, 1)
        buttons.addWidget(self.full_button, 1, 0)
        self.try_button = QPushButton("Try it…", details)
        self.try_button.setToolTip("Generate text from this trial, merged in memory, beside its parents")
        buttons.addWidget(self.try_button, 1, 1)
        buttons.setColumnStretch(2, 1)
        box.addLayout(buttons)
        # Where the last export went, as a link that opens the folder (full path, wrapped).
        self.export_result = QLabel("", details)
        self.export_result.setWordWrap(True)
        self.export_result.setOpenExternalLinks(True)
        self.export_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.export_result.setVisible(False)
        box.addWidget(self.export_result)
        self.detail_tabs = QTabWidget(details)
        self.genome_view = GenomeHeatmap(self.detail_tabs)
        self.recipe_view = QPlainTextEdit(self.detail_tabs)
        self.recipe_view.setReadOnly(True)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.recipe_view.setFont(font)
        self.recipe_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.recipe_view.setPlaceholderText("The selected trial's recipe (mergekit YAML).")
        self.log_view = QPlainTextEdit(self.detail_tabs)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setPlaceholderText("Search messages appear here.")
        self.detail_tabs.addTab(self.genome_view, "Genome")
        self.detail_tabs.addTab(self.recipe_view, "Recipe YAML")
        self.detail_tabs.addTab(self.log_view, "Log")
        self.workers_table = WorkersTable(self.detail_tabs)
        self.detail_tabs.addTab(self.workers_table, "Workers")
        box.addWidget(self.detail_tabs, 2)
        return details

    # ---- the table ----------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.table.viewport() and event.type() == QEvent.Type.Resize:
            self.size_table_columns()
        return super().eventFilter(watched, event)

    def set_history(self, history: TrialHistory, full: dict[int, dict[str, float]]) -> None:
        self.table_model.set_history(history)
        self.table_model.full = full
        self.size_table_columns()

    def refresh_table(self) -> None:
        """Announce new rows and front marks; widen the number column when it needs to."""
        history = self.table_model.history
        self.table_model.refresh()
        if history is not None and len(history) and len(str(int(history.numbers.max()))) != self._number_digits:
            self.size_table_columns()

    def size_table_columns(self) -> None:
        """Every column as wide as its header and its widest value, so no number or name
        is elided; the width left over goes to the objectives and the mean. When the panel
        is too narrow for that, the table scrolls sideways instead of cutting text.

        Widths come from templates of the cell formats ("0.0000 ▲"), not from
        ResizeToContents: that measures up to 1,000 rows of a column whenever a row is
        added or the front changes (~40 ms at 5,000 trials)."""
        header = self.table.horizontalHeader()
        count = self.table_model.columnCount()
        history = self.table_model.history
        widest = str(int(history.numbers.max())) if history is not None and len(history) else "0"
        self._number_digits = len(widest)
        needed = [self._column_width(column, count, widest) for column in range(count)]
        spare = self.table.viewport().width() - sum(needed)
        shared = list(range(1, count - 1))  # the objectives and the mean
        for column, width in enumerate(needed):
            extra = spare // len(shared) if spare > 0 and column in shared else 0
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)
            header.resizeSection(column, width + extra)

    def _column_width(self, column: int, count: int, widest_number: str) -> int:
        """Pixels a column needs: its header's text or its widest cell, with Qt's margins."""
        metrics = self.table.fontMetrics()
        margin = self.table.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, self.table)
        padding = 2 * (margin + 1) + 2  # an item's text margins and the grid line, as Qt sizes them
        title = self.table_model.headerData(column, Qt.Orientation.Horizontal)
        header_width = self.table.horizontalHeader().fontMetrics().horizontalAdvance(str(title or "")) + 10
        if column == 0:
            cell = widest_number
        elif column == count - 1:
            cell = "✓"
        elif column == count - 2:
            cell = f"0.0000 {BEATS_BASE}"
        else:
            cell = "0.0000"  # 3 significant digits: the widest is 0.0xyz
        return max(header_width, metrics.horizontalAdvance(cell) + padding)

    def select_row(self, history: TrialHistory, number: int | None) -> None:
        """Select trial ``number``'s row (None: clear) without reporting it back."""
        self._syncing_table = True
        try:
            self.table_model.refresh()
            row = None if number is None else history.row_of(number)
            if row is None:
                self.table.clearSelection()
                return
            index = self.table_proxy.mapFromSource(self.table_model.index(row, 0))
            self.table.selectionModel().setCurrentIndex(
                index,
                QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
            )
            self.table.scrollTo(index)
        finally:
            self._syncing_table = False

    def _table_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if self._syncing_table or not current.isValid():
            return
        number = self.table_model.number_at(self.table_proxy.mapToSource(current).row())
        if number is not None:
            self.trial_picked.emit(number)

    # ---- the details --------------------------------------------------------------------

    def show_trial(self, description: str, recipe_yaml: str) -> None:
        """``description``: the hover text, its first line the title."""
        title, _, rest = description.partition("\n")
        self.trial_summary.setText(f"<b>{title}</b><br>{rest.replace(chr(10), '<br>')}")
        self.recipe_view.setPlainText(recipe_yaml)

    def clear_trial(self, baselines: list[str] | None = None) -> None:
        """No trial selected: say how to select one, and how the baselines stand."""
        lines = [NO_SELECTION]
        if baselines:
            lines += ["<b>Baselines</b> (the run's estimator):", *baselines]
        self.trial_summary.setText("<br>".join(lines))
        self.recipe_view.setPlainText("")

    def show_export(self, number: int | None, path: Path) -> None:
        folder = path.resolve()
        which = f"Trial {number}" if number is not None else "The trial"
        self.export_result.setText(f"{which} exported to <a href='{folder.as_uri()}'>{folder}</a>")
        self.export_result.setToolTip("Open the folder")
        self.export_result.setVisible(True)

    def show_export_failed(self, message: str) -> None:
        self.export_result.setText(f"Export failed: {message}")
        self.export_result.setToolTip("")
        self.export_result.setVisible(True)

    def show_genome(self, history: TrialHistory | None, number: int | None, best: bool) -> None:
        if history is None or number is None or not history.genes:
            self.genome_view.clear_genome("Genome: no trials yet")
            return
        layout = genome_layout([g.name for g in history.genes])
        row = history.row_of(number)
        assert row is not None
        params = sorted({g.name.split("[", 1)[0].split(".", 1)[0].split("@", 1)[0] for g in history.genes})
        which = "best trial" if best else "trial"
        self.genome_view.show_genome(
            layout,
            history.genomes[row],
            [(g.low, g.high) for g in history.genes],
            f"Genome of {which} {number}"
            + (" (mean of the objectives, scaled)" if best and len(history.objectives) > 1 else ""),
            " / ".join(params),
        )

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def show_workers(self, workers: list[WorkerStatus]) -> None:
        """The run's workers in their tab (the line under the page's controls says which
        trials run; a count in the tab's title would not fit beside the others at 1024 px)."""
        self.workers_table.show_workers(workers)
