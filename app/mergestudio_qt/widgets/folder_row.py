"""A folder field: a line edit for the path and a Browse… button beside it."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QWidget


def folder_row(
    parent: QWidget, placeholder: str, tip: str, browse: Callable[[], None]
) -> tuple[QHBoxLayout, QLineEdit]:
    """The row (edit stretched, button at its natural width) and its edit; ``browse``
    runs when the button is clicked. The caller connects the edit's signals."""
    row = QHBoxLayout()
    edit = QLineEdit(parent)
    edit.setPlaceholderText(placeholder)
    edit.setToolTip(tip)
    button = QPushButton("Browse…", parent)
    button.clicked.connect(browse)
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row, edit
