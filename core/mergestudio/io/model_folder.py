"""The files around the weights of a merged model: config, tokenizer, model card, and
the atomic move of a finished folder into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mergestudio.errors import MergeError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.txt",
)
GENERATION_FILES = ("generation_config.json",)


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse an existing, non-empty target unless ``overwrite``."""
    if target.exists() and not target.is_dir():
        raise MergeError(f"{target}: exists and is not a folder")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise MergeError(f"{target}: already exists and is not empty; pass --overwrite to replace it")


@contextmanager
def staged_folder(target: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden temporary folder beside ``target``, renamed to ``target`` only if the
    block finishes. On any error, Ctrl-C or cancel the folder is deleted, so nothing that
    looks like a model is left behind."""
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, retired / "folder")
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def write_config(folder: Path, config: dict[str, Any] | None, torch_dtype: str, layers: int | None) -> None:
    if config is None:
        return
    from mergestudio.architecture import config_layer_count, set_config_layer_count

    config = json.loads(json.dumps(config))  # a deep copy: never edit the input's dict
    config["torch_dtype"] = torch_dtype
    if "dtype" in config:
        config["dtype"] = torch_dtype
    if layers is not None and config_layer_count(config) not in (None, layers):
        set_config_layer_count(config, layers)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def copy_side_files(source_root: Path, folder: Path, names: tuple[str, ...]) -> list[str]:
    copied = []
    for name in names:
        path = source_root / name
        if path.is_file():
            shutil.copy2(path, folder / name)
            copied.append(name)
    return copied
