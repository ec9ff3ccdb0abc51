"""Places for pages that other parts of the studio bring (Inspect, Evolve): until they
land, a sentence on what will be there."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from mergestudio_qt.context import Studio
from mergestudio_qt.pages import PageSpec, register_page

_PLACEHOLDERS = (
    (
        "inspect",
        "Inspect",
        "See where the task vectors conflict before merging: norms, cosine similarity and "
        "sign conflicts per layer and module, and what trimming would keep.",
    ),
    (
        "evolve",
        "Evolve",
        "Search merge recipes automatically: an evolutionary search over the recipe's "
        "parameters, with live fitness and Pareto plots as candidates are evaluated.",
    ),
)


class PlaceholderPage(QWidget):
    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(32, 32, 32, 32)
        heading = QLabel(title, self)
        heading.setObjectName("pageTitle")
        body = QLabel(text + "\n\nThis page is coming in a later version.", self)
        body.setWordWrap(True)
        body.setMaximumWidth(640)
        body.setObjectName("hint")
        layout.addWidget(heading)
        layout.addWidget(body)
        layout.addStretch(1)
        layout.setAlignment(Qt.AlignmentFlag.AlignTop)


def _factory(title: str, text: str):  # noqa: ANN202 (a page factory)
    def make(_studio: Studio) -> QWidget:
        return PlaceholderPage(title, text)

    return make


for _key, _title, _text in _PLACEHOLDERS:
    register_page(PageSpec(_key, _title, _text, _factory(_title, _text)), replace_only=True)
