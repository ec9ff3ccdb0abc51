"""SVC, the post-processing plug-in: the paper's property on constructed task vectors
(over-counted shared directions are scaled back, singular vectors kept), and its place in
recipes and the executor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe
from mergestudio.errors import RecipeError
from mergestudio.methods import MergeInputs, get_method
from mergestudio.methods.plugins import all_post_processes, get_post_process

from tests.checkpoints import TinyLlama, tiny_tensors

MATRIX = "model.layers.0.self_attn.q_proj.weight"


def svc(tau: torch.Tensor, base: torch.Tensor, merged: torch.Tensor, name: str = MATRIX, **params: object):
    return get_post_process("svc").apply(MergeInputs(name, base + tau, base), merged, dict(params))


def test_copies_of_one_update_added_up_come_back_as_that_update() -> None:
    generator = torch.Generator().manual_seed(0)
    task = torch.randn(6, 5, generator=generator)
    base = torch.randn(6, 5, generator=generator)
    tau = torch.stack([task, task, task])
    summed = base + tau.sum(0)  # task arithmetic with weight 1: three times the update
    calibrated = svc(tau, base, summed, alpha=0.1)
    assert torch.allclose(calibrated, base + task, atol=1e-4)


def test_orthogonal_tasks_are_not_shrunk_and_shared_ones_are() -> None:
    base = torch.zeros(4, 4)
    shared = torch.zeros(4, 4)
    shared[0, 0] = 1.0
    a, b = shared.clone(), shared.clone()
    a[1, 1] = 2.0  # own direction of task a
    b[2, 2] = 3.0  # own direction of task b
    tau = torch.stack([a, b])
    calibrated = svc(tau, base, tau.sum(0), alpha=0.5)
    # the shared direction was counted twice (s = 2 for both tasks): gamma = 2 / 4
    assert calibrated[0, 0] == pytest.approx(1.0, abs=1e-5)
    # an own direction: s = 1 for its task, 0 -> alpha for the other: gamma = 2 / 1.5
    assert calibrated[1, 1] == pytest.approx(2.0 * 2 / 1.5, abs=1e-5)
    assert calibrated[2, 2] == pytest.approx(3.0 * 2 / 1.5, abs=1e-5)


def test_only_singular_values_change() -> None:
    generator = torch.Generator().manual_seed(1)
    tau = torch.randn(3, 7, 5, generator=generator)
    base = torch.zeros(7, 5)
    merged = tau.sum(0)
    calibrated = svc(tau, base, merged)
    u, _, vh = torch.linalg.svd(merged, full_matrices=False)
    # Uᵀ Δ' V is diagonal: the same singular vectors, new singular values
    core = u.T @ calibrated @ vh.T
    assert torch.allclose(core - torch.diag(torch.diagonal(core)), torch.zeros_like(core), atol=1e-4)
    assert not torch.allclose(calibrated, merged, atol=1e-3)


@pytest.mark.parametrize("name", ["model.norm.weight", "model.embed_tokens.weight"])
def test_vectors_and_embeddings_pass_through(name: str) -> None:
    shape = (4,) if name.endswith("norm.weight") else (6, 4)
    tau = torch.ones((2, *shape))
    merged = torch.full(shape, 5.0)
    assert torch.equal(svc(tau, torch.zeros(shape), merged, name=name), merged)


def test_svc_is_declared_with_its_paper() -> None:
    [plugin] = [p for p in all_post_processes() if p.name == "svc"]
    assert plugin.paper and "2602.05536" in plugin.paper
    assert plugin.param("alpha") is not None


def _recipe(family: dict[str, Path], **extra: object) -> dict[str, object]:
    recipe: dict[str, object] = {
        "merge_method": "task_arithmetic",
        "base_model": str(family["base"]),
        "models": [
            {"model": str(family["ft1"]), "parameters": {"weight": 1.0}},
            {"model": str(family["ft2"]), "parameters": {"weight": 1.0}},
        ],
    }
    recipe.update(extra)
    return recipe


def test_recipe_post_process_runs_on_every_merged_tensor(model_family: dict[str, Path]) -> None:
    recipe = load_recipe(_recipe(model_family, post_process={"name": "svc", "parameters": {"alpha": 0.3}}))
    assert "post_process" in recipe.to_yaml()
    plan = build_plan(recipe)
    target = DictTarget()
    execute_plan(plan, target, device="cpu")
    plan.close()
    spec = TinyLlama()
    base, ft1, ft2 = (tiny_tensors(spec, seed) for seed in (0, 1, 2))
    tau = torch.stack([ft1[MATRIX] - base[MATRIX], ft2[MATRIX] - base[MATRIX]])
    expected = svc(tau, base[MATRIX], base[MATRIX] + tau.sum(0), alpha=0.3)
    assert torch.allclose(target.tensors[MATRIX], expected, atol=1e-5)
    norm = "model.norm.weight"
    assert torch.allclose(target.tensors[norm], ft1[norm] + ft2[norm] - base[norm], atol=1e-6)


@pytest.mark.parametrize(
    ("post", "message"),
    [
        ({"name": "nope"}, "unknown post-process 'nope'"),
        ({"name": "svc", "parameters": {"beta": 1}}, "post_process.parameters.beta: unknown parameter"),
        (
            {"name": "svc", "parameters": {"alpha": -1.0}},
            "post_process.parameters.alpha: alpha=-1.0 is outside",
        ),
        ({"name": "svc", "extra": 1}, "unknown key 'post_process.extra'"),
    ],
)
def test_bad_post_process_is_a_recipe_error(model_family: dict[str, Path], post: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build_plan(load_recipe(_recipe(model_family, post_process=post)))


def test_post_process_needs_a_method_that_uses_the_base(model_family: dict[str, Path]) -> None:
    recipe = _recipe(model_family, post_process={"name": "svc"})
    recipe["merge_method"] = "linear"
    assert not get_method("linear").takes_base(str(model_family["base"]))
    with pytest.raises(RecipeError, match="'linear' does not"):
        build_plan(load_recipe(recipe))


def test_nan_in_an_input_is_named_before_the_plug_in_runs(
    model_family: dict[str, Path], tmp_path: Path
) -> None:
    # task_arithmetic passes NaN on (the executor would only check its result), but SVC's
    # SVD fails on NaN: the input must be found first and named.
    from mergestudio.errors import MergeStudioError
    from safetensors.torch import load_file, save_file

    folder = model_family["ft2"]
    weights = load_file(str(folder / "model.safetensors"))
    weights[MATRIX][0, 0] = float("nan")
    save_file(weights, str(folder / "model.safetensors"))
    plan = build_plan(load_recipe(_recipe(model_family, post_process={"name": "svc"})))
    try:
        with pytest.raises(MergeStudioError, match="NaN") as raised:
            execute_plan(plan, DictTarget(), device="cpu")
    finally:
        plan.close()
    assert MATRIX in str(raised.value)
