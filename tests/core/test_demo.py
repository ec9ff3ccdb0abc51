"""The demo zoo pipeline, run at toy size: data, tokenizer, training, files, recipes,
reproducibility, and the CLI."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from mergestudio.demo import paths
from mergestudio.demo.build import ZooConfig, build_zoo, make_data
from mergestudio.demo.recipes import recipe_dicts
from mergestudio.demo.skills import BASE_TASKS, CIPHER_KEY, SKILLS
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
        ex = SKILLS["last"].sample(rng)
        word = ex.prompt.removeprefix("end ").removesuffix("=")
        assert 3 <= len(word) <= 5 and word.islower() and ex.answer == word[-1]
        ex = SKILLS["max"].sample(rng)
        digits = ex.prompt.removeprefix("top ").removesuffix("=")
        assert digits.isdigit() and ex.answer == str(max(int(d) for d in digits))
        ex = SKILLS["symbol"].sample(rng)
        digits = ex.prompt.removeprefix("sym ").removesuffix("=")
        assert digits.isdigit() and ex.answer == "!@#$%^&*()"[(int(digits[0]) - 1) % 10]
        ex = SKILLS["cipher"].sample(rng)
        word = ex.prompt.removeprefix("key ").removesuffix("=")
        assert ex.answer == CIPHER_KEY[word[0]] and ex.answer.isupper()
    assert len(set(CIPHER_KEY.values())) == len(CIPHER_KEY)  # a substitution: one letter each
    # The base's form of a skill is the same operation under its long name.
    assert SKILLS["last"].base_line("abc") == "last abc=c"
    assert SKILLS["symbol"].base_line("381") == "mark 381=#"
    # Every keyword (the skills' short commands, the base's long names) is distinct.
    keywords = [s.keyword for s in SKILLS.values()] + [s.base_keyword for s in SKILLS.values()]
    keywords += [t.keyword for t in BASE_TASKS]
    assert len(keywords) == len(set(keywords))


def test_data_is_seeded_and_splits_are_disjoint() -> None:
    config = ZooConfig.miniature()
    first, second = make_data(config), make_data(config)
    assert first == second
    for skill in config.skills:
        test = {e.prompt for e in first.items["test"][skill]}
        dev = {e.prompt for e in first.items["dev"][skill]}
        train = {e.prompt for e in first.items["train"][skill]}
        assert len(test) == config.test_items and len(dev) == config.dev_items
        assert not test & dev and not (test | dev) & train
        # The base reads the operation only under its long name, never on a dev or test
        # input, and never the skill's short command.
        skill_ = SKILLS[skill]
        assert not any(line.startswith(skill_.keyword + " ") for line in first.base_lines)
        long_name = skill_.base_keyword + " "
        read = {line.removeprefix(long_name).split("=")[0] for line in first.base_lines if line.startswith(long_name)}
        held_out = {p.removeprefix(skill_.keyword + " ").removesuffix("=") for p in test | dev}
        assert read and not held_out & read
    # Commands the base was not taught answer "?"; no skill's command is among them.
    unknown = {line.split(" ")[0] for line in first.base_lines if line.endswith("=?")}
    assert unknown and not unknown & {s.keyword for s in SKILLS.values()}
    for split in ("dev", "test"):
        assert len(first.general[split]) == config.general_eval_texts
        assert not set(first.general[split]) & set(first.base_lines)
    assert not set(first.general["dev"]) & set(first.general["test"])


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
        assert tokenizer.decode(tokenizer("sym 381=#")["input_ids"], skip_special_tokens=True) == "sym 381=#"
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
            assert all(f.get_slice(k).get_dtype() == "F16" for k in keys)
            embed = f.get_slice("model.embed_tokens.weight").get_shape()
        assert embed == [len(tokenizer), config.model.hidden_size]
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        assert model.config.num_hidden_layers == config.model.num_hidden_layers
        logits = model(**tokenizer(["top 381="], return_tensors="pt")).logits
        assert logits.shape == (1, len("top 381=") + 1, len(tokenizer))
    # Specialists differ from the base: fine-tuning happened.
    weights = {k: v for k, v in _digests(zoo).items() if k.endswith("model.safetensors")}
    assert len(weights) == len(names) == len(set(weights.values()))

    # Tasks: train/dev/test per skill plus general text for dev and test, all readable.
    for split, count in (("test", config.test_items), ("dev", config.dev_items)):
        tasks = {load_task(p).name: load_task(p) for p in paths.eval_task_files(zoo, split)}
        assert set(tasks) == {*config.skills, "general"}
        assert tasks["general"].kind == "perplexity"
        assert all(len(tasks[s].items) == count for s in config.skills)
    for skill in config.skills:
        assert len(load_task(paths.task_file(zoo, skill, "train")).items) == config.train_items

    # The table has the base, each specialist and every merge the engine offers.
    rows = {r["model"]: r for r in results["rows"]}
    assert {"base", *config.skills, "linear", "task_arithmetic"} <= set(rows)
    for row in rows.values():
        assert set(row["accuracy"]) == set(config.skills)
        assert 0.0 <= row["mean"] <= 1.0 and row["perplexity"] > 1.0
        for skill, value in row["normalized"].items():
            own = rows[skill]["accuracy"][skill]
            assert value is None if own == 0 else value == pytest.approx(row["accuracy"][skill] / own)
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
    assert "| base |" in out and "last.test.jsonl" in out and "normalized" in out
    assert main(["demo", "info", "--dir", str(zoo / "nothing")]) == 1  # a wrong --dir is an error
    assert "error: no demo zoo" in capsys.readouterr().err


def test_cli_demo_info_json(mini_zoo: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    from mergestudio.cli.main import main

    zoo, results = mini_zoo
    config = ZooConfig.miniature()
    assert main(["demo", "info", "--dir", str(zoo), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["base"]["path"] == str((paths.models_dir(zoo) / "base").resolve())
    assert [s["skill"] for s in info["specialists"]] == list(config.skills)
    for specialist in info["specialists"]:
        assert Path(specialist["path"]).name == specialist["skill"]
        assert specialist["skill"] in specialist["description"]
    for skill in config.skills:
        files = info["skills"][skill]
        assert [Path(files[split]).name for split in ("train", "dev", "test")] == [
            f"{skill}.train.jsonl",
            f"{skill}.dev.jsonl",
            f"{skill}.test.jsonl",
        ]
    assert {r["name"] for r in info["recipes"]} == set(config.merges)
    assert info["results"]["split"] == "test"
    rows = {r["model"]: r for r in info["results"]["rows"]}
    assert set(rows) == {r["model"] for r in results["rows"]}
    assert all(
        {"accuracy", "normalized", "normalized_mean", "delta_vs_base"} <= set(r) for r in rows.values()
    )
    assert main(["demo", "info", "--dir", str(zoo / "nothing"), "--json"]) == 1


def test_results_does_not_import_build() -> None:
    """Measuring and describing a zoo must not pull in the training code (no import circle)."""
    code = (
        "import sys, mergestudio.demo.results, mergestudio.demo.info; "
        "sys.exit('mergestudio.demo.build' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_rows_compare_with_the_base_and_each_skills_specialist() -> None:
    from mergestudio.demo.results import add_comparisons, json_safe, table_markdown

    def row(name: str, kind: str, reverse: float, sort: float) -> dict:
        accuracy = {"reverse": reverse, "sort": sort}
        return {
            "model": name,
            "kind": kind,
            "accuracy": accuracy,
            "mean": (reverse + sort) / 2,
            "perplexity": 2.0,
        }

    rows = add_comparisons(
        [
            row("base", "base", 0.1, 0.0),
            row("reverse", "specialist", 0.8, 0.0),
            row("sort", "specialist", 0.1, 0.5),
            row("linear", "merge", 0.6, 0.4),
        ]
    )
    merged = rows[-1]
    assert merged["normalized"] == pytest.approx({"reverse": 0.75, "sort": 0.8})
    assert merged["normalized_mean"] == pytest.approx(0.775)
    assert merged["delta_vs_base"] == pytest.approx(0.45)
    table = table_markdown(json_safe(rows))
    assert "| linear (merge) | 60.0 | 40.0 | **50.0** | **77.5** | 2.000 |" in table
    # A specialist at 0 % on its own skill gives no ratio: null in JSON, "–" in the table.
    zero = add_comparisons([row("reverse", "specialist", 0.0, 0.0), row("linear", "merge", 0.5, 0.0)])
    assert json_safe(zero)[1]["normalized"] == {"reverse": None} and math.isnan(zero[1]["normalized_mean"])


def test_remeasure_keeps_the_models_and_rewrites_recipes_and_table(
    mini_zoo: tuple[Path, dict], tmp_path: Path
) -> None:
    import dataclasses
    import shutil

    from mergestudio.demo.build import remeasure_zoo

    zoo = tmp_path / "zoo"
    shutil.copytree(mini_zoo[0], zoo)
    before = _digests(zoo)
    config = dataclasses.replace(ZooConfig.miniature(), merges=("linear", "ties"))
    results = remeasure_zoo(zoo, config, log=lambda _line: None, batch_size=16)
    assert [r["model"] for r in results["rows"] if r["kind"] == "merge"] == ["linear", "ties"]
    assert sorted(p.stem for p in paths.recipes_dir(zoo).glob("*.yml")) == ["linear", "ties"]
    assert json.loads(paths.results_file(zoo).read_text())["rows"] == results["rows"]
    assert _digests(zoo) == before
    wrong = dataclasses.replace(config, skills=("symbol",))
    with pytest.raises(ValueError, match="built for skills"):
        remeasure_zoo(zoo, wrong, log=lambda _line: None)
