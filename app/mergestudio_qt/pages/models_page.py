"""Models: add checkpoints (folder, .safetensors file, Hub id; dialogs or drag and drop),
see what each one is, choose the base, and read the compatibility preflight."""

from __future__ import annotations

import html
from pathlib import Path

from mergestudio.events import Progress
from mergestudio.io.sources import is_hub_reference
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.context import Studio
from mergestudio_qt.format import format_bytes, format_count
from mergestudio_qt.pages import PageSpec, register_page
from mergestudio_qt.state import ModelEntry
from mergestudio_qt.workers import OpenModelJob

COLUMNS = ("Merge", "Name", "Role", "Architecture", "Layers", "Parameters", "Dtype", "Size on disk", "Source")
COLUMN_TIPS = (
    "Ticked models are merged onto the base (the base itself is always used)",
    "The model's folder or file name; hover for its description",
    "The base, or how a model compares with it (see Compatibility below)",
    "The model class from config.json",
    "Transformer blocks",
    "Parameter count, from the tensor shapes",
    "Weight dtypes, most common first",
    "Bytes of weight files on disk",
    "Where the model is read from: its path, or the Hub id and revision",
)
SOURCE_COLUMN = COLUMNS.index("Source")
NO_BASE = "(none)"
_STATUS_MARK = {"ok": ("✓", "ok"), "warning": ("!", "warning"), "error": ("✗", "error")}


class ModelsPage(QWidget):
    """Signals for tests and the window: ``model_added(reference)``, ``load_failed(msg)``."""

    model_added = Signal(str)
    load_failed = Signal(str)
    queue_empty = Signal()

    def __init__(self, studio: Studio) -> None:
        super().__init__()
        self.studio = studio
        self.state = studio.state
        self._queue: list[str] = []
        self._job: OpenModelJob | None = None
        self.setAcceptDrops(True)
        self._build()
        self.state.models_changed.connect(self.refresh)
        self.state.base_changed.connect(lambda _b: self.refresh())
        self.state.preflight_changed.connect(self._show_preflight)
        self.refresh()

    # ---- building ----------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(10)
        title = QLabel("Models", self)
        title.setObjectName("pageTitle")
        intro = QLabel(
            "Add the checkpoints to merge: a folder or a .safetensors file (or drop them here), or a "
            "Hugging Face Hub id. Choose the base the others were fine-tuned from.",
            self,
        )
        intro.setObjectName("hint")
        intro.setWordWrap(True)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addLayout(self._build_add_row())
        self.add_error = QLabel(self)
        self.add_error.setObjectName("errorNote")
        self.add_error.setWordWrap(True)
        self.add_error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.add_error.hide()
        layout.addWidget(self.add_error)
        layout.addLayout(self._build_progress_row())
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.setObjectName("modelsSplitter")
        table_box = QWidget(self)
        table_layout = QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.setSpacing(4)
        table_layout.addWidget(self._build_table(), 1)
        self.details_label = QLabel(table_box)
        self.details_label.setObjectName("hint")
        self.details_label.setWordWrap(True)
        self.details_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        table_layout.addWidget(self.details_label)
        splitter.addWidget(table_box)
        splitter.addWidget(self._build_preflight())
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter, 1)

    def _build_add_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(8)
        self.add_folder_button = QPushButton("Add folder…", self)
        self.add_folder_button.setToolTip("A Hugging Face model folder with .safetensors weights")
        self.add_folder_button.clicked.connect(self._choose_folder)
        self.add_file_button = QPushButton("Add file…", self)
        self.add_file_button.setToolTip("A single .safetensors file")
        self.add_file_button.clicked.connect(self._choose_file)
        self.hub_edit = QLineEdit(self)
        self.hub_edit.setPlaceholderText("org/name[@revision]")
        self.hub_edit.setToolTip("A Hub repository id, optionally with a branch, tag or commit")
        self.hub_edit.returnPressed.connect(self._add_hub)
        self.hub_edit.textEdited.connect(lambda _t: self._show_add_error(""))
        self.hub_button = QPushButton("Add from Hub", self)
        self.hub_button.clicked.connect(self._add_hub)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.setToolTip("Remove the selected model from the project")
        self.remove_button.clicked.connect(self._remove_selected)
        row.addWidget(self.add_folder_button)
        row.addWidget(self.add_file_button)
        row.addSpacing(12)
        row.addWidget(self.hub_edit, 1)
        row.addWidget(self.hub_button)
        row.addSpacing(12)
        row.addWidget(self.remove_button)
        return row

    def _build_progress_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(8)
        self.progress_label = QLabel(self)
        self.progress = QProgressBar(self)
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop the download; nothing is added")
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.progress_label)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        self._progress_widgets = (self.progress_label, self.progress, self.cancel_button)
        self._set_busy(False)
        base_row = QHBoxLayout()
        base_row.setSpacing(8)
        label = QLabel("Base model", self)
        self.base_combo = QComboBox(self)
        self.base_combo.setToolTip("The model the others were fine-tuned from; task vectors are "
                                   "measured from it and the preflight compares with it")
        self.base_combo.setMinimumWidth(240)
        self.base_combo.currentIndexChanged.connect(self._base_chosen)
        base_row.addWidget(label)
        base_row.addWidget(self.base_combo)
        base_row.addStretch(1)
        base_row.addLayout(row, 2)
        return base_row

    def _build_table(self) -> QWidget:
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # paths keep both ends
        for column, tip in enumerate(COLUMN_TIPS):
            header_item = self.table.horizontalHeaderItem(column)
            if header_item is not None:
                header_item.setToolTip(tip)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(SOURCE_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        self.table.itemSelectionChanged.connect(self._show_details)
        header.setHighlightSections(False)
        self.table.itemChanged.connect(self._item_changed)
        self.empty_label = QLabel("No models yet. Drop a folder or .safetensors file here.", self.table)
        self.empty_label.setObjectName("hint")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return self.table

    def _build_preflight(self) -> QWidget:
        box = QWidget(self)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.setSpacing(4)
        title = QLabel("Compatibility with the base", box)
        title.setObjectName("sectionTitle")
        self.preflight_view = QTextBrowser(box)
        self.preflight_view.setOpenLinks(False)
        layout.addWidget(title)
        layout.addWidget(self.preflight_view, 1)
        return box

    # ---- showing -----------------------------------------------------------------------

    def refresh(self) -> None:
        models = self.state.models
        self.table.blockSignals(True)
        self.table.setRowCount(len(models))
        for row, entry in enumerate(models):
            self._fill_row(row, entry)
        self.table.blockSignals(False)
        self.empty_label.setVisible(not models)
        self.empty_label.resize(self.table.viewport().size())
        self.base_combo.blockSignals(True)
        self.base_combo.clear()
        self.base_combo.addItem(NO_BASE, "")
        self.base_combo.setItemData(0, "No base: for methods that average the models themselves "
                                    "(linear, model soups)", Qt.ItemDataRole.ToolTipRole)
        for entry in models:
            self.base_combo.addItem(entry.name, entry.reference)
            self.base_combo.setItemData(self.base_combo.count() - 1, _entry_tooltip(entry),
                                        Qt.ItemDataRole.ToolTipRole)
        index = self.base_combo.findData(self.state.base or "")
        self.base_combo.setCurrentIndex(max(0, index))
        self.base_combo.setEnabled(bool(models))
        self.base_combo.blockSignals(False)
        self.remove_button.setEnabled(bool(models))
        self._show_details()
        self._show_preflight()

    def _fill_row(self, row: int, entry: ModelEntry) -> None:
        is_base = entry.reference == self.state.base
        include = QTableWidgetItem()
        include.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
        include.setCheckState(Qt.CheckState.Checked if entry.include or is_base else Qt.CheckState.Unchecked)
        include.setToolTip("Merge this model onto the base (the base is always used)")
        if is_base:
            include.setFlags(Qt.ItemFlag.ItemIsEnabled)
        include.setData(Qt.ItemDataRole.UserRole, entry.reference)
        self.table.setItem(row, 0, include)
        cells = (
            entry.name,
            self._role_text(entry, is_base),
            entry.adapter or entry.architecture or "unknown",
            str(entry.layers),
            format_count(entry.parameters),
            entry.dtype_text,
            format_bytes(entry.disk_bytes),
            entry.source_text,
        )
        tooltip = _entry_tooltip(entry)
        for column, text in enumerate(cells, start=1):
            item = QTableWidgetItem(text)
            # The architecture cell also says which family (blocks, lanes) was detected.
            item.setToolTip(tooltip if column != 3 else f"{tooltip}\n{_family_tip(entry)}")
            if column >= 4 and column <= 7:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, column, item)

    def _role_text(self, entry: ModelEntry, is_base: bool) -> str:
        if is_base:
            return "base"
        if self.state.preflight is None:  # no base to compare with
            return "merged" if entry.include else "not merged"
        status = self.state.preflight.status_of(entry.reference)
        return f"{_STATUS_MARK[status][0]} {'compatible' if status == 'ok' else status}"

    def _show_details(self) -> None:
        """The selected model's description and full source under the table."""
        rows = {index.row() for index in self.table.selectedIndexes()}
        models = self.state.models
        if len(rows) != 1 or min(rows) >= len(models):
            self.details_label.setText("Select a model to see its description and where it is read from."
                                       if models else "")
            return
        entry = models[min(rows)]
        about = entry.description or "No description (the model has no model card)."
        self.details_label.setText(f"{entry.name}: {about}\nSource ({entry.kind_text}): {entry.source_text}")

    def _show_preflight(self) -> None:
        # The roles follow the report: it also changes with the recipe's tokenizer source.
        self.table.blockSignals(True)
        for row, entry in enumerate(self.state.models[: self.table.rowCount()]):
            self._fill_row(row, entry)
        self.table.blockSignals(False)
        report = self.state.preflight
        if report is None or not report.checks:
            text = "Add a base and at least one other model to check that they can be merged."
            self.preflight_view.setHtml(f"<p class='hint'>{text}</p>")
            return
        self.preflight_view.setHtml(preflight_html(report, self.state))

    def resizeEvent(self, event: object) -> None:
        super().resizeEvent(event)  # type: ignore[arg-type]
        self.empty_label.resize(self.table.viewport().size())

    # ---- adding ------------------------------------------------------------------------

    def add_reference(self, reference: str) -> None:
        """Open (or download) a model in the background; queued behind a running one."""
        reference = reference.strip()
        if not reference or self.state.model(reference) is not None or reference in self._queue:
            return
        self._queue.append(reference)
        if self._job is None:
            self._start_next()

    def _start_next(self) -> None:
        if not self._queue:
            self._set_busy(False)
            self.queue_empty.emit()
            return
        reference = self._queue.pop(0)
        cache = str(self.studio.preferences.effective_cache_dir())
        job = OpenModelJob(reference, cache)
        job.progress.connect(self._job_progress)
        job.succeeded.connect(self._job_done)
        job.failed.connect(self._job_failed)
        job.cancelled.connect(self._job_cancelled)
        job.finished.connect(self._job_finished)
        self._job = job
        hub = is_hub_reference(reference)
        self.progress_label.setText(f"Downloading {reference}" if hub else f"Opening {Path(reference).name}")
        self.progress.setRange(0, 0)  # busy until the first byte count
        self._set_busy(True)
        jobs.start(job)

    def _job_progress(self, progress: Progress) -> None:
        if progress.total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * progress.fraction))
            self.progress.setFormat(f"{format_bytes(progress.done)} of {format_bytes(progress.total)}")

    def _job_done(self, entry: ModelEntry) -> None:
        if self.hub_edit.text().strip() == entry.reference:
            self.hub_edit.clear()  # added: what was typed has done its job
        self._show_add_error("")
        self.state.add_model(entry)
        self.studio.show_message(f"added {entry.name}")
        self.model_added.emit(entry.reference)

    def _job_cancelled(self) -> None:
        self.studio.show_message("download cancelled")

    def _job_failed(self, message: str) -> None:
        summary = message.splitlines()[0] if message else "unknown error"
        self.studio.show_message(f"could not add the model: {summary}")
        self._show_add_error(message)
        self.load_failed.emit(message)

    def _show_add_error(self, message: str) -> None:
        """Why the last add failed, under the add row: the first line (a short sentence),
        with the library's full text in the tooltip. Empty hides it."""
        lines = message.splitlines()
        self.add_error.setText(f"✗ Could not add the model. {lines[0]}" if lines else "")
        self.add_error.setToolTip("\n".join(lines[1:]) or (lines[0] if lines else ""))
        self.add_error.setVisible(bool(lines))

    def _job_finished(self) -> None:
        self._job = None
        self._start_next()

    def cancel(self) -> None:
        self._queue.clear()
        if self._job is not None:
            self._job.cancel()

    def is_busy(self) -> bool:
        return self._job is not None

    def _set_busy(self, busy: bool) -> None:
        for widget in self._progress_widgets:
            widget.setVisible(busy)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder")
        if folder:
            self.add_reference(folder)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a safetensors file", "", "Safetensors (*.safetensors)")
        if path:
            self.add_reference(path)

    def _add_hub(self) -> None:
        text = self.hub_edit.text().strip()
        if not text:
            return
        if not is_hub_reference(text):
            self._job_failed(f"{text}: not a Hub id; write org/name or org/name@revision")
            return
        self._show_add_error("")
        self.add_reference(text)  # the text stays until the model is added

    # ---- editing -----------------------------------------------------------------------

    def _base_chosen(self, index: int) -> None:
        reference = self.base_combo.itemData(index)
        self.state.set_base(str(reference) if reference else None)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            reference = str(item.data(Qt.ItemDataRole.UserRole))
            self.state.set_included(reference, item.checkState() == Qt.CheckState.Checked)

    def _remove_selected(self) -> None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        for row in sorted(rows, reverse=True):
            self.state.remove_model(self.state.models[row].reference)

    # ---- drag and drop -------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_paths(event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        for path in dropped_paths(event.mimeData().urls()):
            self.add_reference(path)
        event.acceptProposedAction()


def _entry_tooltip(entry: ModelEntry) -> str:
    lines = [entry.name]
    if entry.description:
        lines.append(entry.description)
    lines.append(f"{entry.kind_text}: {entry.source_text}")
    return "\n".join(lines)


def dropped_paths(urls: list) -> list[str]:  # type: ignore[type-arg]
    """Local folders and .safetensors files among dropped URLs."""
    paths = []
    for url in urls:
        if not url.isLocalFile():
            continue
        path = Path(url.toLocalFile())
        if path.is_dir() or path.suffix == ".safetensors":
            paths.append(str(path))
    return paths


def _family_tip(entry: ModelEntry) -> str:
    """The detected family, its blocks and lanes: what gradients and lanes will follow."""
    lines = [f"config: {entry.architecture or 'none'}"]
    if entry.source is not None:
        lines += [entry.source.layout.describe(), *entry.source.layout.warnings]
    return "\n".join(lines)


def preflight_html(report: object, state: object) -> str:
    """The preflight report as HTML: one block per model, one line per check."""
    from mergestudio.preflight import PreflightReport

    from mergestudio_qt.state import StudioState

    assert isinstance(report, PreflightReport) and isinstance(state, StudioState)
    colors = {"ok": "#16a34a", "warning": "#d97706", "error": "#dc2626"}
    base = state.model(report.base)
    parts = [f"<p>Compared with the base <b>{html.escape(base.name if base else report.base)}</b>. "
             "Errors stop a merge; warnings are worth a look.</p>"]
    for model in dict.fromkeys(c.model for c in report.checks):
        entry = state.model(model)
        status = report.status_of(model)
        mark, word = _STATUS_MARK[status]
        parts.append(
            f"<p style='margin-bottom:2px'><b>{html.escape(entry.name if entry else model)}</b> "
            f"<span style='color:{colors[status]}'>{mark} {word}</span></p><table cellspacing='2'>"
        )
        for check in report.for_model(model):
            sign = _STATUS_MARK[check.status][0]
            parts.append(
                f"<tr><td style='color:{colors[check.status]}'>&nbsp;{sign}&nbsp;</td>"
                f"<td><i>{html.escape(check.topic)}</i>&nbsp;&nbsp;</td><td>{html.escape(check.message)}</td></tr>"
            )
        parts.append("</table>")
    return "".join(parts)


register_page(PageSpec("models", "Models", "Add checkpoints, choose the base, check compatibility",
                       ModelsPage))
