"""The Inspect page: an analysis in the background fills the heatmaps layer by layer, the
pair matrix, histograms and spectra; Cancel stops it; a second run comes from the cache.
Every number a view shows is checked against the same quantity computed here, with NumPy,
straight from the checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mergestudio.analysis.histogram import histogram_edges
from mergestudio.io import open_model
from mergestudio_qt.context import Studio
from mergestudio_qt.pages.inspect_page import METRICS, InspectPage
from mergestudio_qt.preferences import Preferences
from mergestudio_qt.state import StudioState, describe_source
from safetensors.numpy import load_file

GROUP_WORDS = {"attention": "self_attn.", "mlp": "mlp.", "norm": "layernorm"}


@pytest.fixture
def folders(family: dict[str, Path]) -> list[Path]:
    """Base first, then three fine-tunes (4 layers: every view has several cells)."""
    return [family[name] for name in ("base", "ft1", "ft2", "ft3")]


@pytest.fixture
def page(qtbot, folders: list[Path], tmp_path: Path) -> InspectPage:
    state = StudioState()
    for folder in folders:
        state.add_model(describe_source(open_model(folder), str(folder), "folder"))
    studio = Studio(state, Preferences(demo_opened=True, cache_dir=str(tmp_path / "cache")))
    widget = InspectPage(studio)
    qtbot.addWidget(widget)
    widget.resize(1200, 700)
    widget.show()
    return widget


# ---- the same numbers, computed here from the checkpoints (float64, plain NumPy) -------------


def _task_vectors(folders: list[Path]) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    base = {k: v.astype(np.float64) for k, v in load_file(str(folders[0] / "model.safetensors")).items()}
    tunes = [load_file(str(f / "model.safetensors")) for f in folders[1:]]
    return base, [{k: t[k].astype(np.float64) - base[k] for k in base} for t in tunes]


def _cell_names(base: dict[str, np.ndarray], layer: int, group: str) -> list[str]:
    return sorted(k for k in base if k.startswith(f"model.layers.{layer}.") and GROUP_WORDS[group] in k)


def _mean_pair_cosine(vectors: list[np.ndarray]) -> float:
    pairs = [
        float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        for i, a in enumerate(vectors) for b in vectors[i + 1 :]
    ]
    return float(np.mean(pairs))


def _conflict_rate(taus: list[np.ndarray], names_sizes: list[int], density: float) -> float:
    """TIES trimming per tensor (each task vector keeps its top-density magnitudes), then,
    over entries where two or more survive, the share where the survivors' signs differ."""
    conflicts = contested = 0
    start = 0
    for size in names_sizes:
        kept = []
        for tau in taus:
            piece = tau[start : start + size]
            keep = np.zeros(size, dtype=bool)
            keep[np.argsort(-np.abs(piece), kind="stable")[: int(density * size)]] = True
            kept.append(np.where(keep, np.sign(piece), 0.0))
        signs = np.stack(kept)
        surviving = (signs != 0).sum(0)
        contested += int((surviving >= 2).sum())
        conflicts += int(((signs > 0).any(0) & (signs < 0).any(0)).sum())
        start += size
    return conflicts / contested


def expected_grid(folders: list[Path], metric: str, density: float, groups: list[str]) -> np.ndarray:
    """(groups, layers) of the Inspect heatmap's metric, from the safetensors files."""
    base, taus = _task_vectors(folders)
    layers = 1 + max(int(k.split(".")[2]) for k in base if k.startswith("model.layers."))
    grid = np.full((len(groups), layers), np.nan)
    for row, group in enumerate(groups):
        for layer in range(layers):
            names = _cell_names(base, layer, group)
            flat = [np.concatenate([tau[k].ravel() for k in names]) for tau in taus]
            if metric == "cosine":
                grid[row, layer] = _mean_pair_cosine(flat)
            elif metric == "relative_norm":
                base_norm = np.linalg.norm(np.concatenate([base[k].ravel() for k in names]))
                grid[row, layer] = np.mean([np.linalg.norm(t) / base_norm for t in flat])
            else:
                grid[row, layer] = _conflict_rate(flat, [base[k].size for k in names], density)
    return grid


def _analyze(qtbot, page: InspectPage) -> None:
    with qtbot.waitSignal(page.analysis_finished, timeout=60_000) as blocker:
        page.start_analysis()
    assert blocker.args == ["succeeded"]


def test_analysis_fills_every_view(qtbot, page: InspectPage, folders: list[Path]) -> None:
    layers: list[int] = []
    assert page.analyze_button.isEnabled()
    with qtbot.waitSignal(page.analysis_finished, timeout=60_000) as blocker:
        page.start_analysis()
        assert page.job is not None and page.cancel_button.isEnabled()
        page.job.layer_done.connect(lambda event: layers.append(event.layer))
    assert blocker.args == ["succeeded"]
    report = page.report
    assert layers == [0, 1, 2, 3]
    assert page.progress.value() == 1000 and "Analysed" in page.status.text()
    groups = page.heatmap.groups()
    assert groups == ["attention", "mlp", "norm"]
    # Each metric's heatmap shows that metric, layer by layer in order, for these models.
    for index, metric in enumerate(("conflict", "cosine", "relative_norm")):
        page.metric_choice.setCurrentIndex(index)
        assert page.heatmap.metric_key == metric
        assert METRICS[metric][0] in page.heatmap.plot.getPlotItem().titleLabel.text.replace("<br>", " ")
        expected = expected_grid(folders, metric, report.density, groups)
        np.testing.assert_allclose(page.heatmap.grid(), expected, rtol=1e-5, err_msg=metric)
        image = page.heatmap.image.image
        assert image is not None and image.shape == expected.shape
    # The pair matrix: cosine of whole-model task vectors, one label per pair.
    _, taus = _task_vectors(folders)
    analysed = [t.name for t in report.tensors]
    whole = [np.concatenate([tau[k].ravel() for k in analysed]) for tau in taus]
    cosines = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in whole] for a in whole])
    np.testing.assert_allclose(page.pairs.image.image, cosines, rtol=1e-6)
    texts = [label.textItem.toPlainText() for label in page.pairs.labels]
    assert texts == [f"{value:.2f}" for value in cosines.ravel()]
    # Histograms: per model, the counts of |τ| in each bin of the reported edges.
    edges = np.asarray(histogram_edges())
    for item, tau in zip(page.histograms.items, whole, strict=True):
        counts, _ = np.histogram(np.abs(tau.astype(np.float32)), bins=edges)
        np.testing.assert_array_equal(item.getData()[1], counts)
    # Spectra: σ/σ₁ of the chosen task matrix, per model.
    assert page.spectra.choice.count() == len(report.spectra) > 0
    chosen = report.spectra[0].name
    for item, tau in zip(page.spectra.items, taus, strict=True):
        sigma = np.linalg.svd(tau[chosen], compute_uv=False)
        shown = 10 ** item.getData()[1]  # the plot is in log mode: it holds log₁₀ values
        np.testing.assert_allclose(shown, (sigma / sigma[0])[: shown.size], rtol=1e-4, atol=1e-7)

    # Dragging the density line reports the density it stands for back to the spin box.
    page.histograms.line.setValue(page.histograms.threshold_for(0.5))
    page.histograms.line.sigPositionChangeFinished.emit(page.histograms.line)
    assert page.density.value() == pytest.approx(0.5, abs=0.05)
    assert "press Analyze" in page.status.text()
    # A new analysis at the new density replaces every conflict cell (nothing stale).
    page.metric_choice.setCurrentIndex(0)
    first_density, first_grid = report.density, page.heatmap.grid()
    _analyze(qtbot, page)
    assert page.report.density == page.density.value() != first_density
    fresh = expected_grid(folders, "conflict", page.report.density, groups)
    np.testing.assert_allclose(page.heatmap.grid(), fresh, rtol=1e-5)
    assert not np.allclose(fresh, first_grid, rtol=1e-3)
    # Back to the first density: from the cache, with the first numbers again.
    page.density.setValue(first_density)
    _analyze(qtbot, page)
    assert page.report.from_cache and "from the cache" in page.status.text()
    np.testing.assert_allclose(page.heatmap.grid(), first_grid, rtol=1e-12)


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
