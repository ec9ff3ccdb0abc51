"""Regenerate the studio screenshots in this folder (offscreen, no display needed).

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_screenshots.py

Uses the demo zoo (resources/demo, or a miniature one built into a temp folder when it is
missing), merges it, runs the quick eval, and grabs every page in the light palette at
1280x800 and 1024x700 (Inspect after a finished analysis, Evolve after a finished run of
the demo search, resources/demo/search.yml) and the Models, Recipe and Merge pages in the
dark palette at 1920x1080. Images are PNGs at the highest compression.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
OUT = Path(__file__).resolve().parent


def _zoo(scratch: Path) -> Path:
    from mergestudio.demo.paths import default_zoo_dir

    real = default_zoo_dir()
    if (real / "models" / "base" / "config.json").exists():
        return real
    from mergestudio.demo.build import ZooConfig, build_zoo

    build_zoo(scratch / "zoo", ZooConfig.miniature(), log=lambda _line: None, evaluate=False)
    return scratch / "zoo"


def _wait(condition: Callable[[], bool], timeout_s: float = 120.0) -> None:
    import time

    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the studio did not get there in time")
        loop = QEventLoop()
        QTimer.singleShot(20, loop.quit)
        loop.exec()
        QCoreApplication.processEvents()


def _settle(ms: int = 400) -> None:
    """Let layouts and plots finish (a page shown for the first time lays out lazily)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _save(widget: object, name: str) -> None:
    widget.grab().save(str(OUT / f"{name}.png"), "PNG", 9)  # type: ignore[attr-defined]
    print(f"{name}.png {(OUT / f'{name}.png').stat().st_size // 1024} KB")


def _shape_curve(window: object) -> None:
    """Give the first specialist's first parameter a ramp in the attention lane, so the
    curve editor and the YAML show what per-layer conditions look like (skipped when the
    demo's method has no per-model parameter)."""
    page = window.page("recipe")  # type: ignore[attr-defined]
    key = next((k for k in page.editors if k[1] == 0), None)
    if key is None:
        return
    page.show_curve(key)
    curve = page.curve_editor
    curve.lane_combo.setCurrentIndex(curve.lane_combo.findData("attention"))
    curve.apply_preset("ramp up")


def _prepare(window: object, scratch: Path) -> None:
    # The demo project's recipe (the zoo's best default merge), with one layer curve.
    _shape_curve(window)
    merge = window.page("merge")  # type: ignore[attr-defined]
    merge.out_edit.setText(str(scratch / "merged"))
    merge.out_edit.editingFinished.emit()
    merge.overwrite_check.setChecked(True)
    merge.dry_run()
    _wait(lambda: merge.dry_job is None)
    merge.start_merge()
    _wait(lambda: merge.merge_job is None)
    merge.start_eval()
    _wait(lambda: merge.eval_job is None)
    inspect = window.page("inspect")  # type: ignore[attr-defined]
    inspect.start_analysis()
    _wait(lambda: inspect.job is None)


def _open_demo(window: object) -> None:
    loaded: list[bool] = []
    window.project_loaded.connect(loaded.append)  # type: ignore[attr-defined]
    window.open_demo()  # type: ignore[attr-defined]
    _wait(lambda: bool(loaded))
    _wait(lambda: "checking" not in window.device_label.text())  # type: ignore[attr-defined]


def demo_window(scratch: Path, size: tuple[int, int] = (1280, 800)) -> tuple[object, object]:
    """(the application, a light-palette main window of ``size`` with the demo project
    open), configured under ``scratch``: what the single-view screenshot scripts start from."""
    os.environ["MERGESTUDIO_CONFIG_DIR"] = str(scratch / "config")
    os.environ["MERGESTUDIO_DEMO_DIR"] = str(_zoo(scratch))
    from mergestudio_qt.app import create_app
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.preferences import Preferences
    from mergestudio_qt.style import apply_style

    app = create_app(["screenshots"])
    apply_style(app, dark=False)
    window = MainWindow(Preferences(demo_opened=True, device="cpu", cache_dir=str(scratch / "cache")))
    window.prompt_on_close = False
    window.resize(*size)
    window.show()
    _open_demo(window)
    return app, window


def _run_demo_search(window: object, run_dir: Path) -> None:
    """Start the demo project's search (the Setup tab holds the demo spec) into ``run_dir``
    and wait for it to finish."""
    page = window.page("evolve")  # type: ignore[attr-defined]
    outcome: list[str] = []
    page.search_finished.connect(outcome.append)
    page.setup.run_edit.setText(str(run_dir))
    page.start_search()
    _wait(lambda: bool(outcome), timeout_s=900.0)
    page.tabs.setCurrentIndex(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the docs' window screenshots.")
    parser.add_argument("--pages", help="comma-separated page keys to redo (default: every page; "
                        "the demo search runs only when evolve is among them)")
    wanted = parser.parse_args(argv).pages
    only = set(wanted.split(",")) if wanted else None
    scratch = Path(tempfile.mkdtemp(prefix="screens_"))
    os.environ["MERGESTUDIO_CONFIG_DIR"] = str(scratch / "config")
    os.environ["MERGESTUDIO_DEMO_DIR"] = str(_zoo(scratch))
    from mergestudio_qt.app import create_app, preload_engine
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.preferences import Preferences
    from mergestudio_qt.settings_dialog import SettingsDialog
    from mergestudio_qt.style import apply_style

    app = create_app(["screenshots"])
    preload_engine()
    light_pages = ("models", "recipe", "merge", "inspect", "evolve")
    for dark, size, pages in ((False, (1280, 800), light_pages), (False, (1024, 700), light_pages),
                              (True, (1920, 1080), ("models", "recipe", "merge"))):
        pages = tuple(key for key in pages if only is None or key in only)
        if not pages:
            continue
        apply_style(app, dark=dark)
        window = MainWindow(Preferences(demo_opened=True, cache_dir=str(scratch / "cache")))
        window.prompt_on_close = False
        window.resize(*size)
        window.show()
        _open_demo(window)
        _prepare(window, scratch)
        if "evolve" in pages:
            _run_demo_search(window, scratch / f"run-{size[0]}")
        suffix = "dark-1920" if dark else str(size[0])
        for key in pages:
            window.go_to(key)
            _settle()
            _save(window, f"{key}-{suffix}")
        if not dark and size[0] == 1280 and only is None:
            dialog = SettingsDialog(window.preferences, window)
            dialog.show()
            _settle()
            _save(dialog, "settings-1280")
            dialog.close()
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
