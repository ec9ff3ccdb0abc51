"""A search over a multi-stage recipe: genes name their stage, every candidate's whole
graph is merged in memory, and its scores are those of the same stages merged through
folders one by one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mergestudio.engine import merge
from mergestudio.evaluate import load_task
from mergestudio.evaluate.resident import ResidentEvaluator
from mergestudio.recipe.multi import parse_multi
from mergestudio.search import SpecError, load_spec, start_search
from mergestudio.search.spec import build_genome
from mergestudio.search.store import RunFolder

from .evalfixtures import write_bigram_model


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stages")
    write_bigram_model(root / "a", {"<s>": "q", "q": "a", "a": "b", "b": "c", "c": "</s>"})
    write_bigram_model(root / "b", {"<s>": "q", "q": "x", "x": "y", "y": "z", "z": "</s>"})
    write_bigram_model(root / "c", {"<s>": "q", "q": "a", "a": "y", "y": "c", "c": "</s>"})
    (root / "ta.jsonl").write_text('{"text": "qabc"}\n{"text": "qab"}\n')
    (root / "tb.jsonl").write_text('{"text": "qxyz"}\n{"text": "qayc"}\n')
    return root


STAGES: list[dict[str, Any]] = [
    {"name": "ab", "merge_method": "linear", "models": [{"model": "a"}, {"model": "b", "parameters": {"weight": 0.5}}]},
    {"merge_method": "linear", "models": [{"model": "ab"}, {"model": "c", "parameters": {"weight": 0.5}}]},
]


def _spec(root: Path, genome: list[dict[str, Any]], recipe: Any = None) -> Path:
    spec = {
        "recipe": STAGES if recipe is None else recipe,
        "genome": genome,
        "objectives": [{"task": "ta.jsonl"}, {"task": "tb.jsonl"}],
        "algorithm": {"name": "random", "population_size": 2, "seed": 5},
        "budget": {"evaluations": 3},
        "evaluation": {"batch_size": 8},
    }
    path = root / "spec.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


GENOME = [
    {"param": "weight", "low": 0.1, "high": 0.9, "stage": "ab", "models": ["a"]},
    {"param": "weight", "low": 0.2, "high": 1.0, "models": ["ab"]},  # the final stage
]


def test_genes_of_any_stage_become_that_stage_s_parameters(root: Path) -> None:
    genome = build_genome(load_spec(_spec(root, GENOME)))
    assert genome.names == ["ab:weight[a]", "final:weight[ab]"]
    graph = genome.recipe({"ab:weight[a]": 0.25, "final:weight[ab]": 0.75})
    stages = {s.name: s.recipe for s in graph.stages}
    assert stages["ab"].models is not None and stages["ab"].models[0].parameters == {"weight": 0.25}
    assert stages["final"].models is not None and stages["final"].models[0].parameters == {"weight": 0.75}
    assert stages["final"].models[1].parameters == {"weight": 0.5}  # left alone
    assert parse_multi(graph.to_yaml()).to_yaml() == graph.to_yaml()  # the trial's YAML reads back


def test_a_search_over_two_stages_scores_what_the_stages_merged_through_files_score(
    root: Path, tmp_path: Path
) -> None:
    outcome = start_search(_spec(root, GENOME), tmp_path / "run")
    assert outcome.state == "finished"
    records = [r for r in RunFolder(tmp_path / "run").records() if r.state == "complete"]
    assert len(records) == 3
    assert len({r.genome["ab:weight[a]"] for r in records}) == 3  # the first stage's gene moved
    tasks = [load_task(str(root / "ta.jsonl")), load_task(str(root / "tb.jsonl"))]
    with ResidentEvaluator(str(root / "a"), tasks, batch_size=8, device="cpu", dtype="float32") as evaluator:
        for record in records:
            graph = parse_multi(record.recipe_yaml)
            first, final = (s.recipe.to_dict() for s in graph.stages)
            first.pop("name")
            folder = tmp_path / f"ab{record.number}"
            merge(first, folder, device="cpu")
            final["models"][0]["model"] = str(folder)
            report = evaluator.evaluate(final).report
            scores = [report.tasks[0].metrics["perplexity"], report.tasks[1].metrics["perplexity"]]
            assert scores == [record.objectives["ta"], record.objectives["tb"]]


@pytest.mark.parametrize(
    ("genome", "recipe", "message"),
    [
        ([{"param": "weight", "low": 0.1, "high": 0.9, "stage": "abc"}], None, r"genome\[0\].stage: no stage 'abc'"),
        (
            [{"param": "weight", "low": 0.1, "high": 0.9, "stage": "ab"}],
            {"merge_method": "linear", "models": [{"model": "a"}, {"model": "b"}]},
            r"genome\[0\].stage: the recipe has one stage",
        ),
        ([{"param": "density", "low": 0.1, "high": 0.9, "stage": "ab"}], None, r"stage 'ab'.*not a parameter of 'linear'"),
    ],
)
def test_stage_genes_that_do_not_fit_are_named(root: Path, genome: Any, recipe: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_spec(root, genome, recipe))
