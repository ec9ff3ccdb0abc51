"""What "clipped" means for the layout test: a label, button or combo box whose text does
not fit the room it has (and no tooltip gives it in full), a table header or cell cut
the same way, wrapped text cut at the bottom, and a widget that sticks out of its parent. Scrolling is allowed: whatever sits
in a scroll area's viewport may be larger than it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import Qt as GuiQt  # mightBeRichText lives in QtGui's Qt namespace
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QComboBox,
    QGraphicsView,
    QLabel,
    QStyle,
    QStyleOptionComboBox,
    QTableView,
    QWidget,
)

SLACK_PX = 1  # rounding between font metrics and layouts


def describe(widget: QWidget) -> str:
    path = []
    node: QWidget | None = widget
    while node is not None and len(path) < 4:
        path.append(node.objectName() or type(node).__name__)
        node = node.parentWidget()
    return " < ".join(path)


def _text_width(label: QLabel, text: str) -> float:
    if label.textFormat() == Qt.TextFormat.RichText or (
        label.textFormat() == Qt.TextFormat.AutoText and GuiQt.mightBeRichText(text)
    ):
        document = QTextDocument()
        document.setDefaultFont(label.font())
        document.setDocumentMargin(0)
        document.setHtml(text)
        return document.idealWidth()
    metrics = label.fontMetrics()
    return max(metrics.horizontalAdvance(line) for line in text.split("\n"))


def _wrapped_height(label: QLabel, text: str, width: int) -> float:
    document = QTextDocument()
    document.setDefaultFont(label.font())
    document.setDocumentMargin(0)
    if GuiQt.mightBeRichText(text) and label.textFormat() != Qt.TextFormat.PlainText:
        document.setHtml(text)
    else:
        document.setPlainText(text)
    document.setTextWidth(width)
    return document.size().height()


def _label_problem(label: QLabel) -> str | None:
    text = label.text()
    if not text or (label.pixmap() is not None and not label.pixmap().isNull()):
        return None
    if label.toolTip():
        return None  # the full text is a hover away
    room = label.contentsRect().width() - 2 * label.margin() - max(label.indent(), 0)
    if label.wordWrap():
        if _text_width(label, text) > room + SLACK_PX and " " not in text.strip():
            return f"an unbreakable word wider than its room ({room}px): {text[:60]!r}"
        needed = _wrapped_height(label, text, room)
        height = label.contentsRect().height() - 2 * label.margin()
        if needed > height + label.fontMetrics().height() / 2:
            return f"wrapped text cut at the bottom ({needed:.0f} > {height}px): {text[:60]!r}"
        return None
    needed = _text_width(label, text)
    if needed > room + SLACK_PX:
        return f"text needs {needed:.0f}px, has {room}px: {text[:60]!r}"
    return None


def _button_problem(button: QAbstractButton) -> str | None:
    if not button.text() or button.toolTip():
        return None
    needed = button.sizeHint().width()
    if needed > button.width() + SLACK_PX:
        return f"button needs {needed}px, has {button.width()}px: {button.text()!r}"
    return None


def _combo_problem(combo: QComboBox) -> str | None:
    text = combo.currentText()
    if not text or (combo.toolTip() and combo.itemData(combo.currentIndex(), Qt.ItemDataRole.ToolTipRole)):
        return None
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(
        QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, combo
    )
    needed = combo.fontMetrics().horizontalAdvance(text)
    if needed > field.width() + SLACK_PX:
        return f"combo text needs {needed}px, has {field.width()}px: {text!r}"
    return None


def _fits_or_has_tooltip(text: str, width: float, room: int, tooltip: object) -> bool:
    return width <= room + SLACK_PX or (isinstance(tooltip, str) and text in tooltip)


def _table_problems(view: QTableView) -> list[str]:
    """Header names and cell texts of the visible part of a table that do not fit their
    column and that no tooltip repeats (a number cut to "0.12…" says nothing)."""
    model, header = view.model(), view.horizontalHeader()
    if model is None:
        return []
    margin = view.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view)
    problems = []
    top, bottom = view.rowAt(0), view.rowAt(view.viewport().height() - 1)
    rows = range(max(top, 0), (bottom if bottom >= 0 else model.rowCount() - 1) + 1)
    for column in range(model.columnCount()):
        if view.isColumnHidden(column) or header.sectionSize(column) == 0:
            continue
        room = header.sectionSize(column)
        title = model.headerData(column, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole)
        tip = model.headerData(column, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
        if header.isVisible() and title:
            needed = header.fontMetrics().horizontalAdvance(str(title)) + 2 * (margin + 1)
            if not _fits_or_has_tooltip(str(title), needed, room, tip):
                problems.append(f"column header needs {needed}px, has {room}px: {title!r}")
        for row in rows:
            index = model.index(row, column)
            text = model.data(index, Qt.ItemDataRole.DisplayRole)
            if text is None or str(text) == "":
                continue
            needed = view.fontMetrics().horizontalAdvance(str(text)) + 2 * (margin + 1)
            if not _fits_or_has_tooltip(str(text), needed, room, model.data(index, Qt.ItemDataRole.ToolTipRole)):
                problems.append(f"cell ({row}, {column}) needs {needed}px, has {room}px: {str(text)[:40]!r}")
                break  # one cut cell per column says enough
    return problems


def _inside_scrolling_or_graphics(widget: QWidget) -> bool:
    """Children of a scroll area's viewport may be larger than it (that is scrolling), and
    a graphics view's internals are drawn by the scene."""
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QGraphicsView):
            return True
        grand = parent.parentWidget()
        if isinstance(grand, QAbstractScrollArea) and grand.viewport() is parent:
            return widget.parentWidget() is parent  # only the scrolled child itself
        parent = grand
    return False


def _cut_by_parent(widget: QWidget) -> str | None:
    parent = widget.parentWidget()
    if parent is None or widget.isWindow() or _inside_scrolling_or_graphics(widget):
        return None
    if widget.objectName().startswith("qt_") or parent.objectName().startswith("qt_scrollarea"):
        return None
    inside = parent.rect().intersected(widget.geometry())
    if inside != widget.geometry() and widget.width() > 0 and widget.height() > 0:
        geometry = widget.geometry()
        return (
            f"cut by its parent {type(parent).__name__} ({parent.width()}x{parent.height()}): "
            f"at {geometry.x()},{geometry.y()} size {geometry.width()}x{geometry.height()}"
        )
    return None


def clipping_problems(root: QWidget) -> list[str]:
    """Every visible widget under ``root`` whose text or body is cut."""
    problems = []
    for widget in root.findChildren(QWidget):
        if not widget.isVisible() or widget.isWindow():  # popups and dialogs are not the page
            continue
        if _inside_scrolling_or_graphics(widget) and not isinstance(widget, QLabel | QAbstractButton):
            continue
        checks = [_cut_by_parent(widget)]
        if isinstance(widget, QLabel):
            checks.append(_label_problem(widget))
        elif isinstance(widget, QAbstractButton):
            checks.append(_button_problem(widget))
        elif isinstance(widget, QComboBox):
            checks.append(_combo_problem(widget))
        elif isinstance(widget, QTableView):
            checks += _table_problems(widget)
        problems += [f"{describe(widget)}: {problem}" for problem in checks if problem]
    return problems
