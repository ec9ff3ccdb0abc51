"""``mergestudio studio``: open the studio window. The engine's CLI finds this command
through the ``mergestudio.commands`` entry point; Qt is imported only when it runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "studio",
        help="open the studio window",
        description="Open the Merge Studio window, optionally with a project file.",
    )
    parser.add_argument("project", nargs="?", help="a .msproj project file to open")
    parser.add_argument("--demo", action="store_true", help="open the demo project (the demo zoo, ready to merge)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from mergestudio_qt.app import main
    except ImportError as error:
        print(
            f"error: the studio needs the app extras ({error.name} is missing): "
            "pip install 'mergestudio[app]'",
            file=sys.stderr,
        )
        return 1
    return int(main(project=args.project, demo=args.demo, argv=[sys.argv[0]]))
