"""Experts: build a mixture-of-experts model from the project's models. A base (attention,
embeddings, norms) and expert rows (a model whose MLP becomes an expert, with prompts
that say which tokens go to it), the gate mode and experts per token; Dry run and Build
run in worker threads like the Merge page's jobs. The config is mergekit-moe's YAML,
shown beside the log and saved or opened as a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergestudio.events import Progress
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.context import Studio
from mergestudio_qt.format import format_bytes
from mergestudio_qt.pages import PageSpec, register_page
from mergestudio_qt.state import display_name
from mergestudio_qt.widgets.folder_row import folder_row

GATE_MODES = (
    ("hidden", "hidden: the base's hidden state at each prompt's last token, per layer"),
    ("hidden_avg", "hidden_avg: the base's hidden states averaged over each prompt, per layer"),
    ("cheap_embed", "cheap_embed: the prompts' token embeddings (no model run)"),
    ("random", "random: seeded random rows (for training the routers later)"),
    ("uniform_random", "uniform_random: like nn.Linear's initialisation"),
)
DTYPES = (("same as base", ""), ("bfloat16", "bfloat16"), ("float16", "float16"), ("float32", "float32"))
REDRAW_MS = 66


@dataclass
class ExpertRow:
    model: str = ""
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    shared: bool = False  # Qwen2-MoE's shared expert

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"source_model": self.model}
        if self.positive:
            entry["positive_prompts"] = list(self.positive)
        if self.negative:
            entry["negative_prompts"] = list(self.negative)
        return entry


class MoEDryRunJob(jobs.Job):
    def __init__(self, config: dict[str, Any], out_dir: str) -> None:
        super().__init__()
        self.config, self.out_dir = config, out_dir

    def work(self) -> Any:
        from mergestudio.moe import plan_moe

        plan = plan_moe(self.config, self.out_dir or None, overwrite=True)
        try:
            return plan.report()
        finally:
            plan.close()


class MoEBuildJob(jobs.Job):
    def __init__(self, config: dict[str, Any], out_dir: str, device: str) -> None:
        super().__init__()
        self.config, self.out_dir, self.device = config, out_dir, device

    def work(self) -> Any:
        from mergestudio.moe import build_moe

        return build_moe(self.config, self.out_dir, device=self.device, overwrite=True, events=self.events,
                         cancel=self.cancel_token)


class ExpertsPage(QWidget):
    """``dry_run_finished(ok)`` and ``build_finished(status)`` ("succeeded", "failed",
    "cancelled") for tests and the window."""

    dry_run_finished = Signal(bool)
    build_finished = Signal(str)

    def __init__(self, studio: Studio) -> None:
        super().__init__()
        self.studio = studio
        self.state = studio.state
        self.experts: list[ExpertRow] = []
        self.dry_job: MoEDryRunJob | None = None
        self.build_job: MoEBuildJob | None = None
        self.last_report: dict[str, Any] | None = None
        self._build_status = "failed"
        self._pending: Progress | None = None
        self._editing = False
        self._redraw = QTimer(self)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._draw_progress)
        self._build()
        self.state.models_changed.connect(self._models_changed)
        self._models_changed()

    # ---- building ---------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(10)
        title = QLabel("Experts", self)
        title.setObjectName("pageTitle")
        layout.addWidget(title)
        hint = QLabel("Make one mixture-of-experts model: the base keeps attention and embeddings; each expert "
                      "is the MLP of one fine-tune, chosen per token by a router made from its prompts.", self)
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        top = QHBoxLayout()
        top.setSpacing(16)
        top.addWidget(self._build_settings(), 2)
        top.addWidget(self._build_experts(), 3)
        layout.addLayout(top, 3)
        layout.addLayout(self._build_actions())
        layout.addWidget(self._build_output(), 2)

    def _build_settings(self) -> QWidget:
        box = QGroupBox("Model", self)
        form = QFormLayout(box)
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(8)
        self.base_combo = QComboBox(box)
        self.base_combo.setToolTip("Attention, embeddings, norms and the head come from this model; "
                                   "a Llama/Mistral base gives Mixtral, a Qwen2 base Qwen2-MoE")
        self.base_combo.currentIndexChanged.connect(self._config_edited)
        form.addRow("Base", self.base_combo)
        self.gate_combo = QComboBox(box)
        for mode, text in GATE_MODES:
            self.gate_combo.addItem(mode, mode)
            self.gate_combo.setItemData(self.gate_combo.count() - 1, text, Qt.ItemDataRole.ToolTipRole)
        self.gate_combo.setToolTip("How each expert's router row is made")
        self.gate_combo.currentIndexChanged.connect(self._config_edited)
        form.addRow("Gate mode", self.gate_combo)
        self.per_token_spin = QSpinBox(box)
        self.per_token_spin.setRange(1, 64)
        self.per_token_spin.setValue(2)
        self.per_token_spin.setToolTip("How many experts run on each token")
        self.per_token_spin.valueChanged.connect(self._config_edited)
        form.addRow("Experts per token", self.per_token_spin)
        self.dtype_combo = QComboBox(box)
        for label, value in DTYPES:
            self.dtype_combo.addItem(label, value)
        self.dtype_combo.currentIndexChanged.connect(self._config_edited)
        form.addRow("Dtype", self.dtype_combo)
        row, self.out_edit = folder_row(box, "a new folder for the MoE model",
                                        "The MoE model's folder. It appears only when the build completes.",
                                        self._browse)
        form.addRow("Folder", row)
        files = QHBoxLayout()
        open_button = QPushButton("Open YAML…", box)
        open_button.setToolTip("Load a mergekit-moe config")
        open_button.clicked.connect(self._open_yaml)
        save_button = QPushButton("Save YAML…", box)
        save_button.setToolTip("Save this config (mergekit-moe's format; `mergestudio moe` runs it)")
        save_button.clicked.connect(self._save_yaml)
        files.addWidget(open_button)
        files.addWidget(save_button)
        files.addStretch(1)
        form.addRow("", files)
        return box

    def _build_experts(self) -> QWidget:
        box = QGroupBox("Experts", self)
        layout = QHBoxLayout(box)
        layout.setSpacing(10)
        left = QVBoxLayout()
        self.expert_list = QListWidget(box)
        self.expert_list.setMinimumWidth(160)
        self.expert_list.currentRowChanged.connect(self._show_expert)
        left.addWidget(self.expert_list, 1)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add", box)
        self.add_button.setToolTip("Add an expert row")
        self.add_button.clicked.connect(lambda: self.add_expert(ExpertRow(model=self._first_other_model())))
        self.remove_button = QPushButton("Remove", box)
        self.remove_button.clicked.connect(self._remove_expert)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        left.addLayout(buttons)
        layout.addLayout(left, 2)
        editor = QFormLayout()
        editor.setVerticalSpacing(6)
        self.model_combo = QComboBox(box)
        self.model_combo.setToolTip("The model whose MLP this expert is")
        self.model_combo.currentIndexChanged.connect(self._expert_edited)
        editor.addRow("Model", self.model_combo)
        self.positive_edit = QPlainTextEdit(box)
        self.positive_edit.setPlaceholderText("One prompt per line: text this expert should receive")
        self.positive_edit.textChanged.connect(self._expert_edited)
        editor.addRow("Positive", self.positive_edit)
        self.negative_edit = QPlainTextEdit(box)
        self.negative_edit.setPlaceholderText("Optional: text it should not receive")
        self.negative_edit.setMaximumHeight(70)
        self.negative_edit.textChanged.connect(self._expert_edited)
        editor.addRow("Negative", self.negative_edit)
        self.shared_check = QCheckBox("Shared expert", box)
        self.shared_check.setToolTip("Qwen2-MoE's shared expert: runs on every token, beside the routed ones")
        self.shared_check.toggled.connect(self._expert_edited)
        editor.addRow("", self.shared_check)
        layout.addLayout(editor, 3)
        return box

    def _build_actions(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(8)
        self.dry_button = QPushButton("Dry run", self)
        self.dry_button.setToolTip("Check the config against the models' headers; read no tensor")
        self.dry_button.clicked.connect(self.dry_run)
        self.build_button = QPushButton("Build", self)
        self.build_button.setObjectName("primary")
        self.build_button.setToolTip("Compute the routers and write the MoE model in the background")
        self.build_button.clicked.connect(self.start_build)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop; nothing is left at the output folder")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setFormat("idle")
        self.summary_label = QLabel("", self)
        self.summary_label.setObjectName("number")
        for widget in (self.dry_button, self.build_button, self.cancel_button):
            row.addWidget(widget)
        row.addWidget(self.progress, 1)
        row.addWidget(self.summary_label)
        return row

    def _build_output(self) -> QWidget:
        tabs = QTabWidget(self)
        self.log_view = QPlainTextEdit(tabs)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("The dry run and the build log appear here.")
        tabs.addTab(self.log_view, "Log")
        self.yaml_view = QPlainTextEdit(tabs)
        self.yaml_view.setReadOnly(True)
        tabs.addTab(self.yaml_view, "YAML (mergekit-moe)")
        return tabs

    # ---- the config -------------------------------------------------------------------------

    def _references(self) -> list[str]:
        return [m.reference for m in self.state.models]

    def _first_other_model(self) -> str:
        taken = {self.base_reference(), *(row.model for row in self.experts)}
        return next((r for r in self._references() if r not in taken), "")

    def base_reference(self) -> str:
        return str(self.base_combo.currentData() or "")

    def _fill_combo(self, combo: QComboBox, selected: str) -> None:
        combo.blockSignals(True)
        combo.clear()
        for reference in self._references():
            combo.addItem(display_name(reference), reference)
            combo.setItemData(combo.count() - 1, reference, Qt.ItemDataRole.ToolTipRole)
        if selected and combo.findData(selected) < 0:
            combo.addItem(display_name(selected), selected)
        combo.setCurrentIndex(max(0, combo.findData(selected)))
        combo.blockSignals(False)

    def _models_changed(self) -> None:
        self._fill_combo(self.base_combo, self.base_reference() or (self.state.base or ""))
        self._show_expert(self.expert_list.currentRow())
        self._config_edited()

    def config(self) -> dict[str, Any]:
        """The page's config as mergekit-moe's YAML would say it."""
        config: dict[str, Any] = {
            "base_model": self.base_reference(),
            "gate_mode": str(self.gate_combo.currentData()),
            "experts_per_token": self.per_token_spin.value(),
            "experts": [row.to_dict() for row in self.experts if not row.shared],
        }
        if self.dtype_combo.currentData():
            config["dtype"] = str(self.dtype_combo.currentData())
        shared = [row.to_dict() for row in self.experts if row.shared]
        if shared:
            config["shared_experts"] = shared
        return config

    def load_config(self, config: dict[str, Any]) -> None:
        from mergestudio.moe import MoEConfig

        parsed = MoEConfig.from_dict(config)
        self._fill_combo(self.base_combo, parsed.base_model)
        self.gate_combo.setCurrentIndex(max(0, self.gate_combo.findData(parsed.gate_mode)))
        self.per_token_spin.setValue(parsed.experts_per_token)
        self.dtype_combo.setCurrentIndex(max(0, self.dtype_combo.findData(parsed.dtype or "")))
        self.experts = [
            ExpertRow(e.source_model, list(e.positive_prompts or []), list(e.negative_prompts or []), shared)
            for shared, group in ((False, parsed.experts), (True, parsed.shared_experts or []))
            for e in group
        ]
        self._refresh_list(0)

    def add_expert(self, row: ExpertRow) -> None:
        self.experts.append(row)
        self._refresh_list(len(self.experts) - 1)

    def _remove_expert(self) -> None:
        index = self.expert_list.currentRow()
        if 0 <= index < len(self.experts):
            del self.experts[index]
            self._refresh_list(min(index, len(self.experts) - 1))

    def _refresh_list(self, select: int) -> None:
        self.expert_list.blockSignals(True)
        self.expert_list.clear()
        for index, row in enumerate(self.experts):
            item = QListWidgetItem(self._row_title(index, row))
            item.setToolTip(row.model)
            self.expert_list.addItem(item)
        self.expert_list.blockSignals(False)
        self.expert_list.setCurrentRow(select)
        self._show_expert(select)
        self._config_edited()

    def _row_title(self, index: int, row: ExpertRow) -> str:
        role = "shared" if row.shared else f"{index}"
        return f"{role} · {display_name(row.model) if row.model else '(no model)'} · {len(row.positive)} prompts"

    def _show_expert(self, index: int) -> None:
        valid = 0 <= index < len(self.experts)
        for widget in (self.model_combo, self.positive_edit, self.negative_edit, self.shared_check,
                       self.remove_button):
            widget.setEnabled(valid)
        self._editing = True
        row = self.experts[index] if valid else ExpertRow()
        self._fill_combo(self.model_combo, row.model)
        self.positive_edit.setPlainText("\n".join(row.positive))
        self.negative_edit.setPlainText("\n".join(row.negative))
        self.shared_check.setChecked(row.shared)
        self._editing = False

    def _expert_edited(self) -> None:
        index = self.expert_list.currentRow()
        if self._editing or not 0 <= index < len(self.experts):
            return
        row = self.experts[index]
        row.model = str(self.model_combo.currentData() or "")
        row.positive = _lines(self.positive_edit.toPlainText())
        row.negative = _lines(self.negative_edit.toPlainText())
        row.shared = self.shared_check.isChecked()
        item = self.expert_list.item(index)
        item.setText(self._row_title(index, row))
        item.setToolTip(row.model)
        self._config_edited()

    def _config_edited(self) -> None:
        import yaml

        self.yaml_view.setPlainText(yaml.safe_dump(self.config(), sort_keys=False, allow_unicode=True))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder's parent")
        if folder:
            self.out_edit.setText(str(Path(folder) / "moe"))

    def _open_yaml(self) -> None:
        import yaml
        from mergestudio.errors import MergeStudioError

        path, _ = QFileDialog.getOpenFileName(self, "Open MoE config", "", "YAML (*.yml *.yaml)")
        if not path:
            return
        try:
            self.load_config(yaml.safe_load(Path(path).read_text()))
        except (MergeStudioError, OSError, yaml.YAMLError) as error:
            self._log(f"{path}: {error}", "error")

    def _save_yaml(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save MoE config", "moe.yml", "YAML (*.yml *.yaml)")
        if path:
            Path(path).write_text(self.yaml_view.toPlainText())

    def out_dir(self) -> str:
        text = self.out_edit.text().strip()
        return text or str(self.studio.preferences.effective_cache_dir() / "merges" / "moe")

    # ---- jobs -------------------------------------------------------------------------------

    def dry_run(self) -> None:
        if self.dry_job is not None:
            return
        job = MoEDryRunJob(self.config(), self.out_dir())
        job.succeeded.connect(self._dry_done)
        job.failed.connect(self._dry_failed)
        job.finished.connect(self._dry_finished)
        self.dry_job = job
        self.dry_button.setEnabled(False)
        jobs.start(job)

    def _dry_done(self, report: dict[str, Any]) -> None:
        from mergestudio.cli.moe_cmd import describe_report

        self.last_report = report
        for line in describe_report(report):
            self._log(line, "warning" if line.startswith("warning") else "info")
        self.summary_label.setText(f"{report['tensors']} tensors · writes {format_bytes(report['bytes_to_write'])}")
        self.dry_run_finished.emit(True)

    def _dry_failed(self, message: str) -> None:
        self.last_report = None
        self._log(f"dry run: {message}", "error")
        self.summary_label.setText("✗ see the log")
        self.dry_run_finished.emit(False)

    def _dry_finished(self) -> None:
        self.dry_job = None
        self.dry_button.setEnabled(True)

    def start_build(self) -> None:
        if self.build_job is not None:
            return
        job = MoEBuildJob(self.config(), self.out_dir(), self.state.merge.device or "cpu")
        job.progress.connect(self._progress)
        job.log.connect(self._log)
        job.succeeded.connect(self._build_done)
        job.failed.connect(self._build_failed)
        job.cancelled.connect(self._build_cancelled)
        job.finished.connect(self._build_finished_thread)
        self.build_job = job
        self._set_running(True)
        self._log(f"building {self.out_dir()}", "info")
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self._redraw.start()
        jobs.start(job)

    def cancel(self) -> None:
        if self.build_job is not None:
            self.build_job.cancel()
            self.cancel_button.setEnabled(False)
            self.progress.setFormat("cancelling…")

    def _progress(self, progress: Progress) -> None:
        self._pending = progress

    def _draw_progress(self) -> None:
        progress, self._pending = self._pending, None
        if progress is None:
            return
        self.progress.setValue(int(1000 * progress.fraction))
        step = "routers" if progress.job == "moe gates" else "tensors"
        self.progress.setFormat(f"{step} {progress.done}/{progress.total}")

    def _build_done(self, result: Any) -> None:
        self._build_status = "succeeded"
        self.summary_label.setText(f"{result.tensors} tensors · {format_bytes(result.bytes_written)}")
        self._log(f"built {result.output}", "info")

    def _build_failed(self, message: str) -> None:
        self._build_status = "failed"
        self._log(message, "error")

    def _build_cancelled(self) -> None:
        self._build_status = "cancelled"
        self._log("cancelled: nothing was written", "warning")

    def _build_finished_thread(self) -> None:
        self.build_job = None
        self._redraw.stop()
        self._draw_progress()
        self._set_running(False)
        self.progress.setFormat({"succeeded": "done", "cancelled": "cancelled"}.get(self._build_status, "failed"))
        self.build_finished.emit(self._build_status)

    def _set_running(self, running: bool) -> None:
        self.build_button.setEnabled(not running)
        self.dry_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _log(self, message: str, level: str) -> None:
        if level == "debug":
            return
        prefix = "" if level == "info" else f"{level}: "
        self.log_view.appendPlainText(f"{prefix}{message}")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


register_page(PageSpec("moe", "Experts", "Mixture of experts from fine-tunes", ExpertsPage))
