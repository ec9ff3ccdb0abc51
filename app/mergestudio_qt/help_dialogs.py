"""Help menu dialogs: the method reference, generated from the engine's method
declarations (the same source as the sliders and ``docs/methods.md``), and the sheet of
keyboard shortcuts, read from the window's own actions so it cannot drift."""

from __future__ import annotations

import html

from mergestudio.methods import all_methods
from mergestudio.methods.registry import MethodSpec, Param
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractButton,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QListWidget,
    QMainWindow,
    QMenu,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)


def _range_text(param: Param) -> str:
    if param.kind == "bool":
        return "true / false"
    if param.kind == "choice":
        return " / ".join(param.choices)
    low = "−∞" if param.low is None else f"{param.low:g}"
    high = "∞" if param.high is None else f"{param.high:g}"
    return f"[{low}, {high}], step {param.ui_step:g}"


def method_html(method: MethodSpec) -> str:
    """One method's page: what it does, its inputs, its math and each parameter."""
    needs = "needs a base model" if method.needs_base else (
        "uses the base model when given" if method.optional_base else "no base model needed")
    most = f"{method.max_models}" if method.max_models is not None else "any number of"
    parts = [
        f"<h2>{html.escape(method.name)}</h2>",
        f"<p><i>{html.escape(method.family)}</i> · {needs} · merges {method.min_models} to {most} models"
        f"{' · seeded (stochastic)' if method.stochastic else ''}</p>",
        f"<p>{html.escape(method.summary)}</p>",
    ]
    if method.notes:
        parts.append(f"<p>{html.escape(method.notes)}</p>")
    if method.math:
        parts.append(f"<p><code>{html.escape(method.math)}</code></p>")
    if method.paper:
        parts.append(f"<p>Paper: {html.escape(method.paper)}</p>")
    if method.aliases:
        parts.append(f"<p>Also known as: {html.escape(', '.join(method.aliases))}</p>")
    if method.params:
        rows = "".join(
            f"<tr><td><b>{html.escape(p.name)}</b></td><td>{p.kind}{', per model' if p.per_model else ''}</td>"
            f"<td>{html.escape(_range_text(p))}</td>"
            f"<td>{'required' if p.required else html.escape(str(p.default))}</td>"
            f"<td>{html.escape(p.doc)}</td></tr>"
            for p in method.params
        )
        parts.append(
            "<table cellspacing='0' cellpadding='4' border='1' style='border-collapse: collapse'>"
            "<tr><th>parameter</th><th>kind</th><th>range</th><th>default</th><th>meaning</th></tr>"
            f"{rows}</table>"
        )
    else:
        parts.append("<p>No parameters.</p>")
    return "".join(parts)


class MethodReferenceDialog(QDialog):
    """Every registered method, searchable by name, family or words of its summary."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Method reference")
        self.methods = sorted(all_methods(), key=lambda m: (m.family, m.name))
        layout = QVBoxLayout(self)
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter: a name, a family or a word of the summary")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._filter)
        layout.addWidget(self.filter_edit)
        splitter = QSplitter(self)
        self.list = QListWidget(splitter)
        for method in self.methods:
            self.list.addItem(f"{method.name}  ·  {method.family}")
            self.list.item(self.list.count() - 1).setToolTip(method.summary)
        self.view = QTextBrowser(splitter)
        self.view.setOpenExternalLinks(True)
        splitter.addWidget(self.list)
        splitter.addWidget(self.view)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([300, 560])
        layout.addWidget(splitter, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.list.currentRowChanged.connect(self._show)
        self.list.setCurrentRow(0)
        self.resize(860, 560)

    def _show(self, row: int) -> None:
        if 0 <= row < len(self.methods):
            self.view.setHtml(method_html(self.methods[row]))

    def show_method(self, name: str) -> None:
        for row, method in enumerate(self.methods):
            if name in (method.name, *method.aliases):
                self.list.setCurrentRow(row)

    def _filter(self, text: str) -> None:
        words = text.lower().split()
        for row, method in enumerate(self.methods):
            haystack = f"{method.name} {' '.join(method.aliases)} {method.family} {method.summary}".lower()
            self.list.item(row).setHidden(not all(word in haystack for word in words))


def window_shortcuts(window: QMainWindow) -> list[tuple[str, str, str]]:
    """(where, what, keys) for every menu action with a shortcut and every page shortcut."""
    rows: list[tuple[str, str, str]] = []
    for menu_action in window.menuBar().actions():
        menu = menu_action.menu()
        if not isinstance(menu, QMenu):
            continue
        where = menu_action.text().replace("&", "")
        for action in menu.actions():
            rows += _action_rows(where, action)
    for shortcut in window.findChildren(QShortcut):
        page = shortcut.parent()
        keys = shortcut.key().toString(QKeySequence.SequenceFormat.NativeText)
        if not keys or not isinstance(page, QWidget):
            continue
        where = f"{type(page).__name__.removesuffix('Page')} page"
        rows.append((where, shortcut.whatsThis() or _button_for(page, keys), keys))
    return rows


def _button_for(page: QWidget, keys: str) -> str:
    """A page shortcut's meaning: the text of the buttons whose tooltips name its keys
    (the buttons say "(F6)"), so the sheet reads the page's own words."""
    texts = [b.text().replace("&", "") for b in page.findChildren(QAbstractButton) if f"({keys})" in b.toolTip()]
    return " / ".join(dict.fromkeys(texts)) or "page shortcut"


def _action_rows(where: str, action: QAction) -> list[tuple[str, str, str]]:
    if action.menu() is not None:
        return []
    keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts())
    if not keys:
        return []
    text = action.text().replace("&", "").rstrip("…")
    return [(where, text, keys)]


class ShortcutsDialog(QDialog):
    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        layout = QVBoxLayout(self)
        rows = window_shortcuts(window)
        self.table = QTableWidget(len(rows), 3, self)
        self.table.setHorizontalHeaderLabels(["Where", "Action", "Keys"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for row, values in enumerate(rows):
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(True)
        layout.addWidget(self.table, 1)
        row = QHBoxLayout()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        row.addWidget(buttons)
        layout.addLayout(row)
        self.resize(620, 560)
