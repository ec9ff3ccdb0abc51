"""The window stage of ``mergestudio --smoke`` (the ``mergestudio.smoke`` entry point)."""

from __future__ import annotations

import os
import sys


def build_window() -> tuple[str, str]:
    """Build and paint the studio's main window and the About dialog the way
    ``mergestudio studio`` does (same application set-up and style). Returns the Qt
    platform and the window's class name. Offscreen unless ``QT_QPA_PLATFORM`` says
    otherwise, so the same check runs under Xvfb (``QT_QPA_PLATFORM=xcb``)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from mergestudio_qt.about import AboutDialog
    from mergestudio_qt.app import create_app
    from mergestudio_qt.main_window import MainWindow

    app = create_app([sys.argv[0]])
    window = MainWindow()
    window.prompt_on_close = False  # nothing to save: never ask
    window.show()
    app.processEvents()
    if window.grab().isNull():
        raise RuntimeError("the main window painted nothing")
    about = AboutDialog(window)
    if about.grab().isNull():
        raise RuntimeError("the About dialog painted nothing")
    about.close()
    window.close()
    app.processEvents()
    return str(app.platformName()), type(window).__name__
