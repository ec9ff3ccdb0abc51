"""Who works on a run: every process the run's study has seen run a trial, what it does
now, and how long ago it last gave a sign of life.

Read from the study only (the worker each trial records, ``store.WORKER_ATTR``; in an
RDB storage Optuna's heartbeat table, in a journal file the beat files beside it), never
from the processes: the window lists the
workers of a run whether it started them, a terminal did (``evolve --workers N``), or
they joined from other machines (``mergestudio worker``). Reading only, it never writes.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from mergestudio.search.store import (
    GRACE_PERIODS,
    JOURNAL_PREFIX,
    STUDY_NAME,
    WORKER_ATTR,
    RunFolder,
    owner_is_gone,
)

if TYPE_CHECKING:
    import optuna
    from sqlalchemy.engine import Engine

# "running": runs ``trial`` and beats; "late": runs ``trial`` but its heartbeat is older
# than the grace period (dead or stalled: the other workers will run the trial again);
# "idle": alive, between trials (waiting for the others' last trials, say); "ended".
WorkerState = Literal["running", "late", "idle", "ended"]
STATE_ORDER: tuple[WorkerState, ...] = ("running", "late", "idle", "ended")


@dataclass(frozen=True)
class WorkerStatus:
    name: str  # "w0" for a local worker of ``--workers``, else "host:pid"
    host: str
    pid: int
    state: WorkerState
    trial: int | None  # the trial it runs now
    complete: int  # trials it finished
    # Seconds since its last sign of life: the running trial's last heartbeat (or start,
    # in storages without heartbeats), else the end of its last trial. None: unknown.
    last_seen_s: float | None

    @property
    def process(self) -> str:
        return f"{self.host}:{self.pid}" if self.pid else self.host


class WorkerWatch:
    """``poll()`` reads the run's study again and returns its workers, the live ones
    first. Keeps the study (and a database connection for heartbeats) between polls."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self.grace_s = float(run.heartbeat_s * GRACE_PERIODS)
        self._study: optuna.Study | None = None
        url = run.storage_url
        journal = url.startswith(JOURNAL_PREFIX)
        self._heartbeats: _HeartbeatReader | None = None if journal else _HeartbeatReader(url)
        self._journal_beats = _JournalBeatReader(url.removeprefix(JOURNAL_PREFIX)) if journal else None

    def poll(self) -> list[WorkerStatus]:
        if self._study is None:
            self._study = self.run.open_study()
        trials = self._study.get_trials(deepcopy=False)
        if self._journal_beats is not None:
            beats = self._journal_beats.ages(trials)
        else:
            beats = self._heartbeats.ages() if self._heartbeats is not None else {}
        return workers_of(trials, beats, self.grace_s, time.time())

    def close(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.close()


def live_workers(run_dir: str, heartbeat_s: int | None = None) -> list[WorkerStatus]:
    """The workers of the run in ``run_dir`` now (one read; ``WorkerWatch`` to poll)."""
    run = RunFolder(run_dir) if heartbeat_s is None else RunFolder(run_dir, heartbeat_s=heartbeat_s)
    watch = WorkerWatch(run)
    try:
        return watch.poll()
    finally:
        watch.close()


def workers_of(
    trials: list[optuna.trial.FrozenTrial], beats: dict[int, float], grace_s: float, now: float
) -> list[WorkerStatus]:
    """Each process that recorded itself on a trial, from the trials alone. ``beats``:
    seconds since the last heartbeat of each running trial (by number); ``now``: the
    Unix time the trials' start and end times are compared with."""
    from optuna.trial import TrialState

    seen: dict[tuple[str, int], _Worker] = {}
    for trial in trials:
        owner = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(owner, dict):
            continue  # a run from before workers were recorded
        host, pid = str(owner.get("host", "")), int(owner.get("pid", 0))
        worker = seen.setdefault((host, pid), _Worker(str(owner.get("name") or f"{host}:{pid}"), host, pid, trial))
        if trial.state == TrialState.COMPLETE:
            worker.complete += 1
        if trial.state == TrialState.RUNNING:
            worker.trial = trial.number
            started = _unix(trial.datetime_start)
            worker.running_age = beats.get(trial.number, None if started is None else now - started)
        ended = _unix(trial.datetime_complete)
        if ended is not None:
            worker.last_end = max(worker.last_end or ended, ended)
    statuses = [w.status(grace_s, now) for w in seen.values()]
    return sorted(statuses, key=lambda s: (STATE_ORDER.index(s.state), s.name, s.pid))


@dataclass
class _Worker:
    name: str
    host: str
    pid: int
    recorded_on: optuna.trial.FrozenTrial  # one of its trials, which names the process
    complete: int = 0
    trial: int | None = None
    running_age: float | None = None
    last_end: float | None = None

    def status(self, grace_s: float, now: float) -> WorkerStatus:
        if self.trial is not None:
            late = self.running_age is not None and self.running_age > grace_s
            state: WorkerState = "late" if late else "running"
            seen = self.running_age
        else:
            seen = None if self.last_end is None else max(0.0, now - self.last_end)
            state = "idle" if self._alive(seen, grace_s) else "ended"
        return WorkerStatus(self.name, self.host, self.pid, state, self.trial, self.complete, seen)

    def _alive(self, seen: float | None, grace_s: float) -> bool:
        """A process of this machine is asked; another machine's is judged by how long
        ago it last finished a trial."""
        if self.host == socket.gethostname():
            return not owner_is_gone(self.recorded_on)  # its pid, in this boot
        return seen is not None and seen <= grace_s


def _unix(moment: datetime | None) -> float | None:
    # Optuna records start and end in the local time of the process that ran the trial.
    return None if moment is None else moment.timestamp()


class _HeartbeatReader:
    """Seconds since each running trial's last heartbeat, from Optuna's RDB tables,
    measured against the database's own clock (the one that stamped the beats)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None

    def ages(self) -> dict[int, float]:
        import sqlalchemy as sa

        trials = sa.table("trials", sa.column("trial_id"), sa.column("number"), sa.column("study_id"), sa.column("state"))
        beats = sa.table("trial_heartbeats", sa.column("trial_id"), sa.column("heartbeat", sa.DateTime))
        studies = sa.table("studies", sa.column("study_id"), sa.column("study_name"))
        query = (
            sa.select(trials.c.number, beats.c.heartbeat, sa.func.now(type_=sa.DateTime))
            .select_from(beats.join(trials, beats.c.trial_id == trials.c.trial_id))
            .join(studies, studies.c.study_id == trials.c.study_id)
            .where(studies.c.study_name == STUDY_NAME, trials.c.state == "RUNNING")
        )
        try:
            with self._connect().connect() as connection:
                rows = connection.execute(query).all()
        except sa.exc.SQLAlchemyError:
            return {}  # no heartbeat table yet (a study being created), or a busy database
        return {int(number): _seconds(now, beat) for number, beat, now in rows}

    def _connect(self) -> Engine:
        if self._engine is None:
            import sqlalchemy as sa

            sqlite = self.url.startswith("sqlite:")
            self._engine = sa.create_engine(self.url, connect_args={"timeout": 5} if sqlite else {})
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class _JournalBeatReader:
    """Seconds since each running trial's beat file (``search.heartbeat``, beside the
    journal) last changed, as this reader has watched it: the same rule the journal
    storage judges stale trials by, so no two machines' clocks are compared. A trial
    first seen now counts as just beaten; a run with no beat files at all reads as
    having no heartbeats (its workers' ages then come from their trials' times)."""

    def __init__(self, journal: str) -> None:
        from mergestudio.search.heartbeat import beats_dir

        self._beats = beats_dir(journal)
        # trial id -> (the beat token last read, when this reader first read it)
        self._seen: dict[int, tuple[str, float]] = {}

    def ages(self, trials: list[optuna.trial.FrozenTrial]) -> dict[int, float]:
        from optuna.trial import TrialState

        if not self._beats.is_dir():
            return {}
        now = time.monotonic()
        seen: dict[int, tuple[str, float]] = {}
        ages: dict[int, float] = {}
        for trial in trials:
            if trial.state != TrialState.RUNNING:
                continue
            token = self._token(trial._trial_id)
            last = self._seen.get(trial._trial_id)
            if last is None or last[0] != token:
                last = (token, now)
            seen[trial._trial_id] = last
            ages[trial.number] = now - last[1]
        self._seen = seen
        return ages

    def _token(self, trial_id: int) -> str:
        try:
            return (self._beats / str(trial_id)).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""


def _seconds(now: Any, then: Any) -> float:
    # Naive on both sides (Optuna drops PostgreSQL's zone the same way).
    return max(0.0, float((now.replace(tzinfo=None) - then.replace(tzinfo=None)).total_seconds()))
