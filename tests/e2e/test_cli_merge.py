"""The ``mergestudio`` command driven as a user drives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mergestudio.cli.main import main
from mergestudio.events import Progress


def _mergestudio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mergestudio.cli.main", *args], capture_output=True, text=True
    )


def _write_recipe(path: Path, family: dict[str, Path], **extra: object) -> Path:
    recipe = {
        "models": [
            {"model": str(family["ft1"]), "parameters": {"weight": 0.5}},
            {"model": str(family["ft2"]), "parameters": {"weight": 0.5}},
        ],
        "base_model": str(family["base"]),
        "merge_method": "task_arithmetic",
        "dtype": "bfloat16",
        **extra,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_merge_and_dry_run(model_family: dict[str, Path], tmp_path: Path) -> None:
    recipe = _write_recipe(tmp_path / "recipe.yml", model_family)
    out = tmp_path / "out"
    dry = _mergestudio("merge", str(recipe), str(out), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "bytes to read" in dry.stdout and "estimated peak memory" in dry.stdout
    assert "family                 Llama: 2 blocks (0, 1); lanes attention, mlp, norm, embedding" in dry.stdout
    assert not out.exists()
    dry_json = json.loads(_mergestudio("merge", str(recipe), str(out), "--dry-run", "--json").stdout)
    assert dry_json["tensors"] == 21 and len(dry_json["inputs"]) == 3
    done = _mergestudio("merge", str(recipe), str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tensors"] == 21
    assert (out / "model.safetensors").exists()
    again = _mergestudio("merge", str(recipe), str(out))
    assert again.returncode == 1 and "--overwrite" in again.stderr


@pytest.mark.parametrize(
    ("recipe_text", "message"),
    [
        (
            "merge_method: linear\nmodels: [{model: /no/such/model, parameters: {weight: 1}}]",
            "/no/such/model",
        ),
        ("merge_method: nope\nmodels: [{model: a}]", "unknown method 'nope'"),
        ("merge_method: linear\nmodels: [{model: a\n", "invalid YAML"),
    ],
)
def test_bad_input_exits_non_zero_without_output(tmp_path: Path, recipe_text: str, message: str) -> None:
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(recipe_text)
    result = _mergestudio("merge", str(recipe), str(tmp_path / "out"))
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_recipe_file(tmp_path: Path) -> None:
    result = _mergestudio("merge", str(tmp_path / "missing.yml"), str(tmp_path / "out"))
    assert result.returncode == 1 and "missing.yml" in result.stderr


def test_ctrl_c_leaves_no_model(
    model_family: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real SIGINT arrives mid-merge; the CLI turns it into a cancel and cleans up."""
    from functools import partial

    from mergestudio.cli import progress
    from mergestudio.events import ProgressReporter

    monkeypatch.setattr(
        "mergestudio.engine.execute.ProgressReporter", partial(ProgressReporter, min_interval_s=0)
    )
    original = progress.TerminalProgress.__call__

    def interrupt_midway(self: progress.TerminalProgress, event: object) -> None:
        if isinstance(event, Progress) and event.done == 5:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, event)

    monkeypatch.setattr(progress.TerminalProgress, "__call__", interrupt_midway)
    recipe = _write_recipe(tmp_path / "recipe.yml", model_family)
    code = main(["merge", str(recipe), str(tmp_path / "out")])
    assert code == 130
    assert "cancelled" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in model_family) == ["recipe.yml"]


def test_methods_command_lists_declarations() -> None:
    result = _mergestudio("methods", "--json")
    methods = {m["name"]: m for m in json.loads(result.stdout)}
    assert {"linear", "task_arithmetic", "slerp", "passthrough"} <= set(methods)
    weight = next(p for p in methods["linear"]["params"] if p["name"] == "weight")
    assert weight["per_model"] is True and weight["default"] is None
