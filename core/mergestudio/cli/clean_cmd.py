"""``mergestudio clean FOLDER [--list] [--force]``: find and remove what interrupted merges
left in a folder (hidden ``.OUT.partial-…`` staging and ``.OUT.old-…`` retired folders)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "clean",
        help="remove staging folders left by killed merges",
        description=(
            "List and remove the hidden staging folders that merges killed with SIGKILL (or a power "
            "cut) left in FOLDER, the parent of their output. Folders of merges still running, or "
            "owned by another host, are kept unless --force."
        ),
    )
    parser.add_argument("folder", type=Path, help="the folder that holds the merge outputs")
    parser.add_argument("--list", action="store_true", help="only list what would be removed")
    parser.add_argument(
        "--force",
        action="store_true",
        help="also remove folders whose owner is running, unknown or on another host",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.io.model_folder import find_leftovers

    folder: Path = args.folder
    if not folder.is_dir():
        print(f"error: {folder}: not a folder", file=sys.stderr)
        return 2
    leftovers = find_leftovers(folder)
    if not leftovers:
        print(f"{folder}: no leftovers of interrupted merges")
        return 0
    removed = kept = 0
    for leftover in leftovers:
        removable = leftover.stale or args.force
        if args.list or not removable:
            verdict = "would remove" if removable else "keeping"
            print(f"{verdict}: {leftover.path.name} ({leftover.describe()}, {_size(leftover.path)})")
            kept += not removable
            continue
        shutil.rmtree(leftover.path, ignore_errors=True)
        print(f"removed: {leftover.path.name} ({leftover.describe()})")
        removed += 1
    if kept and not args.force:
        print(f"{kept} kept; pass --force to remove them too (only when no merge is writing them)")
    return 0


def _size(path: Path) -> str:
    from mergestudio.cli.progress import format_bytes

    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return format_bytes(total)
