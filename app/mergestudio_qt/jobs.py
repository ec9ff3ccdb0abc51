"""Long work off the GUI thread: a ``Job`` is a QObject moved to its own QThread that
calls the engine and turns its events into signals carrying plain data. Jobs never touch
widgets; pages connect to the signals, which Qt delivers on the GUI thread.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Any

from mergestudio.errors import Cancelled, MergeStudioError
from mergestudio.events import CancelToken, LogLine, Progress
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

_RUNNING: set[QThread] = set()  # threads alive now; tests check it is empty at the end


def running_threads() -> list[QThread]:
    _prune()
    return list(_RUNNING)


def _prune() -> None:
    # Finished threads are dropped here, on the GUI thread, never from their own thread.
    for thread in [t for t in _RUNNING if t.isFinished()]:
        thread.wait()
        _RUNNING.discard(thread)


class Job(QObject):
    """Subclasses implement ``work()``; it may call ``self.events`` as an engine event
    sink and must pass ``self.cancel_token`` to the engine.

    Exactly one of ``succeeded``/``failed``/``cancelled`` is emitted, then ``finished``.
    Connect them to methods of QObjects on the GUI thread (pages, windows): Qt then queues
    the call to that thread. A lambda has no thread, so it would run on the job's thread.
    """

    progress = Signal(object)  # mergestudio.events.Progress
    log = Signal(str, str)  # message, level
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.cancel_token = CancelToken()

    def work(self) -> Any:
        raise NotImplementedError

    def cancel(self) -> None:
        """Safe from any thread: the engine checks the token between tensors."""
        self.cancel_token.cancel()

    def events(self, event: object) -> None:
        if isinstance(event, Progress):
            self.progress.emit(event)
        elif isinstance(event, LogLine):
            self.log.emit(event.message, event.level)

    @Slot()
    def run(self) -> None:
        _lower_thread_priority()
        try:
            result = self.work()
        except Cancelled:
            self.cancelled.emit()
        except MergeStudioError as error:
            self.failed.emit(str(error))
        except Exception as error:  # a bug must reach the user, not vanish with the thread
            self.log.emit(traceback.format_exc(), "debug")
            self.failed.emit(f"{type(error).__name__}: {error}")
        else:
            if self.cancel_token.cancelled:
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)
        finally:
            # Hand the object back to the GUI thread so Python may free it there once the
            # page drops its reference (a QObject must be deleted in its own thread).
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.finished.emit()


WORKER_NICENESS = 5


def _lower_thread_priority() -> None:
    """Make this (worker) thread a little nicer than the GUI thread, so on a busy CPU the
    scheduler runs the event loop first. Linux sets niceness per thread; QThread's own
    priorities are ignored there. Elsewhere this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + WORKER_NICENESS))
    except OSError:  # not permitted in some sandboxes: keep the default priority
        pass


def start(job: Job) -> QThread:
    """Run ``job`` on a new thread, which quits when the job finishes. Keep a reference to
    ``job`` while it runs; after ``finished`` it belongs to the GUI thread again."""
    thread = QThread()
    thread.setObjectName(type(job).__name__)
    job.moveToThread(thread)
    thread.started.connect(job.run)
    # Direct: quit from the job's thread at once, even while the GUI thread waits on it.
    job.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    _prune()
    _RUNNING.add(thread)
    thread.start()
    return thread


def stop_all(timeout_ms: int = 10_000) -> None:
    """Cancel nothing (jobs own their tokens) but wait for every thread to end: called
    when the window closes, after its pages cancelled their jobs."""
    for thread in list(_RUNNING):
        thread.quit()
        thread.wait(timeout_ms)
    # A thread still busy after the wait (a model still loading) keeps its reference:
    # destroying a running QThread aborts the process.
    _prune()
