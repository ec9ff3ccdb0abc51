"""Sharing a merge from the window: Export GGUF… and Upload to Hub… (Merge menu).

Each dialog names a model folder (the last merge by default), runs the engine's export
(``mergestudio.export.gguf`` / ``mergestudio.export.hub``) as a ``Job`` with a progress
bar, and Cancel stops it (the GGUF file or the Hub commit then never appears). Closing
the dialog while it runs cancels first and closes when the job has ended."""

from __future__ import annotations

from pathlib import Path

from mergestudio.events import Progress
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.format import format_bytes
from mergestudio_qt.jobs import Job


class ExportGgufJob(Job):
    def __init__(self, model: str, out: str, qtype: str, overwrite: bool) -> None:
        super().__init__()
        self.model, self.out, self.qtype, self.overwrite = model, out, qtype, overwrite

    def work(self) -> str:
        from mergestudio.export.gguf import export_gguf

        result = export_gguf(self.model, self.out, qtype=self.qtype, overwrite=self.overwrite,  # type: ignore[arg-type]
                             events=self.events, cancel=self.cancel_token)
        return f"Wrote {result.output} ({result.tensors} tensors, {format_bytes(result.bytes_written)})."


class UploadJob(Job):
    def __init__(self, folder: str, repo_id: str, private: bool) -> None:
        super().__init__()
        self.folder, self.repo_id, self.private = folder, repo_id, private

    def work(self) -> str:
        from mergestudio.export.hub import upload_model

        result = upload_model(self.folder, self.repo_id, private=self.private,
                              events=self.events, cancel=self.cancel_token)
        return f"Uploaded {result.files} files to {result.repo_url}."


class _ShareDialog(QDialog):
    """A model folder row, the dialog's own fields, a progress bar and a status line;
    ``_job()`` says what Start runs."""

    title = ""
    start_text = "Start"

    def __init__(self, model_folder: Path | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.title)
        self.job: Job | None = None
        self._close_when_done = False
        layout = QVBoxLayout(self)
        self.form = QFormLayout()
        self.model_edit = QLineEdit(str(model_folder) if model_folder else "", self)
        self.model_edit.setPlaceholderText("a merged model folder")
        self.form.addRow("Model folder", self._with_browse(self.model_edit, self._browse_model))
        layout.addLayout(self.form)
        self._build_fields()
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.status.setObjectName("hint")
        layout.addWidget(self.status)
        self.buttons = QDialogButtonBox(self)
        self.start_button = self.buttons.addButton(self.start_text, QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)
        self.resize(560, self.sizeHint().height())

    def _with_browse(self, edit: QLineEdit, slot: object) -> QWidget:
        row = QWidget(self)
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit, 1)
        button = QPushButton("Browse…", row)
        button.clicked.connect(slot)
        box.addWidget(button)
        return row

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", self.model_edit.text())
        if folder:
            self.model_edit.setText(folder)

    def _build_fields(self) -> None:
        raise NotImplementedError

    def _job(self) -> Job | None:
        raise NotImplementedError

    # ---- running ----------------------------------------------------------------------

    def start(self) -> None:
        if self.job is not None:
            return
        job = self._job()
        if job is None:
            return
        job.progress.connect(self._progress)
        job.succeeded.connect(self._succeeded)
        job.failed.connect(self._failed)
        job.cancelled.connect(self._cancelled)
        job.finished.connect(self._finished)
        self.job = job
        self.start_button.setEnabled(False)
        self.progress.setValue(0)
        self.status.setText("Starting…")
        jobs.start(job)

    def _progress(self, progress: Progress) -> None:
        self.progress.setValue(int(1000 * progress.fraction))
        what = {"download": "Downloading", "upload": "Uploading"}.get(progress.job, "Writing")
        amount = (f"{format_bytes(progress.bytes_done)} of {format_bytes(progress.bytes_total)}"
                  if progress.bytes_total else f"{progress.done} of {progress.total}")
        self.status.setText(f"{what}: {amount}")

    def _succeeded(self, message: str) -> None:
        self.progress.setValue(1000)
        self.status.setText(message)
        self.cancel_button.setText("Close")

    def _failed(self, message: str) -> None:
        self.status.setText(message)

    def _cancelled(self) -> None:
        self.status.setText("Cancelled: nothing was written or published.")

    def _finished(self) -> None:
        self.job = None
        self.start_button.setEnabled(True)
        if self._close_when_done:
            super().reject()

    def reject(self) -> None:
        """Cancel a running job first; the dialog closes when it has ended."""
        if self.job is not None:
            self._close_when_done = True
            self.status.setText("Cancelling…")
            self.job.cancel()
            return
        super().reject()


class ExportGgufDialog(_ShareDialog):
    title = "Export GGUF"
    start_text = "Export"

    def _build_fields(self) -> None:
        self.out_edit = QLineEdit(self)
        self.out_edit.setPlaceholderText("model.gguf")
        self.form.addRow("GGUF file", self._with_browse(self.out_edit, self._browse_out))
        self.type_combo = QComboBox(self)
        self.type_combo.addItem("f16 (matrices in float16)", "f16")
        self.type_combo.addItem("q8_0 (8-bit, about half the size)", "q8_0")
        self.type_combo.currentIndexChanged.connect(self._suggest_out)
        self.form.addRow("Type", self.type_combo)
        self.overwrite_check = QCheckBox("Replace an existing file", self)
        self.form.addRow("", self.overwrite_check)
        self.model_edit.textChanged.connect(self._suggest_out)
        self._suggest_out()

    def _suggest_out(self) -> None:
        """``<folder>.<type>.gguf`` beside the model folder, until the user picks a file."""
        folder = self.model_edit.text().strip().rstrip("/")
        current = self.out_edit.text()
        if folder and (not current or current.endswith((".f16.gguf", ".q8_0.gguf"))):
            self.out_edit.setText(f"{folder}.{self.type_combo.currentData()}.gguf")

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "GGUF file", self.out_edit.text(), "GGUF (*.gguf)")
        if path:
            self.out_edit.setText(path)

    def _job(self) -> Job | None:
        model, out = self.model_edit.text().strip(), self.out_edit.text().strip()
        if not model or not out:
            self.status.setText("Choose a model folder and a GGUF file.")
            return None
        return ExportGgufJob(model, out, str(self.type_combo.currentData()), self.overwrite_check.isChecked())


class UploadDialog(_ShareDialog):
    title = "Upload to Hub"
    start_text = "Upload"

    def _build_fields(self) -> None:
        from huggingface_hub import get_token

        self.repo_edit = QLineEdit(self)
        self.repo_edit.setPlaceholderText("your-name/model-name")
        self.form.addRow("Hub repo", self.repo_edit)
        self.private_check = QCheckBox("Private (for a new repo)", self)
        self.form.addRow("", self.private_check)
        signed_in = bool(get_token())
        note = QLabel(
            "Signed in (the token stays in huggingface_hub's store)." if signed_in
            else "Not signed in: sign in under File → Settings first.", self)
        note.setObjectName("hint" if signed_in else "warningNote")
        note.setWordWrap(True)
        self.form.addRow("", note)
        self.form.addRow("", QLabel(
            "The card's base_model names Hub inputs by id; local paths are replaced by folder names.", self))

    def _job(self) -> Job | None:
        folder, repo = self.model_edit.text().strip(), self.repo_edit.text().strip()
        if not folder or not repo:
            self.status.setText("Choose a model folder and a Hub repo (org/name).")
            return None
        return UploadJob(folder, repo, self.private_check.isChecked())
