"""Settings: device, compute dtype, threads, cache folder, and Hub sign-in. The token goes
straight to huggingface_hub's own store; this dialog never keeps or logs it."""

from __future__ import annotations

from mergestudio.engine.device import DEVICE_CHOICES
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.preferences import COMPUTE_DTYPES, Preferences
from mergestudio_qt.workers import HubLoginJob


def hub_status() -> str:
    """Whether huggingface_hub holds a token (never the token itself)."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return "huggingface_hub is not installed"
    return "Signed in (token kept by huggingface_hub)" if get_token() else "Not signed in"


def _cache_tip() -> str:
    """Where things go; says so when HF_HUB_CACHE or HF_HOME moves the Hub cache elsewhere."""
    import os

    tip = "Analyses, evaluations, calibration, default merge outputs and Hub downloads (in hub/) go here"
    for variable in ("HF_HUB_CACHE", "HF_HOME"):
        if os.environ.get(variable):
            return f"{tip}; Hub downloads go to ${variable} instead ({os.environ[variable]})"
    return tip


class SettingsDialog(QDialog):
    def __init__(self, preferences: Preferences, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        self.preferences = preferences
        self._login_job: HubLoginJob | None = None
        layout = QVBoxLayout(self)
        layout.setSpacing(12)
        layout.addWidget(self._build_compute())
        layout.addWidget(self._build_hub())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _build_compute(self) -> QGroupBox:
        box = QGroupBox("Computation", self)
        form = QFormLayout(box)
        form.setHorizontalSpacing(12)
        self.device_combo = QComboBox(box)
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_combo.setCurrentText(self.preferences.device)
        self.device_combo.setToolTip("Default device of new projects; auto picks CUDA, then MPS, then the CPU")
        self.dtype_combo = QComboBox(box)
        self.dtype_combo.addItems(list(COMPUTE_DTYPES))
        self.dtype_combo.setCurrentText(self.preferences.compute_dtype)
        self.dtype_combo.setToolTip("Precision of the merge arithmetic (float32 is exact enough for all methods)")
        self.threads_spin = QSpinBox(box)
        self.threads_spin.setRange(0, 256)
        self.threads_spin.setSpecialValueText("automatic")
        self.threads_spin.setValue(self.preferences.threads)
        self.threads_spin.setToolTip("CPU threads for tensor math; automatic uses one, which is fastest "
                                     "for memory-bound methods")
        cache_row = QHBoxLayout()
        self.cache_edit = QLineEdit(self.preferences.cache_dir, box)
        self.cache_edit.setPlaceholderText(str(Preferences().effective_cache_dir()))
        self.cache_edit.setToolTip(_cache_tip())
        browse = QPushButton("Browse…", box)
        browse.clicked.connect(self._browse_cache)
        cache_row.addWidget(self.cache_edit, 1)
        cache_row.addWidget(browse)
        form.addRow("Device", self.device_combo)
        form.addRow("Compute dtype", self.dtype_combo)
        form.addRow("Threads", self.threads_spin)
        form.addRow("Cache folder", cache_row)
        return box

    def _build_hub(self) -> QGroupBox:
        box = QGroupBox("Hugging Face Hub", self)
        form = QFormLayout(box)
        form.setHorizontalSpacing(12)
        self.hub_label = QLabel(hub_status(), box)
        self.token_edit = QLineEdit(box)
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("hf_…")
        self.token_edit.setToolTip("A Hugging Face access token, for gated or private models")
        row = QHBoxLayout()
        self.sign_in_button = QPushButton("Sign in", box)
        self.sign_in_button.clicked.connect(self._sign_in)
        self.sign_out_button = QPushButton("Sign out", box)
        self.sign_out_button.clicked.connect(self._sign_out)
        row.addWidget(self.token_edit, 1)
        row.addWidget(self.sign_in_button)
        row.addWidget(self.sign_out_button)
        note = QLabel("The token goes to huggingface_hub's own store; Merge Studio never saves or "
                      "logs it.", box)
        note.setObjectName("hint")
        note.setWordWrap(True)
        form.addRow("Status", self.hub_label)
        form.addRow("Token", row)
        form.addRow("", note)
        return box

    def _browse_cache(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Cache folder")
        if folder:
            self.cache_edit.setText(folder)

    def _sign_in(self) -> None:
        token = self.token_edit.text().strip()
        self.token_edit.clear()  # the widget keeps no copy
        if not token or self._login_job is not None:
            return
        job = HubLoginJob(token)
        job.succeeded.connect(self._signed_in)
        job.failed.connect(self.hub_label.setText)
        job.finished.connect(self._login_finished)
        self._login_job = job
        self.sign_in_button.setEnabled(False)
        self.hub_label.setText("Checking the token…")
        jobs.start(job)

    def _signed_in(self, name: str) -> None:
        self.hub_label.setText(f"Signed in as {name}")

    def _login_finished(self) -> None:
        self._login_job = None
        self.sign_in_button.setEnabled(True)

    def _sign_out(self) -> None:
        from huggingface_hub import logout

        try:
            logout()
        except Exception as error:  # logout raises when there is no token to remove
            self.hub_label.setText(f"Not signed in ({type(error).__name__})")
            return
        self.hub_label.setText(hub_status())

    def apply(self) -> Preferences:
        """The preferences with this dialog's values (call after ``exec`` accepted)."""
        self.preferences.device = self.device_combo.currentText()
        self.preferences.compute_dtype = self.dtype_combo.currentText()
        self.preferences.threads = self.threads_spin.value()
        self.preferences.cache_dir = self.cache_edit.text().strip()
        return self.preferences
