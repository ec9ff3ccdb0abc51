"""lm-evaluation-harness tasks as search objectives, offline: a local task YAML over a local
JSON file, run on our resident in-memory model through the ``ResidentLM`` wrapper, scores
what lm-eval's own Hugging Face model scores on the same merge saved to disk (per document
and in total); a search optimises it, and the IRT estimator calibrates on its documents."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

lm_eval = pytest.importorskip("lm_eval")

from mergestudio.demo.info import zoo_info  # noqa: E402
from mergestudio.demo.paths import default_zoo_dir  # noqa: E402
from mergestudio.evaluate.lm import CausalLM  # noqa: E402
from mergestudio.evaluate.lm_eval_adapter import LmEvalTask, evaluate_lm_eval  # noqa: E402
from mergestudio.evaluate.resident import ResidentEvaluator  # noqa: E402
from mergestudio.search.schema import LmEvalSpec  # noqa: E402

DOCS = 24


@pytest.fixture(scope="module")
def zoo() -> dict:
    try:
        return zoo_info(default_zoo_dir())
    except FileNotFoundError:
        pytest.skip("no demo zoo (mergestudio demo build)")


@pytest.fixture(scope="module")
def tasks_dir(zoo: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two local lm-eval tasks from the demo's max dev items: pick the largest digit among
    three of the input's digits (multiple choice), and write it (generate_until)."""
    root = tmp_path_factory.mktemp("lm-eval-tasks")
    rng = random.Random(0)
    rows = []
    for line in Path(zoo["skills"]["max"]["dev"]).read_text().splitlines()[1 : DOCS + 1]:
        item = json.loads(line)
        target = item["target"]
        # The other digits of the input: answers a half-merged model can mistake for the largest.
        number = item["prompt"].split(" ")[1].rstrip("=")
        wrong = [d for d in dict.fromkeys(number) if d != target]
        wrong += [d for d in rng.sample("0123456789", 10) if d != target and d not in wrong]
        choices = [target, *wrong[:2]]
        rng.shuffle(choices)
        rows.append(
            {"prompt": item["prompt"], "choices": choices, "answer": choices.index(target), "target": target}
        )
    data = root / "max.json"
    data.write_text(json.dumps(rows))
    common = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
    }
    (root / "max_choice.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "demo_max_choice",
                **common,
                "output_type": "multiple_choice",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{answer}}",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            }
        )
    )
    (root / "max_write.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "demo_max_write",
                **common,
                "output_type": "generate_until",
                "doc_to_target": "{{target}}",
                "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8, "do_sample": False},
                "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            }
        )
    )
    return root


@pytest.fixture(scope="module")
def saved_merge(zoo: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A task-arithmetic merge of the max and last specialists, saved to disk."""
    from mergestudio.engine import merge

    specialists = {s["skill"]: s["path"] for s in zoo["specialists"]}
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": zoo["base"]["path"],
        "models": [
            {"model": specialists["max"], "parameters": {"weight": 0.9}},
            {"model": specialists["last"], "parameters": {"weight": 0.3}},
        ],
        "dtype": "float32",
    }
    out = tmp_path_factory.mktemp("merge") / "model"
    merge(recipe, out)
    return recipe, out


def _harness_own_score(model: Path, task: str, include_path: Path) -> tuple[float, list[float]]:
    """lm-eval's own HF model on the saved merge: the metric and each document's score."""
    from lm_eval.tasks import TaskManager

    metric = "acc" if task.endswith("choice") else "exact_match"
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model), "dtype": "float32", "device": "cpu"},
        tasks=[task],
        task_manager=TaskManager(include_path=str(include_path), include_defaults=False),
        batch_size=8,
        log_samples=True,
        bootstrap_iters=0,
    )
    samples = sorted(output["samples"][task], key=lambda s: s["doc_id"])
    return output["results"][task][f"{metric},none"], [float(s[metric]) for s in samples]


@pytest.mark.parametrize(
    ("task", "metric"), [("demo_max_choice", "acc"), ("demo_max_write", "exact_match")]
)
def test_resident_candidate_scores_what_lm_eval_scores_on_the_saved_merge(
    task: str, metric: str, tasks_dir: Path, saved_merge: tuple[dict, Path]
) -> None:
    recipe, folder = saved_merge
    spec = LmEvalSpec(task=task, metric=metric, include_path=str(tasks_dir))
    lm_task = LmEvalTask.load(spec)
    assert len(lm_task.items) == DOCS
    expected, per_doc = _harness_own_score(folder, task, tasks_dir)

    # The merge streamed into the resident model's parameters, never written to disk.
    template = recipe["base_model"]
    with ResidentEvaluator(template, [lm_task], batch_size=8, device="cpu", dtype="float32") as resident:
        result = resident.evaluate(recipe).report.task(task)
    assert result.metrics[metric] == pytest.approx(expected)
    assert [i.score for i in result.items] == per_doc
    assert 0.0 < expected < 1.0  # a score that could differ

    # The same through a loaded CausalLM of the saved folder, on four documents only.
    lm = CausalLM.load(folder, device="cpu", dtype="float32")
    part = LmEvalTask(lm_task.name, spec, lm_task.items[3:7])
    subset = evaluate_lm_eval(lm, part, batch_size=4)
    assert [i.id for i in subset.items] == ["3", "4", "5", "6"]
    assert [i.score for i in subset.items] == per_doc[3:7]


def test_lm_eval_objective_in_an_irt_search(zoo: dict, tasks_dir: Path, tmp_path: Path) -> None:
    from mergestudio.search import load_spec, start_search
    from mergestudio.search.fitness import CALIBRATION_FILE
    from mergestudio.search.store import RunFolder

    specialists = {s["skill"]: s["path"] for s in zoo["specialists"]}
    spec = {
        "recipe": {
            "merge_method": "task_arithmetic",
            "base_model": zoo["base"]["path"],
            "models": [{"model": specialists["max"]}, {"model": specialists["last"]}],
            "dtype": "float32",
        },
        "genome": [{"param": "weight", "low": 0.0, "high": 1.0}],
        "objectives": [
            {"name": "choice", "lm_eval": {"task": "demo_max_choice", "include_path": str(tasks_dir)}},
            {
                "name": "write",
                "lm_eval": {
                    "task": "demo_max_write",
                    "metric": "exact_match",
                    "include_path": str(tasks_dir),
                },
            },
        ],
        "algorithm": {"name": "random", "population_size": 2, "seed": 0},
        "budget": {"evaluations": 3},
        "fitness": {"estimator": "irt", "anchors_per_task": 4},
        "evaluation": {"batch_size": 8, "threads": 1},
    }
    path = tmp_path / "spec.yml"
    path.write_text(yaml.safe_dump(spec))
    outcome = start_search(load_spec(path), tmp_path / "run")
    assert outcome.complete_trials == 3
    calibration = json.loads((tmp_path / "run" / CALIBRATION_FILE).read_text())
    assert set(calibration["tasks"]) == {"choice", "write"}
    for record in RunFolder(tmp_path / "run").records():
        items = RunFolder(tmp_path / "run").read_items(record.number)
        # The anchors, then the adaptive round's items (asked on lm-eval documents too).
        asked = {
            name: len(t["anchors"]["indices"]) + t["adaptive_items"] for name, t in calibration["tasks"].items()
        }
        counts = [len(t["items"]) for t in items["report"]["tasks"]]
        assert counts == [asked["choice"], asked["write"]] and sum(counts) == 8
        assert set(items["fitness"]["adaptive_items"]) <= {"choice", "write"}
        assert record.objectives["choice"] == items["fitness"]["estimates"]["choice"]["gp-irt"]
