"""``mergestudio evolve SPEC RUN`` and ``mergestudio evolve --resume RUN``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mergestudio.cli.args import positive_int
from mergestudio.cli.progress import TerminalProgress, format_seconds
from mergestudio.cli.signals import on_stop_signals
from mergestudio.events import LogLine, Progress

if TYPE_CHECKING:
    from mergestudio.search.runner import SearchOutcome
    from mergestudio.search.spec import SearchSpec


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "evolve",
        help="search merge recipes (CMA-ES, NSGA-II, TPE, random)",
        description=(
            "Run an evolutionary search over merge recipes as a search spec says, into a run folder "
            "(an Optuna study that optuna-dashboard can open). Ctrl-C stops after the current trial "
            "(twice: at once); --resume continues a stopped or killed run. One process controls a "
            "run at a time; --workers N runs N worker processes on it (--backend ray: Ray actors on a "
            "Ray cluster), and `mergestudio worker RUN` adds workers from other machines."
        ),
        usage="mergestudio evolve SPEC RUN | mergestudio evolve --resume RUN  [--workers N] [--backend ray]",
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="SPEC RUN", help="search spec YAML and run folder"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN")
    parser.add_argument("--evaluations", type=positive_int, help="evaluation budget (replaces the spec's)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-trial lines")
    add_worker_options(parser)
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=0,
        metavar="N",
        help="run N worker processes on the run, each with its own model and --threads torch threads",
    )
    parser.add_argument(
        "--devices",
        metavar="LIST",
        help="devices dealt to the workers in turn, comma-separated (cuda:0,cuda:1: one GPU each)",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where workers evaluate candidates: local processes, or Ray actors on a Ray cluster "
        "(--ray-address; without one, a local Ray). With ray, --workers defaults to as many as fit",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster to join (ray://host:10001, or auto); default: RAY_ADDRESS, else a local Ray",
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs each Ray worker asks for (0.5: two share one GPU); default: 1 if the spec's device is a GPU",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="keep a new run's study here instead of RUN/study.db: an RDB URL (postgresql://…, "
        "mysql://…) or journal:PATH (a journal file), so workers on other machines can join",
    )
    parser.set_defaults(func=run)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """Options a worker process takes, shared by ``evolve --workers`` and ``worker``."""
    from mergestudio.search.store import HEARTBEAT_S

    parser.add_argument(
        "--threads", type=positive_int, metavar="T", help="torch threads per worker (default: 1 with --workers)"
    )
    parser.add_argument(
        "--heartbeat",
        type=positive_int,
        default=HEARTBEAT_S,
        metavar="S",
        help=f"seconds between a running trial's heartbeats; a trial silent for 3 of them belongs to "
        f"a dead worker and runs again (default {HEARTBEAT_S})",
    )


def run(args: argparse.Namespace) -> int:
    from mergestudio.evaluate.lm import quiet_transformers
    from mergestudio.search import SearchControl, resume_search, start_search
    from mergestudio.search.report import format_summary, summarize
    from mergestudio.search.runner import describe_outcome

    if args.resume != (len(args.paths) == 1) or len(args.paths) > 2:
        print("usage: mergestudio evolve SPEC RUN | mergestudio evolve --resume RUN", file=sys.stderr)
        return 2
    if args.storage and args.resume:
        print("error: --storage: a run keeps the storage it was started with", file=sys.stderr)
        return 2
    if args.backend != "ray" and (args.ray_address or args.gpus_per_worker is not None):
        print("error: --ray-address and --gpus-per-worker go with --backend ray", file=sys.stderr)
        return 2
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        print("error: --gpus-per-worker: must be 0 or more", file=sys.stderr)
        return 2
    quiet_transformers()
    control = SearchControl()
    sink = SearchPrinter(quiet=args.quiet or args.json)
    with on_stop_signals(lambda signum: _interrupt(control, signum)):
        if args.workers or args.backend == "ray":
            outcome = _with_workers(args, control, sink)
        elif args.resume:
            outcome = resume_search(args.paths[0], events=sink, control=control, evaluations=args.evaluations)
        else:
            spec = _spec_with_budget(args.paths[0], args.evaluations)
            outcome = start_search(spec, args.paths[1], events=sink, control=control, storage=args.storage)
    if args.json:
        print(json.dumps(describe_outcome(outcome), indent=2))
    else:
        print(format_summary(summarize(outcome.run), limit=0))
    return 0 if outcome.state != "failed" else 1


def _with_workers(args: argparse.Namespace, control: object, sink: SearchPrinter) -> SearchOutcome:
    from mergestudio.search.control import SearchControl
    from mergestudio.search.workers import WorkerPlan, run_with_workers

    assert isinstance(control, SearchControl)
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else None
    plan = WorkerPlan(
        args.workers,
        args.threads or 1,
        devices,
        args.heartbeat,
        backend=args.backend,
        ray_address=args.ray_address,
        gpus_per_worker=args.gpus_per_worker,
    )
    if args.resume:
        return run_with_workers(args.paths[0], plan, evaluations=args.evaluations, events=sink, control=control)
    spec = _spec_with_budget(args.paths[0], args.evaluations)
    return run_with_workers(args.paths[1], plan, spec=spec, storage=args.storage, events=sink, control=control)


def _spec_with_budget(path: Path, evaluations: int | None) -> SearchSpec:
    from mergestudio.search.spec import load_spec

    spec = load_spec(path)
    if evaluations is None:
        return spec
    return spec.model_copy(update={"budget": spec.budget.model_copy(update={"evaluations": evaluations})})



def _interrupt(control: object, signum: int) -> None:
    """Ctrl-C: stop after this trial (twice: at once). SIGTERM/SIGHUP: at once, since no
    one is there to press Ctrl-C a second time."""
    from mergestudio.search.control import SearchControl

    assert isinstance(control, SearchControl)
    if control.stop_requested or signum != signal.SIGINT:
        control.cancel()
        print("\nstopping now; the current trial will run again on --resume", file=sys.stderr, flush=True)
    else:
        control.stop()
        print("\nstopping after this trial (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)


class SearchPrinter:
    """The live summary: one line per finished trial, the front when it changes, one
    line per generation. Evaluation progress bars are left out: a trial takes seconds."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._log = TerminalProgress(self.stream, quiet=quiet)
        self._budget = ""

    def __call__(self, event: object) -> None:
        from mergestudio.search import events as ev

        if isinstance(event, LogLine):
            self._log(event)
        elif isinstance(event, Progress):
            return
        elif isinstance(event, ev.SearchStarted):
            self._started(event)
        elif self.quiet:
            return
        elif isinstance(event, ev.TrialFinished) and not event.replayed:
            self._trial(event)
        elif isinstance(event, ev.ParetoFrontChanged):
            self._write(f"      front: {len(event.trials)} trial(s), hypervolume {event.hypervolume:.4g}")
        elif isinstance(event, ev.GenerationFinished):
            best = "  ".join(f"{k} {v:.4g}" for k, v in event.best_so_far.items())
            self._write(f"--- generation {event.generation} done; best so far: {best}")
        elif isinstance(event, ev.SearchStateChanged) and event.state not in ("running",):
            reason = f": {event.reason}" if event.reason else ""
            self._write(
                f"search {event.state}{reason} ({event.finished_trials} trials, {format_seconds(event.elapsed_s)})"
            )

    def _started(self, event: object) -> None:
        from mergestudio.search.events import SearchStarted

        assert isinstance(event, SearchStarted)
        budget = []
        if event.budget_evaluations:
            budget.append(f"{event.budget_evaluations} evaluations")
        if event.budget_wall_time_s:
            budget.append(f"{format_seconds(event.budget_wall_time_s)} wall time")
        done = f" ({event.finished_before} trials done)" if event.resumed else ""
        self._write(
            f"{'resuming' if event.resumed else 'starting'} {event.algorithm} search in {event.run}{done}: "
            f"{len(event.genes)} genes, objectives {', '.join(event.study_objectives)}; budget {' / '.join(budget)}"
        )

    def _trial(self, event: object) -> None:
        from mergestudio.search.events import TrialFinished

        assert isinstance(event, TrialFinished)
        if event.state == "failed":
            self._write(f"trial {event.number:>4} failed: {event.error}")
            return
        values = "  ".join(f"{k} {v:.4g}" for k, v in event.objectives.items())
        mark = "  *front" if event.is_on_front else ""
        self._write(
            f"trial {event.number:>4} [gen {event.generation}] {values}  ({event.duration_s:.1f}s){mark}"
        )

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
