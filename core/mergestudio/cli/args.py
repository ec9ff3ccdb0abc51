"""Argument types shared by the commands: a bad value is refused by argparse with a
``usage`` line and an ``error:`` line naming the option (exit 2), before any work."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps (default: auto)"


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def float_at_least(low: float, *, strict: bool = False) -> Callable[[str], float]:
    """A float type with a lower bound (``strict``: the bound itself is refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value < low or (strict and value == low):  # value != value: NaN
            relation = "greater than" if strict else "at least"
            raise argparse.ArgumentTypeError(f"must be {relation} {low:g}, got {text}")
        return value

    return parse


def device_name(text: str) -> str:
    """The device's spelling; whether it exists here is the engine's check."""
    base, _, index = text.partition(":")
    if base not in ("auto", "cpu", "cuda", "mps") or (index and not (base == "cuda" and index.isdigit())):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; valid: {DEVICE_HELP.removesuffix(' (default: auto)')}")
    return text


def compute_dtype(text: str) -> str:
    from mergestudio.engine.checks import check_compute_dtype
    from mergestudio.errors import MergeError

    try:
        check_compute_dtype(text)
    except MergeError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("compute dtype: ")) from None
    return text


def writable_file_path(path: Path, option: str) -> str | None:
    """Why ``path`` cannot be written (for an output file given as an option), or None.
    Checked before the work, so an hour of evaluation is not lost to a typo."""
    if path.is_dir():
        return f"{option}: {path} is a folder"
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{option}: cannot write {path}, because {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{option}: cannot write {path}, because {parent} is not writable"
    return None


def parse_size(text: str) -> int:
    """'5GB' -> 5e9, '500MB', '2GiB', or plain bytes."""
    units = {
        "KIB": 1024,
        "MIB": 1024**2,
        "GIB": 1024**3,
        "KB": 1000,
        "MB": 1000**2,
        "GB": 1000**3,
        "K": 1000,
        "M": 1000**2,
        "G": 1000**3,
        "B": 1,
    }
    upper = text.strip().upper()
    unit = next((u for u in units if upper.endswith(u)), "")
    number = upper.removesuffix(unit).strip() if unit else upper
    size: int | None = None
    with contextlib.suppress(ValueError, OverflowError):
        size = int(float(number) * units.get(unit, 1))
    if size is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 5GB or 500MB)")
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return size


def add_output_options(
    parser: argparse.ArgumentParser,
    *,
    shard_size: bool = False,
    allow_pickle: bool = False,
    json_help: str | None = None,
) -> None:
    """The options every command that writes a model or adapter folder shares, declared
    once so they mean and say the same everywhere: ``--shard-size`` (when it writes
    shards), ``--overwrite``, ``--allow-pickle`` (when it reads checkpoints), ``--json``
    (printing what ``json_help`` says; None: no such option) and ``-q/--quiet``."""
    if shard_size:
        parser.add_argument("--shard-size", type=parse_size, default="5GB", help="max shard size (default: 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    if allow_pickle:
        parser.add_argument(
            "--allow-pickle", action="store_true", help="load .bin/.pt checkpoints (with torch.load weights_only=True)"
        )
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
