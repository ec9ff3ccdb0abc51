"""Stopping long commands cleanly: SIGINT (Ctrl-C), SIGTERM (timeout, systemd, Docker)
and SIGHUP (a closed terminal) all set the job's cancel token, so a merge deletes its
staging folder and the command exits with 128 + the signal's number."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from mergestudio.events import CancelToken

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_received: list[int] = []


@contextmanager
def on_stop_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Call ``handler(signum)`` on any stop signal while the block runs (main thread only)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        _received.append(signum)
        handler(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def cancel_on_stop() -> Iterator[CancelToken]:
    """A cancel token that any stop signal sets while the block runs: what a long
    command hands its job so Ctrl-C stops it cleanly."""
    cancel = CancelToken()
    with on_stop_signals(lambda _signum: cancel.cancel()):
        yield cancel


def stop_exit_code() -> tuple[int, str]:
    """(exit code, signal name) for the last stop signal received; SIGINT when none was."""
    signum = _received[-1] if _received else int(signal.SIGINT)
    return 128 + signum, signal.Signals(signum).name
