"""The recipe as YAML, editable. Edits are checked after a short pause: a valid recipe is
sent on (``recipe_edited``); an invalid one is marked with the engine's message naming
the key, and the text stays as typed. Nothing is silently dropped.

The verdict under the text is the project model's (``show_verdict``): the engine's
validation and plan of the recipe as it stands, the checks a merge runs, so the pane
never calls a recipe valid that the merge would refuse.
"""

from __future__ import annotations

from typing import Any

from mergestudio.errors import MergeStudioError
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QFont, QFontDatabase, QTextCursor
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QVBoxLayout, QWidget

CHECK_DELAY_MS = 350


def parse_recipe(text: str) -> dict[str, Any]:
    """The recipe dict of ``text``, checked against the registry. Raises MergeStudioError."""
    from mergestudio.recipe import Recipe, validate_recipe

    recipe = Recipe.from_yaml(text)
    validate_recipe(recipe)
    return recipe.to_dict()


def to_yaml(recipe: dict[str, Any]) -> str:
    """Dump in mergekit's style (flow-style gradients), also for recipes not yet valid."""
    import yaml
    from mergestudio.recipe.model import _RecipeDumper

    return yaml.dump(recipe, Dumper=_RecipeDumper, sort_keys=False, allow_unicode=True)


class YamlPane(QWidget):
    recipe_edited = Signal(dict)
    validity_changed = Signal(bool, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        title = QLabel("Recipe YAML (mergekit)", self)
        title.setObjectName("sectionTitle")
        self.editor = QPlainTextEdit(self)
        self.editor.setObjectName("yamlEditor")
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.editor.setFont(font)
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setTabStopDistance(2 * self.editor.fontMetrics().horizontalAdvance(" "))
        self.editor.setToolTip("Edit the recipe directly; the widgets follow when it is valid.")
        self.status = QLabel(self)
        self.status.setObjectName("yamlStatus")
        self.status.setWordWrap(True)
        layout.addWidget(title)
        layout.addWidget(self.editor, 1)
        layout.addWidget(self.status)
        self.valid = True  # the text parsed and was applied
        self.error = ""  # why the text was not applied
        self.verdict_ok: bool | None = None  # the engine's verdict; None while checking
        self.verdict_message = ""
        self._setting_text = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(CHECK_DELAY_MS)
        self._timer.timeout.connect(self.check_now)
        self.editor.textChanged.connect(self._text_changed)
        self._mark(True, "")

    def text(self) -> str:
        return self.editor.toPlainText()

    def show_recipe(self, recipe: dict[str, Any]) -> None:
        """Replace the text with ``recipe`` (a change from elsewhere), keeping the cursor's
        line; skipped when the text already means the same recipe."""
        if self.valid and self._means(recipe):
            return
        cursor_line = self.editor.textCursor().blockNumber()
        self._setting_text = True
        self.editor.setPlainText(to_yaml(recipe))
        self._setting_text = False
        block = self.editor.document().findBlockByNumber(min(cursor_line, self.editor.blockCount() - 1))
        self.editor.setTextCursor(QTextCursor(block))
        self._timer.stop()
        self._mark(True, "")

    def show_verdict(self, ok: bool | None, message: str = "", warnings: tuple[str, ...] = ()) -> None:
        """The engine's verdict on the applied recipe (shown while the text is applied);
        ``ok`` None: being checked."""
        self.verdict_ok = ok
        self.verdict_message = message if not ok else "; ".join(warnings)
        self._render()

    def refuse(self, message: str) -> None:
        """The text parsed but the project refused it (``message`` says why)."""
        self._mark(False, message)

    def set_text(self, text: str) -> None:
        """Type ``text`` as a user would (checked after the pause)."""
        self.editor.setPlainText(text)

    def check_now(self) -> None:
        self._timer.stop()
        try:
            recipe = parse_recipe(self.text())
        except MergeStudioError as error:
            self._mark(False, str(error))
            return
        self._mark(True, "")
        self.recipe_edited.emit(recipe)

    def _means(self, recipe: dict[str, Any]) -> bool:
        import yaml

        try:
            return bool(yaml.safe_load(self.text()) == recipe)
        except yaml.YAMLError:
            return False

    def _text_changed(self) -> None:
        if not self._setting_text:
            self._timer.start()

    def _mark(self, valid: bool, message: str) -> None:
        self.valid, self.error = valid, message
        self.editor.setProperty("invalid", not valid)
        self.editor.style().unpolish(self.editor)
        self.editor.style().polish(self.editor)
        self._render()
        self.validity_changed.emit(valid, message)

    def _render(self) -> None:
        valid, message = self.valid, self.error
        if not valid:
            text = f"✗ {message}  (not applied)"
        elif self.verdict_ok is None:
            text = "… checking the recipe against the models"
        elif not self.verdict_ok:
            text = f"✗ a merge would fail: {self.verdict_message}"
        elif self.verdict_message:
            text = f"✓ valid recipe; note: {self.verdict_message}"
        else:
            text = "✓ valid recipe (checked against the models, as a merge would)"
        shown_invalid = not valid or self.verdict_ok is False
        self.status.setProperty("invalid", shown_invalid)
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)
        self.status.setText(text)
