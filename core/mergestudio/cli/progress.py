"""Rendering engine events in a terminal: a redrawn progress bar with rate and ETA on a
TTY, plain lines (at most one per 10 %) otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

from mergestudio.events import LogLine, Progress
from mergestudio.sizes import format_bytes as format_bytes  # the CLI's name for it


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TerminalProgress:
    """An event sink for the CLI."""

    def __init__(self, stream: TextIO | None = None, width: int = 30, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.quiet = quiet
        self.is_tty = self.stream.isatty()
        self._last_decile = -1
        self._bar_open = False

    def __call__(self, event: object) -> None:
        if isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, LogLine):
            self._log(event)

    def _progress(self, event: Progress) -> None:
        if self.quiet:
            return
        rate = f"{format_bytes(event.bytes_per_s)}/s" if event.bytes_total else ""
        text = f"{event.job}: {event.done}/{event.total}  {rate}  ETA {format_seconds(event.eta_s)}"
        if self.is_tty:
            filled = int(self.width * event.fraction)
            bar = "█" * filled + "·" * (self.width - filled)
            self.stream.write(f"\r{bar} {100 * event.fraction:5.1f}%  {text}\x1b[K")
            self._bar_open = event.done < event.total
            if not self._bar_open:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = int(10 * event.fraction)
        if decile != self._last_decile:
            self._last_decile = decile
            print(f"{100 * event.fraction:5.1f}%  {text}", file=self.stream, flush=True)

    def _log(self, event: LogLine) -> None:
        if event.level == "debug" or (self.quiet and event.level == "info"):
            return
        if self._bar_open:
            self.stream.write("\r\x1b[K")
        prefix = "" if event.level == "info" else f"{event.level}: "
        print(f"{prefix}{event.message}", file=self.stream, flush=True)
