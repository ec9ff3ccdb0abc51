"""Merge: where the output goes and in what dtype, a dry run (bytes, size, peak memory),
the merge itself in a worker thread with progress, log and Cancel, and a quick
evaluation of the result next to its parents."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mergestudio.engine.device import DEVICE_CHOICES
from mergestudio.engine.memory import MEMORY_CAPS, MEMORY_REFUSAL, MemoryVerdict
from mergestudio.events import Progress
from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import jobs, recipe_edit
from mergestudio_qt.context import Studio
from mergestudio_qt.format import MeasuredEta, format_bytes, format_duration
from mergestudio_qt.pages import PageSpec, register_page
from mergestudio_qt.quick_eval_table import MERGED_TINT, EvalCell, build_eval_table
from mergestudio_qt.state import MergeSettings
from mergestudio_qt.widgets.adapter_output import AdapterOutputRow
from mergestudio_qt.widgets.elide import ElidedLabel
from mergestudio_qt.widgets.folder_row import folder_row
from mergestudio_qt.widgets.generate_panel import Candidate, GenerateDialog, show_generation
from mergestudio_qt.workers import (
    DryRun,
    DryRunJob,
    EvalJob,
    MemoryCheckJob,
    MemoryLimits,
    MergeJob,
    MergeOptions,
    QuickEval,
)

OUTPUT_DTYPES = (("bfloat16", "bfloat16"), ("float16", "float16"), ("float32", "float32"),
                 ("same as inputs", ""))
REDRAW_MS = 66  # progress widgets redraw at ~15 Hz, however fast events arrive
MEMORY_CHECK_DELAY_MS = 300  # a slider drag or typing re-plans once per pause
LOG_LINES = 2000
MERGED_LABEL = "merged"


class MergePage(QWidget):
    """Signals for tests and the window: ``merge_finished(status)`` with status one of
    "succeeded", "failed", "cancelled"; ``dry_run_finished(ok)``; ``eval_finished(ok)``;
    ``memory_checked(ok)`` when the memory verdict for the current recipe and cap is shown."""

    merge_finished = Signal(str)
    dry_run_finished = Signal(bool)
    eval_finished = Signal(bool)
    memory_checked = Signal(bool)

    def __init__(self, studio: Studio) -> None:
        super().__init__()
        self.studio = studio
        self.state = studio.state
        self.merge_job: MergeJob | None = None
        self._merge_outcome = "failed"  # how the running merge ended, told when its thread is done
        self.dry_job: DryRunJob | None = None
        self.eval_job: EvalJob | None = None
        self.last_output: Path | None = None
        self.last_dry_run: DryRun | None = None
        self.eval_reports: dict[str, Any] = {}
        self.last_eval: QuickEval | None = None
        self.generation: GenerateDialog | None = None
        self._eval_ok = False  # how the running quick eval ended, told when its thread is done
        self._pending: Progress | None = None
        self._eta = MeasuredEta()
        self._redraw = QTimer(self)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._draw_progress)
        self._loading = False
        # The memory verdict: re-planned off the GUI thread after a pause in the edits
        # that change it, and only while the page is shown.
        self.memory_job: MemoryCheckJob | None = None
        self.memory_verdict: MemoryVerdict | None = None
        self._memory_checked_key: str | None = None  # what the shown verdict is about
        self._memory_timer = QTimer(self)
        self._memory_timer.setSingleShot(True)
        self._memory_timer.setInterval(MEMORY_CHECK_DELAY_MS)
        self._memory_timer.timeout.connect(self.check_memory)
        self._build()
        self.state.merge_settings_changed.connect(self._load_settings)
        for changed in (self.state.recipe_changed, self.state.models_changed, self.state.stages_changed,
                        self.state.merge_settings_changed):
            changed.connect(self.memory_inputs_changed)
        self.state.project_changed.connect(lambda _p: self._load_tasks())
        self._load_settings()
        self._load_tasks()

    # ---- building ----------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(10)
        title = QLabel("Merge", self)
        title.setObjectName("pageTitle")
        layout.addWidget(title)
        top = QHBoxLayout()
        top.setSpacing(16)
        top.addWidget(self._build_settings(), 3)
        top.addWidget(self._build_dry_run(), 2)
        layout.addLayout(top)
        layout.addLayout(self._build_actions())
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.setObjectName("mergeSplitter")
        log_box = QGroupBox("Log", splitter)
        log_layout = QVBoxLayout(log_box)
        self.log_view = QPlainTextEdit(log_box)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setPlaceholderText("The merge log appears here.")
        log_layout.addWidget(self.log_view)
        splitter.addWidget(log_box)
        splitter.addWidget(self._build_eval())
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 2)  # the quick-eval table needs the room more than the log
        layout.addWidget(splitter, 1)

    def _build_settings(self) -> QWidget:
        box = QGroupBox("Output", self)
        form = QFormLayout(box)
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(8)
        row, self.out_edit = folder_row(
            box,
            "a new folder for the merged model",
            "The merged model's folder. It appears only when the merge completes.",
            self._browse,
        )
        self.out_edit.editingFinished.connect(self._save_settings)
        form.addRow("Folder", row)
        self.dtype_combo = QComboBox(box)
        for label, value in OUTPUT_DTYPES:
            self.dtype_combo.addItem(label, value)
        self.dtype_combo.setToolTip("The dtype the merged weights are written in")
        self.device_combo = QComboBox(box)
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_combo.setToolTip("Where the tensor math runs; auto picks CUDA, then MPS, then the CPU")
        self.shard_spin = QSpinBox(box)
        self.shard_spin.setRange(50, 50_000)
        self.shard_spin.setSingleStep(500)
        self.shard_spin.setSuffix(" MB")
        self.shard_spin.setToolTip("Largest size of one .safetensors shard")
        self.overwrite_check = QCheckBox("Replace an existing folder", box)
        self.overwrite_check.setToolTip("Unticked, a merge into a folder that is not empty asks first")
        for signal in (self.dtype_combo.currentIndexChanged, self.device_combo.currentIndexChanged,
                       self.shard_spin.valueChanged, self.overwrite_check.toggled):
            signal.connect(self._save_settings)
        row = QHBoxLayout()
        row.addWidget(self.dtype_combo)
        row.setSpacing(8)
        row.addSpacing(16)
        row.addWidget(QLabel("Device", box))
        row.addWidget(self.device_combo)
        row.addSpacing(16)
        row.addWidget(QLabel("Shard size", box))
        row.addWidget(self.shard_spin)
        row.addStretch(1)
        form.addRow("Dtype", row)
        form.addRow("Memory cap", self._build_memory_row(box))
        self.adapter_output = AdapterOutputRow(self.state, box)
        # One row with the adapter choice, so a 700 px window keeps room for the scores below.
        write_row = QHBoxLayout()
        write_row.setSpacing(16)
        write_row.addWidget(self.adapter_output)
        write_row.addStretch(1)
        write_row.addWidget(self.overwrite_check)
        form.addRow("Write as", write_row)
        return box

    def _build_memory_row(self, box: QWidget) -> QHBoxLayout:
        """The cap (the engine's ``max_memory``; choices from ``MEMORY_CAPS``) and the
        engine's verdict on the current recipe under it."""
        self.memory_combo = QComboBox(box)
        self.memory_combo.setObjectName("memoryCap")
        self.memory_combo.addItem("no cap", None)
        for size in MEMORY_CAPS:
            self.memory_combo.addItem(cap_label(size), size)
        self.memory_combo.setToolTip(
            "Memory the merge may use. A merge that cannot fit is refused before anything is "
            "written; under the cap the merge works in smaller steps, with the same result."
        )
        self.memory_combo.currentIndexChanged.connect(self._save_settings)
        self.memory_note = QLabel("", box)  # its object name says how it is coloured
        self.memory_note.setWordWrap(True)
        self.memory_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # Room for two lines from the start, so a verdict does not move the rows below.
        self.memory_note.setMinimumHeight(2 * self.memory_note.fontMetrics().lineSpacing() + 2)
        row = QHBoxLayout()
        row.setSpacing(12)
        row.addWidget(self.memory_combo, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.memory_note, 1)
        return row

    def _build_dry_run(self) -> QWidget:
        box = QGroupBox("Dry run", self)
        grid = QGridLayout(box)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(4)
        self.dry_labels: dict[str, QLabel] = {}
        rows = (("tensors", "Tensors"), ("read", "Bytes to read"), ("output", "Output size"),
                ("peak", "Peak memory"), ("time", "Estimated time"))
        for row, (key, text) in enumerate(rows):
            grid.addWidget(QLabel(text, box), row, 0)
            value = QLabel("—", box)
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            value.setObjectName("number")
            grid.addWidget(value, row, 1)
            self.dry_labels[key] = value
        self.dry_note = QLabel("Press Dry run to check the recipe and estimate the cost.", box)
        self.dry_note.setWordWrap(True)
        self.dry_note.setObjectName("hint")
        # Room for two lines from the start, so a verdict does not push the buttons down.
        self.dry_note.setMinimumHeight(2 * self.dry_note.fontMetrics().lineSpacing() + 4)
        self.dry_note.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.dry_note, len(rows), 0, 1, 2)
        grid.setColumnStretch(1, 1)
        return box

    def _build_actions(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(8)
        self.dry_button = QPushButton("Dry run", self)
        self.dry_button.setToolTip("Check the recipe against the models and estimate bytes and memory")
        self.dry_button.clicked.connect(self.dry_run)
        self.merge_button = QPushButton("Merge", self)
        self.merge_button.setObjectName("primary")
        self.merge_button.setToolTip("Run the merge in the background (Ctrl+M)")
        self.merge_button.clicked.connect(self.start_merge)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop the merge; nothing is left at the output folder")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        # Statuses name models ("scored merged, base, …"): elided, whole in the tooltip.
        self.stats_label = ElidedLabel("", self)
        self.stats_label.setObjectName("number")
        self.stats_label.setMinimumWidth(260)
        self.open_button = QPushButton("Open folder", self)
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_output)
        self.try_button = QPushButton("Try it…", self)
        self.try_button.setToolTip("Generate text from the recipe merged in memory (or the last merge) beside its parents")
        self.try_button.clicked.connect(self.try_generation)
        for widget in (self.dry_button, self.merge_button, self.cancel_button):
            row.addWidget(widget)
        row.addWidget(self.progress, 1)
        row.addWidget(self.stats_label)
        row.addWidget(self.open_button)
        row.addWidget(self.try_button)
        return row

    def _build_eval(self) -> QWidget:
        box = QGroupBox("Quick eval", self)
        layout = QVBoxLayout(box)
        layout.setSpacing(6)
        hint = QLabel("Score the merged model on task files, next to its parents.", box)
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.task_list = QListWidget(box)
        self.task_list.setMaximumHeight(110)
        self.task_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.task_list.itemChanged.connect(self._tasks_edited)
        layout.addWidget(self.task_list)
        row = QHBoxLayout()
        add = QPushButton("Add task file…", box)
        add.clicked.connect(self._add_task_file)
        self.limit_spin = QSpinBox(box)
        self.limit_spin.setRange(0, 100_000)
        self.limit_spin.setValue(100)
        self.limit_spin.setSpecialValueText("all items")
        self.limit_spin.setSuffix(" items")
        self.limit_spin.setToolTip("Items per task (0: all). Fewer items answer faster and noisier.")
        self.eval_button = QPushButton("Run quick eval", box)
        self.eval_button.setEnabled(False)
        self.eval_button.setToolTip(
            "Evaluate the merged model next to its base and parents on the ticked tasks; models "
            "scored before with the same files and settings come from the cache"
        )
        self.eval_button.clicked.connect(self.start_eval)
        row.addWidget(add)
        row.addWidget(self.limit_spin)
        row.addStretch(1)
        row.addWidget(self.eval_button)
        layout.addLayout(row)
        self.eval_table = QTableWidget(0, 0, box)
        self.eval_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.eval_table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # Columns fit their headers and numbers; a narrow window scrolls rather than clips.
        self.eval_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.eval_table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.eval_table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.eval_table.customContextMenuRequested.connect(self._eval_menu)
        self.state.specialists_changed.connect(self._specialists_changed)
        # Room for the header and three scores even in a short window: the task list above
        # gives way first (it scrolls).
        row_height = self.eval_table.fontMetrics().lineSpacing() + 14
        self.eval_table.setMinimumHeight(4 * row_height + 6)
        self.task_list.setMinimumHeight(2 * row_height)
        layout.addWidget(self.eval_table, 1)
        self.eval_verdict = QLabel("", box)
        self.eval_verdict.setWordWrap(True)
        self.eval_verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.eval_verdict)
        self.eval_legend = QLabel("", box)
        self.eval_legend.setObjectName("hint")
        self.eval_legend.setWordWrap(True)
        layout.addWidget(self.eval_legend)
        return box

    # ---- settings ------------------------------------------------------------------------

    def _load_settings(self) -> None:
        self._loading = True
        settings = self.state.merge
        self.out_edit.setText(settings.out_dir or str(self.default_output()))
        self.dtype_combo.setCurrentIndex(max(0, self.dtype_combo.findData(settings.out_dtype)))
        self.device_combo.setCurrentText(settings.device)
        self.shard_spin.setValue(settings.shard_mb)
        self.overwrite_check.setChecked(settings.overwrite)
        self._show_cap(settings.max_memory)
        self._loading = False

    def _show_cap(self, max_memory: int | None) -> None:
        """Select the cap in the list; a cap from a project file that is not offered there
        gets its own entry."""
        index = self.memory_combo.findData(max_memory)
        if index < 0 and max_memory is not None:
            index = next((i for i in range(1, self.memory_combo.count())
                          if self.memory_combo.itemData(i) > max_memory), self.memory_combo.count())
            self.memory_combo.insertItem(index, cap_label(max_memory), max_memory)
        self.memory_combo.setCurrentIndex(max(0, index))

    def _save_settings(self) -> None:
        if self._loading:
            return
        out_dir = self.out_edit.text().strip()
        if not self.state.merge.out_dir and out_dir == str(self.default_output()):
            out_dir = ""  # still the default: it follows the project's name and folder
        self.state.set_merge_settings(MergeSettings(
            out_dir=out_dir,
            out_dtype=str(self.dtype_combo.currentData()),
            device=self.device_combo.currentText(),
            shard_mb=self.shard_spin.value(),
            overwrite=self.overwrite_check.isChecked(),
            max_memory=self.memory_combo.currentData(),
        ))

    def default_output(self) -> Path:
        name = self.state.recipe.get("name") or "merged"
        if self.state.project_path is not None:
            return self.state.project_path.parent / f"{self.state.project_path.stem}-{name}"
        return self.studio.preferences.effective_cache_dir() / "merges" / str(name)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder's parent")
        if folder:
            self.out_edit.setText(str(Path(folder) / "merged"))
            self._save_settings()

    def merge_recipe(self) -> dict[str, Any] | list[dict[str, Any]]:
        """The recipe as merged: the project's, with the output dtype chosen here (for a
        multi-stage recipe, the list of stages; the dtype applies to the final one)."""
        document = self.state.document()
        recipe = document[-1] if isinstance(document, list) else document
        if self.state.merge.out_dtype:
            recipe["out_dtype"] = self.state.merge.out_dtype
        return document

    # ---- dry run -------------------------------------------------------------------------

    def dry_run(self) -> None:
        if self.dry_job is not None:
            return
        job = DryRunJob(self.merge_recipe(), self.memory_limits())
        job.succeeded.connect(self._dry_done)
        job.failed.connect(self._dry_failed)
        job.finished.connect(self._dry_finished)
        self.dry_job = job
        self.dry_button.setEnabled(False)
        self.dry_note.setText("Planning…")
        jobs.start(job)

    def _dry_done(self, result: DryRun) -> None:
        self.last_dry_run = result
        self.dry_labels["tensors"].setText(f"{result.tensors:,}")
        self.dry_labels["read"].setText(format_bytes(result.bytes_to_read))
        self.dry_labels["output"].setText(format_bytes(result.output_bytes))
        self.dry_labels["peak"].setText(format_bytes(result.peak_memory_bytes))
        self._show_memory(result.memory)
        self.dry_labels["time"].setText(result.time.describe().split(" (")[0])
        self.dry_labels["time"].setToolTip(f"{result.time.describe()}, from rates measured on this machine")
        for line in result.vocabulary:
            self._log(line, "info")
        count = len(result.warnings)
        # Warnings go to the log and the tooltip: the note stays short and the page still.
        for warning in result.warnings:
            self._log(warning, "warning")
        self.dry_note.setToolTip("\n".join(result.warnings))
        self.dry_note.setText(
            f"The plan is valid; {count} warning{'s' if count > 1 else ''} (hover, or see the log)."
            if count else "The plan is valid."
        )
        self.dry_run_finished.emit(True)

    def _dry_failed(self, message: str) -> None:
        for label in self.dry_labels.values():
            label.setText("—")
        self._log(f"dry run: {message}", "error")
        self.dry_note.setToolTip(message)
        metrics = self.dry_note.fontMetrics()
        width = max(200, self.dry_note.width()) * 2 - metrics.averageCharWidth() * 4
        self.dry_note.setText(metrics.elidedText(f"✗ {message}", Qt.TextElideMode.ElideRight, width))
        self.dry_run_finished.emit(False)

    def _dry_finished(self) -> None:
        self.dry_job = None
        self.dry_button.setEnabled(True)

    # ---- memory verdict ------------------------------------------------------------------

    def memory_limits(self) -> MemoryLimits:
        return MemoryLimits(self.state.merge.max_memory, self.studio.preferences.compute_dtype)

    def _memory_key(self) -> str:
        """What the verdict depends on: the recipe as merged, the cap, the compute dtype."""
        return json.dumps([self.merge_recipe(), asdict(self.memory_limits())], sort_keys=True, default=str)

    def memory_inputs_changed(self, *_args: object) -> None:
        """The recipe, the cap or the compute dtype changed: re-plan after a pause (or
        when the page is next shown)."""
        if self.isVisible():
            self._memory_timer.start()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._memory_timer.start()  # Settings may have changed the compute dtype meanwhile

    def check_memory(self) -> None:
        """Plan the current recipe under the cap in a worker and show the verdict (skipped
        when nothing it depends on changed since the last one)."""
        if not self.state.merged_references() and not self.state.stage_names():
            self._memory_checked_key = None
            self.memory_verdict = None
            self.dry_labels["peak"].setText("—")
            self._set_memory_note("Add models on the Models page: the memory this merge needs appears here.")
            return
        if self.memory_job is not None:
            return  # re-checked when it finishes
        key = self._memory_key()
        if key == self._memory_checked_key:
            return
        job = MemoryCheckJob(self.merge_recipe(), self.memory_limits())
        job.succeeded.connect(self._memory_done)
        job.failed.connect(self._memory_failed)
        job.finished.connect(self._memory_job_finished)
        self.memory_job = job
        self._memory_checked_key = key
        if self.memory_verdict is None:
            self._set_memory_note("Estimating the memory this merge needs…")
        jobs.start(job)

    def _stale(self) -> bool:
        """Whether the recipe or cap changed while the job planned (its answer is then
        dropped: the job's end starts a new one)."""
        return self._memory_checked_key != self._memory_key()

    def _memory_done(self, verdict: MemoryVerdict) -> None:
        if self._stale():
            return
        self.memory_verdict = verdict
        self._show_memory(verdict)
        self.memory_checked.emit(True)

    def _memory_failed(self, message: str) -> None:
        if self._stale():
            return
        self.memory_verdict = None
        self.dry_labels["peak"].setText("—")
        first = message.splitlines()[0] if message else "the recipe cannot be planned"
        metrics = self.memory_note.fontMetrics()  # two lines at most: the whole message is the tooltip
        room = max(200, self.memory_note.width()) * 2 - metrics.averageCharWidth() * 6
        text = metrics.elidedText(f"No estimate until the recipe is valid: {first}", Qt.TextElideMode.ElideRight, room)
        self._set_memory_note(text, message)
        self.memory_checked.emit(False)

    def _memory_job_finished(self) -> None:
        self.memory_job = None
        if self.isVisible() and self._stale():
            self._memory_timer.start()  # something changed while it planned

    def _show_memory(self, verdict: MemoryVerdict) -> None:
        self.dry_labels["peak"].setText(format_bytes(verdict.peak_bytes))
        peak = format_bytes(verdict.peak_bytes)
        if recipe_edit.writes_adapter(self.state.recipe):
            self._set_memory_note("The cap applies to full models: an adapter output runs without it.")
        elif verdict.max_memory is None:
            self._set_memory_note(f"No cap: this merge needs about {peak}. Pick a cap to refuse merges "
                                  "that need more.", verdict.summary())
        elif verdict.fits:
            self._set_memory_note(f"✓ Fits: needs about {peak} of {cap_label(verdict.max_memory)}.",
                                  verdict.summary(), True)
        else:
            least = format_bytes(verdict.least_bytes)
            fix = ("Raise the cap, or choose a method that streams" if verdict.streaming_would_help
                   else "Raise the cap to at least that")
            self._set_memory_note(
                f"✗ Does not fit: needs about {least}. {fix}.",
                f"{verdict.summary()}; {verdict.advice()}", False)

    def _set_memory_note(self, text: str, tip: str = "", good: bool | None = None) -> None:
        """The verdict next to the cap; ``good`` colours it (None: a plain hint)."""
        self.memory_note.setText(text)
        self.memory_note.setToolTip(tip or text)
        self.memory_note.setObjectName({None: "hint", True: "okNote", False: "errorNote"}[good])
        self.memory_note.style().unpolish(self.memory_note)
        self.memory_note.style().polish(self.memory_note)

    # ---- merge ---------------------------------------------------------------------------

    def start_merge(self) -> None:
        if self.merge_job is not None:
            return
        self._save_settings()
        settings = self.state.merge
        out_dir = Path(settings.out_dir or self.default_output())
        overwrite = settings.overwrite
        if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
            if not self._confirm_replace(out_dir):
                return
            overwrite = True
        preferences = self.studio.preferences
        options = MergeOptions(
            out_dir=str(out_dir),
            device=settings.device,
            compute_dtype=preferences.compute_dtype,
            shard_bytes=settings.shard_mb * 1_000_000,
            overwrite=overwrite,
            threads=preferences.threads or None,
            max_memory=settings.max_memory,
        )
        job = MergeJob(self.merge_recipe(), options)
        job.progress.connect(self._merge_progress)
        job.log.connect(self._log)
        job.succeeded.connect(self._merge_done)
        job.failed.connect(self._merge_failed)
        job.cancelled.connect(self._merge_cancelled)
        job.finished.connect(self._merge_finished)
        self.merge_job = job
        self._set_running(True)
        self.log_view.clear()
        self._log(f"merging into {out_dir}", "info")
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self.stats_label.set_full_text("")
        self._eta.reset()
        self._redraw.start()
        jobs.start(job)

    def _confirm_replace(self, folder: Path) -> bool:
        answer = QMessageBox.question(
            self, "Replace folder?", f"{folder} already exists. Replace it with the merged model?"
        )
        return answer == QMessageBox.StandardButton.Yes

    def cancel(self) -> None:
        if self.merge_job is not None:
            self.merge_job.cancel()
            self.cancel_button.setEnabled(False)
            self.progress.setFormat("cancelling…")

    def _merge_progress(self, progress: Progress) -> None:
        self._pending = progress  # drawn by the timer: bursts cost one redraw

    def _draw_progress(self) -> None:
        progress, self._pending = self._pending, None
        if progress is None:
            return
        self.progress.setValue(int(1000 * progress.fraction))
        self.progress.setFormat(f"{progress.fraction:.0%}")
        if progress.bytes_total:
            seconds = self._eta.update(progress.bytes_done, progress.bytes_total, progress.elapsed_s)
        else:
            seconds = self._eta.update(progress.done, progress.total, progress.elapsed_s)
        eta = "ETA estimating…" if seconds is None else f"ETA {format_duration(seconds)}"
        if progress.job == "merge":
            speed = progress.bytes_per_s / 1e6
            text = f"{progress.done:,}/{progress.total:,} tensors · {speed:,.0f} MB/s · {eta}"
        else:
            text = f"{progress.job}: {progress.done:,}/{progress.total:,} items · {eta}"
        self.stats_label.set_full_text(text)

    def _log(self, message: str, level: str) -> None:
        if level == "debug":
            return
        prefix = "" if level == "info" else f"{level}: "
        self.log_view.appendPlainText(prefix + message)

    def _stop_redraw(self) -> None:
        """Draw what is pending and stop the timer, so no late redraw overwrites the
        final state shown next."""
        self._draw_progress()
        self._redraw.stop()

    def _merge_done(self, result: Any) -> None:
        self._stop_redraw()
        self.last_output = Path(result.output)
        stats = result.stats
        speed = stats.bytes_read / max(stats.seconds, 1e-9) / 1e6
        self.progress.setValue(1000)
        self.progress.setFormat("done")
        self.stats_label.set_full_text(f"{stats.tensors:,} tensors in {stats.seconds:.1f} s · {speed:,.0f} MB/s")
        self._log(f"done in {stats.seconds:.1f} s: {result.output}", "info")
        self.open_button.setEnabled(True)
        self.eval_button.setEnabled(True)
        self.studio.show_message(f"merged into {result.output}")
        self._merge_outcome = "succeeded"

    def _merge_failed(self, message: str) -> None:
        self._stop_redraw()
        self.progress.setFormat("failed")
        self._log(message, "error")
        if MEMORY_REFUSAL in message:  # refused before writing: say so where the cap is set
            needs = message.partition(MEMORY_REFUSAL)[2].split(";")[0].strip().removeprefix("this merge ")
            self._set_memory_note(f"✗ Refused, nothing was written: {needs}.", message, False)
        self.studio.show_message(f"merge failed: {message.splitlines()[0] if message else ''}")
        self._merge_outcome = "failed"

    def _merge_cancelled(self) -> None:
        self._stop_redraw()
        self.progress.setValue(0)
        self.progress.setFormat("cancelled")
        self.stats_label.set_full_text("")
        self._log("cancelled: nothing was written", "warning")
        self._merge_outcome = "cancelled"

    def _merge_finished(self) -> None:
        """The job's thread is done: the page is idle again, and only now says how the
        merge ended, so a listener finds the buttons enabled."""
        self._redraw.stop()
        self._pending = None
        self.merge_job = None
        self._set_running(False)
        outcome, self._merge_outcome = self._merge_outcome, "failed"
        self.merge_finished.emit(outcome)

    def _set_running(self, running: bool) -> None:
        self.merge_button.setEnabled(not running)
        self.dry_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.open_button.setEnabled(False)
            self.eval_button.setEnabled(False)

    def open_output(self) -> None:
        if self.last_output is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.last_output)))

    def is_busy(self) -> bool:
        return any(job is not None for job in (self.merge_job, self.dry_job, self.eval_job))

    def cancel_all(self) -> None:
        self._memory_timer.stop()
        for job in (self.merge_job, self.dry_job, self.eval_job, self.memory_job):
            if job is not None:
                job.cancel()
        if self.generation is not None:
            self.generation.panel.stop()

    def try_generation(self) -> None:
        """The generation window for the recipe merged in memory (nothing written), and
        the last merged folder when there is one, beside the base and parents."""
        candidates = [Candidate("recipe (in memory)", self.merge_recipe(),
                                "The project's recipe merged into a resident model; nothing is written")]
        if self.last_output is not None:
            candidates.append(Candidate(f"last merge: {self.last_output.name}", str(self.last_output),
                                        str(self.last_output)))
        self.generation = show_generation(self, self.studio, self.generation, candidates, self.parents(),
                                          "Try the merge")

    # ---- quick eval ------------------------------------------------------------------------

    def _load_tasks(self) -> None:
        self.task_list.blockSignals(True)
        self.task_list.clear()
        for task in self.state.eval_tasks:
            self._add_task_item(task, checked=True)
        self.task_list.blockSignals(False)

    def _add_task_item(self, path: str, checked: bool) -> None:
        item = QListWidgetItem(Path(path).name)
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(path)
        item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self.task_list.addItem(item)

    def _add_task_file(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Task files", "", "Tasks (*.jsonl)")
        for path in paths:
            self._add_task_item(path, checked=True)
        self._tasks_edited()

    def _tasks_edited(self, _item: object = None) -> None:
        self.state.set_eval_tasks(self.all_tasks())

    def all_tasks(self) -> list[str]:
        return [str(self.task_list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.task_list.count())]

    def chosen_tasks(self) -> list[str]:
        items = (self.task_list.item(i) for i in range(self.task_list.count()))
        return [str(i.data(Qt.ItemDataRole.UserRole)) for i in items if i.checkState() == Qt.CheckState.Checked]

    def parents(self) -> dict[str, str]:
        """Display name -> folder of the base and every merged model known locally. The
        project's base counts even when the recipe names none (a linear average): it is
        the reference every fine-tune is measured against."""
        folders: dict[str, str] = {}
        for reference in self._references():
            name_and_folder = self._local_model(reference)
            if name_and_folder is not None:
                folders[name_and_folder[0]] = name_and_folder[1]
        return folders

    def base_label(self) -> str | None:
        """The base's name in ``parents()``, None when it is not a local model."""
        base = self._references()[0]
        found = self._local_model(base) if base else None
        return found[0] if found is not None else None

    def _references(self) -> list[str]:
        base = self.state.recipe.get("base_model") or self.state.base
        return [str(base or "")] + [str(m.get("model")) for m in self.state.recipe.get("models") or [] if m.get("model")]

    def _local_model(self, reference: str) -> tuple[str, str] | None:
        if not reference:
            return None
        entry = self.state.model(reference)
        if entry is not None and entry.source is not None:
            return entry.name, str(entry.source.root)
        if Path(reference).is_dir():
            return Path(reference).name, reference
        return None

    def start_eval(self) -> None:
        tasks = self.chosen_tasks()
        if self.eval_job is not None or self.last_output is None or not tasks:
            if not tasks:
                self.studio.show_message("tick at least one task file")
            return
        models = {MERGED_LABEL: str(self.last_output)}
        for name, folder in self.parents().items():
            models.setdefault(name, folder)
        job = EvalJob(
            models,
            tasks,
            self.limit_spin.value() or None,
            merged_label=MERGED_LABEL,
            base_label=self.base_label(),
            cache_dir=str(self.studio.preferences.effective_cache_dir()),
            specialist_of=self.pinned_specialists(),
            device=self.device_combo.currentText(),
        )
        job.log.connect(self._log)
        job.progress.connect(self._merge_progress)
        job.succeeded.connect(self._eval_done)
        job.failed.connect(self._eval_failed)
        job.cancelled.connect(self._eval_cancelled)
        job.finished.connect(self._eval_job_finished)
        self.eval_job = job
        self.eval_button.setEnabled(False)
        self.progress.setValue(0)
        self.progress.setFormat("evaluating…")
        self.stats_label.set_full_text("")
        self._redraw.start()
        jobs.start(job)

    # ---- which parent is each task's specialist ---------------------------------------------

    def pinned_specialists(self) -> dict[str, str]:
        """Task name -> the label (as the quick eval names models) of its pinned specialist."""
        label_of = {reference: found[0] for reference in self._references()
                    if (found := self._local_model(reference)) is not None}
        return {task: label_of[ref] for task, ref in self.state.specialists.items() if ref in label_of}

    def _eval_menu(self, position: Any) -> None:
        """Right-click on a parent's score: make that parent the task's specialist."""
        item = self.eval_table.itemAt(position)
        result = self.last_eval
        if item is None or result is None:
            return
        row = build_eval_table(result).rows[item.row()]
        cell = row.cells[item.column()]
        if row.task is None or cell.parent is None or cell.parent == result.base_label:
            return
        menu = QMenu(self.eval_table)
        choose = menu.addAction(f"Use {cell.parent} as the specialist of {row.task}")
        choose.setEnabled(not cell.specialist)
        automatic = menu.addAction(f"Let the best-scoring parent be {row.task}'s specialist")
        automatic.setEnabled(row.task in self.state.specialists)
        picked = menu.exec(self.eval_table.viewport().mapToGlobal(position))
        if picked is choose:
            self.state.set_specialist(row.task, self._reference_of(cell.parent))
        elif picked is automatic:
            self.state.set_specialist(row.task, None)

    def _reference_of(self, label: str) -> str | None:
        return next((ref for ref in self._references()
                     if (found := self._local_model(ref)) is not None and found[0] == label), None)

    def _specialists_changed(self) -> None:
        """Re-compare the last quick eval with the new pins (no model is evaluated again)."""
        if self.last_eval is not None:
            self.last_eval = self.last_eval.with_specialists(self.pinned_specialists())
            self._show_eval(self.last_eval)

    def _eval_done(self, result: QuickEval) -> None:
        self._stop_redraw()
        self.last_eval = result
        self.eval_reports = dict(result.reports)
        self._show_eval(result)
        cached = [label for label in result.reports if label not in result.evaluated]
        self.progress.setValue(self.progress.maximum())
        self.progress.setFormat("evaluated")
        self.stats_label.set_full_text(
            f"scored {', '.join(result.evaluated) or 'nothing'}"
            + (f"; {len(cached)} from the cache" if cached else "")
        )
        self._eval_ok = True

    def _eval_cancelled(self) -> None:
        self._stop_redraw()
        self.progress.setFormat("cancelled")

    def _eval_failed(self, message: str) -> None:
        self._stop_redraw()
        self.progress.setFormat("quick eval failed")
        self._log(f"quick eval failed: {message}", "error")

    def _eval_job_finished(self) -> None:
        """The job's thread is done: only now say how it ended, so a listener finds the
        page idle (Run quick eval enabled again)."""
        self._redraw.stop()
        self.eval_job = None
        self.eval_button.setEnabled(self.last_output is not None)
        ok, self._eval_ok = self._eval_ok, False
        self.eval_finished.emit(ok)

    def _show_eval(self, result: QuickEval) -> None:
        """Rows are tasks and a mean row; columns the merge, its Δ vs the base and its
        normalized accuracy, then the base and every parent. The merge's column is bold;
        each task's specialist (the denominator of normalized) is underlined."""
        table = build_eval_table(result)
        self.eval_table.clear()
        self.eval_table.setRowCount(len(table.rows))
        self.eval_table.setColumnCount(len(table.columns))
        # Labels first, then tooltips on the items the table made: it owns them.
        self.eval_table.setHorizontalHeaderLabels([label for label, _tip in table.columns])
        self.eval_table.setVerticalHeaderLabels([row.label for row in table.rows])
        for column, (_label, tip) in enumerate(table.columns):
            self.eval_table.horizontalHeaderItem(column).setToolTip(tip)
        for row, spec in enumerate(table.rows):
            self.eval_table.verticalHeaderItem(row).setToolTip(spec.tip)
            for column, cell in enumerate(spec.cells):
                self.eval_table.setItem(row, column, self._cell_item(cell))
        self.eval_verdict.setText(table.verdict)
        self.eval_legend.setText(table.legend)

    @staticmethod
    def _cell_item(cell: EvalCell) -> QTableWidgetItem:
        item = QTableWidgetItem(cell.text)
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        item.setData(Qt.ItemDataRole.UserRole, cell.value)
        if cell.tip:
            item.setToolTip(cell.tip)
        font = item.font()
        font.setBold(cell.merged)
        font.setUnderline(cell.specialist)
        item.setFont(font)
        if cell.merged:
            item.setBackground(MERGED_TINT)
        return item


def cap_label(size: int) -> str:
    """512_000_000 -> '512 MB', 2_000_000_000 -> '2 GB' (as ``--max-memory`` counts)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return format_bytes(size)


register_page(PageSpec("merge", "Merge", "Dry run, merge in the background, quick eval", MergePage))
