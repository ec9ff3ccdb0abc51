"""``mergestudio worker RUN``: one more worker on a run, from this machine or another."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import zlib

from mergestudio.cli.evolve_cmd import SearchPrinter, _interrupt, add_worker_options
from mergestudio.cli.signals import on_stop_signals


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "worker",
        help="join a running search as one more worker (this machine or another)",
        description=(
            "Evaluate candidates of the search run in RUN beside its other workers until its "
            "budget is spent; trials are shared through the run's Optuna storage. From another "
            "machine, give the storage the run was started with (--storage of `evolve`: an RDB URL "
            "or journal:PATH on a shared file system) and a copy of the run folder (its spec.yml, "
            "with the models and tasks at the same paths). Ctrl-C stops after the current trial."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="the run folder (its spec.yml is read)")
    parser.add_argument("--storage", metavar="URL", help="the run's storage (default: the one RUN records)")
    parser.add_argument("--name", help="how this worker shows in trials (default: HOST:PID)")
    parser.add_argument("--device", help="evaluate on this device instead of the spec's (cuda:1, say)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-trial lines")
    add_worker_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from mergestudio.evaluate.lm import quiet_transformers
    from mergestudio.search import SearchControl
    from mergestudio.search.runner import WorkerRole, describe_outcome, join_search

    quiet_transformers()
    name = args.name or f"{socket.gethostname()}:{os.getpid()}"
    # Seeds its draws apart from every other worker's (by name: stable, unlike a pid).
    role = WorkerRole(name, zlib.crc32(name.encode()), args.threads, args.device)
    control = SearchControl()
    sink = SearchPrinter(quiet=args.quiet or args.json)
    with on_stop_signals(lambda signum: _interrupt(control, signum)):
        outcome = join_search(
            args.run, role=role, events=sink, control=control, storage=args.storage, heartbeat_s=args.heartbeat
        )
    if args.json:
        print(json.dumps(describe_outcome(outcome), indent=2))
    else:
        print(f"worker {name}: {outcome.state}, {outcome.complete_trials} complete trials in the run", file=sys.stderr)
    return 0 if outcome.state != "failed" else 1
