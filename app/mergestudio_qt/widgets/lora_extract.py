"""The Inspect page's "Extract LoRA" row under the spectra: pick a fine-tune, a rank or an
energy share, see the size the adapter will have, and extract it in a worker thread
(progress and Cancel like a merge)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergestudio.events import Progress
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.context import Studio
from mergestudio_qt.format import format_bytes


class ExtractLoraJob(jobs.Job):
    """Runs ``mergestudio.lora.extract.extract_lora``; succeeds with its ``ExtractResult``."""

    def __init__(self, base: str, model: str, out: str, rank: int | None, energy: float | None) -> None:
        super().__init__()
        self.base, self.model, self.out = base, model, out
        self.rank, self.energy = rank, energy

    def work(self) -> Any:
        from mergestudio.lora.extract import ExtractSettings, extract_lora

        settings = ExtractSettings(rank=self.rank, energy=self.energy)
        return extract_lora(self.base, self.model, self.out, settings, events=self.events, cancel=self.cancel_token)


class ExtractLoraBar(QWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.job: ExtractLoraJob | None = None
        self.spectra: list[tuple[list[float], int]] = []
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.model_choice = QComboBox(self)
        self.model_choice.setToolTip("The fine-tune to turn into a LoRA adapter of the base")
        self.mode = QComboBox(self)
        self.mode.addItem("rank", "rank")
        self.mode.addItem("energy", "energy")
        self.rank = QSpinBox(self)
        self.rank.setRange(1, 8192)
        self.rank.setValue(16)
        self.energy = QDoubleSpinBox(self)
        self.energy.setRange(0.05, 1.0)
        self.energy.setSingleStep(0.05)
        self.energy.setValue(0.9)
        self.energy.setToolTip("Per matrix, the smallest rank keeping this share of ‖Δ‖²")
        self.size = QLabel("", self)
        self.extract_button = QPushButton("Extract LoRA…", self)
        self.extract_button.setToolTip("Write a PEFT adapter folder: base + adapter ≈ the fine-tune")
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        for widget in (self.model_choice, self.mode, self.rank, self.energy, self.size):
            layout.addWidget(widget)
        layout.addStretch(1)
        layout.addWidget(self.extract_button)
        layout.addWidget(self.cancel_button)
        self.mode.currentIndexChanged.connect(self._update)
        self.rank.valueChanged.connect(self._update)
        self.energy.valueChanged.connect(self._update)
        self.extract_button.clicked.connect(self._choose_folder)
        self.cancel_button.clicked.connect(self.cancel)
        self._update()

    def set_spectra(self, results: list[Any]) -> None:
        """The analysis' spectra (every model's), and the fine-tunes to choose from."""
        self.spectra = [
            (list(record["singular_values"]), int(record["full_rank"])) for r in results for record in r.models
        ]
        state = self.studio.state
        self.model_choice.clear()
        for reference in state.merged_references():
            self.model_choice.addItem(Path(reference).name or reference, reference)
        self._update()

    def estimate(self) -> int | None:
        """Bytes of the adapter at the chosen rank or energy (embeddings saved whole)."""
        from mergestudio.lora.extract import estimate_adapter_bytes

        state = self.studio.state
        base = state.model(state.base) if state.base else None
        if base is None or base.source is None:
            return None
        by_rank = self.mode.currentData() == "rank"
        return estimate_adapter_bytes(
            base.source.tensors,
            rank=self.rank.value() if by_rank else None,
            energy=None if by_rank else self.energy.value(),
            spectra=self.spectra,
        )

    def _update(self) -> None:
        by_rank = self.mode.currentData() == "rank"
        self.rank.setVisible(by_rank)
        self.energy.setVisible(not by_rank)
        size = self.estimate()
        prefix = "" if by_rank else "≈ "
        self.size.setText("" if size is None else f"{prefix}{format_bytes(size)}")
        self.extract_button.setEnabled(self.job is None and size is not None and self.model_choice.count() > 0)

    def _choose_folder(self) -> None:
        model = self.model_choice.currentData()
        default = f"{Path(str(model)).name}-lora"
        path, _ = QFileDialog.getSaveFileName(self, "Write the LoRA adapter folder", default)
        if path:
            self.extract_to(path)

    def extract_to(self, out: str) -> None:
        state = self.studio.state
        if self.job is not None or not state.base:
            return
        by_rank = self.mode.currentData() == "rank"
        job = ExtractLoraJob(
            state.base,
            str(self.model_choice.currentData()),
            out,
            self.rank.value() if by_rank else None,
            None if by_rank else self.energy.value(),
        )
        job.progress.connect(self._progress)
        job.succeeded.connect(self._done)
        job.failed.connect(self._failed)
        job.cancelled.connect(self._cancelled)
        job.finished.connect(self._finished)
        self.job = job
        self.extract_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        jobs.start(job)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _progress(self, progress: Progress) -> None:
        self.size.setText(f"extracting {progress.done}/{progress.total}")

    def _done(self, result: Any) -> None:
        lora = result.lora_modules
        low = min((m.energy for m in lora), default=1.0)
        self.studio.show_message(
            f"wrote {result.output}: {len(lora)} LoRA modules, {format_bytes(result.adapter_bytes)}, "
            f"energy kept ≥ {low:.3f}"
        )

    def _failed(self, message: str) -> None:
        self.studio.show_message(f"LoRA extraction failed: {message}")

    def _cancelled(self) -> None:
        self.studio.show_message("LoRA extraction cancelled: nothing was written")

    def _finished(self) -> None:
        self.job = None
        self.cancel_button.setEnabled(False)
        self._update()
