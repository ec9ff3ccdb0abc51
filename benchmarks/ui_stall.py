"""How long the studio's event loop stalls while a merge runs in its worker thread.

A heartbeat timer fires every few milliseconds on the GUI thread; the longest gap between
two beats (minus the interval) is the worst stall a person could feel. The merge is the
≈134M-parameter synthetic Llama family of ``merge_speed.py`` (a base and three
fine-tunes, bf16), merged through the Merge page exactly as the button does.

    QT_QPA_PLATFORM=offscreen python benchmarks/ui_stall.py --method task_arithmetic
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from benchmarks.llama_family import SHAPES, write_family

WORK = Path(__file__).resolve().parent / "_work"
HEARTBEAT_MS = 5
BUDGET_MS = 100  # the most the event loop may stall (the studio's promise)
IDLE_MS = int(os.environ.get("UI_STALL_IDLE_MS", "3000"))


class Heartbeat:
    """Records the gap between consecutive timer callbacks on the GUI thread."""

    def __init__(self, interval_ms: int) -> None:
        from PySide6.QtCore import QTimer

        self.interval_s = interval_ms / 1000
        self.gaps: list[float] = []
        self.times: list[float] = []  # perf_counter() of each beat
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._beat)

    def start(self) -> None:
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self.times.append(now)
        self._last = now

    def stalls_ms(self) -> list[float]:
        return [max(0.0, (gap - self.interval_s) * 1000) for gap in self.gaps]

    def worst(self, since: float, count: int = 5) -> list[list[float]]:
        """The ``count`` longest stalls in time order: [seconds after ``since`` that
        each ended, ms] (for finding what caused them)."""
        stalls = self.stalls_ms()
        longest = sorted(range(len(stalls)), key=stalls.__getitem__, reverse=True)[:count]
        return [[round(self.times[i] - since, 2), round(stalls[i], 1)] for i in sorted(longest)]


def run(method: str, shape_name: str, work: Path) -> dict[str, object]:
    from mergestudio_qt.app import create_app, preload_engine
    from mergestudio_qt.main_window import MainWindow
    from mergestudio_qt.preferences import Preferences
    from PySide6.QtCore import QEventLoop, QTimer

    folders = write_family(work / shape_name, SHAPES[shape_name])
    scratch = Path(tempfile.mkdtemp(prefix="ui_stall_"))
    os.environ["MERGESTUDIO_CONFIG_DIR"] = str(scratch / "config")
    app = create_app(["ui_stall"])
    preload_engine()  # as the studio does before its window shows
    window = MainWindow(Preferences(demo_opened=True, cache_dir=str(scratch / "cache")))
    window.prompt_on_close = False
    window.resize(1280, 800)
    window.show()
    models = window.page("models")
    loop = QEventLoop()
    models.queue_empty.connect(loop.quit)
    for folder in folders:
        models.add_reference(str(folder))
    loop.exec()
    window.state.set_method(method)
    window.go_to("merge")
    page = window.page("merge")
    page.out_edit.setText(str(scratch / "merged"))
    page.out_edit.editingFinished.emit()

    # The same heartbeat with nothing running: how much of a stall is the machine's own
    # scheduling (other processes on a busy CPU), not the merge.
    idle = Heartbeat(HEARTBEAT_MS)
    pause = QEventLoop()
    idle.start()
    QTimer.singleShot(IDLE_MS, pause.quit)
    pause.exec()
    idle.stop()

    status, seconds, heartbeat, pressed = time_with_heartbeat(page.merge_button.click, page.merge_finished)
    window.close()
    result = {
        "shape": shape_name,
        "parameters_m": round(SHAPES[shape_name].parameters / 1e6, 1),
        "method": method,
        "status": status,
        "merge_s": round(seconds, 2),
        **stall_summary(heartbeat, pressed),
        "idle_worst_stall_ms": round(max(idle.stalls_ms(), default=0.0), 1),
    }
    shutil.rmtree(scratch, ignore_errors=True)
    del app
    return result


def time_with_heartbeat(press: Callable[[], None], finished: Any) -> tuple[str, float, Heartbeat, float]:
    """Call ``press`` from inside a running event loop and run the loop until
    ``finished(status)`` fires, with a heartbeat: (status, seconds, the heartbeat, the
    perf_counter() of the press)."""
    from PySide6.QtCore import QEventLoop, QTimer

    heartbeat = Heartbeat(HEARTBEAT_MS)
    outcome: list[str] = []
    done = QEventLoop()
    finished.connect(lambda status: (outcome.append(status), done.quit()))
    heartbeat.start()
    started = time.perf_counter()
    QTimer.singleShot(0, press)  # pressed from inside the running loop, as a click is
    done.exec()
    seconds = time.perf_counter() - started
    heartbeat.stop()
    return (outcome[0] if outcome else "none"), seconds, heartbeat, started


def stall_summary(heartbeat: Heartbeat, since: float) -> dict[str, object]:
    """The numbers a stall benchmark reports: beats, worst, p99 and median stall, and
    the worst few with when they came (seconds after ``since``)."""
    stalls = heartbeat.stalls_ms()
    return {
        "beats": len(stalls),
        "worst_stalls_at": heartbeat.worst(since),
        "worst_stall_ms": round(max(stalls, default=0.0), 1),
        "p99_stall_ms": round(percentile(stalls, 99), 1),
        "median_stall_ms": round(statistics.median(stalls) if stalls else 0.0, 2),
        "budget_ms": BUDGET_MS,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def percentile(values: list[float], percent: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="task_arithmetic")
    parser.add_argument("--shape", default="134m", choices=sorted(SHAPES))
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    result = run(args.method, args.shape, args.work)
    print(json.dumps(result))
    ok = result["status"] == "succeeded" and float(result["worst_stall_ms"]) <= BUDGET_MS  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
