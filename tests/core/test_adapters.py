"""LoRA adapters as sources: applied while streaming, equal to peft's merge_and_unload;
bad adapters refused from their headers and config, before anything is written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe, merge
from mergestudio.errors import SourceError
from mergestudio.io import open_model
from mergestudio.io.adapters import AdapterSource
from safetensors.torch import load_file, save_file

from tests.peft_adapters import edit_adapter_config, make_lora, merged_reference, tiny_gpt2

pytest.importorskip("peft")


def _apply(model: str) -> dict[str, torch.Tensor]:
    """The recipe's way: one input model (BASE+ADAPTER or an adapter) through linear."""
    plan = build_plan(
        load_recipe({"merge_method": "linear", "models": [{"model": model, "parameters": {"weight": 1.0}}]})
    )
    target = DictTarget()
    execute_plan(plan, target, device="cpu")
    plan.close()
    return target.tensors


def _assert_matches(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    for name, tensor in ours.items():
        assert torch.allclose(tensor, reference[name], atol=1e-5), name


def test_lora_through_a_recipe_equals_merge_and_unload(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base = make_checkpoint("base")
    adapter = make_lora(base, tmp_path / "lora", seed=1, targets=("q_proj", "v_proj", "down_proj"))
    merged = _apply(f"{base}+{adapter}")
    reference = merged_reference(base, adapter)
    _assert_matches(merged, reference)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[q], load_file(base / "model.safetensors")[q], atol=1e-3)


def test_rslora_embedding_lm_head_and_modules_to_save(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base = make_checkpoint("base")
    adapter = make_lora(
        base,
        tmp_path / "lora",
        seed=2,
        r=3,
        alpha=5,
        targets=("q_proj", "embed_tokens", "lm_head"),
        use_rslora=True,
        modules_to_save=["post_attention_layernorm"],
        rank_pattern={"q_proj": 2},
    )
    merged = _apply(f"{base}+{adapter}")
    reference = merged_reference(base, adapter)
    _assert_matches(merged, reference)
    original = load_file(base / "model.safetensors")
    for name in (
        "model.embed_tokens.weight",
        "lm_head.weight",
        "model.layers.1.post_attention_layernorm.weight",
    ):
        assert not torch.allclose(merged[name], original[name], atol=1e-4), name


def test_fan_in_fan_out_on_gpt2_conv1d(tmp_path: Path) -> None:
    base = tiny_gpt2(tmp_path / "gpt2")
    adapter = make_lora(base, tmp_path / "lora", seed=3, r=2, targets=("c_attn", "c_fc"), fan_in_fan_out=True)
    merged = _apply(f"{base}+{adapter}")
    _assert_matches(merged, merged_reference(base, adapter))


def test_adapter_alone_opens_the_base_its_config_names(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base = make_checkpoint("base")
    adapter = make_lora(base, tmp_path / "lora", seed=4)
    source = open_model(adapter)
    assert isinstance(source, AdapterSource)
    assert source.adapter is not None and source.adapter.ranks == [4]
    assert source.adapter.target_modules == ["q_proj", "v_proj"]
    source.close()
    _assert_matches(_apply(str(adapter)), merged_reference(base, adapter))


def test_single_adapter_file_with_its_config(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    adapter = make_lora(base, tmp_path / "lora", seed=5)
    merged = _apply(f"{base}+{adapter / 'adapter_model.safetensors'}")
    _assert_matches(merged, merged_reference(base, adapter))


def test_every_method_takes_adapted_inputs(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    one = make_lora(base, tmp_path / "one", seed=6)
    two = make_lora(base, tmp_path / "two", seed=7)
    recipe = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": f"{base}+{one}", "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": f"{base}+{two}", "parameters": {"weight": 1.0, "density": 0.5}},
        ],
    }
    out = merge(recipe, tmp_path / "out", device="cpu")
    merged = load_file(out.output / "model.safetensors")
    original = load_file(base / "model.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[q], original[q])
    up = "model.layers.0.mlp.up_proj.weight"  # no adapter touches it: TIES of nothing is the base
    assert torch.equal(merged[up], original[up])
    assert json.loads((out.output / "config.json").read_text())["model_type"] == "llama"


# ---- bad adapters: clear errors, nothing read, nothing written ----------------------------


def _refused(recipe_model: str, tmp_path: Path, *fragments: str) -> None:
    recipe = {"merge_method": "linear", "models": [{"model": recipe_model, "parameters": {"weight": 1.0}}]}
    with pytest.raises(SourceError) as caught:
        merge(recipe, tmp_path / "out", device="cpu")
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_adapter_for_another_base_is_refused(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    wider = make_checkpoint("wider", hidden=24, intermediate=40)
    adapter = make_lora(wider, tmp_path / "lora", seed=1)
    _refused(f"{base}+{adapter}", tmp_path, "does not fit base", "q_proj", "[24, 24]", "[16, 16]")


def test_adapter_targeting_missing_modules_is_refused(
    tmp_path: Path, make_checkpoint: Callable[..., Path]
) -> None:
    base = make_checkpoint("base")
    gpt2 = tiny_gpt2(tmp_path / "gpt2")
    adapter = make_lora(gpt2, tmp_path / "lora", seed=1, targets=("c_attn",), fan_in_fan_out=True)
    _refused(f"{base}+{adapter}", tmp_path, "c_attn", "the base has no tensor")


def test_missing_config_is_refused(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    adapter = make_lora(base, tmp_path / "lora", seed=1)
    (adapter / "adapter_config.json").unlink()
    _refused(f"{base}+{adapter}", tmp_path, "no adapter_config.json")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(adapter / "adapter_model.safetensors", lone / "lora.safetensors")
    _refused(f"{base}+{lone / 'lora.safetensors'}", tmp_path, "without adapter_config.json")
    # A bare LoRA file named without a base is recognised as an adapter, not opened as a model.
    _refused(str(lone / "lora.safetensors"), tmp_path, "without adapter_config.json")


def test_prefix_tuning_and_dora_are_refused(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = make_checkpoint("base")
    prefix = tmp_path / "prefix"
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).save_pretrained(
        prefix
    )
    _refused(f"{base}+{prefix}", tmp_path, "PREFIX_TUNING", "not supported")
    dora = make_lora(base, tmp_path / "dora", seed=1, use_dora=True)
    _refused(f"{base}+{dora}", tmp_path, "use_dora")


def test_unpaired_lora_tensor_is_refused(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    base = make_checkpoint("base")
    adapter = make_lora(base, tmp_path / "lora", seed=1)
    tensors = load_file(adapter / "adapter_model.safetensors")
    del tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    save_file(tensors, adapter / "adapter_model.safetensors")
    _refused(f"{base}+{adapter}", tmp_path, "model.layers.0.self_attn.q_proj", "lora_A")


def test_adapter_without_a_base_name_asks_for_one(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base = make_checkpoint("base")
    adapter = make_lora(base, tmp_path / "lora", seed=1)
    edit_adapter_config(adapter, base_model_name_or_path=None)
    _refused(str(adapter), tmp_path, "BASE+ADAPTER")


def test_hub_adapter_on_a_hub_base_offline_from_the_cache(
    make_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.core.test_sources import _populate_hub_cache

    base = make_checkpoint("base")
    adapter = make_lora(base, tmp_path / "lora", seed=8)
    reference = merged_reference(base, adapter)
    edit_adapter_config(adapter, base_model_name_or_path="acme/base")
    cache = tmp_path / "hub"
    for repo, folder, commit in (("acme/base", base, "a" * 40), ("acme/lora", adapter, "b" * 40)):
        _populate_hub_cache(
            cache, repo, commit, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        )
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # read by io.hub when a download starts
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_matches(_apply("acme/base+acme/lora"), reference)
    alone = open_model("acme/lora")  # its config names the base
    assert isinstance(alone, AdapterSource) and alone.reference == "acme/lora"
    assert alone.revision == "a" * 40  # the base's commit: the tensors come from it
    alone.close()
