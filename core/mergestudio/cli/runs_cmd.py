"""``mergestudio runs show RUN``: the trials of a search run, its Pareto front and best trials."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mergestudio.cli.args import non_negative_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("runs", help="look at search runs", description="Look at search runs.")
    commands = parser.add_subparsers(dest="runs_command", metavar="COMMAND")
    show = commands.add_parser(
        "show",
        help="table of trials, the Pareto front, the best trial per objective",
        description="Show a search run: every trial, the Pareto front and the best trials.",
    )
    show.add_argument("run", type=Path, help="run folder")
    show.add_argument("--last", type=non_negative_int, help="show only the last N trials of the table")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    show.add_argument(
        "--test",
        action="store_true",
        help="first re-score the Pareto front on the objectives' held-out test files (test_scores.json)",
    )
    show.add_argument(
        "--baselines",
        action="store_true",
        help="score the parents and default merges first when the run has not (cached in the run "
        "folder): trials then show Δ vs the base and normalized accuracy",
    )
    show.set_defaults(func=run_show)
    parser.set_defaults(func=lambda _args: _help(parser))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_show(args: argparse.Namespace) -> int:
    from mergestudio.cli.progress import TerminalProgress
    from mergestudio.search.baselines import run_baselines
    from mergestudio.search.report import format_summary, load_test_scores, rescore_front, summarize

    if args.test:
        rescore_front(args.run)
    baselines = run_baselines(args.run, events=TerminalProgress(quiet=args.json)) if args.baselines else None
    summary = summarize(args.run, baselines)
    if args.json:
        data = summary.to_dict()
        test = load_test_scores(args.run)
        if test is not None:
            data["test_scores"] = test
        print(json.dumps(data, indent=1))
    else:
        print(format_summary(summary, limit=args.last))
    return 0
