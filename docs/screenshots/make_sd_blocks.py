"""The curve editor on two tiny SD 1.5 UNets (diffusers): one point and one named slider
per SuperMerger block, after the "IN only" preset with M00 at half (offscreen).

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_sd_blocks.py

Writes sd-blocks-1280.png and sd-blocks-1024.png (the Recipe page at 1280x800 and 1024x700).
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
    from make_screenshots import _save, _settle, _wait  # type: ignore[import-not-found]

    from tests.families import unet_cases

    scratch = Path(tempfile.mkdtemp(prefix="sd_blocks_"))
    os.environ["MERGESTUDIO_CONFIG_DIR"] = str(scratch / "config")
    folders = unet_cases()[0].save(scratch, (0, 1))
    from mergestudio_qt.app import create_app
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.preferences import Preferences
    from mergestudio_qt.style import apply_style

    app = create_app(["screenshots"])
    apply_style(app, dark=False)
    window = MainWindow(Preferences(demo_opened=True, cache_dir=str(scratch / "cache")))
    window.prompt_on_close = False
    window.resize(1280, 800)
    window.show()
    models = window.page("models")
    for folder in folders:
        models.add_reference(str(folder))
        _wait(lambda f=folder: window.state.model(str(f)) is not None)
    window.go_to("recipe")
    page = window.page("recipe")
    page.method_combo.setCurrentIndex(page.method_combo.findData("linear"))
    page.show_curve(("weight", 0))
    curve = page.curve_editor
    curve.apply_family_preset("IN only")
    curve.block_combo.setCurrentIndex(curve.block_labels.index("M00"))
    curve.block_slider.setValue(curve.block_slider.maximum() // 2)
    for size, name in (((1280, 800), "sd-blocks-1280"), ((1024, 700), "sd-blocks-1024")):
        window.resize(*size)
        _settle()
        _save(window, name)
    window.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(OUT))
    raise SystemExit(main())
