"""A search over a miniature demo zoo selects on the dev split and its report re-scores the
front on the held-out test split, which the search never read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mergestudio.demo import paths
from mergestudio.demo.build import ZooConfig, build_zoo
from mergestudio.search import SpecError, load_spec, start_search
from mergestudio.search.report import format_summary, load_test_scores, rescore_front, summarize
from mergestudio.search.spec import objective_files


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(out, ZooConfig.miniature(), log=lambda _line: None, evaluate=False)
    return out


def _spec(zoo: Path, skills: tuple[str, ...] = ("last", "max")) -> dict[str, Any]:
    """Task arithmetic over the specialists of ``skills``; one objective per skill plus
    general-text perplexity (whose dev and test values always differ), each with its
    dev file as the task and its test file as the held-out file."""
    names = (*skills, "general")
    return {
        "recipe": {
            "merge_method": "task_arithmetic",
            "base_model": str(paths.models_dir(zoo) / "base"),
            "models": [{"model": str(paths.models_dir(zoo) / s)} for s in skills],
        },
        "genome": [{"param": "weight", "low": 0.0, "high": 1.0}],
        "objectives": [
            {"task": str(paths.task_file(zoo, n, "dev")), "test": str(paths.task_file(zoo, n, "test"))}
            for n in names
        ],
        "algorithm": {"name": "random", "population_size": 2, "seed": 0},
        "budget": {"evaluations": 3},
        "evaluation": {"batch_size": 16, "threads": 1},
    }


def _write(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "spec.yml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_front_is_rescored_on_the_test_split(zoo: Path, tmp_path: Path) -> None:
    from mergestudio.evaluate import load_task
    from mergestudio.evaluate.resident import ResidentEvaluator

    run = tmp_path / "run"
    start_search(_write(tmp_path, _spec(zoo)), run)
    summary = summarize(run)
    result = rescore_front(run)
    assert set(result["trials"]) == {str(n) for n in summary.front}
    assert load_test_scores(run) == json.loads(json.dumps(result))
    # The values are the test split's: evaluate one front trial directly on test files.
    number = summary.front[0]
    record = next(t for t in summary.complete if t.number == number)
    tasks = [load_task(paths.task_file(zoo, n, "test")) for n in ("last", "max", "general")]
    with ResidentEvaluator(paths.models_dir(zoo) / "base", tasks, batch_size=16, dtype="float32") as ev:
        scores = ev.evaluate(record.recipe_yaml).report.scores
    assert result["trials"][str(number)] == pytest.approx(scores)
    assert result["trials"][str(number)]["general"] != pytest.approx(record.objectives["general"])
    assert "re-scored on the held-out test files" in format_summary(summarize(run))


def test_a_test_file_must_differ_from_the_searched_task(zoo: Path, tmp_path: Path) -> None:
    spec = _spec(zoo)
    spec["objectives"][1]["test"] = spec["objectives"][1]["task"]
    with pytest.raises(SpecError, match=r"objectives\[1\]\.test"):
        load_spec(_write(tmp_path, spec))
    spec["objectives"][1]["test"] = "missing.jsonl"
    with pytest.raises(SpecError, match=r"objectives\[1\]\.test: no such task file"):
        load_spec(_write(tmp_path, spec))


def test_rescoring_needs_test_files(zoo: Path, tmp_path: Path) -> None:
    spec = _spec(zoo)
    del spec["objectives"][0]["test"]
    run = tmp_path / "run"
    start_search(_write(tmp_path, spec), run)
    with pytest.raises(SpecError, match=r"no 'test' file"):
        rescore_front(run)


def test_a_test_split_is_searched_on_its_dev_twin(zoo: Path, tmp_path: Path) -> None:
    test = str(paths.task_file(zoo, "max", "test"))
    assert objective_files(test) == {"task": str(paths.task_file(zoo, "max", "dev")), "test": test}
    alone = tmp_path / "other.test.jsonl"
    alone.write_text(paths.task_file(zoo, "max", "test").read_text())
    assert objective_files(str(alone)) == {"task": str(alone)}
