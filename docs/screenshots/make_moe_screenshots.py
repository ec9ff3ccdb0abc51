"""Screenshots of the Experts page (mixture of experts) with the demo zoo's skills as
experts, after a dry run, at 1280x800 and 1024x700:

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_moe_screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # make_screenshots' helpers
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
OUT = Path(__file__).resolve().parent
DEMO = ROOT / "resources" / "demo" / "models"
PROMPTS = {
    "last": ["end abc=", "end hello="],
    "max": ["top 4132=", "top 907="],
    "cipher": ["key abc=", "key hi="],
    "symbol": ["sym 12=", "sym 7="],
}


def main() -> None:
    from make_screenshots import _settle, _wait
    from mergestudio_qt.app import create_app
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.pages.experts_page import ExpertRow
    from mergestudio_qt.preferences import Preferences
    from mergestudio_qt.style import apply_style

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["MERGESTUDIO_CONFIG_DIR"] = str(Path(scratch) / "config")
        app = create_app(["screenshots"])
        apply_style(app, dark=False)
        window = MainWindow(Preferences(demo_opened=True, cache_dir=scratch))
        window.prompt_on_close = False
        window.show()
        models = window.page("models")
        for name in ("base", *PROMPTS):
            models.add_reference(str(DEMO / name))
            _wait(lambda name=name: any(m.reference == str(DEMO / name) for m in window.state.models))
        window.go_to("moe")
        page = window.page("moe")
        page.out_edit.setText(str(Path(scratch) / "skills-moe"))
        for name, prompts in PROMPTS.items():
            page.add_expert(ExpertRow(str(DEMO / name), prompts))
        page.expert_list.setCurrentRow(1)
        finished: list[bool] = []
        page.dry_run_finished.connect(finished.append)
        page.dry_run()
        _wait(lambda: bool(finished))
        for width, height in ((1280, 800), (1024, 700)):
            window.resize(width, height)
            _settle()
            window.grab().save(str(OUT / f"experts-{width}.png"), "png", 0)
        window.close()


if __name__ == "__main__":
    main()
