"""Entry point of the ``mergestudio`` command. Subcommands live in their own modules and
import heavy libraries only when they run, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mergestudio import __version__, collector
from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.plugins import COMMANDS_GROUP, entry_points

# Modules that define ``add_parser(subparsers)``; a missing one is skipped so the engine
# works in a partial install (no evaluation extras, say).
COMMAND_MODULES = (
    "mergestudio.cli.merge_cmd",
    "mergestudio.cli.moe_cmd",
    "mergestudio.cli.methods_cmd",
    "mergestudio.cli.eval_cmd",
    "mergestudio.cli.generate_cmd",
    "mergestudio.cli.demo_cmd",
    "mergestudio.cli.analyze_cmd",
    "mergestudio.cli.evolve_cmd",
    "mergestudio.cli.worker_cmd",
    "mergestudio.cli.runs_cmd",
    "mergestudio.cli.export_cmd",
    "mergestudio.cli.clean_cmd",
    "mergestudio.cli.extract_cmd",
    "mergestudio.cli.gguf_cmd",
    "mergestudio.cli.upload_cmd",
)
DEBUG_FLAG = "--debug"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mergestudio",
        description="Merge Studio: merge fine-tuned models from the command line or the studio window.",
    )
    parser.add_argument("--version", action="version", version=f"mergestudio {__version__}")
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help="show the full traceback of an unexpected error (accepted anywhere on the line)",
    )
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
    arguments = list(sys.argv[1:] if argv is None else argv)
    # --debug may follow the subcommand too: people add it to the line that failed.
    debug = DEBUG_FLAG in arguments or os.environ.get("MERGESTUDIO_DEBUG") == "1"
    arguments = [a for a in arguments if a != DEBUG_FLAG]
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.smoke:
        from mergestudio.smoke import run_smoke

        return run_smoke()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit-time flush
        if argv is None:  # this process's own command line: it ends now
            collector.freeze_for_exit()
        return code
    except (Cancelled, KeyboardInterrupt):
        from mergestudio.cli.signals import stop_exit_code

        code, name = stop_exit_code()
        print(f"cancelled ({name}): nothing was written", file=sys.stderr)
        return code
    except MergeStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as error:
        if debug:
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            raise
        print(
            f"error: {type(error).__name__}: {error}\n"
            f"(an unexpected error; re-run with {DEBUG_FLAG} to see the traceback)",
            file=sys.stderr,
        )
        return 1


def _closed_pipe() -> int:
    """The reader went away (``mergestudio demo info | head``): stop quietly. Python would
    raise again when it flushes stdout at exit, so stdout is pointed at devnull first."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the pipe


if __name__ == "__main__":
    sys.exit(main())
