"""Python's cyclic garbage collector, run on the GUI thread only.

Left automatic, a collection runs in whichever thread happens to allocate past the
threshold: often a job's worker thread. If the garbage it finds holds a Qt widget (a
menu in a reference cycle with its Python wrapper, say), the widget is destroyed on that
worker thread. Qt widgets must die on the GUI thread; there, the worker's destructor and
the GUI thread's own deletions wait on each other's locks and the window hangs (seen: a
worker collecting a QMenu while the GUI thread deleted another one). So the automatic
collector is switched off and a timer on the GUI thread collects instead, by the same
thresholds the automatic one would use."""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

CHECK_INTERVAL_MS = 250


class MainThreadCollector(QObject):
    """Owns the timer; lives as long as the application (its parent)."""

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_INTERVAL_MS)
        self._timer.timeout.connect(self.check)

    def start(self) -> None:
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        """Back to the automatic collector (for a process that goes on without an event
        loop, such as a test run)."""
        self._timer.stop()
        gc.enable()

    def check(self) -> int | None:
        """Collect the oldest generation whose count passed its threshold, as the
        automatic collector would have; the generation collected, or None."""
        thresholds = gc.get_threshold()
        counts = gc.get_count()
        if counts[0] <= thresholds[0]:
            return None
        generation = 0
        if counts[1] > thresholds[1]:
            generation = 2 if counts[2] > thresholds[2] else 1
        gc.collect(generation)
        return generation


def collect_on_main_thread(app: QObject) -> MainThreadCollector:
    """Install and start the collector for ``app`` (one per application)."""
    existing = app.findChild(MainThreadCollector)
    collector = existing if isinstance(existing, MainThreadCollector) else MainThreadCollector(app)
    collector.start()
    return collector
