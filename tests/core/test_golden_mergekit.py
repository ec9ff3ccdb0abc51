"""Our merges against mergekit's, on tiny float32 checkpoints: the files in tests/golden
were written by mergekit 0.1.5 (see tests/golden/make_golden.py, which made them).
Deterministic methods must agree to 1e-6; DARE-TIES and DELLA draw their own random masks,
so their outputs are compared with mergekit's in distribution."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe
from mergestudio.methods import all_methods
from safetensors.torch import load_file

from tests.golden.make_golden import INPUTS, STOCHASTIC, resolve

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
GOLDEN_ATOL = 1e-6
CASES = sorted(p.stem for p in (GOLDEN / "outputs").glob("*.safetensors") if p.stem not in STOCHASTIC)


def _ours(name: str, reverse: bool = False) -> dict[str, torch.Tensor]:
    recipe = yaml.safe_load((GOLDEN / "recipes" / f"{name}.yml").read_text())
    if reverse:
        recipe["models"] = recipe["models"][::-1]
    paths = {model: GOLDEN / "inputs" / model for model in INPUTS}
    plan = build_plan(load_recipe(resolve(recipe, paths)))
    target = DictTarget()
    execute_plan(plan, target, device="cpu")
    plan.close()
    return target.tensors


@pytest.mark.parametrize("name", CASES)
def test_matches_mergekit(name: str) -> None:
    method = yaml.safe_load((GOLDEN / "recipes" / f"{name}.yml").read_text())["merge_method"]
    # A golden file is a promise: a method that disappears from the registry fails here.
    assert method in {m.name for m in all_methods()}, f"{method} has a golden file but is not registered"
    theirs = load_file(str(GOLDEN / "outputs" / f"{name}.safetensors"))
    ours = _ours(name)
    assert set(ours) == set(theirs)
    for tensor_name, expected in theirs.items():
        got = ours[tensor_name]
        assert got.dtype == expected.dtype, tensor_name
        # The largest difference over every case is 6e-8 (float32 rounding in karcher and
        # multislerp); 1e-6 leaves room for BLAS differences and catches any real change.
        torch.testing.assert_close(
            got, expected, rtol=0.0, atol=GOLDEN_ATOL, msg=lambda m, t=tensor_name: f"{t}: {m}"
        )


# ---- the stochastic ones: statistics, since our random draws are not mergekit's ---------------

# Each of three task vectors survives DARE / DELLA with probability density = 0.5 (DELLA:
# 0.45-0.55 by magnitude rank, 0.5 on average), so an entry of the merge changes unless all
# three are dropped: p = 1 - 0.5³ = 0.875.
CHANGED = 1 - 0.5**3


def _flat_delta(tensors: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([(tensors[k] - base[k]).flatten() for k in sorted(base)])


def _statistics(delta: torch.Tensor, consensus_sign: torch.Tensor) -> dict[str, float]:
    changed = delta != 0
    return {
        "changed": float(changed.float().mean()),
        "l1": float(delta.abs().sum()),
        "sign": float((delta.sign() == consensus_sign)[changed].float().mean()),
    }


def _assert_same_statistics(ours: dict[str, float], theirs: dict[str, float], numel: int) -> None:
    # Binomial: 4 standard deviations of a fraction over numel entries (≈ 0.015 here).
    bound = 4 * math.sqrt(CHANGED * (1 - CHANGED) / numel)
    assert abs(ours["changed"] - CHANGED) < bound and abs(theirs["changed"] - CHANGED) < bound
    assert ours["l1"] == pytest.approx(theirs["l1"], rel=0.03)
    assert ours["sign"] == pytest.approx(theirs["sign"], abs=0.03)


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_merges_match_mergekit_in_distribution(name: str) -> None:
    """Kept fraction within binomial bounds, L1 norm within 3 %, and the same agreement with
    the sign of the summed task vectors (sign election at work), for our merge, the
    reversed input order, and mergekit's committed output."""
    inputs = {m: load_file(str(GOLDEN / "inputs" / m / "model.safetensors")) for m in INPUTS}
    base = inputs["base"]
    consensus = torch.cat(
        [sum(inputs[m][k] - base[k] for m in INPUTS[1:]).sign().flatten() for k in sorted(base)]
    )
    theirs = _statistics(_flat_delta(load_file(str(GOLDEN / "outputs" / f"{name}.safetensors")), base), consensus)
    assert theirs["sign"] > 0.7  # mergekit's own output: a sign-elected merge, not noise
    numel = consensus.numel()
    ours = _statistics(_flat_delta(_ours(name), base), consensus)
    _assert_same_statistics(ours, theirs, numel)
    reversed_order = _statistics(_flat_delta(_ours(name, reverse=True), base), consensus)
    _assert_same_statistics(reversed_order, theirs, numel)
