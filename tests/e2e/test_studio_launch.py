"""``mergestudio studio`` launched for real on an X server (Xvfb, Qt's xcb platform, as on
a Linux desktop): the command's own entry point runs its event loop and the main window is
mapped and exposed on the screen. Skipped, saying why, where Xvfb is not installed
(``make system-deps`` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("xvfb-run") is None or shutil.which("Xvfb") is None,
        reason="Xvfb is not installed (make system-deps installs xvfb): no real studio launch",
    ),
]

# Runs ``mergestudio studio`` through the CLI's main(). A timer started before it watches
# for the main window to be visible and exposed by the X server, reports it, saves what
# it painted, and quits the event loop the command is running.
DRIVER = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from mergestudio_qt.app import create_app
from mergestudio_qt.main_window import MainWindow
from mergestudio_qt.preferences import Preferences, save_preferences

save_preferences(Preferences(demo_opened=True))  # not a first run: no demo to load
app = create_app([sys.argv[0]])  # the command's create_app() finds and reuses it

def check() -> None:
    for widget in QApplication.topLevelWidgets():
        handle = widget.windowHandle()
        if isinstance(widget, MainWindow) and widget.isVisible() and handle and handle.isExposed():
            geometry = widget.geometry()
            print("shown", app.platformName(), widget.windowTitle(), geometry.width(), geometry.height(),
                  flush=True)
            widget.grab().save(sys.argv[1])
            app.quit()

timer = QTimer()
timer.timeout.connect(check)
timer.start(100)
QTimer.singleShot(60_000, lambda: app.exit(3))  # never shown: fail, do not hang
from mergestudio.cli.main import main
sys.exit(main(["studio"]))
"""


def test_studio_command_shows_the_main_window_on_an_x_server(tmp_path: Path) -> None:
    screenshot = tmp_path / "studio.png"
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "xcb",
        "MERGESTUDIO_CONFIG_DIR": str(tmp_path / "config"),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-c", DRIVER, str(screenshot)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shown = [line.split() for line in result.stdout.splitlines() if line.startswith("shown ")]
    assert len(shown) == 1, result.stdout + result.stderr
    _, platform, *title, width, height = shown[0]
    assert platform == "xcb"  # a real X connection, not the offscreen platform
    assert "Merge Studio" in " ".join(title)
    assert int(width) >= 800 and int(height) >= 500
    from PySide6.QtGui import QImage

    image = QImage(str(screenshot))
    assert not image.isNull() and image.width() == int(width)
    # It painted something: more than one colour on screen.
    colours = {image.pixel(x, y) for x in range(0, image.width(), 37) for y in range(0, image.height(), 29)}
    assert len(colours) > 5
