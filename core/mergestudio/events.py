"""Events and cancellation shared by every long job (merge, analysis, evaluation, search).

Jobs take an optional ``EventSink`` and a ``CancelToken``. The engine never knows who
listens: the CLI renders events as progress bars, the window turns them into signals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mergestudio.errors import Cancelled

LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class Progress:
    """How far a job is. ``done``/``total`` count work items (tensors, items, trials).
    ``remaining_s``: the job's own estimate of the seconds left, for jobs whose items
    differ in cost (it knows what each costs); None: extrapolate from the counts."""

    job: str
    done: int
    total: int
    elapsed_s: float
    bytes_done: int = 0
    bytes_total: int = 0
    current: str = ""
    remaining_s: float | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def bytes_per_s(self) -> float:
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left: the job's own estimate when it gave one, else extrapolated from
        bytes when known, else from items."""
        if self.remaining_s is not None:
            return self.remaining_s
        if self.elapsed_s <= 0:
            return None
        if self.bytes_total and self.bytes_done:
            return self.elapsed_s * (self.bytes_total - self.bytes_done) / self.bytes_done
        if self.done:
            return self.elapsed_s * (self.total - self.done) / self.done
        return None


@dataclass(frozen=True)
class LogLine:
    message: str
    level: LogLevel = "info"


EventSink = Callable[[object], None]


def emit(events: EventSink | None, event: object) -> None:
    if events is not None:
        events(event)


def log(events: EventSink | None, message: str, level: LogLevel = "info") -> None:
    emit(events, LogLine(message, level))


class CancelToken:
    """A flag a job checks between work items; safe to set from any thread."""

    def __init__(self) -> None:
        self._flag = threading.Event()

    def cancel(self) -> None:
        self._flag.set()

    @property
    def cancelled(self) -> bool:
        return self._flag.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``, waking at once on cancel; True if cancelled."""
        return self._flag.wait(timeout_s)

    def raise_if_cancelled(self) -> None:
        if self._flag.is_set():
            raise Cancelled("cancelled by the user")


def check_cancel(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()


class ProgressReporter:
    """Emits ``Progress`` at most every ``min_interval_s`` (and always at the end), so a
    job with many tiny items does not flood its listeners."""

    def __init__(
        self,
        events: EventSink | None,
        job: str,
        total: int,
        bytes_total: int = 0,
        min_interval_s: float = 0.05,
    ) -> None:
        self._events = events
        self._job = job
        self._total = total
        self._bytes_total = bytes_total
        self._interval = min_interval_s
        self._start = time.perf_counter()
        self._last_emit = -1.0
        self.done = 0
        self.bytes_done = 0

    def advance(self, items: int = 1, nbytes: int = 0, current: str = "") -> None:
        self.done += items
        self.bytes_done += nbytes
        now = time.perf_counter()
        if self.done >= self._total or now - self._last_emit >= self._interval:
            self._last_emit = now
            self._emit(now, current)

    def start(self) -> None:
        self._emit(time.perf_counter(), "")

    def _emit(self, now: float, current: str) -> None:
        emit(
            self._events,
            Progress(
                job=self._job,
                done=self.done,
                total=self._total,
                elapsed_s=now - self._start,
                bytes_done=self.bytes_done,
                bytes_total=self._bytes_total,
                current=current,
            ),
        )
