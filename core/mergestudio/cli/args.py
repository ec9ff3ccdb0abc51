"""Argument types shared by the commands: a bad value is refused by argparse with a
``usage`` line and an ``error:`` line naming the option (exit 2), before any work."""

from __future__ import annotations

import argparse
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
