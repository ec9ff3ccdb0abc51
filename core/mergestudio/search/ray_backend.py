"""Candidates evaluated as Ray tasks: ``mergestudio evolve SPEC RUN --backend ray``.

Where a user has a Ray cluster, the controller joins it (``ray.init``: the address
given, ``RAY_ADDRESS``, or a new local Ray) and starts one worker per Ray actor. A
worker is the search loop of ``runner.join_search`` in a thread of the controller: it
asks the study for a trial, counts the budget, writes the trial's items file into the
run folder and tells the study, exactly as a local worker process does, but its
candidates are merged and evaluated by its actor (``CandidateActor``: one resident
model on the resources the actor asked the cluster for, ``num_cpus`` = the worker's
torch threads, ``num_gpus`` = one when the spec's device is a GPU, or
``--gpus-per-worker``). Each candidate is one Ray task on that actor.

So the study, the budget, heartbeats and the run folder stay where the controller is:
the Evolve page and ``runs show`` read the run as any other, and the cluster's nodes
need only the input models and task files at the same paths (and mergestudio
installed), not the run folder.

- A candidate whose Ray task fails (an exception in the actor, or the actor's process
  dying: out of memory, a lost node) is a failed trial with the error; Ray restarts
  the actor (up to ``ACTOR_RESTARTS`` times) for the worker's next trial.
- Stop: workers end after their trials. Cancel: each actor is asked to cancel its
  candidate (the merge and the evaluation check a cancel token), and killed if it has
  not within ``CANCEL_GRACE_S``; the trial runs again on resume.
- Ray is an optional extra (``pip install mergestudio[ray]``); nothing here imports it
  until a Ray run starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.events import CancelToken, EventSink, LogLine, log
from mergestudio.search.control import SearchControl

if TYPE_CHECKING:
    from mergestudio.evaluate.evaluator import AnyTask
    from mergestudio.evaluate.resident import CandidateEvaluator, CandidateResult
    from mergestudio.recipe.model import Recipe
    from mergestudio.recipe.multi import MultiRecipe
    from mergestudio.search.schema import EvaluationSpec
    from mergestudio.search.workers import WorkerPlan

ACTOR_RESTARTS = 3  # per actor: a candidate that kills its actor every time fails, not the run
CANCEL_GRACE_S = 10.0  # after asking an actor to cancel, how long before it is killed
POLL_S = 0.2  # how often a worker waiting on its actor checks for stop and cancel
PENDING_NOTICE_S = 30.0  # say so when an actor waits this long for the cluster's resources
THREAD_GRACE_S = 30.0  # after stop and cancel, how long the pool waits for its threads


class RayBackendError(MergeStudioError):
    """Ray is missing, or the cluster cannot hold the workers asked for."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayBackendError(
            "--backend ray needs Ray: pip install 'mergestudio[ray]' (or pip install ray)"
        ) from None
    return ray


# ---- resources -------------------------------------------------------------------------


def actor_resources(
    device: str, threads: int, gpus_per_worker: float | None, cluster: dict[str, float]
) -> tuple[float, float, str]:
    """What each worker's actor asks the cluster for, and the device it evaluates on:
    ``(num_cpus, num_gpus, device)``. ``gpus_per_worker`` None: one GPU if ``device`` is
    a GPU (``cuda``, ``cuda:N``, or ``auto`` on a cluster with GPUs), else none. Ray
    shows an actor only the GPUs it was given, so its device is plain ``cuda``."""
    cluster_gpus = float(cluster.get("GPU", 0.0))
    if gpus_per_worker is None:
        wants_gpu = device.startswith("cuda") or (device == "auto" and cluster_gpus > 0)
        gpus_per_worker = 1.0 if wants_gpu else 0.0
    if gpus_per_worker > cluster_gpus:
        raise RayBackendError(
            f"--backend ray: each worker needs {gpus_per_worker:g} GPU(s) (evaluation device {device!r}), "
            f"and the Ray cluster has {cluster_gpus:g}; set the spec's evaluation device to cpu, or "
            "--gpus-per-worker"
        )
    if gpus_per_worker > 0:
        return float(threads), gpus_per_worker, "cuda"
    return float(threads), 0.0, "cpu" if device == "auto" or device.startswith("cuda") else device


def workers_that_fit(num_cpus: float, num_gpus: float, cluster: dict[str, float]) -> int:
    """How many actors of this size the cluster holds at once (at least one)."""
    fits = float(cluster.get("CPU", 1.0)) // num_cpus if num_cpus else math.inf
    if num_gpus:
        fits = min(fits, float(cluster.get("GPU", 0.0)) // num_gpus)
    return max(1, int(fits)) if math.isfinite(fits) else 1


# ---- the actor (runs in a Ray worker process) -------------------------------------------


class CandidateActor:
    """One resident model in a Ray worker process; ``evaluate`` is one candidate. Made a
    Ray actor by ``RayPool`` (``ray.remote``), with two concurrent calls so that
    ``cancel`` reaches a running ``evaluate``."""

    def __init__(self, template: str, tasks: Sequence[AnyTask], batch_size: int, device: str, threads: int) -> None:
        from mergestudio.engine.device import torch_threads
        from mergestudio.evaluate.lm import quiet_transformers
        from mergestudio.evaluate.resident import ResidentEvaluator
        from mergestudio.search import prepare_imports

        prepare_imports()
        quiet_transformers()
        self.threads = threads
        self.cancel_token = CancelToken()
        with torch_threads(threads):
            self.resident = ResidentEvaluator(
                template, tasks, batch_size=batch_size, device=device, dtype="float32", merge_threads=threads
            )

    def ready(self) -> int:
        """The actor's pid, once its model is loaded."""
        return os.getpid()

    def evaluate(self, recipe: Recipe | MultiRecipe | str, tasks: Sequence[AnyTask]) -> CandidateResult:
        from mergestudio.engine.device import torch_threads

        self.cancel_token = CancelToken()
        self.resident.tasks = list(tasks)
        with torch_threads(self.threads):
            return self.resident.evaluate(recipe, cancel=self.cancel_token)

    def cancel(self) -> None:
        self.cancel_token.cancel()


# ---- the controller's side --------------------------------------------------------------


class RayEvaluator:
    """A worker's evaluator (``runner.EvaluatorFactory``'s product) that sends each
    candidate to its actor as a Ray task and waits for it, watching ``control``."""

    def __init__(self, ray: Any, actor: Any, name: str, tasks: Sequence[AnyTask], control: SearchControl) -> None:
        self._ray, self._actor, self.name, self._control = ray, actor, name, control
        self._tasks: list[AnyTask] = list(tasks)
        self._tasks_ref: Any = None

    @property
    def tasks(self) -> list[AnyTask]:
        return self._tasks

    @tasks.setter
    def tasks(self, tasks: list[AnyTask]) -> None:
        self._tasks, self._tasks_ref = list(tasks), None

    def evaluate(
        self,
        recipe: Recipe | MultiRecipe | str | dict[str, Any],
        events: EventSink | None = None,
        cancel: CancelToken | None = None,
    ) -> CandidateResult:
        """Evaluate ``recipe`` on the actor. The tasks travel with every call (put in
        Ray's object store once per change), so an actor that Ray restarted evaluates
        the same items as before."""
        ray = self._ray
        if self._tasks_ref is None:
            self._tasks_ref = ray.put(self._tasks)
        reference = self._actor.evaluate.remote(recipe, self._tasks_ref)
        if not self._wait(reference, cancel):
            self._cancel(reference)
        try:
            result: CandidateResult = ray.get(reference)
        except ray.exceptions.RayTaskError as error:
            raise _task_error(error) from None
        except ray.exceptions.RayActorError as error:
            raise RayBackendError(
                f"the Ray actor of worker {self.name} died while evaluating this candidate: {_first_line(error)}"
            ) from None
        return result

    def _wait(self, reference: Any, cancel: CancelToken | None) -> bool:
        """Wait for the task; False if cancelled first."""
        while not self._ray.wait([reference], timeout=POLL_S)[0]:
            if (cancel is not None and cancel.cancelled) or self._control.cancel_token.cancelled:
                return False
        return True

    def _cancel(self, reference: Any) -> None:
        """Ask the actor to cancel the candidate; kill it if it has not within the grace.
        Raises Cancelled either way."""
        self._actor.cancel.remote()
        if not self._ray.wait([reference], timeout=CANCEL_GRACE_S)[0]:
            self._ray.kill(self._actor, no_restart=True)
        raise Cancelled("cancelled by the user")


def _task_error(error: Any) -> Exception:
    """What a failed Ray task means here: Cancelled, the candidate's own error (a failed
    trial, as in a local worker), or any other exception as a failed trial too."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, Cancelled):
        return Cancelled(str(cause))
    if isinstance(cause, MergeStudioError):
        return cause
    what = f"{type(cause).__name__}: {cause}" if cause is not None else _first_line(error)
    return RayBackendError(f"the Ray task failed: {what}")


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class RayPool:
    """The ``--backend ray`` workers: threads of the controller, each running the search
    loop (``runner.join_search``) with a ``RayEvaluator`` on its own actor."""

    def __init__(self, run_dir: Path, plan: WorkerPlan, evaluation: EvaluationSpec, events: EventSink | None) -> None:
        self.run_dir, self.plan, self.evaluation, self.events = run_dir, plan, evaluation, events
        self.control = SearchControl()  # the workers'; the controller's own stops and cancels it
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, str] = {}  # workers that died of an exception
        self.gave_up: set[str] = set()  # workers whose trials kept failing
        self.reported: set[str] = set()
        self.ray: Any = None
        self.started_ray = False
        self.options: dict[str, float] = {}
        self.cluster: dict[str, float] = {}
        self.device = "cpu"
        self.prefix = f"mergestudio-{os.getpid()}-{time.monotonic_ns()}"

    def connect(self) -> None:
        """Join the Ray cluster (or start a local Ray) and size the actors."""
        ray = self.ray = import_ray()
        if not ray.is_initialized():
            address = self.plan.ray_address or os.environ.get("RAY_ADDRESS")
            # A Ray of our own needs no dashboard; an existing cluster keeps its settings.
            extra = {} if address else {"include_dashboard": False}
            ray.init(address=address, logging_level=logging.WARNING, **extra)
            self.started_ray = True
        self.cluster = {key: float(ray.cluster_resources().get(key, 0.0)) for key in ("CPU", "GPU")}
        device = (self.plan.devices or (self.evaluation.device,))[0]
        num_cpus, num_gpus, self.device = actor_resources(
            device, self.plan.threads, self.plan.gpus_per_worker, self.cluster
        )
        self.options = {"num_cpus": num_cpus, "num_gpus": num_gpus}

    def start(self) -> str:
        num_cpus, num_gpus, cluster = self.options["num_cpus"], self.options["num_gpus"], self.cluster
        count = self.plan.count or workers_that_fit(num_cpus, num_gpus, cluster)
        names = [f"ray{index}" for index in range(count)]
        self.threads = [
            threading.Thread(target=self._work, args=(name, index), name=f"mergestudio-{name}", daemon=True)
            for index, name in enumerate(names)
        ]
        for thread in self.threads:
            thread.start()
        return (
            f"{count} Ray workers started: {', '.join(names)} (each an actor with {num_cpus:g} CPU(s), "
            f"{num_gpus:g} GPU(s), evaluating on {self.device}; the Ray cluster has {cluster['CPU']:g} CPU(s), "
            f"{cluster['GPU']:g} GPU(s))"
        )

    def actor_name(self, worker: str) -> str:
        """The Ray name of ``worker``'s actor (``ray.get_actor`` finds it)."""
        return f"{self.prefix}-{worker}"

    def _work(self, name: str, index: int) -> None:
        from mergestudio.search.runner import WorkerRole, join_search

        try:
            outcome = join_search(
                self.run_dir,
                role=WorkerRole(name, index),
                events=_WorkerLog(name, self.events),
                control=self.control,
                heartbeat_s=self.plan.heartbeat_s,
                evaluator=lambda template, tasks, evaluation, control: self._evaluator(
                    name, template, tasks, evaluation, control
                ),
            )
        except Exception as error:  # reported as the worker's death: nothing catches it in a thread
            self.errors[name] = f"{type(error).__name__}: {error}"
            return
        if outcome.state == "failed":
            self.gave_up.add(name)

    @contextlib.contextmanager
    def _evaluator(
        self, name: str, template: str, tasks: Sequence[AnyTask], evaluation: EvaluationSpec, control: SearchControl
    ) -> Iterator[CandidateEvaluator]:
        """Start ``name``'s actor and wait until its model is loaded, so the worker asks
        for no trial while the cluster has no room for it; kill the actor at the end."""
        ray = self.ray
        remote = ray.remote(CandidateActor).options(
            name=self.actor_name(name),
            max_concurrency=2,
            max_restarts=ACTOR_RESTARTS,
            **self.options,
        )
        actor = remote.remote(template, list(tasks), evaluation.batch_size, self.device, self.plan.threads)
        try:
            self._wait_ready(name, actor, control)
            yield RayEvaluator(ray, actor, name, tasks, control)
        finally:
            ray.kill(actor, no_restart=True)

    def _wait_ready(self, name: str, actor: Any, control: SearchControl) -> None:
        ray, ready = self.ray, actor.ready.remote()
        waited = 0.0
        while not ray.wait([ready], timeout=POLL_S)[0]:
            if control.stop_requested:
                raise Cancelled(f"{name} stopped before its Ray actor started")
            waited += POLL_S
            if abs(waited - PENDING_NOTICE_S) < POLL_S / 2:
                log(self.events, f"{name}: its Ray actor still waits for the cluster ({self.options})", "warning")
        try:
            ray.get(ready)
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
            raise RayBackendError(f"{name}: its Ray actor could not load the model: {_first_line(error)}") from None

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def stop(self) -> None:
        self.control.stop()

    def cancel(self) -> None:
        self.control.cancel()

    def end(self) -> None:
        deadline = time.monotonic() + THREAD_GRACE_S
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.alive():
            self.cancel()  # each worker then kills its actor within CANCEL_GRACE_S
            for thread in self.threads:
                thread.join(CANCEL_GRACE_S + 5.0)
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False

    def new_deaths(self) -> list[tuple[str, str]]:
        deaths = [(name, f"ended with an error ({error})") for name, error in self.errors.items()]
        fresh = [death for death in deaths if death[0] not in self.reported]
        self.reported.update(name for name, _ in fresh)
        return fresh

    def failed(self) -> list[str]:
        return sorted(set(self.errors) | self.gave_up)


class _WorkerLog:
    """A Ray worker's warnings and errors, prefixed with its name, on the controller's
    sink; its trials reach the user through the controller's follower."""

    def __init__(self, name: str, events: EventSink | None) -> None:
        self.name, self.events = name, events

    def __call__(self, event: object) -> None:
        if isinstance(event, LogLine) and event.level in ("warning", "error"):
            log(self.events, f"[{self.name}] {event.message}", event.level)
