"""Generation for trying a model: the token loop, sampling, stopping, chat templates, and
a recipe merged in memory generating exactly what its saved merge generates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from mergestudio.demo.info import zoo_info
from mergestudio.demo.paths import default_zoo_dir
from mergestudio.demo.recipes import recipe_dicts
from mergestudio.engine import merge
from mergestudio.evaluate import CausalLM
from mergestudio.evaluate.generate import (
    GenerationError,
    LoadedModels,
    SamplingOptions,
    Token,
    TokenStream,
    generate,
    generate_side_by_side,
    prompt_ids,
    sample_next,
)
from mergestudio.events import CancelToken

ZOO = default_zoo_dir()
PROMPT = "end ynbi="  # the last skill's format: the specialist answers "i"


@pytest.fixture(scope="module")
def zoo() -> dict[str, Any]:
    return zoo_info(ZOO)


@pytest.fixture(scope="module")
def specialists(zoo: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["path"] for s in zoo["specialists"]}


@pytest.fixture(scope="module")
def last_lm(specialists: dict[str, str]) -> CausalLM:
    return CausalLM.load(specialists["last"], device="cpu")


@pytest.fixture(scope="module")
def base_lm(zoo: dict[str, Any]) -> CausalLM:
    return CausalLM.load(zoo["base"]["path"], device="cpu")


def _recipes(zoo: dict[str, Any]) -> dict[str, dict[str, Any]]:
    skills = tuple(s["skill"] for s in zoo["specialists"])
    return recipe_dicts(Path(zoo["zoo"]), skills, absolute=True)


def test_greedy_stream_equals_transformers_generate(last_lm: CausalLM) -> None:
    """The key/value-cached loop picks the same tokens as transformers' own greedy search."""
    result = generate(last_lm, PROMPT, SamplingOptions(max_new_tokens=12, chat=False))
    ids = torch.tensor([last_lm.encode(PROMPT)])
    expected = last_lm.model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :].tolist()
    eos = last_lm.tokenizer.eos_token_id
    assert list(result.token_ids) == [t for t in expected if t != eos]
    assert result.text == "i"  # the specialist does its skill
    assert result.stop_reason == "eos" and result.prompt_tokens == ids.shape[1]


def test_tokens_stream_one_at_a_time_and_join_to_the_text(base_lm: CausalLM) -> None:
    seen: list[Token] = []
    result = generate(base_lm, "the", SamplingOptions(max_new_tokens=15, chat=False), seen.append)
    assert len(seen) == len(result.token_ids) == 15 and result.stop_reason == "length"
    assert [t.id for t in seen] == list(result.token_ids)
    assert "".join(t.text for t in seen) == result.text
    assert result.text == base_lm.tokenizer.decode(list(result.token_ids), skip_special_tokens=True)


def test_sampling_is_reproducible_by_seed(base_lm: CausalLM) -> None:
    def sampled(seed: int) -> tuple[int, ...]:
        options = SamplingOptions(max_new_tokens=20, temperature=2.0, top_p=1.0, seed=seed, chat=False)
        return generate(base_lm, "the", options).token_ids

    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)
    # A nucleus too small for a second token is greedy, whatever the temperature.
    nucleus = SamplingOptions(max_new_tokens=20, temperature=2.0, top_p=1e-6, seed=3, chat=False)
    greedy = SamplingOptions(max_new_tokens=20, chat=False)
    assert generate(base_lm, "the", nucleus).token_ids == generate(base_lm, "the", greedy).token_ids


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    options = SamplingOptions(temperature=1.0, top_p=0.7)
    generator = torch.Generator().manual_seed(0)
    drawn = {sample_next(logits, options, generator) for _ in range(300)}
    assert drawn == {0, 1}  # 0.5 + 0.3 reaches 0.7; the tail is never drawn
    everything = {sample_next(logits, SamplingOptions(temperature=1.0), generator) for _ in range(600)}
    assert everything == {0, 1, 2, 3}
    assert sample_next(logits, SamplingOptions(), None) == 0


def test_cancel_stops_before_the_next_forward_pass(base_lm: CausalLM) -> None:
    cancel = CancelToken()
    calls = 0

    def count(*_args: object) -> None:
        nonlocal calls
        calls += 1

    def on_token(token: Token) -> None:
        if calls == 3:
            cancel.cancel()

    handle = base_lm.model.register_forward_hook(count)
    try:
        result = generate(base_lm, "the", SamplingOptions(max_new_tokens=40, chat=False), on_token, cancel)
    finally:
        handle.remove()
    assert calls == 3 and len(result.token_ids) == 3
    assert result.stop_reason == "stopped"


def test_side_by_side_gives_every_model_the_same_prompt_and_seed(
    base_lm: CausalLM, last_lm: CausalLM
) -> None:
    options = SamplingOptions(max_new_tokens=10, temperature=1.5, seed=11, chat=False)
    order: list[int] = []
    both = generate_side_by_side([last_lm, base_lm], PROMPT, options, lambda i, _t: order.append(i))
    alone = [generate(lm, PROMPT, options) for lm in (last_lm, base_lm)]
    assert [g.token_ids for g in both] == [g.token_ids for g in alone]
    # In turn: the columns fill at the same pace while both run.
    shorter = min(len(g.token_ids) for g in both)
    assert order[: 2 * shorter] == [0, 1] * shorter


def test_chat_template_is_applied_when_present_and_can_be_switched_off(
    zoo: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "chatty"
    shutil.copytree(zoo["base"]["path"], folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = "{% for m in messages %}<s>{{ m['content'] }}={% endfor %}"
    config_file.write_text(json.dumps(config))
    lm = CausalLM.load(folder, device="cpu")
    ids, used = prompt_ids(lm, "end ab", chat=True)
    assert used and ids == lm.encode("<s>end ab=", special=False)
    plain, used = prompt_ids(lm, "end ab", chat=False)
    assert not used and plain == lm.encode("end ab")
    assert generate(lm, "end ab", SamplingOptions(max_new_tokens=4)).chat_template
    # The demo's own tokenizer has no template: chat falls back to plain text.
    base = CausalLM.load(zoo["base"]["path"], device="cpu")
    assert prompt_ids(base, "end ab", chat=True) == (base.encode("end ab"), False)


def test_recipe_in_memory_equals_the_saved_merge(zoo: dict[str, Any], tmp_path: Path) -> None:
    recipes = _recipes(zoo)
    options = SamplingOptions(max_new_tokens=16, chat=False)
    prompts = [skill["example"].split("=")[0] + "=" for skill in zoo["skills"].values()]
    models = LoadedModels(device="cpu")
    try:
        for name in ("task_arithmetic", "ties"):
            saved = merge(recipes[name], tmp_path / name, device="cpu")
            from_disk = CausalLM.load(saved.output, device="cpu")
            in_memory = models.recipe(recipes[name])
            for prompt in prompts:
                expected = generate(from_disk, prompt, options)
                assert generate(in_memory, prompt, options).token_ids == expected.token_ids, (name, prompt)
    finally:
        models.close()


def test_a_resident_model_follows_the_recipe_it_was_last_given(
    zoo: dict[str, Any], specialists: dict[str, str], last_lm: CausalLM
) -> None:
    """Switching recipes re-merges into the one resident model: nothing of the previous
    candidate survives, and the same recipe is not merged twice."""
    only_last = {"merge_method": "linear", "models": [{"model": specialists["last"], "parameters": {"weight": 1.0}}]}
    average = _recipes(zoo)["linear"]
    options = SamplingOptions(max_new_tokens=10, chat=False)
    expected = generate(last_lm, PROMPT, options).token_ids
    models = LoadedModels(device="cpu")
    try:
        first = models.recipe(only_last)
        assert generate(first, PROMPT, options).token_ids == expected
        assert models.recipe(average) is first  # same config model: the same resident model
        assert generate(first, PROMPT, options).token_ids != expected
        models.recipe(only_last)
        assert generate(first, PROMPT, options).token_ids == expected
    finally:
        models.close()


def test_loaded_models_tell_recipes_from_folders(zoo: dict[str, Any], tmp_path: Path) -> None:
    recipe_file = tmp_path / "linear.yml"
    import yaml

    recipe_file.write_text(yaml.safe_dump(_recipes(zoo)["linear"]))
    models = LoadedModels(device="cpu")
    try:
        folder = models.model(zoo["base"]["path"])
        assert models.model(zoo["base"]["path"]) is folder  # loaded once
        merged = models.model(str(recipe_file))
        assert merged is not folder
        assert not any(p.name != "linear.yml" for p in tmp_path.iterdir())  # nothing written
    finally:
        models.close()


@pytest.mark.parametrize(
    ("options", "named"),
    [({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1.0}, "temperature"),
     ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"temperature": float("nan")}, "temperature")],
)
def test_bad_sampling_options_name_the_option(options: dict[str, float], named: str) -> None:
    with pytest.raises(GenerationError, match=named):
        SamplingOptions(**options)  # type: ignore[arg-type]


def test_a_prompt_longer_than_the_context_keeps_its_end(base_lm: CausalLM) -> None:
    stream = TokenStream(base_lm, "the cat " * 40, SamplingOptions(max_new_tokens=30, chat=False))
    tokens = list(stream)
    assert len(stream.prompt) == base_lm.max_length - 1
    assert len(tokens) == 1 and stream.stop_reason == "context"
