"""LoRA from the command line: extract-lora, merge --output-adapter, and a dry run that
refuses an adapter for another base before reading anything."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from mergestudio.cli.main import main

from tests.peft_adapters import logits, make_lora

pytest.importorskip("peft")


def test_extract_lora_writes_an_adapter_and_its_report(
    make_checkpoint: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, tune = make_checkpoint("base"), make_checkpoint("tune", seed=1)
    out = tmp_path / "lora"
    code = main(["extract-lora", "--base", str(base), "--model", str(tune), "--rank", "16", "-q", str(out)])
    assert code == 0
    assert "LoRA modules" in capsys.readouterr().out
    report = json.loads((out / "lora_report.json").read_text())
    lora = [m for m in report["modules"] if m["action"] == "lora"]
    assert lora and all(m["rank"] == 16 and m["energy"] > 0.999999 for m in lora)
    assert torch.allclose(logits(base, out), logits(tune), atol=1e-4)
    # the same folder again is refused without --overwrite
    again = ["extract-lora", "--base", str(base), "--model", str(tune), "--energy", "0.5", "-q", str(out)]
    assert main(again) == 1
    assert "already exists" in capsys.readouterr().err


def test_merge_output_adapter_and_dry_run_of_a_bad_adapter(
    make_checkpoint: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = make_checkpoint("base")
    one, two = make_lora(base, tmp_path / "one", seed=1), make_lora(base, tmp_path / "two", seed=2, r=2)
    recipe = tmp_path / "recipe.yml"
    models = [{"model": f"{base}+{a}", "parameters": {"weight": 1.0, "density": 0.5}} for a in (one, two)]
    recipe.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": str(base), "models": models}))
    out = tmp_path / "merged"
    code = main(["merge", str(recipe), str(out), "--output-adapter", "--adapter-rank", "4", "--json", "-q"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert {m["route"] for m in report["modules"]} == {"svd"}
    assert {m["rank"] for m in report["modules"]} == {4}
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert logits(base, out).shape == (2, 8, 48)

    wider = make_checkpoint("wider", hidden=24, intermediate=40)
    foreign = make_lora(wider, tmp_path / "foreign", seed=3)
    models[1]["model"] = f"{base}+{foreign}"
    recipe.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": str(base), "models": models}))
    assert main(["merge", str(recipe), str(tmp_path / "never"), "--dry-run"]) == 1
    error = capsys.readouterr().err
    assert "does not fit base" in error and "foreign" in error
    assert not (tmp_path / "never").exists()
