"""Every page of the window, with the demo project open and its views filled, at
1024x700 and 1920x1080: no label, button or combo box whose text is cut without a
tooltip, and no widget cut by its parent (see layout_check.py for the rules). Every tab
of every page is visited, so hidden tabs are checked too."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QTabWidget

from tests.app.layout_check import clipping_problems

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
PAGES = ("models", "recipe", "merge", "moe", "inspect", "evolve")
SIZES = ((1024, 700), (1920, 1080))


def _settle(qtbot) -> None:
    QApplication.processEvents()
    qtbot.wait(30)  # lets layouts that are posted as events run; not a timing assertion
    QApplication.processEvents()


def _every_tab_state(page, qtbot) -> list[str]:
    """The page's problems with each tab of each tab widget shown in turn."""
    problems = clipping_problems(page)
    for tabs in page.findChildren(QTabWidget):
        current = tabs.currentIndex()
        for index in range(tabs.count()):
            tabs.setCurrentIndex(index)
            _settle(qtbot)
            problems += [f"[tab {tabs.tabText(index)}] {p}" for p in clipping_problems(page)]
        tabs.setCurrentIndex(current)
    return sorted(set(problems))


@pytest.fixture
def studio_style():
    """The studio's own style (fonts, paddings, palette), as the window runs with it: a
    title that fits the default style can be cut by the studio's larger one."""
    import pyqtgraph as pg
    from mergestudio_qt.style import apply_style

    app = QApplication.instance()
    saved = (app.style().name(), app.palette(), app.styleSheet(), dict(pg.CONFIG_OPTIONS))
    apply_style(app, dark=False)
    yield
    app.setStyle(saved[0])
    app.setPalette(saved[1])
    app.setStyleSheet(saved[2])
    pg.CONFIG_OPTIONS.update(saved[3])


@pytest.fixture
def demo_window(qtbot, studio_style, tmp_path: Path, monkeypatch):
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.preferences import Preferences

    from benchmarks.evolve_redraw import synthetic_baselines, synthetic_history

    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(DEMO))
    window = MainWindow(Preferences(demo_opened=True, cache_dir=str(tmp_path / "cache")))
    window.prompt_on_close = False
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.project_loaded, timeout=30_000):
        window.open_demo()
    inspect = window.page("inspect")
    with qtbot.waitSignal(inspect.analysis_finished, timeout=60_000):
        inspect.start_analysis()
    evolve = window.page("evolve")
    history, _ = synthetic_history(60)
    evolve.show_history(history, synthetic_baselines())
    evolve.redraw()
    evolve.select_trial(int(history.numbers[39]))
    yield window
    window.close()


@pytest.mark.skipif(not (DEMO / "models" / "base" / "config.json").is_file(), reason="demo zoo not built")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_page_clips_its_text_or_widgets(qtbot, demo_window, size: tuple[int, int]) -> None:
    window = demo_window
    window.resize(*size)
    _settle(qtbot)
    assert (window.width(), window.height()) == size, f"the window cannot be {size}: minimum {window.minimumSize()}"
    problems: list[str] = []
    for key in PAGES:
        window.go_to(key)
        _settle(qtbot)
        problems += [f"{key}: {p}" for p in _every_tab_state(window.page(key), qtbot)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_cut_text_and_cut_widgets(qtbot) -> None:
    """The rules themselves: each kind of clipping is found, and a tooltip or wrapping
    that shows the whole text is accepted."""
    from PySide6.QtWidgets import QLabel, QPushButton, QWidget

    root = QWidget()
    qtbot.addWidget(root)
    root.resize(300, 200)
    cut = QLabel("a label far too long for the eighty pixels it is given", root)
    cut.setGeometry(0, 0, 80, 20)
    explained = QLabel("another label far too long for its eighty pixels", root)
    explained.setGeometry(0, 30, 80, 20)
    explained.setToolTip("another label far too long for its eighty pixels")
    wrapped = QLabel("a long text that wraps onto several lines " * 4, root)
    wrapped.setWordWrap(True)
    wrapped.setGeometry(0, 60, 120, 18)  # room for one line only
    button = QPushButton("a button with a long caption", root)
    button.setGeometry(0, 90, 60, 24)
    sticking_out = QWidget(root)
    sticking_out.setGeometry(250, 150, 100, 100)
    root.show()
    problems = "\n".join(clipping_problems(root))
    assert "'a label far too long" in problems
    assert "another label" not in problems
    assert "cut at the bottom" in problems
    assert "button needs" in problems
    assert "cut by its parent QWidget (300x200)" in problems
