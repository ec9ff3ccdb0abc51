from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe, merge
from mergestudio.engine.plan import RUNTIME_BYTES
from mergestudio.errors import Cancelled, MergeError, PlanError, RecipeError, SourceError
from mergestudio.events import CancelToken, LogLine, Progress, ProgressReporter
from safetensors.torch import load_file, save_file

from tests.checkpoints import TinyLlama, tiny_tensors, write_checkpoint


def _recipe(family: dict[str, Path], method: str = "task_arithmetic", **extra: object) -> dict[str, object]:
    recipe: dict[str, object] = {
        "merge_method": method,
        "base_model": str(family["base"]),
        "models": [
            {"model": str(family["ft1"]), "parameters": {"weight": 0.6}},
            {"model": str(family["ft2"]), "parameters": {"weight": [0.0, 1.0]}},
        ],
    }
    recipe.update(extra)
    return recipe


def _merge_in_memory(recipe: dict[str, object]) -> dict[str, torch.Tensor]:
    plan = build_plan(load_recipe(recipe))
    target = DictTarget()
    execute_plan(plan, target, device="cpu")
    plan.close()
    return target.tensors


def test_task_arithmetic_with_layer_gradient(model_family: dict[str, Path]) -> None:
    merged = _merge_in_memory(_recipe(model_family))
    spec = TinyLlama()
    base, ft1, ft2 = (tiny_tensors(spec, seed) for seed in (0, 1, 2))
    assert set(merged) == set(spec.shapes())
    for name, value in merged.items():
        layer = int(name.split(".")[2]) if ".layers." in name else None
        # A models recipe is one slice over both layers: t = 0 for layer 0, t = 1 for
        # layer 1, and (as in mergekit) t = 0 for the tensors outside the layers.
        t = 0.0 if layer is None else float(layer)
        expected = base[name] + 0.6 * (ft1[name] - base[name]) + t * (ft2[name] - base[name])
        assert torch.allclose(value, expected, atol=1e-6), name


def test_filters_pick_per_tensor_values(model_family: dict[str, Path]) -> None:
    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(model_family["ft1"])}, {"model": str(model_family["ft2"])}],
        "parameters": {"weight": [{"filter": "self_attn", "value": 1.0}, {"value": 0.0}]},
    }
    # weight 1 on both for attention (average), 0 elsewhere is not allowed to divide by
    # zero, so give ft1 its own weight outside attention.
    recipe["models"][0]["parameters"] = {"weight": [{"filter": "self_attn", "value": 1.0}, {"value": 1.0}]}
    merged = _merge_in_memory(recipe)
    ft1, ft2 = tiny_tensors(TinyLlama(), 1), tiny_tensors(TinyLlama(), 2)
    q = "model.layers.0.self_attn.q_proj.weight"
    up = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(merged[q], (ft1[q] + ft2[q]) / 2, atol=1e-6)
    assert torch.allclose(merged[up], ft1[up], atol=1e-6)


def test_passthrough_slices_build_a_frankenmerge(make_checkpoint: Callable[..., Path]) -> None:
    a = make_checkpoint("a", seed=1, layers=4)
    b = make_checkpoint("b", seed=2, layers=4)
    recipe = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(a), "layer_range": [0, 3]}]},
            {"sources": [{"model": str(b), "layer_range": [1, 4]}]},
        ],
    }
    merged = _merge_in_memory(recipe)
    ta, tb = tiny_tensors(TinyLlama(layers=4), 1), tiny_tensors(TinyLlama(layers=4), 2)
    assert torch.equal(merged["model.layers.2.mlp.up_proj.weight"], ta["model.layers.2.mlp.up_proj.weight"])
    # output layer 3 is b's layer 1, output layer 5 is b's layer 3
    assert torch.equal(merged["model.layers.3.mlp.up_proj.weight"], tb["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(
        merged["model.layers.5.self_attn.q_proj.weight"], tb["model.layers.3.self_attn.q_proj.weight"]
    )
    assert torch.equal(merged["model.embed_tokens.weight"], ta["model.embed_tokens.weight"])
    assert torch.equal(merged["lm_head.weight"], tb["lm_head.weight"])
    assert sum(".input_layernorm." in n for n in merged) == 6


def test_output_folder_is_a_loadable_model(model_family: dict[str, Path], tmp_path: Path) -> None:
    events: list[object] = []
    out = tmp_path / "merged"
    result = merge(
        _recipe(model_family, dtype="bfloat16"), out, device="cpu", shard_size=3000, events=events.append
    )
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" in files
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) == result.shards > 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(TinyLlama().shapes())
    loaded = {}
    for shard in shards:
        loaded.update(load_file(str(out / shard)))
    assert all(t.dtype == torch.bfloat16 for t in loaded.values())
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and config["num_hidden_layers"] == 2
    assert {"tokenizer_config.json", "generation_config.json", "README.md"} <= set(files)
    card = (out / "README.md").read_text()
    assert "task_arithmetic" in card and str(model_family["ft2"]) in card and "weight: [0.0, 1.0]" in card
    assert any(isinstance(e, Progress) and e.done == e.total for e in events)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    logits = model(torch.tensor([[1, 5, 7]])).logits
    assert logits.shape == (1, 3, TinyLlama().vocab)


def test_cancel_leaves_nothing(
    model_family: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Report every tensor, so the cancel lands in the middle of the merge.
    monkeypatch.setattr(
        "mergestudio.engine.execute.ProgressReporter", partial(ProgressReporter, min_interval_s=0)
    )
    cancel = CancelToken()

    def cancel_midway(event: object) -> None:
        if isinstance(event, Progress) and event.done >= 3:
            cancel.cancel()

    out = tmp_path / "merged"
    with pytest.raises(Cancelled):
        merge(_recipe(model_family), out, device="cpu", events=cancel_midway, cancel=cancel)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in model_family]
    assert leftovers == [], "no output and no staging folder"


def test_existing_target_needs_overwrite(model_family: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(MergeError, match="already exists"):
        merge(_recipe(model_family), out, device="cpu")
    assert (out / "keep.txt").read_text() == "precious"
    merge(_recipe(model_family), out, device="cpu", overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in model_family) == ["merged"]


def test_mismatched_shapes_name_tensor_and_models(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base = make_checkpoint("base")
    wide = make_checkpoint("wide", seed=1, intermediate=40)
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(base), "parameters": {"weight": 1}},
            {"model": str(wide), "parameters": {"weight": 1}},
        ],
    }
    with pytest.raises(PlanError, match=r"mlp\.\w+_proj\.weight' has shape \[\d+, \d+\] in .*wide but"):
        merge(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tensor_names_model(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    broken = tmp_path / "broken"
    tensors = tiny_tensors(TinyLlama(), 1)
    del tensors["model.layers.1.mlp.down_proj.weight"]
    broken.mkdir()
    save_file(tensors, str(broken / "model.safetensors"))
    (broken / "config.json").write_text((base / "config.json").read_text())
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(base), "parameters": {"weight": 1}},
            {"model": str(broken), "parameters": {"weight": 1}},
        ],
    }
    with pytest.raises(
        PlanError, match=r"'model\.layers\.1\.mlp\.down_proj\.weight' is missing from model .*broken"
    ):
        build_plan(load_recipe(recipe))


def test_different_architectures_are_refused(make_checkpoint: Callable[..., Path]) -> None:
    base = make_checkpoint("base")
    other = make_checkpoint("other", seed=1)
    config = json.loads((other / "config.json").read_text())
    config["architectures"] = ["MistralForCausalLM"]
    (other / "config.json").write_text(json.dumps(config))
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(base), "parameters": {"weight": 1}},
            {"model": str(other), "parameters": {"weight": 1}},
        ],
    }
    with pytest.raises(PlanError, match="different architectures"):
        build_plan(load_recipe(recipe))


def test_missing_required_parameter(model_family: dict[str, Path]) -> None:
    recipe = {"merge_method": "linear", "models": [{"model": str(model_family["ft1"])}]}
    with pytest.raises(RecipeError, match="'weight' is required by 'linear' and not set for .*ft1"):
        build_plan(load_recipe(recipe))


def test_slerp_needs_exactly_two_models(model_family: dict[str, Path]) -> None:
    recipe = _recipe(model_family, method="slerp", parameters={"t": 0.5})
    for model in recipe["models"]:  # type: ignore[attr-defined]
        model.pop("parameters")
    with pytest.raises(RecipeError, match="exactly 1 input model"):
        build_plan(load_recipe(recipe))


def test_dry_run_estimate_reads_no_data(model_family: dict[str, Path]) -> None:
    plan = build_plan(load_recipe(_recipe(model_family, out_dtype="float16")))
    estimate = plan.estimate()
    params = sum(torch.Size(s).numel() for s in TinyLlama().shapes().values())
    assert estimate.tensor_count == len(TinyLlama().shapes())
    assert estimate.bytes_to_read == 3 * params * 4  # base + two fine-tunes, float32
    assert estimate.output_bytes == params * 2
    # The documented model: the runtime, the largest tensor's stacked inputs, result and two
    # temporaries in float32 ((3 inputs + 3) × 4 bytes an entry: each is smaller than a
    # step), and the three largest float16 results (two queued for the writer, one made).
    by_size = sorted(TinyLlama().shapes().items(), key=lambda item: -torch.Size(item[1]).numel())
    largest_numel = torch.Size(by_size[0][1]).numel()
    queued = sum(torch.Size(shape).numel() * 2 for _, shape in by_size[:3])
    assert estimate.largest_tensor == by_size[0][0]
    assert estimate.peak_memory_bytes == RUNTIME_BYTES + largest_numel * (3 + 3) * 4 + queued
    assert estimate.fits and estimate.whole_tensor_bytes == 0
    assert all(not s._mapped._maps for s in plan.sources.values()), "no file was mapped"


def test_dtype_mismatch_is_warned(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    half = write_checkpoint(tmp_path / "half", TinyLlama(), seed=1, dtype=torch.float16)
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(base), "parameters": {"weight": 1}},
            {"model": str(half), "parameters": {"weight": 1}},
        ],
    }
    plan = build_plan(load_recipe(recipe))
    assert any("dtype mismatch" in w for w in plan.warnings)


def test_chunked_execution_equals_whole_tensor(model_family: dict[str, Path]) -> None:
    plan = build_plan(load_recipe(_recipe(model_family)))
    whole, chunked = DictTarget(), DictTarget()
    execute_plan(plan, whole, device="cpu", chunk_bytes=1 << 30)
    execute_plan(plan, chunked, device="cpu", chunk_bytes=256)
    for name, tensor in whole.tensors.items():
        assert torch.equal(tensor, chunked.tensors[name]), name


def test_garbage_input_fails_before_any_output(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    (base / "model.safetensors").write_bytes(b"\x00" * 64)
    recipe = {"merge_method": "linear", "models": [{"model": str(base), "parameters": {"weight": 1}}]}
    with pytest.raises(SourceError, match="model.safetensors"):
        merge(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_log_events_carry_warnings(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    extra = tmp_path / "extra"
    tensors = tiny_tensors(TinyLlama(), 1)
    tensors["model.extra_buffer"] = torch.zeros(3)
    extra.mkdir()
    save_file(tensors, str(extra / "model.safetensors"))
    (extra / "config.json").write_text((base / "config.json").read_text())
    recipe = {
        "merge_method": "linear",
        "base_model": str(base),
        "models": [
            {"model": str(base), "parameters": {"weight": 1}},
            {"model": str(extra), "parameters": {"weight": 1}},
        ],
    }
    events: list[object] = []
    merge(recipe, tmp_path / "out", events=events.append)
    warnings = [e.message for e in events if isinstance(e, LogLine) and e.level == "warning"]
    assert any("model.extra_buffer" in w for w in warnings)
