"""A project file stores the models a recipe's ``tokenizer:`` block names relative to
itself, like every other model reference, and restores them as absolute paths."""

from __future__ import annotations

import json
from pathlib import Path

from mergestudio_qt.project import ProjectData, load_project, save_project


def test_tokenizer_block_models_are_stored_relative(tmp_path: Path) -> None:
    chat = str((tmp_path / "models" / "chat").resolve())
    recipe = {
        "merge_method": "linear",
        "tokenizer": {
            "source": chat,
            "tokens": {
                "<|im_start|>": {"source": chat},
                "<|x|>": {"source": {"kind": "model_token", "model": chat, "token": "a"}},
                "<|z|>": {"source": {"kind": "zero"}},
            },
        },
    }
    path = tmp_path / "p.msproj"
    save_project(ProjectData(recipe=recipe), path)
    stored = json.loads(path.read_text())["recipe"]["tokenizer"]
    assert stored["source"] == "./models/chat"
    assert stored["tokens"]["<|im_start|>"]["source"] == "./models/chat"
    assert stored["tokens"]["<|x|>"]["source"]["model"] == "./models/chat"
    assert load_project(path).recipe == recipe
