"""Several workers on one run: ``mergestudio evolve SPEC RUN --workers N``.

The controller holds the run's lock, prepares the study (describes it, fails and queues
again the trials that dead processes left running), starts N worker processes, and then
only follows the study (``search.follow``): the events its sink receives are every
worker's trials, as one search would have sent them. Each worker is the search loop of
``runner.join_search`` in its own process (spawned: a search's threads make forking
unsafe), with its own resident model, its own torch threads and device, and a heartbeat
per trial; the study is their only coordination, so workers started by hand on other
machines (``mergestudio worker RUN --storage URL``) join the same way.

Stop (Ctrl-C) asks every worker to stop after its trial; cancel terminates them (their
trials run again on resume). A worker that dies is logged; its trial runs again once its
heartbeat is stale. The wall-time budget is the controller's: it stops the workers when
it is spent, and keeps the run's clock in the study for workers on other machines.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from mergestudio.events import EventSink, LogLine, emit, log
from mergestudio.search.control import SearchControl
from mergestudio.search.events import SearchStateChanged
from mergestudio.search.follow import FOLLOW_INTERVAL_S, RunFollower
from mergestudio.search.lock import RunLock
from mergestudio.search.store import GRACE_PERIODS, HEARTBEAT_S, RunFolder, recover_interrupted

if TYPE_CHECKING:
    import optuna

    from mergestudio.search.runner import SearchOutcome
    from mergestudio.search.schema import EvaluationSpec
    from mergestudio.search.spec import SearchSpec

RELAY_POLL_S = 0.2
STOP_GRACE_S = 30.0  # after Cancel, how long workers may take to exit before they are terminated


@dataclass(frozen=True)
class WorkerPlan:
    """How many workers, and what each gets: ``threads`` torch threads, and the devices
    dealt out in turn (``("cuda:0", "cuda:1")``: one GPU each; None: the spec's).

    ``backend``: ``local`` worker processes, or ``ray``: each worker evaluates on a Ray
    actor that asks the cluster for ``threads`` CPUs and ``gpus_per_worker`` GPUs (None:
    one if the spec's device is a GPU), at ``ray_address`` (None: Ray's default, a new
    local Ray when none is running). With Ray, ``count`` 0 means as many as fit."""

    count: int
    threads: int = 1
    devices: tuple[str, ...] | None = None
    heartbeat_s: int = HEARTBEAT_S
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    gpus_per_worker: float | None = None

    def device(self, index: int) -> str | None:
        return None if not self.devices else self.devices[index % len(self.devices)]


def run_with_workers(
    run_dir: str | Path,
    plan: WorkerPlan,
    *,
    spec: SearchSpec | None = None,
    evaluations: int | None = None,
    storage: str | None = None,
    events: EventSink | None = None,
    control: SearchControl | None = None,
) -> SearchOutcome:
    """Start a new run (``spec`` given) or resume the one in ``run_dir`` with
    ``plan.count`` workers, and follow it until they end. The workers' backend is
    reached first (``WorkerPool.connect``: Ray missing, or a cluster without the GPUs
    asked for, is an error before the run folder is written)."""
    control = control or SearchControl()
    with RunLock(run_dir) as lock:
        run = RunFolder(run_dir, heartbeat_s=plan.heartbeat_s)
        pool = _pool(run.path, plan, (spec or run.load_spec()).evaluation, events)
        try:
            pool.connect()
            if spec is not None:
                run.create(spec)
                if storage:
                    run.use_storage(storage)
            elif lock.stale_owner is not None:
                log(events, f"took over the run from {lock.stale_owner.describe()}, which ended without releasing it")
            return _Controller(run, plan, spec, evaluations, events, control, pool).run()
        finally:
            pool.end()


def _pool(run_dir: Path, plan: WorkerPlan, evaluation: EvaluationSpec, events: EventSink | None) -> WorkerPool:
    if plan.backend == "ray":
        from mergestudio.search.ray_backend import RayPool

        return RayPool(run_dir, plan, evaluation, events)
    return _ProcessPool(run_dir, plan)


class _Controller:
    def __init__(
        self,
        run: RunFolder,
        plan: WorkerPlan,
        spec: SearchSpec | None,
        evaluations: int | None,
        events: EventSink | None,
        control: SearchControl,
        pool: WorkerPool,
    ) -> None:
        from mergestudio.search.runner import with_evaluations

        self.run_folder, self.plan, self.events, self.control, self.pool = run, plan, events, control, pool
        self.resumed = spec is None
        self.spec = with_evaluations(spec or run.load_spec(), evaluations)
        self.started = time.perf_counter()
        self.elapsed_before = 0.0

    def run(self) -> SearchOutcome:
        from mergestudio.search.genome import Genome
        from mergestudio.search.objectives import Objectives
        from mergestudio.search.runner import ELAPSED_ATTR, SearchOutcome, describe_study, started_event
        from mergestudio.search.spec import base_recipe

        objectives = Objectives.build(self.spec)
        genome = Genome.build(self.spec.genome, base_recipe(self.spec))
        study = self.run_folder.open_study(list(objectives.directions))
        describe_study(study, self.spec, objectives, genome)
        interrupted = recover_interrupted(study, requeue=True)
        if interrupted:
            log(self.events, f"{len(interrupted)} trial(s) left unfinished will run again: {interrupted}")
        self.elapsed_before = float(study.user_attrs.get(ELAPSED_ATTR, 0.0))
        follower = RunFollower(self.run_folder, self.spec, self.events)
        follower.poll()  # the history first, as a resumed search replays it
        emit(
            self.events,
            started_event(self.run_folder.path, self.spec, objectives, genome, self.resumed, follower.complete),
        )
        state, reason = self._supervise(study, follower)
        emit(self.events, SearchStateChanged(state, reason, follower.complete, round(self._elapsed(), 3)))  # type: ignore[arg-type]
        return SearchOutcome(
            run=self.run_folder.path,
            state=state,
            complete_trials=follower.complete,
            front=follower.front.trials,
            hypervolume=follower.front.hypervolume,
            elapsed_s=self._elapsed(),
            interrupted_trials=tuple(interrupted),
        )

    def _supervise(self, study: optuna.Study, follower: RunFollower) -> tuple[str, str]:
        from mergestudio.search.runner import fail_stale

        pool = self.pool
        log(self.events, pool.start())
        emit(self.events, SearchStateChanged("running", "", follower.complete, round(self._elapsed(), 3)))
        wall_spent = ""
        try:
            while pool.alive():
                self.control.wait_for_stop(FOLLOW_INTERVAL_S)
                follower.poll()
                fail_stale(study, self.run_folder, self.events)  # workers check too, but only between trials
                self._save_elapsed(study)
                wall_spent = wall_spent or self._wall_time_spent()
                if self.control.stop_requested or wall_spent or self._budget_spent(follower):
                    pool.stop()  # a worker still waiting for its resources ends too
                if self.control.cancel_token.cancelled:
                    pool.cancel()
                self._report_deaths(pool)
        finally:
            pool.stop()
            pool.end()
        follower.poll()
        self._report_deaths(pool)
        self._save_elapsed(study)
        return self._verdict(follower, pool, wall_spent)

    def _report_deaths(self, pool: WorkerPool) -> None:
        grace = self.plan.heartbeat_s * GRACE_PERIODS
        for name, how in pool.new_deaths():
            log(
                self.events,
                f"worker {name} {how}; a trial it left running runs again once its heartbeat is {grace} s old",
                "warning",
            )

    def _budget_spent(self, follower: RunFollower) -> bool:
        budget = self.spec.budget.evaluations
        return budget is not None and follower.complete >= budget

    def _verdict(self, follower: RunFollower, pool: WorkerPool, wall_spent: str) -> tuple[str, str]:
        budget = self.spec.budget.evaluations
        if self._budget_spent(follower):
            return "finished", f"evaluation budget spent ({budget} trials)"
        if wall_spent:
            return "finished", wall_spent
        if self.control.stop_requested:
            return "stopped", "stopped by the user"
        failed = pool.failed()
        if failed:
            return "failed", f"workers {', '.join(failed)} ended with an error before the budget was spent"
        return "stopped", "every worker ended"

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def _save_elapsed(self, study: optuna.Study) -> None:
        from mergestudio.search.runner import ELAPSED_ATTR

        study.set_user_attr(ELAPSED_ATTR, round(self._elapsed(), 3))

    def _wall_time_spent(self) -> str:
        limit = self.spec.budget.wall_time_s
        if limit is not None and self._elapsed() >= limit:
            return f"wall-time budget spent ({limit:g} s)"
        return ""


class WorkerPool(Protocol):
    """The workers a controller starts and supervises: local processes
    (``_ProcessPool``) or threads that evaluate on Ray actors (``ray_backend.RayPool``)."""

    def connect(self) -> None:
        """Reach the backend and check that it can run the workers (before any is started)."""

    def start(self) -> str:
        """Start every worker; a line for the log saying which."""

    def alive(self) -> bool:
        """Whether any worker still runs."""

    def stop(self) -> None:
        """Ask every worker to stop after its trial (idempotent)."""

    def cancel(self) -> None:
        """Ask every worker to stop now (idempotent)."""

    def end(self) -> None:
        """Wait for the workers (asked to stop already), make sure they are gone, and
        leave the backend (idempotent)."""

    def new_deaths(self) -> list[tuple[str, str]]:
        """Workers that died since the last call: their names and how ("died (signal 9)")."""

    def failed(self) -> list[str]:
        """Names of the workers that ended with an error."""


class _ProcessPool:
    """``plan.count`` worker processes on this machine (spawned: a search's threads make
    forking unsafe), stopped and cancelled through two multiprocessing events."""

    def __init__(self, run_dir: Path, plan: WorkerPlan) -> None:
        self.run_dir, self.plan = run_dir, plan
        self.context = multiprocessing.get_context("spawn")
        self.stop_event, self.cancel_event = self.context.Event(), self.context.Event()
        self.workers: list[BaseProcess] = []
        self.reported: set[int] = set()

    def connect(self) -> None:
        pass  # this machine

    def start(self) -> str:
        self.workers = [self._start(index) for index in range(self.plan.count)]
        return f"{len(self.workers)} workers started: " + ", ".join(
            f"w{i} (pid {w.pid})" for i, w in enumerate(self.workers)
        )

    def _start(self, index: int) -> BaseProcess:
        plan = self.plan
        process = self.context.Process(
            target=work,
            args=(
                str(self.run_dir), index, plan.threads, plan.device(index), plan.heartbeat_s,
                self.stop_event, self.cancel_event,
            ),
            name=f"mergestudio-worker-{index}",
            daemon=True,
        )
        process.start()
        return process

    def alive(self) -> bool:
        return any(w.is_alive() for w in self.workers)

    def stop(self) -> None:
        if not self.stop_event.is_set():
            self.stop_event.set()

    def cancel(self) -> None:
        if not self.cancel_event.is_set():
            self.cancel_event.set()

    def end(self) -> None:
        """After the grace, cancel, then terminate."""
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if self.alive():
            self.cancel()
            for worker in self.workers:
                worker.join(5.0)
        for worker in self.workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(5.0)

    def new_deaths(self) -> list[tuple[str, str]]:
        deaths = []
        for index, worker in enumerate(self.workers):
            code = worker.exitcode
            if code not in (None, 0) and index not in self.reported:
                self.reported.add(index)
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                deaths.append((f"w{index}", f"(pid {worker.pid}) died ({how})"))
        return deaths

    def failed(self) -> list[str]:
        return [f"w{i}" for i, w in enumerate(self.workers) if w.exitcode != 0]


# ---- a worker process ---------------------------------------------------------------------


def work(
    run_dir: str,
    index: int,
    threads: int,
    device: str | None,
    heartbeat_s: int,
    stop: MpEvent,
    cancel: MpEvent,
) -> None:
    """A local worker's main function: join the run until its budget is spent or the
    controller says stop. Ctrl-C reaches the controller, which tells the workers."""
    from mergestudio.evaluate.lm import quiet_transformers
    from mergestudio.search import prepare_imports
    from mergestudio.search.runner import WorkerRole, join_search

    with contextlib.suppress(ValueError, OSError):  # not the main thread on some platforms
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    prepare_imports()
    quiet_transformers()
    control = SearchControl()
    threading.Thread(target=_relay, args=(stop, cancel, control), name="mergestudio-worker-control", daemon=True).start()
    name = f"w{index}"
    outcome = join_search(
        run_dir,
        role=WorkerRole(name, index, threads, device),
        events=_WorkerLog(name),
        control=control,
        heartbeat_s=heartbeat_s,
    )
    sys.exit(0 if outcome.state != "failed" else 1)


def _relay(stop: MpEvent, cancel: MpEvent, control: SearchControl) -> None:
    # Polled, never waited on: a process that dies inside ``Event.wait`` stays counted as
    # a sleeper, and the controller's ``set`` would then wait for it forever.
    while not stop.is_set():
        time.sleep(RELAY_POLL_S)
    control.stop()
    while not cancel.is_set():
        time.sleep(RELAY_POLL_S)
    control.cancel()


class _WorkerLog:
    """A worker's own lines (warnings: a lost trial, a failed candidate), prefixed with its
    name; its trials reach the user through the controller's follower."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, event: object) -> None:
        if isinstance(event, LogLine) and event.level in ("warning", "error"):
            print(f"[{self.name} pid {os.getpid()}] {event.message}", file=sys.stderr, flush=True)
