"""``mergestudio export RUN --trial N OUT``: a search trial as a merged model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from mergestudio.cli.args import DEVICE_HELP, add_output_options, device_name, non_negative_int
from mergestudio.cli.progress import TerminalProgress
from mergestudio.cli.signals import cancel_on_stop


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export",
        help="merge a trial of a search run into a model folder",
        description=(
            "Merge one trial of a search run into a Hugging Face folder. The model card names the run, "
            "the trial and its objective values; recipe.yml and search_trial.json keep its lineage."
        ),
    )
    parser.add_argument("run", type=Path, help="run folder")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--trial", type=non_negative_int, required=True, help="trial number (see `mergestudio runs show`)")
    parser.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.search.export import export_trial

    with cancel_on_stop() as cancel:
        result = export_trial(
            args.run,
            args.trial,
            args.out,
            overwrite=args.overwrite,
            device=args.device,
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
        )
    print(f"exported trial {args.trial} of {args.run} to {result.output}")
    return 0
