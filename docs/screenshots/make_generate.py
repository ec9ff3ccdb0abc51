"""The generation window ("Try it…" on the Merge page) on the demo project: the demo's
recipe merged in memory, beside two specialists and the base, greedy, then sampled
(offscreen).

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_generate.py

Writes generate-1280.png and generate-1024.png (the window at 1280x800 and 1024x700).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
OUT = Path(__file__).resolve().parent


def main() -> int:
    from make_screenshots import _open_demo, _save, _settle, _wait  # type: ignore[import-not-found]

    scratch = Path(tempfile.mkdtemp(prefix="generate_shots_"))
    os.environ["MERGESTUDIO_CONFIG_DIR"] = str(scratch / "config")
    from mergestudio_qt.app import create_app
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.preferences import Preferences
    from mergestudio_qt.style import apply_style

    app = create_app(["screenshots"])
    apply_style(app, dark=False)
    window = MainWindow(Preferences(demo_opened=True, device="cpu", cache_dir=str(scratch / "cache")))
    window.prompt_on_close = False
    window.resize(1280, 800)
    window.show()
    _open_demo(window)
    window.go_to("merge")
    page = window.page("merge")
    page.try_generation()
    dialog = page.generation
    panel = dialog.panel
    for name in ("base", "last", "cipher"):
        panel.set_parent_checked(name, True)
    panel.prompt_edit.setPlainText("end ynbi=")
    finished: list[str] = []
    panel.generation_finished.connect(finished.append)
    panel.start()
    _wait(lambda: bool(finished))
    shots = (((1280, 800), "generate-1280", 0), ((1024, 700), "generate-1024", 1))
    for size, name, mode in shots:
        if mode != panel.mode_combo.currentIndex():
            panel.mode_combo.setCurrentIndex(mode)
            panel.prompt_edit.setPlainText("the")
            panel.seed_spin.setValue(3)
            runs = len(finished)
            panel.start()
            _wait(lambda: len(finished) > runs)  # noqa: B023  (waited on before the loop goes on)
        dialog.resize(*size)
        _settle()
        _save(dialog, name)
    dialog.close()
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
