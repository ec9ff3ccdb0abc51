"""A search in a child process, its events sent back over a pipe.

The studio runs searches here rather than in a thread of its own process. A search's
worker runs Python most of the time (the evaluator's generation loop, Optuna, the run
store); in the window's process it shares one interpreter with the GUI thread, which
hands the GIL back and forth around every Qt call and waited up to a switch interval
each time: the window froze for ~0.1 s at a time while trials landed. In a child the
two never wait for each other, and the child's lower priority covers all its threads
(torch's included). The parent only unpickles the events: small frozen dataclasses.

Protocol. Child to parent: the engine's events as they are (``mergestudio.events``,
``mergestudio.search.events``), ``BaselinesScored`` once the baselines are known, and
last one ``SearchEnded``. Parent to child: the words in ``CONTROL_WORDS``. The parent's
end closing (the window quit or crashed) counts as ``cancel``: the current trial is
abandoned and re-queued, so the run folder stays resumable.

A request is also what ``run_request`` runs in the caller's thread: the baselines
first (scored with the search's own estimator), then the search.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.events import CancelToken, EventSink, emit, log
from mergestudio.search.control import SearchControl
from mergestudio.search.events import SearchStarted
from mergestudio.search.lock import RunLock

if TYPE_CHECKING:
    from mergestudio.search.baselines import Baseline
    from mergestudio.search.runner import SearchOutcome
    from mergestudio.search.spec import SearchSpec
    from mergestudio.search.workers import WorkerPlan

CONTROL_WORDS = ("pause", "resume", "stop", "cancel")
# Nicer than the window by this much: on a busy CPU the scheduler runs the GUI first.
CHILD_NICENESS = 5
# After a search has ended (or was cancelled), how long the child may take to exit
# before it is terminated. Cancelling stops torch between tensors and the evaluator
# between items, both well within this.
EXIT_GRACE_S = 20.0
CHECK_TIMEOUT_S = 120.0  # a first start imports torch, transformers and optuna from disk


@dataclass(frozen=True)
class SearchRequest:
    """Start a new run in ``run_dir`` (``spec`` given) or resume the one there
    (``evaluations`` replaces its evaluation budget); ``workers``: run it with that many
    workers (``search.workers``: local processes or Ray) instead of in this process."""

    run_dir: Path
    spec: SearchSpec | None = None
    evaluations: int | None = None
    workers: WorkerPlan | None = None


@dataclass(frozen=True)
class BaselinesScored:
    baselines: tuple[Baseline, ...]


@dataclass(frozen=True)
class SearchEnded:
    """The last message of a child. ``how``: "returned" (``outcome`` set; the search
    itself says whether it finished or stopped), "cancelled", or "failed" (``error``
    says why, ``details`` holds the traceback of an unexpected exception)."""

    how: Literal["returned", "cancelled", "failed"]
    outcome: SearchOutcome | None = None
    error: str = ""
    details: str = ""


class SearchProcessError(MergeStudioError):
    """The child ended without saying how (killed, out of memory, a crash in C code)."""


# ---- the request itself -------------------------------------------------------------------


def run_request(
    request: SearchRequest,
    *,
    events: EventSink | None = None,
    control: SearchControl | None = None,
    baselines_cancel: CancelToken | None = None,
) -> SearchOutcome:
    """Score the baselines, then start or resume the search. Baselines that cannot be
    scored are logged, not fatal; ``baselines_cancel`` ends their scoring (Stop does
    too), and a search stopped then never starts."""
    from mergestudio.io.hub import hub_transfer

    control = control or SearchControl()
    # Hub models the baselines or the search open download with progress, and Cancel stops them.
    with hub_transfer(events, control.cancel_token):
        return _run_request(request, events, control, baselines_cancel)


def _run_request(
    request: SearchRequest,
    events: EventSink | None,
    control: SearchControl,
    baselines_cancel: CancelToken | None,
) -> SearchOutcome:
    from mergestudio.search.runner import resume_search, start_search
    from mergestudio.search.workers import run_with_workers

    # The run's lock is held from the baselines on: a run another process controls is
    # refused before anything is scored or written (the search's own lock nests in it).
    with RunLock(request.run_dir):
        if request.spec is None:
            _emit_baselines(events, _resumed_baselines(request.run_dir, events, baselines_cancel))
            _stop_if_asked(control)
            if request.workers is not None:
                return run_with_workers(
                    request.run_dir, request.workers, evaluations=request.evaluations, events=events, control=control
                )
            return resume_search(
                request.run_dir, events=events, control=control, evaluations=request.evaluations
            )
        spec = request.spec
        baselines = _new_baselines(spec, events, baselines_cancel)
        _emit_baselines(events, baselines)
        _stop_if_asked(control)
        # Saved once the run folder exists, which the search creates before SearchStarted.
        saving = _SaveBaselinesOnStart(request.run_dir, spec, baselines, events)
        if request.workers is not None:
            return run_with_workers(request.run_dir, request.workers, spec=spec, events=saving, control=control)
        return start_search(spec, request.run_dir, events=saving, control=control)


def _new_baselines(
    spec: SearchSpec, events: EventSink | None, cancel: CancelToken | None
) -> list[Baseline] | None:
    from mergestudio.search.baselines import compute_baselines

    return _scored_or_none(lambda: compute_baselines(spec, events=events, cancel=cancel), events)


def _resumed_baselines(
    run_dir: Path, events: EventSink | None, cancel: CancelToken | None
) -> list[Baseline] | None:
    from mergestudio.search.baselines import run_baselines

    return _scored_or_none(lambda: run_baselines(run_dir, events=events, cancel=cancel), events)


def _scored_or_none(
    score: Callable[[], list[Baseline]], events: EventSink | None
) -> list[Baseline] | None:
    """The baselines, or None when Stop or Cancel ended their scoring (``_stop_if_asked``
    then ends the request) or they could not be scored (logged: the search is still
    worth running without them)."""
    try:
        return score()
    except Cancelled:
        return None
    except MergeStudioError as error:
        log(events, f"baselines not scored: {error}", "warning")
        return None


def _emit_baselines(events: EventSink | None, baselines: list[Baseline] | None) -> None:
    if baselines is not None:
        emit(events, BaselinesScored(tuple(baselines)))


def _stop_if_asked(control: SearchControl) -> None:
    """Stop or Cancel while the baselines were scored: end before the run starts."""
    if control.stop_requested:
        raise Cancelled("stopped before the first trial")


class _SaveBaselinesOnStart:
    """An event sink that writes the baselines into the run folder when the search
    announces itself, then passes every event on."""

    def __init__(
        self, run_dir: Path, spec: SearchSpec, baselines: list[Baseline] | None, events: EventSink | None
    ) -> None:
        self.run_dir, self.spec, self.events = run_dir, spec, events
        self.pending = baselines

    def __call__(self, event: object) -> None:
        if isinstance(event, SearchStarted) and self.pending is not None:
            from mergestudio.search.baselines import save_baselines

            save_baselines(self.run_dir, self.spec, self.pending)
            self.pending = None
        emit(self.events, event)


# ---- the parent's side --------------------------------------------------------------------


class SearchProcess:
    """One request in a child process. ``start``, then iterate ``events()`` (in one
    thread) until it ends; ``pause``/``resume``/``stop``/``cancel`` are safe from any
    thread at any time, before ``start`` included (they wait in the pipe)."""

    def __init__(self, request: SearchRequest) -> None:
        self.request = request
        self.ended: SearchEnded | None = None
        context = multiprocessing.get_context("spawn")  # forking a process with threads is unsafe
        self._events_in, events_out = context.Pipe(duplex=False)
        control_in, self._control_out = context.Pipe(duplex=False)
        self._child_ends = (events_out, control_in)
        # Daemonic, so it cannot outlive the window, unless it starts worker processes
        # (daemons may not have children); it still ends when the window's end of the
        # control pipe closes (``_obey``: cancel).
        self._process = context.Process(
            target=serve,
            args=(request, events_out, control_in),
            name="mergestudio-search",
            daemon=request.workers is None or request.workers.backend != "local",
        )
        self._send_lock = threading.Lock()

    def start(self) -> None:
        self._process.start()
        for end in self._child_ends:  # the child holds its own copies now
            end.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def events(self) -> Iterator[object]:
        """Every event the child sends, in order, until it ends; ``ended`` then says how.
        Raises ``SearchProcessError`` when the child dies without saying."""
        while True:
            try:
                message = self._events_in.recv()
            except (EOFError, OSError):
                self._process.join(EXIT_GRACE_S)
                raise SearchProcessError(
                    f"the search process ended unexpectedly (exit code {self._process.exitcode}); "
                    f"the run folder {self.request.run_dir} can be resumed"
                ) from None
            if isinstance(message, SearchEnded):
                self.ended = message
                return
            yield message

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        self._send("stop")

    def cancel(self) -> None:
        self._send("cancel")

    def _send(self, word: str) -> None:
        # A child that has ended already has nothing left to control.
        with self._send_lock, contextlib.suppress(OSError):
            self._control_out.send(word)

    def close(self, grace_s: float = EXIT_GRACE_S) -> None:
        """Wait for the child to exit (cancelling it when it has not said it ended),
        terminate it after ``grace_s``, and release the pipes."""
        if self._process.pid is not None:
            if self.ended is None:
                self.cancel()
            self._process.join(grace_s)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5.0)
        self._control_out.close()
        self._events_in.close()


def check_child_process(timeout_s: float = CHECK_TIMEOUT_S) -> str:
    """Start a child the way a search does, have it import what a search imports, and
    return its answer (the optimiser's version): an installation's proof that searches
    can run (a frozen app must hand its child processes to ``freeze_support``)."""
    context = multiprocessing.get_context("spawn")
    answers, answer_out = context.Pipe(duplex=False)
    child = context.Process(target=_answer_check, args=(answer_out,), name="mergestudio-check", daemon=True)
    child.start()
    answer_out.close()
    try:
        if not answers.poll(timeout_s):
            raise SearchProcessError(f"a search process did not answer within {timeout_s:g} s")
        return str(answers.recv())
    except EOFError:
        raise SearchProcessError(f"a search process ended without answering (exit code {child.exitcode})") from None
    finally:
        child.join(EXIT_GRACE_S)
        if child.is_alive():
            child.terminate()
        answers.close()


def _answer_check(answer_out: Connection) -> None:
    from mergestudio.search import prepare_imports

    prepare_imports()
    import optuna

    answer_out.send(f"optuna {optuna.__version__}")
    answer_out.close()


# ---- the child's side ---------------------------------------------------------------------


def serve(request: SearchRequest, events_out: Connection, control_in: Connection) -> None:
    """The child's main function: run ``request``, sending every event to the parent
    and obeying its control words."""
    _lower_priority()
    from mergestudio.evaluate.lm import quiet_transformers
    from mergestudio.search import prepare_imports

    prepare_imports()
    quiet_transformers()
    control, baselines_cancel = SearchControl(), CancelToken()
    listener = threading.Thread(
        target=_obey, args=(control_in, control, baselines_cancel), name="mergestudio-search-control", daemon=True
    )
    listener.start()
    send = _Sender(events_out)
    try:
        outcome = run_request(request, events=send, control=control, baselines_cancel=baselines_cancel)
        ended = SearchEnded("returned", outcome)
    except Cancelled:
        ended = SearchEnded("cancelled")
    except MergeStudioError as error:
        ended = SearchEnded("failed", error=str(error))
    except Exception as error:  # a bug must reach the window, not vanish with the process
        ended = SearchEnded("failed", error=f"{type(error).__name__}: {error}", details=traceback.format_exc())
    send(ended)
    events_out.close()


def _obey(control_in: Connection, control: SearchControl, baselines_cancel: CancelToken) -> None:
    while True:
        try:
            word = control_in.recv()
        except (EOFError, OSError):
            word = "cancel"  # the parent is gone: nobody will resume a paused search
        if word == "pause":
            control.pause()
        elif word == "resume":
            control.resume()
        elif word == "stop":
            baselines_cancel.cancel()
            control.stop()
        elif word == "cancel":
            baselines_cancel.cancel()
            control.cancel()
            return


class _Sender:
    """The child's event sink: one pipe, written from whichever thread emits."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.lock = threading.Lock()

    def __call__(self, event: object) -> None:
        # A parent that is gone reads nothing; the control listener cancels the search.
        with self.lock, contextlib.suppress(OSError):
            self.connection.send(event)


def _lower_priority() -> None:
    """Before any other thread starts: on Linux each thread inherits its creator's."""
    if not hasattr(os, "nice"):  # Windows: the default priority
        return
    with contextlib.suppress(OSError):  # not permitted in some sandboxes: keep the default
        os.nice(CHILD_NICENESS)
