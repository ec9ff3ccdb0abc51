"""The files around the weights of a merged model: config, tokenizer, model card, and
the atomic move of a finished folder into place."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

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


@dataclass(frozen=True)
class Leftover:
    """A staging (``.OUT.partial-…``) or retired (``.OUT.old-…``) folder beside an output.

    Its name carries the owner's PID and host: ``.OUT.partial-1234@host~x8y2k``. Folders
    from before that convention have neither (``owner`` unknown)."""

    path: Path
    target: str
    kind: str  # "partial" or "old"
    pid: int | None
    host: str | None

    @property
    def stale(self) -> bool:
        """Its owner is known, on this host, and no longer running: safe to remove."""
        return self.pid is not None and self.host == this_host() and not bool(psutil.pid_exists(self.pid))

    def describe(self) -> str:
        if self.pid is None:
            return "owner unknown (made by an older version)"
        if self.host != this_host():
            return f"owned by process {self.pid} on host {self.host}"
        state = "no longer running" if self.stale else "still running"
        return f"owned by process {self.pid} on this host, {state}"


_LEFTOVER = re.compile(
    r"^\.(?P<target>.+)\.(?P<kind>partial|old)-(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]+)~)?[A-Za-z0-9_]+$"
)


def this_host() -> str:
    """The host name as it appears in staging folder names (only [A-Za-z0-9._-])."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def _owner_prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}@{this_host()}~"


def find_leftovers(folder: Path) -> list[Leftover]:
    """Staging and retired folders directly inside ``folder``, by name."""
    found = []
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return []
    for child in children:
        match = _LEFTOVER.match(child.name)
        if match and child.is_dir() and not child.is_symlink():
            pid = match["pid"]
            found.append(
                Leftover(child, match["target"], match["kind"], int(pid) if pid else None, match["host"])
            )
    return found


def remove_stale_leftovers(folder: Path) -> list[Leftover]:
    """Remove the leftovers in ``folder`` whose owner died on this host (a kill -9, a
    power cut); return them. Folders of running merges and of other hosts are kept."""
    removed = []
    for leftover in find_leftovers(folder):
        if leftover.stale:
            shutil.rmtree(leftover.path, ignore_errors=True)
            if not leftover.path.exists():
                removed.append(leftover)
    return removed


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse an output that cannot be made or would replace a model without ``overwrite``
    (see ``engine.checks.check_output_path``)."""
    from mergestudio.engine.checks import check_output_path

    check_output_path(target, overwrite)


@contextmanager
def staged_folder(target: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden temporary folder beside ``target``, renamed to ``target`` only if the
    block finishes. On any error, Ctrl-C or cancel the folder is deleted, so nothing that
    looks like a model is left behind; after a kill -9 its name says whose it was, so
    the next merge into the same parent (or ``mergestudio clean``) removes it."""
    check_target(target, overwrite)
    made = _missing_parents(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=_owner_prefix(target, "partial"), dir=target.parent))
    except OSError as error:
        _remove_empty(made)
        raise MergeError(f"{target}: cannot create the output folder ({error.strerror or error})") from error
    try:
        yield staging
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)
        raise


def _missing_parents(target: Path) -> list[Path]:
    """The folders above ``target`` that do not exist yet, deepest first."""
    missing = []
    parent = target.absolute().parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Undo the parents a failed merge created (deepest first; a folder someone filled
    meanwhile stays)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=_owner_prefix(target, "old"), dir=target.parent))
    os.replace(target, retired / "folder")
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def write_config(folder: Path, config: dict[str, Any] | None, torch_dtype: str, layers: int | None) -> None:
    merged = merged_config(config, torch_dtype, layers)
    if merged is not None:
        (folder / "config.json").write_text(json.dumps(merged, indent=2) + "\n")


def merged_config(config: dict[str, Any] | None, torch_dtype: str, layers: int | None) -> dict[str, Any] | None:
    """The config.json a merged model gets: ``config`` with the output dtype and layer count."""
    if config is None:
        return None
    from mergestudio.architecture import config_layer_count, set_config_layer_count

    config = json.loads(json.dumps(config))  # a deep copy: never edit the input's dict
    config["torch_dtype"] = torch_dtype
    if "dtype" in config:
        config["dtype"] = torch_dtype
    if layers is not None and config_layer_count(config) not in (None, layers):
        set_config_layer_count(config, layers)
    return config


def copy_side_files(source_root: Path, folder: Path, names: tuple[str, ...]) -> list[str]:
    copied = []
    for name in names:
        path = source_root / name
        if path.is_file():
            shutil.copy2(path, folder / name)
            copied.append(name)
    return copied
