"""Starting the studio: the application object, its style, and the first project."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QApplication, QSplashScreen

from mergestudio_qt.about import app_icon
from mergestudio_qt.main_thread_gc import collect_on_main_thread
from mergestudio_qt.main_window import MainWindow
from mergestudio_qt.preferences import load_preferences
from mergestudio_qt.style import apply_style


def create_app(argv: Sequence[str] | None = None) -> QApplication:
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    app = QApplication(list(argv if argv is not None else sys.argv))
    # Folder names come from these: ~/.config/mergestudio, ~/.cache/mergestudio on Linux.
    app.setApplicationName("mergestudio")
    app.setOrganizationName("")
    app.setApplicationDisplayName("Merge Studio")
    apply_style(app)
    collect_on_main_thread(app)
    return app


def preload_engine() -> None:
    """Import torch and the engine before the window shows. Importing torch holds the GIL
    for most of a second (loading its shared libraries); done in a worker thread later, it
    would freeze a window that is already on screen. What they create lives as long as
    the app and is moved out of the garbage collector's reach (``import_long_lived``)."""
    from mergestudio.collector import import_long_lived

    import_long_lived(("torch", "mergestudio.engine.merge"))


def warm_up_search() -> threading.Thread:
    """Import a search's modules (``mergestudio.search.prepare_imports``: optuna,
    transformers; ~2.5 s) in a background thread while the window is on screen. The
    search itself runs in a child process that imports its own; these are for what runs
    in the window's process: opening a run folder, scoring its baselines, exporting a
    trial, re-scoring one on the full set (imported lazily there, they froze the window
    with full garbage collections)."""
    from mergestudio.search import prepare_imports

    thread = threading.Thread(target=prepare_imports, name="mergestudio-warm-up", daemon=True)
    thread.start()
    return thread


def open_window(project: Path | None = None, demo: bool = False) -> MainWindow:
    """The window with its first project: the given file, else the demo on ``demo`` or on
    the very first run, else an empty project."""
    splash = _splash()
    preload_engine()
    preferences = load_preferences()
    window = MainWindow(preferences)
    window.show()
    if splash is not None:
        splash.finish(window)
    warm_up_search()
    if project is not None:
        window.open_project(project)
    elif demo or not preferences.demo_opened:
        window.open_demo()
    return window


def _splash() -> QSplashScreen | None:
    """A small 'starting' card while the engine loads (painted once, before the import)."""
    icon = app_icon()
    if icon.isNull():
        return None
    pixmap = icon.pixmap(QSize(96, 96))
    splash = QSplashScreen(pixmap)
    splash.showMessage("Loading the engine…", Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignHCenter)
    splash.show()
    QApplication.processEvents()
    return splash


def main(project: str | None = None, demo: bool = False, argv: Sequence[str] | None = None) -> int:
    app = create_app(argv)
    window = open_window(Path(project) if project else None, demo)
    code = app.exec()
    del window
    return int(code)
