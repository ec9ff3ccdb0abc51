"""Recipe: choose a method and set its parameters. Every widget here is generated from the
method's declaration in the engine's registry, so a new method needs no UI code. The YAML
pane and the widgets follow each other both ways; the layer-curve editor shapes any
number parameter along the layers, per module group."""

from __future__ import annotations

from typing import Any

from mergestudio.methods import all_methods
from mergestudio.methods.plugins import all_post_processes, get_post_process
from mergestudio.methods.registry import MethodSpec, Param
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from mergestudio_qt import recipe_edit
from mergestudio_qt.context import Studio
from mergestudio_qt.pages import PageSpec, register_page
from mergestudio_qt.state import RecipeVerdict, display_name
from mergestudio_qt.widgets.curve_editor import CurveTarget, LayerCurveEditor
from mergestudio_qt.widgets.params import ParamEditor, param_tooltip
from mergestudio_qt.widgets.stage_list import StageList
from mergestudio_qt.widgets.yaml_pane import YamlPane

LABEL_WIDTH = 112  # px; long model names are elided in the middle, full name in the tooltip
LEFT_MIN_WIDTH = 400  # px; every row of the form fits in this, so it never scrolls sideways
EditorKey = tuple[str, int | None]  # (parameter name, model index or None for global)


def paper_url(paper: str) -> str:
    if paper.startswith("http"):
        return paper
    if paper.lower().startswith("arxiv:"):
        return f"https://arxiv.org/abs/{paper.split(':', 1)[1]}"
    return ""


class RecipePage(QWidget):
    def __init__(self, studio: Studio) -> None:
        super().__init__()
        self.studio = studio
        self.state = studio.state
        self.editors: dict[EditorKey, ParamEditor] = {}
        self.post_editors: dict[str, ParamEditor] = {}
        self.post_combo: QComboBox | None = None
        self._structure: tuple[Any, ...] | None = None
        self._edit_serial = 0
        self._curve_key: EditorKey | None = None
        self._build()
        self.state.recipe_changed.connect(self._recipe_changed)
        self.state.models_changed.connect(lambda: self._recipe_changed("models"))
        self.state.verdict_changed.connect(self._show_verdict)
        self._recipe_changed("load")
        self._show_verdict(self.state.verdict())

    # ---- building ----------------------------------------------------------------------

    def _build(self) -> None:
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.setObjectName("recipeSplitter")
        splitter.addWidget(self._build_left())
        right = QSplitter(Qt.Orientation.Vertical, splitter)
        right.setObjectName("recipeRightSplitter")
        self.yaml = YamlPane(right)
        self.yaml.recipe_edited.connect(self._yaml_edited)
        self.curve_editor = LayerCurveEditor(right)
        self.curve_editor.curve_edited.connect(self._curve_edited)
        for pane in (self.yaml, self.curve_editor):
            pane.setContentsMargins(12, 12, 16, 12)
            right.addWidget(pane)
        right.setStretchFactor(0, 1)
        right.setStretchFactor(1, 1)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 5)
        splitter.setStretchFactor(1, 4)
        layout.addWidget(splitter)

    def _build_left(self) -> QWidget:
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        body = QWidget(scroll)
        self.left_layout = QVBoxLayout(body)
        self.left_layout.setContentsMargins(16, 16, 12, 16)
        self.left_layout.setSpacing(10)
        title = QLabel("Recipe", body)
        title.setObjectName("pageTitle")
        self.left_layout.addWidget(title)
        self.stage_list = StageList(self.state, body)
        self.left_layout.addWidget(self.stage_list)
        method_row = QHBoxLayout()
        method_row.setSpacing(8)
        method_label = QLabel("Method", body)
        self.method_combo = QComboBox(body)
        self.method_combo.setMinimumWidth(160)
        self.method_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method_combo.setMinimumContentsLength(12)
        for spec in sorted(all_methods(), key=lambda s: s.family):
            self.method_combo.addItem(f"{spec.name}  ·  {spec.family}", spec.name)
            self.method_combo.setItemData(self.method_combo.count() - 1, spec.summary,
                                          Qt.ItemDataRole.ToolTipRole)
        self.method_combo.currentIndexChanged.connect(self._method_chosen)
        method_row.addWidget(method_label)
        method_row.addWidget(self.method_combo, 1)
        self.left_layout.addLayout(method_row)
        self.summary_label = QLabel(body)
        self.summary_label.setWordWrap(True)
        self.summary_label.setObjectName("methodSummary")
        self.summary_label.setOpenExternalLinks(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.left_layout.addWidget(self.summary_label)
        self.note_label = QLabel(body)
        self.note_label.setWordWrap(True)
        self.note_label.setObjectName("warningNote")
        self.left_layout.addWidget(self.note_label)
        self.params_box = QWidget(body)
        self.params_layout = QVBoxLayout(self.params_box)
        self.params_layout.setContentsMargins(0, 0, 0, 0)
        self.params_layout.setSpacing(12)
        self.left_layout.addWidget(self.params_box)
        self.left_layout.addStretch(1)
        scroll.setWidget(body)
        # Scroll down, never sideways: rows wrap or elide to the pane's width.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(LEFT_MIN_WIDTH)
        self.left_scroll = scroll
        return scroll

    # ---- structure: which widgets exist ------------------------------------------------------

    def _structure_of(self, recipe: dict[str, Any]) -> tuple[Any, ...]:
        models = tuple(m.get("model") for m in recipe.get("models") or [])
        post = recipe_edit.post_process_name(recipe)
        return (recipe.get("merge_method"), models, bool(recipe.get("slices")), post, self.state.current_stage)

    def _rebuild(self, method: MethodSpec) -> None:
        _clear_layout(self.params_layout)
        self.editors = {}
        self.post_editors = {}
        recipe = self.state.recipe
        if method.global_params:
            self.params_layout.addWidget(self._section("Parameters", "One value for the whole merge."))
            rows = [(p.name, param_tooltip(p), self._editor(p, None)) for p in method.global_params]
            self.params_layout.addLayout(self._grid(rows))
        self._build_post_process(recipe)
        models = recipe.get("models") or []
        if recipe.get("slices"):
            self.params_layout.addWidget(
                self._section("Per model", "This recipe uses slices: edit per-model values in the YAML pane.")
            )
            return
        for param in method.model_params:
            self.params_layout.addWidget(self._section(f"{param.name} per model", param.doc))
            rows = [
                (self._model_name(m.get("model", "")), f"{m.get('model')}\n\n{param.doc}", self._editor(param, i))
                for i, m in enumerate(models)
            ]
            if rows:
                self.params_layout.addLayout(self._grid(rows))
            else:
                self.params_layout.addWidget(QLabel("Add models on the Models page.", self.params_box))

    def _build_post_process(self, recipe: dict[str, Any]) -> None:
        """A plug-in run on the method's output: a choice among the declared plug-ins and,
        for the chosen one, an editor per declared parameter."""
        plugins = all_post_processes()
        if not plugins:
            return
        self.params_layout.addWidget(
            self._section("Post-processing", "Optional: a step applied to every tensor the method merges.")
        )
        combo = QComboBox(self.params_box)
        combo.setObjectName("postProcessCombo")
        self.post_combo = combo
        combo.addItem("none", None)
        for plugin in plugins:
            combo.addItem(plugin.name, plugin.name)
            combo.setItemData(combo.count() - 1, f"{plugin.summary}\n{plugin.paper or ''}", Qt.ItemDataRole.ToolTipRole)
        chosen = recipe_edit.post_process_name(recipe)
        combo.setCurrentIndex(max(0, combo.findData(chosen)))
        combo.currentIndexChanged.connect(lambda i: self._post_process_chosen(combo.itemData(i)))
        rows: list[tuple[str, str, QWidget]] = [("plug-in", "Post-processing plug-in", combo)]
        if chosen is not None:
            plugin = get_post_process(chosen)
            for param in plugin.params:
                editor = ParamEditor(param, self.params_box)
                if editor.curve_button is not None:
                    editor.curve_button.hide()  # one value for the whole merge
                editor.edited.connect(
                    lambda value, final, name=param.name: self._post_param_edited(name, value, final)
                )
                self.post_editors[param.name] = editor
                rows.append((param.name, param_tooltip(param), editor))
        self.params_layout.addLayout(self._grid(rows))

    def _post_process_chosen(self, name: str | None) -> None:
        if name != recipe_edit.post_process_name(self.state.recipe):
            updated = recipe_edit.with_post_process(self.state.recipe, name)
            self.state.set_recipe(updated, "widgets", f"post-process {name or 'none'}")

    def _post_param_edited(self, name: str, value: Any, final: bool) -> None:
        updated = recipe_edit.set_post_param(self.state.recipe, name, value)
        # One slider drag is one undo step, as for the method's parameters.
        self.state.set_recipe(updated, "widgets", f"set post-process {name}", f"post:{name}:{self._edit_serial}")
        if final:
            self._edit_serial += 1

    def _grid(self, rows: list[tuple[str, str, QWidget]]) -> QGridLayout:
        """Label and editor rows; every section uses the same label width so the sliders
        of all sections line up."""
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(6)
        grid.setColumnStretch(1, 1)
        for row, (text, tooltip, editor) in enumerate(rows):
            label = QLabel(text, self.params_box)
            label.setToolTip(tooltip)
            label.setFixedWidth(LABEL_WIDTH)
            label.setTextFormat(Qt.TextFormat.PlainText)
            metrics = label.fontMetrics()
            label.setText(metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, LABEL_WIDTH))
            grid.addWidget(label, row, 0)
            grid.addWidget(editor, row, 1)
        return grid

    def _section(self, title: str, text: str) -> QWidget:
        box = QWidget(self.params_box)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.setSpacing(2)
        heading = QLabel(title, box)
        heading.setObjectName("sectionTitle")
        body = QLabel(text, box)
        body.setObjectName("hint")
        body.setWordWrap(True)
        layout.addWidget(heading)
        layout.addWidget(body)
        return box

    def _editor(self, param: Param, model_index: int | None) -> ParamEditor:
        editor = ParamEditor(param, self.params_box)
        key: EditorKey = (param.name, model_index)
        editor.edited.connect(lambda value, final, k=key: self._param_edited(k, value, final))
        editor.curve_requested.connect(lambda k=key: self.show_curve(k))
        self.editors[key] = editor
        return editor

    def _model_name(self, reference: str) -> str:
        entry = self.state.model(reference)
        return entry.name if entry else display_name(reference)

    # ---- following the state ---------------------------------------------------------------

    def _recipe_changed(self, origin: str) -> None:
        recipe = self.state.recipe
        method = self.state.method()
        structure = self._structure_of(recipe)
        if structure != self._structure:
            self._structure = structure
            self._rebuild(method)
            if self._curve_key not in self.editors:
                self._curve_key = self._default_curve_key(method)
        self._show_method(method)
        for (name, index), editor in self.editors.items():
            param = method.param(name)
            if param is not None:
                editor.set_setting(recipe_edit.effective_setting(recipe, param, index))
        for editor in self.post_editors.values():
            editor.set_setting(recipe_edit.post_process_value(recipe, editor.param))
        # Also after a YAML edit: the project may have completed it (the base, the ticks,
        # required values), and the pane must show what will be merged. A no-op when the
        # text already means this recipe.
        self.yaml.show_recipe(recipe)
        if self.state.verdict_pending():
            self.yaml.show_verdict(None)  # until the project model's verdict_changed
        else:
            self._show_verdict(self.state.verdict())
        if origin != "curve":
            self._refresh_curve()
        self._show_notes(method)

    def _show_method(self, method: MethodSpec) -> None:
        index = self.method_combo.findData(method.name)
        self.method_combo.blockSignals(True)
        self.method_combo.setCurrentIndex(index)
        self.method_combo.blockSignals(False)
        parts = [method.summary]
        if method.paper:
            url = paper_url(method.paper)
            parts.append(f"<a href='{url}'>{method.paper}</a>" if url else method.paper)
        text = " ".join(parts)
        if method.math:
            text += f"<br><span style='font-family: monospace'>{method.math}</span>"
        self.summary_label.setText(text)

    def _show_notes(self, method: MethodSpec) -> None:
        notes = []
        recipe = self.state.recipe
        if method.needs_base and not recipe.get("base_model"):
            notes.append(f"{method.name} needs a base model: choose one on the Models page.")
        count = len(recipe.get("models") or [])
        if not recipe.get("slices") and count:
            too_few = count < method.min_models
            too_many = method.max_models is not None and count > method.max_models
            if too_few or too_many:
                wanted = (
                    f"exactly {method.min_models}"
                    if method.min_models == method.max_models
                    else f"{method.min_models} to {method.max_models}"
                    if method.max_models
                    else f"at least {method.min_models}"
                )
                notes.append(f"{method.name} merges {wanted} model(s) besides the base; {count} are "
                             "selected. Tick or untick models on the Models page.")
        self.note_label.setText("\n".join(notes))
        self.note_label.setVisible(bool(notes))

    # ---- editing -----------------------------------------------------------------------

    def _method_chosen(self, index: int) -> None:
        name = self.method_combo.itemData(index)
        if name and name != self.state.recipe.get("merge_method"):
            self.state.set_method(str(name))

    def _param_edited(self, key: EditorKey, value: Any, final: bool) -> None:
        name, index = key
        updated = recipe_edit.set_setting(self.state.recipe, name, value, index)
        # One slider drag is one undo step: edits share a key until the drag ends.
        merge_key = f"{name}:{index}:{self._edit_serial}"
        self.state.set_recipe(updated, "widgets", f"set {name}", merge_key)
        if final:
            self._edit_serial += 1
        if key == self._curve_key:
            self._refresh_curve()

    def _yaml_edited(self, recipe: dict[str, Any]) -> None:
        refused = self.state.set_recipe(recipe, "yaml", "edit YAML")
        if refused:
            self.yaml.refuse(refused)

    def _show_verdict(self, verdict: RecipeVerdict) -> None:
        self.yaml.show_verdict(verdict.ok, verdict.message, verdict.warnings)

    # ---- the curve editor ------------------------------------------------------------------

    def _default_curve_key(self, method: MethodSpec) -> EditorKey | None:
        for key, editor in self.editors.items():
            if recipe_edit.is_numeric(editor.param):
                return key
        return None

    def show_curve(self, key: EditorKey) -> None:
        self._curve_key = key
        self._refresh_curve()

    def _refresh_curve(self) -> None:
        method = self.state.method()
        key = self._curve_key
        param = method.param(key[0]) if key else None
        if key is None or param is None or not recipe_edit.is_numeric(param):
            self.curve_editor.set_target(None, None, self._layers(), self._layout())
            return
        name, index = key
        label = name if index is None else f"{name} of {self._model_name(self._model_reference(index))}"
        setting = recipe_edit.effective_setting(self.state.recipe, param, index)
        self.curve_editor.set_target(CurveTarget(param, index, label), setting, self._layers(), self._layout())

    def _model_reference(self, index: int) -> str:
        models = self.state.recipe.get("models") or []
        return str(models[index].get("model", "")) if index < len(models) else ""

    def _layers(self) -> int:
        base = self.state.model(self.state.base) if self.state.base else None
        if base is not None:
            return base.layers
        return max((m.layers for m in self.state.models), default=1)

    def _layout(self) -> Any:
        """The family layout (blocks, lanes) of the base model, else of the first model."""
        entry = self.state.model(self.state.base) if self.state.base else None
        entry = entry or next(iter(self.state.models), None)
        return entry.source.layout if entry is not None and entry.source is not None else None

    def _curve_edited(self, setting: Any, final: bool) -> None:
        target = self.curve_editor.target
        if target is None:
            return
        updated = recipe_edit.set_setting(self.state.recipe, target.param.name, setting, target.model_index)
        merge_key = f"curve:{target.param.name}:{target.model_index}:{self._edit_serial}"
        self.state.set_recipe(updated, "curve", f"curve {target.param.name}", merge_key)
        if final:
            self._edit_serial += 1


def _clear_layout(layout: Any) -> None:
    while layout.count():
        item = layout.takeAt(0)
        widget = item.widget()
        if widget is not None:
            widget.hide()  # gone at once, not when the event loop gets to deleting it
            widget.deleteLater()
        elif item.layout() is not None:
            _clear_layout(item.layout())


register_page(PageSpec("recipe", "Recipe", "Method, sliders, layer curves and the YAML", RecipePage))
