"""Fixtures for the window tests: an isolated config folder, tiny model families, and a
check that no test leaves a worker thread running."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from mergestudio_qt import jobs
from mergestudio_qt.main_thread_gc import collect_on_main_thread

from tests.checkpoints import TinyLlama, write_checkpoint

THREAD_GRACE_MS = 10_000


@pytest.fixture(autouse=True)
def collector_on_gui_thread(qapp) -> Iterator[None]:
    """As in the studio (``create_app``): cyclic garbage, widgets included, is collected
    on the GUI thread, never in a job's worker thread (that deadlocked a test). The
    tests after these run without an event loop, so the automatic collector comes back."""
    collector = collect_on_main_thread(qapp)
    yield
    collector.stop()


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Preferences and window settings go to a temp folder, never the user's."""
    folder = tmp_path / "config"
    monkeypatch.setenv("MERGESTUDIO_CONFIG_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


@pytest.fixture(autouse=True)
def no_thread_left_running(qtbot) -> Iterator[None]:
    """Fail a test that leaves a QThread running (after a grace period to finish)."""
    yield
    try:
        qtbot.waitUntil(lambda: not jobs.running_threads(), timeout=THREAD_GRACE_MS)
    except AssertionError:
        names = [t.objectName() for t in jobs.running_threads()]
        jobs.stop_all()
        pytest.fail(f"worker thread(s) still running after the test: {names}")


@pytest.fixture
def family(tmp_path: Path) -> dict[str, Path]:
    """A base and three fine-tunes with 4 layers (Llama tensor names)."""
    spec = TinyLlama(layers=4)
    root = tmp_path / "models"
    return {name: write_checkpoint(root / name, spec, seed=seed)
            for seed, name in enumerate(("base", "ft1", "ft2", "ft3"))}


@pytest.fixture
def window(qtbot, tmp_path: Path):
    """The main window with an empty project and a temp cache folder."""
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.preferences import Preferences

    preferences = Preferences(demo_opened=True, cache_dir=str(tmp_path / "cache"))
    win = MainWindow(preferences)
    win.prompt_on_close = False
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    yield win
    win.close()


@pytest.fixture
def add_models(qtbot) -> Callable[..., None]:
    """Add model folders through the Models page, waiting for each to open."""

    def add(win, *folders: Path) -> None:
        page = win.page("models")
        for folder in folders:
            with qtbot.waitSignal(page.model_added, timeout=10_000):
                page.add_reference(str(folder))

    return add


@pytest.fixture
def merge_page(window, family, add_models, tmp_path: Path):
    """The Merge page with the base and two fine-tunes, merging into tmp_path/out/merged."""
    add_models(window, family["base"], family["ft1"], family["ft2"])
    window.go_to("merge")
    page = window.page("merge")
    page.out_edit.setText(str(tmp_path / "out" / "merged"))
    page.out_edit.editingFinished.emit()
    return page
