"""The Inspect page: an analysis in the background fills the heatmaps layer by layer, the
pair matrix, histograms and spectra; Cancel stops it; a second run comes from the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mergestudio.io import open_model
from mergestudio_qt.context import Studio
from mergestudio_qt.pages.inspect_page import InspectPage
from mergestudio_qt.preferences import Preferences
from mergestudio_qt.state import StudioState, describe_source

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


def _demo_family() -> list[Path] | None:
    """The demo zoo's base and fine-tunes when it has been built (folders with weights)."""
    if not DEMO.is_dir():
        return None
    folders = sorted(p.parent for p in (DEMO / "models").glob("*/model.safetensors"))
    base = [f for f in folders if "base" in f.name]
    tunes = [f for f in folders if f not in base]
    return [base[0], *tunes[:3]] if base and tunes else None


@pytest.fixture
def page(qtbot, family, tmp_path: Path) -> InspectPage:
    folders = _demo_family() or [family[name] for name in ("base", "ft1", "ft2", "ft3")]
    state = StudioState()
    for folder in folders:
        state.add_model(describe_source(open_model(folder), str(folder), "folder"))
    studio = Studio(state, Preferences(demo_opened=True, cache_dir=str(tmp_path / "cache")))
    widget = InspectPage(studio)
    qtbot.addWidget(widget)
    widget.resize(1200, 700)
    widget.show()
    return widget


def test_analysis_fills_every_view(qtbot, page: InspectPage) -> None:
    layers: list[int] = []
    assert page.analyze_button.isEnabled()
    with qtbot.waitSignal(page.analysis_finished, timeout=60_000) as blocker:
        page.start_analysis()
        assert page.job is not None and page.cancel_button.isEnabled()
        page.job.layer_done.connect(lambda event: layers.append(event.layer))
    assert blocker.args == ["succeeded"]
    report = page.report
    assert layers and layers == sorted(layers)
    grid = page.heatmap.grid()
    assert grid.shape[1] == len(report.layer_sums())
    conflict_row = grid[page.heatmap.groups().index("attention")]
    assert np.all((conflict_row >= 0) & (conflict_row <= 1))
    assert page.progress.value() == 1000 and "Analysed" in page.status.text()
    assert len(page.pairs.labels) == len(report.models) ** 2
    assert page.histograms.curves and page.spectra.choice.count() == len(report.spectra)
    page.metric_choice.setCurrentIndex(1)  # cosine
    assert page.heatmap.metric_key == "cosine"
    # Dragging the density line reports the density it stands for back to the spin box.
    page.histograms.line.setValue(page.histograms.threshold_for(0.5))
    page.histograms.line.sigPositionChangeFinished.emit(page.histograms.line)
    assert page.density.value() == pytest.approx(0.5, abs=0.05)
    assert "press Analyze" in page.status.text()
    page.density.setValue(report.density)
    with qtbot.waitSignal(page.analysis_finished, timeout=30_000):
        page.start_analysis()
    assert page.report.from_cache and "from the cache" in page.status.text()


def test_cancel_stops_the_analysis(qtbot, page: InspectPage, monkeypatch) -> None:
    from mergestudio_qt.pages import inspect_page as inspect

    monkeypatch.setattr(inspect.AnalysisJob, "events", _cancelling_events)
    with qtbot.waitSignal(page.analysis_finished, timeout=30_000) as blocker:
        page.start_analysis()
    assert blocker.args == ["cancelled"]
    assert page.report is None and "cancelled" in page.status.text()
    assert page.analyze_button.isEnabled() and not page.cancel_button.isEnabled()


def _cancelling_events(self, event: object) -> None:
    """The job's event sink, cancelling as soon as the first layer is done."""
    from mergestudio.analysis import LayerAnalyzed
    from mergestudio.events import Progress

    if isinstance(event, LayerAnalyzed):
        self.cancel_token.cancel()
        self.layer_done.emit(event)
    elif isinstance(event, Progress):
        self.progress.emit(event)


def test_empty_state_then_advice_that_writes_the_recipe_density(qtbot, page: InspectPage) -> None:
    # Before Analyze: a sentence that says what to do, not empty axes.
    assert page.views.currentWidget() is page.empty_state
    assert "Analyze" in page.empty_state.text()
    assert not page.advice.isVisibleTo(page)
    page.state.set_method("ties")
    with qtbot.waitSignal(page.analysis_finished, timeout=60_000):
        page.start_analysis()
    assert page.views.currentIndex() == 1
    # Every view explains itself; the histogram legend names the models, outside the plot.
    assert "opposite" in page.metric_note.text()
    page.metric_choice.setCurrentIndex(1)
    assert "aligned" in page.metric_note.text()
    names = [Path(m).name for m in page.report.models]
    assert all(name in page.histograms.legend.text() for name in names)
    assert page.histograms.plot.getPlotItem().legend is None
    assert names[0] in page.histograms.readout.text()
    # The engine's suggestion, and Use in recipe writes it for every model (one undo step).
    suggestion = page.advice.suggestion
    assert suggestion is not None and 0.0 < suggestion.density <= 1.0
    assert page.advice.isVisibleTo(page) and page.advice.use_button.isEnabled()
    assert f"{suggestion.density:.2f}" in page.advice.text.text()
    before = page.state.recipe
    page.advice.use_button.click()
    densities = [m["parameters"]["density"] for m in page.state.recipe["models"]]
    assert densities == [suggestion.density] * len(page.state.recipe["models"])
    assert page.density.value() == pytest.approx(suggestion.density)
    page.state.undo_stack.undo()
    assert page.state.recipe == before
    # A method without a density cannot take one.
    page.state.set_method("task_arithmetic")
    assert not page.advice.use_button.isEnabled()
    assert "no density" in page.advice.use_button.toolTip()


def test_the_page_density_follows_the_recipe(page: InspectPage) -> None:
    from mergestudio_qt.widgets.inspect_advice import recipe_with_density

    page.state.set_method("ties")
    recipe = recipe_with_density(page.state.recipe, page.state.method(), 0.35)
    page.state.set_recipe(recipe, "widgets", "density")
    assert page.density.value() == pytest.approx(0.35)
