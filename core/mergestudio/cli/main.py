"""Entry point of the ``mergestudio`` command. Subcommands live in their own modules and
import heavy libraries only when they run, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mergestudio import __version__
from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.plugins import COMMANDS_GROUP, entry_points

# Modules that define ``add_parser(subparsers)``; a missing one is skipped so the engine
# works in a partial install (no evaluation extras, say).
COMMAND_MODULES = (
    "mergestudio.cli.merge_cmd",
    "mergestudio.cli.methods_cmd",
    "mergestudio.cli.eval_cmd",
    "mergestudio.cli.demo_cmd",
    "mergestudio.cli.analyze_cmd",
    "mergestudio.cli.evolve_cmd",
    "mergestudio.cli.runs_cmd",
    "mergestudio.cli.export_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mergestudio",
        description="Merge Studio: merge fine-tuned models from the command line or the studio window.",
    )
    parser.add_argument("--version", action="version", version=f"mergestudio {__version__}")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check this installation end to end (window, merge, evaluation) in seconds, print one line",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        module.add_parser(subparsers)
    for point in entry_points(COMMANDS_GROUP):  # the studio window's ``studio`` command
        point.load()(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        from mergestudio.smoke import run_smoke

        return run_smoke()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except Cancelled:
        print("cancelled: nothing was written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    except MergeStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
