"""The search engine on tiny bigram models: spec validation, the genome, Pareto fronts and
hypervolume, determinism, events, pause/stop/resume, and export."""

from __future__ import annotations

import itertools
import math
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from mergestudio.search import SearchControl, SpecError, load_spec, resume_search, start_search
from mergestudio.search import events as ev
from mergestudio.search.pareto import hypervolume, non_dominated
from mergestudio.search.store import RunFolder

from .evalfixtures import write_bigram_model


def write_search_fixture(root: Path) -> Path:
    """Two bigram models that continue "q" with "abc" and "xyz", and two perplexity tasks
    that each prefer one of them: merging them is a smooth two-objective trade-off.
    Returns the folder; ``write_spec`` puts specs in it."""
    root.mkdir(parents=True, exist_ok=True)
    write_bigram_model(root / "a", {"<s>": "q", "q": "a", "a": "b", "b": "c", "c": "</s>"})
    write_bigram_model(root / "b", {"<s>": "q", "q": "x", "x": "y", "y": "z", "z": "</s>"})
    (root / "ta.jsonl").write_text('{"text": "qabc"}\n{"text": "qab"}\n{"text": "qa"}\n')
    (root / "tb.jsonl").write_text('{"text": "qxyz"}\n{"text": "qxy"}\n{"text": "qx"}\n')
    (root / "ga.jsonl").write_text('{"prompt": "q", "target": "abc"}\n')
    return root


def lengthen_tasks(root: Path, items: int) -> None:
    """Replace the fixture's two perplexity tasks with ``items`` texts each (of 1-5 copies
    of the model's word), so one candidate takes long enough to be killed, cancelled or
    watched in the middle of its evaluation."""
    for name, word in (("ta", "abc"), ("tb", "xyz")):
        (root / f"{name}.jsonl").write_text("".join(f'{{"text": "q{word * (1 + i % 5)}"}}\n' for i in range(items)))


def spec_dict(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "recipe": {"merge_method": "linear", "models": [{"model": "a"}, {"model": "b"}]},
        "genome": [{"param": "weight", "low": 0.0, "high": 1.0}],
        "objectives": [{"task": "ta.jsonl"}, {"task": "tb.jsonl"}],
        "algorithm": {"name": "nsga2", "population_size": 4, "seed": 3},
        "budget": {"evaluations": 8},
        "evaluation": {"batch_size": 8},
    }
    spec.update(overrides)
    return spec


def write_spec(root: Path, name: str = "spec.yml", **overrides: Any) -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(spec_dict(**overrides), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_search_fixture(tmp_path_factory.mktemp("search"))


def _complete(run: Path) -> list[tuple[dict[str, float], dict[str, float]]]:
    return [(r.genome, r.objectives) for r in RunFolder(run).records() if r.state == "complete"]


# ---- spec validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"genome": [{"param": "weight", "lo": 0, "high": 1}]}, r"unknown key 'genome\[0\]\.lo'"),
        (
            {"genome": [{"param": "weight", "low": 1, "high": 0}]},
            r"genome\[0\].*low \(1.0\) must be below high",
        ),
        (
            {"genome": [{"param": "density", "low": 0, "high": 1}]},
            r"genome\[0\].param: 'density' is not a parameter",
        ),
        ({"genome": [{"param": "normalize", "low": 0, "high": 1}]}, r"genome\[0\].param: .*only float"),
        (
            {"genome": [{"param": "weight", "low": 0, "high": 1, "models": ["c"]}]},
            r"genome\[0\].models: 'c' is not one of the recipe's models",
        ),
        (
            {"genome": [{"param": "weight", "low": 0, "high": 1, "lanes": ["mlp", "mlp"]}]},
            r"genome\[0\]: lanes must list",
        ),
        ({"objectives": [{"task": "nope.jsonl"}]}, r"objectives\[0\].task: no such task file"),
        (
            {"objectives": [{"task": "ta.jsonl", "metric": "acc"}]},
            r"objectives\[0\].metric: a perplexity task",
        ),
        ({"objectives": [{"task": "ta.jsonl", "metric": "bleu"}]}, r"objectives\[0\].metric: unknown metric"),
        ({"objectives": [{"task": "ta.jsonl"}, {"task": "ta.jsonl"}]}, "two objectives are named 'ta'"),
        ({"algorithm": {"name": "cmaes"}}, "algorithm.name: cmaes optimises one objective"),
        ({"algorithm": {"name": "pso"}}, r"algorithm.name: .*'cmaes', 'nsga2', 'tpe' or 'random'"),
        ({"algorithm": {"name": "tpe", "population_size": 1}}, "algorithm.population_size"),
        (
            {"algorithm": {"name": "cmaes", "population_size": 3}, "score": {}},
            "algorithm.population_size: CMA-ES needs a population of at least 4",
        ),
        ({"budget": {}}, "budget: give evaluations, wall_time_s, or both"),
        ({"fitness": {"estimator": "subset"}}, "fitness: estimator 'subset' needs items_per_task"),
        (
            {"fitness": {"estimator": "irt", "anchors_per_task": 4, "irt_prior": "genome", "calibration_trials": 2}},
            "fitness: irt_prior 'genome' is fitted on the calibration trials' genomes: calibration_trials must be at least 3",
        ),
        (
            {"fitness": {"estimator": "irt", "anchors_per_task": 4, "irt_prior": "genes"}},
            r"fitness.irt_prior: .*'auto', 'population' or 'genome'",
        ),
        ({"fitness": {"estimator": "irt", "anchors_per_task": 4, "adaptive": "twice"}}, "fitness.adaptive"),
        ({"fitness": {"estimator": "irt", "anchors_per_task": 4, "graded": "twice"}}, "fitness.graded"),
        ({"recipe": {"merge_method": "nope", "models": [{"model": "a"}]}}, "recipe"),
        ({"recipe": "missing.yml"}, "recipe: no such recipe file"),
        ({"genomes": []}, "unknown key 'genomes'"),
    ],
)
def test_spec_errors_name_the_key(fixture_dir: Path, overrides: dict[str, Any], message: str) -> None:
    path = write_spec(fixture_dir, "bad.yml", **overrides)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_spec_resolves_paths_against_its_folder(fixture_dir: Path) -> None:
    spec = load_spec(write_spec(fixture_dir))
    assert spec.recipe["models"][0]["model"] == str((fixture_dir / "a").resolve())  # type: ignore[index]
    assert Path(spec.objectives[0].task).is_absolute()


# ---- genome ---------------------------------------------------------------------------------


def test_genome_lanes_and_layer_groups_become_mergekit_settings(model_family: dict[str, Path]) -> None:
    from mergestudio.recipe.model import Recipe
    from mergestudio.search.genome import Genome
    from mergestudio.search.spec import GeneSpec

    base = Recipe.from_dict(
        {
            "merge_method": "task_arithmetic",
            "base_model": str(model_family["base"]),
            "models": [
                {"model": str(model_family["ft1"]), "parameters": {"weight": 0.7}},
                {"model": str(model_family["ft2"]), "parameters": {"weight": 0.5}},
            ],
        }
    )
    genome = Genome.build(
        [
            GeneSpec(
                param="weight",
                low=0,
                high=1,
                models=[str(model_family["ft1"])],
                lanes=["attention", "mlp"],
                layer_groups=2,
            ),
            GeneSpec(param="lambda", low=0.5, high=1.5),
        ],
        base,
    )
    assert genome.names == [
        "weight[ft1].attention@0",
        "weight[ft1].attention@1",
        "weight[ft1].mlp@0",
        "weight[ft1].mlp@1",
        "lambda",
    ]
    values = dict(zip(genome.names, [0.1, 0.2, 0.3, 0.4, 1.25], strict=True))
    recipe = genome.recipe(values).to_dict()
    assert recipe["parameters"] == {"lambda": 1.25}
    ft1, ft2 = recipe["models"]
    assert ft1["parameters"]["weight"] == [
        {"filter": "self_attn", "value": [0.1, 0.2]},  # Llama's lane filters
        {"filter": "mlp", "value": [0.3, 0.4]},
        {"value": 0.7},  # the norm and embedding lanes keep the base recipe's value
    ]
    assert ft2["parameters"] == {"weight": 0.5}
    # The engine accepts the candidate and resolves lanes per tensor.
    from mergestudio.engine import build_plan

    plan = build_plan(genome.recipe(values))
    try:
        weights = {p.name: p.model_params["weight"][0] for p in plan.tensors if p.copy_from is None}
    finally:
        plan.close()
    assert weights["model.layers.0.self_attn.q_proj.weight"] == pytest.approx(0.1)
    assert weights["model.layers.1.mlp.up_proj.weight"] == pytest.approx(0.4)
    assert weights["model.layers.0.input_layernorm.weight"] == pytest.approx(0.7)


# ---- Pareto front and hypervolume -------------------------------------------------------------


def test_non_dominated_and_hypervolume() -> None:
    points = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0), (3.0, 3.0), (2.0, 2.0)]
    assert non_dominated(points) == [0, 1, 2, 4]
    # Staircase under (4, 4): 3x1 + 2x1 + 1x1 = 6.
    assert hypervolume(points, (4.0, 4.0)) == pytest.approx(6.0)
    assert hypervolume([(0.0, 0.0, 0.0)], (1.0, 2.0, 3.0)) == pytest.approx(6.0)
    # Two boxes in 3-D overlapping in a 1x1x1 cube: 2*2*1 + 1*1*2 - 1 = 5... computed by hand:
    # A=(0,0,1) box 1x1x1 -> with B=(1,1,0) box 1x1x2: union = 1 + 2 - overlap(0) = 3 under ref (2,2,2).
    assert hypervolume([(0.0, 0.0, 1.0), (1.0, 1.0, 0.0)], (2.0, 2.0, 2.0)) == pytest.approx(
        2 * 2 * 1 + 1 * 1 * 1
    )
    assert hypervolume([(5.0, 5.0)], (4.0, 4.0)) == 0.0
    assert math.isclose(hypervolume([(1.0,)], (3.0,)), 2.0)


# ---- runs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"algorithm": {"name": "tpe", "population_size": 3, "seed": 1}, "budget": {"evaluations": 5}},
        {
            "algorithm": {"name": "cmaes", "population_size": 4, "seed": 2},
            "score": {"name": "mean_ppl", "direction": "minimize"},
            "budget": {"evaluations": 5},
        },
    ],
    ids=["nsga2", "tpe", "cmaes-score"],
)
def test_same_spec_and_seed_give_the_same_candidates_and_scores(
    fixture_dir: Path, tmp_path: Path, overrides: dict[str, Any]
) -> None:
    spec = write_spec(
        fixture_dir, f"det-{len(overrides)}-{overrides.get('algorithm', {}).get('name')}.yml", **overrides
    )
    first = start_search(spec, tmp_path / "one")
    second = start_search(spec, tmp_path / "two")
    assert first.state == second.state == "finished"
    runs = _complete(tmp_path / "one"), _complete(tmp_path / "two")
    assert runs[0] == runs[1]
    assert len(runs[0]) == load_spec(spec).budget.evaluations
    genomes = [tuple(g.values()) for g, _ in runs[0]]
    assert len(set(genomes)) > 1  # it does search
    # …with the algorithm asked for: plain random sampling, seeded per draw exactly as the
    # run seeds its sampler, draws other candidates. NSGA-II's first population and TPE's
    # start-up trials are random by design, which shows the baseline is the right one.
    spec_model = load_spec(spec)
    random_genomes = _random_sampling(spec_model, list(runs[0][0][0]), len(genomes))
    assert genomes != random_genomes
    if spec_model.algorithm.name in ("nsga2", "tpe"):
        size = spec_model.algorithm.population_size
        assert genomes[:size] == random_genomes[:size]


def _random_sampling(spec: Any, genes: list[str], count: int) -> list[tuple[float, ...]]:
    """The genomes plain random sampling would draw for ``spec``'s one gene range over
    ``genes`` (in the run's order), draw by draw."""
    import optuna
    from mergestudio.search.samplers import trial_seed

    low, high = spec.genome[0].low, spec.genome[0].high
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    drawn = []
    for draw in range(count):
        study.sampler = optuna.samplers.RandomSampler(seed=trial_seed(spec.algorithm.seed, draw))
        trial = study.ask()
        drawn.append(tuple(trial.suggest_float(name, low, high) for name in genes))
        study.tell(trial, 0.0)
    return drawn


def test_events_pause_stop_and_resume(fixture_dir: Path, tmp_path: Path) -> None:
    # Unnormalised weights: a small total weight shrinks the merged model and makes it worse
    # on both tasks, so some trials are dominated and the front is a real selection.
    recipe = {"merge_method": "linear", "models": [{"model": "a"}, {"model": "b"}],
              "parameters": {"normalize": False}}
    spec = write_spec(fixture_dir, "events.yml", budget={"evaluations": 6}, recipe=recipe)
    control = SearchControl()
    seen: list[object] = []

    def sink(event: object) -> None:
        seen.append(event)
        if isinstance(event, ev.TrialFinished) and event.number == 0:
            control.pause()
            threading.Timer(0.2, control.resume).start()
        if isinstance(event, ev.TrialFinished) and event.number == 2:
            control.stop()

    outcome = start_search(spec, tmp_path / "run", events=sink, control=control)
    assert outcome.state == "stopped" and outcome.complete_trials == 3
    states = [e.state for e in seen if isinstance(e, ev.SearchStateChanged)]
    assert states == ["running", "paused", "running", "stopped"]
    trials = [e for e in seen if isinstance(e, ev.TrialFinished)]
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(
        set(t.genome) == {"weight[a]", "weight[b]"} and set(t.objectives) == {"ta", "tb"} for t in trials
    )
    assert all(t.duration_s > 0 and t.merge_s > 0 and t.eval_s > 0 for t in trials)
    fronts = [e for e in seen if isinstance(e, ev.ParetoFrontChanged)]
    assert fronts and fronts[-1].objectives == ("ta", "tb")
    # The front, its points and hypervolume, recomputed here from the trials' own values
    # (both objectives are perplexities: lower is better; the reference is the worst seen).
    values = {t.number: (t.objectives["ta"], t.objectives["tb"]) for t in trials}
    expected_front = _pareto_minimizing(values)
    assert 0 < len(expected_front) < len(trials)  # the fixture has dominated trials
    assert fronts[-1].trials == expected_front
    assert fronts[-1].points == tuple(values[n] for n in expected_front)
    reference = tuple(max(v[axis] for v in values.values()) for axis in range(2))
    assert fronts[-1].reference == pytest.approx(reference)
    assert fronts[-1].hypervolume == pytest.approx(
        _union_area([values[n] for n in expected_front], reference), rel=1e-9
    )
    assert [t.is_on_front for t in trials] == [t.number in _pareto_minimizing(
        {n: v for n, v in values.items() if n <= t.number}) for t in trials]

    resumed: list[object] = []
    outcome = resume_search(tmp_path / "run", events=resumed.append)
    assert outcome.state == "finished" and outcome.complete_trials == 6
    replayed = [e.number for e in resumed if isinstance(e, ev.TrialFinished) and e.replayed]
    new = [e.number for e in resumed if isinstance(e, ev.TrialFinished) and not e.replayed]
    assert replayed == [0, 1, 2] and new == [3, 4, 5]
    generations = [e for e in resumed if isinstance(e, ev.GenerationFinished)]
    assert [g.generation for g in generations] == [0]  # six trials, population four
    assert set(generations[0].stats) == {"ta", "tb"}

    # An uninterrupted run with the same spec finds the same trials.
    start_search(spec, tmp_path / "straight")
    assert _complete(tmp_path / "straight") == _complete(tmp_path / "run")


def test_interrupted_trials_are_requeued_once(fixture_dir: Path, tmp_path: Path) -> None:
    """A trial left RUNNING (the process was killed) runs again with the same genome (the
    sampler's draw is repeated); finished trials are not repeated."""
    spec = write_spec(fixture_dir, "requeue.yml", budget={"evaluations": 3})
    start_search(spec, tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    study = run.open_study()
    # Simulate the kill: a trial asked for and given a genome, never told.
    from mergestudio.search.samplers import make_sampler

    study.sampler = make_sampler(load_spec(spec).algorithm, 3)
    orphan = study.ask()
    orphan.suggest_float("weight[a]", 0.0, 1.0)
    orphan.suggest_float("weight[b]", 0.0, 1.0)
    outcome = resume_search(tmp_path / "run", evaluations=4)
    assert outcome.interrupted_trials == (orphan.number,)
    records = run.records()
    assert [r.state for r in records] == ["complete", "complete", "complete", "interrupted", "complete"]
    assert records[4].genome == dict(orphan.params)


def test_export_round_trip(fixture_dir: Path, tmp_path: Path) -> None:
    from mergestudio.evaluate import evaluate_path
    from mergestudio.search.export import export_trial

    spec = write_spec(fixture_dir, "export.yml", budget={"evaluations": 3})
    start_search(spec, tmp_path / "run")
    record = RunFolder(tmp_path / "run").records()[1]
    result = export_trial(tmp_path / "run", 1, tmp_path / "model", device="cpu")
    card = (result.output / "README.md").read_text()
    assert "**trial**: 1" in card and "search run" in card and "ta = " in card
    lineage = yaml.safe_load((result.output / "search_trial.json").read_text())
    assert lineage["trial"] == 1 and lineage["objectives"] == record.objectives
    report = evaluate_path(result.output, [fixture_dir / "ta.jsonl", fixture_dir / "tb.jsonl"], device="cpu")
    assert report.scores == pytest.approx(record.objectives, rel=1e-6)
    assert (result.output / "recipe.yml").read_text() == record.recipe_yaml


def test_runs_show_summary(fixture_dir: Path, tmp_path: Path) -> None:
    from mergestudio.search.report import format_summary, summarize

    spec = write_spec(
        fixture_dir,
        "summary.yml",
        objectives=[{"task": "ga.jsonl"}, {"task": "ta.jsonl"}],
        algorithm={"name": "random", "population_size": 2, "seed": 0},
        budget={"evaluations": 4},
    )
    start_search(spec, tmp_path / "run")
    summary = summarize(tmp_path / "run")
    data = summary.to_dict()
    assert len(data["trials"]) == 4 and data["front"]
    objectives = {t["number"]: t["objectives"] for t in data["trials"]}
    # "mean" averages the maximised objectives only: here the accuracy on ga, not ta's perplexity.
    assert [t["mean"] for t in data["trials"]] == [objectives[t["number"]]["ga"] for t in data["trials"]]
    best_ga = max(o["ga"] for o in objectives.values())
    assert data["best_mean"]["mean"] == best_ga
    assert data["best_mean"]["trial"] == min(n for n, o in objectives.items() if o["ga"] == best_ga)
    best_ta = min(o["ta"] for o in objectives.values())
    assert data["best_per_objective"] == {
        "ga": data["best_mean"]["trial"],
        "ta": min(n for n, o in objectives.items() if o["ta"] == best_ta),
    }
    # The front in minimisation form: accuracy negated, perplexity as it is.
    front = _pareto_minimizing({n: (-o["ga"], o["ta"]) for n, o in objectives.items()})
    assert tuple(data["front"]) == front
    assert [t["on_front"] for t in data["trials"]] == [t["number"] in front for t in data["trials"]]
    text = format_summary(summary)
    assert f"{len(front)} trial(s) {list(front)}" in text and "best per objective" in text
    assert f"{'ta':8}  trial {data['best_per_objective']['ta']:>4}  {best_ta:.4g}" in text


def _pareto_minimizing(points: dict[int, tuple[float, ...]]) -> tuple[int, ...]:
    """Trial numbers whose point no other point beats on one axis while tying or beating it on
    all others (every axis minimised), in trial order. Written out independently of
    ``mergestudio.search.pareto``."""
    front = []
    for number, point in sorted(points.items()):
        beaten = False
        for other in points.values():
            no_worse = all(o <= p for o, p in zip(other, point, strict=True))
            if no_worse and other != point:
                beaten = True
        if not beaten:
            front.append(number)
    return tuple(front)


def _union_area(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    """Area of the union of the boxes [x, ref_x] × [y, ref_y], by coordinate compression."""
    xs = sorted({p[0] for p in points} | {reference[0]})
    ys = sorted({p[1] for p in points} | {reference[1]})
    area = 0.0
    for x0, x1 in itertools.pairwise(xs):
        for y0, y1 in itertools.pairwise(ys):
            if any(p[0] <= x0 and p[1] <= y0 for p in points):
                area += (x1 - x0) * (y1 - y0)
    return area


def test_subset_estimator_keeps_the_same_items_and_the_score_weighs_objectives(fixture_dir: Path) -> None:
    from mergestudio.search.objectives import Objectives

    spec = load_spec(
        write_spec(
            fixture_dir,
            "subset.yml",
            objectives=[{"task": "ta.jsonl", "weight": 2.0}, {"task": "ga.jsonl"}],
            score={"name": "s", "direction": "maximize"},
            algorithm={"name": "cmaes", "population_size": 4},
            fitness={"estimator": "subset", "items_per_task": 2, "seed": 5},
        )
    )
    first, again = Objectives.build(spec), Objectives.build(spec)
    ta = next(t for t in first.tasks if t.name == "ta")
    assert len(ta.items) == 2 and ta.items == next(t for t in again.tasks if t.name == "ta").items
    assert [o.direction for o in first.items] == ["minimize", "maximize"]
    assert first.study_names == ["s"] and first.directions == ["maximize"]
    # Perplexity (minimised) counts against a maximised score, times its weight.
    assert first.study_values({"ta": 3.0, "ga": 1.0}) == [pytest.approx(-2.0 * 3.0 + 1.0)]


def test_demo_search_spec_fits_the_demo_zoo() -> None:
    """The shipped demo spec validates against the shipped zoo (when it is built)."""
    from mergestudio.demo.paths import REPO_ROOT

    spec_path = REPO_ROOT / "resources" / "demo" / "search.yml"
    if not (spec_path.parent / "models" / "base" / "config.json").is_file():
        pytest.skip("the demo zoo is not built")
    spec = load_spec(spec_path)
    assert spec.algorithm.name == "nsga2" and len(spec.objectives) >= 2


def test_a_search_over_hub_models_uses_the_studio_hub_cache(
    tmp_path: Path, isolated_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models named by Hub id, in the studio's Hub cache (as the window downloads them),
    offline: the baselines' and the search's resident model load from that cache."""
    from tests.hubcache import populate_hub_cache

    root = write_search_fixture(tmp_path / "fixture")
    for name in ("a", "b"):
        populate_hub_cache(isolated_cache_dir / "hub", f"acme/bigram-{name}", root / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    recipe = {"merge_method": "linear", "models": [{"model": "acme/bigram-a"}, {"model": "acme/bigram-b"}]}
    spec = write_spec(root, recipe=recipe, algorithm={"name": "random", "population_size": 2, "seed": 1},
                      budget={"evaluations": 2})
    outcome = start_search(spec, tmp_path / "run")
    assert outcome.state == "finished", outcome
    assert len(_complete(tmp_path / "run")) == 2
