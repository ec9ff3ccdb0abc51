"""``mergestudio demo build`` and ``mergestudio demo info``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mergestudio.cli.args import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from mergestudio.demo.paths import ENV_VAR

    parser = subparsers.add_parser(
        "demo",
        help="build or describe the demo zoo",
        description=(
            "The demo zoo: a tiny Llama base, skill specialists fine-tuned from it, task data "
            f"and default merge recipes. Lives in resources/demo (or ${ENV_VAR})."
        ),
    )
    demo_sub = parser.add_subparsers(dest="demo_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _help(parser))

    build = demo_sub.add_parser(
        "build",
        help="train the zoo from its fixed seed and measure the results table",
        description="Generate data, train the base and specialists, write recipes, and measure the table.",
    )
    build.add_argument("--out", type=Path, help="zoo folder (default: resources/demo)")
    build.add_argument("--seed", type=int, default=0, help="the seed everything derives from (default: 0)")
    build.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads for training; part of the reproducibility contract",
    )
    build.add_argument("--no-eval", action="store_true", help="skip measuring the results table")
    build.add_argument(
        "--measure-only",
        action="store_true",
        help="keep the built models; rewrite the default recipes and measure the table again",
    )
    build.add_argument(
        "--miniature", action="store_true", help="a toy zoo in seconds (for trying the pipeline)"
    )
    build.set_defaults(func=run_build)

    info = demo_sub.add_parser("info", help="print the zoo's paths and results table")
    info.add_argument("--dir", type=Path, help="zoo folder (default: resources/demo)")
    info.add_argument(
        "--json",
        action="store_true",
        help="print a machine-readable description: base, specialists and their skills, "
        "train/dev/test files, default recipes, results table (raw and normalized)",
    )
    info.set_defaults(func=run_info)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_build(args: argparse.Namespace) -> int:
    import dataclasses

    from mergestudio.demo.build import ZooConfig, build_zoo, remeasure_zoo
    from mergestudio.demo.paths import default_zoo_dir
    from mergestudio.evaluate.lm import quiet_transformers

    quiet_transformers()
    config = ZooConfig.miniature() if args.miniature else ZooConfig()
    config = dataclasses.replace(config, seed=args.seed, threads=args.threads)
    out = args.out or default_zoo_dir()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.measure_only:
        remeasure_zoo(out, config, log=log)
    else:
        build_zoo(out, config, log=log, evaluate=not args.no_eval)
    from mergestudio.demo.info import describe_zoo

    print(describe_zoo(out))
    return 0


def run_info(args: argparse.Namespace) -> int:
    import json

    from mergestudio.demo import paths
    from mergestudio.demo.info import describe_zoo, zoo_info
    from mergestudio.demo.results import json_safe

    zoo = args.dir or paths.default_zoo_dir()
    if not paths.models_dir(zoo).is_dir():
        print(f"error: no demo zoo at {zoo} (build one with: mergestudio demo build)", file=sys.stderr)
        return 1
    if not args.json:
        print(describe_zoo(zoo))
        return 0
    print(json.dumps(json_safe(zoo_info(zoo)), indent=1, ensure_ascii=False))
    return 0
