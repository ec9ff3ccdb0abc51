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
    from make_screenshots import _save, _settle, _wait, demo_window  # type: ignore[import-not-found]

    scratch = Path(tempfile.mkdtemp(prefix="generate_shots_"))
    _app, window = demo_window(scratch)  # the application stays alive while the window does
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
