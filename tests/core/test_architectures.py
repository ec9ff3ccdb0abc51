"""Families as data: every registered family, built as a tiny random model by its own
library, is recognised, merges (linear and TIES), loads back and runs, and follows a
gradient over its blocks. Plus SD UNet block weights in both namings, unknown
architectures, lanes that mean the same as mergekit filters, and kept buffers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from mergestudio.architectures import FAMILIES, build_layout, family_named, layout_of
from mergestudio.architectures.layout import lane_of
from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe
from mergestudio.engine.merge import merge
from mergestudio.errors import RecipeError
from mergestudio.io.sources import open_model
from safetensors.torch import load_file, save_file

from tests.families import SD15_UNET, FamilyCase, single_file_state_dict, transformers_cases, unet_cases

CASES = transformers_cases()


@pytest.fixture(scope="module")
def unets() -> list[FamilyCase]:
    pytest.importorskip("diffusers")
    return unet_cases()


def _run(recipe: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    plan = build_plan(load_recipe(recipe))
    target = DictTarget()
    execute_plan(plan, target, device="cpu")
    plan.close()
    return target.tensors, plan.warnings


def _check_family(case: FamilyCase, tmp_path: Path) -> None:
    base, tune_a, tune_b = case.save(tmp_path, (0, 1, 2))
    source = open_model(base)
    layout = source.layout
    assert layout.family.name == case.family and not layout.warnings
    library_model = case.load(base)
    depths = {stack: len(layout.stack(stack)) for stack in layout.stacks}
    assert depths == case.depths(library_model)

    for method, params in (("linear", {"weight": 1.0}), ("ties", {"weight": 1.0, "density": 0.5})):
        models = [{"model": str(p), "parameters": params} for p in (tune_a, tune_b)]
        recipe = {"merge_method": method, "base_model": str(base), "models": models, "dtype": "float32"}
        if method == "linear":
            recipe.pop("base_model")
        out = tmp_path / f"out-{method}"
        merge(recipe, out, device="cpu", compute_dtype="float32")
        merged = case.load(out)
        with torch.no_grad():
            result = case.forward(merged)
        assert torch.isfinite(result).all()

    # A gradient: model a alone at the first block, model b alone at the last.
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(tune_a), "parameters": {"weight": [1.0, 0.0]}},
            {"model": str(tune_b), "parameters": {"weight": [0.0, 1.0]}},
        ],
    }
    merged, _ = _run(recipe)
    a, b = open_model(tune_a), open_model(tune_b)
    first = [n for n, r in layout.roles.items() if r.block is not None and r.block.order == 0 and r.merge]
    last = [n for n, r in layout.roles.items() if r.block is not None and r.block.order == len(layout.blocks) - 1]
    stack = layout.blocks[-1].stack
    last = [n for n, r in layout.roles.items() if r.block is not None and r.block == layout.stack(stack)[-1]]
    assert first and last
    for name in first:
        torch.testing.assert_close(merged[name], a.read(name).float())
    for name in last:
        torch.testing.assert_close(merged[name], b.read(name).float())


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.family}-{type(c.build()).__name__}")
def test_family_merges_loads_and_follows_gradients(case: FamilyCase, tmp_path: Path) -> None:
    _check_family(case, tmp_path)


@pytest.mark.parametrize("index", [0, 1], ids=["sd15", "sdxl"])
def test_unet_merges_loads_and_follows_gradients(unets: list[FamilyCase], index: int, tmp_path: Path) -> None:
    _check_family(unets[index], tmp_path)


def test_every_registered_family_has_a_test_model() -> None:
    tested = {c.family for c in CASES} | {"sd15-unet", "sdxl-unet", "sd15-unet-single-file",
                                           "sdxl-unet-single-file"}
    assert {f.name for f in FAMILIES} <= tested | {"mistral"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.family}-{type(c.build()).__name__}")
def test_lanes_mean_what_mergekit_filters_mean(case: FamilyCase, tmp_path: Path) -> None:
    """The lane of a tensor is the first lane whose filter is a substring of its name,
    so a curve written as mergekit ``filter`` conditions selects the same tensors."""
    names = list(open_model(case.save(tmp_path, (0,))[0]).tensors)  # as saved: the library's own names
    family = family_named(case.family)
    layout = build_layout(family, names)
    for name in names:
        by_filters = next((lane.name for lane in layout.lanes if any(f in name for f in lane.filters)),
                          layout.lanes[-1].name)
        assert lane_of(name, family) == by_filters, name
    # Detected without the config too (single files): by tensor names alone.
    assert layout_of(None, names).family.name in {case.family, "llama"}


def test_mixtral_experts_get_their_own_lanes(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.family == "mixtral")
    layout = layout_of(None, list(open_model(case.save(tmp_path, (0,))[0]).tensors))
    assert [lane.name for lane in layout.lanes] == [
        "attention", "expert 0", "expert 1", "expert 2", "router", "norm", "embedding"
    ]
    assert layout.lane("expert 1").filters == ("experts.1.",)  # type: ignore[union-attr]


def test_sd15_unet_block_weights_in_single_file_naming(unets: list[FamilyCase], tmp_path: Path) -> None:
    """An IN/M/OUT block-weight curve on SD 1.5 UNets saved with ``model.diffusion_model.*``
    names: each block gets its own weight, and the result loads into diffusers."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    folders = unets[0].save(tmp_path, (1, 2))
    files = []
    for folder in folders:
        tensors = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
        path = tmp_path / f"{folder.name}.safetensors"
        save_file(single_file_state_dict(tensors), str(path))
        files.append(path)
    layout = open_model(files[0]).layout
    assert layout.family.name == "sd15-unet-single-file"
    diffusers_layout = open_model(folders[0]).layout
    assert [b.label for b in layout.blocks] == [b.label for b in diffusers_layout.blocks]
    # Both namings put every tensor in the same block.
    for name, role in diffusers_layout.roles.items():
        single = single_file_state_dict({name: torch.zeros(1)}) if ".upsamplers." not in name else None
        if single:
            assert layout.role(next(iter(single))).block.label == role.block.label, name  # type: ignore[union-attr]

    labels = [b.label for b in layout.blocks]
    weights = [1.0 if label.startswith("IN") else 0.5 if label == "M00" else 0.0 for label in labels]
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(files[0]), "parameters": {"weight": weights}},
            {"model": str(files[1]), "parameters": {"weight": [1 - w for w in weights]}},
        ],
    }
    merged, _ = _run(recipe)
    a, b = load_file(str(files[0])), load_file(str(files[1]))
    for name, tensor in merged.items():
        label = layout.role(name).block.label  # type: ignore[union-attr]
        expected = a[name] if label.startswith("IN") else b[name] if label != "M00" else (a[name] + b[name]) / 2
        torch.testing.assert_close(tensor, expected, msg=f"{name} in {label}")
    unet = UNet2DConditionModel(**SD15_UNET)
    converted = convert_ldm_unet_checkpoint(merged, unet.config)
    missing, unexpected = unet.load_state_dict(converted, strict=True), None
    del missing, unexpected
    with torch.no_grad():
        assert torch.isfinite(unets[0].forward(unet)).all()


def test_block_names_work_as_filters(unets: list[FamilyCase], tmp_path: Path) -> None:
    """`filter: IN04` selects SuperMerger's block IN04 (no tensor name contains it)."""
    folders = unets[0].save(tmp_path, (1, 2))
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(folders[0]), "parameters": {"weight": [{"filter": "IN04", "value": 1.0}, {"value": 0.0}]}},
            {"model": str(folders[1]), "parameters": {"weight": [{"filter": "IN04", "value": 0.0}, {"value": 1.0}]}},
        ],
    }
    merged, _ = _run(recipe)
    layout = open_model(folders[0]).layout
    a, b = open_model(folders[0]), open_model(folders[1])
    in04 = [n for n, r in layout.roles.items() if r.block and r.block.label == "IN04"]
    assert {n.split(".resnets")[0].split(".attentions")[0] for n in in04} == {"down_blocks.1"}
    for name in merged:
        expected = a.read(name) if name in in04 else b.read(name)
        torch.testing.assert_close(merged[name], expected.float())


def test_unknown_architecture_without_layers_merges_with_a_warning(tmp_path: Path) -> None:
    paths = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        path = tmp_path / f"x{seed}.safetensors"
        save_file({"encoder.weight": torch.randn(4, 3, generator=generator),
                   "head.bias": torch.randn(3, generator=generator)}, str(path))
        paths.append(path)
    merged, warnings = _run({"merge_method": "linear", "models": [
        {"model": str(p), "parameters": {"weight": [0.25, 1.0]}} for p in paths
    ]})
    a, b = load_file(str(paths[0])), load_file(str(paths[1]))
    torch.testing.assert_close(merged["encoder.weight"], (a["encoder.weight"] + b["encoder.weight"]) / 2)
    assert any("not in the family registry" in w and "no layers" in w for w in warnings)
    assert open_model(paths[0]).layout.lanes[0].name == "all"


def test_slices_of_a_family_without_layers_name_the_slice(tmp_path: Path) -> None:
    path = tmp_path / "x1.safetensors"
    save_file({"encoder.weight": torch.ones(2, 2)}, str(path))
    recipe = {"merge_method": "passthrough", "slices": [{"sources": [{"model": str(path), "layer_range": [0, 1]}]}]}
    with pytest.raises(RecipeError, match=r"slices\[0\]: .*x1\.safetensors is a unknown, no layers.*`models`"):
        build_plan(load_recipe(recipe))


def test_missing_tensor_names_models_and_the_tensor(tmp_path: Path) -> None:
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"encoder.weight": torch.ones(2, 2), "head.bias": torch.ones(2)}, str(first))
    save_file({"encoder.weight": torch.ones(2, 2)}, str(second))
    recipe = {"merge_method": "linear", "models": [{"model": str(first), "parameters": {"weight": 1.0}},
                                                   {"model": str(second), "parameters": {"weight": 1.0}}]}
    with pytest.raises(Exception, match=r"^models: tensor 'head\.bias' is missing from model .*b\.safetensors"):
        build_plan(load_recipe(recipe))


def test_rotary_caches_are_copied_not_merged(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.family == "llama")
    folders = case.save(tmp_path, (1, 2))
    for scale, folder in zip((1.0, 3.0), folders, strict=True):
        file = folder / "model.safetensors"
        tensors = load_file(str(file))
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.full((4,), scale)
        save_file(tensors, str(file))
    merged, _ = _run({"merge_method": "linear", "models": [
        {"model": str(f), "parameters": {"weight": 1.0}} for f in folders
    ]})
    assert merged["model.layers.0.self_attn.rotary_emb.inv_freq"].tolist() == [1.0] * 4


def test_tied_head_is_read_from_the_embedding(tmp_path: Path) -> None:
    """A GPT-2 file without lm_head.weight (tied) merges with one that stores it."""
    case = next(c for c in CASES if c.family == "gpt2")
    folders = case.save(tmp_path, (1, 2))
    file = folders[0] / "model.safetensors"
    tensors = load_file(str(file))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()
    save_file(tensors, str(file), metadata={"format": "pt"})
    merged, _ = _run({"merge_method": "linear", "models": [
        {"model": str(f), "parameters": {"weight": 1.0}} for f in folders
    ]})
    b = load_file(str(folders[1] / "model.safetensors"))
    expected = (tensors["transformer.wte.weight"] + b["transformer.wte.weight"]) / 2
    torch.testing.assert_close(merged["lm_head.weight"], expected)


def test_config_picks_the_family_before_names(tmp_path: Path) -> None:
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"]
    assert layout_of({"architectures": ["MistralForCausalLM"]}, names).family.name == "mistral"
    assert layout_of({"model_type": "qwen2"}, names).family.name == "qwen2"
    assert layout_of(None, names).family.name == "llama"
    guessed = layout_of({"architectures": ["NovelForCausalLM"]}, ["backbone.blocks.0.w", "backbone.blocks.1.w"])
    assert guessed.family.name == "guessed" and "NovelForCausalLM" in guessed.warnings[0]
    assert json.dumps([b.label for b in guessed.blocks]) == '["0", "1"]'


def test_preflight_shows_family_blocks_and_lanes(unets: list[FamilyCase], tmp_path: Path) -> None:
    from mergestudio.preflight import preflight

    base, other = (open_model(p) for p in unets[0].save(tmp_path, (0, 1)))
    family = {c.topic: c for c in preflight(base, [other]).checks}["family"]
    assert family.status == "ok"
    assert family.message == (
        "SD 1.5 UNet (diffusers names): 26 blocks (BASE … OUT11); "
        "lanes self-attention, cross-attention, feed-forward, other"
    )
    gpt2 = open_model(next(c for c in CASES if c.family == "gpt2").save(tmp_path, (0,))[0])
    mismatch = {c.topic: c for c in preflight(base, [gpt2]).checks}["family"]
    assert mismatch.status == "error" and "GPT-2, but the base is SD 1.5 UNet" in mismatch.message


def test_preflight_warns_when_config_depth_and_names_disagree(tmp_path: Path) -> None:
    from mergestudio.preflight import preflight

    case = next(c for c in CASES if c.family == "qwen2")
    base, other = case.save(tmp_path, (0, 1))
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] = 5
    (other / "config.json").write_text(json.dumps(config))
    family = {c.topic: c for c in preflight(open_model(base), [open_model(other)]).checks}["family"]
    assert family.status == "warning"
    assert "config.json says layers has 5 blocks, the tensor names show 3" in family.message


def test_genome_lanes_and_groups_follow_the_unet_blocks(unets: list[FamilyCase], tmp_path: Path) -> None:
    from mergestudio.recipe.model import Recipe
    from mergestudio.search.genome import Genome
    from mergestudio.search.spec import GeneSpec, SpecError

    folders = unets[0].save(tmp_path, (0, 1, 2))
    base = Recipe.from_dict({
        "merge_method": "task_arithmetic", "base_model": str(folders[0]),
        "models": [{"model": str(f), "parameters": {"weight": 0.5}} for f in folders[1:]],
    })
    genome = Genome.build([GeneSpec(param="weight", low=0, high=1, models=[str(folders[1])],
                                    lanes=["cross-attention"], layer_groups=26)], base)
    assert len(genome.genes) == 26
    values = {g.name: i / 25 for i, g in enumerate(genome.genes)}
    setting = genome.recipe(values).to_dict()["models"][0]["parameters"]["weight"]
    assert setting[:2] == [{"filter": "attn1", "value": 0.5}, {"filter": "attn2", "value": [
        round(i / 25, 6) for i in range(26)]}]
    assert setting[-1] == {"value": 0.5}
    plan = build_plan(genome.recipe(values))
    weights = {p.name: p.model_params["weight"][0] for p in plan.tensors if p.copy_from is None}
    plan.close()
    # One gene per block: block IN04's cross-attention gets gene 5's value.
    assert weights["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q.weight"] == pytest.approx(5 / 25)
    assert weights["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"] == 0.5
    with pytest.raises(SpecError, match=r"genome\[0\]\.lanes: mlp not a lane of this model"):
        Genome.build([GeneSpec(param="weight", low=0, high=1, lanes=["mlp"])], base)


def test_analysis_reports_blocks_and_lanes_of_the_family(unets: list[FamilyCase], tmp_path: Path) -> None:
    from mergestudio.analysis import analyze
    from mergestudio.analysis.job import LayerAnalyzed

    base, *tunes = unets[0].save(tmp_path, (0, 1, 2))
    events: list[Any] = []
    report = analyze(base, tunes, cache_dir=tmp_path / "cache", events=events.append)
    assert report.family == "SD 1.5 UNet (diffusers names)"
    assert report.blocks[0] == "BASE" and report.blocks[13] == "M00" and len(report.blocks) == 26
    assert report.lanes == ["self-attention", "cross-attention", "feed-forward", "other"]
    layers = report.layers()
    assert [entry["block"] for entry in layers] == report.blocks
    assert set(layers[report.blocks.index("IN04")]["groups"]) == set(report.lanes)
    done = [e for e in events if isinstance(e, LayerAnalyzed)]
    assert [e.summary["block"] for e in done] == report.blocks
