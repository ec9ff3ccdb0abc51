"""``mergestudio generate``: a recipe merged in memory generates what its saved merge
generates (greedy), nothing is written, and bad options are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mergestudio.cli.main import main
from mergestudio.demo.info import zoo_info
from mergestudio.demo.paths import default_zoo_dir
from mergestudio.demo.recipes import recipe_dicts


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def zoo() -> dict[str, Any]:
    return zoo_info(default_zoo_dir())


def test_generate_from_a_recipe_equals_the_saved_merge(
    zoo: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    skills = tuple(s["skill"] for s in zoo["specialists"])
    recipe_file = tmp_path / "ta.yml"
    recipe_file.write_text(yaml.safe_dump(recipe_dicts(Path(zoo["zoo"]), skills, absolute=True)["task_arithmetic"]))
    saved = tmp_path / "saved"
    assert main(["merge", str(recipe_file), str(saved), "--device", "cpu", "-q"]) == 0
    capsys.readouterr()
    last = next(s["path"] for s in zoo["specialists"] if s["skill"] == "last")
    zoo_files = _files(Path(zoo["zoo"]))
    before = _files(tmp_path)
    common = ["--prompt", "end ynbi=", "--max-new-tokens", "12", "--device", "cpu", "--json"]
    assert main(["generate", str(recipe_file), *common, "--compare", last]) == 0
    from_recipe = json.loads(capsys.readouterr().out)
    assert main(["generate", str(saved), *common]) == 0
    from_saved = json.loads(capsys.readouterr().out)
    assert from_recipe[str(recipe_file)]["token_ids"] == from_saved[str(saved)]["token_ids"]
    assert from_recipe[last]["text"] == "i"  # the parent's column: same prompt, its own answer
    assert _files(tmp_path) == before and _files(Path(zoo["zoo"])) == zoo_files  # nothing written


def test_generate_streams_text_with_a_header_per_model(
    zoo: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    last = next(s["path"] for s in zoo["specialists"] if s["skill"] == "last")
    base = zoo["base"]["path"]
    code = main(["generate", last, "--prompt", "end ynbi=", "--no-chat", "--device", "cpu",
                 "--temperature", "0.7", "--top-p", "0.9", "--seed", "4", "--compare", base])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"== {last}" and lines[2] == f"== {base}"
    assert len(lines) == 4


@pytest.mark.parametrize(
    ("option", "value"),
    [("--top-p", "0"), ("--top-p", "1.5"), ("--temperature", "-1"), ("--max-new-tokens", "0"), ("--seed", "x")],
)
def test_bad_options_exit_2_naming_the_option(
    zoo: dict[str, Any], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["generate", zoo["base"]["path"], "--prompt", "x", option, value])
    assert stop.value.code == 2
    assert option in capsys.readouterr().err


def test_a_missing_model_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(tmp_path / "nothing"), "--prompt", "x", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "nothing" in err and "Traceback" not in err
