"""End to end, as a newcomer: start the studio on the demo, press Merge, see the merged
model, run the quick eval next to the parents. Uses the real demo zoo when it is built
(resources/demo), else a miniature zoo built from the same pipeline in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("transformers")

from mergestudio_qt import jobs

pytestmark = pytest.mark.slow
# How long this takes (the studio's promise: under a minute on 2 cores) is measured by
# benchmarks/newcomer_demo.py, not asserted here: a loaded machine must not fail a test.


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mergestudio.demo.paths import default_zoo_dir

    real = default_zoo_dir()
    if (real / "models" / "base" / "config.json").exists():
        return real
    from mergestudio.demo.build import ZooConfig, build_zoo

    out = tmp_path_factory.mktemp("zoo")
    build_zoo(out, ZooConfig.miniature(), log=lambda _line: None, evaluate=False)
    return out


@pytest.fixture
def studio(qtbot, zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MERGESTUDIO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(zoo))
    # A fresh cache: the demo merges into <cache>/merges/demo, and Replace is unticked,
    # so a merge left there by an earlier run would (rightly) ask before replacing it.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from mergestudio_qt.app import open_window
    from mergestudio_qt.main_window import MainWindow

    loaded: list[bool] = []
    original = MainWindow.__init__

    def init(self, *args, **kwargs):  # listen before open_window starts opening the demo
        original(self, *args, **kwargs)
        self.project_loaded.connect(loaded.append)

    monkeypatch.setattr(MainWindow, "__init__", init)
    window = open_window(demo=False)  # the first run opens the demo by itself
    window.prompt_on_close = False
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: bool(loaded), timeout=30_000)
    assert loaded == [True]
    yield window
    window.close()
    qtbot.waitUntil(lambda: not jobs.running_threads(), timeout=10_000)


def test_first_run_opens_the_demo_merges_and_scores(qtbot, studio, zoo: Path) -> None:
    state = studio.state
    assert state.base == str(zoo / "models" / "base")
    assert len(state.recipe["models"]) == len(state.models) - 1
    assert state.preflight is not None and state.preflight.ok
    page = studio.page("merge")
    assert page.chosen_tasks(), "the demo's evaluation tasks are ticked"
    with qtbot.waitSignal(page.merge_finished, timeout=60_000) as merged:
        page.merge_button.click()
    assert merged.args == ["succeeded"]
    assert (page.last_output / "config.json").exists()
    with qtbot.waitSignal(page.eval_finished, timeout=120_000) as evaluated:
        page.eval_button.click()
    assert evaluated.args == [True]
    # merged, Δ base, normalized, then the base and every specialist
    assert page.eval_table.columnCount() == len(state.models) + 3
    assert page.eval_table.rowCount() == len(page.chosen_tasks()) + 1  # the tasks and their mean


def test_studio_command_is_listed() -> None:
    from mergestudio.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["studio", "--demo"])
    assert args.demo and args.project is None
