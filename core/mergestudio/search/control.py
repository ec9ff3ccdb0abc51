"""Pausing, resuming and stopping a running search from another thread.

The search checks its control between trials: ``pause`` holds it before the next trial,
``stop`` ends it after the current one. ``cancel`` (the shared CancelToken) stops the
current trial mid-way; that trial is re-queued, so a resume runs it again.
"""

from __future__ import annotations

import threading

from mergestudio.events import CancelToken


class SearchControl:
    def __init__(self, cancel: CancelToken | None = None) -> None:
        self.cancel_token = cancel or CancelToken()
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        """Stop after the current trial (and wake a paused search so it can end)."""
        self._stop.set()
        self._running.set()

    def cancel(self) -> None:
        """Stop now: the current trial is abandoned and re-queued for a later resume."""
        self.cancel_token.cancel()
        self.stop()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set() or self.cancel_token.cancelled

    def wait_for_stop(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``, waking early on Stop or Cancel; True if stopping."""
        return self._stop.wait(timeout_s) or self.cancel_token.cancelled

    def wait_while_paused(self, timeout_s: float | None = None) -> bool:
        """Block while paused; True once running (or stopping), False on timeout."""
        return self._running.wait(timeout_s)
