"""An IRT-estimated search over the demo zoo (genome prior, adaptive second round, graded
item scores), killed
with SIGKILL after its calibration and resumed: the resumed run reuses the stored
calibration (no baseline scored again, no refit), finishes its budget with nothing lost or
repeated, and estimates every trial as an uninterrupted run does: the same adaptive items
asked, the same earlier trials feeding the genome prior, the same graded scores placing
the ability, the same estimates."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from mergestudio.cli.main import main
from mergestudio.demo.info import zoo_info
from mergestudio.demo.paths import default_zoo_dir
from mergestudio.search import start_search
from mergestudio.search.fitness import CALIBRATION_FILE, Calibration
from mergestudio.search.store import RunFolder

from tests.e2e.test_evolve import _evolve, _wait_until_mid_trial

SKILLS = ("last", "max")
ITEMS = 24  # dev items per skill: enough for a calibration, quick to score
BUDGET = 6
CALIBRATION_TRIALS = 3  # the genome prior's regression needs at least 3
ANCHORS = 4  # per skill on average: 2 fixed anchors + 2 adaptive items


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo search space (per-lane task-vector weights) over two specialists, on the
    first ``ITEMS`` dev items of each skill, estimated by IRT."""
    try:
        info = zoo_info(default_zoo_dir())
    except FileNotFoundError:
        pytest.skip("no demo zoo (mergestudio demo build)")
    root = tmp_path_factory.mktemp("irt-evolve")
    specialists = {s["skill"]: s["path"] for s in info["specialists"]}
    objectives = []
    for skill in SKILLS:
        lines = Path(info["skills"][skill]["dev"]).read_text(encoding="utf-8").splitlines()
        (root / f"{skill}.jsonl").write_text("\n".join(lines[: ITEMS + 1]) + "\n")  # header + items
        objectives.append({"task": str(root / f"{skill}.jsonl")})
    data: dict[str, Any] = {
        "recipe": {
            "merge_method": "task_arithmetic",
            "base_model": info["base"]["path"],
            "models": [{"model": specialists[s]} for s in SKILLS],
            "dtype": "float32",
        },
        "genome": [{"param": "weight", "low": 0.0, "high": 1.0, "lanes": ["attention", "mlp", "other"]}],
        "objectives": objectives,
        "algorithm": {"name": "nsga2", "population_size": 4, "seed": 0},
        "budget": {"evaluations": BUDGET},
        "fitness": {
            "estimator": "irt",
            "anchors_per_task": ANCHORS,
            "calibration_trials": CALIBRATION_TRIALS,
            "irt_prior": "genome",
            "adaptive": True,
            "graded": True,
        },
        "evaluation": {"batch_size": 24, "threads": 1},
    }
    path = root / "spec.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_irt_search_resumes_after_kill_9_with_its_stored_calibration(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    process = _evolve(str(spec), str(run))
    # Past the calibration trials and into an anchor-only trial.
    _wait_until_mid_trial(run, CALIBRATION_TRIALS + 1, process, timeout_s=600)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    stored = (run / CALIBRATION_FILE).read_bytes()
    baselines = (run / "baselines.json").read_bytes()
    calibration = Calibration.from_dict(json.loads(stored))
    assert calibration.subjects[-CALIBRATION_TRIALS:] == ("trial 0", "trial 1", "trial 2")
    assert calibration.adaptive and calibration.genome_prior and calibration.graded
    # The baselines were scored with every item's graded score, for the calibration.
    assert all(set(b["graded"]) == set(SKILLS) for b in json.loads(baselines)["baselines"])
    assert len(calibration.subjects) == 6 + CALIBRATION_TRIALS  # 3 parents, 3 default merges
    before = {r.number: r for r in RunFolder(run).records() if r.state == "complete"}

    assert main(["evolve", "--resume", str(run)]) == 0
    output = capsys.readouterr().err
    assert "scoring the baselines" not in output and "IRT calibration:" not in output
    assert (run / CALIBRATION_FILE).read_bytes() == stored  # reused, not fitted again
    assert (run / "baselines.json").read_bytes() == baselines

    folder = RunFolder(run)
    complete = [r for r in folder.records() if r.state == "complete"]
    assert len(complete) == BUDGET
    for number, record in before.items():
        assert next(r for r in complete if r.number == number) == record
    for record in complete:
        items = folder.read_items(record.number)
        counts = [len(t["items"]) for t in items["report"]["tasks"]]
        if record.number < CALIBRATION_TRIALS:  # calibration trials: every item, exact values
            assert counts == [ITEMS] * len(SKILLS)
            assert "estimates" not in items["fitness"]
            continue
        # Items shared out among the skills by the calibration: ANCHORS per skill on average,
        # the anchors and then the adaptive round's, all counted.
        assert counts == [calibration.tasks[t["task"]].items_per_candidate for t in items["report"]["tasks"]]
        assert sum(counts) == ANCHORS * len(SKILLS) == items["fitness"]["items"]
        assert min(counts) >= ANCHORS // 2
        # The genome prior learned from every estimated trial before this one.
        earlier = [n for n in sorted(r.number for r in complete) if CALIBRATION_TRIALS <= n < record.number]
        assert items["fitness"]["prior_trials"] == earlier
        assert items["fitness"]["graded_scores"] is True
        for task in items["report"]["tasks"]:  # the objective is the stored calibration's estimate
            name = task["task"]
            observed = [
                (folder.read_items(n)["genome"], *folder.read_items(n)["fitness"]["abilities"][name]) for n in earlier
            ]
            answers = {i["id"]: i["score"] for i in task["items"]}
            graded = {i["id"]: i["graded"] for i in task["items"]}
            chosen = calibration.tasks[name]
            first = [answers[i] for i in chosen.anchor_ids]
            first_graded = [graded[i] for i in chosen.anchor_ids]
            adaptive = [chosen.item_ids[i] for i in chosen.second_round(first, record.genome, observed, first_graded)]
            assert items["fitness"]["adaptive_items"][name] == sorted(adaptive, key=chosen.item_ids.index)
            assert set(answers) == set(chosen.anchor_ids) | set(adaptive)
            second = [answers[i] for i in adaptive]
            second_graded = [graded[i] for i in adaptive]
            expected = chosen.estimates(first, record.genome, second, observed, first_graded, second_graded)["gp-irt"]
            assert record.objectives[name] == pytest.approx(expected, abs=1e-6)

    # An uninterrupted run calibrates the same way and estimates the same trials.
    straight = tmp_path / "straight"
    start_search(spec, straight)
    assert (straight / CALIBRATION_FILE).read_bytes() == stored
    assert [(r.genome, r.objectives) for r in complete] == [
        (r.genome, r.objectives) for r in RunFolder(straight).records() if r.state == "complete"
    ]
