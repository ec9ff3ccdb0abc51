"""The About dialog (version, licences, library versions) and the application icon.

Both work from a checkout and from the frozen (PyInstaller) bundle, where data files live
under ``sys._MEIPASS`` and the licence texts of the bundled libraries sit in its
``licenses/`` folder.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from mergestudio import __version__
from mergestudio.smoke import library_versions
from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QIcon
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


@dataclass(frozen=True)
class Library:
    label: str
    distribution: str
    module: str
    licence: str


# What the studio ships with (the PyInstaller spec bundles these; its licence collection
# reads the same distributions). Qt is used under the LGPL as shared libraries that a
# user can replace.
LIBRARIES = (
    Library("PySide6 (Qt for Python)", "PySide6-Essentials", "PySide6", "LGPL-3.0-only"),
    Library("shiboken6", "shiboken6", "shiboken6", "LGPL-3.0-only"),
    Library("pyqtgraph", "pyqtgraph", "pyqtgraph", "MIT"),
    Library("PyTorch", "torch", "torch", "BSD-3-Clause"),
    Library("transformers", "transformers", "transformers", "Apache-2.0"),
    Library("tokenizers", "tokenizers", "tokenizers", "Apache-2.0"),
    Library("safetensors", "safetensors", "safetensors", "Apache-2.0"),
    Library("huggingface_hub", "huggingface_hub", "huggingface_hub", "Apache-2.0"),
    Library("NumPy", "numpy", "numpy", "BSD-3-Clause"),
    Library("pydantic", "pydantic", "pydantic", "MIT"),
    Library("PyYAML", "PyYAML", "yaml", "MIT"),
    Library("psutil", "psutil", "psutil", "BSD-3-Clause"),
)


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def resources_dir() -> Path:
    """``resources/``: inside the bundle when frozen, else at the repository root."""
    if is_frozen():
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def licences_dir() -> Path | None:
    """The folder of bundled licence texts (frozen builds only; a pip install keeps
    each library's licence in its own ``*.dist-info``)."""
    if not is_frozen():
        return None
    folder = Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "licenses"
    return folder if folder.is_dir() else None


def app_icon() -> QIcon:
    """The Merge Studio icon at every rendered size (Qt picks the best per use)."""
    icon = QIcon()
    folder = resources_dir() / "icons"
    for size in ICON_SIZES:
        png = folder / f"mergestudio-{size}.png"
        if png.is_file():
            icon.addFile(str(png), QSize(size, size))
    return icon


def qt_version() -> str:
    from PySide6.QtCore import qVersion

    return str(qVersion())


class AboutDialog(QDialog):
    """Version, licences and library versions, with a link to the licence texts."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Merge Studio")
        self.setWindowIcon(app_icon())
        layout = QVBoxLayout(self)
        layout.addLayout(self._header())
        layout.addWidget(self._library_table())
        layout.addWidget(self._licence_note())
        layout.addWidget(self._buttons())
        self.resize(560, 520)

    def _header(self) -> QHBoxLayout:
        row = QHBoxLayout()
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(72, 72))
        row.addWidget(logo, 0, Qt.AlignmentFlag.AlignTop)
        build = "installed build" if is_frozen() else "from source"
        text = QLabel(
            f"<h2>Merge Studio {__version__}</h2>"
            "<p>Merge fine-tuned models, see where task vectors conflict, search merge "
            "recipes, and export models you can trust.</p>"
            f"<p>Licensed under the Apache License 2.0. {build.capitalize()}, "
            f"Python {platform.python_version()}, Qt {qt_version()}, "
            f"{platform.system()} {platform.machine()}.</p>"
        )
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(text, 1)
        return row

    def _library_table(self) -> QTableWidget:
        versions = library_versions(tuple((lib.label, lib.distribution, lib.module) for lib in LIBRARIES))
        table = QTableWidget(len(LIBRARIES) + 1, 3, self)
        table.setHorizontalHeaderLabels(["Library", "Version", "Licence"])
        rows = [("Qt", qt_version(), "LGPL-3.0-only")]
        rows += [(lib.label, versions[lib.label], lib.licence) for lib in LIBRARIES]
        for r, values in enumerate(rows):
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                table.setItem(r, c, item)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        return table

    def _licence_note(self) -> QLabel:
        folder = licences_dir()
        where = (
            f"The licence texts of every bundled library are in <code>{folder}</code>."
            if folder
            else "Each library's licence text is in its installed package metadata."
        )
        note = QLabel(
            "<p>Qt and PySide6 are used under the GNU LGPL v3 as separate shared libraries: "
            "you may replace them with your own builds of the same version. "
            f"{where}</p>"
        )
        note.setWordWrap(True)
        return note

    def _buttons(self) -> QDialogButtonBox:
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        about_qt = QPushButton("About Qt", self)
        about_qt.clicked.connect(lambda: QMessageBox.aboutQt(self))
        buttons.addButton(about_qt, QDialogButtonBox.ButtonRole.ActionRole)
        folder = licences_dir()
        if folder is not None:
            show = QPushButton("Open licences folder", self)
            show.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))))
            buttons.addButton(show, QDialogButtonBox.ButtonRole.ActionRole)
        return buttons


def show_about(parent: QWidget | None = None) -> None:
    """Help → About: the dialog, modal to ``parent``."""
    AboutDialog(parent).exec()
