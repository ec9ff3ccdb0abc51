"""The dry run's time estimate: rates measured once per machine and stored in the cache
folder; the estimate is read + compute + write from those rates and the plan's sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mergestudio.engine import estimate as est
from mergestudio.engine.merge import plan_folder_merge
from mergestudio.methods.registry import get_method


def _recipe(family: dict[str, Path], method: str = "ties") -> dict[str, object]:
    return {
        "merge_method": method,
        "base_model": str(family["base"]),
        "models": [{"model": str(family[k]), "parameters": {"weight": 0.5, "density": 0.5}} for k in ("ft1", "ft2")],
    }


def test_estimate_is_overhead_read_compute_write_from_the_stored_rates(
    model_family: dict[str, Path], isolated_cache_dir: Path
) -> None:
    path = est.calibration_path()
    path.parent.mkdir(parents=True)
    engine = {"merge_s": 0.25, "tensor_s": 2e-4, "input_element_s": 3e-9, "output_element_s": 5e-9}
    methods = {"ties": {"seconds_per_element": 1e-8, "seconds_per_tensor": 1e-3}}
    path.write_text(json.dumps({"machine": est.machine_key(), "engine": engine, "methods": methods}))
    plan = plan_folder_merge(_recipe(model_family), None)
    try:
        estimate = est.estimate_time(plan)
        merged = [p for p in plan.tensors if p.copy_from is None]
        compute = 2e-4 * len(plan.tensors) + sum(1e-3 + 1e-8 * len(p.all_inputs()) * p.numel for p in merged)
        assert estimate.read_s == pytest.approx(3e-9 * sum(len(p.all_inputs()) * p.numel for p in plan.tensors))
        assert estimate.write_s == pytest.approx(5e-9 * sum(p.numel for p in plan.tensors))
        assert estimate.compute_s == pytest.approx(compute)
        assert estimate.overhead_s == 0.25
        assert estimate.total_s == pytest.approx(0.25 + estimate.read_s + estimate.compute_s + estimate.write_s)
        in_memory = est.estimate_time(plan, write=False)
        assert in_memory.write_s == in_memory.overhead_s == 0.0 and in_memory.read_s == estimate.read_s
    finally:
        plan.close()
    assert estimate.describe().startswith("≈ ")


def test_calibration_runs_once_per_machine_and_method(
    model_family: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    rates = est.EngineRates(0.1, 1e-4, 1e-9, 1e-9)
    monkeypatch.setattr(est, "measure_engine", lambda folder: calls.append("engine") or rates)
    real_measure = est.measure_method
    monkeypatch.setattr(est, "measure_method", lambda m: calls.append(m.name) or real_measure(m))
    est.calibrated(get_method("ties"))
    est.calibrated(get_method("ties"))
    est.calibrated(get_method("linear"))
    assert calls == ["engine", "ties", "linear"]
    stored = json.loads(est.calibration_path().read_text())
    assert stored["machine"] == est.machine_key() and set(stored["methods"]) == {"ties", "linear"}
    assert stored["methods"]["ties"]["seconds_per_element"] > 0
    # another machine's file (or another torch) is measured again
    est.calibration_path().write_text(json.dumps({**stored, "machine": "elsewhere"}))
    est.calibrated(get_method("ties"))
    assert calls == ["engine", "ties", "linear", "engine", "ties"]


def test_cli_dry_run_prints_the_estimate(
    model_family: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml
    from mergestudio.cli.main import main

    recipe = tmp_path / "recipe.yml"
    linear = {"merge_method": "linear", "models": [{"model": str(model_family[k]), "parameters": {"weight": 0.5}}
                                                   for k in ("ft1", "ft2")]}
    recipe.write_text(yaml.safe_dump(linear))
    assert main(["merge", str(recipe), str(tmp_path / "out"), "--dry-run"]) == 0
    assert "estimated time         ≈ " in capsys.readouterr().out
    assert main(["merge", str(recipe), str(tmp_path / "out"), "--dry-run", "--json"]) == 0
    seconds = json.loads(capsys.readouterr().out)["estimated_seconds"]
    assert set(seconds) == {"read_s", "compute_s", "write_s", "overhead_s"}
    assert all(v >= 0 for v in seconds.values()) and sum(seconds.values()) > 0  # measured: any part may round to 0


def test_candidate_estimate_writes_nothing(model_family: dict[str, Path]) -> None:
    estimate = est.estimate_candidate_time(_recipe(model_family))
    assert estimate.write_s == estimate.overhead_s == 0 and estimate.compute_s > 0
