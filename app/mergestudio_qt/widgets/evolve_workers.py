"""The Evolve page's workers view: one row per process that worked on the run (what
``search.worker_status`` reads from its study), the live ones first. It shows what the
page hands it; the page reads the study in a job."""

from __future__ import annotations

from mergestudio.search.worker_status import WorkerStatus
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from mergestudio_qt.format import format_duration

COLUMNS = ("Worker", "Now", "Done", "Beat")
HEADER_TIPS = (
    "The worker's name (w0, w1… for local workers) and its process: host:pid",
    "The trial it runs · late: no heartbeat for longer than the grace period (its trial runs "
    "again elsewhere) · idle: alive, between trials · ended",
    "Trials it finished",
    "How long ago its running trial last beat, or its last trial ended",
)
WORKER_COLUMN = 0
EMPTY = "No worker has run a trial of this run yet."


class WorkersTable(QTableWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setObjectName("evolveWorkers")
        for column, (title, tip) in enumerate(zip(COLUMNS, HEADER_TIPS, strict=True)):
            item = QTableWidgetItem(title)
            item.setToolTip(tip)
            self.setHorizontalHeaderItem(column, item)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setAlternatingRowColors(True)
        # The short columns fit their text; the worker (a host name can be long) takes
        # what is left, elided, so what a worker does stays in view in a narrow panel.
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(WORKER_COLUMN, QHeaderView.ResizeMode.Stretch)
        self.setWordWrap(False)  # elided within the line, not cut after the name
        self.setToolTip(EMPTY)
        self.workers: list[WorkerStatus] = []

    def show_workers(self, workers: list[WorkerStatus]) -> None:
        """Replace the rows (a handful: one per process that ran a trial)."""
        self.workers = list(workers)
        self.setRowCount(len(workers))
        for row, worker in enumerate(workers):
            cells = (label(worker), doing(worker), str(worker.complete), format_duration(worker.last_seen_s))
            tip = describe(worker)
            for column, text in enumerate(cells):
                item = self.item(row, column)
                if item is None:
                    item = QTableWidgetItem()
                    self.setItem(row, column, item)
                item.setText(text)
                item.setToolTip(tip)
        self.setToolTip("" if workers else EMPTY)

    def running(self) -> int:
        return sum(1 for w in self.workers if w.state == "running")


def label(worker: WorkerStatus) -> str:
    """Its name and process ("w0 · host:pid", the host's first label: the tooltip has the
    rest); a worker named after its process, once."""
    if worker.name == worker.process:
        return worker.name
    host = worker.host.split(".", 1)[0]
    return f"{worker.name} · {host}:{worker.pid}" if worker.pid else f"{worker.name} · {host}"


def doing(worker: WorkerStatus) -> str:
    """What a worker does now, in a word or two (the Now column)."""
    if worker.state == "running":
        return f"trial {worker.trial}"
    if worker.state == "late":
        return f"trial {worker.trial}, late"
    return worker.state


def describe(worker: WorkerStatus) -> str:
    """One worker in words (the rows' tooltip)."""
    activity = {
        "running": f"runs trial {worker.trial}",
        "late": f"ran trial {worker.trial} but stopped beating: the trial runs again elsewhere",
        "idle": "is alive, between trials",
        "ended": "has ended",
    }[worker.state]
    seen = "" if worker.last_seen_s is None else f"; last sign of life {format_duration(worker.last_seen_s)} ago"
    return f"{label(worker)} ({worker.process}) {activity}; {worker.complete} trial(s) done{seen}"
