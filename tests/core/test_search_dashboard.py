"""What the Evolve page plots, derived Qt-free: best so far, generation bands, fronts,
step lines, hypervolume curves, parallel coordinates and the genome grid; a history
rebuilt from a run folder equals the live one; baselines and full-set re-scoring."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from mergestudio.search import events as ev
from mergestudio.search import start_search
from mergestudio.search.dashboard import (
    GeneBounds,
    ObjectiveAxis,
    TrialHistory,
    axis_range,
    best_so_far,
    best_trial,
    front_2d,
    front_2d_grown,
    generation_bands,
    genome_layout,
    hypervolume_history,
    minimization,
    nice_step,
    non_dominated_mask,
    normalized_genome,
    parallel_coordinates,
    parallel_scale,
    parse_gene,
    step_line,
)
from mergestudio.search.pareto import hypervolume, non_dominated
from mergestudio.search.store import RunFolder, TrialRecord

from .test_search import write_search_fixture, write_spec


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_search_fixture(tmp_path_factory.mktemp("dashboard"))


def _random_points(seed: int, n: int, k: int, grid: int = 6) -> np.ndarray:
    """Points on a coarse grid, so ties and exact duplicates occur."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, grid, size=(n, k)).astype(float)


# ---- fitness vs evaluations ------------------------------------------------------------------


def test_best_so_far_follows_the_direction_and_skips_nan() -> None:
    values = np.array([np.nan, 0.2, 0.1, 0.5, np.nan, 0.4])
    np.testing.assert_array_equal(best_so_far(values, True), [np.nan, 0.2, 0.2, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(best_so_far(values, False), [np.nan, 0.2, 0.1, 0.1, 0.1, 0.1])


def test_generation_bands_match_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    generations = np.repeat(np.arange(5), 7)[:32]
    values = rng.normal(size=32)
    values[3] = np.nan
    bands = generation_bands(generations, values)
    assert list(bands.generation) == [0, 1, 2, 3, 4]
    for i, g in enumerate(bands.generation):
        rows = [r for r in range(32) if generations[r] == g and not math.isnan(values[r])]
        member = values[rows]
        assert bands.count[i] == len(rows)
        assert bands.mean[i] == pytest.approx(member.mean())
        assert bands.std[i] == pytest.approx(member.std())  # population std
        assert bands.x[i] == pytest.approx(np.mean(np.asarray(rows) + 1))


# ---- fronts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("maximize", [(True, True), (False, True), (True, False), (False, False)])
def test_front_2d_equals_non_dominated_sorting(seed: int, maximize: tuple[bool, bool]) -> None:
    points = _random_points(seed, 40, 2)
    points[5] = np.nan  # a failed objective is never on the front
    got = front_2d(points[:, 0], points[:, 1], *maximize)
    valid = [i for i in range(40) if not np.isnan(points[i]).any()]
    minimized = [tuple(minimization(points[i : i + 1], maximize)[0]) for i in valid]
    expected = sorted(valid[j] for j in non_dominated(minimized))
    assert sorted(got.tolist()) == expected
    assert list(points[got, 0]) == sorted(points[got, 0])  # sorted by x for the step line


@pytest.mark.parametrize("maximize", [(True, True), (False, True), (True, False)])
def test_front_2d_grown_trial_by_trial_equals_the_front_of_all(maximize: tuple[bool, bool]) -> None:
    points = _random_points(7, 60, 2)
    points[[3, 31]] = np.nan
    front = front_2d(points[:5, 0], points[:5, 1], *maximize)
    rows = 5
    for size in (6, 7, 12, 20, 21, 40, 60):
        front = front_2d_grown(points[:size, 0], points[:size, 1], *maximize, front, rows)
        rows = size
        expected = front_2d(points[:size, 0], points[:size, 1], *maximize)
        assert sorted(front.tolist()) == sorted(expected.tolist())
        assert list(points[front, 0]) == sorted(points[front, 0])


@pytest.mark.parametrize(("seed", "k"), [(0, 2), (1, 3), (2, 4), (3, 4)])
def test_non_dominated_mask_equals_the_engine(seed: int, k: int) -> None:
    points = _random_points(seed, 300, k)
    expected = non_dominated([tuple(p) for p in points])
    assert np.flatnonzero(non_dominated_mask(points)).tolist() == expected


def test_non_dominated_mask_with_infinite_objectives() -> None:
    """Sums tie at infinity (a broken merge's perplexity): the dominated row still goes."""
    points = np.array([[-0.3, math.inf], [-0.5, math.inf], [0.0, 1.0], [-0.5, math.inf]])
    assert np.flatnonzero(non_dominated_mask(points)).tolist() == non_dominated([tuple(p) for p in points])
    assert non_dominated_mask(points).tolist() == [False, True, True, True]


def test_step_line_is_the_boundary_of_what_the_front_dominates() -> None:
    # Maximise both: front (1, 3), (2, 2), (3, 1) drops from each point to the next's height.
    xs, ys = step_line(np.array([2.0, 1.0, 3.0]), np.array([2.0, 3.0, 1.0]), True, True)
    assert list(zip(xs, ys, strict=True)) == [(1, 3), (1, 2), (2, 2), (2, 1), (3, 1)]
    # Minimise both: front (1, 3), (2, 2), (3, 1) steps right then down.
    xs, ys = step_line(np.array([3.0, 1.0, 2.0]), np.array([1.0, 3.0, 2.0]), False, False)
    assert list(zip(xs, ys, strict=True)) == [(1, 3), (2, 3), (2, 2), (3, 2), (3, 1)]
    assert step_line(np.zeros(0), np.zeros(0), True, True)[0].size == 0


def test_hypervolume_history_matches_the_engines_tracker() -> None:
    from mergestudio.search.front import FrontTracker
    from mergestudio.search.objectives import Objective, Objectives

    objectives = Objectives(
        (
            Objective("a", "a", "exact_match", "maximize", 1.0, None),
            Objective("b", "b", "perplexity", "minimize", 1.0, 9.0),
            Objective("c", "c", "exact_match", "maximize", 1.0, None),
        ),
        (),
        None,
        "maximize",
        None,
    )
    tracker = FrontTracker(objectives, None)
    rng = random.Random(4)
    values = [(rng.random(), rng.uniform(1, 8), rng.random()) for _ in range(40)]
    expected = []
    for number, point in enumerate(values):
        tracker.add(_record(number, {"a": point[0], "b": point[1], "c": point[2]}, point))
        expected.append(tracker.hypervolume)
    points = minimization(np.array(values), [True, False, True])
    got = hypervolume_history(points, [None, 9.0, None])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def _record(number: int, objectives: dict[str, float], study: tuple[float, ...]) -> TrialRecord:
    return TrialRecord(number, "complete", {}, objectives, study, 0, 0.0, 0.0, 0.0, "", "")


# ---- parallel coordinates and the genome grid -------------------------------------------------


def test_parallel_coordinates_put_the_better_end_up() -> None:
    values = np.array([[0.2, 5.0], [0.6, 3.0], [0.4, 4.0]])
    axes = parallel_coordinates(values, [True, False], extra=np.array([[0.8, 2.0]]))
    assert list(axes.low) == [0.2, 5.0] and list(axes.high) == [0.8, 2.0]
    lines = axes.y.reshape(3, 3)
    np.testing.assert_allclose(lines[:, :2], [[0.0, 0.0], [4 / 6, 2 / 3], [2 / 6, 1 / 3]])
    assert np.isnan(lines[:, 2]).all() and np.isnan(axes.x.reshape(3, 3)[:, 2]).all()


def test_parallel_scale_is_the_matrix_of_the_polylines() -> None:
    values = np.array([[0.2, 5.0], [0.6, 3.0], [np.nan, 4.0]])
    scaled, low, high = parallel_scale(values, [True, False])
    axes = parallel_coordinates(values, [True, False])
    np.testing.assert_array_equal(axes.y.reshape(3, 3)[:, :2], scaled)
    assert list(low) == list(axes.low) and list(high) == list(axes.high)


# ---- axis ranges ---------------------------------------------------------------------------


def test_nice_step_is_the_next_1_2_5_step() -> None:
    assert [nice_step(v) for v in (0.015, 0.05, 0.07, 3.0, 100.0, 101.0)] == pytest.approx(
        [0.02, 0.05, 0.1, 5.0, 100.0, 200.0]
    )


def test_axis_range_holds_every_value_and_moves_in_steps() -> None:
    assert axis_range(np.array([0.0, 1.0])) == pytest.approx((-0.05, 1.05))
    assert axis_range([np.nan], []) is None
    assert axis_range([0.5]) == pytest.approx((0.2, 0.8))  # one value: a range around it
    rng = np.random.default_rng(3)
    values = np.cumsum(rng.uniform(0, 0.001, 2000))  # a slowly rising curve, like a hypervolume
    ranges = [axis_range(values[: i + 1], [0.0]) for i in range(100, 2000)]
    assert all(low <= 0.0 and high >= values[i + 100] for i, (low, high) in enumerate(ranges))
    assert len(set(ranges)) < len(ranges) / 20  # in steps, not with every value
    low, high = axis_range(values, [2.0])
    assert low <= 0 and high >= 2.0


def test_genome_layout_reads_like_the_network() -> None:
    assert parse_gene("weight[sort].mlp@1") == ("weight[sort]", "mlp", 1)
    assert parse_gene("weight[m.v2].attention") == ("weight[m.v2]", "attention", None)
    assert parse_gene("lambda") == ("lambda", None, None)
    names = [f"weight[{m}].{lane}" for m in ("reverse", "sort") for lane in ("attention", "mlp", "other")]
    layout = genome_layout([*names, "lambda"])
    assert layout.rows == ("weight[reverse]", "weight[sort]", "lambda")
    assert layout.columns == ("attention", "mlp", "other", "value")
    grid = layout.grid([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.2])
    np.testing.assert_array_equal(grid[1, :3], [0.4, 0.5, 0.6])
    assert grid[2, 3] == 1.2 and np.isnan(grid[0, 3])
    groups = genome_layout(["density@0", "density@1", "weight[a].mlp@0", "weight[a].mlp@1"])
    assert groups.columns == ("mlp 0", "mlp 1", "layers 0", "layers 1")
    genes = [GeneBounds("x", 0.0, 2.0), GeneBounds("y", -1.0, 1.0)]
    np.testing.assert_allclose(normalized_genome(np.array([1.0, 0.5]), genes), [0.5, 0.75])


def test_objective_axis_labels_name_the_metric_and_direction() -> None:
    axis = ObjectiveAxis("reverse", "maximize", "exact_match", "reverse")
    assert axis.label == "reverse: exact-match accuracy ↑"
    assert ObjectiveAxis("general", "minimize", "perplexity", "general").label == "general: perplexity ↓"


# ---- a real run ------------------------------------------------------------------------------


def test_history_from_a_run_equals_the_live_events_and_the_store(fixture_dir: Path, tmp_path: Path) -> None:
    from mergestudio.search.report import summarize
    from mergestudio.search.spec import load_spec

    spec_path = write_spec(fixture_dir, "dash.yml", budget={"evaluations": 6})
    spec = load_spec(spec_path)
    live = TrialHistory.for_spec(spec)

    def sink(event: object) -> None:
        if isinstance(event, ev.TrialFinished) and event.state == "complete":
            live.add(event.number, event.generation, event.objectives, event.study_values, event.genome)
        elif isinstance(event, ev.ParetoFrontChanged):
            live.set_front(event.trials, event.hypervolume)

    start_search(spec, tmp_path / "run", events=sink)
    reopened = TrialHistory.from_run(tmp_path / "run")
    records = [r for r in RunFolder(tmp_path / "run").records() if r.state == "complete"]
    summary = summarize(tmp_path / "run")
    for history in (live, reopened):
        assert history.numbers.tolist() == [r.number for r in records]
        assert history.values.tolist() == [[r.objectives["ta"], r.objectives["tb"]] for r in records]
        assert history.front == frozenset(summary.front)
        assert history.hypervolume[-1] == pytest.approx(summary.hypervolume)
        assert history.genome_of(records[2].number) == records[2].genome
    np.testing.assert_allclose(reopened.hypervolume, live.hypervolume, rtol=1e-12)
    assert reopened.recipes[records[0].number] == records[0].recipe_yaml
    assert [o.label for o in reopened.objectives] == ["ta: perplexity ↓", "tb: perplexity ↓"]
    assert reopened.add(records[0].number, 0, {}, (), {}) is False  # no duplicates


def test_baselines_score_parents_and_default_merges_and_are_cached(
    fixture_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mergestudio.evaluate import evaluate_path
    from mergestudio.search import baselines as bl

    spec_path = write_spec(fixture_dir, "base.yml", budget={"evaluations": 2})
    start_search(spec_path, tmp_path / "run")
    found = bl.run_baselines(tmp_path / "run")
    assert [(b.label, b.kind) for b in found] == [("a", "parent"), ("b", "parent"), ("linear", "merge")]
    report = evaluate_path(
        fixture_dir / "a", [fixture_dir / "ta.jsonl", fixture_dir / "tb.jsonl"], device="cpu"
    )
    assert found[0].objectives == pytest.approx(report.scores, rel=1e-6)
    assert found[0].estimator == "full task sets"
    assert json.loads((tmp_path / "run" / bl.BASELINES_FILE).read_text())["baselines"][2]["label"] == "linear"

    # A second call reads the cache; another estimator is scored afresh.
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("recomputed a cached baseline")

    monkeypatch.setattr(bl, "compute_baselines", refuse)
    assert bl.run_baselines(tmp_path / "run") == found
    spec = RunFolder(tmp_path / "run").load_spec()
    subset = spec.model_copy(
        update={"fitness": spec.fitness.model_copy(update={"estimator": "subset", "items_per_task": 2})}
    )
    assert bl.load_baselines(tmp_path / "run", subset) is None
    assert bl.estimator_label(subset) == "subset: 2 items per task (seed 0)"


def test_baseline_recipes_with_a_base_model() -> None:
    from mergestudio.recipe.model import Recipe
    from mergestudio.search.baselines import baseline_recipes

    recipe = Recipe.from_dict(
        {
            "merge_method": "task_arithmetic",
            "base_model": "/zoo/base",
            "models": [{"model": "/zoo/sort"}, {"model": "/zoo/reverse"}],
        }
    )
    found = baseline_recipes(recipe)
    assert [(label, kind) for label, kind, _ in found] == [
        ("base", "parent"),
        ("sort", "parent"),
        ("reverse", "parent"),
        ("linear", "merge"),
        ("task_arithmetic", "merge"),
        ("ties", "merge"),
    ]
    ties = found[-1][2]
    assert ties["base_model"] == "/zoo/base" and ties["models"][0]["parameters"] == {
        "weight": 1.0,
        "density": 0.5,
    }
    assert found[1][2] == {
        "merge_method": "passthrough",
        "models": [{"model": "/zoo/sort"}],
        "dtype": "float32",
    }


def test_evaluate_full_rescores_a_subset_trial_on_every_item(fixture_dir: Path, tmp_path: Path) -> None:
    from mergestudio.evaluate import evaluate_path
    from mergestudio.search.baselines import evaluate_full, load_full_evaluations
    from mergestudio.search.export import export_trial

    spec_path = write_spec(
        fixture_dir,
        "subset-run.yml",
        budget={"evaluations": 2},
        fitness={"estimator": "subset", "items_per_task": 1, "seed": 0},
    )
    start_search(spec_path, tmp_path / "run")
    full = evaluate_full(tmp_path / "run", 1)
    exported = export_trial(tmp_path / "run", 1, tmp_path / "model", device="cpu")
    report = evaluate_path(
        exported.output, [fixture_dir / "ta.jsonl", fixture_dir / "tb.jsonl"], device="cpu"
    )
    assert full == pytest.approx(report.scores, rel=1e-6)
    subset = RunFolder(tmp_path / "run").records()[1].objectives
    assert subset != pytest.approx(full)  # one item per task is not the full set
    assert load_full_evaluations(tmp_path / "run") == {1: full}


def test_hypervolume_of_history_end_equals_the_exact_front_volume() -> None:
    points = _random_points(9, 60, 3, grid=20)
    curve = hypervolume_history(points, [None, None, None])
    reference = tuple(points.max(axis=0))
    front = [tuple(p) for p in points[non_dominated_mask(points)]]
    assert curve[-1] == pytest.approx(hypervolume(front, reference))


def test_best_trial_weighs_objectives_alike_whatever_their_units() -> None:
    history = TrialHistory(
        [
            ObjectiveAxis("acc", "maximize", "exact_match", "acc"),
            ObjectiveAxis("ppl", "minimize", "perplexity", "ppl"),
        ],
        [GeneBounds("w", 0.0, 1.0)],
        ["maximize", "minimize"],
        2,
    )
    assert best_trial(history) is None
    # Scaled over the run: trial 11 is (0.67, 1.0) -> mean 0.83, trial 12 (1.0, 0.0) -> 0.5.
    for number, acc, ppl in ((10, 0.2, 30.0), (11, 0.6, 12.0), (12, 0.8, 30.0)):
        history.add(number, 0, {"acc": acc, "ppl": ppl}, (acc, ppl), {"w": 0.5})
    assert best_trial(history) == 11
    single = TrialHistory([ObjectiveAxis("ppl", "minimize", "perplexity", "ppl")], [], ["minimize"], 2)
    for number, ppl in ((0, 3.0), (1, 2.0), (2, 2.0)):
        single.add(number, 0, {"ppl": ppl}, (ppl,), {})
    assert best_trial(single) == 1  # ties: the earliest


def test_hypervolume_history_caps_exact_volumes_on_long_runs() -> None:
    points = _random_points(3, 120, 3, grid=50)
    exact = hypervolume_history(points, [None, None, None])
    capped = hypervolume_history(points, [None, None, None], max_exact=10)
    changes = np.flatnonzero(np.diff(exact) != 0).size + 1
    assert changes > 10
    assert capped[-1] == pytest.approx(exact[-1])  # the last move is always computed
    assert np.unique(capped).size <= 11
    computed = np.flatnonzero(np.r_[True, np.diff(capped) != 0])
    np.testing.assert_allclose(capped[computed], exact[computed])
