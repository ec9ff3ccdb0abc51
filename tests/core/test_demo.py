"""The demo zoo pipeline, run at toy size: data, tokenizer, training, files, recipes,
reproducibility, and the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from mergestudio.demo import paths
from mergestudio.demo.build import ZooConfig, build_zoo, make_data, recipe_dicts
from mergestudio.demo.skills import CIPHER_KEY, SKILLS
from mergestudio.evaluate import load_task


@pytest.fixture(scope="module")
def mini_zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("zoo")
    results = build_zoo(out, ZooConfig.miniature(), log=lambda _line: None, batch_size=16)
    return out, results


def _digests(zoo: Path) -> dict[str, str]:
    return {
        str(f.relative_to(zoo)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(paths.models_dir(zoo).rglob("*"))
        if f.is_file()
    }


def test_skills_compute_their_answers() -> None:
    import random

    rng = random.Random(3)
    for _ in range(50):
        ex = SKILLS["add"].sample(rng)
        a, b = ex.prompt.removeprefix("add ").removesuffix("=").split("+")
        assert int(ex.answer) == int(a) + int(b)
        word = SKILLS["reverse"].sample(rng).prompt.removeprefix("rev ").removesuffix("=")
        assert 3 <= len(word) <= 7
        ex = SKILLS["sort"].sample(rng)
        assert ex.answer == "".join(sorted(ex.prompt[5:-1]))
        ex = SKILLS["double"].sample(rng)
        assert ex.answer == "".join(c * 2 for c in ex.prompt[4:-1])
        ex = SKILLS["cipher"].sample(rng)
        assert ex.answer == "".join(CIPHER_KEY[c] for c in ex.prompt[4:-1])
    assert sorted(CIPHER_KEY.values()) == sorted(CIPHER_KEY)  # a permutation


def test_data_is_seeded_and_evaluation_is_held_out() -> None:
    config = ZooConfig.miniature()
    first, second = make_data(config), make_data(config)
    assert first == second
    for skill, items in first.eval_items.items():
        eval_prompts = {e.prompt for e in items}
        assert len(eval_prompts) == len(items) == config.eval_items
        assert not eval_prompts & {e.prompt for e in first.train_items[skill]}
        # The base only sees small instances, none of them evaluation prompts.
        base_prompts = {line.split("=")[0] + "=" for line in first.base_lines if "=" in line}
        assert not eval_prompts & base_prompts
    assert not set(first.general_eval) & set(first.base_lines)


def test_miniature_zoo_files_shapes_and_loading(mini_zoo: tuple[Path, dict]) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    zoo, results = mini_zoo
    config = ZooConfig.miniature()
    names = ["base", *config.skills]
    assert sorted(p.name for p in paths.models_dir(zoo).iterdir()) == sorted(names)
    for name in names:
        folder = paths.models_dir(zoo) / name
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        assert tokenizer.decode(tokenizer("rev abc=")["input_ids"], skip_special_tokens=True) == "rev abc="
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
            assert all(f.get_slice(k).get_dtype() == "F16" for k in keys)
            embed = f.get_slice("model.embed_tokens.weight").get_shape()
        assert embed == [len(tokenizer), config.model.hidden_size]
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        assert model.config.num_hidden_layers == config.model.num_hidden_layers
        logits = model(**tokenizer(["sort cba="], return_tensors="pt")).logits
        assert logits.shape == (1, len("sort cba=") + 1, len(tokenizer))
    # Specialists differ from the base: fine-tuning happened.
    weights = {k: v for k, v in _digests(zoo).items() if k.endswith("model.safetensors")}
    assert len(weights) == len(names) == len(set(weights.values()))

    # Tasks: one eval split per skill plus general text, all readable.
    tasks = {load_task(p).name: load_task(p) for p in paths.eval_task_files(zoo)}
    assert set(tasks) == {*config.skills, "general"}
    assert tasks["general"].kind == "perplexity"
    assert all(len(tasks[s].items) == config.eval_items for s in config.skills)

    # The table has the base, each specialist and every merge the engine offers.
    rows = {r["model"]: r for r in results["rows"]}
    assert {"base", *config.skills, "linear", "task_arithmetic"} <= set(rows)
    for row in rows.values():
        assert set(row["accuracy"]) == set(config.skills)
        assert 0.0 <= row["mean"] <= 1.0 and row["perplexity"] > 1.0
    saved = json.loads(paths.results_file(zoo).read_text())
    assert saved["rows"] == results["rows"]
    assert "| model |" in (zoo / "README.md").read_text()


def test_recipes_reference_the_zoo_models(mini_zoo: tuple[Path, dict]) -> None:
    from mergestudio.engine import load_recipe

    zoo, _ = mini_zoo
    skills = ZooConfig.miniature().skills
    for name, recipe in recipe_dicts(zoo, skills, absolute=True).items():
        written = load_recipe(paths.recipes_dir(zoo) / f"{name}.yml")
        assert written.merge_method == recipe["merge_method"]
        assert [Path(m.model).name for m in written.models or []] == list(skills)
        if name != "linear":
            assert Path(str(written.base_model)).name == "base"


def test_rebuild_is_bit_identical(mini_zoo: tuple[Path, dict], tmp_path: Path) -> None:
    zoo, _ = mini_zoo
    build_zoo(tmp_path, ZooConfig.miniature(), log=lambda _line: None, evaluate=False)
    assert _digests(tmp_path) == _digests(zoo)
    for task in paths.tasks_dir(zoo).iterdir():
        assert (paths.tasks_dir(tmp_path) / task.name).read_bytes() == task.read_bytes()


def test_cli_demo_info(mini_zoo: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    from mergestudio.cli.main import main

    zoo, _ = mini_zoo
    assert main(["demo", "info", "--dir", str(zoo)]) == 0
    out = capsys.readouterr().out
    assert str(paths.models_dir(zoo) / "base") in out
    assert "| base |" in out and "reverse.eval.jsonl" in out
    assert main(["demo", "info", "--dir", str(zoo / "nothing")]) == 1  # a wrong --dir is an error
    assert "error: no demo zoo" in capsys.readouterr().err
