"""Our merges against mergekit's, on tiny float32 checkpoints: the files in tests/golden
were written by mergekit 0.1.5 (see tests/golden/make_golden.py, which made them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe
from mergestudio.methods import all_methods
from safetensors.torch import load_file

from tests.golden.make_golden import INPUTS, STOCHASTIC, resolve

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p.stem for p in (GOLDEN / "outputs").glob("*.safetensors") if p.stem not in STOCHASTIC)


def _ours(name: str) -> dict[str, torch.Tensor]:
    recipe = yaml.safe_load((GOLDEN / "recipes" / f"{name}.yml").read_text())
    paths = {model: GOLDEN / "inputs" / model for model in INPUTS}
    plan = build_plan(load_recipe(resolve(recipe, paths)))
    target = DictTarget()
    execute_plan(plan, target, device="cpu")
    plan.close()
    return target.tensors


@pytest.mark.parametrize("name", CASES)
def test_matches_mergekit(name: str) -> None:
    method = yaml.safe_load((GOLDEN / "recipes" / f"{name}.yml").read_text())["merge_method"]
    if method not in {m.name for m in all_methods()}:
        pytest.skip(f"{method} is not implemented yet")
    theirs = load_file(str(GOLDEN / "outputs" / f"{name}.safetensors"))
    ours = _ours(name)
    assert set(ours) == set(theirs)
    for tensor_name, expected in theirs.items():
        got = ours[tensor_name]
        assert got.dtype == expected.dtype, tensor_name
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=lambda m, t=tensor_name: f"{t}: {m}")
