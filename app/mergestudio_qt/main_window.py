"""The studio window: a sidebar of pages, menus with shortcuts, a status bar with device
and memory, and the project file (open, save, recent, the demo)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from mergestudio_qt import jobs
from mergestudio_qt.context import Studio
from mergestudio_qt.demo import DemoUnavailable, demo_project
from mergestudio_qt.format import format_bytes
from mergestudio_qt.pages import PageSpec, pages
from mergestudio_qt.preferences import Preferences, load_preferences, share_cache_dir, window_settings
from mergestudio_qt.project import SUFFIX, ProjectData, ProjectError, load_project, save_project
from mergestudio_qt.state import EvolveSettings, MergeSettings, StudioState
from mergestudio_qt.workers import DeviceProbeJob, OpenedModels, OpenModelsJob

APP_NAME = "Merge Studio"
MEMORY_POLL_MS = 2000
PROJECT_FILTER = f"Merge Studio projects (*{SUFFIX});;All files (*)"
RECIPE_FILTER = "mergekit recipes (*.yml *.yaml);;All files (*)"


def redo_shortcuts() -> list[QKeySequence]:
    """The platform's redo keys plus Ctrl+Shift+Z, each once: a key sequence listed twice
    on one action makes Qt refuse it as an ambiguous shortcut."""
    keys = [*QKeySequence.keyBindings(QKeySequence.StandardKey.Redo), QKeySequence("Ctrl+Shift+Z")]
    unique: list[QKeySequence] = []
    for key in keys:
        if key not in unique:
            unique.append(key)
    return unique


class MainWindow(QMainWindow):
    """``project_loaded(ok)`` is emitted when opening a project (or the demo) ends."""

    project_loaded = Signal(bool)

    def __init__(self, preferences: Preferences | None = None) -> None:
        super().__init__()
        self.preferences = preferences or load_preferences()
        share_cache_dir(self.preferences)
        self.state = StudioState(self)
        self.studio = Studio(self.state, self.preferences, self.show_message, self.go_to)
        self.prompt_on_close = True
        self.page_specs: list[PageSpec] = []
        self.page_widgets: dict[str, QWidget] = {}
        self._open_job: OpenModelsJob | None = None
        self._opening: tuple[ProjectData, Path | None] = (ProjectData(), None)
        self._imported: Path | None = None
        self._unsaved_name = "untitled"  # the title of a project not saved yet
        self._device_job: DeviceProbeJob | None = None
        self.setWindowTitle(APP_NAME)
        self.setMinimumSize(QSize(1024, 640))  # every page is laid out to fit 1024x700
        self._build_pages()
        self._build_menus()
        self._build_status_bar()
        self.state.project_changed.connect(lambda _p: self._update_title())
        self.state.dirty_changed.connect(lambda _d: self._update_title())
        self.state.recipe_refused.connect(self._recipe_refused)
        self._restore_geometry()
        self._update_title()

    # ---- pages ---------------------------------------------------------------------------

    def _build_pages(self) -> None:
        central = QWidget(self)
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.sidebar = QListWidget(central)
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(160)
        self.stack = QStackedWidget(central)
        for spec in pages():
            widget = spec.factory(self.studio)
            self.page_specs.append(spec)
            self.page_widgets[spec.key] = widget
            self.stack.addWidget(widget)
            item = QListWidgetItem(spec.title)
            item.setToolTip(spec.summary)
            self.sidebar.addItem(item)
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.sidebar.setCurrentRow(0)
        layout.addWidget(self.sidebar)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

    def page(self, key: str) -> QWidget:
        return self.page_widgets[key]

    def go_to(self, key: str) -> None:
        keys = [spec.key for spec in self.page_specs]
        if key in keys:
            self.sidebar.setCurrentRow(keys.index(key))

    def current_page_key(self) -> str:
        return self.page_specs[self.stack.currentIndex()].key

    # ---- menus ---------------------------------------------------------------------------

    def _action(self, menu: QMenu, text: str, slot: object, shortcut: QKeySequence | str | None = None,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&New project", self.new_project, QKeySequence.StandardKey.New)
        self._action(file_menu, "&Open project…", self._choose_project, QKeySequence.StandardKey.Open)
        self.recent_menu = file_menu.addMenu("Open &recent")
        self._action(file_menu, "Open the &demo project", self.open_demo, "Ctrl+Shift+D",
                     "A tiny base and specialists, ready to merge")
        file_menu.addSeparator()
        self._action(file_menu, "&Save project", self.save, QKeySequence.StandardKey.Save)
        self._action(file_menu, "Save project &as…", self.save_as, QKeySequence.StandardKey.SaveAs)
        file_menu.addSeparator()
        self._action(file_menu, "&Import mergekit YAML…", self._choose_recipe_to_import, "Ctrl+I",
                     "A new project from a mergekit recipe: its models are opened and listed")
        self._action(file_menu, "&Export mergekit YAML…", self._choose_recipe_export, "Ctrl+E",
                     "Write the recipe as mergekit YAML (what `mergestudio merge` and mergekit read)")
        file_menu.addSeparator()
        self._action(file_menu, "Se&ttings…", self.open_settings, QKeySequence.StandardKey.Preferences)
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        edit_menu = bar.addMenu("&Edit")
        undo = self.state.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.state.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcuts(redo_shortcuts())
        edit_menu.addAction(undo)
        edit_menu.addAction(redo)
        self.undo_action, self.redo_action = undo, redo
        view_menu = bar.addMenu("&View")
        for index, spec in enumerate(self.page_specs):
            self._action(view_menu, spec.title, lambda _c=False, k=spec.key: self.go_to(k), f"Ctrl+{index + 1}")
        merge_menu = bar.addMenu("&Merge")
        self._action(merge_menu, "&Dry run", lambda: self._merge_page_call("dry_run"), "Ctrl+D")
        self._action(merge_menu, "&Merge", lambda: self._merge_page_call("start_merge"), "Ctrl+M")
        self._action(merge_menu, "&Cancel", lambda: self._merge_page_call("cancel"), "Ctrl+.")
        merge_menu.addSeparator()
        self._action(merge_menu, "Export &GGUF…", lambda: self.open_share_dialog("gguf"), tip=(
            "Write a merged model as one GGUF file for llama.cpp and Ollama"))
        self._action(merge_menu, "&Upload to Hub…", lambda: self.open_share_dialog("upload"), tip=(
            "Upload a merged model folder to the Hugging Face Hub"))
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&Method reference", self.show_method_reference, QKeySequence.StandardKey.HelpContents,
                     "Every merge method, its parameters and their ranges")
        self._action(help_menu, "&Keyboard shortcuts", self.show_shortcuts, "Ctrl+/")
        help_menu.addSeparator()
        self._action(help_menu, "&About Merge Studio", self._about)
        self._fill_recent_menu()

    def open_share_dialog(self, kind: str) -> QDialog:
        """Export GGUF… or Upload to Hub…, on the last merge's folder by default."""
        from mergestudio_qt.share_dialogs import ExportGgufDialog, UploadDialog

        page = self.page_widgets.get("merge")
        folder = getattr(page, "last_output", None)
        dialog = ExportGgufDialog(folder, self) if kind == "gguf" else UploadDialog(folder, self)
        dialog.setModal(True)
        dialog.show()
        return dialog

    def _merge_page_call(self, name: str) -> None:
        page = self.page_widgets.get("merge")
        if page is not None:
            self.go_to("merge")
            getattr(page, name)()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.preferences.recent_projects:
            action = self.recent_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.triggered.connect(lambda _c=False, p=path: self.open_project(Path(p)))
        self.recent_menu.setEnabled(bool(self.preferences.recent_projects))

    def show_method_reference(self, name: str | None = None) -> QDialog:
        from mergestudio_qt.help_dialogs import MethodReferenceDialog

        dialog = MethodReferenceDialog(self)
        dialog.show_method(name or str(self.state.recipe.get("merge_method", "")))
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def show_shortcuts(self) -> QDialog:
        from mergestudio_qt.help_dialogs import ShortcutsDialog

        dialog = ShortcutsDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def _about(self) -> None:
        from mergestudio_qt.about import show_about

        show_about(self)

    # ---- status bar ------------------------------------------------------------------------

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.device_label = QLabel("device: checking…", self)
        self.device_label.setToolTip("Where 'auto' merges run")
        self.memory_label = QLabel(self)
        self.memory_label.setToolTip("System memory in use")
        bar.addPermanentWidget(self.device_label)
        bar.addPermanentWidget(self.memory_label)
        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(MEMORY_POLL_MS)
        self._memory_timer.timeout.connect(self._update_memory)
        self._memory_timer.start()
        self._update_memory()
        job = DeviceProbeJob()
        job.succeeded.connect(self._device_known)
        job.failed.connect(self._device_unknown)
        job.finished.connect(self._device_probed)
        self._device_job = job
        jobs.start(job)

    # Job signals go to bound methods only: a lambda would run on the job's own thread.
    def _device_known(self, text: str) -> None:
        self.device_label.setText(f"device: {text}")

    def _device_unknown(self, _message: str) -> None:
        self.device_label.setText("device: cpu")

    def _device_probed(self) -> None:
        self._device_job = None

    def _update_memory(self) -> None:
        import psutil

        memory = psutil.virtual_memory()
        used = memory.total - memory.available
        self.memory_label.setText(f"memory: {format_bytes(used)} of {format_bytes(memory.total)}")

    def _recipe_refused(self, reason: str) -> None:
        # Kept until replaced: a recipe from a trial or a page was not applied.
        self.statusBar().showMessage(f"Recipe not applied: {reason}")

    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 6000)

    # ---- projects ------------------------------------------------------------------------------

    def project_data(self) -> ProjectData:
        state = self.state
        return ProjectData(
            models=[{"reference": m.reference, "include": m.include} for m in state.models],
            base=state.base,
            recipe=state.recipe,
            merge=asdict(state.merge),
            evolve=asdict(state.evolve),
            eval_tasks=state.eval_tasks,
            specialists=dict(state.specialists),
            stages=state.stages(),
            current_stage=state.current_stage,
        )

    def _choose_recipe_to_import(self) -> None:
        if not self._confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import a mergekit recipe", "", RECIPE_FILTER)
        if path:
            self.import_recipe(Path(path))

    def import_recipe(self, path: Path) -> None:
        """A new, unsaved project from a mergekit YAML recipe: its models are opened in the
        background and listed, its base_model becomes the base (``project_loaded``)."""
        from mergestudio_qt.project import project_from_recipe

        try:
            data = project_from_recipe(path)
        except ProjectError as error:
            QMessageBox.warning(self, "Cannot import the recipe", str(error))
            self.project_loaded.emit(False)
            return
        self._load(data, None, imported=path)

    def _choose_recipe_export(self) -> None:
        name = str(self.state.recipe.get("name") or "recipe")
        path, _ = QFileDialog.getSaveFileName(self, "Export the recipe", f"{name}.yml", RECIPE_FILTER)
        if path:
            self.export_recipe(Path(path))

    def export_recipe(self, path: Path) -> bool:
        """Write the project's recipe (what a merge runs, with the output dtype) as YAML."""
        from mergestudio_qt.widgets.yaml_pane import to_yaml

        merge_page = self.page_widgets.get("merge")
        recipe = merge_page.merge_recipe() if hasattr(merge_page, "merge_recipe") else self.state.document()
        # A multi-stage recipe: one YAML document per stage, as mergekit-multi writes them.
        text = "---\n".join(to_yaml(d) for d in recipe) if isinstance(recipe, list) else to_yaml(recipe)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as error:
            QMessageBox.warning(self, "Cannot export the recipe", f"{path}: {error.strerror}")
            return False
        self.show_message(f"exported the recipe to {path}")
        return True

    def new_project(self) -> None:
        if self._confirm_discard():
            self.state.clear()

    def _choose_project(self) -> None:
        if not self._confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open project", "", PROJECT_FILTER)
        if path:
            self.open_project(Path(path))

    def open_project(self, path: Path) -> None:
        """Read the file, then open its models in the background (``project_loaded``)."""
        try:
            data = load_project(path)
        except ProjectError as error:
            self.show_message(str(error))
            QMessageBox.warning(self, "Cannot open project", str(error))
            self.project_loaded.emit(False)
            return
        self._load(data, path)

    def open_demo(self) -> None:
        merge_dir = self.preferences.effective_cache_dir() / "merges" / "demo"
        try:
            data = demo_project(merge_dir)
        except DemoUnavailable as error:
            # Kept in the status bar until replaced: it says how to get the demo.
            self.statusBar().showMessage(f"Demo unavailable: {error}")
            self.project_loaded.emit(False)
            return
        self.preferences.demo_opened = True
        self.studio.save_preferences()
        self._load(data, None)

    def _load(self, data: ProjectData, path: Path | None, imported: Path | None = None) -> None:
        if self._open_job is not None:
            self._open_job.cancel()
        job = OpenModelsJob(data.references, str(self.preferences.effective_cache_dir()))
        job.succeeded.connect(self._loaded)
        job.failed.connect(self._load_failed)
        job.cancelled.connect(self._load_cancelled)
        job.finished.connect(self._open_finished)
        self._open_job = job
        self._opening = (data, path)
        self._imported = imported
        self.show_message(f"opening {len(data.references)} model(s)…")
        jobs.start(job)

    def _loaded(self, opened: OpenedModels) -> None:
        data, path = self._opening
        includes = {m["reference"]: bool(m.get("include", True)) for m in data.models}
        for entry in opened.entries:
            entry.include = includes.get(entry.reference, True)
        known = {f for f in MergeSettings.__dataclass_fields__}
        merge = MergeSettings(**{k: v for k, v in data.merge.items() if k in known})
        evolve = EvolveSettings(**{k: v for k, v in data.evolve.items() if k in EvolveSettings.__dataclass_fields__})
        self.state.load(opened.entries, data.base, data.recipe, merge, data.eval_tasks, path,
                        data.specialists, data.stages, data.current_stage, evolve)
        if path is not None:
            self.preferences.add_recent(path)
            self.studio.save_preferences()
            self._fill_recent_menu()
        if opened.errors:
            QMessageBox.warning(self, "Some models could not be opened", "\n".join(opened.errors))
        self._unsaved_name = self._imported.stem if self._imported else ("untitled" if path else "demo")
        if self._imported is not None:
            self.state.set_dirty(True)  # an import is a new project nobody has saved yet
            self.show_message(f"imported {self._imported.name}: {len(opened.entries)} model(s)")
        else:
            self.show_message("project opened" if path else "demo project opened: press Merge (Ctrl+M)")
        self.project_loaded.emit(True)

    def _load_cancelled(self) -> None:
        self.project_loaded.emit(False)

    def _load_failed(self, message: str) -> None:
        self.show_message(message)
        self.project_loaded.emit(False)

    def _open_finished(self) -> None:
        # Only the job now opening: a project opened again at once replaced the one that
        # is finishing, and dropping the new one's last reference would delete it mid-run.
        if self.sender() is self._open_job:
            self._open_job = None

    def save(self) -> bool:
        if self.state.project_path is None:
            return self.save_as()
        return self.save_to(self.state.project_path)

    def save_as(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(self, "Save project", "untitled" + SUFFIX, PROJECT_FILTER)
        if not path:
            return False
        target = Path(path)
        if target.suffix != SUFFIX:
            target = target.with_suffix(SUFFIX)
        return self.save_to(target)

    def save_to(self, path: Path) -> bool:
        try:
            save_project(self.project_data(), path)
        except OSError as error:
            QMessageBox.warning(self, "Cannot save project", f"{path}: {error.strerror}")
            return False
        self.state.set_project_path(path)
        self.state.set_dirty(False)
        self.preferences.add_recent(path)
        self.studio.save_preferences()
        self._fill_recent_menu()
        self.show_message(f"saved {path}")
        return True

    def _confirm_discard(self) -> bool:
        if not self.prompt_on_close or not self.state.dirty or not self.state.models:
            return True
        answer = QMessageBox.question(
            self, "Unsaved changes", "Save the current project first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
        )
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def _update_title(self) -> None:
        path = self.state.project_path
        name = path.stem if path else (self._unsaved_name if self.state.models else "untitled")
        self.setWindowTitle(f"{name}{' •' if self.state.dirty else ''} — {APP_NAME}")

    # ---- settings, geometry, closing -----------------------------------------------------------

    def open_settings(self) -> None:
        from mergestudio_qt.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.preferences, self)
        if dialog.exec():
            dialog.apply()
            share_cache_dir(self.preferences)
            self.studio.save_preferences()
            self.show_message("settings saved")
            merge = self.page_widgets.get("merge")
            if merge is not None:  # the compute dtype changes the memory a merge needs
                merge.memory_inputs_changed()  # type: ignore[attr-defined]

    def _restore_geometry(self) -> None:
        settings = window_settings()
        geometry = settings.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        page = settings.value("page")
        if isinstance(page, str):
            self.go_to(page)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._confirm_discard():
            event.ignore()
            return
        settings = window_settings()
        settings.setValue("geometry", self.saveGeometry())
        settings.setValue("page", self.current_page_key())
        settings.sync()
        self._memory_timer.stop()
        for widget in self.page_widgets.values():
            cancel_all = getattr(widget, "cancel_all", None) or getattr(widget, "cancel", None)
            if callable(cancel_all):
                cancel_all()
        if self._open_job is not None:
            self._open_job.cancel()
        jobs.stop_all()
        event.accept()


__all__ = ["MainWindow"]
