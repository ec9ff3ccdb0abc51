"""Try a candidate by reading what it writes: a prompt, sampling controls, and the tokens
of the candidate and any of its parents streamed into side-by-side columns (same prompt,
same seed). Stop ends every stream before its next token.

The Merge page opens it for the project's recipe merged in memory (or its last merged
folder), the Evolve page for any trial merged in memory. The models stay loaded while
the window is open (``LoadedModels``): a new recipe is merged into the same resident
model, and parents load once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.context import Studio
from mergestudio_qt.widgets.elide import ElidedLabel
from mergestudio_qt.widgets.generate_jobs import Column, GenerateJob, generation_threads

if TYPE_CHECKING:
    from mergestudio.evaluate.generate import Generation, LoadedModels, SamplingOptions

REDRAW_MS = 33  # streamed text is drawn at ~30 Hz, however fast tokens come
DEFAULT_PROMPT = "rev ynbi="
MODES = ("Greedy", "Sample")
STOP_WORDS = {  # why a column ended, in the few words its status line has room for
    "eos": "end of text",
    "length": "token limit",
    "context": "context full",
    "stopped": "stopped",
}


@dataclass(frozen=True)
class Candidate:
    """A model to try: its name in the candidate box, and a model folder or a recipe dict
    (merged in memory)."""

    label: str
    reference: str | dict[str, Any]
    tip: str = ""


class _StreamColumn(QFrame):
    """One model's column: its name, the streamed text, and a line of statistics."""

    def __init__(self, label: str, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("generateColumn")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.title = ElidedLabel(label, self)
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setObjectName("generatedText")
        self.stats = ElidedLabel("", self)
        self.stats.setObjectName("hint")
        layout.addWidget(self.title)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.stats)
        self.pending = ""

    def append_pending(self) -> bool:
        """Draw the text received since the last redraw; False when there was none."""
        if not self.pending:
            return False
        cursor = self.text.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(self.pending)
        self.pending = ""
        self.text.ensureCursorVisible()
        return True


class GeneratePanel(QWidget):
    """``generation_finished(status)`` once a generation's thread is done: "succeeded",
    "stopped", or "failed"."""

    generation_finished = Signal(str)

    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.job: GenerateJob | None = None
        self.columns: list[_StreamColumn] = []
        self.last_results: list[Generation] = []
        self.redraws = 0  # redraws that drew new text (tests read it)
        self._models: LoadedModels | None = None
        self._models_device = ""
        self._outcome = "failed"
        self._streaming = False
        self._candidates: list[Candidate] = []
        self._parents: dict[str, str] = {}
        self._redraw = QTimer(self)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._draw)
        self._build()
        self._mode_changed()

    # ---- building ----------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(8)
        top = QHBoxLayout()
        top.addWidget(QLabel("Candidate", self))
        self.candidate_combo = QComboBox(self)
        self.candidate_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.candidate_combo.setMinimumContentsLength(24)
        top.addWidget(self.candidate_combo, 1)
        # A push button reserves room for its menu's arrow; a tool button draws it over the text.
        self.parents_button = QPushButton(self)
        self.parents_button.setToolTip("Parents generated beside the candidate, with the same prompt and seed")
        self.parents_menu = QMenu(self.parents_button)
        self.parents_button.setMenu(self.parents_menu)
        top.addWidget(self.parents_button)
        layout.addLayout(top)
        self.prompt_edit = QPlainTextEdit(self)
        self.prompt_edit.setPlaceholderText("A prompt")
        self.prompt_edit.setPlainText(DEFAULT_PROMPT)
        self.prompt_edit.setFixedHeight(4 * self.prompt_edit.fontMetrics().lineSpacing() + 12)
        self.prompt_edit.setToolTip("The prompt; Ctrl+Enter generates")
        layout.addWidget(self.prompt_edit)
        layout.addLayout(self._build_controls())
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setObjectName("generateColumns")
        self.splitter.setChildrenCollapsible(False)
        layout.addWidget(self.splitter, 1)
        shortcut = QShortcut(QKeySequence("Ctrl+Return"), self)
        shortcut.activated.connect(self.start)
        self._placeholder_columns()

    def _build_controls(self) -> QVBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(6)
        self.mode_combo = QComboBox(self)
        self.mode_combo.addItems(list(MODES))
        self.mode_combo.setToolTip("Greedy takes the most likely token; Sample draws with temperature and top-p")
        self.mode_combo.currentIndexChanged.connect(self._mode_changed)
        self.temperature_spin = QDoubleSpinBox(self)
        self.temperature_spin.setRange(0.05, 5.0)
        self.temperature_spin.setSingleStep(0.05)
        self.temperature_spin.setValue(0.8)
        self.temperature_spin.setToolTip("Temperature: below 1 sharper, above 1 more varied")
        self.top_p_spin = QDoubleSpinBox(self)
        self.top_p_spin.setRange(0.01, 1.0)
        self.top_p_spin.setSingleStep(0.05)
        self.top_p_spin.setValue(0.95)
        self.top_p_spin.setToolTip("Top-p: draw only from the most likely tokens holding this much probability")
        self.max_tokens_spin = QSpinBox(self)
        self.max_tokens_spin.setRange(1, 8192)
        self.max_tokens_spin.setValue(64)
        self.max_tokens_spin.setToolTip("Most new tokens per column")
        self.seed_spin = QSpinBox(self)
        self.seed_spin.setRange(0, 99_999_999)
        self.seed_spin.setToolTip("Seed of the sampler; every column uses the same one")
        self.chat_check = QCheckBox("Chat template", self)
        self.chat_check.setChecked(True)
        self.chat_check.setToolTip("Wrap the prompt in the tokenizer's chat template when it has one")
        for text, widget in (("Decoding", self.mode_combo), ("Temp.", self.temperature_spin),
                             ("Top-p", self.top_p_spin), ("Max tokens", self.max_tokens_spin),
                             ("Seed", self.seed_spin)):
            label = QLabel(text, self)
            label.setBuddy(widget)
            row.addWidget(label)
            row.addWidget(widget)
            row.addSpacing(4)
        row.addWidget(self.chat_check)
        row.addStretch(1)
        actions = QHBoxLayout()
        actions.setSpacing(6)
        self.generate_button = QPushButton("Generate", self)
        self.generate_button.setObjectName("primary")
        self.generate_button.setToolTip("Generate from the candidate and the ticked parents (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("Stop every column before its next token (Esc)")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.status = ElidedLabel("", self)
        self.status.setObjectName("hint")
        actions.addWidget(self.status, 1)
        actions.addWidget(self.generate_button)
        actions.addWidget(self.stop_button)
        # Two rows, so the window fits 1024 pixels: the sampling controls, then the status
        # and the buttons.
        outer = QVBoxLayout()
        outer.setSpacing(6)
        outer.addLayout(row)
        outer.addLayout(actions)
        return outer

    def _mode_changed(self) -> None:
        sampling = self.mode_combo.currentIndex() == 1
        for widget in (self.temperature_spin, self.top_p_spin, self.seed_spin):
            widget.setEnabled(sampling)

    def _placeholder_columns(self) -> None:
        self._set_columns(["candidate"])
        self.columns[0].text.setPlaceholderText("Generated text appears here, token by token.")

    def _set_columns(self, labels: Sequence[str]) -> None:
        for column in self.columns:
            column.setParent(None)
            column.deleteLater()
        self.columns = [_StreamColumn(label, self.splitter) for label in labels]
        for column in self.columns:
            self.splitter.addWidget(column)
        self.splitter.setSizes([1000] * len(self.columns))

    # ---- what is tried -----------------------------------------------------------------

    def set_subject(self, candidates: Sequence[Candidate], parents: Mapping[str, str]) -> None:
        """The candidates to choose from (first selected) and the parents that can be
        generated beside them (name -> model folder). None is ticked at first: each
        ticked parent is one more model in memory; ticks of names seen before are kept."""
        ticked = set(self.chosen_parents())
        self._candidates = list(candidates)
        self._parents = dict(parents)
        self.candidate_combo.clear()
        for candidate in self._candidates:
            self.candidate_combo.addItem(candidate.label)
            self.candidate_combo.setItemData(
                self.candidate_combo.count() - 1, candidate.tip or candidate.label, Qt.ItemDataRole.ToolTipRole
            )
        self.parents_menu.clear()
        for name, folder in self._parents.items():
            action = QAction(name, self.parents_menu)
            action.setCheckable(True)
            action.setChecked(name in ticked)
            action.setToolTip(folder)
            action.toggled.connect(self._update_parents_button)
            self.parents_menu.addAction(action)
        self._update_parents_button()
        self.generate_button.setEnabled(bool(self._candidates) and self.job is None)

    def chosen_parents(self) -> list[str]:
        return [a.text() for a in self.parents_menu.actions() if a.isChecked()]

    def set_parent_checked(self, name: str, checked: bool) -> None:
        for action in self.parents_menu.actions():
            if action.text() == name:
                action.setChecked(checked)

    def _update_parents_button(self) -> None:
        count = len(self.parents_menu.actions())
        self.parents_button.setText(f"Parents: {len(self.chosen_parents())} of {count}")
        self.parents_button.setEnabled(count > 0)

    def options(self) -> SamplingOptions:
        from mergestudio.evaluate.generate import SamplingOptions

        sampling = self.mode_combo.currentIndex() == 1
        return SamplingOptions(
            max_new_tokens=self.max_tokens_spin.value(),
            temperature=self.temperature_spin.value() if sampling else 0.0,
            top_p=self.top_p_spin.value() if sampling else 1.0,
            seed=self.seed_spin.value(),
            chat=self.chat_check.isChecked(),
        )

    def _columns_to_run(self) -> list[Column]:
        candidate = self._candidates[max(0, self.candidate_combo.currentIndex())]
        chosen = [Column(name, self._parents[name]) for name in self.chosen_parents()]
        return [Column(candidate.label, candidate.reference), *chosen]

    def _loaded_models(self) -> LoadedModels:
        """The models kept loaded; new ones when the device setting changed."""
        from mergestudio.evaluate.generate import LoadedModels

        device = self.studio.preferences.device
        if self._models is None or self._models_device != device:
            if self._models is not None:
                self._models.close()
            self._models = LoadedModels(device=device, dtype="auto", merge_threads=self.studio.preferences.threads or None)
            self._models_device = device
        return self._models

    # ---- running -----------------------------------------------------------------------

    def start(self) -> None:
        if self.job is not None or not self._candidates:
            return
        prompt = self.prompt_edit.toPlainText()
        if not prompt.strip():
            self.status.set_full_text("Write a prompt first.")
            return
        columns = self._columns_to_run()
        job = GenerateJob(
            self._loaded_models(), columns, prompt, self.options(),
            generation_threads(self.studio.preferences.threads),
        )
        job.token.connect(self._on_token)
        job.loading.connect(self._on_loading)
        job.results.connect(self._on_results)
        job.failed.connect(self._on_failed)
        job.cancelled.connect(self._on_stopped)
        job.succeeded.connect(self._on_succeeded)
        job.finished.connect(self._on_finished)
        self.job = job
        self._outcome = "failed"
        self.last_results = []
        self._set_columns([c.label for c in columns])
        self.status.set_full_text("starting…")
        self._set_running(True)
        self._redraw.start()
        jobs.start(job)

    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.stop_button.setEnabled(False)
            self.status.set_full_text("stopping…")

    def is_busy(self) -> bool:
        return self.job is not None

    def _set_running(self, running: bool) -> None:
        self.generate_button.setEnabled(not running and bool(self._candidates))
        self.stop_button.setEnabled(running)
        self.candidate_combo.setEnabled(not running)
        self.parents_button.setEnabled(not running and bool(self._parents))

    def _on_loading(self, index: int) -> None:
        column = self.job.columns[index] if self.job is not None else None
        if column is None:
            return
        verb = "merging in memory" if column.in_memory else "loading"
        self.status.set_full_text(f"{verb}: {column.label}…")
        self._streaming = False

    def _on_token(self, index: int, text: str) -> None:
        if not self._streaming:
            self._streaming = True
            self.status.set_full_text("generating…")
        if 0 <= index < len(self.columns):
            self.columns[index].pending += text  # drawn by the timer: a burst costs one redraw

    def _draw(self) -> None:
        drawn = [column.append_pending() for column in self.columns]
        if any(drawn):
            self.redraws += 1

    def _on_results(self, generations: list[Generation]) -> None:
        self._draw()
        self.last_results = list(generations)
        for column, generation in zip(self.columns, generations, strict=False):
            # The final text includes any tail held back for an unfinished character.
            if column.text.toPlainText() != generation.text:
                column.text.setPlainText(generation.text)
            template = " · chat template" if generation.chat_template else ""
            count = len(generation.token_ids)
            column.stats.set_full_text(
                f"{count} token{'' if count == 1 else 's'} · {generation.tokens_per_s:.1f} tok/s · "
                f"{STOP_WORDS[generation.stop_reason]}{template}"
            )

    def _on_succeeded(self, _result: object) -> None:
        self._outcome = "succeeded"
        self.status.set_full_text("done")

    def _on_stopped(self) -> None:
        self._outcome = "stopped"
        self.status.set_full_text("stopped")

    def _on_failed(self, message: str) -> None:
        self._outcome = "failed"
        first = message.splitlines()[0] if message else "failed"
        self.status.set_full_text(f"✗ {first}", message)

    def _on_finished(self) -> None:
        self._redraw.stop()
        self._draw()
        self.job = None
        self._set_running(False)
        outcome, self._outcome = self._outcome, "failed"
        self.generation_finished.emit(outcome)

    def release_models(self) -> None:
        """Free the loaded models (when the panel closes); the next Generate loads again."""
        if self.job is None and self._models is not None:
            self._models.close()
            self._models = None

    def column_texts(self) -> list[str]:
        return [column.text.toPlainText() for column in self.columns]


class GenerateDialog(QDialog):
    """The panel in its own non-modal window, so the page stays usable beside it."""

    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Try the candidate")
        self.setModal(False)
        self.panel = GeneratePanel(studio, self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.panel)
        self.resize(1100, 640)
        self.panel.generation_finished.connect(self._release_if_hidden)
        escape = QShortcut(QKeySequence("Esc"), self)
        escape.activated.connect(self._escape)

    def _escape(self) -> None:
        if self.panel.is_busy():
            self.panel.stop()
        else:
            self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.panel.stop()
        self.panel.release_models()
        super().closeEvent(event)

    def _release_if_hidden(self, _outcome: str) -> None:
        if not self.isVisible():
            self.panel.release_models()


def show_generation(
    parent: QWidget,
    studio: Studio,
    dialog: GenerateDialog | None,
    candidates: Sequence[Candidate],
    parents: Mapping[str, str],
    title: str,
) -> GenerateDialog:
    """Show the generation window for ``candidates`` (made on first use, then reused, so
    its models and settings stay), and return it for the page to keep."""
    if dialog is None:
        dialog = GenerateDialog(studio, parent)
        dialog.setWindowFlag(Qt.WindowType.Window, True)
    dialog.setWindowTitle(title)
    if not dialog.panel.is_busy():
        dialog.panel.set_subject(candidates, parents)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog


def recipe_parents(recipe: Mapping[str, Any]) -> dict[str, str]:
    """Name -> reference of a recipe's base and models, for the parents' columns (a
    trial's recipe names its models by path or Hub id)."""
    from pathlib import Path

    references = [recipe.get("base_model")] + [m.get("model") for m in recipe.get("models") or []]
    found: dict[str, str] = {}
    for reference in references:
        if reference:
            text = str(reference)
            found.setdefault(Path(text).name or text, text)
    return found
