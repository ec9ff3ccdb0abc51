"""The resident evaluator: merged tensors are written straight into a loaded model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mergestudio.errors import MergeError
from mergestudio.evaluate import CausalLM, load_task
from mergestudio.evaluate.resident import ModuleTarget, ResidentEvaluator

from .evalfixtures import write_bigram_model


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("resident")
    # Model A continues "q" with "abc", model B with "xyz"; their average is in between.
    a = root / "a"
    b = root / "b"
    write_bigram_model(a, {"<s>": "q", "q": "a", "a": "b", "b": "c", "c": "</s>"})
    write_bigram_model(b, {"<s>": "q", "q": "x", "x": "y", "y": "z", "z": "</s>"})
    task = root / "task.jsonl"
    task.write_text('{"prompt": "q", "target": "abc"}\n{"prompt": "q", "target": "xyz"}\n')
    return a, b, task


def _linear(a: Path, b: Path, wa: float, wb: float) -> dict[str, object]:
    return {
        "merge_method": "linear",
        "models": [
            {"model": str(a), "parameters": {"weight": wa}},
            {"model": str(b), "parameters": {"weight": wb}},
        ],
    }


def test_module_target_copies_in_place_and_checks_names_and_shapes(two_models) -> None:
    a, _, _ = two_models
    lm = CausalLM.load(a, device="cpu")
    target = ModuleTarget(lm.model)
    weight = lm.model.lm_head.weight
    pointer = weight.data_ptr()
    new = torch.full(weight.shape, 0.5, dtype=torch.float16)
    target.accept("lm_head.weight", new)
    assert weight.data_ptr() == pointer  # same storage: written in place
    assert weight.dtype == torch.float32 and torch.all(weight == 0.5)
    assert "lm_head.weight" not in target.missing()
    assert "model.embed_tokens.weight" in target.missing()
    with pytest.raises(MergeError, match="no parameter"):
        target.accept("model.nothing.weight", new)
    with pytest.raises(MergeError, match="shape"):
        target.accept("lm_head.weight", torch.zeros(3, 3))


def test_candidates_are_merged_into_the_resident_model(two_models) -> None:
    from mergestudio.engine import DictTarget, build_plan, execute_plan, load_recipe

    a, b, task_file = two_models
    task = load_task(task_file)
    with ResidentEvaluator(a, [task], device="cpu", batch_size=2) as resident:
        model = resident.lm.model
        pointers = {n: p.data_ptr() for n, p in model.named_parameters()}

        only_b = resident.evaluate(_linear(a, b, 0.0, 1.0))
        assert [i.prediction for i in only_b.report.task("task").items] == ["xyz", "xyz"]
        only_a = resident.evaluate(_linear(a, b, 1.0, 0.0))
        assert [i.prediction for i in only_a.report.task("task").items] == ["abc", "abc"]
        assert only_a.merge_s > 0 and only_a.eval_s > 0

        # The resident weights equal what the engine produces into a dict.
        recipe = _linear(a, b, 0.3, 0.7)
        resident.merge_into_model(recipe)
        plan = build_plan(load_recipe(recipe))
        expected = DictTarget()
        execute_plan(plan, expected, device="cpu")
        plan.close()
        state = model.state_dict()
        for name, tensor in expected.tensors.items():
            torch.testing.assert_close(state[name], tensor.float(), rtol=0, atol=1e-3)
        # ...and nothing was reallocated: the model was never reloaded.
        assert pointers == {n: p.data_ptr() for n, p in model.named_parameters()}
