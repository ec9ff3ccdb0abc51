"""Heartbeats for a study kept in a journal file, which Optuna gives only to RDB storages.

Optuna 5's ``JournalStorage`` does not implement ``BaseHeartbeat``, so with it
``fail_stale_trials`` does nothing and a worker killed mid-trial would leave its trial
RUNNING until a controller next started on the run. ``BeatingJournalStorage`` adds the
heartbeat interface, so the same Optuna machinery (``fail_stale_trials`` and the
storage's stale-trial callback, which queues the trial again) works on journal files.

The beats are files beside the journal (``<journal>.beats/<trial id>``), since the
journal is what every worker shares, on a shared file system, while each machine may
have its own copy of the run folder. A beat rewrites its trial's file with a token that
is new each time. Whether a trial is stale is judged by each reader on its own
monotonic clock: a trial is stale once its token has not changed for the grace period
while this process watched it. No two machines' clocks are compared (file times on a
shared file system come from whichever clock wrote them), at the price of a reader
that starts watching a dead trial needing one grace period to call it stale.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.storages import JournalStorage

# Not exported by Optuna, but what ``fail_stale_trials`` checks a storage against.
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    import optuna
    from optuna.storages.journal import BaseJournalBackend

BEATS_SUFFIX = ".beats"

StaleCallback = Callable[["optuna.Study", FrozenTrial], None]


def beats_dir(journal: str | Path) -> Path:
    """Where the running trials of the study in ``journal`` beat."""
    path = Path(journal)
    return path.with_name(path.name + BEATS_SUFFIX)


class BeatingJournalStorage(JournalStorage, BaseHeartbeat):
    """A ``JournalStorage`` with heartbeats: ``interval_s`` between a running trial's
    beats, ``grace_s`` of silence (as this process sees it) before it is stale, and
    ``on_stale`` called by ``optuna.storages.fail_stale_trials`` for each trial it fails."""

    def __init__(
        self,
        backend: BaseJournalBackend,
        beats: Path,
        interval_s: int,
        grace_s: int,
        on_stale: StaleCallback | None = None,
    ) -> None:
        super().__init__(backend)
        self._beats = beats
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._on_stale = on_stale
        self._count = 0
        self._count_lock = threading.Lock()
        # trial id -> (the beat token last read, when this process first read it)
        self._seen: dict[int, tuple[str, float]] = {}

    # ---- BaseHeartbeat -------------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        with self._count_lock:
            self._count += 1
            token = f"{socket.gethostname()} {os.getpid()} {self._count} {time.time_ns()}"
        self._beats.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: a reader never sees half a token.
        path = self._path(trial_id)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(token, encoding="utf-8")
        os.replace(temporary, path)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        now = time.monotonic()
        stale = []
        for trial in running:
            token = self._read(trial._trial_id)
            seen = self._seen.get(trial._trial_id)
            if seen is None or seen[0] != token:
                self._seen[trial._trial_id] = (token, now)
            elif now - seen[1] >= self._grace_s:
                stale.append(trial._trial_id)
        running_ids = {t._trial_id for t in running}
        for trial_id in [t for t in self._seen if t not in running_ids]:
            del self._seen[trial_id]
            self._path(trial_id).unlink(missing_ok=True)  # finished: its beats are done
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._interval_s

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._on_stale

    # ---- files ---------------------------------------------------------------------------

    def _path(self, trial_id: int) -> Path:
        return self._beats / str(trial_id)

    def _read(self, trial_id: int) -> str:
        """The trial's last beat token; "" before its first beat (a worker that died
        between asking for the trial and its first beat never writes one)."""
        try:
            return self._path(trial_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
