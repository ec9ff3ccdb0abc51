"""Merging adapters into an adapter: the PEFT folder loads in peft and matches the same
merge on full weights within the re-factorisation error it reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from mergestudio.engine import load_recipe, merge
from mergestudio.errors import RecipeError
from mergestudio.lora.merge import AdapterMergeResult, merge_to_adapter
from safetensors.torch import load_file

from tests.peft_adapters import make_lora, merged_reference

pytest.importorskip("peft")


@pytest.fixture
def adapters(make_checkpoint: Callable[..., Path], tmp_path: Path) -> dict[str, Path]:
    base = make_checkpoint("base")
    return {
        "base": base,
        "one": make_lora(base, tmp_path / "one", seed=11, r=4, targets=("q_proj", "v_proj", "embed_tokens")),
        "two": make_lora(
            base, tmp_path / "two", seed=12, r=2, alpha=4, targets=("q_proj", "up_proj"), use_rslora=True
        ),
    }


def _recipe(adapters: dict[str, Path], method: str, **model_params: Any) -> dict[str, Any]:
    base = adapters["base"]
    recipe: dict[str, Any] = {
        "merge_method": method,
        "models": [
            {"model": f"{base}+{adapters['one']}", "parameters": {"weight": 0.7, **model_params}},
            {"model": f"{base}+{adapters['two']}", "parameters": {"weight": 0.5, **model_params}},
        ],
        "random_seed": 3,
    }
    if method != "linear":
        recipe["base_model"] = str(base)
    return recipe


def _both(
    recipe: dict[str, Any], tmp_path: Path, rank: int | None = None
) -> tuple[AdapterMergeResult, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(result, adapter output applied by peft, the same merge on full weights, base)."""
    result = merge_to_adapter(load_recipe(recipe), tmp_path / "adapter", rank=rank)
    full = merge(recipe, tmp_path / "full", device="cpu").output
    base = Path(recipe["models"][0]["model"].split("+")[0])
    applied = merged_reference(base, tmp_path / "adapter")
    return result, applied, load_file(full / "model.safetensors"), load_file(base / "model.safetensors")


def _relative_error(applied: torch.Tensor, full: torch.Tensor, base: torch.Tensor) -> float:
    update = full - base
    return float((applied - full).norm() / update.norm().clamp(min=1e-12))


def test_task_arithmetic_concatenates_exactly(adapters: dict[str, Path], tmp_path: Path) -> None:
    result, applied, full, _ = _both(_recipe(adapters, "task_arithmetic"), tmp_path)
    routes = {m.tensor: (m.route, m.rank) for m in result.modules}
    assert routes["model.layers.0.self_attn.q_proj.weight"] == ("concatenation", 6)  # 4 + 2
    assert routes["model.layers.1.mlp.up_proj.weight"] == ("concatenation", 2)
    assert routes["model.embed_tokens.weight"] == ("concatenation", 4)
    assert result.max_relative_error < 1e-5
    for name, tensor in full.items():
        assert torch.allclose(applied[name], tensor, atol=1e-5), name


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
def test_ties_and_dare_refactorise_within_the_reported_error(
    adapters: dict[str, Path], tmp_path: Path, method: str
) -> None:
    result, applied, full, base = _both(_recipe(adapters, method, density=0.5), tmp_path, rank=3)
    reported = {m.tensor: m for m in result.modules}
    q = reported["model.layers.0.self_attn.q_proj.weight"]
    assert (q.route, q.rank) == ("svd", 3)
    assert q.relative_error > 1e-3  # sparsified updates are not rank 3: the error is real
    for name, module in reported.items():
        measured = _relative_error(applied[name], full[name], base[name])
        assert measured == pytest.approx(module.relative_error, abs=1e-4), name
    untouched = "model.layers.0.mlp.down_proj.weight"
    assert untouched not in reported and torch.equal(applied[untouched], full[untouched])


def test_knots_in_factor_space_equals_knots_on_full_weights(
    adapters: dict[str, Path], tmp_path: Path
) -> None:
    result, applied, full, base = _both(_recipe(adapters, "knots", density=0.6), tmp_path)
    assert {m.route for m in result.modules} == {"knots"}
    assert result.max_relative_error < 1e-5
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(full[q], base[q], atol=1e-4)
    for name, tensor in full.items():
        assert torch.allclose(applied[name], tensor, atol=2e-5), name


def test_modules_to_save_are_merged_whole(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    one = make_lora(base, tmp_path / "one", seed=1, modules_to_save=["lm_head"])
    two = make_lora(base, tmp_path / "two", seed=2)
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(base),
        "models": [
            {"model": f"{base}+{one}", "parameters": {"weight": 0.5}},
            {"model": f"{base}+{two}", "parameters": {"weight": 1.0}},
        ],
    }
    result, applied, full, _ = _both(recipe, tmp_path)
    assert {m.tensor: m.route for m in result.modules}["lm_head.weight"] == "saved"
    for name, tensor in full.items():
        assert torch.allclose(applied[name], tensor, atol=1e-5), name


def test_inputs_that_are_not_adapters_of_one_base_are_refused(
    adapters: dict[str, Path], make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    recipe = _recipe(adapters, "task_arithmetic")
    recipe["models"][1]["model"] = str(make_checkpoint("full", seed=5))
    with pytest.raises(RecipeError, match="is a full model"):
        merge_to_adapter(load_recipe(recipe), tmp_path / "out")
    other = make_checkpoint("other", seed=9)
    recipe = _recipe(adapters, "task_arithmetic")
    recipe["models"][1]["model"] = f"{other}+{adapters['two']}"
    with pytest.raises(RecipeError, match="same base"):
        merge_to_adapter(load_recipe(recipe), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_knots_on_full_task_matrices_keeps_a_lone_task_and_the_base() -> None:
    from mergestudio.methods import get_method
    from mergestudio.methods.registry import MergeInputs

    knots = get_method("knots").function
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(12, 10, generator=generator)
    tuned = base + 0.1 * torch.randn(12, 10, generator=generator)
    params = {"density": [1.0], "sparsification": "magnitude", "normalize": True, "lambda": 1.0}
    alone = knots(MergeInputs("w", tuned[None], base), weight=[1.0], **params)
    assert torch.allclose(alone, tuned, atol=1e-5)
    same = knots(
        MergeInputs("w", torch.stack([base, base]), base),
        weight=[1.0, 1.0],
        **{**params, "density": [0.5, 0.5]},
    )
    assert torch.equal(same, base)


def test_fan_in_fan_out_adapters_merge_into_a_fan_in_fan_out_adapter(tmp_path: Path) -> None:
    from tests.peft_adapters import tiny_gpt2

    base = tiny_gpt2(tmp_path / "gpt2")
    one = make_lora(base, tmp_path / "one", seed=1, r=2, targets=("c_attn",), fan_in_fan_out=True)
    two = make_lora(base, tmp_path / "two", seed=2, r=3, targets=("c_attn", "c_fc"), fan_in_fan_out=True)
    models = [{"model": f"{base}+{a}", "parameters": {"weight": 1.0, "density": 0.7}} for a in (one, two)]
    recipe = {"merge_method": "knots", "base_model": str(base), "models": models}
    result, applied, full, _ = _both(recipe, tmp_path)
    assert {m.tensor: m.rank for m in result.modules}["transformer.h.0.attn.c_attn.weight"] == 5
    for name, tensor in full.items():
        assert torch.allclose(applied[name], tensor, atol=2e-5), name


def test_the_recipe_s_output_key_writes_the_adapter_and_its_dry_run_checks_the_inputs(
    adapters: dict[str, Path], make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from mergestudio.engine.merge import plan_folder_merge

    recipe = _recipe(adapters, "ties", density=0.6)
    recipe["output"] = {"format": "adapter", "rank": 3}
    plan_folder_merge(recipe, tmp_path / "out").close()  # the dry run: every input an adapter of one base
    by_key = merge_to_adapter(load_recipe(recipe), tmp_path / "by_key")
    assert {m.rank for m in by_key.modules if m.route == "svd"} == {3}
    del recipe["output"]
    by_argument = merge_to_adapter(load_recipe(recipe), tmp_path / "by_argument", rank=3)
    assert [m.relative_error for m in by_key.modules] == [m.relative_error for m in by_argument.modules]
    # A full model among the inputs: the dry run names it; merge() refuses adapter outputs.
    recipe["output"] = {"format": "adapter"}
    recipe["models"][1]["model"] = str(make_checkpoint("full", seed=5))
    with pytest.raises(RecipeError, match=r"output.format adapter: every input must be a LoRA adapter; .*full"):
        plan_folder_merge(recipe, tmp_path / "out")
    with pytest.raises(RecipeError, match="writes a LoRA adapter"):
        merge(recipe, tmp_path / "out2", device="cpu")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_the_dry_run_counts_the_adapter_tensors_it_reads(adapters: dict[str, Path]) -> None:
    from mergestudio.engine import build_plan

    plan = build_plan(load_recipe(_recipe(adapters, "linear")))
    stored = sum(plan.tensor_info(i).nbytes for p in plan.tensors for i in p.all_inputs())
    estimate = plan.estimate().bytes_to_read
    plan.close()
    base = load_file(adapters["base"] / "model.safetensors")
    # Each adapter's LoRA factors are read on top of the base tensors they change, and a
    # saved embedding copy is read instead of the base's rows.
    expected = 0
    for name in ("one", "two"):
        for key, tensor in load_file(adapters[name] / "adapter_model.safetensors").items():
            size = tensor.numel() * tensor.element_size()
            if ".lora_" in key:
                expected += size
            else:
                replaced = base[key.removeprefix("base_model.model.").replace(".base_layer", "")]
                expected += size - replaced.numel() * replaced.element_size()
    assert expected > 0
    assert estimate - stored == expected
