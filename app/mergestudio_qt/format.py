"""Numbers for people: sizes, counts, durations."""

from __future__ import annotations

from mergestudio.sizes import format_bytes as format_bytes  # one spelling of sizes everywhere


def format_count(count: float) -> str:
    """124_439_808 -> '124.4M'."""
    value = float(count)
    for unit in ("", "K", "M", "B"):
        if abs(value) < 1000 or unit == "B":
            return f"{value:.0f}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}B"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class MeasuredEta:
    """Seconds left, from the throughput measured since the first progress report.

    A job's first report comes after its start-up (threads, device, first reads), which
    says nothing about its speed: extrapolating from it turned a 1.2 s merge into
    "2 min 14 s". So the clock starts at the first report, and no estimate is given
    before ``min_span_s`` of measured work.
    """

    def __init__(self, min_span_s: float = 0.5) -> None:
        self.min_span_s = min_span_s
        self._start: tuple[float, float] | None = None

    def reset(self) -> None:
        self._start = None

    def update(self, done: float, total: float, elapsed_s: float) -> float | None:
        """``done`` of ``total`` units (bytes or items) after ``elapsed_s``; None while
        there is too little measurement to say."""
        if self._start is None or elapsed_s < self._start[0]:
            self._start = (elapsed_s, done)
            return None
        started_s, started_done = self._start
        span, progressed = elapsed_s - started_s, done - started_done
        if span < self.min_span_s or progressed <= 0:
            return None
        return max(0.0, total - done) * span / progressed
