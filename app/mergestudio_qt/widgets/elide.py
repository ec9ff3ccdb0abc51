"""Text that never overflows its room: a label and a combo box that elide what does not
fit with "…" and give the whole text as a tooltip. For one-line texts whose length the
layout cannot know ahead (paths, statuses, objective names)."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPaintEvent, QResizeEvent
from PySide6.QtWidgets import QComboBox, QLabel, QStyle, QStyleOptionComboBox, QStylePainter, QWidget


class ElidedLabel(QLabel):
    """A one-line plain-text label that elides to its width; the full text is its tooltip
    while elided (a tooltip set with ``set_detail`` is kept instead)."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self._detail = ""
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setMinimumWidth(40)
        self.set_full_text(text)

    def full_text(self) -> str:
        return self._full

    def set_full_text(self, text: str, detail: str = "") -> None:
        self._full, self._detail = text, detail
        self._elide()

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        return QSize(self.minimumWidth(), hint.height())

    def sizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance(self._full) + 4, super().sizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        room = self.contentsRect().width()
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(room, 0))
        super().setText(shown)
        self.setToolTip(self._detail or (self._full if shown != self._full else ""))


class ElidingComboBox(QComboBox):
    """A combo box that may be narrower than its longest item: the current text is drawn
    elided, and the tooltip says it in full."""

    def __init__(self, parent: QWidget | None = None, shortest: int = 4) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(shortest)
        self.currentTextChanged.connect(self.setToolTip)

    def sizeHint(self) -> QSize:
        # As wide as the longest item when there is room; minimumSizeHint lets it shrink.
        widest = max((self.fontMetrics().horizontalAdvance(self.itemText(i)) for i in range(self.count())), default=0)
        hint = super().sizeHint()
        return QSize(max(hint.width(), widest + hint.width() - self.fontMetrics().horizontalAdvance("x" * 4)), hint.height())

    def paintEvent(self, _event: QPaintEvent) -> None:
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        field = self.style().subControlRect(
            QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, self
        )
        option.currentText = self.fontMetrics().elidedText(
            option.currentText, Qt.TextElideMode.ElideRight, field.width()
        )
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)
