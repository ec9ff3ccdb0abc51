"""The studio's shared state: models, base, recipe, merge settings and the project file.

One ``StudioState`` per window. Pages read it and change it only through its methods;
it announces every change with a signal, so a page never needs to know which other page
caused it. The recipe is kept as a plain mergekit dict (what the YAML pane shows); every
change to it goes through the undo stack.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QUndoCommand, QUndoStack

from mergestudio_qt import recipe_edit

if TYPE_CHECKING:
    from mergestudio.io.sources import ModelSource
    from mergestudio.methods.registry import MethodSpec
    from mergestudio.preflight import PreflightReport

DEFAULT_METHOD = "task_arithmetic"


@dataclass
class ModelEntry:
    """A model the user added, described from its headers (no tensor data read)."""

    reference: str  # as the recipe writes it: a path or org/name[@revision]
    name: str
    kind: str  # "folder", "file" or "hub"
    architecture: str | None
    layers: int
    parameters: int
    dtypes: dict[str, int]
    disk_bytes: int
    revision: str | None = None
    source: ModelSource | None = field(default=None, repr=False)  # closed; headers only
    include: bool = True

    @property
    def dtype_text(self) -> str:
        from mergestudio.io.dtypes import torch_dtype_name

        codes = sorted(self.dtypes, key=lambda c: -self.dtypes[c])
        return ", ".join(torch_dtype_name(code) for code in codes)

    @property
    def source_text(self) -> str:
        if self.kind == "hub":
            return f"Hub @ {self.revision[:10]}" if self.revision else "Hub"
        return "local file" if self.kind == "file" else "local folder"


@dataclass
class MergeSettings:
    out_dir: str = ""
    out_dtype: str = "bfloat16"  # "" keeps each tensor's input dtype
    device: str = "auto"
    shard_mb: int = 2000
    overwrite: bool = False


def describe_source(source: ModelSource, reference: str, kind: str) -> ModelEntry:
    """A ``ModelEntry`` from an open source (closes its memory maps: headers stay)."""
    disk = sum(path.stat().st_size for path in source.files if path.exists())
    entry = ModelEntry(
        reference=reference,
        name=display_name(reference),
        kind=kind,
        architecture=source.architecture,
        layers=source.num_layers,
        parameters=source.parameter_count,
        dtypes=source.dtypes,
        disk_bytes=disk,
        revision=source.revision,
        source=source,
    )
    source.close()
    return entry


def display_name(reference: str) -> str:
    """A short name: a folder's or file's own name, or a Hub id's repo name."""
    path = Path(reference)
    if path.suffix == ".safetensors":
        return path.parent.name + "/" + path.name if path.name == "model.safetensors" else path.stem
    return path.name or reference


class _RecipeChange(QUndoCommand):
    """One recipe edit. Consecutive edits with the same ``merge_key`` (one slider drag)
    collapse into one undo step."""

    def __init__(self, state: StudioState, old: dict[str, Any], new: dict[str, Any], text: str,
                 merge_key: str | None) -> None:
        super().__init__(text)
        self._state = state
        self.old = old
        self.new = new
        self.merge_key = merge_key
        self._first = True

    def id(self) -> int:
        return 1 if self.merge_key else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, _RecipeChange) or other.merge_key != self.merge_key:
            return False
        self.new = other.new
        return True

    def redo(self) -> None:
        if self._first:  # the change is already applied when pushed
            self._first = False
            return
        self._state._apply_recipe(self.new, "undo")

    def undo(self) -> None:
        self._state._apply_recipe(self.old, "undo")


class StudioState(QObject):
    models_changed = Signal()
    base_changed = Signal(object)  # str | None
    recipe_changed = Signal(str)  # who changed it: "widgets", "yaml", "models", "undo", "load"
    merge_settings_changed = Signal()
    preflight_changed = Signal()
    project_changed = Signal(object)  # Path | None
    dirty_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.models: list[ModelEntry] = []
        self.base: str | None = None
        self.recipe: dict[str, Any] = {"merge_method": DEFAULT_METHOD}
        self.merge = MergeSettings()
        self.eval_tasks: list[str] = []
        self.project_path: Path | None = None
        self.preflight: PreflightReport | None = None
        self.undo_stack = QUndoStack(self)
        self._dirty = False
        self.undo_stack.indexChanged.connect(self._undo_index_changed)

    @Slot(int)
    def _undo_index_changed(self, _index: int) -> None:
        # A bound slot, not a lambda: Qt disconnects it when the state is destroyed.
        self.set_dirty(True)

    # ---- models ------------------------------------------------------------------------

    def model(self, reference: str) -> ModelEntry | None:
        return next((m for m in self.models if m.reference == reference), None)

    def add_model(self, entry: ModelEntry) -> None:
        if self.model(entry.reference) is not None:
            return
        self.models.append(entry)
        if self.base is None:
            self.base = entry.reference
            self.base_changed.emit(self.base)
        self._models_updated()

    def remove_model(self, reference: str) -> None:
        self.models = [m for m in self.models if m.reference != reference]
        if self.base == reference:
            self.base = self.models[0].reference if self.models else None
            self.base_changed.emit(self.base)
        self._models_updated()

    def set_base(self, reference: str | None) -> None:
        if reference == self.base:
            return
        self.base = reference
        self.base_changed.emit(reference)
        self._models_updated()

    def set_included(self, reference: str, include: bool) -> None:
        entry = self.model(reference)
        if entry is not None and entry.include != include:
            entry.include = include
            self._models_updated()

    def merged_references(self) -> list[str]:
        """The models merged onto the base: every included model except the base."""
        return [m.reference for m in self.models if m.include and m.reference != self.base]

    def _models_updated(self) -> None:
        self.update_preflight()
        self.models_changed.emit()
        self.set_dirty(True)
        updated = recipe_edit.with_models(self.recipe, self.base, self.merged_references(), self.method())
        self.set_recipe(updated, "models", "models changed")

    def update_preflight(self) -> None:
        from mergestudio.preflight import preflight

        base = self.model(self.base) if self.base else None
        sources = [m.source for m in self.models if m.source is not None and m.reference != self.base]
        if base is None or base.source is None:
            self.preflight = None
        else:
            self.preflight = preflight(base.source, sources)
        self.preflight_changed.emit()

    # ---- recipe ------------------------------------------------------------------------

    def method(self) -> MethodSpec:
        from mergestudio.errors import RecipeError
        from mergestudio.methods import get_method

        try:
            return get_method(str(self.recipe.get("merge_method", DEFAULT_METHOD)))
        except RecipeError:
            return get_method(DEFAULT_METHOD)

    def set_recipe(self, recipe: dict[str, Any], origin: str, text: str = "edit recipe",
                   merge_key: str | None = None) -> None:
        if recipe == self.recipe:
            return
        old = self.recipe
        self._apply_recipe(recipe, origin)
        self.undo_stack.push(_RecipeChange(self, old, copy.deepcopy(recipe), text, merge_key))

    def set_method(self, name: str) -> None:
        from mergestudio.methods import get_method

        self.set_recipe(recipe_edit.with_method(self.recipe, get_method(name)), "widgets", f"method {name}")

    def _apply_recipe(self, recipe: dict[str, Any], origin: str) -> None:
        self.recipe = copy.deepcopy(recipe)
        self.recipe_changed.emit(origin)

    # ---- merge settings and project ----------------------------------------------------------

    def set_merge_settings(self, settings: MergeSettings) -> None:
        if settings != self.merge:
            self.merge = settings
            self.merge_settings_changed.emit()
            self.set_dirty(True)

    def set_eval_tasks(self, tasks: list[str]) -> None:
        if tasks != self.eval_tasks:
            self.eval_tasks = list(tasks)
            self.set_dirty(True)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def set_dirty(self, dirty: bool) -> None:
        if dirty != self._dirty:
            self._dirty = dirty
            self.dirty_changed.emit(dirty)

    def set_project_path(self, path: Path | None) -> None:
        self.project_path = path
        self.project_changed.emit(path)

    def clear(self) -> None:
        """An empty project: no models, the default method, default merge settings."""
        self.models = []
        self.base = None
        self.merge = MergeSettings()
        self.eval_tasks = []
        self.preflight = None
        self._apply_recipe({"merge_method": DEFAULT_METHOD}, "load")
        self.undo_stack.clear()
        self.base_changed.emit(None)
        self.models_changed.emit()
        self.preflight_changed.emit()
        self.merge_settings_changed.emit()
        self.set_project_path(None)
        self.set_dirty(False)

    def load(self, models: list[ModelEntry], base: str | None, recipe: dict[str, Any],
             merge: MergeSettings, eval_tasks: list[str], path: Path | None) -> None:
        """Replace everything at once (opening a project): one signal of each kind."""
        self.models = list(models)
        self.base = base
        self.merge = merge
        self.eval_tasks = list(eval_tasks)
        self.update_preflight()
        self._apply_recipe(recipe, "load")
        self.undo_stack.clear()
        self.base_changed.emit(base)
        self.models_changed.emit()
        self.merge_settings_changed.emit()
        self.set_project_path(path)
        self.set_dirty(False)
