"""The Evolve page: a short real search on a demo zoo (the miniature one, built in
seconds by the same pipeline as the shipped zoo), set up from the studio's models and
recipe; what the plots and the table show is what the run store holds; pause, resume,
closing mid-run, reopen and resume; selecting, exporting, opening in the Recipe editor and
re-scoring a trial on the full set. On synthetic trials: a redraw that keeps what did not
change draws the same pixels as one that draws everything afresh, and the views follow
the data until the user pans or zooms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mergestudio.demo import paths
from mergestudio.demo.build import ZooConfig, build_zoo
from mergestudio.io import open_model
from mergestudio.search.baselines import BASELINES_FILE, load_full_evaluations
from mergestudio.search.dashboard import (
    GeneBounds,
    ObjectiveAxis,
    TrialHistory,
    generation_bands,
    parallel_scale,
)
from mergestudio.search.pareto import non_dominated, to_minimization
from mergestudio.search.report import summarize
from mergestudio.search.store import RunFolder
from mergestudio_qt.context import Studio
from mergestudio_qt.pages.evolve_page import EvolvePage
from mergestudio_qt.preferences import Preferences
from mergestudio_qt.state import StudioState, describe_source
from mergestudio_qt.widgets.evolve_items import EVALUATION_BINS
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QGraphicsItem

SEARCH_TIMEOUT_MS = 90_000
IRT_TIMEOUT_MS = 300_000  # seven baselines scored on every item first, in a child process


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(out, ZooConfig.miniature(), log=lambda _line: None, evaluate=False)
    return out


@pytest.fixture
def studio(zoo: Path, tmp_path: Path) -> Studio:
    """The zoo's base and specialists opened in the studio (the default task-arithmetic
    recipe over them), and the skills' and general text's evaluation tasks ticked."""
    state = StudioState()
    folders = [paths.models_dir(zoo) / name for name in ("base", "last", "max", "cipher")]
    for folder in folders:
        state.add_model(describe_source(open_model(folder), str(folder), "folder"))
    state.set_eval_tasks(
        [str(paths.tasks_dir(zoo) / f"{t}.dev.jsonl") for t in ("last", "max", "general")]
    )
    visited: list[str] = []
    studio = Studio(
        state, Preferences(demo_opened=True, cache_dir=str(tmp_path / "cache")), go_to=visited.append
    )
    studio.visited = visited  # type: ignore[attr-defined]
    return studio


def _page(qtbot, studio: Studio) -> EvolvePage:
    page = EvolvePage(studio)
    qtbot.addWidget(page)
    page.resize(1280, 800)
    page.show()
    return page


def _set_up(page: EvolvePage, run: Path, evaluations: int) -> None:
    """A tiny search: 3 objectives, weights per attention/MLP lane, NSGA-II, population 2,
    a 5-item subset estimator (the miniature zoo's splits have 8 items)."""
    setup = page.setup
    assert [Path(t).name for t in setup.task_files()] == [
        "last.dev.jsonl",
        "max.dev.jsonl",
        "general.dev.jsonl",
    ]
    genome_lanes = setup.genome.cellWidget(0, 4)
    genome_lanes.setCurrentIndex(2)  # attention · MLP
    setup.genome.cellWidget(0, 2).setValue(1.0)  # weight bounds 0 – 1
    setup.population.setValue(2)
    setup.evaluations.setValue(evaluations)
    setup.estimator.setCurrentIndex(setup.estimator.findData("subset"))
    setup.items.setValue(5)
    setup.batch.setValue(16)
    setup.run_edit.setText(str(run))


def _complete(run: Path) -> list:
    return [r for r in RunFolder(run).records() if r.state == "complete"]


def test_setup_check_shows_the_time_to_merge_a_candidate(qtbot, studio: Studio, tmp_path: Path) -> None:
    page = _page(qtbot, studio)
    _set_up(page, tmp_path / "run", evaluations=4)
    assert page.check_setup() is not None
    qtbot.waitUntil(lambda: "merge per candidate ≈ " in page.setup.check_label.text(), timeout=30_000)
    assert "write" not in page.setup.check_label.text()  # a candidate is merged in memory
    qtbot.waitUntil(lambda: page.time_job is None, timeout=10_000)


def test_search_plots_what_the_store_holds_and_pauses(
    qtbot, studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _page(qtbot, studio)
    run = tmp_path / "run"
    _set_up(page, run, evaluations=4)
    assert page.check_setup() is not None, page.setup.check_label.text()

    # Pause as soon as the first trial is in; the search holds after the trial running then.
    page.trial_added.connect(lambda _n: page.pause() if page.engine_state == "running" else None)
    with qtbot.waitSignal(
        page.search_state, timeout=SEARCH_TIMEOUT_MS, check_params_cb=lambda s: s == "paused"
    ):
        page.start_search()
        assert page.search_job is not None and not page.start_button.isEnabled()
    assert page.resume_button.isEnabled() and not page.pause_button.isEnabled()
    held = len(_complete(run))
    assert 1 <= held < 4 and len(page.history) == held  # the page has every stored trial
    assert page.baselines and (run / BASELINES_FILE).is_file()
    with qtbot.waitSignal(page.search_finished, timeout=SEARCH_TIMEOUT_MS) as finished:
        page.trial_added.disconnect()
        page.resume()
    assert finished.args == ["finished"]
    assert page.progress.format() == "4 / 4 trials"

    # ---- the plots and the table show the store ---------------------------------------
    records = _complete(run)
    summary = summarize(run)
    history = page.history
    names = [o.name for o in history.objectives]
    assert names == ["last", "max", "general"]
    assert history.numbers.tolist() == [r.number for r in records]
    stored = np.array([[r.objectives[n] for n in names] for r in records])
    x, y, codes = page.dashboard.fitness_plot.cloud.points()
    np.testing.assert_array_equal(x, np.arange(1, 5))
    np.testing.assert_array_equal(y, stored[:, 0])
    assert history.front == frozenset(summary.front)
    on_front = [r.number in summary.front for r in records]
    assert (codes == 1).tolist() == on_front
    bands = generation_bands(history.generations, stored[:, 0])
    np.testing.assert_allclose(
        np.column_stack(page.dashboard.fitness_plot.band.band()),
        np.column_stack([bands.x, bands.mean - bands.std, bands.mean + bands.std]),
    )
    maximize = [o.maximize for o in history.objectives]
    ys, faded = page.dashboard.parallel_plot.all_lines.lines()
    np.testing.assert_allclose(
        ys,
        parallel_scale(
            stored, maximize, np.array([[b.objectives[n] for n in names] for b in page.baselines])
        )[0],
    )
    assert (~faded).tolist() == on_front  # the others in colour:
    _, front_ys = page.dashboard.parallel_plot.front_lines.getData()
    np.testing.assert_allclose(front_ys.reshape(-1, 4)[:, :3], ys[~faded])
    page.dashboard.pareto_plot.y_choice.setCurrentIndex(2)  # last vs general perplexity
    x, y, codes = page.dashboard.pareto_plot.cloud.points()
    np.testing.assert_array_equal(np.column_stack([x, y]), stored[:, [0, 2]])
    assert (codes >= EVALUATION_BINS).tolist() == on_front
    pair = [
        to_minimization((r.objectives["last"], r.objectives["general"]), (True, False)) for r in records
    ]
    assert sorted(page.dashboard.pareto_plot.front_indices.tolist()) == non_dominated(pair)
    assert page.dashboard.pareto_plot.plot_item.getAxis("left").labelText == "general: perplexity ↓"
    _, hv = page.dashboard.hypervolume_plot.curve.getData()
    assert hv[-1] == pytest.approx(summary.hypervolume)
    assert page.inspector.table_model.rowCount() == 4
    for row, record in enumerate(records):
        cells = [page.inspector.table_model.index(row, c).data() for c in range(page.inspector.table_model.columnCount())]
        assert cells[0] == str(record.number)
        assert cells[1:4] == [f"{record.objectives[n]:.3g}" for n in names]
        assert cells[5] == ("✓" if record.number in summary.front else "")
    # The mean of the accuracy-like objectives (not the perplexity), ▲ where it beats the base.
    base = page.baselines[0]
    assert page.references.base == base.objectives  # the recipe's base_model, found among the parents
    base_mean = (base.objectives["last"] + base.objectives["max"]) / 2
    for row, record in enumerate(records):
        mean = (record.objectives["last"] + record.objectives["max"]) / 2
        text = page.inspector.table_model.index(row, 4).data()
        assert text.startswith(f"{mean:.3g}") and text.endswith("▲") == (mean > base_mean)
    assert page.inspector.table_model.headerData(4, Qt.Orientation.Horizontal) == "mean"
    # Baselines and trials say how they stand: normalized accuracy against the specialists.
    assert "Baselines" in page.inspector.trial_summary.text()
    # (The miniature zoo's models score 0, so no specialist ratio is defined here; the
    # arithmetic is tested in tests/core/test_search_standing.py.)
    assert "base (base)" in page.inspector.trial_summary.text()
    assert "over the base" in page.describe_trial(records[0].number)
    # Baselines: every parent and default merge, scored on the run's subset.
    labels = [b.label for b in page.baselines]
    assert labels == ["base", "last", "max", "cipher", "linear", "task_arithmetic", "ties"]
    assert page.baselines[0].estimator == "subset: 5 items per task (seed 0)"
    cached = json.loads((run / BASELINES_FILE).read_text())["baselines"]
    assert [b["objectives"] for b in cached] == [b.objectives for b in page.baselines]
    px, _ = page.dashboard.pareto_plot.parents.getData()
    assert len(px) == 4

    # ---- selecting a trial -------------------------------------------------------------
    chosen = records[2]
    number = page.dashboard.fitness_plot.pick(3.0, chosen.objectives["last"])  # evaluation 3
    assert number == chosen.number
    assert "last" in page.dashboard.fitness_plot.tooltip_at(3.0, chosen.objectives["last"])
    page.dashboard.fitness_plot.trial_clicked.emit(number)  # what a click sends
    assert page.selected == chosen.number
    current = page.inspector.table_proxy.mapToSource(page.inspector.table.currentIndex()).row()
    assert page.inspector.table_model.number_at(current) == chosen.number
    assert page.inspector.recipe_view.toPlainText() == chosen.recipe_yaml  # rebuilt from the genome == stored
    rx, ry = page.dashboard.pareto_plot.ring.getData()
    assert (rx[0], ry[0]) == (chosen.objectives["last"], chosen.objectives["general"])
    genes = [g.name for g in history.genes]
    grid = page.inspector.genome_view.values
    assert grid.shape == (3, 2) and np.nansum(grid) == pytest.approx(sum(chosen.genome[g] for g in genes))
    # Selecting a row in the table selects the trial everywhere.
    other = page.inspector.table_proxy.mapFromSource(page.inspector.table_model.index(0, 0))
    page.inspector.table.setCurrentIndex(other)
    assert page.selected == records[0].number
    _, selected_line = page.dashboard.parallel_plot.selected_line.getData()
    assert len(selected_line) == 3

    # ---- acting on it ------------------------------------------------------------------
    # Export asks where (starting at the run's exports/trial-N) and links the full path.
    asked: list[str] = []
    chosen_folder = tmp_path / "chosen" / "my-merge"

    def ask(_parent, _title, start, _filter):  # QFileDialog.getSaveFileName's arguments
        asked.append(start)
        return str(chosen_folder), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", ask)
    with qtbot.waitSignal(page.export_finished, timeout=SEARCH_TIMEOUT_MS) as exported:
        page.inspector.export_button.click()
    assert asked == [str(run / "exports" / f"trial-{records[0].number:05d}")]
    out = Path(exported.args[0])
    assert out == chosen_folder
    link = page.inspector.export_result.text()
    assert f"Trial {records[0].number}" in link and str(out.resolve()) in link and out.resolve().as_uri() in link
    assert page.inspector.export_result.isVisibleTo(page)
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert json.loads((out / "search_trial.json").read_text())["trial"] == records[0].number

    page.open_in_recipe_editor()
    from mergestudio.recipe.model import Recipe

    assert studio.state.recipe == Recipe.from_yaml(records[0].recipe_yaml).to_dict()
    assert studio.visited == ["recipe"]  # type: ignore[attr-defined]

    assert page.inspector.full_button.isEnabled()
    with qtbot.waitSignal(page.full_eval_finished, timeout=SEARCH_TIMEOUT_MS) as full:
        page.evaluate_full()
    assert full.args == [True]
    assert load_full_evaluations(run) == {records[0].number: page.full_evaluations[records[0].number]}
    assert set(page.full_evaluations[records[0].number]) == set(names)
    assert "full set" in page.describe_trial(records[0].number)


def test_closing_mid_run_then_reopen_and_resume(qtbot, studio: Studio, tmp_path: Path) -> None:
    """The window closing mid-run cancels the trial in flight (``cancel_all``, what
    MainWindow.closeEvent calls); a fresh page reopens the folder with everything so
    far, baselines from the cache, and resumes to the budget, re-running the cut trial."""
    page = _page(qtbot, studio)
    run = tmp_path / "run"
    _set_up(page, run, evaluations=3)
    page.trial_added.connect(lambda _n: page.cancel_all())
    with qtbot.waitSignal(page.search_finished, timeout=SEARCH_TIMEOUT_MS) as finished:
        page.start_search()
    assert finished.args == ["cancelled"]
    before = _complete(run)
    assert 1 <= len(before) < 3

    again = _page(qtbot, studio)
    with qtbot.waitSignal(again.run_opened, timeout=SEARCH_TIMEOUT_MS) as opened:
        again.open_run(run)
    assert opened.args == [True]
    assert again.history.numbers.tolist() == [r.number for r in before]
    assert [b.label for b in again.baselines] == [b.label for b in page.baselines]  # from baselines.json
    assert again.setup.population.value() == 2 and again.resume_button.isEnabled()
    x, _, _ = again.dashboard.fitness_plot.cloud.points()
    assert len(x) == len(before)
    with qtbot.waitSignal(again.search_finished, timeout=SEARCH_TIMEOUT_MS) as resumed:
        again.resume()
    assert resumed.args == ["finished"]
    after = _complete(run)
    assert len(after) == 3 and [r.number for r in after][: len(before)] == [r.number for r in before]
    cut = [r for r in RunFolder(run).records() if r.state == "interrupted"]
    assert all(c.genome in [r.genome for r in after] for c in cut)  # the cut trial ran again
    assert again.history.numbers.tolist() == [r.number for r in after]
    assert again.history.front == frozenset(summarize(run).front)
    np.testing.assert_allclose(again.history.hypervolume[-1], summarize(run).hypervolume)


def test_stop_while_scoring_baselines_ends_before_the_first_trial(
    qtbot, studio: Studio, tmp_path: Path
) -> None:
    """Stop pressed while the baselines are scored (before any trial): the worker ends
    there, and no trial runs."""
    page = _page(qtbot, studio)
    run = tmp_path / "run"
    _set_up(page, run, evaluations=4)
    trials: list[int] = []
    page.trial_added.connect(trials.append)
    with qtbot.waitSignal(page.search_finished, timeout=SEARCH_TIMEOUT_MS) as finished:
        page.start_search()
        page.stop()
    assert finished.args == ["cancelled"]
    assert trials == [] and not RunFolder(run).exists()  # no run was started
    assert page.start_button.isEnabled()


# ---- redrawing many trials ----------------------------------------------------------------


def _synthetic_history(trials: int, seed: int = 0) -> tuple[TrialHistory, np.random.Generator]:
    """Three accuracies that rise with the generations and trade off, 6 genes."""
    history = TrialHistory(
        [ObjectiveAxis(name, "maximize", "exact_match", name) for name in ("a", "b", "c")],
        [GeneBounds(f"weight[m{i}].{lane}", 0.0, 1.0) for i in range(3) for lane in ("attention", "mlp")],
        ["maximize"] * 3,
        8,
    )
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        _add_trial(history, rng)
    history.recompute_front(hypervolume=False)
    history.set_hypervolume_curve(np.linspace(0.0, 0.2, trials))
    return history, rng


def _add_trial(history: TrialHistory, rng: np.random.Generator) -> None:
    number = len(history)
    level = 0.2 + 0.6 * (1 - np.exp(-number / 400))
    values = np.clip(level * (0.5 + 1.5 * rng.dirichlet(np.ones(3))) + rng.normal(0, 0.04, 3), 0, 1)
    objectives = dict(zip("abc", map(float, values), strict=True))
    genome = {g.name: float(rng.uniform()) for g in history.genes}
    history.add(number, number // history.population_size, objectives, tuple(objectives.values()), genome)


def _synthetic_page(
    qtbot, studio: Studio, trials: int
) -> tuple[EvolvePage, TrialHistory, np.random.Generator]:
    page = _page(qtbot, studio)
    history, rng = _synthetic_history(trials)
    page.show_history(history)
    page.tabs.setCurrentIndex(0)
    page.redraw()
    page.select_trial(int(history.numbers[10]))
    page.tabs.currentWidget().grab()
    return page, history, rng


def test_a_redraw_that_keeps_renderings_draws_what_a_fresh_one_draws(qtbot, studio: Studio) -> None:
    """Trials added one at a time, the front recomputed each time (so trials leave it):
    the fitness and parallel plots kept their trials off the front as images and added
    to them, with the same pixels as when everything is drawn from scratch."""
    page, history, rng = _synthetic_page(qtbot, studio, 610)  # x stays 0 – 650
    layers = [page.dashboard.fitness_plot.cloud.layer, page.dashboard.parallel_plot.all_lines.layer]
    renders = [layer.full_renders for layer in layers]
    for _ in range(12):
        _add_trial(history, rng)
        history.recompute_front(hypervolume=False)
        page.redraw()
        page.tabs.currentWidget().grab()
    assert [layer.full_renders for layer in layers] == renders  # only added to
    header = page.inspector.table.horizontalHeader()  # sized without measuring every row
    last = page.inspector.table_model.columnCount() - 1
    assert header.sectionSize(0) >= page.inspector.table.sizeHintForColumn(0)
    assert header.sectionSize(last) >= page.inspector.table.sizeHintForColumn(last)
    _, faded = page.dashboard.parallel_plot.all_lines.lines()
    assert faded.tolist() == (~history.front_mask()).tolist()
    kept = [plot.plot.grab().toImage() for plot in (page.dashboard.fitness_plot, page.dashboard.parallel_plot)]
    for plot in (page.dashboard.fitness_plot, page.dashboard.parallel_plot):
        for item in plot.plot.scene().items():
            item.setCacheMode(QGraphicsItem.CacheMode.NoCache)
    for layer in layers:
        layer.clear()
    fresh = [plot.plot.grab().toImage() for plot in (page.dashboard.fitness_plot, page.dashboard.parallel_plot)]
    assert [layer.full_renders for layer in layers] == [r + 1 for r in renders]
    for kept_image, fresh_image in zip(kept, fresh, strict=True):
        # The same pixels, up to rounding in blending: a cached rendering composed onto the
        # plot can differ from drawing directly by one level in a channel, here and there.
        difference = np.abs(_pixels(kept_image).astype(np.int16) - _pixels(fresh_image).astype(np.int16))
        assert difference.max() <= 2 and np.count_nonzero(difference) <= 8


def _pixels(image) -> np.ndarray:
    """(height, width, 4) uint8 of a QImage."""
    image = image.convertToFormat(image.Format.Format_ARGB32)
    return np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.width(), 4).copy()


def test_views_follow_the_data_until_zoomed(qtbot, studio: Studio) -> None:
    page, history, rng = _synthetic_page(qtbot, studio, 310)  # x: 0 – 350
    plot = page.dashboard.fitness_plot
    box = plot.plot_item.getViewBox()
    (x0, x1), (y0, y1) = box.viewRange()
    assert (
        x0 == 0
        and x1 >= 310
        and y0 <= np.nanmin(history.values[:, 0])
        and y1 >= np.nanmax(history.values[:, 0])
    )
    before = box.viewRange()
    _add_trial(history, rng)
    page.redraw()
    assert box.viewRange() == before  # a step holds many trials
    box.setRange(xRange=(10, 20), yRange=(0.2, 0.3), padding=0)  # what a drag or the wheel does,
    box.sigRangeChangedManually.emit([True, True])  # and then says
    for _ in range(120):
        _add_trial(history, rng)
    page.redraw()
    assert box.viewRange() == [[10.0, 20.0], [0.2, 0.3]]
    plot.plot_item.autoBtn.clicked.emit(plot.plot_item.autoBtn)  # "A": follow again
    (x0, x1), _ = box.viewRange()
    assert x0 == 0 and x1 >= len(history) and not any(box.autoRangeEnabled())



def test_ticks_redraw_one_part_each_in_turn_until_all_are_current(qtbot, studio: Studio) -> None:
    """While trials land, each tick redraws one plot (or the table with the genome), so
    no turn of the event loop repaints the whole dashboard; after one tick per part every
    part shows the newest trial, and the timer stops when nothing is out of date."""
    page, history, rng = _synthetic_page(qtbot, studio, 40)
    page._redraw_timer.stop()
    calls: list[int] = []
    page._parts = [
        (lambda i=i, draw=draw: (calls.append(i), draw())[-1]) for i, draw in enumerate(page._parts)
    ]
    _add_trial(history, rng)
    page._mark_dirty()
    page._tick()
    assert len(calls) == 1 and page.inspector.table_model.rowCount() == 40  # one part; the table waits
    _add_trial(history, rng)  # a trial lands mid-round: every part is out of date again
    page._mark_dirty()
    for _ in range(len(page._parts)):
        page._tick()
    assert sorted(calls[1:]) == list(range(len(page._parts)))  # each part once, in turn
    assert calls[1] == (calls[0] + 1) % len(page._parts)  # the round goes on, not back to 0
    assert page.inspector.table_model.rowCount() == len(history) == 42
    assert len(page.dashboard.fitness_plot.cloud._x) == 42
    assert page._redraw_timer.isActive()
    page._tick()  # nothing out of date: the timer stops
    assert not page._redraw_timer.isActive() and len(calls) == 1 + len(page._parts)


DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.mark.skipif(not (DEMO / "models" / "base" / "config.json").is_file(), reason="demo zoo not built")
def test_on_the_demo_project_start_runs_the_readme_search(qtbot, window, monkeypatch) -> None:
    from mergestudio.search.spec import load_spec
    from mergestudio_qt.pages.evolve_page import DEMO_SPEC_SOURCE

    monkeypatch.setenv("MERGESTUDIO_DEMO_DIR", str(DEMO))
    with qtbot.waitSignal(window.project_loaded, timeout=30_000):
        window.open_demo()
    page = window.page("evolve")
    assert page.setup.spec_source == DEMO_SPEC_SOURCE
    readme = load_spec(DEMO / "search.yml")
    spec = page.check_setup()
    assert spec is not None, page.setup.check_label.text()
    assert spec.algorithm == readme.algorithm and spec.budget == readme.budget
    assert spec.genome == readme.genome and spec.fitness == readme.fitness
    assert [Path(o.task).name for o in spec.objectives] == [Path(o.task).name for o in readme.objectives]
    assert spec.recipe == readme.recipe
    # Start launches exactly that search (captured before any process starts).
    launched: list = []
    monkeypatch.setattr(page, "_launch", launched.append)
    page.start_search()
    assert len(launched) == 1 and launched[0].process.request.spec == spec
    # "Load spec…" opens in the demo folder.
    opened: list[str] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda _p, _t, folder, _f: (opened.append(folder), ("", ""))[1])
    page.setup.load_spec_button.click()
    assert opened == [str(DEMO)]


def test_parallel_axis_names_shorten_to_distinct_prefixes_not_ellipses() -> None:
    from mergestudio_qt.widgets.evolve_parallel import axis_names

    def width(text: str) -> int:
        return 7 * len(text)  # a fixed-pitch font of 7 px per character

    names = ["reverse", "cipher", "sort", "double", "sorted_pairs"]
    assert axis_names(names, 100, width) == names  # room enough: whole names
    # 35 px is 5 characters: each name cut to 5, never below what tells it apart.
    assert axis_names(names, 35, width) == ["rever", "ciphe", "sort", "doubl", "sorte"]
    # Too narrow for even that: the distinct prefix wins over the room ("sort" vs "sorted_pairs").
    assert axis_names(names, 7, width) == ["rev", "cip", "sort", "dou", "sorte"]
    assert all("…" not in n for n in axis_names(names, 7, width))


def test_an_irt_run_shows_its_estimator_cost_and_estimates_beside_the_full_split(
    qtbot, studio: Studio, zoo: Path, tmp_path: Path
) -> None:
    """An IRT run set up in the page: reopened, every trial says which estimator scored it
    and how many items a candidate cost; a trial re-scored in full shows its estimate
    beside the full dev split (what was estimated) and the held-out test split."""
    page = _page(qtbot, studio)
    run = tmp_path / "run"
    _set_up(page, run, evaluations=2)
    # Right/wrong tasks only (IRT has nothing to fit on perplexity), each with a test file.
    page.setup.set_tasks([str(paths.tasks_dir(zoo) / f"{t}.test.jsonl") for t in ("last", "max")])
    page.setup.estimator.setCurrentIndex(page.setup.estimator.findData("irt"))
    page.setup.items.setValue(3)
    spec = page.setup.build_spec()
    assert spec.fitness.estimator == "irt" and spec.fitness.anchors_per_task == 3
    assert all(o.test for o in spec.objectives)
    with qtbot.waitSignal(page.search_finished, timeout=IRT_TIMEOUT_MS) as finished:
        page.start_search()
    assert finished.args == ["finished"]

    again = _page(qtbot, studio)
    with qtbot.waitSignal(again.run_opened, timeout=IRT_TIMEOUT_MS):
        again.open_run(run)
    number = _complete(run)[0].number
    text = again.describe_trial(number)
    # The default adaptive round: 2 fixed anchors and 1 item chosen per candidate, per task.
    assert "fitness: IRT gp-irt, graded scores, 2 + 1 adaptive items per task (6 items per candidate, 7 calibration models)" in text
    again.select_trial(number)
    assert again.inspector.full_button.isEnabled()
    with qtbot.waitSignal(again.full_eval_finished, timeout=IRT_TIMEOUT_MS) as full:
        again.evaluate_full()
    assert full.args == [True]
    text = again.describe_trial(number)
    assert "last: estimate " in text and "full dev split" in text and "full set" in text
    assert (run / "full_dev_eval.json").is_file()
